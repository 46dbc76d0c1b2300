//! Credentials: the `TokenCell` where the control plane stores bearer tokens and the data plane loads them.

pub mod fleet_source;
pub mod oauth;
pub mod persist;
pub mod static_token;
pub mod token_endpoint;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use http::HeaderValue;
use tokio::sync::{watch, Notify};

use crate::account::{Account, AccountKind};
use crate::config::{AccountConfig, Config, OAuthConfig, Secret, SecretSource};
use crate::metrics::Metrics;

/// A credential that could not be loaded at startup, with the config key it came from.
#[derive(Debug, thiserror::Error)]
#[error("{key} ({source_desc}): {reason}")]
pub struct CredentialError {
    pub key: String,
    pub source_desc: String,
    pub reason: String,
}

fn credential_error(key: String, source: &SecretSource, reason: impl ToString) -> CredentialError {
    CredentialError {
        key,
        source_desc: source.describe(),
        reason: reason.to_string(),
    }
}

/// Builds account `index` and starts the control-plane task that keeps its token fresh.
pub fn activate(
    config: &Config,
    index: usize,
    metrics: &Metrics,
    reload: &Arc<Notify>,
    stop: &watch::Receiver<bool>,
    // Fleet mode: where shared budgets and tokens live (a static account's token never goes
    // to Redis; only its budget is shared).
    fleet: Option<&Arc<crate::fleet::Fleet>>,
) -> Result<(Arc<Account>, Option<tokio::task::JoinHandle<()>>), CredentialError> {
    let cfg = &config.accounts[index];
    let key = format!("accounts[{index}]");
    match &cfg.oauth {
        Some(oauth) => activate_oauth(config, cfg, oauth, &key, metrics, reload, stop, fleet),
        None => activate_static(cfg, &key, metrics, reload, stop, fleet),
    }
}

fn activate_static(
    cfg: &AccountConfig,
    key: &str,
    metrics: &Metrics,
    reload: &Arc<Notify>,
    stop: &watch::Receiver<bool>,
    fleet: Option<&Arc<crate::fleet::Fleet>>,
) -> Result<(Arc<Account>, Option<tokio::task::JoinHandle<()>>), CredentialError> {
    let account = Arc::new(Account::new(
        &cfg.name,
        AccountKind::Static,
        metrics.for_account(&cfg.name),
        &cfg.rate_limit,
        fleet,
    ));
    account.portal.expect(cfg.hub_id);
    let source = cfg
        .token
        .clone()
        .expect("validated: a static account has a token");
    let current = static_token::load_initial(&account, &source)
        .map_err(|e| credential_error(format!("{key}.token"), &source, e))?;
    account.metrics.token_never_expires();
    let watcher = static_token::spawn_watcher(
        account.clone(),
        source,
        current,
        reload.clone(),
        stop.clone(),
    );
    Ok((account, watcher))
}

