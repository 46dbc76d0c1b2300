//! The data plane: one client request, checked, given its account's bearer, sent to HubSpot and streamed back.

pub mod body;
pub mod headers;

use std::sync::Arc;
use std::time::Instant;

use http::{header, HeaderMap, Method, Request, Response, Version};
use hyper::body::Incoming;

use crate::account::{Account, Accounts};
use crate::config::ServerConfig;
use crate::error::ProxyError;
use crate::metrics::Metrics;
use crate::upstream::Upstream;
use body::{LimitedBody, ProxyBody};

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
    accounts: Arc<Accounts>,
    metrics: Arc<Metrics>,
    limits: RequestLimits,
}

impl Proxy {
    pub fn new(
        upstream: Upstream,
        accounts: Arc<Accounts>,
        metrics: Arc<Metrics>,
        limits: RequestLimits,
    ) -> Self {
        Proxy {
            upstream,
            accounts,
            metrics,
            limits,
        }
    }

    pub async fn handle(&self, request: Request<Incoming>) -> Response<ProxyBody> {
        let started = Instant::now();
        let _inflight = self.metrics.inflight();
        let method = request.method().clone();
        // Only the path is ever logged: the query may hold a legacy API key.
        let path =
            tracing::enabled!(tracing::Level::DEBUG).then(|| request.uri().path().to_owned());
        let account = self.accounts.default_account();
        let response = match self.forward(request, account, started).await {
            Ok(response) => response,
            Err(error) => {
                tracing::warn!(account = %account.name, %method, category = error.category(), "{error}");
                error.to_response()
            }
        };
        let elapsed = started.elapsed();
        account.metrics.observe(&method, response.status(), elapsed);
        if let Some(path) = path {
            tracing::debug!(
                account = %account.name,
                %method,
                path,
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
        account: &Account,
        started: Instant,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        self.limits.check(&request)?;
        let bearer = account
            .token
            .bearer(started)
            .ok_or_else(|| ProxyError::NoToken {
                account: account.name.clone(),
            })?;
        let (mut parts, body) = request.into_parts();
        parts.uri = self.upstream.target(parts.uri)?;
        // The pooled client picks HTTP/1.1 or h2 per connection by ALPN.
        parts.version = Version::HTTP_11;
        headers::to_upstream(&mut parts.headers, self.upstream.host_header(), bearer);
        let outbound =
            Request::from_parts(parts, LimitedBody::new(body, self.limits.max_body_bytes));

        let deadline = tokio::time::Instant::from_std(started) + self.upstream.timeout();
        let response = self
            .upstream
            .send(outbound, deadline)
            .await
            .inspect_err(|e| count_upstream_error(account, e))?;
        let (mut parts, body) = response.into_parts();
        headers::from_upstream(&mut parts.headers);
        parts.version = Version::HTTP_11;
        Ok(Response::from_parts(
            parts,
            ProxyBody::upstream(body, deadline),
        ))
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
