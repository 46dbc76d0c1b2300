//! Errors the proxy answers itself, each mapped in one place to a HubSpot-shaped JSON response.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use crate::body::{OutboundFault, ProxyBody};
use crate::metrics::{ClientBodyFault, UpstreamErrorKind};

#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyError {
    #[error("The request body is larger than this proxy's limit of {limit} bytes.")]
    BodyTooLarge { limit: u64 },
    #[error("The request headers are too large: at most {max_count} fields and {max_bytes} bytes are accepted.")]
    HeadersTooLarge { max_count: usize, max_bytes: usize },
    #[error("CONNECT is not supported: this proxy only forwards requests to the HubSpot API.")]
    ConnectNotAllowed,
    #[error("{0}")]
    BadRequest(&'static str),
    /// The client failed to deliver its body: its fault, never HubSpot's.
    #[error("{}", client_body_message(*fault))]
    ClientBody { fault: ClientBodyFault },
    /// Framing that proxies can disagree on; the connection is closed after the answer, so
    /// nothing pipelined behind it is read.
    #[error("{0}")]
    Smuggling(&'static str),
    #[error("X-Auth-Proxy-Account names no account configured on this proxy.")]
    UnknownAccount,
    #[error("This API key is not mapped to an account on this proxy. HubSpot retired account API keys on 2022-11-30; ask the proxy's operator to map it, or drop ?hapikey= and use the proxy's default account.")]
    UnknownApiKey,
    #[error("HubSpot retired account API keys on 2022-11-30, and this proxy rejects them. Remove ?hapikey= from the URL: the proxy adds the account's credentials itself.")]
    ApiKeyRejected,
    #[error("This proxy does not accept requests from your network address.")]
    ForbiddenNetwork,
    #[error("This proxy requires a client key: send it in the X-Auth-Proxy-Key header.")]
    Unauthenticated,
    #[error("Client '{client}' may not make this request: {reason}.")]
    Forbidden { client: Arc<str>, reason: String },
    #[error("No usable HubSpot token for account '{account}' yet; try again shortly.")]
    NoToken { account: Arc<str> },
    #[error("HubSpot account '{account}' needs re-authorization: {detail}. The proxy's operator must act; its /status names the command.")]
    NeedsReauthorization {
        account: Arc<str>,
        detail: &'static str,
    },
    #[error(
        "This account's HubSpot rate limit is used up for now; retry after {} s.",
        retry_after_secs(retry_after)
    )]
    RateLimited { retry_after: std::time::Duration },
    #[error("Could not reach the HubSpot API ({}).", kind.as_str())]
    UpstreamUnreachable { kind: UpstreamErrorKind },
    #[error("The HubSpot API did not answer within {secs} seconds.")]
    UpstreamTimeout { secs: u64 },
    #[error("X-Auth-Proxy-Caller is not a valid caller name: {0} (at most 64 characters from A-Z, a-z, 0-9, '.', '_', '-').")]
    InvalidCaller(&'static str),
    #[error("Account '{account}' is configured for HubSpot portal {expected}, but its token belongs to portal {actual}; the proxy refuses to use it.")]
    WrongPortal {
        account: Arc<str>,
        expected: u64,
        actual: u64,
    },
}

