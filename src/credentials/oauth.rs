//! The OAuth refresher: one task per account, the only caller of the token endpoint. It refreshes
//! ahead of expiry, backs off on failure while the old token is still served, and saves rotated
//! refresh tokens.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{watch, Notify};

use super::fleet_source::{self, FleetSource, Plan, Published};
use super::persist::write_secret_file;
use super::token_endpoint::{Grant, TokenEndpoint, TokenError};
use crate::account::{Account, FleetTokenStatus, TokenOrigin};
use crate::config::{Secret, SecretError, SecretReader, SecretSource};
use crate::fleet::SharedToken;
use crate::portal_state::TokenKind;
use crate::token_cell::RefreshControl;

const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// A refresh-token file read that takes longer than this is given up on for this attempt.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How long after a token was issued to refresh it: when `min(margin, 25% of its lifetime)` is
/// left, minus up to a quarter of that window as jitter so many proxies do not refresh in step.
pub(crate) fn refresh_delay(lifetime: Duration, margin: Duration, jitter: f64) -> Duration {
    let window = margin.min(lifetime / 4);
    let spread = window / 4;
    lifetime.saturating_sub(window + spread.mul_f64(jitter.clamp(0.0, 1.0)))
}

/// 1 s doubling per consecutive failure, capped at 30 s, then spread by ±25 % jitter (still capped).
pub(crate) fn backoff_delay(failures: u32, jitter: f64) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    let base = BACKOFF_START
        .saturating_mul(1u32 << doublings)
        .min(BACKOFF_CAP);
    base.mul_f64(0.75 + 0.5 * jitter.clamp(0.0, 1.0))
        .min(BACKOFF_CAP)
}

pub(crate) struct Refresher {
    pub(crate) account: Arc<Account>,
    /// The account's `Credential::OAuth` control: requests wake the refresher through it, and
    /// it tells them when an attempt ended.
    pub(crate) control: Arc<RefreshControl>,
    pub(crate) endpoint: TokenEndpoint,
    pub(crate) client_id: String,
    pub(crate) client_secret: Secret<String>,
    /// Read again on SIGHUP while HubSpot refuses the client (`invalid_client`).
    pub(crate) client_secret_source: SecretSource,
    pub(crate) refresh_token: Secret<String>,
    pub(crate) refresh_source: SecretSource,
    pub(crate) margin: Duration,
    /// The `oauth authorize` command line that gets this account a new refresh token.
    pub(crate) reauthorize_command: String,
    /// Fleet mode: the fleet is asked before every token call (see `fleet_source`).
    pub(crate) fleet: Option<FleetSource>,
}

/// When to refresh a token adopted from the fleet with `remaining` life left: the same point
/// `refresh_delay` picks for a token of `lifetime` (the last one seen here; at least
/// `remaining`), counted from now.
pub(crate) fn adopted_refresh_delay(
    remaining: Duration,
    lifetime: Option<Duration>,
    margin: Duration,
    jitter: f64,
) -> Duration {
    let lifetime = lifetime.unwrap_or(remaining).max(remaining);
    refresh_delay(lifetime, margin, jitter).saturating_sub(lifetime - remaining)
}

/// Whether a fleet token is worth adopting: not due for refresh even at the earliest jittered
/// point, and at least a second left (so a just-expiring token is refreshed, not adopted).
pub(crate) fn worth_adopting(
    remaining: Duration,
    lifetime: Option<Duration>,
    margin: Duration,
) -> bool {
    remaining >= Duration::from_secs(1)
        && !adopted_refresh_delay(remaining, lifetime, margin, 1.0).is_zero()
}

/// After `invalid_grant` or `invalid_client` nothing changes until someone acts: the refresher
/// retries only this often, when the refresh-token file changes, or on SIGHUP.
pub(crate) const REAUTHORIZATION_RETRY: Duration = Duration::from_secs(600);
/// How often the refresh-token file is looked at while waiting for re-authorization.
const REAUTHORIZATION_FILE_POLL: Duration = Duration::from_secs(1);

/// When to call the token endpoint again after a failed call: a refusal of the grant or the
/// client is retried every 10 minutes (retrying sooner cannot help); any other failure backs off.
pub(crate) fn retry_delay(error: &TokenError, failures: u32, jitter: f64) -> Duration {
    if needs_reauthorization(error) {
        REAUTHORIZATION_RETRY
    } else {
        backoff_delay(failures, jitter)
    }
}

