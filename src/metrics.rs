//! Metrics: the Prometheus registry and typed per-account handles; label sets are bounded by construction.

pub mod api_family;

use std::sync::OnceLock;
use std::time::Duration;

use http::{HeaderMap, HeaderName, Method, StatusCode};
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::error::UpstreamErrorKind;

/// Sub-millisecond (the proxy's own overhead) up to the 60 s upstream timeout.
const LATENCY_BUCKETS: &[f64] = &[
    0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0,
];

/// Methods get a fixed label set so a client inventing methods cannot grow the series count.
const METHODS: [&str; 8] = [
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "OTHER",
];
/// 100..=599, then one slot for anything else an upstream sends (labelled `invalid`).
const STATUS_CODES: usize = 501;

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    upstream_errors: IntCounterVec,
    inflight: IntGauge,
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
    denied: IntCounterVec,
    client_requests: IntCounterVec,
    upstream_slots: SlotMetrics,
    bodies: BodyMetrics,
    expired_passed: IntCounterVec,
    account_state: IntGaugeVec,
}

/// How the `upstream.max_connections` slots are used, across all workers: a full house and a
/// growing wait count say the bound, not HubSpot, is what holds requests back.
#[derive(Clone)]
pub struct SlotMetrics {
    in_use: IntGauge,
    waits: IntCounter,
}

impl SlotMetrics {
    fn new(registry: &Registry) -> SlotMetrics {
        let in_use = IntGauge::new(
            "hubspot_proxy_upstream_slots_in_use",
            "Upstream request slots (upstream.max_connections) held now.",
        )
        .expect("valid metric");
        let waits = IntCounter::new(
            "hubspot_proxy_upstream_slot_waits_total",
            "Requests that found every upstream slot taken and had to wait.",
        )
        .expect("valid metric");
        registry.register(Box::new(in_use.clone())).expect("unique");
        registry.register(Box::new(waits.clone())).expect("unique");
        SlotMetrics { in_use, waits }
    }

    pub fn waited(&self) {
        self.waits.inc();
    }

    /// Counts a slot as held until the guard drops.
    pub fn held(&self) -> GaugeGuard {
        self.in_use.inc();
        GaugeGuard(self.in_use.clone())
    }
}

/// Why a client's request body could not be read; a fault of the client, never of HubSpot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientBodyFault {
    /// Framing that does not parse (a bad chunk size line, say).
    Malformed = 0,
    /// The client closed or reset the connection before the body was complete.
    Aborted = 1,
    /// No body data for `server.body_read_timeout_secs`, or none in time for the deadline.
    Stalled = 2,
}

impl ClientBodyFault {
    const LABELS: [&'static str; 3] = ["malformed", "aborted", "stalled"];

    pub fn as_str(self) -> &'static str {
        Self::LABELS[self as usize]
    }
}

/// Bodies in both directions: client body faults, upstream framing conflicts, and the
/// process-wide replay buffer (`server.max_replay_buffer_bytes`).
#[derive(Clone)]
pub struct BodyMetrics {
    client_faults: [IntCounter; 3],
    framing_conflicts: IntCounter,
    replay_bytes: IntGauge,
    replay_unbudgeted: IntCounter,
}

impl BodyMetrics {
    fn new(registry: &Registry) -> BodyMetrics {
        let faults = counter_vec(
            registry,
            "hubspot_proxy_client_body_errors_total",
            "Request bodies the client failed to deliver (malformed, aborted, stalled); never counted as upstream errors.",
            &["kind"],
        );
        let framing_conflicts = IntCounter::new(
            "hubspot_proxy_upstream_framing_conflicts_total",
            "Upstream answers with both Transfer-Encoding and Content-Length; the length was dropped (RFC 9112 §6.3).",
        )
        .expect("valid metric");
        let replay_bytes = IntGauge::new(
            "hubspot_proxy_replay_buffer_bytes",
            "Bytes of request bodies held for replay now, across all workers.",
        )
        .expect("valid metric");
        let replay_unbudgeted = IntCounter::new(
            "hubspot_proxy_replay_budget_exhausted_total",
            "Requests streamed without a replay copy because server.max_replay_buffer_bytes was in use.",
        )
        .expect("valid metric");
        for metric in [&framing_conflicts, &replay_unbudgeted] {
            registry.register(Box::new(metric.clone())).expect("unique");
        }
        registry
            .register(Box::new(replay_bytes.clone()))
            .expect("unique");
        BodyMetrics {
            client_faults: ClientBodyFault::LABELS.map(|k| faults.with_label_values(&[k])),
            framing_conflicts,
            replay_bytes,
            replay_unbudgeted,
        }
    }