#[allow(clippy::too_many_arguments)]
fn activate_oauth(
    config: &Config,
    cfg: &AccountConfig,
    oauth: &OAuthConfig,
    key: &str,
    metrics: &Metrics,
    reload: &Arc<Notify>,
    stop: &watch::Receiver<bool>,
    fleet: Option<&Arc<crate::fleet::Fleet>>,
) -> Result<(Arc<Account>, Option<tokio::task::JoinHandle<()>>), CredentialError> {
    let load = |source: &SecretSource, field: &str| {
        source
            .load_within(false, crate::config::secret::ONE_SHOT_READ_LIMIT)
            .map_err(|e| credential_error(format!("{key}.oauth.{field}"), source, e))
    };
    let client_secret = load(&oauth.client_secret, "client_secret")?;
    let refresh_token = load(&oauth.refresh_token, "refresh_token")?;
    let url = oauth.token_url(&config.upstream);
    if let Some(warning) = token_endpoint::v1_warning(&url) {
        tracing::warn!(account = %cfg.name, "{key}.oauth.token_url: {warning}");
    }
    let endpoint = token_endpoint::TokenEndpoint::new(
        url.clone(),
        std::time::Duration::from_secs(oauth.token_timeout_secs),
        config.upstream.ca_file.as_deref(),
        config.upstream.proxy_url.as_deref(),
    )
    .map_err(|e| CredentialError {
        key: format!("{key}.oauth.token_url"),
        source_desc: url,
        reason: e,
    })?;
    let mut account = Account::new(
        &cfg.name,
        AccountKind::OAuth,
        metrics.for_account(&cfg.name),
        &cfg.rate_limit,
        fleet,
    );
    account.refresh = Some(Arc::new(RefreshControl::new(
        std::time::Duration::from_secs(oauth.refresh_min_interval_secs),
    )));
    account.portal.expect(cfg.hub_id);
    let account = Arc::new(account);
    let token_timeout = std::time::Duration::from_secs(oauth.token_timeout_secs);
    let fleet = fleet.map(|fleet| {
        let tokens = fleet.tokens();
        // Subscribed before the first refresh, so no notice falls between read and listen.
        fleet_source::FleetSource::new(
            tokens.account(&cfg.name, &client_secret),
            tokens.subscribe(),
            crate::fleet::lease_ttl(token_timeout),
        )
    });
    let refresher = oauth::Refresher {
        account: account.clone(),
        endpoint,
        client_id: oauth.client_id.clone(),
        client_secret,
        client_secret_source: oauth.client_secret.clone(),
        refresh_token,
        refresh_source: oauth.refresh_token.clone(),
        margin: std::time::Duration::from_secs(oauth.refresh_margin_secs),
        reauthorize_command: format!(
            "hubspot-auth-proxy oauth authorize --config {} --account {}",
            config
                .path
                .as_deref()
                .map_or("<this proxy's config file>".into(), |p| p
                    .display()
                    .to_string()),
            cfg.name
        ),
        fleet,
    };
    Ok((
        account,
        Some(oauth::spawn(refresher, reload.clone(), stop.clone())),
    ))
}

/// A bearer token, ready to put on a request: building the header string happens once, here,
/// so the hot path only clones a reference-counted `HeaderValue`.
pub struct Token {
    header: HeaderValue,
    /// `None` for static tokens (private app tokens do not expire on their own).
    expires_at: Option<Instant>,
    generation: u64,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("header", &"Bearer [redacted]")
            .field("expires_at", &self.expires_at)
            .field("generation", &self.generation)
            .finish()
    }
}

impl Token {
    pub fn header(&self) -> &HeaderValue {
        &self.header
    }

