//! Replaying a request once after HubSpot answers 401 `EXPIRED_AUTHENTICATION`: small bodies are
//! kept so the request can go again with the refreshed token; large ones stream and cannot.

use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::body::{LimitedBody, OutboundBody, ProxyBody};
use crate::error::ProxyError;

/// Bodies up to this size are held in memory so the request can be sent a second time.
pub const KEEP_FOR_REPLAY: u64 = 1024 * 1024;

/// Everything needed to send the request again.
pub struct Replay {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

impl Replay {
    pub fn into_request(self, bearer: http::HeaderValue) -> Request<OutboundBody> {
        let mut request = Request::new(OutboundBody::kept(self.body));
        *request.method_mut() = self.method;
        *request.uri_mut() = self.uri;
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = self.headers;
        request.headers_mut().insert(header::AUTHORIZATION, bearer);
        request
    }
}

/// Builds the upstream request. With `keep`, a body that is empty or declares at most
/// `KEEP_FOR_REPLAY` bytes is read first, and a `Replay` is returned beside the request.
pub async fn outbound(
    parts: http::request::Parts,
    body: Incoming,
    max_body_bytes: u64,
    keep: bool,
    deadline: Instant,
) -> Result<(Request<OutboundBody>, Option<Replay>), ProxyError> {
    let small = body.is_end_stream()
        || body
            .size_hint()
            .upper()
            .is_some_and(|n| n <= KEEP_FOR_REPLAY);
    if !(keep && small) {
        let body = OutboundBody::Streaming {
            body: LimitedBody::new(body, max_body_bytes),
        };
        return Ok((Request::from_parts(parts, body), None));
    }
    let limit = max_body_bytes.min(KEEP_FOR_REPLAY) as usize;
    let bytes = match tokio::time::timeout_at(deadline, Limited::new(body, limit).collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        _ => return Err(ProxyError::ClientBody),
    };
    let replay = Replay {
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        headers: parts.headers.clone(),
        body: bytes.clone(),
    };
    Ok((
        Request::from_parts(parts, OutboundBody::kept(bytes)),
        Some(replay),
    ))
}

/// Whether a response is HubSpot's 401 with `category: EXPIRED_AUTHENTICATION`. Reading the
/// body to find out consumes it, so the response comes back rebuilt from the bytes read.
pub async fn expired_authentication(
    response: Response<ProxyBody>,
) -> Result<(Response<ProxyBody>, bool), ProxyError> {
    if response.status() != StatusCode::UNAUTHORIZED {
        return Ok((response, false));
    }
    let (response, json) = super::inspect::small_json(response).await?;
    let expired = json.is_some_and(|v| v["category"] == "EXPIRED_AUTHENTICATION");
    Ok((response, expired))
}
