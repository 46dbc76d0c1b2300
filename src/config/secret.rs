//! Secrets: where a credential comes from (`SecretSource`) and the redacting wrapper that holds it (`Secret`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// A value that must never reach a log, a metric, an error body or `Debug` output.
/// The only way to the inner value is `expose()`, called where a header or form body is built.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Secret(value)
    }

    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// `{ env = "NAME" }`, `{ file = "PATH" }` or `{ value = "..." }` in the TOML.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum SecretSource {
    Env(String),
    File(PathBuf),
    /// Accepted for quick trials; `serve` and `check` warn, since the secret then sits in the config file.
    Value(Secret<String>),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum SecretError {
    #[error("environment variable {0} is not set")]
    EnvMissing(String),
    #[error("environment variable {0} is empty")]
    EnvEmpty(String),
    #[error("cannot read {path}: {reason}")]
    FileUnreadable { path: PathBuf, reason: String },
    #[error("file {0} is empty")]
    FileEmpty(PathBuf),
    #[error("the inline value is empty")]
    ValueEmpty,
    #[error("{0} holds characters that cannot go in an HTTP header")]
    NotHeaderSafe(String),
    #[error("reading {path} took longer than {secs} s (a hung mount, or a FIFO nobody writes?)")]
    ReadTimedOut { path: PathBuf, secs: u64 },
    #[error("the read of {0} failed to run")]
    ReadAborted(PathBuf),
}

/// Re-reads a secret from a running proxy without blocking an async worker: a file read can
/// hang (a stuck network or FUSE mount, a FIFO), so it runs on the blocking pool, bounded by a
/// deadline. A read that outlives its deadline is picked up again on the next call instead of
/// starting another, so a hung file holds one blocked thread, not one per attempt.
pub(crate) struct SecretReader {
    source: SecretSource,
    header_safe: bool,
    pending: Option<tokio::task::JoinHandle<Result<Secret<String>, SecretError>>>,
}

impl SecretReader {
    /// Reads like [`SecretSource::load`], or like `load_header_safe` when `header_safe`.
    pub(crate) fn new(source: SecretSource, header_safe: bool) -> SecretReader {
        SecretReader {
            source,
            header_safe,
            pending: None,
        }
    }

    pub(crate) fn source(&self) -> &SecretSource {
        &self.source
    }

    /// The secret as the source holds it now, or why not within `limit`.
    pub(crate) async fn read(
        &mut self,
        limit: std::time::Duration,
    ) -> Result<Secret<String>, SecretError> {
        let Some(path) = self.source.file().map(Path::to_path_buf) else {
            // Environment and inline values do not touch the disk.
            return self.load_now();
        };
        let mut read = match self.pending.take() {
            Some(read) => read,
            None => {
                let (source, header_safe) = (self.source.clone(), self.header_safe);
                tokio::task::spawn_blocking(move || load(&source, header_safe))
            }
        };
        match tokio::time::timeout(limit, &mut read).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(SecretError::ReadAborted(path)),
            Err(_) => {
                self.pending = Some(read);
                Err(SecretError::ReadTimedOut {
                    path,
                    secs: limit.as_secs(),
                })
            }
        }
    }

    fn load_now(&self) -> Result<Secret<String>, SecretError> {
        load(&self.source, self.header_safe)
    }
}

fn load(source: &SecretSource, header_safe: bool) -> Result<Secret<String>, SecretError> {
    if header_safe {
        source.load_header_safe()
    } else {
        source.load()
    }
}

/// How long a one-shot read (startup, `check`) waits on a secret file.
pub(crate) const ONE_SHOT_READ_LIMIT: Duration = Duration::from_secs(5);

