//! A stand-in for the HubSpot API on loopback, shared by `demo` and the integration tests,
//! so the two never drift apart. It records every request exactly as it arrived.

mod api;
mod json;
mod listener;
pub mod oauth;
pub(crate) mod ratelimit;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::body::ProxyBody;
pub use listener::Alpn;

/// The stand-in keeps this many recent requests; older ones are forgotten so a long demo stays small.
const RECORD_LIMIT: usize = 10_000;
/// Bodies up to this size are kept whole for assertions; larger ones only by hash and length.
const KEEP_BODY_BYTES: usize = 1024 * 1024;
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// The portal tokens belong to unless a test says otherwise (the OAuth stand-in's too).
pub const DEFAULT_HUB_ID: u64 = 62515;

/// A one-off answer: `status`, with `policy` as the policyName when it is a 429.
#[derive(Debug, Clone)]
pub(crate) struct Injected {
    pub(crate) status: u16,
    pub(crate) policy: Option<&'static str>,
}

/// One request as the stand-in received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    /// HTTP/1.1 or HTTP/2, as the request arrived.
    pub version: http::Version,
    /// The authority the client named: `Host` on HTTP/1.1, `:authority` on h2.
    pub authority: Option<String>,
    /// Path and query, byte for byte as sent.
    pub target: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub body_len: usize,
    pub body_sha256: String,
}

impl Recorded {
    pub fn bearer(&self) -> Option<&str> {
        self.headers
            .get(http::header::AUTHORIZATION)?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")
    }
}

#[derive(Default)]
pub struct State {
    pub(crate) oauth: oauth::OAuthState,
    pub(crate) limits: ratelimit::RateLimits,
    tokens: Mutex<HashSet<String>>,
    /// Developer API keys (`?hapikey=` on app-settings paths) → their app's 10-second Max.
    developer_keys: Mutex<HashMap<String, u64>>,
    /// The portal each token belongs to, for the introspection endpoints (default 62515).
    hub_ids: Mutex<std::collections::HashMap<String, u64>>,
    recorded: Mutex<VecDeque<Recorded>>,
    /// Answers to give the next authenticated requests instead of the real ones.
    injected: Mutex<VecDeque<Injected>>,
    pub(crate) contacts: Mutex<Vec<serde_json::Value>>,
    /// Requests inside the `slow` test route now, and the most there ever were at once.
    slow_now: AtomicUsize,
    slow_most: AtomicUsize,
}

impl State {
    pub(crate) fn accept_token(&self, token: &str) {
        self.tokens.lock().unwrap().insert(token.to_string());
    }

    /// Makes the introspection endpoints report `token` as belonging to portal `hub_id`.
    pub fn set_hub_id(&self, token: &str, hub_id: u64) {
        self.hub_ids
            .lock()
            .unwrap()
            .insert(token.to_string(), hub_id);
    }

    pub(crate) fn hub_id(&self, token: &str) -> u64 {
        self.hub_ids
            .lock()
            .unwrap()
            .get(token)
            .copied()
            .unwrap_or(DEFAULT_HUB_ID)
    }

    /// Accepts a developer API key; its answers report `ratelimit_max`, the developer app's budget.
    pub fn accept_developer_key(&self, key: &str, ratelimit_max: u64) {
        self.developer_keys
            .lock()
            .unwrap()
            .insert(key.to_string(), ratelimit_max);
    }

    pub(crate) fn developer_key_max(&self, key: &str) -> Option<u64> {
        self.developer_keys.lock().unwrap().get(key).copied()
    }

    pub(crate) fn static_token_valid(&self, token: &str) -> bool {
        self.tokens.lock().unwrap().contains(token)
    }

    pub(crate) fn take_injected(&self) -> Option<Injected> {
        self.injected.lock().unwrap().pop_front()
    }

    /// Counts a request into the `slow` route until the guard drops.
    pub(crate) fn enter_slow(&self) -> SlowGuard<'_> {
        let now = self.slow_now.fetch_add(1, Ordering::SeqCst) + 1;
        self.slow_most.fetch_max(now, Ordering::SeqCst);
        SlowGuard(self)
    }

    fn record(&self, request: Recorded) {
        let mut recorded = self.recorded.lock().unwrap();
        if recorded.len() == RECORD_LIMIT {
            recorded.pop_front();
        }
        recorded.push_back(request);
    }
}

pub(crate) struct SlowGuard<'a>(&'a State);

