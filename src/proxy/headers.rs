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
    // Most requests carry none of these, and most HTTP/1.1 answers only `Connection:
    // keep-alive`: one pass notes which are present, so only those are removed (a removal
    // hashes its name) and nothing is allocated for them.
    let mut present = [false; HOP_BY_HOP.len()];
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|hop| hop == name) {
            present[i] = true;
        }
    }
    if !present.contains(&true) {
        return;
    }
    // `CONNECTION` is the list's first entry.
    if present[0] {
        for name in named_by_connection(headers) {
            headers.remove(name);
        }
    }
    for (name, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, p)| *p) {
        headers.remove(name);
    }
}

/// The fields present that a `Connection` header names, beyond the hop-by-hop ones removed
/// anyway. Empty, and so not allocated, for the usual `keep-alive` or `close`.
fn named_by_connection(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|list| list.split(','))
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .filter(|token| {
            !HOP_BY_HOP
                .iter()
                .any(|hop| token.eq_ignore_ascii_case(hop.as_str()))
        })
        // Looked up by `&str`, which http matches without case and without allocating.
        .filter(|token| headers.contains_key(*token))
        .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
        .collect()
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

pub fn from_upstream(headers: &mut HeaderMap) {
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
    fn connection_tokens_name_fields_in_any_case_and_odd_tokens_are_harmless() {
        let mut h = map(&[
            ("connection", "close, X-Trace-Hop, bad name, , keep-alive"),
            ("x-trace-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("content-length", "67"),
        ]);
        strip_hop_by_hop(&mut h);
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["content-length"]);

        let mut h = map(&[("connection", "keep-alive"), ("content-type", "text/plain")]);
        strip_hop_by_hop(&mut h);
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["content-type"]);
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
