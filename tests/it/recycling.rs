//! HubSpot's edge recycles h2 connections (GOAWAY) and HTTP/1.1 ones (`Connection: close`):
//! through the real binary, no request may fail for it, none may be processed twice, and a
//! recycled connection is replaced by one new connection, not one per waiting request.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::support::*;

const REQUESTS: usize = 3_000;
const RECYCLE_AFTER: usize = 100;

struct Run {
    failed: Vec<String>,
    processed: usize,
    connections: usize,
    /// `hubspot_proxy_retries_total{reason="unprocessed"}`: present even when 0.
    resent: Option<f64>,
}

/// Sends `REQUESTS` requests, half GET and half POST, from `clients` concurrent clients through
/// the proxy to a stand-in that recycles each connection after `RECYCLE_AFTER` requests.
async fn recycling_run(transport: Transport, clients: usize) -> Run {
    let w = World::build()
        .over(transport)
        .recycle_after(RECYCLE_AFTER)
        .start()
        .await;
    let (sandbox, proxy) = (&w.sandbox, &w.proxy);

    let next = Arc::new(AtomicUsize::new(0));
    let workers = (0..clients).map(|_| {
        let (next, get_url, post_url) = (
            next.clone(),
            proxy.url("/crm/v3/objects/contacts/101"),
            proxy.url("/__sandbox/echo"),
        );
        async move {
            let http = client();
            let mut failed = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::SeqCst);
                if n >= REQUESTS {
                    return failed;
                }
                let request = if n % 2 == 0 {
                    http.get(&get_url)
                } else {
                    http.post(&post_url).body(format!("{{\"n\":{n}}}"))
                };
                match request.send().await {
                    Ok(r) if r.status().is_success() => {
                        if let Err(e) = r.bytes().await {
                            failed.push(format!("#{n}: body: {e}"));
                        }
                    }
                    Ok(r) => {
                        let status = r.status();
                        failed.push(format!(
                            "#{n}: {status} {}",
                            r.text().await.unwrap_or_default()
                        ));
                    }
                    Err(e) => failed.push(format!("#{n}: {e}")),
                }
            }
        }
    });
    let failed = join_all(workers).await.into_iter().flatten().collect();
    let metrics = proxy.metrics().await;
    Run {
        failed,
        processed: sandbox.request_count(),
        connections: sandbox.connections_accepted(),
        resent: metric(
            &metrics,
            r#"hubspot_proxy_retries_total{account="main",reason="unprocessed"}"#,
        ),
    }
}

fn assert_clean(run: &Run, what: &str) {
    eprintln!(
        "{what}: {} failed, {} processed, {} connections accepted, {} resent",
        run.failed.len(),
        run.processed,
        run.connections,
        run.resent
            .expect("the unprocessed-resend series is exported")
    );
    assert!(
        run.failed.is_empty(),
        "{what}: {} of {REQUESTS} failed, e.g. {:?}",
        run.failed.len(),
        &run.failed[..run.failed.len().min(5)]
    );
    assert_eq!(
        run.processed, REQUESTS,
        "{what}: each request processed once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_goaway_every_100_requests_fails_nothing_at_32_clients() {
    let run = recycling_run(Transport::TlsH2, 32).await;
    assert_clean(&run, "h2, 32 clients");
    assert_one_dial_per_recycle(&run, "h2, 32 clients");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_goaway_every_100_requests_fails_nothing_at_256_clients() {
    let run = recycling_run(Transport::TlsH2, 256).await;
    assert_clean(&run, "h2, 256 clients");
    assert_one_dial_per_recycle(&run, "h2, 256 clients");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_close_every_100_requests_fails_nothing() {
    let run = recycling_run(Transport::TlsHttp1, 64).await;
    assert_clean(&run, "http/1.1, 64 clients");
}

/// Each recycled h2 connection is replaced by one dial per proxy worker, not one per waiting
/// request: a connection serves `RECYCLE_AFTER` requests, plus a little slack for the workers'
/// connections that are open when the run ends.
fn assert_one_dial_per_recycle(run: &Run, what: &str) {
    let most = REQUESTS / RECYCLE_AFTER + 6;
    assert!(
        run.connections <= most,
        "{what}: {} upstream connections for {REQUESTS} requests recycled every {RECYCLE_AFTER} (at most {most} expected)",
        run.connections
    );
}

/// Requests waiting on a dial that fails share its answer: an upstream whose TLS handshakes
/// hang for a second then fail must not cost one second per queued request, one after another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_share_a_failed_dial() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("https://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                drop(stream);
            });
        }
    });
    let w = World::build()
        .upstream(upstream)
        .server("workers = 1")
        .start()
        .await;
    let proxy = &w.proxy;
    let url = proxy.url("/crm/v3/objects/contacts");
    let started = std::time::Instant::now();
    let statuses = join_all((0..16).map(|_| {
        let url = url.clone();
        async move { client().get(&url).send().await.unwrap().status().as_u16() }
    }))
    .await;
    assert!(statuses.iter().all(|s| *s == 502), "{statuses:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "16 waiters took {:?}: they dialled one after another",
        started.elapsed()
    );
    // One dial for the 16 waiters; the rest are the static token's portal check (one at
    // startup, then retries after 1 s and 3 s), which dials the same upstream on its own.
    let dials = accepted.load(Ordering::SeqCst);
    assert!(dials <= 4, "one dial for all waiters, saw {dials}");
}