    pub fn expires_at(&self) -> Option<Instant> {
        self.expires_at
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn is_usable(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|at| now < at)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the token holds characters that cannot go in an HTTP header")]
pub struct InvalidToken;

/// The one meeting point of the two planes: an `ArcSwap` the data plane reads without locks.
#[derive(Default)]
pub struct TokenCell {
    current: ArcSwapOption<Token>,
    generation: AtomicU64,
}

impl TokenCell {
    /// The header for the next request, if the token is present and not expired.
    /// Requests already under way keep the value they cloned, whatever is stored later.
    pub fn bearer(&self, now: Instant) -> Option<HeaderValue> {
        self.usable(now).map(|(header, _)| header)
    }

    /// The header and the generation it belongs to, so a rejection can name which token died.
    pub fn usable(&self, now: Instant) -> Option<(HeaderValue, u64)> {
        let guard = self.current.load();
        let token = guard.as_ref()?;
        token
            .is_usable(now)
            .then(|| (token.header.clone(), token.generation))
    }

    /// HubSpot said this generation is dead: drop it, unless a newer token already replaced it.
    /// Returns whether this call removed it.
    pub fn invalidate(&self, generation: u64) -> bool {
        let guard = self.current.load();
        match guard.as_ref() {
            Some(token) if token.generation == generation => {
                let previous = self.current.compare_and_swap(&*guard, None);
                previous
                    .as_ref()
                    .is_some_and(|t| t.generation == generation)
            }
            _ => false,
        }
    }

    pub fn snapshot(&self) -> Option<Arc<Token>> {
        self.current.load_full()
    }

    pub fn is_ready(&self, now: Instant) -> bool {
        self.current
            .load()
            .as_ref()
            .is_some_and(|t| t.is_usable(now))
    }

    /// Swaps in a new token; only control-plane tasks call this.
    pub fn store(
        &self,
        secret: &Secret<String>,
        expires_at: Option<Instant>,
    ) -> Result<u64, InvalidToken> {
        let mut header = HeaderValue::try_from(format!("Bearer {}", secret.expose()))
            .map_err(|_| InvalidToken)?;
        header.set_sensitive(true);
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        self.current.store(Some(Arc::new(Token {
            header,
            expires_at,
            generation,
        })));
        Ok(generation)
    }
}

/// How requests ask the account's one refresher for a token, and wait for its attempts.
/// Only the refresher calls the token endpoint: this is what keeps refreshes single-flight.
pub struct RefreshControl {
    wake: Notify,
    backing_off: AtomicBool,
    /// Bumped after every attempt, success or failure, so waiters can re-check the cell.
    attempts: watch::Sender<u64>,
    /// `oauth.refresh_min_interval_secs`: forced refreshes are at least this far apart.
    min_interval: Duration,
    /// When the last forced refresh (one a request asked for) started. Read on the rare
    /// EXPIRED_AUTHENTICATION path only, so a mutex costs nothing.
    last_forced: Mutex<Option<Instant>>,
}

impl Default for RefreshControl {
    fn default() -> Self {
        RefreshControl::new(Duration::from_secs(5))
    }
}

impl RefreshControl {
    pub fn new(min_interval: Duration) -> Self {
        RefreshControl {
            wake: Notify::new(),
            backing_off: AtomicBool::new(false),
            attempts: watch::Sender::new(0),
            min_interval,
            last_forced: Mutex::new(None),
        }
    }

    /// Waits for a usable token from the refresher, until `deadline`. Returns `None` at once
    /// while the refresher is backing off after a failure: waiting would only hold the client.
    pub async fn wait_for_token(
        &self,
        cell: &TokenCell,
        deadline: tokio::time::Instant,
    ) -> Option<(HeaderValue, u64)> {
        let mut attempts = self.attempts.subscribe();
        loop {
            if let Some(usable) = cell.usable(Instant::now()) {
                return Some(usable);
            }
            if self.backing_off.load(Ordering::SeqCst) {
                return None;
            }
            self.wake.notify_one();
            tokio::select! {
                changed = attempts.changed() => changed.ok()?,
                _ = tokio::time::sleep_until(deadline) => return None,
            }
        }
    }

    /// Whether a request may have the refresher refresh now: not within `min_interval` of the
    /// last forced refresh. HubSpot rejecting even fresh tokens must not become a storm.
    pub fn may_force(&self, now: Instant) -> bool {
        self.next_forced(now).is_none()
    }

    /// When the next forced refresh may start, if not now.
    pub(crate) fn next_forced(&self, now: Instant) -> Option<Instant> {
        let last = (*self.last_forced.lock().expect("refresh lock"))?;
        let at = last + self.min_interval;
        (now < at).then_some(at)
    }

    pub(crate) fn forcing(&self, now: Instant) {
        *self.last_forced.lock().expect("refresh lock") = Some(now);
    }

    pub(crate) async fn woken(&self) {
        self.wake.notified().await
    }

    pub(crate) fn attempt_started(&self) {
        self.backing_off.store(false, Ordering::SeqCst);
    }

    pub(crate) fn attempt_finished(&self, ok: bool) {
        self.backing_off.store(!ok, Ordering::SeqCst);
        self.attempts.send_modify(|n| *n += 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_then_load_and_expiry() {
        let cell = TokenCell::default();
        let now = Instant::now();
        assert!(cell.bearer(now).is_none());
        let g = cell.store(&Secret::new("abc".into()), None).unwrap();
        assert_eq!(g, 1);
        let h = cell.bearer(now).unwrap();
        assert_eq!(h, "Bearer abc");
        assert!(h.is_sensitive());
        cell.store(
            &Secret::new("def".into()),
            Some(now + Duration::from_secs(1)),
        )
        .unwrap();
        assert_eq!(h, "Bearer abc", "a cloned header keeps its token");
        assert_eq!(cell.bearer(now).unwrap(), "Bearer def");
        assert!(cell.bearer(now + Duration::from_secs(2)).is_none());
        assert!(!format!("{:?}", cell.snapshot().unwrap()).contains("def"));
    }

    #[test]
    fn invalidate_only_removes_the_named_generation() {
        let cell = TokenCell::default();
        let now = Instant::now();
        cell.store(&Secret::new("one".into()), None).unwrap();
        let g2 = cell.store(&Secret::new("two".into()), None).unwrap();
        assert!(
            !cell.invalidate(g2 - 1),
            "an older generation is already gone"
        );
        assert_eq!(cell.bearer(now).unwrap(), "Bearer two");
        assert!(cell.invalidate(g2));
        assert!(!cell.invalidate(g2), "only the first caller removes it");
        assert!(cell.bearer(now).is_none());
    }
}

/// How a request waits for the refresher, under tokio's paused clock.
#[cfg(test)]
mod refresh_wait_tests {
    use super::*;

    fn elapsed_since(t: tokio::time::Instant) -> Duration {
        tokio::time::Instant::now() - t
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_waits_for_the_refresher_until_its_deadline_and_no_longer() {
        let control = RefreshControl::new(Duration::from_secs(5));
        let cell = TokenCell::default();
        // Nobody refreshes: the wait ends at the deadline.
        let t0 = tokio::time::Instant::now();
        let none = control.wait_for_token(&cell, t0 + Duration::from_secs(3));
        assert!(none.await.is_none());
        assert_eq!(elapsed_since(t0), Duration::from_secs(3));
        // The refresher, woken by the request, stores a token a second later: the request goes then.
        let t1 = tokio::time::Instant::now();
        let refresher = async {
            control.woken().await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            cell.store(&Secret::new("fresh".into()), None).unwrap();
            control.attempt_finished(true);
        };
        let waiter = control.wait_for_token(&cell, t1 + Duration::from_secs(10));
        let (got, ()) = tokio::join!(waiter, refresher);
        assert_eq!(got.unwrap().0, "Bearer fresh");
        assert_eq!(elapsed_since(t1), Duration::from_secs(1));
        // After a failed attempt, while backing off, a request does not wait at all.
        control.attempt_finished(false);
        let t2 = tokio::time::Instant::now();
        let empty = TokenCell::default();
        let backing_off = control.wait_for_token(&empty, t2 + Duration::from_secs(10));
        assert!(backing_off.await.is_none());
        assert_eq!(elapsed_since(t2), Duration::ZERO);
    }

    #[test]
    fn forced_refreshes_are_spaced_by_the_minimum_interval() {
        let control = RefreshControl::new(Duration::from_secs(5));
        let t0 = Instant::now();
        assert!(control.may_force(t0), "nothing forced yet");
        control.forcing(t0);
        assert!(!control.may_force(t0 + Duration::from_secs(4)));
        assert_eq!(
            control.next_forced(t0 + Duration::from_secs(4)),
            Some(t0 + Duration::from_secs(5))
        );
        assert!(control.may_force(t0 + Duration::from_secs(5)));
    }
}