/// HubSpot refused the refresh token (revoked, app uninstalled) or the app's client credentials.
fn needs_reauthorization(error: &TokenError) -> bool {
    matches!(error.category(), "invalid_grant" | "invalid_client")
}

struct State {
    r: Refresher,
    /// What the refresh-token file held when last read or written; a change means an operator
    /// put a new token there, and it wins over the one in memory.
    file_value: Option<Secret<String>>,
    failures: u32,
    /// Set while HubSpot refuses the grant or the client: no retry loop, see `retry_delay`.
    needs_reauthorization: bool,
    /// The last refusal logged, so a bad secret is logged once, not every 30 s.
    logged_refusal: Option<String>,
    /// Reads the refresh-token file off the async workers.
    reader: SecretReader,
    /// Set while file reads hang, so a stuck mount logs one error.
    read_stuck: bool,
    /// The last token lifetime HubSpot granted here; sizes the refresh window of adopted tokens.
    lifetime: Option<Duration>,
}

/// Why the refresher's loop woke.
enum Wake {
    Due,
    Request,
    Reload,
    FilePoll,
    /// Fleet mode: another replica published a token (`None`: maybe, after a lagging receiver).
    Notice(Option<u64>),
}

pub(crate) fn spawn(
    refresher: Refresher,
    reload: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let file_value = refresher
            .refresh_source
            .file()
            .map(|_| refresher.refresh_token.clone());
        let reader = SecretReader::new(refresher.refresh_source.clone(), false);
        let fleet_mode = refresher.fleet.is_some();
        let mut state = State {
            r: refresher,
            file_value,
            failures: 0,
            needs_reauthorization: false,
            logged_refusal: None,
            reader,
            read_stuck: false,
            lifetime: None,
        };
        let control = state.r.control.clone();
        let mut next = tokio::time::Instant::now();
        let mut file_poll = tokio::time::interval(REAUTHORIZATION_FILE_POLL);
        file_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let polling = state.needs_reauthorization && state.r.refresh_source.file().is_some();
            let wake = tokio::select! {
                _ = tokio::time::sleep_until(next) => Wake::Due,
                _ = control.woken() => Wake::Request,
                _ = reload.notified() => Wake::Reload,
                _ = file_poll.tick(), if polling => Wake::FilePoll,
                generation = state.notice(), if fleet_mode => Wake::Notice(generation),
                _ = stop.changed() => return,
            };
            let now = tokio::time::Instant::now();
            match wake {
                Wake::Due => {}
                // A request found no usable token. While backing off or waiting for someone to
                // re-authorize, the schedule stands: waking early for every request would
                // hammer a failing endpoint. Forced refreshes are spaced, so HubSpot rejecting
                // even fresh tokens cannot cause a storm.
                Wake::Request => {
                    let backing_off = state.failures > 0 && now < next;
                    if backing_off || state.r.account.token.is_ready(Instant::now()) {
                        continue;
                    }
                    if let Some(at) = control.next_forced(Instant::now()) {
                        next = next.min(tokio::time::Instant::from_std(at));
                        continue;
                    }
                    control.forcing(Instant::now());
                }
                // SIGHUP: the operator may have fixed the refresh token or the client secret.
                Wake::Reload if state.needs_reauthorization => state.reload_client_secret().await,
                Wake::Reload => continue,
                Wake::FilePoll => {
                    if !state.refresh_file_changed().await {
                        continue;
                    }
                }
                // Adopt loop: pick up the fleet's new token even when ours is not yet due.
                Wake::Notice(generation) => {
                    if let Some(at) = state.adopt_announced(generation).await {
                        next = tokio::time::Instant::from_std(at);
                    }
                    continue;
                }
            }
            next = tokio::time::Instant::from_std(state.attempt().await);
        }
    })
}