impl Drop for SlowGuard<'_> {
    fn drop(&mut self) {
        self.0.slow_now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How the stand-in listens.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Serve TLS (a fresh throwaway CA, see `Sandbox::ca_pem`) offering these protocols.
    pub tls: Option<Alpn>,
    /// Recycle each connection after this many requests (GOAWAY on h2, close on HTTP/1.1).
    pub recycle_after: Option<usize>,
}

/// A running stand-in on 127.0.0.1.
pub struct Sandbox {
    addr: SocketAddr,
    state: Arc<State>,
    stop: watch::Sender<bool>,
    ca_pem: Option<String>,
    accepted: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
}

impl Sandbox {
    pub async fn start() -> std::io::Result<Sandbox> {
        Sandbox::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    pub(crate) async fn start_on(addr: SocketAddr) -> std::io::Result<Sandbox> {
        Sandbox::start_with(addr, Options::default()).await
    }

    pub async fn start_with(addr: SocketAddr, options: Options) -> std::io::Result<Sandbox> {
        let (tls, ca_pem) = match options.tls {
            None => (None, None),
            Some(alpn) => {
                let certs = listener::Certificates::generate().map_err(std::io::Error::other)?;
                let acceptor = certs.acceptor(alpn).map_err(std::io::Error::other)?;
                (Some(acceptor), Some(certs.ca_pem))
            }
        };
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        api::seed_contacts(&state);
        let (stop, stop_rx) = watch::channel(false);
        let handler_state = state.clone();
        let accepted = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let listening = listener::Listening {
            tls,
            recycle_after: options.recycle_after,
            accepted: accepted.clone(),
            open: open.clone(),
        };
        tokio::spawn(listener::serve(
            listener,
            listening,
            move |request| handle(handler_state.clone(), request),
            stop_rx,
        ));
        Ok(Sandbox {
            addr,
            state,
            stop,
            ca_pem,
            accepted,
            open,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, or `https://…` when serving TLS.
    pub fn url(&self) -> String {
        let scheme = if self.ca_pem.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// The PEM of the CA that signed the stand-in's TLS certificate (for `upstream.ca_file`).
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// TCP connections accepted so far.
    pub fn connections_accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// TCP connections open now (accepted and not yet closed by either side).
    pub fn connections_open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    pub fn state(&self) -> &Arc<State> {
        &self.state
    }

    pub fn accept_token(&self, token: &str) {
        self.state.accept_token(token);
    }

    pub fn oauth(&self) -> &oauth::OAuthState {
        &self.state.oauth
    }

    /// The next authenticated request gets `status` (429s with `policy` as their policyName).
    pub fn inject(&self, status: u16, policy: Option<&'static str>) {
        self.state
            .injected
            .lock()
            .unwrap()
            .push_back(Injected { status, policy });
    }

    pub fn limits(&self) -> &ratelimit::RateLimits {
        &self.state.limits
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state
            .recorded
            .lock()
            .unwrap()
            .iter()
            .cloned()
            .collect()
    }

    /// The most requests the `slow` test route ever held at once: what the proxy let through.
    pub fn most_concurrent_slow(&self) -> usize {
        self.state.slow_most.load(Ordering::SeqCst)
    }

    pub fn request_count(&self) -> usize {
        self.state.recorded.lock().unwrap().len()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn handle(state: Arc<State>, request: Request<Incoming>) -> Response<ProxyBody> {
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return json::error(
                400,
                "INVALID_REQUEST",
                "The request body could not be read.",
            )
        }
    };
    let authority = match parts.version {
        http::Version::HTTP_2 => parts.uri.authority().map(|a| a.to_string()),
        _ => parts
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string),
    };
    let recorded = Recorded {
        method: parts.method.clone(),
        version: parts.version,
        authority,
        target: parts
            .uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_string(),
        headers: parts.headers.clone(),
        body_len: body.len(),
        body_sha256: hex::encode(Sha256::digest(&body)),
        body: if body.len() <= KEEP_BODY_BYTES {
            body.clone()
        } else {
            Bytes::new()
        },
    };
    if api::is_introspection(&recorded) {
        return api::introspect(&state, &body);
    }
    state.record(recorded.clone());
    if recorded.version == http::Version::HTTP_2
        && recorded.headers.contains_key(http::header::HOST)
    {
        // As nginx does: an h2 client names the authority in `:authority` (RFC 9113 §8.3.1).
        return json::error(400, "INVALID_REQUEST", "duplicate host in an h2 request");
    }
    api::respond(&state, &recorded, body).await
}
