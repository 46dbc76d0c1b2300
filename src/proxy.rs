//! The data plane: one client request, checked, given its account's bearer, sent to HubSpot and streamed back.

pub mod hapikey;
pub mod headers;
pub mod inspect;
pub mod path_gate;
pub mod replay;
pub mod retry;
pub mod route;

use std::sync::Arc;
use std::time::Instant;

use http::{header, HeaderMap, Method, Request, Response, Version};
use hyper::body::Incoming;

use crate::account::Account;
use crate::body::{self, OutboundBody, ProxyBody};
use crate::error::ProxyError;
use crate::metrics::Metrics;
use crate::migration::{self, caller};
use crate::ratelimit;
use crate::settings::ServerSettings;
use crate::shaping::Admit;
use crate::upstream::Upstream;
use route::{CredentialSource, Refused, Router};

/// Limits checked before anything is sent upstream.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    pub max_body_bytes: u64,
    pub max_header_count: usize,
    pub max_header_bytes: usize,
    pub body_read_timeout: std::time::Duration,
}

impl RequestLimits {
    pub fn from_settings(server: &ServerSettings) -> Self {
        RequestLimits {
            max_body_bytes: server.max_body_bytes,
            max_header_count: server.max_header_count,
            max_header_bytes: server.max_header_bytes,
            body_read_timeout: server.body_read_timeout,
        }
    }

    fn body(&self) -> body::BodyLimits {
        body::BodyLimits {
            max_bytes: self.max_body_bytes,
            idle: self.body_read_timeout,
        }
    }

    fn check<B>(&self, request: &Request<B>) -> Result<(), ProxyError> {
        if request.method() == Method::CONNECT {
            return Err(ProxyError::ConnectNotAllowed);
        }
        // RFC 9112 §3.2: a request with more than one Host is answered 400; two Hosts are a
        // request-smuggling tool when proxies disagree on which one counts. (Content-Length with
        // Transfer-Encoding needs no check here: hyper drops the Content-Length, decodes the
        // chunked body, and closes the connection after the answer.)
        if request
            .headers()
            .get_all(header::HOST)
            .iter()
            .nth(1)
            .is_some()
        {
            return Err(ProxyError::Smuggling(
                "The request has more than one Host header.",
            ));
        }
        // RFC 9112 §3.2: an HTTP/1.1 request without Host is answered 400 (h2 has :authority,
        // HTTP/1.0 predates Host).
        if request.version() == Version::HTTP_11 && !request.headers().contains_key(header::HOST) {
            return Err(ProxyError::BadRequest(
                "An HTTP/1.1 request needs a Host header.",
            ));
        }
        if !only_chunked(request.headers()) {
            return Err(ProxyError::BadRequest(
                "The request's Transfer-Encoding names a coding other than chunked; send a coded body with Content-Encoding instead.",
            ));
        }
        self.check_headers(request.headers())?;
        if declared_length(request.headers()).is_some_and(|len| len > self.max_body_bytes) {
            return Err(ProxyError::BodyTooLarge {
                limit: self.max_body_bytes,
            });
        }
        Ok(())
    }

    fn check_headers(&self, headers: &HeaderMap) -> Result<(), ProxyError> {
        let too_large = || ProxyError::HeadersTooLarge {
            max_count: self.max_header_count,
            max_bytes: self.max_header_bytes,
        };
        if headers.len() > self.max_header_count {
            return Err(too_large());
        }
        let bytes: usize = headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum();
        if bytes > self.max_header_bytes {
            return Err(too_large());
        }
        Ok(())
    }
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

pub struct Proxy {
    access: Arc<crate::access::Access>,
    upstream: Upstream,
    router: Router,
    metrics: Arc<Metrics>,
    limits: RequestLimits,
    access_log: bool,
    replay_budget: Arc<replay::ReplayBudget>,
    migration: MigrationHook,
}

/// Where forwarded requests are counted for the migration report, and whether answers to
/// deprecated APIs get Deprecation/Sunset headers (`server.deprecation_headers`).
#[derive(Clone)]
pub struct MigrationHook {
    pub report: Arc<migration::Report>,
    pub deprecation_headers: bool,
}

/// What every worker's proxy shares: built once at startup, cloned per worker.
#[derive(Clone)]
pub struct Shared {
    pub access: Arc<crate::access::Access>,
    pub metrics: Arc<Metrics>,
    pub limits: RequestLimits,
    pub access_log: bool,
    pub replay_budget: Arc<replay::ReplayBudget>,
    pub migration: MigrationHook,
}

impl Proxy {
    /// One worker's proxy: its own upstream client and router, and the process-wide pieces.
    pub fn new(upstream: Upstream, router: Router, shared: Shared) -> Self {
        let Shared {
            access,
            metrics,
            limits,
            access_log,
            replay_budget,
            migration,
        } = shared;
        Proxy {
            access,
            upstream,
            router,
            metrics,
            limits,
            access_log,
            replay_budget,
            migration,
        }
    }

