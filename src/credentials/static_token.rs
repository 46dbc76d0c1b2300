//! Static bearers (private app tokens, service keys): read once, and for file sources re-read on change or SIGHUP.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::account::Account;
use crate::config::{Secret, SecretError, SecretReader, SecretSource};

/// Kubernetes swaps secret volumes by renaming a symlinked directory, which inotify reports
/// poorly; re-reading a small file once a second is simpler and meets the 2-second promise.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// A token file read that takes longer than this is given up on (the old token stays).
const READ_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub(crate) enum StaticTokenError {
    #[error(transparent)]
    Source(#[from] SecretError),
    #[error("{0} holds characters that cannot go in an HTTP header")]
    NotHeaderSafe(String),
}

/// Loads the token for the first time; startup fails if this does.
pub(crate) fn load_initial(
    account: &Account,
    source: &SecretSource,
) -> Result<Secret<String>, StaticTokenError> {
    let secret = source
        .load_within(true, crate::config::secret::ONE_SHOT_READ_LIMIT)
        .map_err(|e| match e {
            SecretError::NotHeaderSafe(what) => StaticTokenError::NotHeaderSafe(what),
            other => StaticTokenError::Source(other),
        })?;
    account
        .token
        .store(&secret, None)
        .map_err(|_| StaticTokenError::NotHeaderSafe(source.describe()))?;
    account.status.record_success();
    Ok(secret)
}

/// Watches a `{ file = ... }` token until `stop` turns true. A failed read keeps the old token.
pub(crate) fn spawn_watcher(
    account: Arc<Account>,
    source: SecretSource,
    current: Secret<String>,
    reload: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    source.file()?;
    Some(tokio::spawn(async move {
        let mut watcher = Watcher {
            account,
            reader: SecretReader::new(source, true),
            current,
            failing: None,
        };
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = reload.notified() => {}
                _ = stop.changed() => return,
            }
            tokio::select! {
                _ = watcher.check() => {}
                _ = stop.changed() => return,
            }
        }
    }))
}

struct Watcher {
    account: Arc<Account>,
    reader: SecretReader,
    current: Secret<String>,
    /// Why reads fail, while they do: a broken file logs one error per reason, not one a
    /// second, and a new reason (a missing file that turns into a hung one) is logged too.
    failing: Option<String>,
}

impl Watcher {
    async fn check(&mut self) {
        match self.reader.read(READ_TIMEOUT).await {
            Ok(secret) if secret == self.current => self.failing = None,
            Ok(secret) => self.swap(secret),
            Err(e) => self.fail(&e.to_string()),
        }
    }

    fn swap(&mut self, secret: Secret<String>) {
        match self.account.token.store(&secret, None) {
            Ok(generation) => {
                self.current = secret;
                self.failing = None;
                self.account.metrics.token_reloaded(true);
                self.account.status.record_success();
                tracing::info!(account = %self.account.name, generation, "token reloaded");
            }
            Err(e) => self.fail(&e.to_string()),
        }
    }

    fn fail(&mut self, reason: &str) {
        if self.failing.as_deref() != Some(reason) {
            self.failing = Some(reason.to_string());
            self.account.metrics.token_reloaded(false);
            self.account.status.record_failure("reload_failed");
            tracing::error!(
                account = %self.account.name,
                source = %self.reader.source().describe(),
                "token reload failed, keeping the previous token: {reason}"
            );
        }
    }
}
