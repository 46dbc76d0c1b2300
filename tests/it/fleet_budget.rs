//! One shared budget per account across replicas: three real proxy processes on one real
//! redis-server in front of one stand-in HubSpot that enforces its rolling 10-second limit.
//! The same load without `[fleet]` is the control that shows these tests can fail.

use std::time::{Duration, Instant};

use crate::support::redis_server::RedisServer;
use crate::support::*;

/// The stand-in's (and the proxies') 10-second budget.
const BUDGET: u64 = 20;
/// Clients offer 3x the budget: 6 requests a second, round-robin over the replicas.
const OFFERED_PER_SECOND: f64 = 3.0 * BUDGET as f64 / 10.0;
const RUN: Duration = Duration::from_secs(12);

struct World {
    sandbox: Sandbox,
    _scratch: Scratch,
    proxies: Vec<TestProxy>,
}

/// Three replicas of one static account shaped to `BUDGET`; with `redis`, in one fleet.
async fn world(redis: Option<&RedisServer>) -> World {
    let sandbox = Sandbox::start().await.unwrap();
    sandbox.accept_token(TOKEN_A);
    sandbox.limits().configure(BUDGET, 5, true);
    let scratch = Scratch::new();
    let token = scratch.write("token", TOKEN_A);
    let mut config = static_config(&sandbox.url(), &token, "").replace(
        "per_ten_seconds = 0",
        &format!("per_ten_seconds = {BUDGET}\nmax_queue_wait_ms = 1500"),
    );
    if let Some(redis) = redis {
        // A loaded 2-core CI machine can stall a loopback call; 250 ms keeps the test about
        // sharing, not about timeouts (those have their own tests).
        config.push_str(&format!(
            "\n[fleet]\nredis_url = \"{}\"\nnamespace = \"budget\"\ntimeout_ms = 250\n",
            redis.url()
        ));
    }
    let mut proxies = Vec::new();
    for _ in 0..3 {
        proxies.push(TestProxy::start_with(&config, &[], &["--log-level", "info"]).await);
    }
    World {
        sandbox,
        _scratch: scratch,
        proxies,
    }
}

/// One client answer: status, the error category (local answers) or policy (HubSpot's), and
/// when it arrived.
#[derive(Debug)]
struct Answer {
    status: u16,
    label: String,
    at: Duration,
}

/// Offers `OFFERED_PER_SECOND` for `RUN`, paced, each request on its own task; all answers.
async fn offer_load(w: &World, started: Instant) -> Vec<Answer> {
    let interval = Duration::from_secs_f64(1.0 / OFFERED_PER_SECOND);
    let count = (RUN.as_secs_f64() * OFFERED_PER_SECOND) as usize;
    let client = client();
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        tokio::time::sleep_until((started + interval * i as u32).into()).await;
        let request = client.get(w.proxies[i % w.proxies.len()].url("/crm/v3/objects/contacts"));
        tasks.push(tokio::spawn(async move {
            let response = request.send().await.expect("the proxy answers");
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            let label = body["category"]
                .as_str()
                .or(body["policyName"].as_str())
                .unwrap_or("")
                .to_string();
            Answer {
                status,
                label,
                at: started.elapsed(),
            }
        }));
    }
    let mut answers = Vec::with_capacity(count);
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    answers
}