impl SecretSource {
    /// Like `load` (or `load_header_safe`), for one-shot reads at startup and in `check`: a file
    /// is read on its own thread, bounded by `limit`, so a hung mount or a FIFO nobody writes
    /// fails with a line naming the file instead of hanging startup in silence. A timed-out read
    /// leaves that one thread blocked; the caller is about to fail anyway.
    pub(crate) fn load_within(
        &self,
        header_safe: bool,
        limit: Duration,
    ) -> Result<Secret<String>, SecretError> {
        use std::sync::mpsc::RecvTimeoutError;
        let Some(path) = self.file().map(Path::to_path_buf) else {
            return load(self, header_safe);
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let source = self.clone();
        std::thread::Builder::new()
            .name("secret-read".into())
            .spawn(move || {
                let _ = tx.send(load(&source, header_safe));
            })
            .map_err(|_| SecretError::ReadAborted(path.clone()))?;
        match rx.recv_timeout(limit) {
            Ok(result) => result,
            Err(RecvTimeoutError::Timeout) => Err(SecretError::ReadTimedOut {
                path,
                secs: limit.as_secs(),
            }),
            Err(RecvTimeoutError::Disconnected) => Err(SecretError::ReadAborted(path)),
        }
    }

    /// Reads the secret now; surrounding whitespace (a trailing newline from `echo`) is trimmed.
    pub(crate) fn load(&self) -> Result<Secret<String>, SecretError> {
        let raw = match self {
            SecretSource::Env(name) => {
                let value =
                    std::env::var(name).map_err(|_| SecretError::EnvMissing(name.clone()))?;
                nonempty(value, || SecretError::EnvEmpty(name.clone()))?
            }
            SecretSource::File(path) => {
                let value = read_file(path)?;
                nonempty(value, || SecretError::FileEmpty(path.clone()))?
            }
            SecretSource::Value(v) => nonempty(v.expose().clone(), || SecretError::ValueEmpty)?,
        };
        Ok(Secret::new(raw))
    }

    /// Loads a secret that will be sent in a header: it must be visible ASCII.
    pub(crate) fn load_header_safe(&self) -> Result<Secret<String>, SecretError> {
        let secret = self.load()?;
        if secret.expose().bytes().all(|b| (0x21..0x7f).contains(&b)) {
            Ok(secret)
        } else {
            Err(SecretError::NotHeaderSafe(self.describe()))
        }
    }

    /// Where the secret lives, for summaries and errors; never the secret itself.
    pub(crate) fn describe(&self) -> String {
        match self {
            SecretSource::Env(name) => format!("env {name}"),
            SecretSource::File(path) => format!("file {}", path.display()),
            SecretSource::Value(_) => "inline value".to_string(),
        }
    }

    pub fn file(&self) -> Option<&Path> {
        match self {
            SecretSource::File(p) => Some(p),
            _ => None,
        }
    }
}

fn read_file(path: &Path) -> Result<String, SecretError> {
    std::fs::read_to_string(path).map_err(|e| SecretError::FileUnreadable {
        path: path.to_path_buf(),
        reason: e.kind().to_string(),
    })
}

fn nonempty(value: String, empty: impl FnOnce() -> SecretError) -> Result<String, SecretError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        Err(empty())
    } else {
        Ok(trimmed.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_redact() {
        let s = Secret::new("pat-na1-very-secret".to_string());
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{s}"), "[redacted]");
        let src = SecretSource::Value(s);
        assert!(!format!("{src:?}").contains("very-secret"));
        assert_eq!(src.describe(), "inline value");
    }

    #[test]
    fn file_is_trimmed_and_empty_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tok");
        std::fs::write(&path, "  pat-na1-abc\n").unwrap();
        let src = SecretSource::File(path.clone());
        assert_eq!(src.load().unwrap().expose(), "pat-na1-abc");
        std::fs::write(&path, "\n").unwrap();
        assert_eq!(
            src.load().unwrap_err(),
            SecretError::FileEmpty(path.clone())
        );
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(
            src.load(),
            Err(SecretError::FileUnreadable { .. })
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_hung_read_times_out_and_is_picked_up_again() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let mut reader = SecretReader::new(SecretSource::File(fifo.clone()), true);
        let limit = std::time::Duration::from_millis(100);
        // Opening a FIFO with no writer blocks: the read times out, and so does the next.
        for _ in 0..2 {
            assert!(matches!(
                reader.read(limit).await,
                Err(SecretError::ReadTimedOut { .. })
            ));
        }
        // A writer arrives; the read still in flight finishes and delivers.
        let writer = tokio::task::spawn_blocking(move || std::fs::write(fifo, "pat-na1-x\n"));
        let secret = reader.read(std::time::Duration::from_secs(5)).await;
        writer.await.unwrap().unwrap();
        assert_eq!(secret.unwrap().expose(), "pat-na1-x");
    }

    #[test]
    fn header_safety_is_checked() {
        let src = SecretSource::Value(Secret::new("has space".into()));
        assert!(matches!(
            src.load_header_safe(),
            Err(SecretError::NotHeaderSafe(_))
        ));
    }
}
