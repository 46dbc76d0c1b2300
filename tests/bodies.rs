//! Bodies through the real binary: upstream framing conflicts, client body faults (malformed,
//! aborted, stalled) on both the streamed and the kept path, and the process-wide replay budget.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::*;
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

/// A proxy with one static account in front of `upstream`.
async fn proxy_for(upstream: &str, extra_server: &str) -> (Scratch, ProxyProcess) {
    let scratch = Scratch::new();
    let token = scratch.write("token", &format!("{TOKEN_A}\n"));
    let proxy = ProxyProcess::start(&static_config(upstream, &token, extra_server)).await;
    (scratch, proxy)
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
    let (_scratch, proxy) = proxy_for(&format!("http://{upstream}"), "").await;
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
        &proxy,
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