    pub async fn handle(
        &self,
        request: Request<Incoming>,
        peer: std::net::SocketAddr,
    ) -> Response<ProxyBody> {
        let started = Instant::now();
        let _inflight = self.metrics.inflight();
        let method = request.method().clone();
        let log_this = self.access_log || tracing::enabled!(tracing::Level::DEBUG);
        let target = log_this.then(|| loggable_target(request.uri()));
        let (account, response) = match self.forward(request, peer, started).await {
            Ok((account, response)) => (account, response),
            Err(Refused { account, error }) => {
                if let ProxyError::ClientBody { fault } = error {
                    self.metrics.bodies().client_fault(fault);
                }
                tracing::warn!(account = %account.name, %method, category = error.category(), "{error}");
                (account, error.to_response())
            }
        };
        let elapsed = started.elapsed();
        account.metrics.observe(&method, response.status(), elapsed);
        if let Some(target) = target {
            self.log_request(&account.name, &method, &target, &response, elapsed);
        }
        response
    }

    /// One line per request: info when the access log is on, else debug.
    fn log_request(
        &self,
        account: &str,
        method: &http::Method,
        target: &str,
        response: &Response<ProxyBody>,
        elapsed: std::time::Duration,
    ) {
        let correlation_id = response
            .headers()
            .get("x-hubspot-correlation-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let status = response.status().as_u16();
        let duration_ms = elapsed.as_secs_f64() * 1000.0;
        if self.access_log {
            tracing::info!(account, %method, path = target, status, duration_ms, correlation_id, "request");
        } else {
            tracing::debug!(account, %method, path = target, status, duration_ms, correlation_id, "request");
        }
    }

    async fn forward(
        &self,
        request: Request<Incoming>,
        peer: std::net::SocketAddr,
        started: Instant,
    ) -> Result<(&Arc<Account>, Response<ProxyBody>), Refused<'_>> {
        let default = self.router.default_account();
        let refuse = |account, error| Refused { account, error };
        self.access
            .check_network(peer, request.headers())
            .map_err(|e| refuse(default, e))?;
        self.limits
            .check(&request)
            .map_err(|e| refuse(default, e))?;
        let (mut parts, body) = request.into_parts();
        // Before routing: rules, routes and HubSpot all see the one path this returns.
        path_gate::apply(&mut parts.uri).map_err(|e| refuse(default, e))?;
        let key_client = self
            .access
            .key_client(&mut parts.headers)
            .map_err(|e| refuse(default, e))?;
        let declared = caller::take(&mut parts.headers).map_err(|e| refuse(default, e))?;
        let has_hapikey = parts.uri.query().is_some_and(hapikey::present);
        if self.access.requires_client_key() && key_client.is_none() && !has_hapikey {
            // Refused before routing, so no unauthenticated caller learns which accounts exist.
            return Err(refuse(default, self.access.unauthenticated()));
        }
        let routed = self.router.route(&mut parts)?;
        let account = routed.account;
        if self.access.requires_client_key() {
            let client = key_client
                .or_else(|| {
                    routed
                        .legacy_client
                        .and_then(|n| self.access.client_named(n))
                })
                .ok_or_else(|| refuse(account, self.access.unauthenticated()))?;
            self.access
                .authorize(client, &account.name, &parts.method, parts.uri.path())
                .map_err(|e| refuse(account, e))?;
        }
        let api = account.metrics.api_request(parts.uri.path());
        // Who called, for the migration report: a client key, a legacy key, a declared name.
        let caller_name = key_client
            .map(|c| &*c.name)
            .or(routed.legacy_client)
            .or(routed.legacy_label)
            .or(declared.as_ref().map(caller::name))
            .unwrap_or(migration::ANONYMOUS);
        let support =
            self.migration
                .report
                .record(caller_name, &account.name, parts.uri.path(), api);
        let deadline = tokio::time::Instant::from_std(started) + self.upstream.timeout();
        let search = ratelimit::is_search(&parts.method, parts.uri.path());
        let method = parts.method.clone();
        parts.uri = self
            .upstream
            .target(parts.uri)
            .map_err(|e| refuse(account, e))?;
        // The upstream client picks HTTP/1.1 or h2 per connection by ALPN.
        parts.version = Version::HTTP_11;
        headers::to_upstream(&mut parts.headers);
        let budget = account.may_resend().then_some(&self.replay_budget);
        let (first, replay) = replay::outbound(parts, body, self.limits.body(), budget, deadline)
            .await
            .map_err(|e| refuse(account, e))?;
        let sent = retry::Sent {
            method,
            generation: None,
            resendable: replay.is_some(),
            deadline,
        };
        let mut response = self
            .exchange(account, routed.credential, first, replay, sent, search)
            .await
            .map_err(|e| refuse(account, e))?;
        if self.migration.deprecation_headers {
            migration::add_deprecation_headers(response.headers_mut(), &support);
        }
        Ok((account, response))
    }

