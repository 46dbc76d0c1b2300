//! Accounts: one HubSpot credential each, with its token cell and pre-resolved metric handles.

use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use http::HeaderValue;

use crate::config::RateLimitConfig;
use crate::credentials::{RefreshControl, TokenCell};
use crate::error::ProxyError;
use crate::fleet::Fleet;
use crate::metrics::{AccountMetrics, AccountState};
use crate::shaping::{Admit, Shaper};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountKind {
    Static,
    OAuth,
}

impl AccountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::Static => "static",
            AccountKind::OAuth => "oauth",
        }
    }
}

pub struct Account {
    pub name: Arc<str>,
    pub kind: AccountKind,
    pub token: TokenCell,
    /// Present for OAuth accounts: how requests reach the refresher.
    pub refresh: Option<Arc<RefreshControl>>,
    pub metrics: AccountMetrics,
    pub status: AccountStatus,
    /// Admission under the account's budget, local or fleet-wide. Absent when shaping is off
    /// (`per_ten_seconds = 0`).
    pub shaper: Option<Shaper>,
    pub shaping: RateLimitConfig,
    /// The token's HubSpot portal and scopes, checked against `accounts[].hub_id`.
    pub portal: crate::portal::Portal,
}

impl Account {
    pub fn new(
        name: &str,
        kind: AccountKind,
        metrics: AccountMetrics,
        shaping: &RateLimitConfig,
        fleet: Option<&Arc<Fleet>>,
    ) -> Account {
        Account {
            name: Arc::from(name),
            kind,
            token: TokenCell::default(),
            refresh: (kind == AccountKind::OAuth).then(Default::default),
            metrics,
            status: AccountStatus::default(),
            shaper: Shaper::new(name, shaping, fleet),
            shaping: shaping.clone(),
            portal: Default::default(),
        }
    }

    /// The account's state for `/readyz`, `/status` and `hubspot_proxy_account_state`.
    pub fn state(&self, now: Instant) -> AccountState {
        if self.status.snapshot().reauthorization.is_some() {
            AccountState::NeedsReauthorization
        } else if self.token.is_ready(now) {
            AccountState::Ready
        } else {
            AccountState::NoToken
        }
    }

    /// Why a request found no usable token: waiting for re-authorization, or not yet.
    pub fn no_token_error(&self) -> ProxyError {
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
    pub async fn admit(&self, search: bool, deadline: tokio::time::Instant) -> Admit {
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
    pub fn may_resend(&self) -> bool {
        self.refresh.is_some()
            || self.shaping.max_retries_429 > 0
            || self.shaping.max_retries_5xx > 0
    }

    /// The bearer for a request and its generation. Without a usable token, an OAuth account
    /// waits for its refresher (never refreshing by itself) until `deadline`.
    pub async fn bearer(
        &self,
        now: Instant,
        deadline: tokio::time::Instant,
    ) -> Option<(HeaderValue, u64)> {
        if let Some(usable) = self.token.usable(now) {
            return Some(usable);
        }
        // Boxed: only a request that finds no usable token waits, and the wait is a large future.
        let refresh = self.refresh.as_ref()?;
        Box::pin(refresh.wait_for_token(&self.token, deadline)).await
    }
}

/// What `/status` and `/readyz` report about an account's credential. Written by the control
/// plane a few times an hour, read by the admin listener: a mutex is fine here.
#[derive(Default)]
pub struct AccountStatus {
    inner: Mutex<StatusSnapshot>,
}

#[derive(Debug, Clone, Default)]
pub struct StatusSnapshot {
    pub last_refresh: Option<SystemTime>,
    pub last_refresh_ok: Option<bool>,
    pub consecutive_failures: u32,
    pub last_error: Option<&'static str>,
    /// When HubSpot last answered 429 with the DAILY policy; nothing retries that.
    pub daily_limit_hit: Option<SystemTime>,
    /// Set while HubSpot refuses the refresh token or the client; cleared by a good refresh.
    pub reauthorization: Option<Reauthorization>,
    /// Fleet mode, OAuth accounts: where the current token came from. Holds no secret.
    pub fleet_token: Option<FleetTokenStatus>,
}

/// Fleet mode: the shared token's holder generation and how this replica got it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FleetTokenStatus {
    /// The fleet generation of the token in use; `None` for a token refreshed here while
    /// Redis was away (not shared).
    pub generation: Option<u64>,
    pub origin: TokenOrigin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenOrigin {
    /// This replica held the lease, called the token endpoint and published the token.
    RefreshedHere,
    /// Taken from the fleet: another replica made the token call.
    Adopted,
    /// Refreshed by this replica alone while Redis was unreachable.
    RefreshedLocally,
}

impl TokenOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenOrigin::RefreshedHere => "refreshed_here",
            TokenOrigin::Adopted => "adopted",
            TokenOrigin::RefreshedLocally => "refreshed_locally",
        }
    }
}

/// Why an account needs someone to act, and what to do. Holds no secret.
#[derive(Debug, Clone)]
pub struct Reauthorization {
    /// `invalid_grant` or `invalid_client`.
    pub error: &'static str,
    pub detail: &'static str,
    /// The command to run, or the config keys to fix.
    pub action: String,
}

impl AccountStatus {
    pub fn record_success(&self) {
        let mut s = self.inner.lock().expect("status lock");
        s.last_refresh = Some(SystemTime::now());
        s.last_refresh_ok = Some(true);
        s.consecutive_failures = 0;
        s.reauthorization = None;
    }

    pub fn record_fleet_token(&self, token: FleetTokenStatus) {
        self.inner.lock().expect("status lock").fleet_token = Some(token);
    }

    pub fn record_reauthorization(&self, reauthorization: Reauthorization) {
        self.inner.lock().expect("status lock").reauthorization = Some(reauthorization);
    }

    pub fn record_failure(&self, category: &'static str) {
        let mut s = self.inner.lock().expect("status lock");
        s.last_refresh = Some(SystemTime::now());
        s.last_refresh_ok = Some(false);
        s.consecutive_failures += 1;
        s.last_error = Some(category);
    }

    pub fn record_daily_limit(&self) {
        self.inner.lock().expect("status lock").daily_limit_hit = Some(SystemTime::now());
    }

    pub fn snapshot(&self) -> StatusSnapshot {
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

    pub fn default_account(&self) -> &Arc<Account> {
        &self.list[self.default]
    }

    pub fn get(&self, index: usize) -> &Arc<Account> {
        &self.list[index]
    }

    /// A linear scan: a proxy holds a handful of accounts, and this avoids hashing per request.
    pub fn by_name(&self, name: &str) -> Option<&Arc<Account>> {
        self.list.iter().find(|a| &*a.name == name)
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.list.iter().position(|a| &*a.name == name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Account>> {
        self.list.iter()
    }
}
