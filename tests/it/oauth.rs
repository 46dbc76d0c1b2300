//! OAuth accounts against the stand-in's token endpoints: in-process, and through the real
//! binary where a test reads its log or signals it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::{self, *};
use hubspot_auth_proxy::sandbox::oauth::TokenMode;
use sha2::{Digest, Sha256};

const CLIENT_ID: &str = "1c0a5b6e-client";
const CLIENT_SECRET: &str = "cs-very-secret-4242";
const REFRESH: &str = "na1-refresh-initial-7777";

struct World {
    sandbox: Sandbox,
    scratch: Scratch,
    proxy: TestProxy,
}

fn oauth_config(sandbox: &Sandbox, scratch: &Scratch, oauth_extra: &str) -> String {
    let refresh = scratch.path("marketing.refresh");
    if !refresh.exists() {
        scratch.write("marketing.refresh", REFRESH);
    }
    support::oauth_config(&sandbox.url(), CLIENT_ID, &refresh, oauth_extra, "")
}

async fn sandbox_with(expires_in: u64) -> Sandbox {
    oauth_stand_in(CLIENT_ID, CLIENT_SECRET, REFRESH, expires_in).await
}

/// In-process, with the client secret in a file: the process environment is every test's.
async fn start(sandbox: Sandbox, scratch: Scratch, oauth_extra: &str) -> World {
    let secret = scratch.write("client.secret", CLIENT_SECRET);
    let config = oauth_config(&sandbox, &scratch, oauth_extra).replace(
        r#"{ env = "HSAP_TEST_CLIENT_SECRET" }"#,
        &format!(r#"{{ file = "{}" }}"#, secret.display()),
    );
    let proxy = TestProxy::in_process(&config).await;
    World {
        sandbox,
        scratch,
        proxy,
    }
}

/// The binary, for tests that read its log or signal it; the client secret from its environment.
async fn start_process(sandbox: Sandbox, scratch: Scratch, oauth_extra: &str) -> World {
    let config = oauth_config(&sandbox, &scratch, oauth_extra);
    let proxy = TestProxy::start_with(
        &config,
        &[("HSAP_TEST_CLIENT_SECRET", CLIENT_SECRET)],
        &["--log-level", "info"],
    )
    .await;
    World {
        sandbox,
        scratch,
        proxy,
    }
}

async fn ready(w: &World) {
    status_becomes(
        &w.proxy.admin_url("/readyz"),
        200,
        Duration::from_secs(10),
        "the account to be ready",
    )
    .await;
}

fn assert_no_secrets(w: &World) {
    let mut secrets: Vec<String> = vec![CLIENT_SECRET.into(), REFRESH.into()];
    secrets.extend(w.sandbox.oauth().issued_access_tokens());
    if let Ok(current) = std::fs::read_to_string(w.scratch.path("marketing.refresh")) {
        secrets.push(current.trim().to_string());
    }
    let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    w.proxy.assert_log_free_of(&refs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_clients_across_short_tokens_see_no_failures() {
    let w = start(sandbox_with(3).await, Scratch::new(), "").await;
    ready(&w).await;
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load_until(&w.proxy.url("/crm/v3/objects/contacts"), 16, &stop);
    // The load runs across three refreshes (one initial fetch, then about one per 2.25 s).
    let deadline = Instant::now() + Duration::from_secs(20);
    while w.sandbox.oauth().token_calls() < 4 {
        assert!(Instant::now() < deadline, "no third refresh under load");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for c in clients {
        let statuses = c.await.unwrap();
        total += statuses.len();
        let failed: Vec<_> = statuses.iter().filter(|s| **s != 200).collect();
        assert!(failed.is_empty(), "failures: {failed:?}");
    }
    assert!(total > 200, "load ran: {total}");
    // No refresh beyond the schedule: the one due next may have begun as the load stopped.
    let calls = w.sandbox.oauth().token_calls();
    assert!((4..=5).contains(&calls), "token calls: {calls}");
    assert_eq!(
        w.sandbox.oauth().max_concurrent_token_calls(),
        1,
        "two refreshes overlapped"
    );
    // Every request upstream carried an access token the stand-in had issued.
    let issued = w.sandbox.oauth().issued_access_tokens();
    assert!(w
        .sandbox
        .requests()
        .iter()
        .filter(|r| r.target.starts_with("/crm"))
        .all(|r| issued.iter().any(|t| Some(t.as_str()) == r.bearer())));
    // A refresh the stand-in has answered is counted once the proxy has read the answer.
    let deadline = Instant::now() + Duration::from_secs(5);
    let text = loop {
        let text = w.proxy.metrics().await;
        let series = r#"hubspot_proxy_token_refreshes_total{account="marketing",result="success"}"#;
        let counted = metric(&text, series);
        let calls = w.sandbox.oauth().token_calls();
        if counted == Some(calls as f64) {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "{series} is {counted:?}, the stand-in answered {calls}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let expiry = metric(
        &text,
        r#"hubspot_proxy_token_expiry_timestamp_seconds{account="marketing"}"#,
    )
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        expiry > now && expiry < now + 4.0,
        "expiry {expiry} vs now {now}"
    );
    assert!(
        text.contains(r#"hubspot_proxy_token_refresh_duration_seconds_count{account="marketing"}"#)
    );
    assert_no_secrets(&w);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_serves_the_valid_token_then_503_then_recovers() {
    let w = start_process(sandbox_with(4).await, Scratch::new(), "").await;
    ready(&w).await;
    let url = w.proxy.url("/crm/v3/objects/contacts");
    w.sandbox.oauth().set_mode(TokenMode::ServerError);
    // While the token is valid, nothing fails.
    let started = Instant::now();
    let mut served = 0;
    let first_503 = loop {
        let status = status_of(&url).await;
        if status == 503 {
            break started.elapsed();
        }
        assert_eq!(status, 200);
        served += 1;
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "the dead token was never retired"
        );
    };
    assert!(
        served > 10 && first_503 > Duration::from_millis(2500),
        "served {served}, 503 after {first_503:?}"
    );
    let response = client().get(&url).send().await.unwrap();
    assert_proxy_error(response, 503, "PROXY_NO_TOKEN").await;
    let ready_body = w.proxy.admin_get("/readyz").await;
    assert_eq!(ready_body.status(), 503);
    assert!(ready_body.text().await.unwrap().contains("marketing"));
    let upstream_before = w
        .sandbox
        .requests()
        .iter()
        .filter(|r| r.target.starts_with("/crm"))
        .count();
    // No request went upstream with the expired token.
    for _ in 0..5 {
        assert_eq!(status_of(&url).await, 503);
    }
    assert_eq!(
        w.sandbox
            .requests()
            .iter()
            .filter(|r| r.target.starts_with("/crm"))
            .count(),
        upstream_before
    );
    let text = w.proxy.metrics().await;
    assert!(
        metric(
            &text,
            r#"hubspot_proxy_token_refreshes_total{account="marketing",result="failure"}"#
        )
        .unwrap()
            >= 1.0
    );

    w.sandbox.oauth().set_mode(TokenMode::Normal);
    let deadline = Instant::now() + Duration::from_secs(20);
    while status_of(&url).await != 200 {
        assert!(Instant::now() < deadline, "no recovery:\n{}", w.proxy.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ready(&w).await;
    assert_eq!(w.sandbox.oauth().max_concurrent_token_calls(), 1);
    assert_no_secrets(&w);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twelve_expired_authentication_401s_cause_one_refresh_and_twelve_replays() {
    let w = start(sandbox_with(600).await, Scratch::new(), "").await;
    ready(&w).await;
    assert_eq!(w.sandbox.oauth().token_calls(), 1);
    // HubSpot invalidates the token early; its 401s are held so all twelve requests get one.
    w.sandbox.oauth().expire_access_tokens_early();
    w.sandbox
        .oauth()
        .set_expired_delay(Duration::from_millis(300));
    let mut requests = Vec::new();
    for i in 0..12 {
        let url = w.proxy.url("/__sandbox/echo");
        let body = format!(
            "{{\"properties\":{{\"email\":\"user{i}@example.com\"}},\"pad\":\"{}\"}}",
            "x".repeat(i * 1000)
        );
        requests.push(tokio::spawn(async move {
            let r = client().post(url).body(body.clone()).send().await.unwrap();
            let status = r.status().as_u16();
            let echoed: serde_json::Value = r.json().await.unwrap_or_default();
            (status, echoed, hex::encode(Sha256::digest(body.as_bytes())))
        }));
    }
    for r in requests {
        let (status, echoed, sha) = r.await.unwrap();
        assert_eq!(status, 200, "{echoed}");
        assert_eq!(echoed["body_sha256"], sha, "replayed POST body intact");
    }
    assert_eq!(
        w.sandbox.oauth().token_calls(),
        2,
        "one refresh for twelve 401s"
    );
    let posts = w
        .sandbox
        .requests()
        .into_iter()
        .filter(|r| r.target == "/__sandbox/echo")
        .count();
    assert_eq!(
        posts, 24,
        "each request sent twice: once rejected, once replayed"
    );
    let text = w.proxy.metrics().await;
    assert_eq!(
        metric(
            &text,
            r#"hubspot_proxy_replays_total{account="marketing",reason="expired_token"}"#
        ),
        Some(12.0)
    );
}

/// A replay after EXPIRED_AUTHENTICATION is one resend, counted once: in `replays_total`,
/// which exists for it, and in no `retries_total` series, so the two counters together add
/// up to the resends that went over the wire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_expired_token_replay_is_counted_once() {
    let w = start(sandbox_with(600).await, Scratch::new(), "").await;
    ready(&w).await;
    w.sandbox.oauth().expire_access_tokens_early();
    let response = client()
        .post(w.proxy.url("/__sandbox/echo"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let sends = w
        .sandbox
        .requests()
        .into_iter()
        .filter(|r| r.target == "/__sandbox/echo")
        .count();
    assert_eq!(sends, 2, "sent once, rejected, replayed once");
    let text = w.proxy.metrics().await;
    let replays = metric(
        &text,
        r#"hubspot_proxy_replays_total{account="marketing",reason="expired_token"}"#,
    );
    assert_eq!(replays, Some(1.0), "{text}");
    let retries: Vec<(&str, f64)> = text
        .lines()
        .filter(|l| l.starts_with(r#"hubspot_proxy_retries_total{account="marketing","#))
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series, value.parse().unwrap())
        })
        .collect();
    assert!(
        retries.iter().any(|(s, _)| s.contains(r#"reason="expired_token""#)),
        "retries_total{{reason=\"expired_token\"}} stays exposed (at 0) for existing dashboards:\n{text}"
    );
    assert!(
        retries.iter().all(|(_, n)| *n == 0.0),
        "the replay is counted in retries_total too: {retries:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_401s_and_large_bodies_pass_through() {
    let w = start(sandbox_with(600).await, Scratch::new(), "").await;
    ready(&w).await;
    // A 401 that is not EXPIRED_AUTHENTICATION is HubSpot's answer to pass on, not a refresh signal.
    let response = w.proxy.post("/__sandbox/status/401", "{}").await;
    assert_eq!(response.status(), 401);
    assert_eq!(w.sandbox.oauth().token_calls(), 1);
    // A body over 1 MiB streams, so its EXPIRED_AUTHENTICATION 401 passes through, and the
    // token is still retired so the next request gets a fresh one.
    w.sandbox.oauth().expire_access_tokens_early();
    let big = vec![b'z'; 1024 * 1024 + 1];
    let response = w.proxy.post("/__sandbox/echo", big).await;
    assert_eq!(response.status(), 401);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["category"], "EXPIRED_AUTHENTICATION");
    assert_eq!(
        status_of(&w.proxy.url("/crm/v3/objects/contacts")).await,
        200
    );
    assert_eq!(w.sandbox.oauth().token_calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_refresh_tokens_land_in_their_file() {
    let sandbox = sandbox_with(4).await;
    sandbox.oauth().set_rotation(true);
    let w = start(sandbox, Scratch::new(), "").await;
    ready(&w).await;
    let file = w.scratch.path("marketing.refresh");
    let read = || std::fs::read_to_string(&file).unwrap().trim().to_string();
    eventually(Duration::from_secs(3), "first rotation saved", || {
        (read() != REFRESH).then_some(())
    })
    .await;
    let first = read();
    assert!(w.sandbox.oauth().refresh_token_valid(&first));
    assert!(
        !w.sandbox.oauth().refresh_token_valid(REFRESH),
        "the old one was retired by HubSpot"
    );
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    // The next refresh must use the rotated token (the old one no longer works) and rotate again.
    eventually(Duration::from_secs(6), "second rotation saved", || {
        (read() != first).then_some(())
    })
    .await;
    let text = w.proxy.metrics().await;
    assert_eq!(
        metric(
            &text,
            r#"hubspot_proxy_token_refreshes_total{account="marketing",result="failure"}"#
        ),
        Some(0.0)
    );
    assert_eq!(
        status_of(&w.proxy.url("/crm/v3/objects/contacts")).await,
        200
    );
    assert_no_secrets(&w);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_refresh_token_needs_reauthorization_without_a_refresh_loop() {
    let scratch = Scratch::new();
    scratch.write("marketing.refresh", "na1-revoked-token");
    let w = start_process(sandbox_with(600).await, scratch, "").await;
    let url = w.proxy.url("/crm/v3/objects/contacts");
    eventually(Duration::from_secs(5), "the refusal is logged", || {
        w.proxy.log().contains("invalid_grant").then_some(())
    })
    .await;
    let response = client().get(&url).send().await.unwrap();
    assert_proxy_error(response, 503, "PROXY_NEEDS_REAUTHORIZATION").await;
    let ready = w.proxy.admin_get("/readyz").await;
    assert_eq!(ready.status(), 503);
    let ready: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(ready["not_ready"][0]["reason"], "needs_reauthorization");
    let status: serde_json::Value = w.proxy.admin_get("/status").await.json().await.unwrap();
    let account = &status["accounts"][0];
    assert_eq!(account["state"], "needs_reauthorization");
    assert_eq!(account["reauthorization"]["error"], "invalid_grant");
    assert!(account["reauthorization"]["action"]
        .as_str()
        .unwrap()
        .contains(&format!(
            "hubspot-auth-proxy oauth authorize --config {} --account marketing --scopes",
            w.proxy.config_path().display()
        )));
    metric_becomes(
        &w.proxy,
        r#"hubspot_proxy_account_state{account="marketing",state="needs_reauthorization"}"#,
        1.0,
        Duration::from_secs(1),
    )
    .await;
    assert!(
        w.proxy.log().contains("missing or unknown refresh token"),
        "HubSpot's error_description is logged"
    );
    // No refresh loop: requests and time do not bring more token calls (transient failures
    // would have retried at 1 s and 2 s by now).
    let calls = w.sandbox.oauth().token_calls();
    assert_eq!(calls, 1);
    for _ in 0..20 {
        assert_eq!(status_of(&url).await, 503);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(w.sandbox.oauth().token_calls(), calls, "no refresh storm");
    // Someone puts a good refresh token in the file: the proxy picks it up at once.
    w.scratch.replace_atomically("marketing.refresh", REFRESH);
    let deadline = Instant::now() + Duration::from_secs(5);
    while status_of(&url).await != 200 {
        assert!(Instant::now() < deadline, "no recovery:\n{}", w.proxy.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    metric_becomes(
        &w.proxy,
        r#"hubspot_proxy_account_state{account="marketing",state="ready"}"#,
        1.0,
        Duration::from_secs(1),
    )
    .await;
    assert_eq!(
        w.proxy
            .log()
            .matches("account needs re-authorization")
            .count(),
        1,
        "logged once"
    );
    assert_no_secrets(&w);
    assert!(!w.proxy.log().contains("na1-revoked-token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_client_secret_names_the_client_keys_and_sighup_retries() {
    let sandbox = sandbox_with(600).await;
    sandbox
        .oauth()
        .set_client(CLIENT_ID, "cs-rotated-by-hubspot");
    let w = start_process(sandbox, Scratch::new(), "").await;
    let url = w.proxy.url("/crm/v3/objects/contacts");
    eventually(Duration::from_secs(5), "the refusal is logged", || {
        w.proxy.log().contains("invalid_client").then_some(())
    })
    .await;
    let response = client().get(&url).send().await.unwrap();
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["category"], "PROXY_NEEDS_REAUTHORIZATION");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("client_id or client_secret"));
    assert_eq!(w.sandbox.oauth().token_calls(), 1);
    // The operator fixes it at HubSpot's side (here: the stand-in takes the old secret back)
    // and sends SIGHUP: one retry, and the account is served.
    w.sandbox.oauth().set_client(CLIENT_ID, CLIENT_SECRET);
    w.proxy.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    while status_of(&url).await != 200 {
        assert!(Instant::now() < deadline, "no recovery:\n{}", w.proxy.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(w.sandbox.oauth().token_calls(), 2);
    assert_no_secrets(&w);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubspot_rejecting_every_token_causes_no_refresh_storm() {
    let w = start(sandbox_with(600).await, Scratch::new(), "").await;
    ready(&w).await;
    assert_eq!(w.sandbox.oauth().token_calls(), 1);
    w.sandbox.oauth().reject_all_as_expired(true);
    let url = w.proxy.url("/crm/v3/objects/contacts");
    let results = join_all((0..30).map(|_| {
        let url = url.clone();
        async move {
            let r = client().get(url).send().await.unwrap();
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            (status, body["category"].as_str().unwrap_or("").to_string())
        }
    }))
    .await;
    for (status, category) in &results {
        assert_eq!(
            (*status, category.as_str()),
            (401, "EXPIRED_AUTHENTICATION"),
            "HubSpot's 401 is passed on"
        );
    }
    assert!(
        w.sandbox.oauth().token_calls() <= 2,
        "one forced refresh at most, not {}",
        w.sandbox.oauth().token_calls()
    );
    let text = w.proxy.metrics().await;
    let passed = |reason: &str| {
        metric(
            &text,
            &format!(
                r#"hubspot_proxy_expired_authentication_passed_total{{account="marketing",reason="{reason}"}}"#
            ),
        )
        .unwrap_or(0.0)
    };
    assert_eq!(passed("replay_rejected") + passed("refresh_spaced"), 30.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_token_endpoint_version_works_with_parameters_in_the_body() {
    for path in ["/oauth/v1/token", "/oauth/v3/token", "/oauth/2026-03/token"] {
        let sandbox = sandbox_with(600).await;
        let extra = format!("token_url = \"{}{path}\"", sandbox.url());
        let w = start(sandbox, Scratch::new(), &extra).await;
        ready(&w).await;
        let call = w
            .sandbox
            .requests()
            .into_iter()
            .find(|r| r.target.starts_with("/oauth"))
            .unwrap();
        assert_eq!(call.target, path, "no query string");
        assert_eq!(
            call.headers["content-type"],
            "application/x-www-form-urlencoded"
        );
        let form: std::collections::HashMap<String, String> =
            form_urlencoded::parse(&call.body).into_owned().collect();
        assert_eq!(form["grant_type"], "refresh_token");
        assert_eq!(form["client_id"], CLIENT_ID);
        assert_eq!(form["client_secret"], CLIENT_SECRET);
        assert_eq!(form["refresh_token"], REFRESH);
        assert_eq!(
            status_of(&w.proxy.url("/crm/v3/objects/contacts")).await,
            200
        );
    }
    // The default is the date-versioned endpoint.
    let w = start(sandbox_with(600).await, Scratch::new(), "").await;
    ready(&w).await;
    assert!(w
        .sandbox
        .requests()
        .iter()
        .any(|r| r.target == "/oauth/2026-03/token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_and_oauth_accounts_mix() {
    let sandbox = sandbox_with(600).await;
    sandbox.accept_token(TOKEN_A);
    let scratch = Scratch::new();
    let token = scratch.write("token", TOKEN_A);
    let config = format!(
        "{}\n{}",
        static_config(&sandbox.url(), &token, ""),
        oauth_config(&sandbox, &scratch, "")
            .split("[[accounts]]")
            .nth(1)
            .map(|s| format!("[[accounts]]{s}"))
            .unwrap()
    );
    let proxy =
        TestProxy::start_with(&config, &[("HSAP_TEST_CLIENT_SECRET", CLIENT_SECRET)], &[]).await;
    let w = World {
        sandbox,
        scratch,
        proxy,
    };
    ready(&w).await;
    assert_eq!(
        status_of(&w.proxy.url("/crm/v3/objects/contacts")).await,
        200
    );
    let r = client()
        .get(w.proxy.url("/crm/v3/objects/contacts"))
        .header("x-auth-proxy-account", "marketing")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = w
        .sandbox
        .requests()
        .into_iter()
        .filter(|r| r.target.starts_with("/crm"))
        .collect::<Vec<_>>();
    assert_eq!(seen[0].bearer(), Some(TOKEN_A));
    assert!(seen[1].bearer().unwrap().starts_with("CJ-sandbox-"));
    let text = w.proxy.metrics().await;
    assert_eq!(
        metric(
            &text,
            r#"hubspot_proxy_token_expiry_timestamp_seconds{account="main"}"#
        ),
        Some(f64::INFINITY)
    );
}

fn authorize_command(
    config: &std::path::Path,
    sandbox: &Sandbox,
    extra: &[&str],
) -> std::process::Child {
    std::process::Command::new(BIN)
        .args(["oauth", "authorize", "--config"])
        .arg(config)
        .args([
            "--account",
            "marketing",
            "--scopes",
            "crm.objects.contacts.read crm.objects.contacts.write",
            "--redirect-port",
            "0",
        ])
        .arg("--authorize-url")
        .arg(format!("{}/oauth/authorize", sandbox.url()))
        .args(extra)
        .env("HSAP_TEST_CLIENT_SECRET", CLIENT_SECRET)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Reads the authorize URL the command prints and returns its query parameters.
fn read_authorize_url(
    child: &mut std::process::Child,
) -> (
    std::io::BufReader<std::process::ChildStdout>,
    std::collections::HashMap<String, String>,
) {
    use std::io::BufRead;
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let query = line.trim().split_once('?').unwrap().1.to_string();
    (
        out,
        form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_authorize_completes_a_code_exchange() {
    let sandbox = sandbox_with(1800).await;
    let scratch = Scratch::new();
    let config = scratch.write("c.toml", &oauth_config(&sandbox, &scratch, ""));
    std::fs::remove_file(scratch.path("marketing.refresh")).unwrap();
    let mut child = authorize_command(&config, &sandbox, &[]);
    let (mut out, params) = read_authorize_url(&mut child);
    assert_eq!(params["client_id"], CLIENT_ID);
    assert_eq!(params["code_challenge_method"], "S256");
    assert_eq!(
        params["scope"],
        "crm.objects.contacts.read crm.objects.contacts.write"
    );
    assert!(params["state"].len() >= 16);
    let redirect = params["redirect_uri"].clone();
    assert!(redirect.starts_with("http://localhost:"));
    // What HubSpot does after consent: remember the code with its challenge, then redirect.
    sandbox
        .oauth()
        .issue_code("code-abc", &params["code_challenge"], &redirect);
    let port = redirect
        .trim_start_matches("http://localhost:")
        .trim_end_matches('/');
    let page = client()
        .get(format!(
            "http://127.0.0.1:{port}/?code=code-abc&state={}",
            params["state"]
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let status = child.wait().unwrap();
    assert!(status.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert!(
        rest.contains("authorized account marketing for hub 62515"),
        "{rest}"
    );
    let written = std::fs::read_to_string(scratch.path("marketing.refresh")).unwrap();
    assert!(sandbox.oauth().refresh_token_valid(written.trim()));
    assert!(
        !rest.contains(written.trim()),
        "the token itself is never printed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_authorize_refuses_a_wrong_state_and_an_error_redirect() {
    for redirect_query in [
        "code=code-abc&state=forged",
        "error=access_denied&error_description=user%20said%20no",
    ] {
        let sandbox = sandbox_with(1800).await;
        let scratch = Scratch::new();
        let config = scratch.write("c.toml", &oauth_config(&sandbox, &scratch, ""));
        let mut child = authorize_command(&config, &sandbox, &[]);
        let (_out, params) = read_authorize_url(&mut child);
        sandbox.oauth().issue_code(
            "code-abc",
            &params["code_challenge"],
            &params["redirect_uri"],
        );
        let port = params["redirect_uri"]
            .trim_start_matches("http://localhost:")
            .trim_end_matches('/')
            .to_string();
        let page = client()
            .get(format!("http://127.0.0.1:{port}/?{redirect_query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 400);
        let output = child.wait_with_output().unwrap();
        assert!(!output.status.success());
        let err = String::from_utf8_lossy(&output.stderr);
        assert!(err.contains("nothing was written"), "{err}");
        assert_eq!(
            std::fs::read_to_string(scratch.path("marketing.refresh")).unwrap(),
            REFRESH,
            "file untouched"
        );
    }
    // And a timeout.
    let sandbox = sandbox_with(1800).await;
    let scratch = Scratch::new();
    let config = scratch.write("c.toml", &oauth_config(&sandbox, &scratch, ""));
    let child = authorize_command(&config, &sandbox, &["--timeout-secs", "1"]);
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no redirect arrived"));
}