    pub fn client_fault(&self, fault: ClientBodyFault) {
        self.client_faults[fault as usize].inc();
    }

    pub fn framing_conflict(&self) {
        self.framing_conflicts.inc();
    }

    /// The gauge of bytes held for replay, moved by the budget's reservations.
    pub fn replay_bytes(&self) -> &IntGauge {
        &self.replay_bytes
    }

    pub fn replay_unbudgeted(&self) {
        self.replay_unbudgeted.inc();
    }
}

/// Why a request was sent to HubSpot again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    RateLimited = 0,
    Upstream5xx = 1,
    ExpiredToken = 2,
    /// HubSpot provably never processed it (REFUSED_STREAM, above GOAWAY's last stream id,
    /// never written): resent on a fresh connection, whatever the method.
    Unprocessed = 3,
}

impl RetryReason {
    const LABELS: [&'static str; 4] = [
        "rate_limited",
        "upstream_5xx",
        "expired_token",
        "unprocessed",
    ];
}

/// Why HubSpot's 401 EXPIRED_AUTHENTICATION went to the client as it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiredPassed {
    /// The request was already replayed with a refreshed token, and that was rejected too.
    ReplayRejected = 0,
    /// A forced refresh ran less than `refresh_min_interval_secs` ago: refreshing again now
    /// would only storm the token endpoint.
    RefreshSpaced = 1,
}

impl ExpiredPassed {
    const LABELS: [&'static str; 2] = ["replay_rejected", "refresh_spaced"];
}

/// What an account can do now; a closed set, reported by `hubspot_proxy_account_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountState {
    Ready = 0,
    /// No usable token: the first one not fetched yet, or refreshes failing for a transient reason.
    NoToken = 1,
    /// HubSpot refused the refresh token or the client credentials; someone must act.
    NeedsReauthorization = 2,
}

impl AccountState {
    const LABELS: [&'static str; 3] = ["ready", "no_token", "needs_reauthorization"];

    pub fn as_str(self) -> &'static str {
        Self::LABELS[self as usize]
    }
}

static RL_MAX: HeaderName = HeaderName::from_static("x-hubspot-ratelimit-max");
static RL_REMAINING: HeaderName = HeaderName::from_static("x-hubspot-ratelimit-remaining");
static RL_DAILY: HeaderName = HeaderName::from_static("x-hubspot-ratelimit-daily");
static RL_DAILY_REMAINING: HeaderName =
    HeaderName::from_static("x-hubspot-ratelimit-daily-remaining");

const WINDOWS: [&str; 2] = ["ten_second", "daily"];
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The `policyName` of a HubSpot 429, as a bounded label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitPolicy {
    TenSecondlyRolling = 0,
    Secondly = 1,
    Daily = 2,
    Other = 3,
}

impl RateLimitPolicy {
    const LABELS: [&'static str; 4] = ["ten_secondly_rolling", "secondly", "daily", "other"];

    pub fn from_policy_name(name: Option<&str>) -> Self {
        match name {
            Some("TEN_SECONDLY_ROLLING") => RateLimitPolicy::TenSecondlyRolling,
            Some("SECONDLY") => RateLimitPolicy::Secondly,
            Some("DAILY") => RateLimitPolicy::Daily,
            _ => RateLimitPolicy::Other,
        }
    }
}

/// What went wrong reading a gauge: nothing to report.
fn header_number(headers: &HeaderMap, name: &HeaderName) -> Option<i64> {
    let value = headers.get(name)?.to_str().ok()?;
    value.trim().parse::<i64>().ok().filter(|n| *n >= 0)
}

/// What became of a request that carried `?hapikey=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HapikeyAction {
    Translated = 0,
    Rejected = 1,
    UnknownKey = 2,
    DeveloperPassthrough = 3,
    Forwarded = 4,
}