impl ProxyError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::ConnectNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::ClientBody {
                fault: ClientBodyFault::Stalled,
            } => StatusCode::REQUEST_TIMEOUT,
            ProxyError::BadRequest(_)
            | ProxyError::ClientBody { .. }
            | ProxyError::Smuggling(_) => StatusCode::BAD_REQUEST,
            ProxyError::NoToken { .. } | ProxyError::NeedsReauthorization { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::WrongPortal { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::UnknownAccount | ProxyError::InvalidCaller(_) => StatusCode::BAD_REQUEST,
            ProxyError::ForbiddenNetwork | ProxyError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ProxyError::Unauthenticated => StatusCode::UNAUTHORIZED,
            ProxyError::UnknownApiKey | ProxyError::ApiKeyRejected => StatusCode::UNAUTHORIZED,
            ProxyError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::UpstreamUnreachable { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// HubSpot clients surface `category`; ours are prefixed so nobody mistakes them for HubSpot's.
    pub(crate) fn category(&self) -> &'static str {
        match self {
            ProxyError::BodyTooLarge { .. } => "PROXY_BODY_TOO_LARGE",
            ProxyError::HeadersTooLarge { .. } => "PROXY_HEADERS_TOO_LARGE",
            ProxyError::ConnectNotAllowed => "PROXY_METHOD_NOT_ALLOWED",
            ProxyError::ClientBody {
                fault: ClientBodyFault::Stalled,
            } => "PROXY_REQUEST_TIMEOUT",
            ProxyError::BadRequest(_)
            | ProxyError::ClientBody { .. }
            | ProxyError::Smuggling(_) => "PROXY_BAD_REQUEST",
            ProxyError::NoToken { .. } => "PROXY_NO_TOKEN",
            ProxyError::NeedsReauthorization { .. } => "PROXY_NEEDS_REAUTHORIZATION",
            ProxyError::UnknownAccount => "PROXY_UNKNOWN_ACCOUNT",
            ProxyError::ForbiddenNetwork => "PROXY_FORBIDDEN_NETWORK",
            ProxyError::Unauthenticated => "PROXY_UNAUTHENTICATED",
            ProxyError::Forbidden { .. } => "PROXY_FORBIDDEN",
            ProxyError::UnknownApiKey => "PROXY_UNKNOWN_API_KEY",
            ProxyError::ApiKeyRejected => "PROXY_API_KEY_REJECTED",
            ProxyError::RateLimited { .. } => "PROXY_RATE_LIMITED",
            ProxyError::UpstreamUnreachable { .. } => "PROXY_UPSTREAM_UNREACHABLE",
            ProxyError::UpstreamTimeout { .. } => "PROXY_UPSTREAM_TIMEOUT",
            ProxyError::InvalidCaller(_) => "PROXY_INVALID_CALLER",
            ProxyError::WrongPortal { .. } => "PROXY_WRONG_PORTAL",
        }
    }

    pub(crate) fn to_response(&self) -> Response<ProxyBody> {
        // HubSpot's own 429s name their policy; clients that read it see the proxy's queue.
        let policy = matches!(self, ProxyError::RateLimited { .. }).then_some("PROXY_QUEUE");
        let mut response = json_error(self.status(), self.category(), &self.to_string(), policy);
        let headers = response.headers_mut();
        match self {
            ProxyError::RateLimited { retry_after } => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(retry_after_secs(retry_after)),
                );
            }
            ProxyError::ConnectNotAllowed => {
                headers.insert(
                    header::ALLOW,
                    HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
                );
            }
            ProxyError::NoToken { .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            // After a failed body the rest of the connection's bytes cannot be trusted as a
            // next request.
            ProxyError::Smuggling(_) | ProxyError::ClientBody { .. } => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

impl From<OutboundFault> for ProxyError {
    fn from(fault: OutboundFault) -> Self {
        match fault {
            OutboundFault::TooLarge { limit } => ProxyError::BodyTooLarge { limit },
            OutboundFault::Client(fault) => ProxyError::ClientBody { fault },
        }
    }
}

fn client_body_message(fault: ClientBodyFault) -> &'static str {
    match fault {
        ClientBodyFault::Malformed => "The request body is malformed (its chunked framing does not parse).",
        ClientBodyFault::Aborted => "The client stopped sending the request body before it was complete.",
        ClientBodyFault::Stalled => "The client stopped sending the request body: nothing arrived for server.body_read_timeout_secs, or the body was not complete by the request's deadline.",
    }
}

pub(crate) const ERROR_HEADER: &str = "x-auth-proxy-error";

/// Whole seconds, rounded up: `Retry-After: 0` would invite an immediate retry.
fn retry_after_secs(wait: &std::time::Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

/// `{"status":"error","message":…,"category":…,"correlationId":…}` plus `X-Auth-Proxy-Error`.
pub(crate) fn json_error(
    status: StatusCode,
    category: &'static str,
    message: &str,
    policy_name: Option<&str>,
) -> Response<ProxyBody> {
    let mut body = serde_json::json!({
        "status": "error",
        "message": message,
        "category": category,
        "correlationId": uuid::Uuid::new_v4().to_string(),
    });
    if let Some(policy) = policy_name {
        body["policyName"] = policy.into();
    }
    let mut response = Response::new(ProxyBody::full(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=utf-8"),
    );
    headers.insert(ERROR_HEADER, HeaderValue::from_static(category));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Status, category and the extra headers, for one error of each shape.
    #[test]
    fn each_error_maps_to_its_status_category_and_headers() {
        let cases = [
            (
                ProxyError::BodyTooLarge { limit: 1 },
                413,
                "PROXY_BODY_TOO_LARGE",
            ),
            (
                ProxyError::ConnectNotAllowed,
                405,
                "PROXY_METHOD_NOT_ALLOWED",
            ),
            (
                ProxyError::ClientBody {
                    fault: ClientBodyFault::Stalled,
                },
                408,
                "PROXY_REQUEST_TIMEOUT",
            ),
            (
                ProxyError::ClientBody {
                    fault: ClientBodyFault::Aborted,
                },
                400,
                "PROXY_BAD_REQUEST",
            ),
            (ProxyError::Smuggling("two Hosts"), 400, "PROXY_BAD_REQUEST"),
            (ProxyError::Unauthenticated, 401, "PROXY_UNAUTHENTICATED"),
            (ProxyError::ForbiddenNetwork, 403, "PROXY_FORBIDDEN_NETWORK"),
            (
                ProxyError::NoToken {
                    account: "main".into(),
                },
                503,
                "PROXY_NO_TOKEN",
            ),
            (
                ProxyError::RateLimited {
                    retry_after: std::time::Duration::from_millis(1_200),
                },
                429,
                "PROXY_RATE_LIMITED",
            ),
            (
                ProxyError::UpstreamUnreachable {
                    kind: UpstreamErrorKind::Tls,
                },
                502,
                "PROXY_UPSTREAM_UNREACHABLE",
            ),
            (
                ProxyError::UpstreamTimeout { secs: 5 },
                504,
                "PROXY_UPSTREAM_TIMEOUT",
            ),
        ];
        for (error, status, category) in cases {
            let response = error.to_response();
            assert_eq!(response.status().as_u16(), status, "{error:?}");
            assert_eq!(error.category(), category);
            assert_eq!(response.headers()[ERROR_HEADER], category, "{error:?}");
            let headers = response.headers();
            match error {
                // Rounded up: a 1.2 s wait is announced as 2 s, never as an immediate retry.
                ProxyError::RateLimited { .. } => assert_eq!(headers[header::RETRY_AFTER], "2"),
                ProxyError::NoToken { .. } => assert_eq!(headers[header::RETRY_AFTER], "1"),
                ProxyError::ConnectNotAllowed => assert!(headers.contains_key(header::ALLOW)),
                ProxyError::Smuggling(_) | ProxyError::ClientBody { .. } => {
                    assert_eq!(headers[header::CONNECTION], "close")
                }
                _ => assert!(!headers.contains_key(header::RETRY_AFTER)),
            }
        }
    }
}
