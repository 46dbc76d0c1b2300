//! Shaping benchmark (issue: stay under HubSpot's rate limits). Not a test: it prints figures.
//!
//!   cargo run --release --example shaping
//!
//! The stand-in HubSpot enforces 100 requests per rolling 10 s; 20 clients offer 3x that budget
//! for 30 s through the proxy (per_ten_seconds = 100, max_queue_wait_ms = 10000).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hubspot_auth_proxy::sandbox::Sandbox;

mod common;

const CLIENTS: u64 = 20;
const RUN: Duration = Duration::from_secs(30);
const BUDGET_PER_10S: u64 = 100;
const MAX_WAIT_MS: u64 = 10_000;

/// The answers the clients saw, and the slowest of them.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    local_429: AtomicU64,
    other: AtomicU64,
    slowest_ms: AtomicU64,
}

impl Tally {
    fn record(&self, status: u16, took: Duration) {
        self.slowest_ms
            .fetch_max(took.as_millis() as u64, Ordering::Relaxed);
        let counter = match status {
            200 => &self.ok,
            429 => &self.local_429,
            _ => &self.other,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[tokio::main]
async fn main() {
    let sandbox = Sandbox::start().await.expect("stand-in");
    sandbox.accept_token("pat-na1-bench");
    sandbox.limits().configure(BUDGET_PER_10S, 5, true);
    let settings = common::shaped_settings(
        &sandbox,
        "pat-na1-bench",
        BUDGET_PER_10S,
        &format!("max_queue_wait_ms = {MAX_WAIT_MS}\n"),
    );
    let proxy = hubspot_auth_proxy::start(settings).await.expect("proxy");
    let url = format!("http://{}/crm/v3/objects/contacts", proxy.proxy_addr());

    let tally = Arc::new(Tally::default());
    // 3x the budget: 30 requests/s in all, 1.5/s per client, paced, each on its own task.
    let interval = Duration::from_secs_f64(CLIENTS as f64 / (3.0 * BUDGET_PER_10S as f64 / 10.0));
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (client, url, tally) = (client.clone(), url.clone(), tally.clone());
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tokio::time::sleep(interval.mul_f64(c as f64 / CLIENTS as f64)).await;
            let mut inflight = Vec::new();
            while started.elapsed() < RUN {
                tick.tick().await;
                let (client, url, tally) = (client.clone(), url.clone(), tally.clone());
                inflight.push(tokio::spawn(async move {
                    let sent = Instant::now();
                    let status = client
                        .get(&url)
                        .send()
                        .await
                        .map(|r| r.status().as_u16())
                        .unwrap_or(0);
                    tally.record(status, sent.elapsed());
                }));
            }
            for t in inflight {
                let _ = t.await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed();
    let Tally {
        ok,
        local_429,
        other,
        slowest_ms,
    } = &*tally;
    let ok = ok.load(Ordering::Relaxed);
    let upstream = sandbox.request_count() as u64;
    let upstream_429 = sandbox.limits().rejected();
    let budget = BUDGET_PER_10S as f64 / 10.0;
    println!(
        "offered:            {} requests in {:?} ({} clients, 3x budget)",
        ok + local_429.load(Ordering::Relaxed) + other.load(Ordering::Relaxed),
        RUN,
        CLIENTS
    );
    println!("answered 200:       {ok}");
    println!("proxy 429:          {}", local_429.load(Ordering::Relaxed));
    println!("other answers:      {}", other.load(Ordering::Relaxed));
    println!("upstream requests:  {upstream}");
    println!(
        "upstream 429s:      {upstream_429} ({:.2}% of upstream requests)",
        100.0 * upstream_429 as f64 / upstream.max(1) as f64
    );
    println!(
        "throughput:         {:.2} req/s over {:.1} s = {:.1}% of the {budget} req/s budget",
        ok as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
        100.0 * ok as f64 / elapsed.as_secs_f64() / budget
    );
    println!(
        "slowest answer:     {} ms (bound: max_queue_wait_ms = {MAX_WAIT_MS})",
        slowest_ms.load(Ordering::Relaxed)
    );
    proxy.shutdown().await;
}
