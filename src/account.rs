//! Accounts: one HubSpot credential each, with its token cell and pre-resolved metric handles.

use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use http::HeaderValue;

use crate::error::ProxyError;
use crate::fleet::Fleet;
use crate::metrics::{AccountMetrics, AccountState};
use crate::portal_state::Portal;
use crate::settings::RateLimitSettings;
use crate::shaping::{Admit, Shaper};
use crate::token_cell::{RefreshControl, TokenCell};

/// The account's kind of credential, and for OAuth how requests reach its refresher. The one
/// place the kind is said: `/status`, the router, the retry judge and the refresher all read it.
pub enum Credential {
    /// A private app token or service key: loaded from config, re-read when its file changes,
    /// never refreshed.
    Static,
    /// An OAuth access token, kept fresh by the account's one refresher. Requests that find no
    /// usable token, or one HubSpot calls expired, ask the refresher through this control.
    OAuth(Arc<RefreshControl>),
}

impl Credential {
    /// The `kind` in `/status`.
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            Credential::Static => "static",
            Credential::OAuth(_) => "oauth",
        }
    }

    /// The refresher's control, for an OAuth account.
    pub(crate) fn refresh(&self) -> Option<&RefreshControl> {
        match self {
            Credential::Static => None,
            Credential::OAuth(control) => Some(control),
        }
    }
}

pub struct Account {
    pub(crate) name: Arc<str>,
    pub(crate) credential: Credential,
    pub(crate) token: TokenCell,
    pub(crate) metrics: AccountMetrics,
    pub(crate) status: AccountStatus,
    /// Admission under the account's budget, local or fleet-wide. Absent when shaping is off
    /// (`per_ten_seconds = 0`).
    pub(crate) shaper: Option<Shaper>,
    pub(crate) shaping: RateLimitSettings,
    /// The token's HubSpot portal and scopes, checked against `accounts[].hub_id`.
    pub(crate) portal: Portal,
}

impl Account {
    pub fn new(
        name: &str,
        credential: Credential,
        metrics: AccountMetrics,
        shaping: &RateLimitSettings,
        fleet: Option<&Arc<Fleet>>,
    ) -> Account {
        Account {
            name: Arc::from(name),
            credential,
            token: TokenCell::default(),
            metrics,
            status: AccountStatus::default(),
            shaper: Shaper::new(name, shaping, fleet),
            shaping: shaping.clone(),
            portal: Default::default(),
        }
    }

    /// The account's state for `/readyz`, `/status` and `hubspot_proxy_account_state`.
    pub(crate) fn state(&self, now: Instant) -> AccountState {
        if self.status.snapshot().reauthorization.is_some() {
            AccountState::NeedsReauthorization
        } else if self.token.is_ready(now) {
            AccountState::Ready
        } else {
            AccountState::NoToken
        }
    }

    /// Why a request found no usable token: waiting for re-authorization, or not yet.
    pub(crate) fn no_token_error(&self) -> ProxyError {
        match self.status.snapshot().reauthorization {
            Some(r) => ProxyError::NeedsReauthorization {
                account: self.name.clone(),
                detail: r.detail,
            },
            None => ProxyError::NoToken {
                account: self.name.clone(),
            },
        }
    }

    /// Waits for the request's slot under the account's budget (at once when shaping is off).
    pub(crate) async fn admit(&self, search: bool, deadline: tokio::time::Instant) -> Admit {
        match &self.shaper {
            Some(shaper) => {
                let slotted = |wait| self.metrics.queued(wait);
                shaper.admit(search, deadline, slotted).await
            }
            None => Admit::Go {
                queued: std::time::Duration::ZERO,
            },
        }
    }

    /// Whether a request's body should be kept (≤ 1 MiB) so it can be sent again.
    pub(crate) fn may_resend(&self) -> bool {
        self.credential.refresh().is_some()
            || self.shaping.max_retries_429 > 0
            || self.shaping.max_retries_5xx > 0
    }

    /// The bearer for a request and its generation. Without a usable token, an OAuth account
    /// waits for its refresher (never refreshing by itself) until `deadline`.
    pub(crate) async fn bearer(
        &self,
        now: Instant,
        deadline: tokio::time::Instant,
    ) -> Option<(HeaderValue, u64)> {
        if let Some(usable) = self.token.usable(now) {
            return Some(usable);
        }
        // Boxed: only a request that finds no usable token waits, and the wait is a large future.
        let refresh = self.credential.refresh()?;
        Box::pin(refresh.wait_for_token(&self.token, deadline)).await
    }
}

