//! Shaping under HubSpot's limits and retrying what HubSpot did not act on, through the real binary.

use std::time::{Duration, Instant};

use crate::support::*;
use sha2::{Digest, Sha256};

/// One static account with the given `[accounts.rate_limit]` lines, in-process.
async fn world(rate_limit: &str) -> World {
    world_run(rate_limit, Run::InProcess).await
}

/// The same, run as `run` says (the binary, for the tests that read its log).
async fn world_run(rate_limit: &str, run: Run) -> World {
    World::build()
        .rate_limit(rate_limit)
        .upstream_timeout_secs(30)
        .run(run)
        .start()
        .await
}

/// Fires `n` requests at once; returns (status, policyName or category, Retry-After, elapsed).
async fn burst(
    w: &World,
    n: usize,
    method: reqwest::Method,
    path: &str,
) -> Vec<(u16, String, Option<u64>, Duration)> {
    let started = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let request = client()
                .request(method.clone(), w.proxy.url(path))
                .body("{}");
            tokio::spawn(async move {
                let r = request.send().await.unwrap();
                let status = r.status().as_u16();
                let retry_after = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()?.parse().ok());
                let body: serde_json::Value = r.json().await.unwrap_or_default();
                let label = body["policyName"]
                    .as_str()
                    .or(body["category"].as_str())
                    .unwrap_or("")
                    .to_string();
                (status, label, retry_after, started.elapsed())
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_burst_is_queued_under_five_per_second() {
    let w = world("per_ten_seconds = 100\nsearch_per_second = 5").await;
    w.sandbox.limits().configure(1000, 5, true);
    let results = burst(
        &w,
        15,
        reqwest::Method::POST,
        "/crm/v3/objects/contacts/search",
    )
    .await;
    assert!(results.iter().all(|r| r.0 == 200), "{results:?}");
    assert_eq!(w.sandbox.limits().rejected(), 0, "HubSpot answered 429");
    let slowest = results.iter().map(|r| r.3).max().unwrap();
    assert!(
        slowest >= Duration::from_millis(2000),
        "15 searches at 5/s take over 2 s, took {slowest:?}"
    );
    let text = w.proxy.metrics().await;
    assert_eq!(
        metric(
            &text,
            r#"hubspot_proxy_ratelimit_queue_wait_seconds_count{account="main"}"#
        ),
        Some(15.0)
    );
    assert!(
        metric(
            &text,
            r#"hubspot_proxy_ratelimit_queue_wait_seconds_sum{account="main"}"#
        )
        .unwrap()
            > 10.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_wait_bound_the_proxy_answers_429_itself() {
    let w = world("per_ten_seconds = 10\nmax_queue_wait_ms = 2000").await;
    w.sandbox.limits().configure(10, 5, true);
    let results = burst(&w, 30, reqwest::Method::GET, "/crm/v3/objects/contacts").await;
    let ok = results.iter().filter(|r| r.0 == 200).count();
    let local: Vec<_> = results.iter().filter(|r| r.0 == 429).collect();
    assert_eq!((ok, local.len()), (10, 20), "{results:?}");
    for (_, policy, retry_after, elapsed) in &local {
        assert_eq!(policy, "PROXY_QUEUE");
        assert!(
            retry_after.is_some_and(|s| (9..=11).contains(&s)),
            "Retry-After {retry_after:?}"
        );
        assert!(
            *elapsed < Duration::from_secs(2),
            "refused at once, not after waiting"
        );
    }
    assert_eq!(w.sandbox.limits().rejected(), 0);
    assert_eq!(
        w.sandbox.request_count(),
        10,
        "refused requests never reach HubSpot"
    );
    let text = w.proxy.metrics().await;
    assert_eq!(
        metric(
            &text,
            r#"hubspot_proxy_ratelimit_rejected_total{account="main"}"#
        ),
        Some(20.0)
    );
    let refused = w.proxy.get("/crm/v3/objects/contacts").await;
    assert_eq!(
        refused.headers()["x-auth-proxy-error"],
        "PROXY_RATE_LIMITED"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_requests_go_when_the_window_rolls() {
    let w = world("per_ten_seconds = 5\nmax_queue_wait_ms = 15000").await;
    w.sandbox.limits().configure(5, 5, true);
    let results = burst(&w, 8, reqwest::Method::GET, "/crm/v3/objects/contacts").await;
    assert!(results.iter().all(|r| r.0 == 200), "{results:?}");
    let waited = results
        .iter()
        .filter(|r| r.3 >= Duration::from_secs(10))
        .count();
    assert_eq!(waited, 3, "three waited for the window: {results:?}");
    assert_eq!(w.sandbox.limits().rejected(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubspot_rolling_429_is_retried_and_daily_is_not() {
    let w = world("per_ten_seconds = 100").await;
    w.sandbox.inject(429, Some("TEN_SECONDLY_ROLLING"));
    let body = r#"{"properties":{"email":"retry@example.com"}}"#;
    let r = w.proxy.post("/__sandbox/echo", body).await;
    assert_eq!(r.status(), 200);
    let seen = w.sandbox.requests();
    assert_eq!(seen.len(), 2);
    let sha = hex::encode(Sha256::digest(body.as_bytes()));
    assert!(seen
        .iter()
        .all(|r| r.body_sha256 == sha && r.bearer() == Some(TOKEN_A)));

    w.sandbox.inject(429, Some("DAILY"));
    let r = w.proxy.post("/__sandbox/echo", body).await;
    assert_eq!(r.status(), 429);
    let json: serde_json::Value = r.json().await.unwrap();
    assert_eq!(json["policyName"], "DAILY");
    assert_eq!(w.sandbox.request_count(), 3, "DAILY is never retried");
    let status: serde_json::Value = w.proxy.admin_get("/status").await.json().await.unwrap();
    assert!(status["accounts"][0]["daily_limit_hit_unix"].is_u64());
    let text = w.proxy.metrics().await;
    assert_eq!(
        metric(
            &text,
            r#"hubspot_proxy_retries_total{account="main",reason="rate_limited"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            r#"hubspot_proxy_upstream_rate_limited_total{account="main",policy="daily"}"#
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_errors_are_retried_only_for_idempotent_methods() {
    let w = world("per_ten_seconds = 100").await;
    w.sandbox.inject(503, None);
    assert_eq!(w.proxy.status("/crm/v3/objects/contacts").await, 200);
    assert_eq!(w.sandbox.request_count(), 2);

    w.sandbox.inject(503, None);
    let r = w
        .proxy
        .post("/crm/v3/objects/contacts", r#"{"properties":{}}"#)
        .await;
    assert_eq!(
        r.status(),
        503,
        "a POST may have been acted on: never resent"
    );
    assert_eq!(w.sandbox.request_count(), 3);

    w.sandbox.inject(502, None);
    w.sandbox.inject(524, None);
    let body = "x".repeat(50_000);
    let r = client()
        .put(w.proxy.url("/__sandbox/echo"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let puts: Vec<_> = w.sandbox.requests().into_iter().skip(3).collect();
    assert_eq!(puts.len(), 3, "two retries");
    let sha = hex::encode(Sha256::digest(body.as_bytes()));
    assert!(puts.iter().all(|p| p.body_sha256 == sha));
    let text = w.proxy.metrics().await;
    assert_eq!(
        metric(
            &text,
            r#"hubspot_proxy_retries_total{account="main",reason="upstream_5xx"}"#
        ),
        Some(3.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_follows_hubspots_lower_max() {
    for adaptive in [true, false] {
        let w = world_run(
            &format!("per_ten_seconds = 20\nmax_queue_wait_ms = 500\nmax_retries_429 = 0\nadaptive = {adaptive}"),
            Run::process(),
        )
        .await;
        w.sandbox.limits().configure(6, 5, true);
        assert_eq!(w.proxy.status("/crm/v3/objects/contacts").await, 200);
        let results = burst(&w, 10, reqwest::Method::GET, "/crm/v3/objects/contacts").await;
        let ok = results.iter().filter(|r| r.0 == 200).count();
        if adaptive {
            assert_eq!(ok, 5, "{results:?}");
            assert_eq!(
                w.sandbox.limits().rejected(),
                0,
                "shaped to HubSpot's Max of 6"
            );
            assert!(w
                .proxy
                .log()
                .contains("HubSpot reports a lower 10-second limit"));
        } else {
            assert!(
                w.sandbox.limits().rejected() > 0,
                "without adaptive shaping HubSpot answers 429"
            );
        }
    }
}

/// The account's 10-second budget as `/status` reports it.
async fn budget(w: &World) -> serde_json::Value {
    w.proxy.status_json().await["accounts"][0]["ratelimit"]["ten_second"]["budget"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_developer_key_answer_does_not_move_the_accounts_budget() {
    let w = world("per_ten_seconds = 10\nmax_queue_wait_ms = 500\nmax_retries_429 = 0").await;
    w.sandbox.limits().configure(10, 5, false);
    assert_eq!(w.proxy.status("/crm/v3/objects/contacts").await, 200);
    assert_eq!(budget(&w).await, 10);
    // The developer app's answer reports its own budget of 2.
    w.sandbox.state().accept_developer_key("dev-key-77", 2);
    assert_eq!(
        w.proxy
            .status("/webhooks/v3/123/subscriptions?hapikey=dev-key-77")
            .await,
        200
    );
    let seen = w.sandbox.requests().pop().unwrap();
    assert_eq!(seen.bearer(), None, "the developer key went as it came");
    let status = w.proxy.status_json().await;
    let ten = &status["accounts"][0]["ratelimit"]["ten_second"];
    assert_eq!(
        (ten["budget"].clone(), ten["max"].clone()),
        (10.into(), 10.into())
    );
    let text = w.proxy.metrics().await;
    assert_eq!(
        metric(
            &text,
            r#"hubspot_proxy_upstream_ratelimit_max{account="main",window="ten_second"}"#
        ),
        Some(10.0)
    );
    // Ordinary requests still flow at the account's budget: 8 more fit in the 10.
    let results = burst(&w, 8, reqwest::Method::GET, "/crm/v3/objects/contacts").await;
    assert!(results.iter().all(|r| r.0 == 200), "{results:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_comes_back_up_to_the_configured_ceiling() {
    let w = world_run(
        "per_ten_seconds = 20\nmax_queue_wait_ms = 500\nmax_retries_429 = 0",
        Run::process(),
    )
    .await;
    w.sandbox.limits().configure(6, 5, false);
    assert_eq!(w.proxy.status("/crm/v3/objects/contacts").await, 200);
    assert_eq!(budget(&w).await, 6);
    w.sandbox.limits().configure(50, 5, false);
    assert_eq!(w.proxy.status("/crm/v3/objects/contacts").await, 200);
    assert_eq!(
        budget(&w).await,
        20,
        "up again, to the configured 20 at most"
    );
    // 2 sent, 18 more fit in the window without queueing past 500 ms.
    let results = burst(&w, 18, reqwest::Method::GET, "/crm/v3/objects/contacts").await;
    assert!(results.iter().all(|r| r.0 == 200), "{results:?}");
    assert!(w
        .proxy
        .log()
        .contains("HubSpot reports a higher 10-second limit"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unset_budget_rises_to_hubspots_190_and_a_set_one_stays_capped() {
    for (rate_limit, want) in [("", 190), ("per_ten_seconds = 120", 120)] {
        let w = world(&format!(
            "{rate_limit}\nmax_queue_wait_ms = 500\nmax_retries_429 = 0"
        ))
        .await;
        w.sandbox.limits().configure(190, 5, true);
        let start = if rate_limit.is_empty() { 100 } else { 120 };
        assert_eq!(budget(&w).await, start);
        assert_eq!(w.proxy.status("/crm/v3/objects/contacts").await, 200);
        assert_eq!(budget(&w).await, want, "{rate_limit:?}");
        let results = burst(&w, 150, reqwest::Method::GET, "/crm/v3/objects/contacts").await;
        let ok = results.iter().filter(|r| r.0 == 200).count();
        assert_eq!(ok, (want - 1).min(150), "{rate_limit:?}");
        assert_eq!(
            w.sandbox.limits().rejected(),
            0,
            "HubSpot never answered 429"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_asking_for_longer_than_the_wait_bound_is_passed_at_once() {
    let w = world("per_ten_seconds = 100\nmax_queue_wait_ms = 2000").await;
    for retry_after in [3600, 5] {
        let started = Instant::now();
        let r = client()
            .get(
                w.proxy
                    .url(&format!("/__sandbox/status/429?retry_after={retry_after}")),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], retry_after.to_string().as_str());
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["policyName"], "TEN_SECONDLY_ROLLING", "HubSpot's body");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "Retry-After {retry_after}: passed after {:?}",
            started.elapsed()
        );
    }
    assert_eq!(w.sandbox.request_count(), 2, "nothing was resent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_while_queued_gives_its_slot_to_the_next() {
    let w = world("per_ten_seconds = 1\nmax_queue_wait_ms = 12000").await;
    let started = Instant::now();
    assert_eq!(w.proxy.status("/crm/v3/objects/contacts").await, 200);
    // The 2nd is queued for the window to roll, then its client hangs up.
    let mut leaver = std::net::TcpStream::connect(w.proxy.proxy).unwrap();
    std::io::Write::write_all(
        &mut leaver,
        b"GET /crm/v3/objects/contacts HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap();
    metric_becomes(
        &w.proxy,
        r#"hubspot_proxy_ratelimit_queue_wait_seconds_count{account="main"}"#,
        2.0,
        Duration::from_secs(5),
    )
    .await;
    drop(leaver);
    // The hangup is seen when the leaver's handler, and with it its held slot, is dropped.
    metric_becomes(
        &w.proxy,
        "hubspot_proxy_inflight_requests",
        0.0,
        Duration::from_secs(5),
    )
    .await;
    // Without the release the next arrival's slot would be a second window away (20 s): past
    // the 12 s bound, a local 429. With it, it takes the freed slot when the window rolls.
    let r = w.proxy.get("/crm/v3/objects/contacts").await;
    assert_eq!(r.status(), 200, "{:?}", r.headers().get("retry-after"));
    assert!(started.elapsed() < Duration::from_secs(12));
    assert_eq!(w.sandbox.request_count(), 2, "the leaver was never sent");
}
