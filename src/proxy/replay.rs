//! Replaying a request once after HubSpot answers 401 `EXPIRED_AUTHENTICATION`: small bodies are
//! kept so the request can go again with the refreshed token; large ones stream and cannot.

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Uri, Version};
use http_body::Body;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::body::{LimitedBody, OutboundBody};
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
    /// A fresh copy of the request. The kept headers never hold the proxy's bearer; the caller
    /// sets the current one on each copy.
    pub fn request(&self) -> Request<OutboundBody> {
        let mut request = Request::new(OutboundBody::kept(self.body.clone()));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = self.headers.clone();
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