impl State {
    /// One token call; returns when the next one is due.
    async fn attempt(&mut self) -> Instant {
        let control = self.r.control.clone();
        control.attempt_started();
        let reauthorized = self.pick_up_changed_file().await;
        let mut lease = None;
        if self.r.fleet.is_some() {
            match self.fleet_plan(reauthorized).await {
                Plan::Adopt(token) => {
                    let next = self.adopt(token);
                    control.attempt_finished(self.failures == 0);
                    return next;
                }
                Plan::Lead {
                    lease: held,
                    generation,
                    fleet_refresh_token,
                } => {
                    if !reauthorized {
                        // The fleet's refresh token wins over this replica's file.
                        self.rotate(fleet_refresh_token);
                    }
                    lease = Some((held, generation));
                }
                Plan::Retry => {
                    control.attempt_finished(self.failures == 0);
                    return Instant::now() + fleet_source_retry();
                }
                Plan::Local => {}
            }
        }
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
        let next = match (result, lease) {
            (Ok(grant), Some((lease, generation))) => {
                self.share(grant, started, lease, generation).await
            }
            (Ok(grant), None) => {
                let fleet = self.r.fleet.is_some();
                let next = self.succeeded(grant, started);
                if fleet && self.failures == 0 {
                    self.r.account.status.record_fleet_token(FleetTokenStatus {
                        generation: None,
                        origin: TokenOrigin::RefreshedLocally,
                    });
                }
                next
            }
            (Err(error), lease) => {
                if let (Some(fleet), Some((lease, _))) = (self.r.fleet.as_mut(), lease) {
                    fleet.release(lease).await;
                }
                self.failed(&error)
            }
        };
        control.attempt_finished(self.failures == 0);
        next
    }

    async fn fleet_plan(&mut self, reauthorized: bool) -> Plan {
        let (lifetime, margin) = (self.lifetime, self.r.margin);
        let fresh = move |t: &SharedToken| {
            let left = fleet_source::remaining(t.expires_at, SystemTime::now());
            worth_adopting(left, lifetime, margin)
        };
        let fleet = self.r.fleet.as_mut().expect("fleet mode");
        fleet.plan(&fresh, reauthorized).await
    }

    /// A token fetched under the lease: published with the fence, then used here. If the fence
    /// refused it, a newer fleet token wins over ours.
    async fn share(
        &mut self,
        grant: Grant,
        started: Instant,
        lease: Box<crate::fleet::Lease>,
        generation: u64,
    ) -> Instant {
        let shared = SharedToken {
            access_token: grant.access_token.clone(),
            expires_at: fleet_source::expires_at_unix(SystemTime::now(), grant.expires_in),
            // Always carry the refresh token in use, rotated or not: a replica starting with a
            // stale file needs it.
            refresh_token: Some(
                grant
                    .refresh_token
                    .clone()
                    .unwrap_or_else(|| self.r.refresh_token.clone()),
            ),
            generation,
        };
        let fleet = self.r.fleet.as_mut().expect("fleet mode");
        match fleet.publish(lease, shared).await {
            Published::Written => {
                let next = self.succeeded(grant, started);
                self.r.account.status.record_fleet_token(FleetTokenStatus {
                    generation: Some(generation),
                    origin: TokenOrigin::RefreshedHere,
                });
                next
            }
            Published::Lost(Some(newer)) => {
                self.r.account.metrics.refreshed(true, None);
                // HubSpot may have rotated the refresh token on our call: keep the live one.
                self.rotate(grant.refresh_token);
                self.adopt(newer)
            }
            Published::Lost(None) | Published::Unshared => {
                let next = self.succeeded(grant, started);
                self.r.account.status.record_fleet_token(FleetTokenStatus {
                    generation: None,
                    origin: TokenOrigin::RefreshedLocally,
                });
                next
            }
        }
    }

    /// Fleet mode: the next notice about this account.
    async fn notice(&mut self) -> Option<u64> {
        match self.r.fleet.as_mut() {
            Some(fleet) => fleet.notice().await,
            None => std::future::pending().await,
        }
    }

    /// A notice arrived: adopt the fleet's token if it is one we do not hold. Returns when the
    /// adopted token is due for refresh.
    async fn adopt_announced(&mut self, generation: Option<u64>) -> Option<Instant> {
        let fleet = self.r.fleet.as_mut()?;
        if generation.is_some() && generation == fleet.held() {
            return None; // our own publication
        }
        let token = fleet.announced().await?;
        let left = fleet_source::remaining(token.expires_at, SystemTime::now());
        if left < Duration::from_secs(1) {
            return None;
        }
        let control = self.r.control.clone();
        control.attempt_started();
        let next = self.adopt(token);
        control.attempt_finished(self.failures == 0);
        Some(next)
    }

