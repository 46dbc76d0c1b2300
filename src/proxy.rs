//! The data plane: one client request, checked, given its account's bearer, sent to HubSpot and streamed back.

pub mod body;
pub mod hapikey;
pub mod headers;
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
use body::{LimitedBody, ProxyBody};
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
}

impl Proxy {
    pub fn new(
        upstream: Upstream,
        router: Router,
        metrics: Arc<Metrics>,
        limits: RequestLimits,
    ) -> Self {
        Proxy {
            upstream,
            router,
            metrics,
            limits,
        }
    }

    pub async fn handle(&self, request: Request<Incoming>) -> Response<ProxyBody> {
        let started = Instant::now();
        let _inflight = self.metrics.inflight();
        let method = request.method().clone();
        let target =
            tracing::enabled!(tracing::Level::DEBUG).then(|| loggable_target(request.uri()));
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
            tracing::debug!(
                account = %account.name,
                %method,
                target,
                status = response.status().as_u16(),
                duration_ms = elapsed.as_secs_f64() * 1000.0,
                "request"
            );
        }
        response
    }

    async fn forward(
        &self,
        request: Request<Incoming>,
        started: Instant,
    ) -> Result<(&Arc<Account>, Response<ProxyBody>), Refused<'_>> {
        let refuse = |account, error| Refused { account, error };
        let default = self.router.default_account();
        self.limits
            .check(&request)
            .map_err(|e| refuse(default, e))?;
        let (mut parts, body) = request.into_parts();
        let routed = self.router.route(&mut parts)?;
        let account = routed.account;
        parts.uri = self
            .upstream
            .target(parts.uri)
            .map_err(|e| refuse(account, e))?;
        // The pooled client picks HTTP/1.1 or h2 per connection by ALPN.
        parts.version = Version::HTTP_11;
        let bearer = match routed.credential {
            Credential::ClientOwn => None,
            Credential::Bearer => Some(account.token.bearer(started).ok_or_else(|| {
                refuse(
                    account,
                    ProxyError::NoToken {
                        account: account.name.clone(),
                    },
                )
            })?),
        };
        headers::to_upstream(&mut parts.headers, self.upstream.host_header(), bearer);
        let outbound =
            Request::from_parts(parts, LimitedBody::new(body, self.limits.max_body_bytes));

        let deadline = tokio::time::Instant::from_std(started) + self.upstream.timeout();
        let response = self.upstream.send(outbound, deadline).await.map_err(|e| {
            count_upstream_error(account, &e);
            refuse(account, e)
        })?;
        let (mut parts, body) = response.into_parts();
        headers::from_upstream(&mut parts.headers);
        parts.version = Version::HTTP_11;
        Ok((
            account,
            Response::from_parts(parts, ProxyBody::upstream(body, deadline)),
        ))
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
