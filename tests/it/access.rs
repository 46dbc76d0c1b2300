//! Who may use the proxy, over the wire: networks, client keys and rules, inbound TLS and mTLS,
//! egress through a CONNECT proxy, and malformed requests.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::*;
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const REPORTING_KEY: &str = "ck-reporting-4f1d2a";
const ADMIN_KEY: &str = "ck-admin-99e0b7";
const LEGACY_KEY: &str = "0a1b2c3d-legacy-script-key";

/// Accounts `main` (TOKEN_A) and `marketing` (TOKEN_B), `server_extra` in [server], `tail` appended.
async fn world(server_extra: &str, tail: &str) -> World {
    World::build()
        .server(server_extra)
        .second_account()
        .tail(tail)
        .start()
        .await
}

fn from(ip: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .local_address(IpAddr::from(ip))
        .build()
        .unwrap()
}

async fn status_and_category(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    (status, body["category"].as_str().unwrap_or("").to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allowed_networks_get_through() {
    let w = world(
        "allowed_networks = [\"127.0.0.1/32\", \"127.0.0.3/32\"]",
        "",
    )
    .await;
    let url = w.proxy.url("/crm/v3/objects/contacts");
    for allowed in [[127, 0, 0, 1], [127, 0, 0, 3]] {
        let status = from(allowed).get(&url).send().await.unwrap().status();
        assert_eq!(status, 200, "{allowed:?}");
    }
    let denied = status_and_category(from([127, 0, 0, 2]).get(&url).send().await.unwrap()).await;
    assert_eq!(denied, (403, "PROXY_FORBIDDEN_NETWORK".into()));
    // X-Forwarded-For is ignored unless trusted.
    let spoofed = from([127, 0, 0, 2])
        .get(&url)
        .header("x-forwarded-for", "127.0.0.1")
        .send()
        .await
        .unwrap();
    assert_eq!(spoofed.status(), 403);
    assert_eq!(
        w.sandbox.request_count(),
        2,
        "denied requests never reach HubSpot"
    );
    let metrics = w.proxy.metrics().await;
    assert_eq!(
        metric(&metrics, r#"hubspot_proxy_denied_total{reason="network"}"#),
        Some(2.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_hop_can_report_the_client_address() {
    let w = world(
        "allowed_networks = [\"127.0.0.3/32\"]\ntrust_forwarded_for = true",
        "",
    )
    .await;
    let url = w.proxy.url("/crm/v3/objects/contacts");
    // The last entry is what the trusted hop in front of us appended.
    let ok = client()
        .get(&url)
        .header("x-forwarded-for", "10.9.9.9, 127.0.0.3")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let spoofed = client()
        .get(&url)
        .header("x-forwarded-for", "127.0.0.3, 10.9.9.9")
        .send()
        .await
        .unwrap();
    assert_eq!(spoofed.status(), 403);
}

fn clients_section() -> String {
    format!(
        r#"
[legacy]
keys = [{{ sha256 = "{}", account = "main", client = "reporting-job" }}]

[[clients]]
name = "reporting-job"
key_sha256 = "{}"
accounts = ["main"]
allow = ["GET /crm/v3/objects/**", "POST /crm/v3/objects/*/search"]

[[clients]]
name = "admin-tool"
key_sha256 = "{}"
"#,
        sha(LEGACY_KEY),
        sha(REPORTING_KEY),
        sha(ADMIN_KEY)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_keys_are_required_and_scoped() {
    let w = world("", &clients_section()).await;
    let c = client();
    let url = w.proxy.url("/crm/v3/objects/contacts");
    let send = |method: reqwest::Method, path: &str, key: Option<&str>, account: Option<&str>| {
        let mut r = c.request(method, w.proxy.url(path));
        if let Some(k) = key {
            r = r.header("x-auth-proxy-key", k);
        }
        if let Some(a) = account {
            r = r.header("x-auth-proxy-account", a);
        }
        async move { status_and_category(r.body("{}").send().await.unwrap()).await }
    };
    use reqwest::Method;
    assert_eq!(
        send(Method::GET, "/crm/v3/objects/contacts", None, None).await,
        (401, "PROXY_UNAUTHENTICATED".into())
    );
    assert_eq!(
        send(Method::GET, "/crm/v3/objects/contacts", Some("wrong"), None).await,
        (401, "PROXY_UNAUTHENTICATED".into())
    );
    // An unauthenticated caller cannot probe account names.
    assert_eq!(
        send(Method::GET, "/crm/v3/objects/contacts", None, Some("nope"))
            .await
            .0,
        401
    );
    assert_eq!(
        send(
            Method::GET,
            "/crm/v3/objects/contacts",
            Some(REPORTING_KEY),
            None
        )
        .await
        .0,
        200
    );
    assert_eq!(
        send(
            Method::POST,
            "/crm/v3/objects/contacts/search",
            Some(REPORTING_KEY),
            None
        )
        .await
        .0,
        200
    );
    assert_eq!(w.sandbox.request_count(), 2);

    let r = c
        .post(&url)
        .header("x-auth-proxy-key", REPORTING_KEY)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["category"], "PROXY_FORBIDDEN");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("reporting-job") && message.contains("POST /crm/v3/objects/contacts"),
        "{message}"
    );
    assert!(!message.contains(REPORTING_KEY));
    assert_eq!(
        send(
            Method::GET,
            "/crm/v3/objects/contacts",
            Some(REPORTING_KEY),
            Some("marketing")
        )
        .await,
        (403, "PROXY_FORBIDDEN".into())
    );
    // The unrestricted client may do both.
    assert_eq!(
        send(
            Method::GET,
            "/crm/v3/objects/contacts",
            Some(ADMIN_KEY),
            Some("marketing")
        )
        .await
        .0,
        200
    );
    assert_eq!(
        send(
            Method::POST,
            "/crm/v3/objects/contacts",
            Some(ADMIN_KEY),
            None
        )
        .await
        .0,
        201
    );
    assert_eq!(
        w.sandbox.request_count(),
        4,
        "refused requests never reached HubSpot"
    );
    for seen in w.sandbox.requests() {
        assert!(
            !seen.headers.contains_key("x-auth-proxy-key"),
            "the client key was forwarded"
        );
    }
    assert_eq!(w.sandbox.requests()[2].bearer(), Some(TOKEN_B));

    // A migrated script's legacy key identifies the client it is mapped to, with its rules.
    let legacy_get = c
        .get(w.proxy.url(&format!(
            "/crm/v3/objects/contacts?hapikey={LEGACY_KEY}&limit=1"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(legacy_get.status(), 200);
    assert_eq!(
        w.sandbox.requests().last().unwrap().target,
        "/crm/v3/objects/contacts?limit=1"
    );
    let legacy_post = c
        .post(
            w.proxy
                .url(&format!("/crm/v3/objects/contacts?hapikey={LEGACY_KEY}")),
        )
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(legacy_post.status(), 403);

    let metrics = w.proxy.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"hubspot_proxy_denied_total{reason="unauthenticated"}"#
        ),
        Some(3.0)
    );
    assert_eq!(
        metric(
            &metrics,
            r#"hubspot_proxy_denied_total{reason="forbidden"}"#
        ),
        Some(3.0)
    );
    assert_eq!(
        metric(
            &metrics,
            r#"hubspot_proxy_client_requests_total{client="reporting-job"}"#
        ),
        Some(3.0)
    );
    assert_eq!(
        metric(
            &metrics,
            r#"hubspot_proxy_client_requests_total{client="admin-tool"}"#
        ),
        Some(2.0)
    );
    w.proxy.assert_log_free_of(&[
        REPORTING_KEY,
        ADMIN_KEY,
        LEGACY_KEY,
        "wrong",
        TOKEN_A,
        TOKEN_B,
    ]);
}

/// One raw HTTP/1.1 request (reqwest would normalise these paths away before sending).
fn raw_get(w: &World, target: &str, extra: &str) -> String {
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: p\r\nX-Auth-Proxy-Key: {REPORTING_KEY}\r\n{extra}Connection: close\r\n\r\n"
    );
    raw_exchange(w.proxy.proxy, request.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_segments_and_encoded_slashes_cannot_escape_client_rules() {
    let w = world("", &clients_section()).await;
    for path in [
        "/crm/v3/objects/../../../settings/v3/users",
        "/crm/v3/objects/%2e%2e/%2e%2e/%2e%2e/settings/v3/users",
        "/crm/v3/objects/%2E%2E/%2E%2E/%2E%2E/settings/v3/users",
        "/crm/v3/objects/..%2f..%2f..%2fsettings/v3/users",
        "/crm/v3/objects/.%2e/.%2e/.%2e/settings/v3/users",
        "/crm/v3/objects/contacts/./x",
        "/crm/v3/objects/a%5c..%5c..%5csettings",
        "/crm/v3/objects\\..\\settings",
        // Servlet containers drop `;` path parameters before resolving dot segments.
        "/crm/v3/objects/..;/..;/..;/settings/v3/users",
        "/crm/v3/objects/contacts/.;x=1/..;jsessionid=1/..;/..;/settings",
        "/crm/v3/objects/%2e%2e;/%2E%2E;/..%3b/settings/v3/users",
        "/crm/v3/objects/..%3B/..%3B/..%3B/settings/v3/users",
    ] {
        let response = raw_get(&w, path, "");
        assert_eq!(raw_status(&response), 400, "{path}: {response}");
        assert!(response.contains("PROXY_BAD_REQUEST"), "{path}: {response}");
    }
    assert_eq!(
        w.sandbox.request_count(),
        0,
        "a dot-segment path reached HubSpot"
    );

    // Encoded unreserved characters are decoded: the rule sees, and HubSpot gets, one path.
    let response = raw_get(&w, "/crm/v3/%6Fbjects/contacts?limit=1", "");
    assert_eq!(raw_status(&response), 200, "{response}");
    assert_eq!(
        w.sandbox.requests()[0].target,
        "/crm/v3/objects/contacts?limit=1"
    );
    let response = raw_get(&w, "/crm/v3/%73ettings", "");
    assert_eq!(raw_status(&response), 403, "{response}");
    assert_eq!(w.sandbox.request_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http11_without_host_is_refused_and_http10_is_not() {
    let w = world("", "").await;
    let response = raw_exchange(
        w.proxy.proxy,
        b"GET /crm/v3/objects/contacts HTTP/1.1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(raw_status(&response), 400, "{response}");
    assert!(response.contains("PROXY_BAD_REQUEST"), "{response}");
    assert_eq!(w.sandbox.request_count(), 0);
    // RFC 9112 §3.2 asks for Host only from HTTP/1.1 clients.
    let response = raw_exchange(
        w.proxy.proxy,
        b"GET /crm/v3/objects/contacts HTTP/1.0\r\n\r\n",
    );
    assert_eq!(raw_status(&response), 200, "{response}");
    assert_eq!(w.sandbox.request_count(), 1);
}

struct Pki {
    ca_pem: String,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = params.self_signed(&ca_key).unwrap();
    Pki {
        ca_pem: ca.pem(),
        ca,
        ca_key,
    }
}

/// A leaf certificate and its key, PEM, for a server (`127.0.0.1`) or a client.
fn leaf(pki: &Pki, server: bool) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let names = if server {
        vec!["localhost".to_string(), "127.0.0.1".to_string()]
    } else {
        vec!["reporting-job".to_string()]
    };
    let mut params = CertificateParams::new(names).unwrap();
    params.extended_key_usages = vec![if server {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    let cert = params.signed_by(&key, &pki.ca, &pki.ca_key).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn tls_client(ca_pem: &str, identity: Option<(&str, &str)>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap());
    if let Some((cert, key)) = identity {
        builder = builder
            .identity(reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_tls_with_reload_and_mutual_tls() {
    let server_pki = pki();
    let scratch_files = Scratch::new();
    let (cert, key) = leaf(&server_pki, true);
    let cert_file = scratch_files.write("tls.crt", &cert);
    let key_file = scratch_files.write("tls.key", &key);
    let tls = format!(
        "[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"",
        cert_file.display(),
        key_file.display()
    );
    let w = world(&tls.replace("[server.tls]", "\n[server.tls]"), "").await;
    let https = format!("https://{}/crm/v3/objects/contacts", w.proxy.proxy);
    let r = tls_client(&server_pki.ca_pem, None)
        .get(&https)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Plain HTTP to the TLS listener gets nowhere.
    let plain = client()
        .get(w.proxy.url("/crm/v3/objects/contacts"))
        .send()
        .await;
    assert!(!plain.is_ok_and(|r| r.status().is_success()));

    // A renewed certificate from another CA is picked up without a restart.
    let renewed = pki();
    let (cert2, key2) = leaf(&renewed, true);
    std::fs::write(&key_file, key2).unwrap();
    std::fs::write(&cert_file, cert2).unwrap();
    let renewed_client = tls_client(&renewed.ca_pem, None);
    let mut reloaded = false;
    for _ in 0..100 {
        if renewed_client
            .get(&https)
            .send()
            .await
            .map(|r| r.status() == 200)
            .unwrap_or(false)
        {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reloaded, "the renewed certificate was not served");
    drop(w);

    // Mutual TLS: a client without a certificate from the client CA is refused.
    let client_pki = pki();
    let ca_file = scratch_files.write("clients-ca.pem", &client_pki.ca_pem);
    let (cert, key) = leaf(&server_pki, true);
    std::fs::write(&cert_file, &cert).unwrap();
    std::fs::write(&key_file, &key).unwrap();
    let mtls = format!("{tls}\nclient_ca_file = \"{}\"", ca_file.display());
    let w = world(&mtls.replace("[server.tls]", "\n[server.tls]"), "").await;
    let https = format!("https://{}/crm/v3/objects/contacts", w.proxy.proxy);
    assert!(
        tls_client(&server_pki.ca_pem, None)
            .get(&https)
            .send()
            .await
            .is_err(),
        "no client cert accepted"
    );
    let (ccert, ckey) = leaf(&client_pki, false);
    let r = tls_client(&server_pki.ca_pem, Some((&ccert, &ckey)))
        .get(&https)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(w.sandbox.request_count(), 1);
    let _ = &w.scratch;
}

/// A minimal egress proxy: CONNECT tunnels (https targets) and absolute-form forwarding
/// (plain http targets, as reqwest sends them); records each request line it handles.
async fn connect_proxy() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let record = record.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                reader.read_line(&mut line).await.unwrap();
                let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let mut headers = String::new();
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).await.unwrap_or(0) <= 2 {
                        break;
                    }
                    headers.push_str(&header);
                }
                let line = line.trim().to_string();
                record.lock().unwrap().push(line.clone());
                // Whatever the reader already buffered (a request body) goes on too.
                let buffered = reader.buffer().to_vec();
                let mut client = reader.into_inner();
                if line.starts_with("CONNECT ") {
                    let Ok(mut upstream) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    client
                        .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                        .await
                        .unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                } else {
                    // Absolute form: forward the request line in origin form, then the headers and body as they come.
                    let uri: http::Uri = target.parse().unwrap();
                    let Ok(mut upstream) =
                        tokio::net::TcpStream::connect(uri.authority().unwrap().as_str()).await
                    else {
                        return;
                    };
                    let method = line.split_whitespace().next().unwrap();
                    let origin = uri.path_and_query().map_or("/", |p| p.as_str());
                    upstream
                        .write_all(
                            format!("{method} {origin} HTTP/1.1\r\n{headers}\r\n").as_bytes(),
                        )
                        .await
                        .unwrap();
                    upstream.write_all(&buffered).await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
            });
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_goes_through_the_configured_connect_proxy() {
    let (egress, seen) = connect_proxy().await;
    let sandbox = Sandbox::start().await.unwrap();
    sandbox.oauth().set_client("cid", "csecret");
    sandbox.oauth().add_refresh_token("rt-1");
    let scratch = Scratch::new();
    let refresh = scratch.write("refresh", "rt-1");
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
[upstream]
base_url = "{}"
proxy_url = "http://{egress}"
[[accounts]]
name = "marketing"
[accounts.oauth]
client_id = "cid"
client_secret = {{ value = "csecret" }}
refresh_token = {{ file = "{}" }}
"#,
        sandbox.url(),
        refresh.display()
    );
    let proxy = TestProxy::in_process(&config).await;
    status_becomes(
        &proxy.url("/crm/v3/objects/contacts"),
        200,
        Duration::from_secs(10),
        "a token through the egress proxy",
    )
    .await;
    let lines = seen.lock().unwrap().clone();
    let tunnel = format!("CONNECT {} HTTP/1.1", sandbox.addr());
    let token_call = format!(
        "POST http://{}/oauth/2026-03/token HTTP/1.1",
        sandbox.addr()
    );
    assert!(lines.contains(&tunnel), "the API call tunnels: {lines:?}");
    assert!(
        lines.contains(&token_call),
        "the token call goes through the proxy: {lines:?}"
    );
    assert!(
        lines.iter().all(|l| *l == tunnel || *l == token_call),
        "{lines:?}"
    );
    assert!(sandbox
        .requests()
        .iter()
        .any(|r| r.target.starts_with("/oauth/")));
    assert!(sandbox
        .requests()
        .iter()
        .any(|r| r.target.starts_with("/crm/")));

    // Without proxy_url, the environment's HTTP(S)_PROXY is honoured.
    let (egress2, seen2) = connect_proxy().await;
    sandbox.accept_token(TOKEN_A);
    let token = scratch.write("token", TOKEN_A);
    let proxy2 = TestProxy::start_with(
        &static_config(&sandbox.url(), &token, ""),
        &[("HTTP_PROXY", &format!("http://{egress2}"))],
        &[],
    )
    .await;
    assert_eq!(proxy2.status("/crm/v3/objects/contacts").await, 200);
    // The API call, and the portal check's access-token-info call (same egress route).
    let info_call = format!(
        "POST http://{}/oauth/v2/private-apps/get/access-token-info HTTP/1.1",
        sandbox.addr()
    );
    let lines = seen2.lock().unwrap().clone();
    assert_eq!(
        lines.iter().filter(|l| **l == tunnel).count(),
        1,
        "{lines:?}"
    );
    assert!(
        lines.iter().all(|l| *l == tunnel || *l == info_call),
        "{lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_4xx_or_a_closed_connection() {
    let w = world("", "").await;
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: p\r\n\r\n", "a".repeat(64 * 1024));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "bad method token",
            b"G@T / HTTP/1.1\r\nHost: p\r\n\r\n".to_vec(),
        ),
        (
            "invalid header bytes",
            b"GET / HTTP/1.1\r\nHost: p\r\nX-Bad: a\x01b\r\n\r\n".to_vec(),
        ),
        (
            "header without a colon",
            b"GET / HTTP/1.1\r\nHost: p\r\nNoColonHere\r\n\r\n".to_vec(),
        ),
        (
            "absurd Content-Length",
            b"POST / HTTP/1.1\r\nHost: p\r\nContent-Length: 99999999999999999999999\r\n\r\n"
                .to_vec(),
        ),
        (
            "huge Content-Length",
            b"POST / HTTP/1.1\r\nHost: p\r\nContent-Length: 1000000000000\r\n\r\n".to_vec(),
        ),
        (
            "two Content-Lengths",
            b"POST / HTTP/1.1\r\nHost: p\r\nContent-Length: 1\r\nContent-Length: 5\r\n\r\nhello"
                .to_vec(),
        ),
        (
            "duplicate Host",
            b"GET /crm/v3/objects/contacts HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(),
        ),
        ("64 KB URI", long_uri.into_bytes()),
        (
            // hyper decodes only the chunked framing; the gzip coding would be lost upstream.
            "a transfer coding beneath chunked",
            b"POST /crm/v3/objects/contacts HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
                .to_vec(),
        ),
        (
            "a transfer coding beneath chunked, in two fields",
            b"POST /crm/v3/objects/contacts HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: deflate\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
                .to_vec(),
        ),
        (
            "bad HTTP version",
            b"GET / HTTP/9.9\r\nHost: p\r\n\r\n".to_vec(),
        ),
        (
            "binary garbage",
            vec![
                0x16, 0x03, 0x01, 0x00, 0xff, 0x00, 0x00, 0x00, b'\r', b'\n', b'\r', b'\n',
            ],
        ),
    ];
    for (name, bytes) in &cases {
        // The first answer, or nothing if the connection closes: no wait for a kept-alive one
        // to time out.
        let response = raw_response(w.proxy.proxy, bytes);
        let status = raw_status(&response);
        assert!(
            response.is_empty() || (400..500).contains(&status),
            "{name}: {response:.200}"
        );
    }
    assert_eq!(
        w.sandbox.request_count(),
        0,
        "a malformed request reached HubSpot: {:?}",
        w.sandbox
            .requests()
            .iter()
            .map(|r| r.target.clone())
            .collect::<Vec<_>>()
    );

    // Content-Length with Transfer-Encoding: the chunked framing wins (RFC 9112 §6.3), the
    // request goes upstream with consistent framing, and the connection closes after the
    // answer, so the request smuggled behind it is never read.
    let smuggle = b"POST /__sandbox/echo HTTP/1.1\r\nHost: p\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /crm/v3/objects/contacts/smuggled HTTP/1.1\r\nHost: p\r\n\r\n";
    let response = raw_exchange(w.proxy.proxy, smuggle);
    assert_eq!(
        response.matches("HTTP/1.1 ").count(),
        1,
        "one answer, then the connection closed: {response}"
    );
    let seen = w.sandbox.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].target.as_str(), seen[0].body_len),
        ("/__sandbox/echo", 0)
    );
    assert!(
        !seen[0].headers.contains_key("content-length") || seen[0].headers["content-length"] == "0"
    );
    // Still serving.
    assert_eq!(w.proxy.admin_get("/healthz").await.status(), 200);
    assert_eq!(w.proxy.status("/crm/v3/objects/contacts").await, 200);
}

#[test]
fn a_non_loopback_listener_without_protection_is_warned_about() {
    let scratch = Scratch::new();
    let token = scratch.write("token", TOKEN_A);
    let config = scratch.write(
        "c.toml",
        &static_config("http://127.0.0.1:9", &token, "")
            .replace("listen = \"127.0.0.1:0\"", "listen = \"0.0.0.0:0\""),
    );
    let mut child = std::process::Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut found = false;
    for _ in 0..20 {
        let mut line = String::new();
        if std::io::BufRead::read_line(&mut stderr, &mut line).unwrap_or(0) == 0 {
            break;
        }
        if line.contains("not a loopback address") && line.contains("allowed_networks") {
            found = true;
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(found, "no startup warning");
}
