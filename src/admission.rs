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
