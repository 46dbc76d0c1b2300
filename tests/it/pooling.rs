//! HTTP/1.1 connections to HubSpot: each worker keeps its own, reuses one only between whole
//! exchanges, and closes those idle past `upstream.pool_idle_timeout_secs`.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

/// The static token's portal check dials the stand-in on its own: wait until `/status` shows
/// it done, so the connection counts below are the data plane's alone.
async fn portal_checked(proxy: &TestProxy) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = json(client().get(proxy.admin_url("/status"))).await;
        if status["accounts"][0]["portal"]["hub_id"].is_number() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the portal check did not finish: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn json(request: reqwest::RequestBuilder) -> serde_json::Value {
    request.send().await.unwrap().json().await.unwrap()
}

async fn contact(http: &reqwest::Client, url: &str) {
    let response = http.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["id"], "101", "{body}");
}

/// Sequential requests on one worker go out on the connection the first one opened.
async fn sequential_requests_reuse_one_connection(transport: Transport) {
    let w = World::build()
        .over(transport)
        .server("workers = 1")
        .start()
        .await;
    let (http, url) = (client(), w.proxy.url("/crm/v3/objects/contacts/101"));
    portal_checked(&w.proxy).await;
    contact(&http, &url).await;
    let before = w.sandbox.connections_accepted();
    for _ in 0..30 {
        contact(&http, &url).await;
    }
    let dialled = w.sandbox.connections_accepted() - before;
    assert_eq!(
        dialled, 0,
        "{transport:?}: 30 sequential requests opened {dialled} new upstream connections"
    );
    assert_arrived_over(&w.sandbox, transport);
}

#[tokio::test]
async fn sequential_requests_reuse_one_connection_plain() {
    sequential_requests_reuse_one_connection(Transport::Plain).await;
}

#[tokio::test]
async fn sequential_requests_reuse_one_connection_over_tls_http1() {
    sequential_requests_reuse_one_connection(Transport::TlsHttp1).await;
}

/// A client that leaves mid-body leaves its upstream connection mid-message: that connection
/// is not reused, and the requests after it get their own answers.
#[tokio::test]
async fn an_answer_left_half_read_does_not_leak_into_the_next_exchange() {
    let w = World::build().server("workers = 1").start().await;
    let addr = w.proxy.url("").trim_start_matches("http://").to_string();
    let mut raw = tokio::net::TcpStream::connect(&addr).await.unwrap();
    raw.write_all(b"GET /__sandbox/bytes/8000000 HTTP/1.1\r\nHost: proxy\r\n\r\n")
        .await
        .unwrap();
    let mut first = vec![0u8; 64 * 1024];
    let read = tokio::time::timeout(Duration::from_secs(10), raw.read(&mut first))
        .await
        .expect("the answer starts")
        .unwrap();
    assert!(String::from_utf8_lossy(&first[..read]).starts_with("HTTP/1.1 200"));
    drop(raw);

    let (http, url) = (client(), w.proxy.url("/crm/v3/objects/contacts/101"));
    for _ in 0..10 {
        contact(&http, &url).await;
    }
    let echo = json(http.post(w.proxy.url("/__sandbox/echo")).body("{\"n\":1}")).await;
    assert_eq!(echo["body_len"], 7, "{echo}");
}

/// An idle connection is reused within `pool_idle_timeout_secs` and closed once it passes, with
/// no request needed to notice; the next request opens a new one.
#[tokio::test]
async fn idle_connections_close_after_the_pool_idle_timeout() {
    let w = World::build()
        .server("workers = 1")
        .edit(|c| {
            c.replacen(
                "connect_timeout_ms = 1000",
                "connect_timeout_ms = 1000\npool_idle_timeout_secs = 2",
                1,
            )
        })
        .start()
        .await;
    let (http, url) = (client(), w.proxy.url("/crm/v3/objects/contacts/101"));
    portal_checked(&w.proxy).await;
    let open_before = w.sandbox.connections_open();
    contact(&http, &url).await;
    let accepted = w.sandbox.connections_accepted();
    contact(&http, &url).await;
    assert_eq!(
        w.sandbox.connections_accepted(),
        accepted,
        "reused within the timeout"
    );
    assert_eq!(w.sandbox.connections_open(), open_before + 1);
    eventually(Duration::from_secs(8), "the idle connection closes", || {
        (w.sandbox.connections_open() == open_before).then_some(())
    })
    .await;
    contact(&http, &url).await;
    assert_eq!(w.sandbox.connections_accepted(), accepted + 1);
}
