//! Per-account series: the families registered once, and each account's handles, resolved
//! at startup so that requests do no label hashing.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, Method, StatusCode};
use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Registry,
};

use super::api_family;
use super::labels::{
    method_index, AccountState, ExpiredPassed, HapikeyAction, RateLimitPolicy, RetryReason,
    UpstreamErrorKind, METHODS, RESULTS, STATUS_CLASSES, STATUS_CODES, WINDOWS,
};
use super::register::register;

static RL_MAX: HeaderName = HeaderName::from_static("x-hubspot-ratelimit-max");
static RL_REMAINING: HeaderName = HeaderName::from_static("x-hubspot-ratelimit-remaining");
static RL_DAILY: HeaderName = HeaderName::from_static("x-hubspot-ratelimit-daily");
static RL_DAILY_REMAINING: HeaderName =
    HeaderName::from_static("x-hubspot-ratelimit-daily-remaining");

/// The families every account has series in; labelled `account` first.
pub(super) struct AccountFamilies {
    requests: IntCounterVec,
    duration: HistogramVec,
    upstream_errors: IntCounterVec,
    token_reloads: IntCounterVec,
    hapikey: IntCounterVec,
    refreshes: IntCounterVec,
    adoptions: IntCounterVec,
    expiry: GaugeVec,
    refresh_duration: HistogramVec,
    replays: IntCounterVec,
    persist_failures: IntCounterVec,
    upstream_duration: HistogramVec,
    ratelimit_remaining: IntGaugeVec,
    ratelimit_max: IntGaugeVec,
    upstream_responses: IntCounterVec,
    rate_limited: IntCounterVec,
    api_requests: IntCounterVec,
    queue_wait: HistogramVec,
    shaping_rejected: IntCounterVec,
    retries: IntCounterVec,
    expired_passed: IntCounterVec,
    account_state: IntGaugeVec,
}

impl AccountFamilies {
    pub(super) fn register(r: &Registry) -> AccountFamilies {
        AccountFamilies {
            requests: register(
                r,
                "hubspot_proxy_requests_total",
                "Requests answered, by account, method and status code.",
                &["account", "method", "status"],
            ),
            duration: register(
                r,
                "hubspot_proxy_request_duration_seconds",
                "Time from request received to response headers sent.",
                &["account"],
            ),
            upstream_errors: register(
                r,
                "hubspot_proxy_upstream_errors_total",
                "Upstream exchanges that failed without a response, by kind.",
                &["account", "kind"],
            ),
            token_reloads: register(
                r,
                "hubspot_proxy_token_reloads_total",
                "Static token reloads from their source, by result.",
                &["account", "result"],
            ),
            hapikey: register(
                r,
                "hubspot_proxy_hapikey_requests_total",
                "Requests that carried ?hapikey=, by what the proxy did with them.",
                &["account", "action"],
            ),
            refreshes: register(
                r,
                "hubspot_proxy_token_refreshes_total",
                "OAuth token endpoint calls, by result.",
                &["account", "result"],
            ),
            adoptions: register(
                r,
                "hubspot_proxy_fleet_token_adoptions_total",
                "Fleet mode: OAuth tokens this replica took from the fleet instead of calling the token endpoint.",
                &["account"],
            ),
            expiry: register(
                r,
                "hubspot_proxy_token_expiry_timestamp_seconds",
                "Unix time the current access token expires; +Inf for static tokens.",
                &["account"],
            ),
            refresh_duration: register(
                r,
                "hubspot_proxy_token_refresh_duration_seconds",
                "Time taken by OAuth token endpoint calls.",
                &["account"],
            ),
            replays: register(
                r,
                "hubspot_proxy_replays_total",
                "Requests sent again after HubSpot rejected them, by reason.",
                &["account", "reason"],
            ),
            persist_failures: register(
                r,
                "hubspot_proxy_refresh_token_persist_failures_total",
                "Rotated refresh tokens that could not be written back to their file.",
                &["account"],
            ),
            upstream_duration: register(
                r,
                "hubspot_proxy_upstream_duration_seconds",
                "Time from sending upstream to HubSpot's response headers.",
                &["account"],
            ),
            ratelimit_remaining: register(
                r,
                "hubspot_proxy_upstream_ratelimit_remaining",
                "HubSpot's X-HubSpot-RateLimit-Remaining (ten_second) and -Daily-Remaining (daily), last seen.",
                &["account", "window"],
            ),
            ratelimit_max: register(
                r,
                "hubspot_proxy_upstream_ratelimit_max",
                "HubSpot's X-HubSpot-RateLimit-Max (ten_second) and -Daily (daily), last seen.",
                &["account", "window"],
            ),
            upstream_responses: register(
                r,
                "hubspot_proxy_upstream_responses_total",
                "Responses received from HubSpot, by status class.",
                &["account", "status_class"],
            ),
            rate_limited: register(
                r,
                "hubspot_proxy_upstream_rate_limited_total",
                "HubSpot 429 answers, by the policyName in their body.",
                &["account", "policy"],
            ),
            api_requests: register(
                r,
                "hubspot_proxy_api_requests_total",
                "Requests by API family and version (a fixed set; unknown paths count as other).",
                &["account", "api"],
            ),
            queue_wait: register(
                r,
                "hubspot_proxy_ratelimit_queue_wait_seconds",
                "Time requests waited for a slot under the account's rate limit.",
                &["account"],
            ),
            shaping_rejected: register(
                r,
                "hubspot_proxy_ratelimit_rejected_total",
                "Requests answered 429 by the proxy because the queue wait would pass max_queue_wait_ms.",
                &["account"],
            ),
            retries: register(
                r,
                "hubspot_proxy_retries_total",
                "Requests sent to HubSpot again, by reason.",
                &["account", "reason"],
            ),
            expired_passed: register(
                r,
                "hubspot_proxy_expired_authentication_passed_total",
                "HubSpot 401 EXPIRED_AUTHENTICATION answers passed to the client without a refresh and replay, by reason.",
                &["account", "reason"],
            ),
            account_state: register(
                r,
                "hubspot_proxy_account_state",
                "1 for the state each account is in (ready, no_token, needs_reauthorization), 0 for the others.",
                &["account", "state"],
            ),
        }
    }