    /// Takes the fleet's token (and its refresh token, written back to this replica's file)
    /// without a token call. Returns when it is due for refresh.
    fn adopt(&mut self, token: SharedToken) -> Instant {
        let now = SystemTime::now();
        let left = fleet_source::remaining(token.expires_at, now);
        let account = self.r.account.clone();
        if account
            .token
            .store(&token.access_token, Some(Instant::now() + left))
            .is_err()
        {
            return self.failed(&TokenError::BadBody(
                "the fleet's access_token is not header-safe".into(),
            ));
        }
        if let Some(fleet) = self.r.fleet.as_mut() {
            fleet.set_held(token.generation);
        }
        account.metrics.adopted(now + left);
        account.status.record_success();
        account.status.record_fleet_token(FleetTokenStatus {
            generation: Some(token.generation),
            origin: TokenOrigin::Adopted,
        });
        self.failures = 0;
        self.logged_refusal = None;
        if std::mem::take(&mut self.needs_reauthorization) {
            tracing::info!(account = %account.name, "the fleet holds a working token again; refreshes resume");
        }
        tracing::info!(
            account = %account.name,
            generation = token.generation,
            expires_in_secs = left.as_secs(),
            "access token adopted from the fleet"
        );
        self.rotate(token.refresh_token);
        Instant::now() + adopted_refresh_delay(left, self.lifetime, self.r.margin, rand::random())
    }