/// The most 2xx answers arriving within any 10 s: how much of the budget the fleet used.
fn densest_ten_seconds(answers: &[Answer]) -> usize {
    let mut times: Vec<Duration> = answers
        .iter()
        .filter(|a| (200..300).contains(&a.status))
        .map(|a| a.at)
        .collect();
    times.sort();
    (0..times.len())
        .map(|i| {
            times[i..]
                .iter()
                .take_while(|t| **t < times[i] + Duration::from_secs(10))
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// HubSpot's 429s as a share of what reached it.
fn upstream_429_share(w: &World) -> (u64, usize, f64) {
    let rejected = w.sandbox.limits().rejected();
    let upstream = w.sandbox.request_count();
    (rejected, upstream, rejected as f64 / upstream.max(1) as f64)
}

/// Every replica sees the other two through their heartbeats (so the fallback share is 1/3).
async fn all_replicas_seen(w: &World) {
    for proxy in &w.proxies {
        metric_becomes(
            proxy,
            "hubspot_proxy_fleet_replicas",
            3.0,
            Duration::from_secs(10),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_one_budget_under_3x_load() {
    let redis = RedisServer::start();
    let w = world(Some(&redis)).await;
    all_replicas_seen(&w).await;
    let mut inspect = redis.inspect();
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query::<()>(&mut inspect)
        .unwrap();
    let answers = offer_load(&w, Instant::now()).await;

    let (rejected, upstream, share) = upstream_429_share(&w);
    assert!(
        share <= 0.01,
        "HubSpot answered {rejected} of {upstream} requests with 429 ({:.1}%)",
        share * 100.0
    );
    let used = densest_ten_seconds(&answers);
    assert!(
        used as f64 >= 0.9 * BUDGET as f64,
        "only {used} of the {BUDGET}-request budget was used in the busiest 10 s"
    );
    for a in &answers {
        assert!(
            a.status == 200 || (a.status == 429 && a.label == "PROXY_RATE_LIMITED"),
            "unexpected client answer {a:?}"
        );
    }
    // Exactly one script per admitted request: Redis saw one EVALSHA per admission (refused
    // ones included), and nothing else on the request path.
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut inspect)
        .unwrap();
    let evalsha = stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|l| l.split(',').next()?.parse::<usize>().ok())
        .expect("EVALSHA was called");
    let heartbeats = 3 * (RUN.as_secs() as usize / 2 + 2);
    assert!(
        evalsha <= answers.len() + heartbeats,
        "{evalsha} EVALSHA calls for {} requests (heartbeats add ~1 per 2 s per replica)",
        answers.len()
    );
    // /status shows the shared budget in use and the fallback share (90 % of 20, over 3).
    let status = &w.proxies[0].status_json().await;
    assert_eq!(status["fleet"]["mode"], "shared", "{status}");
    assert_eq!(status["fleet"]["replicas"], 3, "{status}");
    let shared = &status["accounts"][0]["ratelimit"]["shared"];
    assert_eq!(shared["limit"], BUDGET, "{status}");
    assert!(shared["in_use"].as_u64().unwrap() > 0, "{status}");
    assert_eq!(shared["fallback_share"], 6, "{status}");
    // The Grafana dashboard's fleet row queries series a fleet replica exports.
    let dashboard = std::fs::read_to_string("deploy/grafana/hubspot-auth-proxy.json").unwrap();
    let metrics = w.proxies[0].metrics().await;
    for name in [
        "hubspot_proxy_fleet_up",
        "hubspot_proxy_fleet_replicas",
        "hubspot_proxy_fleet_fallbacks_total",
        "hubspot_proxy_fleet_redis_duration_seconds",
    ] {
        assert!(dashboard.contains(name), "the dashboard lacks {name}");
        assert!(
            metrics.contains(&format!("# TYPE {name} ")),
            "{name} not exported"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_fleet_the_same_load_draws_many_upstream_429s() {
    let w = world(None).await;
    offer_load(&w, Instant::now()).await;
    let (rejected, upstream, share) = upstream_429_share(&w);
    assert!(
        share > 0.2,
        "the control should overrun HubSpot: {rejected} of {upstream} got 429"
    );
    let status = &w.proxies[0].status_json().await;
    assert!(status["fleet"].is_null());
    assert!(status["accounts"][0]["ratelimit"]["shared"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_load_fails_no_request_and_sharing_resumes_within_5_s() {
    let mut redis = RedisServer::start();
    let w = world(Some(&redis)).await;
    all_replicas_seen(&w).await;
    let started = Instant::now();
    let load = {
        // The load runs on its own while Redis goes away and comes back.
        let w = &w;
        async move { offer_load(w, started).await }
    };
    // Killed once about 9 requests went through the shared window, back 4.5 s later.
    let (kill_at, restart_at) = (Duration::from_millis(1_500), Duration::from_secs(6));
    let outage = async {
        tokio::time::sleep_until((started + kill_at).into()).await;
        tokio::task::block_in_place(|| redis.stop());
        // Each replica notices on its next Redis call, and shows its fallback share.
        for proxy in &w.proxies {
            metric_becomes(proxy, "hubspot_proxy_fleet_up", 0.0, Duration::from_secs(5)).await;
        }
        let status = &w.proxies[1].status_json().await;
        assert_eq!(status["fleet"]["mode"], "fallback", "{status}");
        assert_eq!(
            status["accounts"][0]["ratelimit"]["shared"]["fallback_share"], 6,
            "{status}"
        );
        tokio::time::sleep_until((started + restart_at).into()).await;
        tokio::task::block_in_place(|| redis.restart());
        let restarted = Instant::now();
        for proxy in &w.proxies {
            metric_becomes(proxy, "hubspot_proxy_fleet_up", 1.0, Duration::from_secs(5)).await;
        }
        restarted.elapsed()
    };
    let (answers, back_after) = tokio::join!(load, outage);
    assert!(back_after <= Duration::from_secs(5));
    for a in &answers {
        assert!(
            a.status == 200 || (a.status == 429 && a.label == "PROXY_RATE_LIMITED"),
            "a client got {a:?} while Redis went away and came back"
        );
    }
    // Alone, each replica still served its share (not "fail closed")...
    let served_alone = answers
        .iter()
        .filter(|a| {
            a.status == 200 && a.at > kill_at + Duration::from_millis(200) && a.at < restart_at
        })
        .count();
    assert!(
        served_alone >= 3,
        "only {served_alone} requests were served while Redis was away"
    );
    // ...and the shares, together with what was sent just before, and what the fleet admits
    // after Redis returns empty, stayed within HubSpot's window (not "fail open").
    let (rejected, upstream, share) = upstream_429_share(&w);
    assert!(
        share <= 0.01,
        "HubSpot answered {rejected} of {upstream} requests with 429 around the outage"
    );
    for proxy in &w.proxies {
        let metrics = proxy.metrics().await;
        assert!(metric(&metrics, "hubspot_proxy_fleet_fallbacks_total").unwrap() >= 1.0);
        // One line entering fallback and one leaving it, not one per request.
        let log = proxy.log();
        assert_eq!(
            log.matches("falling back to this replica's local share")
                .count(),
            1,
            "{log}"
        );
    }
}