impl HapikeyAction {
    const ALL: [HapikeyAction; 5] = [
        HapikeyAction::Translated,
        HapikeyAction::Rejected,
        HapikeyAction::UnknownKey,
        HapikeyAction::DeveloperPassthrough,
        HapikeyAction::Forwarded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HapikeyAction::Translated => "translated",
            HapikeyAction::Rejected => "rejected",
            HapikeyAction::UnknownKey => "unknown_key",
            HapikeyAction::DeveloperPassthrough => "developer_passthrough",
            HapikeyAction::Forwarded => "forwarded",
        }
    }
}

fn histogram_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
    let vec = HistogramVec::new(opts, labels).expect("valid metric");
    registry
        .register(Box::new(vec.clone()))
        .expect("unique metric");
    vec
}

fn int_gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let vec = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(vec.clone()))
        .expect("unique metric");
    vec
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let vec = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(vec.clone()))
        .expect("unique metric");
    vec
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = counter_vec(
            &registry,
            "hubspot_proxy_requests_total",
            "Requests answered, by account, method and status code.",
            &["account", "method", "status"],
        );
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "hubspot_proxy_request_duration_seconds",
                "Time from request received to response headers sent.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["account"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(duration.clone()))
            .expect("unique");
        let upstream_errors = counter_vec(
            &registry,
            "hubspot_proxy_upstream_errors_total",
            "Upstream exchanges that failed without a response, by kind.",
            &["account", "kind"],
        );
        let inflight = IntGauge::new(
            "hubspot_proxy_inflight_requests",
            "Requests being handled now.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(inflight.clone()))
            .expect("unique");
        let token_reloads = counter_vec(
            &registry,
            "hubspot_proxy_token_reloads_total",
            "Static token reloads from their source, by result.",
            &["account", "result"],
        );
        let hapikey = counter_vec(
            &registry,
            "hubspot_proxy_hapikey_requests_total",
            "Requests that carried ?hapikey=, by what the proxy did with them.",
            &["account", "action"],
        );
        let refreshes = counter_vec(
            &registry,
            "hubspot_proxy_token_refreshes_total",
            "OAuth token endpoint calls, by result.",
            &["account", "result"],
        );
        let adoptions = counter_vec(
            &registry,
            "hubspot_proxy_fleet_token_adoptions_total",
            "Fleet mode: OAuth tokens this replica took from the fleet instead of calling the token endpoint.",
            &["account"],
        );
        let expiry = GaugeVec::new(
            Opts::new(
                "hubspot_proxy_token_expiry_timestamp_seconds",
                "Unix time the current access token expires; +Inf for static tokens.",
            ),
            &["account"],
        )
        .expect("valid metric");
        registry.register(Box::new(expiry.clone())).expect("unique");
        let refresh_duration = histogram_vec(
            &registry,
            "hubspot_proxy_token_refresh_duration_seconds",
            "Time taken by OAuth token endpoint calls.",
            &["account"],
        );
        let replays = counter_vec(
            &registry,
            "hubspot_proxy_replays_total",
            "Requests sent again after HubSpot rejected them, by reason.",
            &["account", "reason"],
        );
        let persist_failures = counter_vec(
            &registry,
            "hubspot_proxy_refresh_token_persist_failures_total",
            "Rotated refresh tokens that could not be written back to their file.",
            &["account"],
        );
        let upstream_duration = histogram_vec(
            &registry,
            "hubspot_proxy_upstream_duration_seconds",
            "Time from sending upstream to HubSpot's response headers.",
            &["account"],
        );
        let ratelimit_remaining = int_gauge_vec(
            &registry,
            "hubspot_proxy_upstream_ratelimit_remaining",
            "HubSpot's X-HubSpot-RateLimit-Remaining (ten_second) and -Daily-Remaining (daily), last seen.",
            &["account", "window"],
        );
        let ratelimit_max = int_gauge_vec(
            &registry,
            "hubspot_proxy_upstream_ratelimit_max",
            "HubSpot's X-HubSpot-RateLimit-Max (ten_second) and -Daily (daily), last seen.",
            &["account", "window"],
        );
        let upstream_responses = counter_vec(
            &registry,
            "hubspot_proxy_upstream_responses_total",
            "Responses received from HubSpot, by status class.",
            &["account", "status_class"],
        );
        let rate_limited = counter_vec(
            &registry,
            "hubspot_proxy_upstream_rate_limited_total",
            "HubSpot 429 answers, by the policyName in their body.",
            &["account", "policy"],
        );
        let api_requests = counter_vec(
            &registry,
            "hubspot_proxy_api_requests_total",
            "Requests by API family and version (a fixed set; unknown paths count as other).",
            &["account", "api"],
        );
        let queue_wait = histogram_vec(
            &registry,
            "hubspot_proxy_ratelimit_queue_wait_seconds",
            "Time requests waited for a slot under the account's rate limit.",
            &["account"],
        );
        let shaping_rejected = counter_vec(
            &registry,
            "hubspot_proxy_ratelimit_rejected_total",
            "Requests answered 429 by the proxy because the queue wait would pass max_queue_wait_ms.",
            &["account"],
        );
        let retries = counter_vec(
            &registry,
            "hubspot_proxy_retries_total",
            "Requests sent to HubSpot again, by reason.",
            &["account", "reason"],
        );
        let denied = counter_vec(
            &registry,
            "hubspot_proxy_denied_total",
            "Requests refused before reaching HubSpot: network, unauthenticated, forbidden.",
            &["reason"],
        );
        let client_requests = counter_vec(
            &registry,
            "hubspot_proxy_client_requests_total",
            "Requests allowed, by [[clients]] name.",
            &["client"],
        );
        let upstream_slots = SlotMetrics::new(&registry);
        let bodies = BodyMetrics::new(&registry);
        let expired_passed = counter_vec(
            &registry,
            "hubspot_proxy_expired_authentication_passed_total",
            "HubSpot 401 EXPIRED_AUTHENTICATION answers passed to the client without a refresh and replay, by reason.",
            &["account", "reason"],
        );
        let account_state = int_gauge_vec(
            &registry,
            "hubspot_proxy_account_state",
            "1 for the state each account is in (ready, no_token, needs_reauthorization), 0 for the others.",
            &["account", "state"],
        );
        register_build_info(&registry);
        register_process_collector(&registry);
        Metrics {
            registry,
            requests,
            duration,
            upstream_errors,
            inflight,
            token_reloads,
            hapikey,
            refreshes,
            adoptions,
            expiry,
            refresh_duration,
            replays,
            persist_failures,
            upstream_duration,
            ratelimit_remaining,
            ratelimit_max,
            upstream_responses,
            rate_limited,
            api_requests,
            queue_wait,
            shaping_rejected,
            retries,
            denied,
            client_requests,
            upstream_slots,
            bodies,
            expired_passed,
            account_state,
        }
    }

    /// The counter for one refusal reason (network, unauthenticated, forbidden).
    pub fn denied(&self, reason: &str) -> IntCounter {
        self.denied.with_label_values(&[reason])
    }

    /// Requests to APIs HubSpot has deprecated or retired (the migration report's counter).
    /// Labels are bounded: accounts from the config, API families and generations by
    /// construction, four states.
    pub fn deprecated_api_requests(&self) -> IntCounterVec {
        counter_vec(
            &self.registry,
            "hubspot_proxy_deprecated_api_requests_total",
            "Requests to deprecated or unsupported HubSpot APIs, by API family, generation and support state on the day.",
            &["account", "api", "generation", "state"],
        )
    }

    /// The counter for one configured client; names come from the config, so they are bounded.
    pub fn client_requests(&self, client: &str) -> IntCounter {
        self.client_requests.with_label_values(&[client])
    }

    /// Handles for one account, resolved once at startup so requests do no label hashing.
    pub fn for_account(&self, account: &str) -> AccountMetrics {
        let errors = |kind: UpstreamErrorKind| {
            self.upstream_errors
                .with_label_values(&[account, kind.as_str()])
        };
        AccountMetrics {
            account: account.to_string(),
            requests_vec: self.requests.clone(),
            requests: (0..METHODS.len() * STATUS_CODES)
                .map(|_| OnceLock::new())
                .collect(),
            duration: self.duration.with_label_values(&[account]),
            upstream_errors: [
                errors(UpstreamErrorKind::Connect),
                errors(UpstreamErrorKind::Timeout),
                errors(UpstreamErrorKind::Tls),
                errors(UpstreamErrorKind::Protocol),
            ],
            reload_ok: self.token_reloads.with_label_values(&[account, "success"]),
            reload_failed: self.token_reloads.with_label_values(&[account, "failure"]),
            hapikey: HapikeyAction::ALL
                .map(|action| self.hapikey.with_label_values(&[account, action.as_str()])),
            refresh_ok: self.refreshes.with_label_values(&[account, "success"]),
            refresh_failed: self.refreshes.with_label_values(&[account, "failure"]),
            adoptions_vec: self.adoptions.clone(),
            adoptions: OnceLock::new(),
            expiry: self.expiry.with_label_values(&[account]),
            refresh_duration: self.refresh_duration.with_label_values(&[account]),
            replay_expired: self.replays.with_label_values(&[account, "expired_token"]),
            persist_failed: self.persist_failures.with_label_values(&[account]),
            upstream_duration: self.upstream_duration.with_label_values(&[account]),
            ratelimit_vecs: [self.ratelimit_remaining.clone(), self.ratelimit_max.clone()],
            ratelimit: Default::default(),
            responses: STATUS_CLASSES
                .map(|c| self.upstream_responses.with_label_values(&[account, c])),
            rate_limited: RateLimitPolicy::LABELS
                .map(|p| self.rate_limited.with_label_values(&[account, p])),
            queue_wait: self.queue_wait.with_label_values(&[account]),
            shaping_rejected: self.shaping_rejected.with_label_values(&[account]),
            retries: RetryReason::LABELS.map(|r| self.retries.with_label_values(&[account, r])),
            api_vec: self.api_requests.clone(),
            api: (0..api_family::SLOTS).map(|_| OnceLock::new()).collect(),
            expired_passed: ExpiredPassed::LABELS
                .map(|r| self.expired_passed.with_label_values(&[account, r])),
            state: AccountState::LABELS
                .map(|st| self.account_state.with_label_values(&[account, st])),
        }
    }

    pub fn inflight(&self) -> GaugeGuard {
        self.inflight.inc();
        GaugeGuard(self.inflight.clone())
    }

    pub fn upstream_slots(&self) -> &SlotMetrics {
        &self.upstream_slots
    }

    pub fn bodies(&self) -> &BodyMetrics {
        &self.bodies
    }

    /// For series owned elsewhere (fleet mode registers its own).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Prometheus text exposition of everything registered.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding into a Vec cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn register_build_info(registry: &Registry) {
    let info = IntGaugeVec::new(
        Opts::new("hubspot_proxy_build_info", "Build information; always 1."),
        &["version"],
    )
    .expect("valid metric");
    info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    registry.register(Box::new(info)).expect("unique");
}

