//! The data plane: one client request, checked, given its account's bearer, sent to HubSpot and streamed back.

pub mod body;
pub mod hapikey;
pub mod headers;
pub mod inspect;
pub mod replay;
pub mod route;

use std::sync::Arc;
use std::time::Instant;

use http::{header, HeaderMap, Method, Request, Response, Version};
use hyper::body::Incoming;

use crate::account::Account;
use crate::config::ServerConfig;
use crate::error::ProxyError;
use crate::metrics::Metrics;
use crate::upstream::Upstream;
use body::{OutboundBody, ProxyBody};
use route::{Credential, Refused, Router};

/// Limits checked before anything is sent upstream.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    pub max_body_bytes: u64,
    pub max_header_count: usize,
    pub max_header_bytes: usize,
}

impl RequestLimits {
    pub fn from_config(server: &ServerConfig) -> Self {
        RequestLimits {
            max_body_bytes: server.max_body_bytes,
            max_header_count: server.max_header_count,
            max_header_bytes: server.max_header_bytes,
        }
    }

    fn check<B>(&self, request: &Request<B>) -> Result<(), ProxyError> {
        if request.method() == Method::CONNECT {
            return Err(ProxyError::ConnectNotAllowed);
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
    upstream: Upstream,
    router: Router,
    metrics: Arc<Metrics>,
    limits: RequestLimits,
    access_log: bool,
}

impl Proxy {
    pub fn new(
        upstream: Upstream,
        router: Router,
        metrics: Arc<Metrics>,
        limits: RequestLimits,
        access_log: bool,
    ) -> Self {
        Proxy {
            upstream,
            router,
            metrics,
            limits,
            access_log,
        }
    }

    pub async fn handle(&self, request: Request<Incoming>) -> Response<ProxyBody> {
        let started = Instant::now();
        let _inflight = self.metrics.inflight();
        let method = request.method().clone();
        let log_this = self.access_log || tracing::enabled!(tracing::Level::DEBUG);
        let target = log_this.then(|| loggable_target(request.uri()));
        let (account, response) = match self.forward(request, started).await {
            Ok((account, response)) => (account, response),
            Err(Refused { account, error }) => {
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
        started: Instant,
    ) -> Result<(&Arc<Account>, Response<ProxyBody>), Refused<'_>> {
        let default = self.router.default_account();
        let refuse = |account, error| Refused { account, error };
        self.limits
            .check(&request)
            .map_err(|e| refuse(default, e))?;
        let (mut parts, body) = request.into_parts();
        let routed = self.router.route(&mut parts)?;
        let account = routed.account;
        account.metrics.api_request(parts.uri.path());
        let deadline = tokio::time::Instant::from_std(started) + self.upstream.timeout();
        parts.uri = self
            .upstream
            .target(parts.uri)
            .map_err(|e| refuse(account, e))?;
        // The pooled client picks HTTP/1.1 or h2 per connection by ALPN.
        parts.version = Version::HTTP_11;
        let token = match routed.credential {
            Credential::ClientOwn => None,
            Credential::Bearer => Some(
                account
                    .bearer(started, deadline)
                    .await
                    .ok_or_else(|| refuse(account, no_token(account)))?,
            ),
        };
        headers::to_upstream(
            &mut parts.headers,
            self.upstream.host_header(),
            token.as_ref().map(|(header, _)| header.clone()),
        );
        // Only an OAuth token can be refreshed and the request replayed with the new one.
        let replayable = token.is_some() && account.refresh.is_some();
        let (outbound, replay) = replay::outbound(
            parts,
            body,
            self.limits.max_body_bytes,
            replayable,
            deadline,
        )
        .await
        .map_err(|e| refuse(account, e))?;
        let response = self
            .send(account, outbound, deadline)
            .await
            .map_err(|e| refuse(account, e))?;
        let response = match token {
            Some((_, generation)) if replayable => self
                .after_401(account, response, generation, replay, deadline)
                .await
                .map_err(|e| refuse(account, e))?,
            _ => response,
        };
        let response = count_rate_limited(account, response)
            .await
            .map_err(|e| refuse(account, e))?;
        Ok((account, response))
    }

    /// On 401 EXPIRED_AUTHENTICATION the token is dead whatever its expiry said: drop it so no
    /// other request uses it, and send this one again once the refresher has a new token.
    async fn after_401(
        &self,
        account: &Account,
        response: Response<ProxyBody>,
        generation: u64,
        replay: Option<replay::Replay>,
        deadline: tokio::time::Instant,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let (response, expired) = replay::expired_authentication(response).await?;
        if !expired {
            return Ok(response);
        }
        if account.token.invalidate(generation) {
            tracing::info!(account = %account.name, generation, "HubSpot reports the access token expired; refreshing");
        }
        let Some(replay) = replay else {
            return Ok(response);
        };
        let (bearer, _) = account
            .bearer(Instant::now(), deadline)
            .await
            .ok_or_else(|| no_token(account))?;
        account.metrics.replayed_expired();
        self.send(account, replay.into_request(bearer), deadline)
            .await
    }

    async fn send(
        &self,
        account: &Account,
        request: Request<OutboundBody>,
        deadline: tokio::time::Instant,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let sent = Instant::now();
        let response = self
            .upstream
            .send(request, deadline)
            .await
            .inspect_err(|e| count_upstream_error(account, e))?;
        account
            .metrics
            .upstream_answered(response.status(), response.headers(), sent.elapsed());
        let (mut parts, body) = response.into_parts();
        headers::from_upstream(&mut parts.headers);
        parts.version = Version::HTTP_11;
        Ok(Response::from_parts(
            parts,
            ProxyBody::upstream(body, deadline),
        ))
    }
}

/// A 429 is counted by the `policyName` in its body, read only when the body is small JSON.
async fn count_rate_limited(
    account: &Account,
    response: Response<ProxyBody>,
) -> Result<Response<ProxyBody>, ProxyError> {
    if response.status() != http::StatusCode::TOO_MANY_REQUESTS {
        return Ok(response);
    }
    let (response, json) = inspect::small_json(response).await?;
    let policy = json.as_ref().and_then(|v| v["policyName"].as_str());
    account
        .metrics
        .rate_limited(crate::metrics::RateLimitPolicy::from_policy_name(policy));
    Ok(response)
}

fn no_token(account: &Account) -> ProxyError {
    ProxyError::NoToken {
        account: account.name.clone(),
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
