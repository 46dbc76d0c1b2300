//! The gate, the request path's first stage: the network allowlist, the request limits, the
//! path gate, and who the client says it is. Everything it refuses is refused before routing,
//! under the default account, so no caller learns which accounts exist.

use std::net::SocketAddr;

use http::request::Parts;
use http::{HeaderValue, Request};

use super::limits::RequestLimits;
use super::path_gate;
use crate::admission::{Admission, Client};
use crate::error::ProxyError;
use crate::migration::caller;

/// A request the gate let through: its one checked path, the proxy's own headers taken off,
/// and who sent it.
pub(crate) struct Gated<'a, B> {
    pub(crate) parts: Parts,
    pub(crate) body: B,
    /// The client its `X-Auth-Proxy-Key` names, when it sent one.
    pub(crate) client: Option<&'a Client>,
    /// Its `X-Auth-Proxy-Caller` name, for the migration report.
    pub(crate) declared: Option<HeaderValue>,
    /// Whether its query holds a `?hapikey=` pair: looked for once per request, in `handle`.
    pub(crate) hapikey: bool,
}

/// The checks in their order: network, limits, path, client key, caller name, and then a
/// request that must name a client and names none (a hapikey may still name one when routed).
pub(crate) fn pass<'a, B>(
    admission: &'a Admission,
    limits: &RequestLimits,
    request: Request<B>,
    peer: SocketAddr,
    hapikey: bool,
) -> Result<Gated<'a, B>, ProxyError> {
    admission.check_network(peer, request.headers())?;
    limits.check(&request)?;
    let (mut parts, body) = request.into_parts();
    // Before routing: rules, routes and HubSpot all see the one path this returns.
    path_gate::apply(&mut parts.uri)?;
    let client = admission.key_client(&mut parts.headers)?;
    let declared = caller::take(&mut parts.headers)?;
    if admission.requires_client_key() && client.is_none() && !hapikey {
        return Err(admission.unauthenticated());
    }
    Ok(Gated {
        parts,
        body,
        client,
        declared,
        hapikey,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Config;
    use crate::metrics::Metrics;
    use crate::settings::{key_sha256, Settings};

    const KEY: &str = "key-of-crm";

    /// One client `crm`, peers from 10.0.0.0/8 only.
    fn admission() -> Admission {
        let text = format!(
            r#"
[server]
allowed_networks = ["10.0.0.0/8"]

[[accounts]]
name = "main"
token = {{ env = "HUBSPOT_TOKEN" }}

[[clients]]
name = "crm"
key_sha256 = "{}"
"#,
            key_sha256(KEY)
        );
        let settings = Settings::from_config(Config::parse(&text).unwrap()).unwrap();
        Admission::new(&settings.clients, &settings.server, &Metrics::new())
    }

    fn limits() -> RequestLimits {
        RequestLimits {
            max_body_bytes: 100,
            max_header_count: 6,
            max_header_bytes: 400,
            body_read_timeout: Duration::from_secs(1),
        }
    }

    const INSIDE: &str = "10.1.2.3:5000";
    const OUTSIDE: &str = "192.0.2.1:5000";

    fn request(method: &str, target: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder()
            .method(method)
            .uri(target)
            .header("host", "proxy");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    /// The category `pass` refuses with, or "ok".
    fn verdict(peer: &str, request: Request<()>, hapikey: bool) -> &'static str {
        let admission = admission();
        let gated = pass(
            &admission,
            &limits(),
            request,
            peer.parse().unwrap(),
            hapikey,
        );
        gated.err().map_or("ok", |e| e.category())
    }

    #[test]
    fn the_checks_run_in_their_order() {
        let key = ("x-auth-proxy-key", KEY);
        let ok = |target| request("GET", target, &[key]);
        assert_eq!(verdict(INSIDE, ok("/crm/v3/objects"), false), "ok");
        // Network first: an outsider learns nothing else about its request.
        let connect = request("CONNECT", "/a/../b", &[("x-auth-proxy-key", "wrong")]);
        assert_eq!(verdict(OUTSIDE, connect, false), "PROXY_FORBIDDEN_NETWORK");
        // Limits before the path gate.
        let big = ("content-length", "101");
        let large = request("POST", "/a/../b", &[big, ("x-auth-proxy-key", "wrong")]);
        assert_eq!(verdict(INSIDE, large, false), "PROXY_BODY_TOO_LARGE");
        // The path gate before the client key.
        let dots = request("GET", "/a/../b", &[("x-auth-proxy-key", "wrong")]);
        assert_eq!(verdict(INSIDE, dots, false), "PROXY_BAD_REQUEST");
        // The client key before the caller name.
        let bad_caller = ("x-auth-proxy-caller", "no spaces");
        let unknown = request("GET", "/a", &[("x-auth-proxy-key", "wrong"), bad_caller]);
        assert_eq!(verdict(INSIDE, unknown, false), "PROXY_UNAUTHENTICATED");
        // The caller name before the missing key.
        let anonymous = request("GET", "/a", &[bad_caller]);
        assert_eq!(verdict(INSIDE, anonymous, false), "PROXY_INVALID_CALLER");
        // No key: refused, unless a hapikey may still name a client once routed.
        assert_eq!(
            verdict(INSIDE, request("GET", "/a", &[]), false),
            "PROXY_UNAUTHENTICATED"
        );
        let keyed = request("GET", "/a?hapikey=legacy", &[]);
        assert_eq!(verdict(INSIDE, keyed, true), "ok");
    }

    #[test]
    fn what_passes_is_the_checked_path_without_the_proxy_headers() {
        let admission = admission();
        let headers = [
            ("x-auth-proxy-key", KEY),
            ("x-auth-proxy-caller", "nightly-sync"),
        ];
        let request = request("GET", "/crm/v3/%6Fbjects?limit=1", &headers);
        let gated = pass(
            &admission,
            &limits(),
            request,
            INSIDE.parse().unwrap(),
            false,
        )
        .unwrap_or_else(|e| panic!("refused: {e}"));
        assert_eq!(gated.parts.uri, "/crm/v3/objects?limit=1");
        assert_eq!(gated.client.map(|c| &*c.name), Some("crm"));
        assert_eq!(
            gated.declared.as_ref().map(caller::name),
            Some("nightly-sync")
        );
        assert!(!gated.parts.headers.contains_key("x-auth-proxy-key"));
        assert!(!gated.parts.headers.contains_key("x-auth-proxy-caller"));
        assert!(!gated.hapikey);
    }
}
