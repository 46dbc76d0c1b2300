//! The OAuth refresher: one task per account, the only caller of the token endpoint. It refreshes
//! ahead of expiry, backs off on failure while the old token is still served, and saves rotated
//! refresh tokens.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use super::persist::write_secret_file;
use super::token_endpoint::{Grant, TokenEndpoint, TokenError};
use crate::account::Account;
use crate::config::{Secret, SecretSource};

const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// How long after a token was issued to refresh it: when `min(margin, 25% of its lifetime)` is
/// left, minus up to a quarter of that window as jitter so many proxies do not refresh in step.
pub fn refresh_delay(lifetime: Duration, margin: Duration, jitter: f64) -> Duration {
    let window = margin.min(lifetime / 4);
    let spread = window / 4;
    lifetime.saturating_sub(window + spread.mul_f64(jitter.clamp(0.0, 1.0)))
}

/// 1 s doubling per consecutive failure, capped at 30 s, then spread by ±25 % jitter (still capped).
pub fn backoff_delay(failures: u32, jitter: f64) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    let base = BACKOFF_START
        .saturating_mul(1u32 << doublings)
        .min(BACKOFF_CAP);
    base.mul_f64(0.75 + 0.5 * jitter.clamp(0.0, 1.0))
        .min(BACKOFF_CAP)
}

pub struct Refresher {
    pub account: Arc<Account>,
    pub endpoint: TokenEndpoint,
    pub client_id: String,
    pub client_secret: Secret<String>,
    pub refresh_token: Secret<String>,
    pub refresh_source: SecretSource,
    pub margin: Duration,
}

struct State {
    r: Refresher,
    /// What the refresh-token file held when last read or written; a change means an operator
    /// put a new token there, and it wins over the one in memory.
    file_value: Option<Secret<String>>,
    failures: u32,
    /// The last refusal logged, so a bad secret is logged once, not every 30 s.
    logged_refusal: Option<String>,
}

pub fn spawn(refresher: Refresher, mut stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let file_value = refresher
            .refresh_source
            .file()
            .map(|_| refresher.refresh_token.clone());
        let mut state = State {
            r: refresher,
            file_value,
            failures: 0,
            logged_refusal: None,
        };
        let control = state.r.account.refresh.clone().expect("oauth account");
        let mut next = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = control.woken() => {
                    // A request found no usable token. While backing off, the schedule stands:
                    // waking early for every request would hammer a failing endpoint.
                    let backing_off = state.failures > 0 && tokio::time::Instant::now() < next;
                    if backing_off || state.r.account.token.is_ready(Instant::now()) {
                        continue;
                    }
                }
                _ = stop.changed() => return,
            }
            next = tokio::time::Instant::from_std(state.attempt().await);
        }
    })
}

impl State {
    /// One token call; returns when the next one is due.
    async fn attempt(&mut self) -> Instant {
        let control = self.r.account.refresh.clone().expect("oauth account");
        control.attempt_started();
        self.pick_up_changed_file();
        let started = Instant::now();
        let result = self
            .r
            .endpoint
            .refresh(
                &self.r.client_id,
                &self.r.client_secret,
                &self.r.refresh_token,
            )
            .await;
        self.r.account.metrics.refresh_took(started.elapsed());
        let next = match result {
            Ok(grant) => self.succeeded(grant, started),
            Err(error) => self.failed(&error),
        };
        control.attempt_finished(self.failures == 0);
        next
    }

    fn succeeded(&mut self, mut grant: Grant, started: Instant) -> Instant {
        // Lifetime counts from when we asked, so clock time spent in flight is not overestimated.
        let expires_at = started + grant.expires_in;
        let account = &self.r.account;
        // Portal check hook, before the token is usable: the response names portal and scopes.
        let scopes = std::mem::take(&mut grant.scopes);
        let kind = crate::portal::TokenKind::OAuth;
        account.portal.observe(grant.hub_id, scopes, kind);
        let Ok(generation) = account.token.store(&grant.access_token, Some(expires_at)) else {
            return self.failed(&TokenError::BadBody(
                "access_token is not header-safe".into(),
            ));
        };
        let expires_unix = SystemTime::now() + grant.expires_in;
        account.metrics.refreshed(true, Some(expires_unix));
        account.status.record_success();
        if self.failures > 0 {
            tracing::info!(account = %account.name, failures = self.failures, "token endpoint recovered");
        }
        self.failures = 0;
        self.logged_refusal = None;
        tracing::info!(
            account = %account.name,
            generation,
            expires_in_secs = grant.expires_in.as_secs(),
            "access token refreshed"
        );
        self.rotate(grant.refresh_token);
        started + refresh_delay(grant.expires_in, self.r.margin, rand::random())
    }