    /// Handles for one account. Series that always exist are resolved here; those that
    /// appear only once seen (a method and status, an API family, a rate-limit figure, a
    /// fleet adoption) keep their family and fill a slot on first use.
    pub(super) fn for_account(&self, account: &str) -> AccountMetrics {
        let series = |vec: &IntCounterVec, label: &str| vec.with_label_values(&[account, label]);
        // Still exposed, at 0 for good: dashboards and alerts written against the series when
        // it also counted the expired-token replay keep finding it (`replays_total` counts it).
        series(&self.retries, RetryReason::ExpiredToken.as_str());
        AccountMetrics {
            account: account.to_string(),
            requests_vec: self.requests.clone(),
            requests: (0..METHODS.len() * STATUS_CODES)
                .map(|_| OnceLock::new())
                .collect(),
            duration: self.duration.with_label_values(&[account]),
            upstream_errors: UpstreamErrorKind::LABELS.map(|k| series(&self.upstream_errors, k)),
            reloads: RESULTS.map(|r| series(&self.token_reloads, r)),
            hapikey: HapikeyAction::LABELS.map(|a| series(&self.hapikey, a)),
            refreshes: RESULTS.map(|r| series(&self.refreshes, r)),
            adoptions_vec: self.adoptions.clone(),
            adoptions: OnceLock::new(),
            expiry: self.expiry.with_label_values(&[account]),
            refresh_duration: self.refresh_duration.with_label_values(&[account]),
            persist_failed: self.persist_failures.with_label_values(&[account]),
            upstream_duration: self.upstream_duration.with_label_values(&[account]),
            ratelimit_vecs: [self.ratelimit_remaining.clone(), self.ratelimit_max.clone()],
            ratelimit: Default::default(),
            responses: STATUS_CLASSES.map(|c| series(&self.upstream_responses, c)),
            rate_limited: RateLimitPolicy::LABELS.map(|p| series(&self.rate_limited, p)),
            queue_wait: self.queue_wait.with_label_values(&[account]),
            shaping_rejected: self.shaping_rejected.with_label_values(&[account]),
            // Each resend is counted once. The replay with a refreshed token after
            // EXPIRED_AUTHENTICATION is what `replays_total` exists for; `retries_total`
            // counts the resends of requests HubSpot did not serve (429, 5xx, unprocessed).
            resends: RetryReason::ALL.map(|reason| match reason {
                RetryReason::ExpiredToken => series(&self.replays, reason.as_str()),
                _ => series(&self.retries, reason.as_str()),
            }),
            api_vec: self.api_requests.clone(),
            api: (0..api_family::SLOTS).map(|_| OnceLock::new()).collect(),
            expired_passed: ExpiredPassed::LABELS.map(|r| series(&self.expired_passed, r)),
            state: AccountState::LABELS
                .map(|st| self.account_state.with_label_values(&[account, st])),
        }
    }
}

