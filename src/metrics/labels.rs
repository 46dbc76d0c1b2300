//! Every closed label set the metrics use: each enum's `as usize` indexes the handles resolved
//! for it, and its labels are fixed strings, so no request can grow a series count.

use http::Method;

/// Why an upstream exchange produced no response. `as usize` indexes the metric handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UpstreamErrorKind {
    Connect = 0,
    Timeout = 1,
    Tls = 2,
    Protocol = 3,
}

impl UpstreamErrorKind {
    pub(super) const LABELS: [&'static str; 4] = ["connect", "timeout", "tls", "protocol"];

    pub(crate) fn as_str(self) -> &'static str {
        Self::LABELS[self as usize]
    }
}

/// Why a client's request body could not be read; a fault of the client, never of HubSpot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientBodyFault {
    /// Framing that does not parse (a bad chunk size line, say).
    Malformed = 0,
    /// The client closed or reset the connection before the body was complete.
    Aborted = 1,
    /// No body data for `server.body_read_timeout_secs`, or none in time for the deadline.
    Stalled = 2,
}

impl ClientBodyFault {
    pub(super) const LABELS: [&'static str; 3] = ["malformed", "aborted", "stalled"];

    pub(crate) fn as_str(self) -> &'static str {
        Self::LABELS[self as usize]
    }
}

/// Why a request was sent to HubSpot again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RetryReason {
    RateLimited = 0,
    Upstream5xx = 1,
    /// Replayed with a refreshed token after EXPIRED_AUTHENTICATION: counted in
    /// `hubspot_proxy_replays_total`, the series that owns it, and not among the retries.
    ExpiredToken = 2,
    /// HubSpot provably never processed it (REFUSED_STREAM, above GOAWAY's last stream id,
    /// never written): resent on a fresh connection, whatever the method.
    Unprocessed = 3,
}

impl RetryReason {
    pub(super) const ALL: [RetryReason; 4] = [
        RetryReason::RateLimited,
        RetryReason::Upstream5xx,
        RetryReason::ExpiredToken,
        RetryReason::Unprocessed,
    ];

    pub(super) const LABELS: [&'static str; 4] = [
        "rate_limited",
        "upstream_5xx",
        "expired_token",
        "unprocessed",
    ];

    pub(crate) fn as_str(self) -> &'static str {
        Self::LABELS[self as usize]
    }
}

/// Why HubSpot's 401 EXPIRED_AUTHENTICATION went to the client as it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExpiredPassed {
    /// The request was already replayed with a refreshed token, and that was rejected too.
    ReplayRejected = 0,
    /// A forced refresh ran less than `refresh_min_interval_secs` ago: refreshing again now
    /// would only storm the token endpoint.
    RefreshSpaced = 1,
}

impl ExpiredPassed {
    pub(super) const LABELS: [&'static str; 2] = ["replay_rejected", "refresh_spaced"];
}

/// What an account can do now; a closed set, reported by `hubspot_proxy_account_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AccountState {
    Ready = 0,
    /// No usable token: the first one not fetched yet, or refreshes failing for a transient reason.
    NoToken = 1,
    /// HubSpot refused the refresh token or the client credentials; someone must act.
    NeedsReauthorization = 2,
}

impl AccountState {
    pub(super) const LABELS: [&'static str; 3] = ["ready", "no_token", "needs_reauthorization"];

    pub(crate) fn as_str(self) -> &'static str {
        Self::LABELS[self as usize]
    }
}

/// The `policyName` of a HubSpot 429, as a bounded label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RateLimitPolicy {
    TenSecondlyRolling = 0,
    Secondly = 1,
    Daily = 2,
    Other = 3,
}

impl RateLimitPolicy {
    pub(super) const LABELS: [&'static str; 4] =
        ["ten_secondly_rolling", "secondly", "daily", "other"];

    pub(crate) fn from_policy_name(name: Option<&str>) -> Self {
        match name {
            Some("TEN_SECONDLY_ROLLING") => RateLimitPolicy::TenSecondlyRolling,
            Some("SECONDLY") => RateLimitPolicy::Secondly,
            Some("DAILY") => RateLimitPolicy::Daily,
            _ => RateLimitPolicy::Other,
        }
    }
}

/// What became of a request that carried `?hapikey=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HapikeyAction {
    Translated = 0,
    Rejected = 1,
    UnknownKey = 2,
    DeveloperPassthrough = 3,
    Forwarded = 4,
}

impl HapikeyAction {
    pub(super) const LABELS: [&'static str; 5] = [
        "translated",
        "rejected",
        "unknown_key",
        "developer_passthrough",
        "forwarded",
    ];
}

/// Success or failure of a token call or reload.
pub(super) const RESULTS: [&str; 2] = ["success", "failure"];

/// HubSpot's two rate-limit windows, as reported in its X-HubSpot-RateLimit-* headers.
pub(super) const WINDOWS: [&str; 2] = ["ten_second", "daily"];

pub(super) const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Methods get a fixed label set so a client inventing methods cannot grow the series count.
pub(super) const METHODS: [&str; 8] = [
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "OTHER",
];

/// 100..=599, then one slot for anything else an upstream sends (labelled `invalid`).
pub(super) const STATUS_CODES: usize = 501;

/// The method's index in `METHODS`; anything unlisted is `OTHER`.
pub(super) fn method_index(method: &Method) -> usize {
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