    fn failed(&mut self, error: &TokenError) -> Instant {
        self.failures += 1;
        let account = &self.r.account;
        account.metrics.refreshed(false, None);
        account.status.record_failure(error.category());
        let delay = backoff_delay(self.failures, rand::random());
        match error {
            TokenError::Refused { .. } => {
                let text = error.to_string();
                if self.logged_refusal.as_deref() != Some(text.as_str()) {
                    tracing::error!(
                        account = %account.name,
                        endpoint = self.r.endpoint.url(),
                        "token refresh refused; fix the client secret or refresh token (the proxy retries, and picks up a changed refresh-token file): {text}"
                    );
                    self.logged_refusal = Some(text);
                }
            }
            _ if self.failures == 1 => tracing::warn!(
                account = %account.name,
                endpoint = self.r.endpoint.url(),
                "token refresh failed, serving the current token while it lasts and retrying: {error}"
            ),
            _ => {
                tracing::debug!(account = %account.name, failures = self.failures, "token refresh failed again: {error}")
            }
        }
        Instant::now() + delay
    }

    fn pick_up_changed_file(&mut self) {
        if self.r.refresh_source.file().is_none() {
            return;
        }
        if let Ok(value) = self.r.refresh_source.load() {
            if self.file_value.as_ref() != Some(&value) {
                tracing::info!(account = %self.r.account.name, "refresh token file changed; using the new token");
                self.r.refresh_token = value.clone();
                self.file_value = Some(value);
            }
        }
    }

    /// HubSpot may hand out a new refresh token; losing it would strand the account.
    fn rotate(&mut self, new: Option<Secret<String>>) {
        let Some(new) = new.filter(|n| *n != self.r.refresh_token) else {
            return;
        };
        self.r.refresh_token = new.clone();
        let account = &self.r.account;
        let Some(path) = self.r.refresh_source.file() else {
            tracing::warn!(
                account = %account.name,
                source = %self.r.refresh_source.describe(),
                "HubSpot rotated the refresh token; its source is not a file, so the new one is kept in memory only"
            );
            return;
        };
        match write_secret_file(path, new.expose()) {
            Ok(()) => {
                self.file_value = Some(new);
                tracing::info!(account = %account.name, file = %path.display(), "rotated refresh token saved");
            }
            Err(e) => {
                account.metrics.refresh_token_persist_failed();
                tracing::error!(
                    account = %account.name,
                    file = %path.display(),
                    "could not save the rotated refresh token ({e}); it is kept in memory, and will be lost on restart"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_delay_follows_the_lifetime() {
        let s = Duration::from_secs;
        // 1800 s tokens with the default 300 s margin: refresh between 1425 s and 1500 s.
        assert_eq!(refresh_delay(s(1800), s(300), 0.0), s(1500));
        assert_eq!(refresh_delay(s(1800), s(300), 1.0), s(1425));
        // 4 s test tokens: 25 % of the lifetime is the smaller window, so about every 3 s.
        assert_eq!(refresh_delay(s(4), s(300), 0.0), s(3));
        assert_eq!(
            refresh_delay(s(4), s(300), 1.0),
            Duration::from_millis(2750)
        );
        // A small margin wins over 25 %.
        assert_eq!(refresh_delay(s(1800), s(60), 0.0), s(1740));
        assert_eq!(refresh_delay(Duration::ZERO, s(60), 0.5), Duration::ZERO);
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let mid = |n| backoff_delay(n, 0.5);
        assert_eq!(mid(1), Duration::from_secs(1));
        assert_eq!(mid(2), Duration::from_secs(2));
        assert_eq!(mid(5), Duration::from_secs(16));
        assert_eq!(mid(6), Duration::from_secs(30));
        assert_eq!(mid(1000), Duration::from_secs(30));
        assert_eq!(backoff_delay(1, 0.0), Duration::from_millis(750));
        assert_eq!(backoff_delay(9, 1.0), Duration::from_secs(30));
    }
}