pub struct AccountMetrics {
    account: String,
    requests_vec: IntCounterVec,
    /// One slot per (method, status), filled on first use: series appear only once seen.
    requests: Box<[OnceLock<IntCounter>]>,
    duration: Histogram,
    upstream_errors: [IntCounter; 4],
    /// Static token reloads: success, failure.
    reloads: [IntCounter; 2],
    hapikey: [IntCounter; 5],
    /// OAuth token calls: success, failure.
    refreshes: [IntCounter; 2],
    adoptions_vec: IntCounterVec,
    /// Fleet mode only: the series appears with the first adoption.
    adoptions: OnceLock<IntCounter>,
    expiry: Gauge,
    refresh_duration: Histogram,
    persist_failed: IntCounter,
    upstream_duration: Histogram,
    /// remaining and max vectors; gauges appear only once HubSpot has reported a figure,
    /// so a dashboard never mistakes "not seen yet" for "none left".
    ratelimit_vecs: [IntGaugeVec; 2],
    /// ten-second remaining, ten-second max, daily remaining, daily max.
    ratelimit: [OnceLock<IntGauge>; 4],
    responses: [IntCounter; 5],
    rate_limited: [IntCounter; 4],
    queue_wait: Histogram,
    shaping_rejected: IntCounter,
    /// By `RetryReason`: each reason's one series, in `retries_total` or `replays_total`.
    resends: [IntCounter; 4],
    api_vec: IntCounterVec,
    api: Box<[OnceLock<IntCounter>]>,
    expired_passed: [IntCounter; 2],
    state: [IntGauge; 3],
}

/// A rate-limit header's figure; absent or unreadable means nothing to report.
fn header_number(headers: &HeaderMap, name: &HeaderName) -> Option<i64> {
    let value = headers.get(name)?.to_str().ok()?;
    value.trim().parse::<i64>().ok().filter(|n| *n >= 0)
}

/// Success and failure index the two-slot result arrays.
fn result_index(ok: bool) -> usize {
    usize::from(!ok)
}

impl AccountMetrics {
    pub fn observe(&self, method: &Method, status: StatusCode, elapsed: Duration) {
        let m = method_index(method);
        // hyper accepts 100..=999; RFC 9110 §15 defines 100..=599. The rest share one label.
        let (s, label) = match status.as_u16() {
            code @ 100..=599 => (usize::from(code) - 100, status.as_str()),
            _ => (STATUS_CODES - 1, "invalid"),
        };
        self.requests[m * STATUS_CODES + s]
            .get_or_init(|| {
                self.requests_vec
                    .with_label_values(&[&self.account, METHODS[m], label])
            })
            .inc();
        self.duration.observe(elapsed.as_secs_f64());
    }

    /// Called for every HubSpot response: latency to headers, status class.
    pub(crate) fn upstream_answered(&self, status: StatusCode, elapsed: Duration) {
        self.upstream_duration.observe(elapsed.as_secs_f64());
        match status.as_u16() {
            code @ 100..=599 => self.responses[usize::from(code / 100) - 1].inc(),
            // A status outside RFC 9110's range is a protocol fault, not a 5xx.
            _ => self.upstream_error(UpstreamErrorKind::Protocol),
        }
    }

