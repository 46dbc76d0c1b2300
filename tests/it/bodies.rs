//! Bodies through the real binary: upstream framing conflicts, client body faults (malformed,
//! aborted, stalled) on both the streamed and the kept path, and the process-wide replay budget.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A fake upstream that answers every request with `response`, byte for byte, then closes.
async fn raw_upstream(response: &'static [u8]) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                // The proxy's request has no body (GET): the head is all there is to read.
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream.write_all(response).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

/// RFC 9112 §6.3: Transfer-Encoding overrides Content-Length. An upstream answer carrying both
/// (length 5, a 13-byte chunked body) must reach the client whole, never cut to 5 bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_upstream_framing_is_not_forwarded() {
    let upstream = raw_upstream(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\
Transfer-Encoding: chunked\r\nConnection: close\r\n\r\nd\r\nhello, world!\r\n0\r\n\r\n",
    )
    .await;
    let w = World::build()
        .upstream(format!("http://{upstream}"))
        .start()
        .await;
    let proxy = &w.proxy;
    let response = raw_exchange(
        proxy.proxy,
        b"GET /crm/v3/objects/contacts HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(raw_status(&response), 200, "{response}");
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let head = head.to_ascii_lowercase();
    assert!(
        !head.contains("content-length: 5"),
        "stale length forwarded:\n{response}"
    );
    // Whatever framing the proxy chose, the full 13 bytes arrive and nothing contradicts them.
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        assert!(head.contains("content-length: 13"), "{response}");
        body.to_string()
    };
    assert_eq!(body, "hello, world!");
    metric_becomes(
        proxy,
        "hubspot_proxy_upstream_framing_conflicts_total",
        1.0,
        Duration::from_secs(5),
    )
    .await;
}

/// Decodes a chunked body (test helper: trusts its input).
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").expect("chunk size line");
        let size = usize::from_str_radix(size.trim(), 16).expect("hex chunk size");
        if size == 0 {
            return out;
        }
        out.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
}

/// What a raw client saw: the server's bytes until it closed, and how long that took.
struct Seen {
    response: String,
    elapsed: Duration,
}

/// Sends `request`; with `half_close`, then ends its side of the connection as a client that
/// gives up mid-upload does. Reads until the server closes, or 15 s pass.
fn raw_client(addr: SocketAddr, request: &[u8], half_close: bool) -> Seen {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    stream.write_all(request).unwrap();
    if half_close {
        stream.shutdown(Shutdown::Write).unwrap();
    }
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    Seen {
        response: String::from_utf8_lossy(&out).into_owned(),
        elapsed: started.elapsed(),
    }
}

fn category(response: &str) -> String {
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let json: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    json["category"].as_str().unwrap_or("").to_string()
}

/// A proxy in front of the stand-in that cuts a body idle for 1 s; HubSpot's deadline is
/// far later, so a 408 can only come from the body timer.
async fn body_world() -> World {
    World::build()
        .server("body_read_timeout_secs = 1")
        .upstream_timeout_secs(20)
        .start()
        .await
}

/// Client body faults are the client's: 400 or 408, counted by kind, never an upstream error.
async fn assert_client_fault(proxy: &TestProxy, seen: &Seen, status: u16, kind: &str) {
    let response = &seen.response;
    assert_eq!(raw_status(response), status, "{response}");
    let want = if status == 408 {
        "PROXY_REQUEST_TIMEOUT"
    } else {
        "PROXY_BAD_REQUEST"
    };
    assert_eq!(category(response), want, "{response}");
    let series = format!("hubspot_proxy_client_body_errors_total{{kind=\"{kind}\"}}");
    metric_becomes(proxy, &series, 1.0, Duration::from_secs(5)).await;
    let metrics = proxy.metrics().await;
    for kind in ["protocol", "timeout", "connect"] {
        let series =
            format!("hubspot_proxy_upstream_errors_total{{account=\"main\",kind=\"{kind}\"}}");
        assert_eq!(metric(&metrics, &series).unwrap_or(0.0), 0.0, "{series}");
    }
}

