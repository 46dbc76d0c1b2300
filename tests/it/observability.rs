//! Metrics values, /status, JSON logs and the sidecar lifecycle, through the real binary.

use std::time::{Duration, Instant};

use crate::support::*;

async fn world(extra_server: &str, run: Run) -> World {
    World::build().server(extra_server).run(run).start().await
}

fn m(text: &str, series: &str) -> f64 {
    metric(text, series).unwrap_or_else(|| panic!("no series {series}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_was_sent() {
    let w = world("", Run::InProcess).await;
    let c = client();
    for _ in 0..7 {
        assert_eq!(
            c.get(w.proxy.url("/crm/v3/objects/contacts"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    for _ in 0..2 {
        c.get(w.proxy.url("/contacts/v1/lists/all/contacts/all"))
            .send()
            .await
            .unwrap();
    }
    c.post(w.proxy.url("/__sandbox/status/429?policy=SECONDLY"))
        .send()
        .await
        .unwrap();
    c.post(w.proxy.url("/__sandbox/status/429"))
        .send()
        .await
        .unwrap();
    c.post(w.proxy.url("/__sandbox/status/429?policy=DAILY"))
        .send()
        .await
        .unwrap();
    c.get(w.proxy.url("/__sandbox/status/503"))
        .send()
        .await
        .unwrap();

    let text = w.proxy.metrics().await;
    let a = r#"account="main""#;
    assert_eq!(
        m(
            &text,
            &format!(r#"hubspot_proxy_requests_total{{{a},method="GET",status="200"}}"#)
        ),
        9.0
    );
    assert_eq!(
        m(
            &text,
            &format!(r#"hubspot_proxy_api_requests_total{{{a},api="crm/v3"}}"#)
        ),
        7.0
    );
    assert_eq!(
        m(
            &text,
            &format!(r#"hubspot_proxy_api_requests_total{{{a},api="contacts/v1"}}"#)
        ),
        2.0
    );
    assert_eq!(
        m(
            &text,
            &format!(r#"hubspot_proxy_api_requests_total{{{a},api="other"}}"#)
        ),
        4.0
    );
    assert_eq!(
        m(
            &text,
            &format!(r#"hubspot_proxy_upstream_responses_total{{{a},status_class="2xx"}}"#)
        ),
        9.0
    );
    assert_eq!(
        m(
            &text,
            &format!(r#"hubspot_proxy_upstream_responses_total{{{a},status_class="4xx"}}"#)
        ),
        7.0
    );
    assert_eq!(
        m(
            &text,
            &format!(r#"hubspot_proxy_upstream_responses_total{{{a},status_class="5xx"}}"#)
        ),
        3.0
    );
    assert_eq!(
        m(
            &text,
            &format!(r#"hubspot_proxy_upstream_rate_limited_total{{{a},policy="secondly"}}"#)
        ),
        3.0
    );
    assert_eq!(
        m(
            &text,
            &format!(
                r#"hubspot_proxy_upstream_rate_limited_total{{{a},policy="ten_secondly_rolling"}}"#
            )
        ),
        3.0
    );
    assert_eq!(
        m(
            &text,
            &format!(r#"hubspot_proxy_upstream_rate_limited_total{{{a},policy="daily"}}"#)
        ),
        1.0
    );
    assert_eq!(
        m(
            &text,
            &format!(r#"hubspot_proxy_upstream_duration_seconds_count{{{a}}}"#)
        ),
        19.0
    );
    assert_eq!(
        m(
            &text,
            &format!(r#"hubspot_proxy_request_duration_seconds_count{{{a}}}"#)
        ),
        13.0
    );
    // The gauges hold what the stand-in last sent in its X-HubSpot-RateLimit-* headers.
    let last = w.sandbox.requests().len() as f64;
    assert_eq!(
        m(
            &text,
            &format!(r#"hubspot_proxy_upstream_ratelimit_max{{{a},window="ten_second"}}"#)
        ),
        190.0
    );
    assert_eq!(
        m(
            &text,
            &format!(r#"hubspot_proxy_upstream_ratelimit_remaining{{{a},window="ten_second"}}"#)
        ),
        190.0 - last
    );
    assert_eq!(
        m(
            &text,
            &format!(r#"hubspot_proxy_upstream_ratelimit_max{{{a},window="daily"}}"#)
        ),
        250_000.0
    );
    assert_eq!(
        m(
            &text,
            &format!(r#"hubspot_proxy_upstream_ratelimit_remaining{{{a},window="daily"}}"#)
        ),
        250_000.0 - last
    );
    assert_eq!(
        m(
            &text,
            &format!(r#"hubspot_proxy_retries_total{{{a},reason="rate_limited"}}"#)
        ),
        4.0
    );
    assert_eq!(
        m(
            &text,
            &format!(r#"hubspot_proxy_retries_total{{{a},reason="upstream_5xx"}}"#)
        ),
        2.0
    );
    assert!(text.contains("process_open_fds"));
}

/// End to end, a handful of random paths: the classifier's bound over 10,000 paths is the unit
/// test `api_family::tests::ten_thousand_random_paths_stay_within_the_slots`; this proves the
/// metrics use it (no per-path series) through the real binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_paths_leave_the_series_count_bounded() {
    let w = world("", Run::InProcess).await;
    let series = |text: &str| {
        text.lines()
            .filter(|l| l.starts_with("hubspot_proxy_"))
            .count()
    };
    w.proxy.get("/crm/v3/objects/contacts").await;
    let before = series(&w.proxy.metrics().await);
    let c = client();
    for i in 0..200u64 {
        let n = i * 1_000_003 + 7919;
        let path = format!("/{:x}/v{}/{:x}/{}", n, n % 9, n * 31, i);
        c.get(w.proxy.url(&format!("{path}?q={n}")))
            .send()
            .await
            .unwrap();
    }
    let text = w.proxy.metrics().await;
    assert_eq!(
        m(
            &text,
            r#"hubspot_proxy_requests_total{account="main",method="GET",status="404"}"#
        ),
        200.0
    );
    let after = series(&text);
    // New series only for the new status (404) and the `other` API family, never per path.
    assert!(after <= before + 4, "series grew from {before} to {after}");
    assert_eq!(
        m(
            &text,
            r#"hubspot_proxy_api_requests_total{account="main",api="other"}"#
        ),
        200.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_health_without_secrets() {
    let w = world("", Run::InProcess).await;
    w.proxy.get("/crm/v3/objects/contacts").await;
    let body = w.proxy.admin_get("/status").await.text().await.unwrap();
    assert!(!body.contains(TOKEN_A));
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    let main = &status["accounts"][0];
    assert_eq!(main["name"], "main");
    assert_eq!(main["kind"], "static");
    assert_eq!(main["ready"], true);
    assert_eq!(main["token_expires_in_secs"], serde_json::Value::Null);
    assert_eq!(main["last_refresh_result"], "success");
    assert_eq!(main["consecutive_failures"], 0);
    assert_eq!(main["ratelimit"]["ten_second"]["remaining"], 189);

    let out = std::process::Command::new(BIN)
        .args(["status", "--admin", &w.proxy.admin_url("")])
        .output()
        .unwrap();
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.starts_with("ACCOUNT"), "{table}");
    assert!(
        table.lines().nth(1).unwrap().contains("main") && table.contains("189/190"),
        "{table}"
    );

    let ok = std::process::Command::new(BIN)
        .args(["healthcheck", "--url", &w.proxy.admin_url("/readyz")])
        .status()
        .unwrap();
    assert!(ok.success());
    let down = format!("http://127.0.0.1:{}/readyz", closed_port());
    let bad = std::process::Command::new(BIN)
        .args(["healthcheck", "--url", &down])
        .output()
        .unwrap();
    assert!(!bad.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_access_log_has_one_object_per_line() {
    let w = world("access_log = true", Run::binary(&["--log-format", "json"])).await;
    client()
        .get(
            w.proxy
                .url("/crm/v3/objects/contacts?hapikey=legacy-key-9999&limit=1"),
        )
        .send()
        .await
        .unwrap();
    let log = eventually(Duration::from_secs(5), "access log line", || {
        let log = w.proxy.log();
        log.contains("\"message\":\"request\"").then_some(log)
    })
    .await;
    let mut access = None;
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["timestamp"].is_string() && v["level"].is_string(),
            "{line}"
        );
        if v["message"] == "request" {
            access = Some(v);
        }
    }
    let access = access.unwrap();
    assert_eq!(access["level"], "INFO");
    assert_eq!(access["account"], "main");
    assert_eq!(access["method"], "GET");
    assert_eq!(access["status"], 200);
    assert!(access["duration_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(
        access["path"],
        "/crm/v3/objects/contacts?hapikey=REDACTED&limit=1"
    );
    let correlation = access["correlation_id"].as_str().unwrap();
    assert_eq!(correlation.len(), 36, "HubSpot's correlation id");
    assert!(!log.contains("legacy-key-9999") && !log.contains(TOKEN_A));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flips_readiness_then_serves_for_the_min_delay_then_drains() {
    let mut w = world("shutdown_min_delay_secs = 2", Run::binary(&[])).await;
    let slow = {
        let url = w.proxy.url("/__sandbox/slow/2500");
        tokio::spawn(async move { client().get(url).send().await.map(|r| r.status().as_u16()) })
    };
    eventually(Duration::from_secs(5), "slow request upstream", || {
        (w.sandbox.request_count() == 1).then_some(())
    })
    .await;
    w.proxy.signal("TERM");
    let signalled = Instant::now();
    let ready_url = w.proxy.admin_url("/readyz");
    let deadline = Instant::now() + Duration::from_secs(1);
    while client().get(&ready_url).send().await.unwrap().status() != 503 {
        assert!(Instant::now() < deadline, "readiness did not flip first");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // New requests are still served during the delay.
    let mut served_late = 0;
    while signalled.elapsed() < Duration::from_millis(1700) {
        let fresh = reqwest::Client::builder().no_proxy().build().unwrap();
        assert_eq!(
            fresh
                .get(w.proxy.url("/crm/v3/objects/contacts"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        served_late += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served_late >= 10);
    assert_eq!(
        slow.await.unwrap().unwrap(),
        200,
        "the in-flight request finished"
    );
    let status = w.proxy.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success());
    assert!(
        signalled.elapsed() >= Duration::from_secs(2),
        "exited before the min delay"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quitquitquit_only_when_enabled() {
    let w = world("", Run::InProcess).await;
    let r = client()
        .post(w.proxy.admin_url("/quitquitquit"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(w.proxy.status("/crm/v3/objects/contacts").await, 200);

    let mut w = world("enable_quit = true", Run::binary(&[])).await;
    assert_eq!(w.proxy.admin_get("/quitquitquit").await.status(), 405);
    let r = client()
        .post(w.proxy.admin_url("/quitquitquit"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let status = w.proxy.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_outside_the_http_range_get_one_fixed_label() {
    let w = world("", Run::InProcess).await;
    for path in [
        "/__sandbox/status/777",
        "/__sandbox/status/599",
        "/__sandbox/status/999",
    ] {
        w.proxy.get(path).await;
    }
    let metrics = w.proxy.metrics().await;
    let series = |status: &str| {
        format!(r#"hubspot_proxy_requests_total{{account="main",method="GET",status="{status}"}}"#)
    };
    assert_eq!(metric(&metrics, &series("599")), Some(1.0), "{metrics}");
    assert_eq!(metric(&metrics, &series("invalid")), Some(2.0), "{metrics}");
    assert!(!metrics.contains(r#"status="777""#), "{metrics}");
    assert_eq!(
        metric(
            &metrics,
            r#"hubspot_proxy_upstream_errors_total{account="main",kind="protocol"}"#
        ),
        Some(2.0),
        "{metrics}"
    );
}
