//! Reading HubSpot's small JSON answers (401 category, 429 policyName) without ever buffering
//! a large body: only a response that declares a small length is read, then rebuilt from bytes.

use http::Response;
use http_body::Body;
use http_body_util::BodyExt;

use crate::body::ProxyBody;
use crate::error::ProxyError;
use crate::metrics::UpstreamErrorKind;

/// HubSpot's error JSON is a few hundred bytes; anything declaring more is not inspected.
pub(crate) const SMALL_JSON_BYTES: u64 = 64 * 1024;

/// The parsed body when the response declares at most `SMALL_JSON_BYTES` and holds JSON.
pub(crate) async fn small_json(
    response: Response<ProxyBody>,
) -> Result<(Response<ProxyBody>, Option<serde_json::Value>), ProxyError> {
    let small = response
        .body()
        .size_hint()
        .upper()
        .is_some_and(|n| n <= SMALL_JSON_BYTES);
    if !small {
        return Ok((response, None));
    }
    let (parts, body) = response.into_parts();
    let bytes = body
        .collect()
        .await
        .map_err(|_| ProxyError::UpstreamUnreachable {
            kind: UpstreamErrorKind::Protocol,
        })?
        .to_bytes();
    let json = serde_json::from_slice(&bytes).ok();
    Ok((Response::from_parts(parts, ProxyBody::full(bytes)), json))
}