    /// Sends, judges HubSpot's answer, and resends from the kept copy while the verdict says so.
    /// Each send waits for its slot under the account's rate limit, then takes the current bearer.
    async fn exchange(
        &self,
        account: &Account,
        credential: CredentialSource,
        first: Request<OutboundBody>,
        replay: Option<replay::Replay>,
        mut sent: retry::Sent,
        search: bool,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let mut attempts = retry::Attempts::default();
        let mut request = first;
        loop {
            // The bearer this attempt carries, for a copy resent because HubSpot never processed it.
            let mut bearer_sent = None;
            if credential == CredentialSource::Account {
                // Developer keys are the developer app's budget, not the account's.
                admit(account, search, sent.deadline).await?;
                let (bearer, generation) = account
                    .bearer(Instant::now(), sent.deadline)
                    .await
                    .ok_or_else(|| account.no_token_error())?;
                // Checked after the bearer arrives: the check that names the portal may have
                // finished while this request waited for its first token.
                if let Some(error) = account.portal.refusal(&account.name) {
                    return Err(error);
                }
                headers::set_bearer(request.headers_mut(), bearer.clone());
                bearer_sent = Some(bearer);
                sent.generation = Some(generation);
            }
            // A resend of a request HubSpot never processed keeps this attempt's rate-limit
            // admission: HubSpot did not count it, so admitting it again would shape twice.
            let again = || {
                let mut copy = replay.as_ref()?.request();
                if let Some(bearer) = &bearer_sent {
                    headers::set_bearer(copy.headers_mut(), bearer.clone());
                }
                Some(copy)
            };
            let bearer = credential == CredentialSource::Account;
            let response = self
                .send(account, request, again, sent.deadline, bearer)
                .await?;
            if !retry::may_resend(response.status()) {
                return Ok(response);
            }
            // Boxed: judging waits on bodies and refreshes, a large future that every request
            // would otherwise carry (and copy) for the rare answer that needs it.
            let verdict = Box::pin(retry::judge(account, response, &sent, &mut attempts));
            match verdict.await? {
                retry::Verdict::Deliver(response) => return Ok(response),
                retry::Verdict::Resend { after, reason } => {
                    account.metrics.retried(reason);
                    if reason == crate::metrics::RetryReason::ExpiredToken {
                        account.metrics.replayed_expired();
                    }
                    // `judge` kept `after` within the request's deadline and the queue bound.
                    tokio::time::sleep(after).await;
                    request = replay.as_ref().expect("resendable").request();
                }
            }
        }
    }

