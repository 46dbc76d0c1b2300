//! Header rules both ways: hop-by-hop headers dropped, the client's Host dropped, Authorization
//! set for HubSpot.

use http::header::{
    AUTHORIZATION, CONNECTION, CONTENT_LENGTH, HOST, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE,
    TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use http::{HeaderMap, HeaderName, HeaderValue};

/// RFC 9110 §7.6.1 connection-specific fields, plus the non-standard ones still seen in the
/// wild. Built once: `from_static` is const, so matching costs no allocation per request.
static HOP_BY_HOP: [HeaderName; 9] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    HeaderName::from_static("proxy-connection"),
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
];

/// Removes the hop-by-hop fields, including every field the `Connection` header names.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none of these: one pass comparing names is cheaper than nine
    // removals that each hash a name. A Connection header is itself in the list.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    if headers.contains_key(CONNECTION) {
        // Names are collected first because the map cannot be read and changed at once;
        // most clients send no Connection header, so the common path never allocates.
        let named: Vec<HeaderValue> = headers.get_all(CONNECTION).iter().cloned().collect();
        for value in &named {
            let Ok(list) = value.to_str() else { continue };
            for name in list.split(',') {
                let name = name.trim();
                if !name.is_empty() {
                    headers.remove(name.to_ascii_lowercase().as_str());
                }
            }
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Prepares a client's headers for HubSpot: the client never chooses the host. The client's
/// Host goes and none is set here: hyper writes HubSpot's from the absolute URI, as `Host` on
/// HTTP/1.1 and as `:authority` on h2, where a `Host` beside it is refused by some servers
/// (RFC 9113 §8.3.1: an h2 client uses `:authority`). The credential is set last, by `set_bearer`.
pub fn to_upstream(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    headers.remove(HOST);
}

/// Replaces whatever Authorization the client sent with the account's bearer.
pub fn set_bearer(headers: &mut HeaderMap, bearer: HeaderValue) {
    headers.insert(AUTHORIZATION, bearer);
}

pub(crate) fn from_upstream(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
}

/// RFC 9112 §6.3: a message with Transfer-Encoding is framed by it, and any Content-Length
/// beside it is wrong. Hyper reads such an upstream body by its chunks, but would forward the
/// stale length, cutting the client's copy short; so the length goes. Must run before
/// `from_upstream`, which strips Transfer-Encoding. Returns whether both were present.
pub(crate) fn drop_conflicting_length(headers: &mut HeaderMap) -> bool {
    headers.contains_key(TRANSFER_ENCODING) && headers.remove(CONTENT_LENGTH).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_and_connection_named_fields_go() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Custom-Hop"),
            ("connection", "x-second"),
            ("x-custom-hop", "1"),
            ("x-second", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic abc"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("x-hubspot-thing", "stays"),
            ("accept-encoding", "gzip"),
        ]);
        strip_hop_by_hop(&mut h);
        let mut names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["accept-encoding", "x-hubspot-thing"]);
    }

    #[test]
    fn authorization_is_replaced_and_host_left_to_the_uri() {
        let mut h = map(&[
            ("authorization", "Bearer client-supplied"),
            ("authorization", "Basic second"),
            ("host", "proxy.local"),
        ]);
        to_upstream(&mut h);
        set_bearer(&mut h, HeaderValue::from_static("Bearer ours"));
        assert_eq!(h.get_all(AUTHORIZATION).iter().count(), 1);
        assert_eq!(h[AUTHORIZATION], "Bearer ours");
        assert!(!h.contains_key(HOST));
    }

    #[test]
    fn transfer_encoding_overrides_content_length() {
        let mut h = map(&[("content-length", "5"), ("transfer-encoding", "chunked")]);
        assert!(drop_conflicting_length(&mut h));
        assert!(!h.contains_key(CONTENT_LENGTH));
        let mut h = map(&[("content-length", "5")]);
        assert!(!drop_conflicting_length(&mut h));
        assert_eq!(h[CONTENT_LENGTH], "5");
    }
}
