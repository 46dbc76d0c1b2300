//! Secrets: where a credential comes from (`SecretSource`) and the redacting wrapper that holds it (`Secret`).

use std::fmt;
use std::path::{Path, PathBuf};

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
pub enum SecretError {
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
}

impl SecretSource {
    /// Reads the secret now; surrounding whitespace (a trailing newline from `echo`) is trimmed.
    pub fn load(&self) -> Result<Secret<String>, SecretError> {
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
    pub fn load_header_safe(&self) -> Result<Secret<String>, SecretError> {
        let secret = self.load()?;
        if secret.expose().bytes().all(|b| (0x21..0x7f).contains(&b)) {
            Ok(secret)
        } else {
            Err(SecretError::NotHeaderSafe(self.describe()))
        }
    }

    /// Where the secret lives, for summaries and errors; never the secret itself.
    pub fn describe(&self) -> String {
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
        let dir = std::env::temp_dir().join(format!("hsap-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tok");
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

    #[test]
    fn header_safety_is_checked() {
        let src = SecretSource::Value(Secret::new("has space".into()));
        assert!(matches!(
            src.load_header_safe(),
            Err(SecretError::NotHeaderSafe(_))
        ));
    }
}