/// What `/status` and `/readyz` report about an account's credential. Written by the control
/// plane a few times an hour, read by the admin listener: a mutex is fine here.
#[derive(Default)]
pub(crate) struct AccountStatus {
    inner: Mutex<StatusSnapshot>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct StatusSnapshot {
    pub(crate) last_refresh: Option<SystemTime>,
    pub(crate) last_refresh_ok: Option<bool>,
    pub(crate) consecutive_failures: u32,
    pub(crate) last_error: Option<&'static str>,
    /// When HubSpot last answered 429 with the DAILY policy; nothing retries that.
    pub(crate) daily_limit_hit: Option<SystemTime>,
    /// Set while HubSpot refuses the refresh token or the client; cleared by a good refresh.
    pub(crate) reauthorization: Option<Reauthorization>,
    /// Fleet mode, OAuth accounts: where the current token came from. Holds no secret.
    pub(crate) fleet_token: Option<FleetTokenStatus>,
}

/// Fleet mode: the shared token's holder generation and how this replica got it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FleetTokenStatus {
    /// The fleet generation of the token in use; `None` for a token refreshed here while
    /// Redis was away (not shared).
    pub(crate) generation: Option<u64>,
    pub(crate) origin: TokenOrigin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenOrigin {
    /// This replica held the lease, called the token endpoint and published the token.
    RefreshedHere,
    /// Taken from the fleet: another replica made the token call.
    Adopted,
    /// Refreshed by this replica alone while Redis was unreachable.
    RefreshedLocally,
}

impl TokenOrigin {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TokenOrigin::RefreshedHere => "refreshed_here",
            TokenOrigin::Adopted => "adopted",
            TokenOrigin::RefreshedLocally => "refreshed_locally",
        }
    }
}

/// Why an account needs someone to act, and what to do. Holds no secret.
#[derive(Debug, Clone)]
pub(crate) struct Reauthorization {
    /// `invalid_grant` or `invalid_client`.
    pub(crate) error: &'static str,
    pub(crate) detail: &'static str,
    /// The command to run, or the config keys to fix.
    pub(crate) action: String,
}

impl AccountStatus {
    pub(crate) fn record_success(&self) {
        let mut s = self.inner.lock().expect("status lock");
        s.last_refresh = Some(SystemTime::now());
        s.last_refresh_ok = Some(true);
        s.consecutive_failures = 0;
        s.reauthorization = None;
    }

    pub(crate) fn record_fleet_token(&self, token: FleetTokenStatus) {
        self.inner.lock().expect("status lock").fleet_token = Some(token);
    }

    pub(crate) fn record_reauthorization(&self, reauthorization: Reauthorization) {
        self.inner.lock().expect("status lock").reauthorization = Some(reauthorization);
    }

    pub(crate) fn record_failure(&self, category: &'static str) {
        let mut s = self.inner.lock().expect("status lock");
        s.last_refresh = Some(SystemTime::now());
        s.last_refresh_ok = Some(false);
        s.consecutive_failures += 1;
        s.last_error = Some(category);
    }

    pub(crate) fn record_daily_limit(&self) {
        self.inner.lock().expect("status lock").daily_limit_hit = Some(SystemTime::now());
    }

    pub(crate) fn snapshot(&self) -> StatusSnapshot {
        self.inner.lock().expect("status lock").clone()
    }
}

/// All accounts, in config order, and which one is the default.
pub struct Accounts {
    list: Vec<Arc<Account>>,
    default: usize,
}

impl Accounts {
    pub fn new(list: Vec<Arc<Account>>, default: usize) -> Self {
        assert!(
            default < list.len(),
            "config validation requires an account"
        );
        Accounts { list, default }
    }

    pub(crate) fn default_account(&self) -> &Arc<Account> {
        &self.list[self.default]
    }

    pub(crate) fn get(&self, index: usize) -> &Arc<Account> {
        &self.list[index]
    }

    /// A linear scan: a proxy holds a handful of accounts, and this avoids hashing per request.
    pub(crate) fn by_name(&self, name: &str) -> Option<&Arc<Account>> {
        self.list.iter().find(|a| &*a.name == name)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<Account>> {
        self.list.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    fn account(credential: Credential) -> Account {
        let shaping = RateLimitSettings {
            per_ten_seconds: Some(0),
            max_retries_429: 0,
            max_retries_5xx: 0,
            ..RateLimitSettings::default()
        };
        Account::new(
            "main",
            credential,
            Metrics::new().for_account("main"),
            &shaping,
            None,
        )
    }

    fn oauth() -> Credential {
        Credential::OAuth(Arc::new(RefreshControl::new(
            std::time::Duration::from_secs(5),
        )))
    }

    #[test]
    fn the_kind_names_in_status_stay() {
        assert_eq!(Credential::Static.as_str(), "static");
        assert_eq!(oauth().as_str(), "oauth");
    }

    #[test]
    fn only_oauth_bodies_are_kept_for_an_expired_token_resend() {
        assert!(!account(Credential::Static).may_resend());
        assert!(account(oauth()).may_resend());
    }

    #[tokio::test(start_paused = true)]
    async fn a_static_account_without_a_token_answers_at_once() {
        let account = account(Credential::Static);
        let start = tokio::time::Instant::now();
        let deadline = start + std::time::Duration::from_secs(30);
        assert!(account.bearer(Instant::now(), deadline).await.is_none());
        assert_eq!(
            start.elapsed(),
            std::time::Duration::ZERO,
            "nothing to wait for"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_oauth_account_without_a_token_waits_for_its_refresher() {
        let account = account(oauth());
        let start = tokio::time::Instant::now();
        let deadline = start + std::time::Duration::from_secs(30);
        assert!(account.bearer(Instant::now(), deadline).await.is_none());
        assert_eq!(
            start.elapsed(),
            std::time::Duration::from_secs(30),
            "waited until the deadline"
        );
    }
}