    async fn send(
        &self,
        account: &Account,
        request: Request<OutboundBody>,
        again: impl Fn() -> Option<Request<OutboundBody>>,
        deadline: tokio::time::Instant,
        bearer: bool,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let sent = Instant::now();
        let resent = || {
            account
                .metrics
                .retried(crate::metrics::RetryReason::Unprocessed)
        };
        let (response, slot) = self
            .upstream
            .send(request, again, resent, deadline)
            .await
            .inspect_err(|e| count_upstream_error(account, e))?;
        account
            .metrics
            .upstream_answered(response.status(), sent.elapsed());
        if bearer {
            // A deliberate write from the request path: HubSpot's figures for the account's
            // bearer feed its budget, gauges and /status. Developer-key and forwarded-key
            // answers report another app's budget and must not.
            adapt(
                account,
                account.metrics.ratelimit_reported(response.headers()),
            );
        }
        let (mut parts, body) = response.into_parts();
        if headers::drop_conflicting_length(&mut parts.headers) {
            self.metrics.bodies().framing_conflict();
            tracing::warn!(account = %account.name, "HubSpot's answer had both Transfer-Encoding and Content-Length; the length was dropped");
        }
        headers::from_upstream(&mut parts.headers);
        parts.version = Version::HTTP_11;
        Ok(Response::from_parts(
            parts,
            ProxyBody::forwarded(body, deadline, slot),
        ))
    }
}

/// Waits for the request's slot under the account's budget (local or fleet-wide), or refuses
/// past the wait bound. A client that leaves while queued drops this future, and with it the slot.
async fn admit(
    account: &Account,
    search: bool,
    deadline: tokio::time::Instant,
) -> Result<(), ProxyError> {
    match account.admit(search, deadline).await {
        // The wait was recorded when the slot was granted (`Account::admit`).
        Admit::Go { .. } => Ok(()),
        Admit::Refused { retry_after } => {
            account.metrics.shaping_rejected();
            Err(ProxyError::RateLimited { retry_after })
        }
    }
}

/// HubSpot reports the app's real 10-second budget: shape to it, within the configured ceiling.
fn adapt(account: &Account, ten_second_max: Option<i64>) {
    let (Some(shaper), Some(max)) = (&account.shaper, ten_second_max) else {
        return;
    };
    if !account.shaping.adaptive {
        return;
    }
    let max = usize::try_from(max).unwrap_or(usize::MAX);
    // In fleet mode a change is stored for every replica (once per change, not per answer).
    if let Some(previous) = shaper.follow_reported(max) {
        let now = shaper.limit();
        if now < previous {
            tracing::info!(account = %account.name, max, budget = now, "HubSpot reports a lower 10-second limit; shaping to it");
        } else {
            tracing::info!(account = %account.name, max, budget = now, "HubSpot reports a higher 10-second limit; shaping to it");
        }
    }
}

/// Path and query for logs, with any hapikey value replaced by `REDACTED`.
fn loggable_target(uri: &http::Uri) -> String {
    match uri.query() {
        Some(query) => format!("{}?{}", uri.path(), hapikey::redact(query)),
        None => uri.path().to_string(),
    }
}

fn count_upstream_error(account: &Account, error: &ProxyError) {
    match error {
        ProxyError::UpstreamUnreachable { kind } => account.metrics.upstream_error(*kind),
        ProxyError::UpstreamTimeout { .. } => account
            .metrics
            .upstream_error(crate::error::UpstreamErrorKind::Timeout),
        _ => {}
    }
}

/// RFC 9112 §6.1: true unless Transfer-Encoding names a coding besides `chunked`. hyper decodes
/// only the chunked framing and the header is hop-by-hop, so a coding beneath it (`gzip,
/// chunked`) would vanish and its coded bytes reach HubSpot as the plain body.
fn only_chunked(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .all(|value| {
            value.to_str().is_ok_and(|codings| {
                codings
                    .split(',')
                    .all(|c| c.trim().eq_ignore_ascii_case("chunked"))
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> RequestLimits {
        RequestLimits {
            max_body_bytes: 100,
            max_header_count: 4,
            max_header_bytes: 200,
            body_read_timeout: std::time::Duration::from_secs(1),
        }
    }

    fn request(method: Method, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder()
            .method(method)
            .uri("/crm/v3/objects/contacts");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    fn category(result: Result<(), ProxyError>) -> &'static str {
        result.err().map_or("ok", |e| e.category())
    }

    #[test]
    fn request_limits_check() {
        let l = limits();
        let host = ("host", "proxy");
        assert_eq!(category(l.check(&request(Method::GET, &[host]))), "ok");
        assert_eq!(
            category(l.check(&request(Method::CONNECT, &[host]))),
            "PROXY_METHOD_NOT_ALLOWED"
        );
        assert_eq!(
            category(l.check(&request(Method::GET, &[host, ("host", "other")]))),
            "PROXY_BAD_REQUEST",
            "two Hosts"
        );
        assert_eq!(
            category(l.check(&request(Method::GET, &[]))),
            "PROXY_BAD_REQUEST",
            "HTTP/1.1 without Host"
        );
        let mut h2 = request(Method::GET, &[]);
        *h2.version_mut() = Version::HTTP_2;
        assert_eq!(category(l.check(&h2)), "ok", "h2 carries :authority");
        let many: Vec<_> = (0..5).map(|_| ("x-n", "1")).collect();
        assert_eq!(
            category(l.check(&request(Method::GET, &[&[host][..], &many].concat()))),
            "PROXY_HEADERS_TOO_LARGE"
        );
        let long = "v".repeat(200);
        assert_eq!(
            category(l.check(&request(Method::GET, &[host, ("x-long", &long)]))),
            "PROXY_HEADERS_TOO_LARGE"
        );
        assert_eq!(
            category(l.check(&request(Method::POST, &[host, ("content-length", "101")]))),
            "PROXY_BODY_TOO_LARGE"
        );
        assert_eq!(
            category(l.check(&request(Method::POST, &[host, ("content-length", "100")]))),
            "ok"
        );
    }
}