    /// HubSpot's rate-limit figures, from an answer to a request that carried the account's
    /// bearer (a developer key's answer reports the developer app's budget, not the account's).
    /// Returns HubSpot's 10-second maximum when the response carries one.
    pub(crate) fn ratelimit_reported(&self, headers: &HeaderMap) -> Option<i64> {
        for (slot, name) in [&RL_REMAINING, &RL_MAX, &RL_DAILY_REMAINING, &RL_DAILY]
            .into_iter()
            .enumerate()
        {
            if let Some(n) = header_number(headers, name) {
                self.ratelimit_gauge(slot).set(n);
            }
        }
        header_number(headers, &RL_MAX)
    }

    fn ratelimit_gauge(&self, slot: usize) -> &IntGauge {
        self.ratelimit[slot].get_or_init(|| {
            self.ratelimit_vecs[slot % 2].with_label_values(&[&self.account, WINDOWS[slot / 2]])
        })
    }

    /// The last figures HubSpot reported, in slot order: ten-second remaining and max,
    /// daily remaining and max; `None` where it has not said.
    pub(crate) fn ratelimit_seen(&self) -> [Option<i64>; 4] {
        [0, 1, 2, 3].map(|slot| self.ratelimit[slot].get().map(IntGauge::get))
    }

    pub(crate) fn queued(&self, wait: Duration) {
        self.queue_wait.observe(wait.as_secs_f64());
    }

    pub(crate) fn shaping_rejected(&self) {
        self.shaping_rejected.inc();
    }

    /// A request sent to HubSpot again, counted once under its reason: the expired-token
    /// replay in `replays_total`, the others in `retries_total`.
    pub(crate) fn retried(&self, reason: RetryReason) {
        self.resends[reason as usize].inc();
    }

    pub(crate) fn rate_limited(&self, policy: RateLimitPolicy) {
        self.rate_limited[policy as usize].inc();
    }

    /// Counts the request under its API family; returns the family's slot for other counters.
    pub fn api_request(&self, path: &str) -> usize {
        let slot = api_family::classify(path);
        self.api[slot]
            .get_or_init(|| {
                self.api_vec
                    .with_label_values(&[&self.account, &api_family::label(slot)])
            })
            .inc();
        slot
    }

    pub(crate) fn upstream_error(&self, kind: UpstreamErrorKind) {
        self.upstream_errors[kind as usize].inc();
    }

    pub(crate) fn hapikey(&self, action: HapikeyAction) {
        self.hapikey[action as usize].inc();
    }

    /// Static tokens never expire on their own.
    pub(crate) fn token_never_expires(&self) {
        self.expiry.set(f64::INFINITY);
    }

    pub(crate) fn refreshed(&self, ok: bool, expires_at: Option<SystemTime>) {
        self.refreshes[result_index(ok)].inc();
        if let Some(at) = expires_at {
            self.expires_at(at);
        }
    }

    /// Fleet mode: a token taken from the fleet, not fetched by this replica.
    pub(crate) fn adopted(&self, expires_at: SystemTime) {
        self.adoptions
            .get_or_init(|| self.adoptions_vec.with_label_values(&[&self.account]))
            .inc();
        self.expires_at(expires_at);
    }

    fn expires_at(&self, at: SystemTime) {
        if let Ok(at) = at.duration_since(UNIX_EPOCH) {
            self.expiry.set(at.as_secs_f64());
        }
    }

    pub(crate) fn refresh_took(&self, elapsed: Duration) {
        self.refresh_duration.observe(elapsed.as_secs_f64());
    }

    pub(crate) fn refresh_token_persist_failed(&self) {
        self.persist_failed.inc();
    }

    pub(crate) fn expired_passed(&self, reason: ExpiredPassed) {
        self.expired_passed[reason as usize].inc();
    }

    /// Sets the account's state series: 1 for `state`, 0 for the rest.
    pub(crate) fn set_state(&self, state: AccountState) {
        for (i, gauge) in self.state.iter().enumerate() {
            gauge.set(i64::from(i == state as usize));
        }
    }

    pub(crate) fn token_reloaded(&self, ok: bool) {
        self.reloads[result_index(ok)].inc();
    }
}
