//! Test harness: the proxy (in-process through the library entry point, or the real binary
//! when a test needs a process) against the in-crate HubSpot stand-in on loopback.
#![allow(dead_code)]

pub mod proxy;
pub mod redis_server;
pub mod world;

pub use proxy::*;
pub use world::*;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[allow(unused_imports)]
pub use hubspot_auth_proxy::sandbox::Sandbox;

pub const TOKEN_A: &str = "pat-na1-11111111-aaaa-4aaa-8aaa-aaaaaaaaaaaa";
pub const TOKEN_B: &str = "pat-na1-22222222-bbbb-4bbb-8bbb-bbbbbbbbbbbb";

pub const BIN: &str = env!("CARGO_BIN_EXE_hubspot-auth-proxy");

/// Polls `f` until it returns Some, or panics with `what` after `limit`.
pub async fn eventually<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Scrapes the proxy's metrics until `series` reads `want`, or panics after `limit`.
pub async fn metric_becomes(proxy: &TestProxy, series: &str, want: f64, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let metrics = proxy.metrics().await;
        if metric(&metrics, series) == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never became {want}:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls GET `url` until it answers `want`, or panics naming `what` after `limit`.
pub async fn status_becomes(url: &str, want: u16, limit: Duration, what: &str) {
    let deadline = Instant::now() + limit;
    let client = client();
    loop {
        let status = client.get(url).send().await.map(|r| r.status().as_u16());
        if status.as_ref().ok() == Some(&want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {want} never came, last {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts a refusal the proxy made itself: `status`, `X-Auth-Proxy-Error: category`, and a
/// HubSpot-shaped JSON body naming the same category with a correlation id. Returns the body.
pub async fn assert_proxy_error(
    response: reqwest::Response,
    status: u16,
    category: &str,
) -> serde_json::Value {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()["x-auth-proxy-error"], category);
    let body: serde_json::Value = response.json().await.expect("a JSON error body");
    assert_eq!(body["status"], "error", "{body}");
    assert_eq!(body["category"], category, "{body}");
    assert!(body["message"].is_string(), "{body}");
    assert_eq!(
        body["correlationId"].as_str().map(str::len),
        Some(36),
        "{body}"
    );
    body
}

/// The status of a GET of `url`; 0 when the connection failed.
pub async fn status_of(url: &str) -> u16 {
    client()
        .get(url)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// `clients` clients, each GETting `url` in a loop until `stop` is set; each task returns the
/// statuses it saw (0 for a failed connection).
pub fn load_until(
    url: &str,
    clients: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<u16>>> {
    (0..clients)
        .map(|_| {
            let (url, stop) = (url.to_string(), stop.clone());
            tokio::spawn(async move {
                let c = client();
                let mut statuses = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let status = c.get(&url).send().await.map(|r| r.status().as_u16());
                    statuses.push(status.unwrap_or(0));
                }
                statuses
            })
        })
        .collect()
}

/// A scratch directory with a token file, removed on drop.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// Replaces a file the way Kubernetes secret volumes do: write aside, then rename over.
    pub fn replace_atomically(&self, name: &str, contents: &str) {
        let tmp = self.path(&format!(".{name}.tmp"));
        std::fs::write(&tmp, contents).unwrap();
        std::fs::rename(&tmp, self.path(name)).unwrap();
    }
}

/// How the stand-in serves HubSpot's API: plain HTTP, or TLS the way api.hubapi.com does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Plain,
    /// TLS offering h2 and http/1.1 in ALPN (the production path).
    TlsH2,
    /// TLS offering only http/1.1.
    TlsHttp1,
}

impl Transport {
    pub fn options(self) -> hubspot_auth_proxy::sandbox::Options {
        use hubspot_auth_proxy::sandbox::{Alpn, Options};
        let tls = match self {
            Transport::Plain => None,
            Transport::TlsH2 => Some(Alpn::H2AndHttp1),
            Transport::TlsHttp1 => Some(Alpn::Http1Only),
        };
        Options {
            tls,
            recycle_after: None,
        }
    }

    /// The protocol the stand-in must see the proxy's requests arrive with.
    pub fn version(self) -> http::Version {
        match self {
            Transport::TlsH2 => http::Version::HTTP_2,
            Transport::Plain | Transport::TlsHttp1 => http::Version::HTTP_11,
        }
    }
}

/// A stand-in started with `options` on a free loopback port.
pub async fn sandbox_with(options: hubspot_auth_proxy::sandbox::Options) -> Sandbox {
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    Sandbox::start_with(loopback, options).await.unwrap()
}

/// Points a config at a TLS stand-in: writes its CA next to the token and sets `ca_file`.
pub fn trust_sandbox(config: String, sandbox: &Sandbox, scratch: &Scratch) -> String {
    let Some(ca) = sandbox.ca_pem() else {
        return config;
    };
    let ca_file = scratch.write("sandbox-ca.pem", ca);
    let base_url = format!("base_url = \"{}\"", sandbox.url());
    assert!(config.contains(&base_url), "config names the stand-in");
    config.replacen(
        &base_url,
        &format!("{base_url}\nca_file = \"{}\"", ca_file.display()),
        1,
    )
}

/// Asserts that every request the stand-in saw came over `transport`'s protocol, addressed to
/// the stand-in's own authority (HubSpot's, from the proxy's view), and never with a `Host`
/// beside h2's `:authority` (RFC 9113 §8.3.1).
pub fn assert_arrived_over(sandbox: &Sandbox, transport: Transport) {
    let seen = sandbox.requests();
    assert!(!seen.is_empty(), "the stand-in saw no request");
    let authority = sandbox.addr().to_string();
    for request in &seen {
        assert_eq!(request.version, transport.version(), "{}", request.target);
        assert_eq!(request.authority.as_deref(), Some(authority.as_str()));
        if transport.version() == http::Version::HTTP_2 {
            assert!(
                !request.headers.contains_key(http::header::HOST),
                "a Host header went beside :authority: {:?}",
                request.headers
            );
        }
    }
}

/// The smallest config for one static account against `upstream`, with ports chosen by the OS.
pub fn static_config(upstream: &str, token_file: &Path, extra_server: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
shutdown_grace_secs = 10
{extra_server}

[upstream]
base_url = "{upstream}"
timeout_secs = 5
connect_timeout_ms = 1000

[[accounts]]
name = "main"
token = {{ file = "{}" }}
[accounts.rate_limit]
# Load tests here measure the proxy, not HubSpot's budget; shaping has its own tests.
per_ten_seconds = 0
"#,
        token_file.display()
    )
}

/// A reqwest client that never uses an environment proxy.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A connection to `addr` with `request` written, reads bounded by 10 s. A write error is
/// ignored: the server may answer and close before it has read everything (a 64 KB target).
fn raw_send(addr: SocketAddr, request: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = stream.write_all(request);
    stream
}

/// Sends raw bytes and returns everything the server wrote until it closed (or 10 s passed).
pub fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = raw_send(addr, request);
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Sends raw bytes and returns the first response, head and `Content-Length` body, without
/// waiting for the server to close a connection it keeps alive.
pub fn raw_response(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = raw_send(addr, request);
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&out);
        if let Some(head_end) = text.find("\r\n\r\n") {
            let length = text[..head_end]
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if out.len() >= head_end + 4 + length {
                return text.into_owned();
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&out).into_owned(),
            Ok(n) => out.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The status code of a raw HTTP/1.1 response.
pub fn raw_status(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A loopback port with nothing listening on it.
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Reads one sample from Prometheus text, by its full series name with labels.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Runs the futures at once, each on its own task; their outputs in order.
pub async fn join_all<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let tasks: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(tasks.len());
    for task in tasks {
        outputs.push(task.await.expect("task panicked"));
    }
    outputs
}

/// SHA-256 hex of a key, as `hash-key` prints it for `key_sha256` and `[legacy] keys`.
pub fn sha(key: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(key.as_bytes()))
}