#[cfg(target_os = "linux")]
fn register_process_collector(registry: &Registry) {
    let collector = prometheus::process_collector::ProcessCollector::for_self();
    registry.register(Box::new(collector)).expect("unique");
}

#[cfg(not(target_os = "linux"))]
fn register_process_collector(_registry: &Registry) {}

/// Decrements a gauge when what it counts ends (a request's handler, a held slot), however it ends.
pub struct GaugeGuard(IntGauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

pub struct AccountMetrics {
    account: String,
    requests_vec: IntCounterVec,
    /// One slot per (method, status), filled on first use: series appear only once seen.
    requests: Box<[OnceLock<IntCounter>]>,
    duration: Histogram,
    upstream_errors: [IntCounter; 4],
    reload_ok: IntCounter,
    reload_failed: IntCounter,
    hapikey: [IntCounter; 5],
    refresh_ok: IntCounter,
    refresh_failed: IntCounter,
    adoptions_vec: IntCounterVec,
    /// Fleet mode only: the series appears with the first adoption.
    adoptions: OnceLock<IntCounter>,
    expiry: Gauge,
    refresh_duration: Histogram,
    replay_expired: IntCounter,
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
    retries: [IntCounter; 4],
    api_vec: IntCounterVec,
    api: Box<[OnceLock<IntCounter>]>,
    expired_passed: [IntCounter; 2],
    state: [IntGauge; 3],
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
    pub fn upstream_answered(&self, status: StatusCode, elapsed: Duration) {
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
    pub fn ratelimit_reported(&self, headers: &HeaderMap) -> Option<i64> {
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

    pub fn queued(&self, wait: Duration) {
        self.queue_wait.observe(wait.as_secs_f64());
    }

    pub fn shaping_rejected(&self) {
        self.shaping_rejected.inc();
    }

    pub fn retried(&self, reason: RetryReason) {
        self.retries[reason as usize].inc();
    }

    pub fn rate_limited(&self, policy: RateLimitPolicy) {
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

    /// The last figures HubSpot reported, in slot order: ten-second remaining and max,
    /// daily remaining and max; `None` where it has not said.
    pub fn ratelimit_seen(&self) -> [Option<i64>; 4] {
        [0, 1, 2, 3].map(|slot| self.ratelimit[slot].get().map(IntGauge::get))
    }

    pub fn upstream_error(&self, kind: UpstreamErrorKind) {
        self.upstream_errors[kind as usize].inc();
    }

    pub fn hapikey(&self, action: HapikeyAction) {
        self.hapikey[action as usize].inc();
    }

    /// Static tokens never expire on their own.
    pub fn token_never_expires(&self) {
        self.expiry.set(f64::INFINITY);
    }

    pub fn refreshed(&self, ok: bool, expires_at: Option<std::time::SystemTime>) {
        if ok {
            self.refresh_ok.inc();
        } else {
            self.refresh_failed.inc();
        }
        if let Some(at) = expires_at.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()) {
            self.expiry.set(at.as_secs_f64());
        }
    }

    /// Fleet mode: a token taken from the fleet, not fetched by this replica.
    pub fn adopted(&self, expires_at: std::time::SystemTime) {
        self.adoptions
            .get_or_init(|| self.adoptions_vec.with_label_values(&[&self.account]))
            .inc();
        if let Ok(at) = expires_at.duration_since(std::time::UNIX_EPOCH) {
            self.expiry.set(at.as_secs_f64());
        }
    }

    pub fn refresh_took(&self, elapsed: Duration) {
        self.refresh_duration.observe(elapsed.as_secs_f64());
    }

    pub fn replayed_expired(&self) {
        self.replay_expired.inc();
    }

    pub fn refresh_token_persist_failed(&self) {
        self.persist_failed.inc();
    }

    pub fn expired_passed(&self, reason: ExpiredPassed) {
        self.expired_passed[reason as usize].inc();
    }

    /// Sets the account's state series: 1 for `state`, 0 for the rest.
    pub fn set_state(&self, state: AccountState) {
        for (i, gauge) in self.state.iter().enumerate() {
            gauge.set(i64::from(i == state as usize));
        }
    }

    pub fn token_reloaded(&self, ok: bool) {
        if ok {
            self.reload_ok.inc()
        } else {
            self.reload_failed.inc()
        }
    }
}

fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::POST => 1,
        Method::PUT => 2,
        Method::PATCH => 3,
        Method::DELETE => 4,
        Method::HEAD => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_with_bounded_labels() {
        let metrics = Metrics::new();
        let a = metrics.for_account("main");
        a.observe(&Method::GET, StatusCode::OK, Duration::from_millis(2));
        a.observe(&Method::GET, StatusCode::OK, Duration::from_millis(2));
        a.observe(
            &Method::from_bytes(b"BREW").unwrap(),
            StatusCode::IM_A_TEAPOT,
            Duration::ZERO,
        );
        let text = String::from_utf8(metrics.render()).unwrap();
        assert!(text.contains(
            r#"hubspot_proxy_requests_total{account="main",method="GET",status="200"} 2"#
        ));
        assert!(text.contains(r#"method="OTHER",status="418"} 1"#));
        assert!(!text.contains("BREW"));
        assert!(text.contains(r#"hubspot_proxy_build_info{version=""#));
    }
}