    fn succeeded(&mut self, mut grant: Grant, started: Instant) -> Instant {
        // Lifetime counts from when we asked, so clock time spent in flight is not overestimated.
        let expires_at = started + grant.expires_in;
        self.lifetime = Some(grant.expires_in);
        let account = &self.r.account;
        // Portal check hook, before the token is usable: the response names portal and scopes.
        let scopes = std::mem::take(&mut grant.scopes);
        account
            .portal
            .observe(grant.hub_id, scopes, TokenKind::OAuth);
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
        if std::mem::take(&mut self.needs_reauthorization) {
            tracing::info!(account = %account.name, "account re-authorized; refreshes resume");
        }
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
        let delay = retry_delay(error, self.failures, rand::random());
        if needs_reauthorization(error) {
            self.reauthorization_needed(error);
            return Instant::now() + delay;
        }
        match error {
            TokenError::Refused { .. } => {
                let text = error.to_string();
                if self.first_report(&text) {
                    tracing::error!(
                        account = %self.r.account.name,
                        endpoint = self.r.endpoint.url(),
                        "token refresh refused; fix the client secret or refresh token (the proxy retries, and picks up a changed refresh-token file): {text}"
                    );
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

    /// `invalid_grant` or `invalid_client`: report it once, with what to do, and stop looping.
    fn reauthorization_needed(&mut self, error: &TokenError) {
        self.needs_reauthorization = true;
        let account = &self.r.account;
        let grant = error.category() == "invalid_grant";
        let detail = if grant {
            "HubSpot refused the refresh token (invalid_grant): it was revoked or the app was uninstalled"
        } else {
            "HubSpot refused the app's client_id or client_secret (invalid_client)"
        };
        let action = if grant {
            // The scopes the last token carried are the ones to ask for again.
            let scopes = account.portal.scopes().join(" ");
            let scopes = if scopes.is_empty() {
                "<the app's scopes>".to_string()
            } else {
                scopes
            };
            format!("run `{} --scopes \"{scopes}\"`", self.r.reauthorize_command)
        } else {
            format!(
                "fix accounts[].oauth.client_id or client_secret for account '{}', then send SIGHUP",
                account.name
            )
        };
        account
            .status
            .record_reauthorization(crate::account::Reauthorization {
                error: error.category(),
                detail,
                action: action.clone(),
            });
        let text = error.to_string();
        if self.first_report(&text) {
            tracing::error!(
                account = %self.r.account.name,
                endpoint = self.r.endpoint.url(),
                "account needs re-authorization: {text}; {action}. The proxy retries when the refresh-token file changes, on SIGHUP, and every 10 minutes"
            );
        }
    }

    /// True unless this refusal is the one last logged: a bad secret is logged once, not at
    /// every retry.
    fn first_report(&mut self, text: &str) -> bool {
        if self.logged_refusal.as_deref() == Some(text) {
            return false;
        }
        self.logged_refusal = Some(text.to_string());
        true
    }

    async fn reload_client_secret(&mut self) {
        // A one-off reader: SIGHUP is rare, and the read must not block the async worker.
        let mut reader = SecretReader::new(self.r.client_secret_source.clone(), false);
        match reader.read(READ_TIMEOUT).await {
            Ok(secret) => self.r.client_secret = secret,
            Err(e) => tracing::error!(
                account = %self.r.account.name,
                source = %self.r.client_secret_source.describe(),
                "could not read the client secret again, keeping the previous one: {e}"
            ),
        }
    }

    /// While waiting for re-authorization: whether someone wrote a new refresh token.
    /// Read off the async workers, like every refresh-token file read.
    async fn refresh_file_changed(&mut self) -> bool {
        match self.reader.read(READ_TIMEOUT).await {
            Ok(value) => self.file_value.as_ref() != Some(&value),
            Err(_) => false,
        }
    }

    /// Returns whether an operator put a new refresh token in the file (a re-authorization).
    async fn pick_up_changed_file(&mut self) -> bool {
        if self.r.refresh_source.file().is_none() {
            return false;
        }
        match self.reader.read(READ_TIMEOUT).await {
            Ok(value) => {
                self.read_stuck = false;
                if self.file_value.as_ref() != Some(&value) {
                    tracing::info!(account = %self.r.account.name, "refresh token file changed; using the new token");
                    self.r.refresh_token = value.clone();
                    self.file_value = Some(value);
                    return true;
                }
            }
            Err(e @ SecretError::ReadTimedOut { .. }) => {
                if !self.read_stuck {
                    self.read_stuck = true;
                    tracing::error!(account = %self.r.account.name, "refresh token file read hung, keeping the refresh token in memory: {e}");
                }
            }
            // A missing or empty file keeps the token in memory, as before.
            Err(_) => self.read_stuck = false,
        }
        false
    }

    /// HubSpot may hand out a new refresh token (or the fleet shares one); losing it would
    /// strand the account.
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

/// After another replica held the lease for its whole TTL with nothing published.
fn fleet_source_retry() -> Duration {
    BACKOFF_START
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
    fn refused_grants_and_clients_wait_for_someone_to_act() {
        let refused = |error: &str| TokenError::Refused {
            error: error.into(),
            description: "missing or unknown refresh token".into(),
        };
        for failures in [1, 2, 50] {
            assert_eq!(
                retry_delay(&refused("invalid_grant"), failures, 0.5),
                REAUTHORIZATION_RETRY
            );
            assert_eq!(
                retry_delay(&refused("invalid_client"), failures, 0.5),
                REAUTHORIZATION_RETRY
            );
        }
        // Transient failures keep the capped, jittered backoff.
        let transient = [
            TokenError::Status {
                status: 502,
                message: "bad gateway".into(),
            },
            TokenError::Timeout(Duration::from_secs(2)),
            TokenError::Transport("refused".into()),
            refused("invalid_request"),
        ];
        for error in &transient {
            assert_eq!(retry_delay(error, 1, 0.5), Duration::from_secs(1));
            assert_eq!(retry_delay(error, 9, 1.0), BACKOFF_CAP);
        }
    }

    #[test]
    fn adopted_tokens_refresh_where_their_own_would() {
        let s = Duration::from_secs;
        // A 1800 s token adopted with 1000 s left: refresh at the same point (1500 s after issue).
        assert_eq!(
            adopted_refresh_delay(s(1000), Some(s(1800)), s(300), 0.0),
            s(700)
        );
        // Without a lifetime seen here, what is left stands in for it.
        assert_eq!(adopted_refresh_delay(s(4), None, s(300), 0.0), s(3));
        assert!(worth_adopting(s(1000), Some(s(1800)), s(300)));
        // Already inside the refresh window: refresh instead of adopting.
        assert!(!worth_adopting(s(200), Some(s(1800)), s(300)));
        assert!(!worth_adopting(Duration::from_millis(900), None, s(300)));
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
