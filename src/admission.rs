//! Client admission: who may use the proxy. The network allowlist, client keys
//! (`X-Auth-Proxy-Key`), and each client's accounts and method+path rules; nothing reaches
//! HubSpot for a refused request. (The access log, one line per request, is `proxy::access_log`.)

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::{HeaderMap, HeaderName, Method};
use ipnet::IpNet;
use prometheus::IntCounter;
use sha2::{Digest, Sha256};

use crate::error::ProxyError;
use crate::metrics::Metrics;
use crate::settings::{ClientRule as Rule, ClientSettings, ServerSettings, Settings};

pub(crate) static KEY_HEADER: HeaderName = HeaderName::from_static("x-auth-proxy-key");
static FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

pub(crate) struct Client {
    pub(crate) name: Arc<str>,
    accounts: Option<Vec<String>>,
    rules: Option<Vec<Rule>>,
    requests: IntCounter,
}

/// Why a request was refused, as a bounded metric label.
#[derive(Clone, Copy)]
enum Denied {
    Network = 0,
    Unauthenticated = 1,
    Forbidden = 2,
}

pub(crate) struct Admission {
    networks: Vec<IpNet>,
    trust_forwarded_for: bool,
    clients: Vec<Client>,
    /// SHA-256 of a client key → client index. Only hashes are held.
    keys: HashMap<[u8; 32], usize>,
    denied: [IntCounter; 3],
}

impl Admission {
    pub(crate) fn new(
        clients: &[ClientSettings],
        server: &ServerSettings,
        metrics: &Metrics,
    ) -> Admission {
        let keys = clients
            .iter()
            .enumerate()
            .map(|(i, c)| (c.key_hash, i))
            .collect();
        let clients = clients
            .iter()
            .map(|c| Client {
                name: Arc::from(c.name.as_str()),
                accounts: c.accounts.clone(),
                rules: c.rules.clone(),
                requests: metrics.client_requests(&c.name),
            })
            .collect();
        Admission {
            networks: server.allowed_networks.clone(),
            trust_forwarded_for: server.trust_forwarded_for,
            clients,
            keys,
            denied: ["network", "unauthenticated", "forbidden"].map(|r| metrics.denied(r)),
        }
    }

    pub(crate) fn requires_client_key(&self) -> bool {
        !self.clients.is_empty()
    }

    fn deny(&self, why: Denied, error: ProxyError) -> ProxyError {
        self.denied[why as usize].inc();
        error
    }

    /// The peer (or, when trusted, the address the last hop reports) must be in an allowed network.
    pub(crate) fn check_network(
        &self,
        peer: SocketAddr,
        headers: &HeaderMap,
    ) -> Result<(), ProxyError> {
        let address = self
            .trust_forwarded_for
            .then(|| forwarded_for(headers))
            .flatten()
            .unwrap_or_else(|| canonical(peer.ip()));
        if self.networks.iter().any(|n| n.contains(&address)) {
            Ok(())
        } else {
            Err(self.deny(Denied::Network, ProxyError::ForbiddenNetwork))
        }
    }

    /// The client named by `X-Auth-Proxy-Key`, which is removed so it never reaches HubSpot.
    /// `Ok(None)` when the request sends no key; an unknown key is refused.
    pub(crate) fn key_client(
        &self,
        headers: &mut HeaderMap,
    ) -> Result<Option<&Client>, ProxyError> {
        let Some(key) = headers.remove(&KEY_HEADER) else {
            return Ok(None);
        };
        let hash: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        match self.keys.get(&hash) {
            Some(&i) => Ok(Some(&self.clients[i])),
            None if self.clients.is_empty() => Ok(None),
            None => Err(self.unauthenticated()),
        }
    }

    pub(crate) fn client_named(&self, name: &str) -> Option<&Client> {
        self.clients.iter().find(|c| &*c.name == name)
    }

    pub(crate) fn unauthenticated(&self) -> ProxyError {
        self.deny(Denied::Unauthenticated, ProxyError::Unauthenticated)
    }

    /// The client may use `account`, and one of its rules allows `method path`.
    pub(crate) fn authorize(
        &self,
        client: &Client,
        account: &str,
        method: &Method,
        path: &str,
    ) -> Result<(), ProxyError> {
        let forbidden = |reason: String| {
            self.deny(
                Denied::Forbidden,
                ProxyError::Forbidden {
                    client: client.name.clone(),
                    reason,
                },
            )
        };
        if let Some(accounts) = &client.accounts {
            if !accounts.iter().any(|a| a == account) {
                return Err(forbidden(format!(
                    "its accounts do not include {account:?}"
                )));
            }
        }
        if let Some(rules) = &client.rules {
            let allowed = rules
                .iter()
                .any(|r| r.method.as_ref().is_none_or(|m| m == method) && r.path.is_match(path));
            if !allowed {
                return Err(forbidden(format!("no allow rule matches {method} {path}")));
            }
        }
        client.requests.inc();
        Ok(())
    }
}

/// The last X-Forwarded-For entry: the one the trusted hop in front of us appended.
fn forwarded_for(headers: &HeaderMap) -> Option<IpAddr> {
    let last = headers.get_all(&FORWARDED_FOR).iter().next_back()?;
    let entry = last.to_str().ok()?.rsplit(',').next()?.trim();
    entry.parse().ok().map(canonical)
}

