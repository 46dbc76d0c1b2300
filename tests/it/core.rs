//! The proxy core through the real binary: forwarding, headers, bodies, limits, errors, lifecycle.

use std::time::Duration;

use crate::support::*;
use sha2::{Digest, Sha256};

/// Runs a forwarding check over plain HTTP, TLS+h2 (HubSpot's production path) and TLS+http/1.1.
macro_rules! over_every_transport {
    ($check:ident) => {
        mod $check {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn plain() {
                super::$check(Transport::Plain).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn tls_h2() {
                super::$check(Transport::TlsH2).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn tls_http1() {
                super::$check(Transport::TlsHttp1).await;
            }
        }
    };
}

over_every_transport!(bearer_is_injected_and_client_authorization_replaced);
over_every_transport!(query_bytes_arrive_unchanged);
over_every_transport!(post_bodies_arrive_intact);
over_every_transport!(large_post_body_streams_intact);
over_every_transport!(hop_by_hop_headers_are_dropped_both_ways);

async fn bearer_is_injected_and_client_authorization_replaced(transport: Transport) {
    let w = World::build().over(transport).start().await;
    let response = client()
        .get(w.proxy.url("/crm/v3/objects/contacts?limit=2"))
        .header("authorization", "Bearer client-supplied-should-vanish")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-hubspot-correlation-id"));
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["results"][0]["properties"]["firstname"], "Ada");

    let seen = w.sandbox.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].target, "/crm/v3/objects/contacts?limit=2");
    assert_eq!(seen[0].bearer(), Some(TOKEN_A));
    assert_eq!(seen[0].headers.get_all("authorization").iter().count(), 1);
    assert_arrived_over(&w.sandbox, transport);
    w.proxy
        .assert_log_free_of(&[TOKEN_A, "client-supplied-should-vanish"]);
}

async fn query_bytes_arrive_unchanged(transport: Transport) {
    let w = World::build().over(transport).start().await;
    let targets = [
        "/__sandbox/echo?a=1&a=2&b=%20&c=%2B&d=&flag&e=x+y&f=%zz;g=h",
        "/__sandbox/echo?",
        "/__sandbox/echo?q=%E2%9C%93&&x==y",
        "/__sandbox/echo/x?x=%2F%3F&y=a%26b%2e%2e",
    ];
    for target in targets {
        let request = format!("GET {target} HTTP/1.1\r\nHost: proxy\r\nConnection: close\r\n\r\n");
        let response = raw_exchange(w.proxy.proxy, request.as_bytes());
        // Encoded slashes and dots are refused in the path (the path gate), never in the query.
        assert!(matches!(raw_status(&response), 200 | 404), "{response}");
    }
    let seen: Vec<String> = w.sandbox.requests().into_iter().map(|r| r.target).collect();
    assert_eq!(seen, targets);
    assert_arrived_over(&w.sandbox, transport);
}