const CHUNKED_HEAD: &str =
    "POST /__sandbox/echo HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_chunked_body_is_the_clients_fault() {
    let World { proxy, .. } = &body_world().await;
    let request = format!("{CHUNKED_HEAD}5\r\nhello\r\nzz\r\nbad\r\n0\r\n\r\n");
    let seen = raw_client(proxy.proxy, request.as_bytes(), false);
    assert_client_fault(proxy, &seen, 400, "malformed").await;
}

/// Streamed path (chunked, no length): the client sends one chunk, then nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_streamed_body_gets_408_after_the_idle_timeout() {
    let World { proxy, .. } = &body_world().await;
    let request = format!("{CHUNKED_HEAD}5\r\nhello\r\n");
    let seen = raw_client(proxy.proxy, request.as_bytes(), false);
    assert_client_fault(proxy, &seen, 408, "stalled").await;
    assert!(seen.elapsed < Duration::from_secs(5), "{:?}", seen.elapsed);
}

/// Kept path (small declared length, read whole for replay): the same answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_kept_body_gets_408_after_the_idle_timeout() {
    let World { proxy, sandbox, .. } = &body_world().await;
    let request =
        "POST /__sandbox/echo HTTP/1.1\r\nHost: p\r\nContent-Length: 100\r\n\r\nonly ten b";
    let seen = raw_client(proxy.proxy, request.as_bytes(), false);
    assert_client_fault(proxy, &seen, 408, "stalled").await;
    assert!(seen.elapsed < Duration::from_secs(5), "{:?}", seen.elapsed);
    assert_eq!(sandbox.request_count(), 0, "nothing goes upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_leaving_mid_upload_is_the_clients_fault() {
    let World { proxy, .. } = &body_world().await;
    // Kept path: the declared length never arrives.
    let request =
        "POST /__sandbox/echo HTTP/1.1\r\nHost: p\r\nContent-Length: 100\r\n\r\nonly ten b";
    let seen = raw_client(proxy.proxy, request.as_bytes(), true);
    assert_client_fault(proxy, &seen, 400, "aborted").await;
    // Streamed path: the chunked body never ends.
    let request = format!("{CHUNKED_HEAD}5\r\nhello\r\n");
    let seen = raw_client(proxy.proxy, request.as_bytes(), true);
    assert_eq!(raw_status(&seen.response), 400, "{}", seen.response);
    let series = "hubspot_proxy_client_body_errors_total{kind=\"aborted\"}";
    metric_becomes(proxy, series, 2.0, Duration::from_secs(5)).await;
}

/// `server.max_replay_buffer_bytes = 1000` and two 600-byte POSTs at once: only one body fits
/// the budget. Both first sends get HubSpot's retryable 429; the one with a replay copy is
/// resent and succeeds, the other streamed without a copy and gets HubSpot's 429 as is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_budget_bounds_bodies_kept_across_workers() {
    // Two workers: the budget is the process's, not each worker's.
    let w = World::build()
        .server("workers = 2\nmax_replay_buffer_bytes = 1000")
        .start()
        .await;
    let (sandbox, proxy) = (&w.sandbox, &w.proxy);
    sandbox.inject(429, Some("TEN_SECONDLY_ROLLING"));
    sandbox.inject(429, Some("TEN_SECONDLY_ROLLING"));
    let client = client();
    // The kept copy is held through the 429's one-second wait, so the two overlap.
    let calls = (0..2).map(|_| {
        client
            .post(proxy.url("/__sandbox/echo"))
            .body(vec![b'r'; 600])
            .send()
    });
    let mut statuses: Vec<u16> = join_all(calls)
        .await
        .into_iter()
        .map(|r| r.unwrap().status().as_u16())
        .collect();
    statuses.sort();
    assert_eq!(statuses, [200, 429]);
    let seen = sandbox.requests();
    assert_eq!(seen.len(), 3, "two first sends and one resend");
    assert!(seen.iter().all(|r| r.body_len == 600));
    let metrics = proxy.metrics().await;
    let exhausted = "hubspot_proxy_replay_budget_exhausted_total";
    assert_eq!(metric(&metrics, exhausted), Some(1.0), "{metrics}");
    metric_becomes(
        proxy,
        "hubspot_proxy_replay_buffer_bytes",
        0.0,
        Duration::from_secs(5),
    )
    .await;
}