/// An IPv4 peer on a dual-stack socket arrives as `::ffff:a.b.c.d`; match it as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// A non-loopback listener with the default allowlist, no client keys and no TLS.
pub(crate) fn exposed_without_protection(settings: &Settings) -> bool {
    !settings.server.listen.ip().is_loopback()
        && settings.server.allowed_networks == crate::config::default_allowed_networks()
        && settings.clients.is_empty()
        && settings.server.tls.is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::key_sha256;

    /// Clients: `ops` (all accounts, everything), `reader` (account `main`, GETs on contacts,
    /// any method on one owners path), with `allowed_networks` as given.
    fn access(server: &str) -> Admission {
        let text = format!(
            r#"
[server]
{server}

[upstream]
base_url = "https://api.hubapi.com"

[[accounts]]
name = "main"
token = {{ env = "UNUSED" }}

[[accounts]]
name = "sales"
token = {{ env = "UNUSED" }}

[[clients]]
name = "ops"
key_sha256 = "{ops}"

[[clients]]
name = "reader"
key_sha256 = "{reader}"
accounts = ["main"]
allow = ["GET /crm/v3/objects/contacts/**", "* /crm/v3/owners/*"]
"#,
            ops = key_sha256("ops-key"),
            reader = key_sha256("reader-key"),
        );
        let config = crate::config::Config::parse(&text).unwrap_or_else(|e| panic!("{e:?}"));
        let settings =
            crate::settings::Settings::from_config(config).unwrap_or_else(|e| panic!("{e}"));
        Admission::new(&settings.clients, &settings.server, &Metrics::new())
    }

    fn keyed(key: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(&KEY_HEADER, key.parse().unwrap());
        headers
    }

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 40000)
    }

    fn category(result: Result<(), ProxyError>) -> &'static str {
        result.err().map_or("ok", |e| e.category())
    }

    #[test]
    fn a_key_names_its_client_and_is_removed() {
        let a = access("");
        assert!(a.requires_client_key());
        let mut headers = keyed("reader-key");
        let client = a.key_client(&mut headers).unwrap().expect("a client");
        assert_eq!(&*client.name, "reader");
        assert!(
            !headers.contains_key(&KEY_HEADER),
            "the key never reaches HubSpot"
        );
        assert!(a.key_client(&mut HeaderMap::new()).unwrap().is_none());
        let unknown = a.key_client(&mut keyed("guess")).err().unwrap();
        assert_eq!(unknown.category(), "PROXY_UNAUTHENTICATED");
        assert!(a.client_named("ops").is_some());
        assert!(a.client_named("nobody").is_none());
    }

    #[test]
    fn client_accounts_and_method_path_rules() {
        let a = access("");
        let reader = a.client_named("reader").unwrap();
        let ops = a.client_named("ops").unwrap();
        let get = Method::GET;
        let contacts = "/crm/v3/objects/contacts/123";
        assert_eq!(category(a.authorize(reader, "main", &get, contacts)), "ok");
        // Another account, another method, another path: each refused on its own.
        assert_eq!(
            category(a.authorize(reader, "sales", &get, contacts)),
            "PROXY_FORBIDDEN"
        );
        assert_eq!(
            category(a.authorize(reader, "main", &Method::DELETE, contacts)),
            "PROXY_FORBIDDEN"
        );
        assert_eq!(
            category(a.authorize(reader, "main", &get, "/crm/v3/objects/deals/1")),
            "PROXY_FORBIDDEN"
        );
        // `*` allows any method, on its path only.
        for method in [Method::GET, Method::PATCH, Method::DELETE] {
            assert_eq!(
                category(a.authorize(reader, "main", &method, "/crm/v3/owners/7")),
                "ok"
            );
        }
        assert_eq!(
            category(a.authorize(reader, "main", &get, "/crm/v3/owners/7/teams")),
            "PROXY_FORBIDDEN",
            "`*` in a path stays within one segment"
        );
        // No accounts and no rules: everything.
        assert_eq!(
            category(a.authorize(ops, "sales", &Method::POST, "/anything/at/all")),
            "ok"
        );
        let refusal = a
            .authorize(reader, "main", &Method::DELETE, contacts)
            .err()
            .unwrap();
        assert!(
            refusal.to_string().contains("reader"),
            "the refusal names the client: {refusal}"
        );
    }

    #[test]
    fn networks_with_and_without_a_trusted_forwarded_for() {
        let a = access(r#"allowed_networks = ["10.0.0.0/8"]"#);
        let none = HeaderMap::new();
        assert_eq!(category(a.check_network(peer("10.1.2.3"), &none)), "ok");
        assert_eq!(
            category(a.check_network(peer("192.168.1.1"), &none)),
            "PROXY_FORBIDDEN_NETWORK"
        );
        // An IPv4 peer on a dual-stack socket is matched as IPv4.
        assert_eq!(
            category(a.check_network(peer("::ffff:10.9.9.9"), &none)),
            "ok"
        );
        // Untrusted, X-Forwarded-For is ignored both ways.
        let mut forwarded = HeaderMap::new();
        forwarded.insert("x-forwarded-for", "10.0.0.1".parse().unwrap());
        assert_eq!(
            category(a.check_network(peer("192.168.1.1"), &forwarded)),
            "PROXY_FORBIDDEN_NETWORK"
        );
        // Trusted, the last entry (the hop in front of us appended it) decides.
        let a = access(
            r#"allowed_networks = ["10.0.0.0/8"]
trust_forwarded_for = true"#,
        );
        let mut spoofed = HeaderMap::new();
        spoofed.insert("x-forwarded-for", "10.0.0.1, 203.0.113.9".parse().unwrap());
        assert_eq!(
            category(a.check_network(peer("10.0.0.2"), &spoofed)),
            "PROXY_FORBIDDEN_NETWORK",
            "a client-written first entry does not count"
        );
        assert_eq!(
            category(a.check_network(peer("192.168.1.1"), &forwarded)),
            "ok"
        );
    }
}