/// A JSON POST reaches the stand-in byte for byte, and its answer comes back whole.
async fn post_bodies_arrive_intact(transport: Transport) {
    let w = World::build().over(transport).start().await;
    let body = r#"{"properties":{"email":"new@example.com","firstname":"Nova","lastname":"Å"}}"#;
    let response = client()
        .post(w.proxy.url("/crm/v3/objects/contacts"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let created: serde_json::Value = response.json().await.unwrap();
    assert_eq!(created["properties"]["lastname"], "Å");
    let seen = &w.sandbox.requests()[0];
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.body, body.as_bytes());
    assert_eq!(seen.headers["content-type"], "application/json");
    assert_eq!(seen.bearer(), Some(TOKEN_A));
    assert_arrived_over(&w.sandbox, transport);
}

async fn large_post_body_streams_intact(transport: Transport) {
    let w = World::build().over(transport).start().await;
    let body: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    let expected = hex::encode(Sha256::digest(&body));
    let response = w.proxy.post("/__sandbox/echo", body).await;
    assert_eq!(response.status(), 200);
    let seen = &w.sandbox.requests()[0];
    assert_eq!(seen.body_len, 3 * 1024 * 1024);
    assert_eq!(seen.body_sha256, expected);

    // A large download streams back whole too.
    let download = client()
        .get(w.proxy.url("/__sandbox/bytes/5000000"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(download.len(), 5_000_000);
    assert_arrived_over(&w.sandbox, transport);
}

async fn hop_by_hop_headers_are_dropped_both_ways(transport: Transport) {
    let w = World::build().over(transport).start().await;
    let request = "GET /__sandbox/hop HTTP/1.1\r\nHost: proxy\r\nConnection: close, X-Named-Hop\r\n\
X-Named-Hop: 1\r\nKeep-Alive: timeout=5\r\nProxy-Authorization: Basic c2VjcmV0\r\nProxy-Connection: keep-alive\r\n\
TE: trailers\r\nX-HubSpot-Client: kept\r\nAccept-Encoding: gzip\r\n\r\n";
    let response = raw_exchange(w.proxy.proxy, request.as_bytes()).to_ascii_lowercase();
    assert_eq!(raw_status(&response), 200, "{response}");
    for gone in ["x-sandbox-hop", "keep-alive:", "proxy-authenticate"] {
        assert!(
            !response.contains(gone),
            "{gone} reached the client:\n{response}"
        );
    }
    assert!(response.contains("x-hubspot-kept: yes"));

    let seen = &w.sandbox.requests()[0];
    for gone in [
        "x-named-hop",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "connection",
    ] {
        assert!(
            !seen.headers.contains_key(gone),
            "{gone} reached upstream: {:?}",
            seen.headers
        );
    }
    assert_eq!(seen.headers["x-hubspot-client"], "kept");
    assert_eq!(seen.headers["accept-encoding"], "gzip");
    assert_arrived_over(&w.sandbox, transport);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_statuses_pass_through_with_body_and_headers() {
    // Resends off: each status must come back as HubSpot's first answer, not after retries.
    let w = World::build()
        .rate_limit("per_ten_seconds = 0\nmax_retries_429 = 0\nmax_retries_5xx = 0")
        .start()
        .await;
    for code in [201u16, 401, 403, 429, 500, 503] {
        let before = w.sandbox.request_count();
        let response = w
            .proxy
            .post(&format!("/__sandbox/status/{code}"), "{}")
            .await;
        assert_eq!(w.sandbox.request_count(), before + 1, "{code} was resent");
        assert_eq!(response.status().as_u16(), code);
        assert_eq!(
            response.headers()["x-sandbox-status"],
            code.to_string().as_str()
        );
        assert!(response.headers().contains_key("x-hubspot-correlation-id"));
        assert!(!response.headers().contains_key("x-auth-proxy-error"));
        let body: serde_json::Value = response.json().await.unwrap();
        if code == 429 {
            assert_eq!(body["policyName"], "TEN_SECONDLY_ROLLING");
        } else if code >= 400 {
            assert_eq!(body["category"], "SANDBOX_STATUS");
        } else {
            assert_eq!(body["status"], 201);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_file_rotation_under_load_fails_nothing() {
    let w = World::build().run(Run::process()).start().await;
    w.sandbox.accept_token(TOKEN_B); // HubSpot keeps a rotated token valid for a while.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers = load_until(&w.proxy.url("/crm/v3/objects/contacts"), 8, &stop);
    let saw = |token: &'static str| {
        let sandbox = &w.sandbox;
        move || {
            (sandbox
                .requests()
                .last()
                .and_then(|r| r.bearer().map(str::to_owned))
                .as_deref()
                == Some(token))
            .then_some(())
        }
    };
    w.scratch.replace_atomically("token", TOKEN_B);
    eventually(
        Duration::from_secs(3),
        "token B in use after atomic rename",
        saw(TOKEN_B),
    )
    .await;
    std::fs::write(w.scratch.path("token"), format!("{TOKEN_A}\n")).unwrap();
    eventually(
        Duration::from_secs(3),
        "token A in use after in-place write",
        saw(TOKEN_A),
    )
    .await;
    // An empty file is a failed reload: the old token stays in use.
    std::fs::write(w.scratch.path("token"), "").unwrap();
    eventually(Duration::from_secs(3), "one reload error logged", || {
        w.proxy.log().contains("token reload failed").then_some(())
    })
    .await;
    let before = w.sandbox.request_count();
    eventually(Duration::from_secs(3), "more traffic", || {
        (w.sandbox.request_count() > before + 20).then_some(())
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for worker in workers {
        let statuses = worker.await.unwrap();
        total += statuses.len();
        assert!(
            statuses.iter().all(|s| *s == 200),
            "a request failed during rotation: {statuses:?}"
        );
    }
    assert!(total > 50, "load ran: {total}");
    let tail = w.sandbox.requests();
    assert_eq!(tail.last().unwrap().bearer(), Some(TOKEN_A));
    assert_eq!(w.proxy.log().matches("token reload failed").count(), 1);
    let metrics = w.proxy.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"hubspot_proxy_token_reloads_total{account="main",result="success"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        metric(
            &metrics,
            r#"hubspot_proxy_token_reloads_total{account="main",result="failure"}"#
        ),
        Some(1.0)
    );
    w.proxy.assert_log_free_of(&[TOKEN_A, TOKEN_B]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_token_file_at_once() {
    let w = World::build().run(Run::process()).start().await;
    // The watcher also polls the file once a second. Each rotation below is written right after
    // the previous swap, so without SIGHUP it would wait for the next tick, ~1 s away; with
    // SIGHUP it is read at once. Three in a row within 300 ms each cannot be the poll.
    let tokens = [TOKEN_B, TOKEN_A, TOKEN_B];
    for (n, token) in tokens.into_iter().enumerate() {
        w.sandbox.accept_token(token);
        w.scratch.replace_atomically("token", token);
        let signalled = std::time::Instant::now();
        w.proxy.signal("HUP");
        eventually(Duration::from_secs(2), "reload after SIGHUP", || {
            (w.proxy.log().matches("token reloaded").count() > n).then_some(())
        })
        .await;
        let took = signalled.elapsed();
        assert!(
            took < Duration::from_millis(300),
            "rotation {n} took {took:?}"
        );
        w.proxy.get("/crm/v3/objects/contacts").await;
        assert_eq!(w.sandbox.requests().last().unwrap().bearer(), Some(token));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_body_gets_413_and_never_reaches_upstream() {
    let w = World::build().server("max_body_bytes = 1024").start().await;
    // Declared by Content-Length: refused before any upstream call.
    let response = w.proxy.post("/__sandbox/echo", vec![b'a'; 2048]).await;
    assert_proxy_error(response, 413, "PROXY_BODY_TOO_LARGE").await;
    assert_eq!(w.sandbox.request_count(), 0);

    // Chunked, with no length: cut off while streaming, so HubSpot never gets a whole request.
    let chunk = "400\r\n".to_string() + &"b".repeat(1024) + "\r\n";
    let request = format!(
        "POST /__sandbox/echo HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{chunk}{chunk}0\r\n\r\n"
    );
    let response = raw_exchange(w.proxy.proxy, request.as_bytes());
    assert_eq!(raw_status(&response), 413, "{response}");
    assert_eq!(w.sandbox.request_count(), 0);

    // Exactly at the limit is fine.
    let ok = w.proxy.post("/__sandbox/echo", vec![b'c'; 1024]).await;
    assert_eq!(ok.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_never_reaches_another_host() {
    let w = World::build().start().await;
    let elsewhere = Sandbox::start().await.unwrap();
    elsewhere.accept_token(TOKEN_A);
    let request = format!(
        "GET http://{}/__sandbox/echo?x=1 HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        elsewhere.addr(),
        elsewhere.addr()
    );
    let response = raw_exchange(w.proxy.proxy, request.as_bytes());
    // Served, by HubSpot (the configured upstream): the stand-in's echo, not a refusal.
    assert_eq!(raw_status(&response), 200, "{response}");
    assert_eq!(
        elsewhere.request_count(),
        0,
        "the proxy reached another host"
    );
    // It went to HubSpot (the configured upstream) instead, with HubSpot's Host.
    let seen = w.sandbox.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].target, "/__sandbox/echo?x=1");
    assert_eq!(seen[0].headers["host"], w.sandbox.addr().to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_is_refused() {
    let w = World::build().start().await;
    let request = format!(
        "CONNECT {0} HTTP/1.1\r\nHost: {0}\r\n\r\n",
        w.sandbox.addr()
    );
    let response = raw_response(w.proxy.proxy, request.as_bytes());
    assert_eq!(raw_status(&response), 405, "{response}");
    assert!(response.contains("PROXY_METHOD_NOT_ALLOWED"));
    assert_eq!(w.sandbox.request_count(), 0);
}

/// A TLS upstream whose certificate the proxy does not trust is refused, named as a TLS fault,
/// and nothing reaches it: over h2's single dial as over the HTTP/1.1 pool.
async fn untrusted_upstream_certificate_is_502_tls(transport: Transport) {
    // No ca_file: the stand-in's throwaway CA is not among the webpki roots.
    let w = World::build().over(transport).untrusted().start().await;
    let (sandbox, proxy) = (&w.sandbox, &w.proxy);
    let response = proxy.get("/crm/v3/objects/contacts").await;
    assert_proxy_error(response, 502, "PROXY_UPSTREAM_UNREACHABLE").await;
    assert_eq!(sandbox.request_count(), 0);
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"hubspot_proxy_upstream_errors_total{account="main",kind="tls"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_upstream_certificate_over_h2_is_502_tls() {
    untrusted_upstream_certificate_is_502_tls(Transport::TlsH2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_upstream_certificate_over_http1_is_502_tls() {
    untrusted_upstream_certificate_is_502_tls(Transport::TlsHttp1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_is_502_json() {
    let upstream = format!("http://127.0.0.1:{}", closed_port());
    let w = World::build().upstream(upstream).start().await;
    let proxy = &w.proxy;
    let response = proxy.get("/crm/v3/objects/contacts").await;
    assert_proxy_error(response, 502, "PROXY_UPSTREAM_UNREACHABLE").await;
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"hubspot_proxy_upstream_errors_total{account="main",kind="connect"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &metrics,
            r#"hubspot_proxy_requests_total{account="main",method="GET",status="502"}"#
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_slow_is_504_json() {
    let w = World::build().upstream_timeout_secs(1).start().await;
    let proxy = &w.proxy;
    let response = proxy.get("/__sandbox/slow/3000").await;
    assert_eq!(response.status(), 504);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["category"], "PROXY_UPSTREAM_TIMEOUT");
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"hubspot_proxy_upstream_errors_total{account="main",kind="timeout"}"#
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let mut w = World::build().run(Run::process()).start().await;
    let mut in_flight = Vec::new();
    for _ in 0..5 {
        let url = w.proxy.url("/__sandbox/slow/1500");
        in_flight.push(tokio::spawn(async move {
            client().get(url).send().await.map(|r| r.status().as_u16())
        }));
    }
    eventually(Duration::from_secs(5), "requests reach upstream", || {
        (w.sandbox.request_count() == 5).then_some(())
    })
    .await;
    let ready = w.proxy.admin_get("/readyz").await;
    assert_eq!(ready.status(), 200);
    w.proxy.signal("TERM");
    let admin = w.proxy.admin_url("/readyz");
    let mut not_ready = false;
    for _ in 0..50 {
        if let Ok(r) = client().get(&admin).send().await {
            if r.status() == 503 {
                not_ready = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(not_ready, "/readyz did not turn 503 while draining");
    for request in in_flight {
        assert_eq!(request.await.unwrap().unwrap(), 200);
    }
    let status = w.proxy.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_and_metrics_report_real_state() {
    let w = World::build().start().await;
    let ready = w.proxy.admin_get("/readyz").await;
    assert_eq!(ready.status(), 200);
    assert_eq!(w.proxy.admin_get("/healthz").await.status(), 200);
    for _ in 0..3 {
        w.proxy.get("/crm/v3/objects/contacts").await;
    }
    client()
        .post(w.proxy.url("/__sandbox/status/429"))
        .send()
        .await
        .unwrap();
    let text = w.proxy.metrics().await;
    assert_eq!(
        metric(
            &text,
            r#"hubspot_proxy_requests_total{account="main",method="GET",status="200"}"#
        ),
        Some(3.0)
    );
    assert_eq!(
        metric(
            &text,
            r#"hubspot_proxy_requests_total{account="main",method="POST",status="429"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            r#"hubspot_proxy_request_duration_seconds_count{account="main"}"#
        ),
        Some(4.0)
    );
    assert_eq!(metric(&text, "hubspot_proxy_inflight_requests"), Some(0.0));
    assert_eq!(
        metric(&text, r#"hubspot_proxy_build_info{version="0.1.0"}"#),
        Some(1.0)
    );
    assert!(text.contains("process_resident_memory_bytes"));
    assert!(!text.contains("/crm/"), "a path leaked into metric labels");
    assert!(!text.contains(TOKEN_A));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_headers_get_431_and_slow_headers_are_cut() {
    let w = World::build()
        .server("header_read_timeout_secs = 1")
        .start()
        .await;
    let mut request =
        "GET /__sandbox/echo HTTP/1.1\r\nHost: p\r\nConnection: close\r\n".to_string();
    for i in 0..150 {
        request.push_str(&format!("X-Filler-{i}: v\r\n"));
    }
    request.push_str("\r\n");
    let response = raw_exchange(w.proxy.proxy, request.as_bytes());
    assert_eq!(raw_status(&response), 431, "{response}");
    assert!(response.contains("PROXY_HEADERS_TOO_LARGE"));
    assert_eq!(w.sandbox.request_count(), 0);

    // A client that never finishes its headers is disconnected by the header read timeout.
    let started = std::time::Instant::now();
    let response = raw_exchange(w.proxy.proxy, b"GET / HTTP/1.1\r\nHost: p\r\n");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "slow client held the connection"
    );
    assert!(!response.contains("200 OK"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_clients_are_served() {
    let w = World::build().start().await;
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = h2
        .get(w.proxy.url("/crm/v3/objects/contacts/102"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    assert_eq!(w.sandbox.requests()[0].bearer(), Some(TOKEN_A));
}

/// A single-worker proxy allowed `slots` upstream requests at once, each within `timeout_secs`.
async fn one_worker_with_upstream_slots(slots: u32, timeout_secs: u32) -> World {
    let upstream = format!("timeout_secs = {timeout_secs}\nmax_connections = {slots}");
    World::build()
        .server("workers = 1")
        .edit(move |config| config.replace("timeout_secs = 5", &upstream))
        .start()
        .await
}

/// Six slow requests at once through a proxy allowed two upstream requests: HubSpot never
/// sees more than two at a time, and all six are answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_concurrency_is_bounded_by_max_connections() {
    let w = one_worker_with_upstream_slots(2, 10).await;
    let client = client();
    let calls = (0..6).map(|_| client.get(w.proxy.url("/__sandbox/slow/300")).send());
    for response in join_all(calls).await {
        assert_eq!(response.unwrap().status(), 200);
    }
    assert_eq!(w.sandbox.most_concurrent_slow(), 2);
    // Four of the six found both slots taken; every slot is free again once the bodies are done.
    let metrics = w.proxy.metrics().await;
    let waits = metric(&metrics, "hubspot_proxy_upstream_slot_waits_total");
    assert!(waits.is_some_and(|n| n >= 4.0), "{metrics}");
    let in_use = "hubspot_proxy_upstream_slots_in_use";
    metric_becomes(&w.proxy, in_use, 0.0, Duration::from_secs(5)).await;
}

/// A request still waiting for an upstream slot at its deadline gets the proxy's 504.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_an_upstream_slot_ends_at_the_deadline() {
    let w = one_worker_with_upstream_slots(1, 1).await;
    let client = client();
    let calls = (0..2).map(|_| client.get(w.proxy.url("/__sandbox/slow/600")).send());
    let mut statuses: Vec<u16> = Vec::new();
    for response in join_all(calls).await {
        let response = response.unwrap();
        statuses.push(response.status().as_u16());
        if response.status() == 504 {
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body["category"], "PROXY_UPSTREAM_TIMEOUT");
        }
    }
    statuses.sort();
    assert_eq!(statuses, [200, 504]);
    assert_eq!(w.sandbox.most_concurrent_slow(), 1);
}

/// One admin GET that must answer 200 within `limit`.
async fn admin_answers(w: &World, path: &str, limit: Duration) {
    let started = std::time::Instant::now();
    let response = tokio::time::timeout(limit, client().get(w.proxy.admin_url(path)).send())
        .await
        .unwrap_or_else(|_| panic!("{path} did not answer within {limit:?}"))
        .unwrap();
    assert_eq!(response.status(), 200, "{path}");
    assert!(started.elapsed() < limit);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_token_file_blocks_neither_admin_nor_shutdown() {
    let mut w = World::build()
        .edit(|c| c.replace("shutdown_grace_secs = 10", "shutdown_grace_secs = 2"))
        .run(Run::process())
        .start()
        .await;
    // A FIFO nobody writes stands in for a hung network or FUSE secret mount: opening it blocks.
    let token = w.scratch.path("token");
    std::fs::remove_file(&token).unwrap();
    // The missing file is logged first: the hang that follows is a new reason, and must be
    // logged too (one line per reason, not one per poll).
    eventually(
        Duration::from_secs(15),
        "the missing-file error logged",
        || w.proxy.log().contains("entity not found").then_some(()),
    )
    .await;
    let made = std::process::Command::new("mkfifo")
        .arg(&token)
        .status()
        .unwrap();
    assert!(made.success());
    w.proxy.signal("HUP");
    let limit = Duration::from_secs(2);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !w.proxy.log().contains("took longer than") {
        assert!(
            std::time::Instant::now() < deadline,
            "no read timeout logged:\n{}",
            w.proxy.log()
        );
        admin_answers(&w, "/healthz", limit).await;
        admin_answers(&w, "/metrics", limit).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The old token is still served, and the hang is logged once, not once a second: two
    // failures in all, the missing file and the hang.
    for _ in 0..3 {
        let response = w.proxy.get("/crm/v3/objects/contacts").await;
        assert_eq!(response.status(), 200);
        admin_answers(&w, "/healthz", limit).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(w.sandbox.requests().last().unwrap().bearer(), Some(TOKEN_A));
    let log = w.proxy.log();
    assert_eq!(log.matches("token reload failed").count(), 2, "{log}");
    w.proxy.signal("TERM");
    let status = w.proxy.wait_exit(Duration::from_secs(2 + 3)).await;
    assert!(status.success(), "{status:?}");
}

/// Three workers share four upstream slots exactly (2 + 1 + 1), not four rounded up each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_slots_are_split_exactly_between_workers() {
    let w = World::build()
        .server("workers = 3")
        .edit(|config| config.replace("timeout_secs = 5", "timeout_secs = 20\nmax_connections = 4"))
        .start()
        .await;
    let calls = (0..24).map(|_| {
        // One client per call: one connection each, spread over the workers.
        let request = client().get(w.proxy.url("/__sandbox/slow/300")).send();
        async move { request.await.unwrap().status().as_u16() }
    });
    for status in join_all(calls).await {
        assert_eq!(status, 200);
    }
    let most = w.sandbox.most_concurrent_slow();
    assert!(most <= 4, "{most} requests were in flight upstream at once");
}
