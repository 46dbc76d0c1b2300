//! Fleet benchmark (issue 16): is one budget shared by three replicas, and what does it cost?
//! Not a test: it prints figures for README and bench/results.md.
//!
//!   cargo run --example fleet            (needs redis-server on PATH; about 2.5 minutes)
//!
//! The stand-in HubSpot enforces 100 requests per rolling 10 s. Three replicas of one static
//! account (per_ten_seconds = 100) take 3x that budget for 60 s, round-robin, paced. With
//! `[fleet]`, Redis is killed 22.5 s in and restarted 15 s later. The same load then runs
//! without `[fleet]`, on a fresh stand-in.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hubspot_auth_proxy::config::Config;
use hubspot_auth_proxy::sandbox::Sandbox;
use hubspot_auth_proxy::settings::Settings;

mod common;

const BUDGET_PER_10S: u64 = 100;
const REPLICAS: usize = 3;
const RUN: Duration = Duration::from_secs(60);
const OUTAGE: (Duration, Duration) = (Duration::from_millis(22_500), Duration::from_millis(37_500));
const TOKEN: &str = "pat-na1-bench";

#[derive(Default)]
struct Tally {
    ok: u64,
    local_429: u64,
    other: u64,
}

struct Outcome {
    tally: Tally,
    upstream: u64,
    upstream_429: u64,
    token_calls: usize,
    elapsed: Duration,
    /// Per replica: the Redis call histogram (bucket upper bound s, cumulative count).
    redis_histograms: Vec<Vec<(f64, f64)>>,
}

struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = RedisServer { port, child: None };
        server.restart();
        server
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn restart(&mut self) {
        self.stop();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (apt-get install redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.connection().is_none() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn connection(&self) -> Option<redis::Connection> {
        let client = redis::Client::open(self.url()).ok()?;
        let mut c = client
            .get_connection_with_timeout(Duration::from_secs(1))
            .ok()?;
        redis::cmd("PING").query::<String>(&mut c).ok()?;
        Some(c)
    }

    fn used_memory(&self) -> String {
        let mut c = self.connection().expect("redis answers");
        let info: String = redis::cmd("INFO").arg("memory").query(&mut c).unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .unwrap_or("?")
            .trim()
            .to_string()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn settings(sandbox: &Sandbox, redis: Option<&str>) -> Settings {
    let fleet = redis
        .map(|url| format!("[fleet]\nredis_url = \"{url}\"\nnamespace = \"bench\"\n"))
        .unwrap_or_default();
    common::shaped_settings(sandbox, TOKEN, BUDGET_PER_10S, &fleet)
}

async fn run(redis: Option<&Mutex<RedisServer>>) -> Outcome {
    let sandbox = Sandbox::start().await.expect("stand-in");
    sandbox.accept_token(TOKEN);
    sandbox.limits().configure(BUDGET_PER_10S, 5, true);
    let url = redis.map(|r| r.lock().unwrap().url());
    let mut proxies = Vec::new();
    for _ in 0..REPLICAS {
        let proxy = hubspot_auth_proxy::start(settings(&sandbox, url.as_deref()))
            .await
            .expect("proxy");
        proxies.push(proxy);
    }
    let urls: Vec<String> = proxies
        .iter()
        .map(|p| format!("http://{}/crm/v3/objects/contacts", p.proxy_addr()))
        .collect();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let tally = Arc::new(Mutex::new(Tally::default()));
    // 3x the budget: 30 requests/s in all, each on its own task.
    let interval = Duration::from_secs_f64(1.0 / (3.0 * BUDGET_PER_10S as f64 / 10.0));
    let count = (RUN.as_secs_f64() / interval.as_secs_f64()) as u32;
    let started = Instant::now();
    let mut outage_done = (redis.is_none(), redis.is_none());
    let mut tasks = Vec::new();
    for i in 0..count {
        let at = started + interval * i;
        tokio::time::sleep_until(at.into()).await;
        if let Some(redis) = redis {
            if !outage_done.0 && started.elapsed() >= OUTAGE.0 {
                tokio::task::block_in_place(|| redis.lock().unwrap().stop());
                outage_done.0 = true;
            }
            if !outage_done.1 && started.elapsed() >= OUTAGE.1 {
                tokio::task::block_in_place(|| redis.lock().unwrap().restart());
                outage_done.1 = true;
            }
        }
        let request = client.get(&urls[i as usize % REPLICAS]);
        let tally = tally.clone();
        tasks.push(tokio::spawn(async move {
            let response = request.send().await;
            let (status, category) = match response {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let body: serde_json::Value = r.json().await.unwrap_or_default();
                    (status, body["category"].as_str().unwrap_or("").to_string())
                }
                Err(_) => (0, String::new()),
            };
            let mut tally = tally.lock().unwrap();
            match (status, category.as_str()) {
                (200..=299, _) => tally.ok += 1,
                (429, "PROXY_RATE_LIMITED") => tally.local_429 += 1,
                _ => tally.other += 1,
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let elapsed = started.elapsed();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut redis_histograms = Vec::new();
    for proxy in &proxies {
        let text = client
            .get(format!("http://{}/metrics", proxy.admin_addr()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        redis_histograms.push(histogram(
            &text,
            "hubspot_proxy_fleet_redis_duration_seconds_bucket",
        ));
    }
    for proxy in proxies {
        proxy.shutdown().await;
    }
    let tally = std::mem::take(&mut *tally.lock().unwrap());
    Outcome {
        tally,
        upstream: sandbox.request_count() as u64,
        upstream_429: sandbox.limits().rejected(),
        token_calls: sandbox.oauth().issued_access_tokens().len(),
        elapsed,
        redis_histograms,
    }
}

fn histogram(text: &str, series: &str) -> Vec<(f64, f64)> {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(series)?;
            let le = rest.split("le=\"").nth(1)?.split('"').next()?;
            let value = rest.rsplit(' ').next()?.parse().ok()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, value))
        })
        .collect()
}

/// The bucket bound under which `q` of the calls fell (Prometheus buckets: an upper bound).
fn quantile(buckets: &[(f64, f64)], q: f64) -> f64 {
    let total = buckets.last().map_or(0.0, |b| b.1);
    buckets
        .iter()
        .find(|(_, count)| *count >= q * total)
        .map_or(f64::NAN, |b| b.0)
}

/// Times `n` admissions through the fleet window directly: what one shared admission costs.
async fn admission_round_trips(url: &str, n: usize) -> Vec<Duration> {
    let text = format!(
        "[[accounts]]\nname = \"probe\"\ntoken = {{ value = \"x\" }}\n[fleet]\nredis_url = \"{url}\"\nnamespace = \"bench-probe\"\ntimeout_ms = 1000\n"
    );
    let settings = Settings::from_config(Config::parse(&text).unwrap()).unwrap();
    let fleet = hubspot_auth_proxy::fleet::Fleet::connect(
        settings.fleet.as_ref().unwrap(),
        None,
        hubspot_auth_proxy::fleet::FleetMetrics::unregistered(),
    )
    .unwrap();
    let window = fleet.window("probe", 1_000_000, 0);
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        window.admit(false, Duration::ZERO).await.expect("admit");
        times.push(started.elapsed());
    }
    times.sort();
    times
}

fn report(name: &str, o: &Outcome) {
    let accepted = o.upstream - o.upstream_429;
    // The most a rolling window lets through from a cold start: a full budget per started 10 s.
    let budget = (BUDGET_PER_10S as f64 * (o.elapsed.as_secs_f64() / 10.0).ceil()).max(1.0);
    println!("== {name}");
    println!(
        "client answers: {} 2xx, {} local 429, {} other",
        o.tally.ok, o.tally.local_429, o.tally.other
    );
    println!(
        "upstream: {} requests, {} answered 429 ({:.2}%)",
        o.upstream,
        o.upstream_429,
        100.0 * o.upstream_429 as f64 / o.upstream.max(1) as f64
    );
    println!(
        "budget used: {accepted} accepted by HubSpot of {budget:.0} possible in {:.1} s, a budget per started 10 s ({:.1}%)",
        o.elapsed.as_secs_f64(),
        100.0 * accepted as f64 / budget
    );
    println!("token endpoint calls: {}", o.token_calls);
    for (i, h) in o.redis_histograms.iter().enumerate() {
        if h.is_empty() {
            continue;
        }
        println!(
            "replica {i}: Redis calls {} (admission, heartbeat, release); p50 <= {} ms, p99 <= {} ms (histogram buckets)",
            h.last().map_or(0.0, |b| b.1),
            quantile(h, 0.5) * 1000.0,
            quantile(h, 0.99) * 1000.0
        );
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let redis = Mutex::new(RedisServer::start());
    let with = run(Some(&redis)).await;
    let memory = redis.lock().unwrap().used_memory();
    let url = redis.lock().unwrap().url();
    let times = admission_round_trips(&url, 2_000).await;
    let without = run(None).await;
    report("with [fleet] (Redis down 22.5 s..37.5 s)", &with);
    println!("Redis used_memory after the run: {memory} bytes");
    let pct = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    println!(
        "one shared admission (EVALSHA, sequential, {} calls): p50 {:.3} ms, p99 {:.3} ms",
        times.len(),
        pct(0.5).as_secs_f64() * 1000.0,
        pct(0.99).as_secs_f64() * 1000.0
    );
    report("without [fleet]", &without);
}
