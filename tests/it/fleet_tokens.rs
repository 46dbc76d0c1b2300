//! Fleet mode's shared OAuth token through the real binary: 2-3 proxy processes, one real
//! redis-server and the stand-in's token endpoint (which counts calls and rotates refresh
//! tokens, so a replica using one the fleet rotated away would fail with invalid_grant).

use std::time::{Duration, Instant};

use crate::support::redis_server::RedisServer;
use crate::support::*;

const CLIENT_ID: &str = "1c0a5b6e-fleet-client";
const CLIENT_SECRET: &str = "cs-fleet-secret-5151";
const REFRESH: &str = "na1-fleet-refresh-initial-3131";

/// One replica's config: its own refresh-token file (as each pod has its own secret mount).
fn replica_config(sandbox: &Sandbox, refresh_file: &std::path::Path, fleet: &str) -> String {
    oauth_config(
        &sandbox.url(),
        CLIENT_ID,
        refresh_file,
        "refresh_min_interval_secs = 1",
        fleet,
    )
}

fn fleet_section(redis: &RedisServer) -> String {
    format!(
        "[fleet]\nredis_url = \"{}\"\nnamespace = \"fleettest\"\ntimeout_ms = 200\n",
        redis.url()
    )
}

async fn oauth_sandbox(expires_in: u64) -> Sandbox {
    let sandbox = oauth_stand_in(CLIENT_ID, CLIENT_SECRET, REFRESH, expires_in).await;
    sandbox.oauth().set_rotation(true);
    sandbox
}

/// Starts replica `name` with its own refresh-token file holding `refresh`.
async fn replica(
    sandbox: &Sandbox,
    scratch: &Scratch,
    name: &str,
    refresh: &str,
    fleet: &str,
) -> TestProxy {
    let file = scratch.write(&format!("{name}.refresh"), refresh);
    let config = replica_config(sandbox, &file, fleet);
    let proxy = TestProxy::start_with(
        &config,
        &[("HSAP_TEST_CLIENT_SECRET", CLIENT_SECRET)],
        &["--log-level", "info"],
    )
    .await;
    ready(&proxy).await;
    proxy
}

async fn ready(proxy: &TestProxy) {
    let url = proxy.admin_url("/readyz");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !matches!(client().get(&url).send().await, Ok(r) if r.status() == 200) {
        assert!(Instant::now() < deadline, "never ready:\n{}", proxy.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A GET through `proxy`, tagged so the stand-in's record says which replica sent it.
async fn get(proxy: &TestProxy, tag: &str) -> u16 {
    status_of(&proxy.url(&format!("/crm/v3/objects/contacts?replica={tag}"))).await
}

/// A redis-server, the stand-in granting `expires_in`-second tokens, and replicas a, b and c.
async fn three_replicas(expires_in: u64) -> (RedisServer, Sandbox, Scratch, Vec<TestProxy>) {
    let redis = RedisServer::start();
    let sandbox = oauth_sandbox(expires_in).await;
    let scratch = Scratch::new();
    let fleet = fleet_section(&redis);
    let mut replicas = Vec::new();
    for name in NAMES {
        replicas.push(replica(&sandbox, &scratch, name, REFRESH, &fleet).await);
    }
    (redis, sandbox, scratch, replicas)
}

const NAMES: [&str; 3] = ["a", "b", "c"];

/// The bearer of the last request the stand-in received from replica `tag`.
fn last_bearer(sandbox: &Sandbox, tag: &str) -> Option<String> {
    let needle = format!("replica={tag}");
    sandbox
        .requests()
        .iter()
        .rev()
        .find(|r| r.target.contains(&needle))
        .and_then(|r| r.bearer().map(str::to_owned))
}

fn adoptions(metrics: &str) -> f64 {
    metric(
        metrics,
        r#"hubspot_proxy_fleet_token_adoptions_total{account="marketing"}"#,
    )
    .unwrap_or(0.0)
}

fn refreshes(metrics: &str) -> f64 {
    metric(
        metrics,
        r#"hubspot_proxy_token_refreshes_total{account="marketing",result="success"}"#,
    )
    .unwrap_or(0.0)
}

/// Every key the proxies wrote, dumped raw (DUMP for every key, GET for strings): none may
/// hold a token, a refresh token or the client secret in any form readable from Redis alone.
fn assert_redis_free_of(redis: &RedisServer, secrets: &[String]) {
    let mut conn = redis.inspect();
    let keys: Vec<String> = ::redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
    assert!(
        keys.iter().any(|k| k.ends_with(":token")),
        "the fleet stored a sealed token: {keys:?}"
    );
    let mut dumped = Vec::new();
    for key in &keys {
        let dump: Vec<u8> = ::redis::cmd("DUMP").arg(key).query(&mut conn).unwrap();
        dumped.extend(dump);
        let kind: String = ::redis::cmd("TYPE").arg(key).query(&mut conn).unwrap();
        if kind == "string" {
            let value: Vec<u8> = ::redis::cmd("GET").arg(key).query(&mut conn).unwrap();
            dumped.extend(value);
        }
        dumped.extend(key.as_bytes());
    }
    let text = String::from_utf8_lossy(&dumped);
    for secret in secrets {
        assert!(!secret.is_empty());
        assert!(
            !text.contains(secret.as_str()),
            "Redis holds a secret in the clear"
        );
    }
}

fn secrets(sandbox: &Sandbox, scratch: &Scratch, replicas: &[&str]) -> Vec<String> {
    let mut all = vec![CLIENT_SECRET.to_string(), REFRESH.to_string()];
    all.extend(sandbox.oauth().issued_access_tokens());
    for name in replicas {
        let file = scratch.path(&format!("{name}.refresh"));
        all.push(std::fs::read_to_string(file).unwrap().trim().to_string());
    }
    all
}

/// (1) Short tokens, three replicas, about two and a half lifetimes: one token call per
/// lifetime for the whole fleet, not one per replica, and all serve the fleet's token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_make_one_refresh_per_token_lifetime() {
    let (redis, sandbox, scratch, replicas) = three_replicas(4).await;
    let names = NAMES;
    let before = sandbox.oauth().token_calls();
    let started = Instant::now();
    let window = Duration::from_secs(10);
    while started.elapsed() < window {
        for (proxy, name) in replicas.iter().zip(names) {
            assert_eq!(get(proxy, name).await, 200, "{}", proxy.log());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let calls = sandbox.oauth().token_calls() - before;
    // A 4 s token is refreshed about every 3 s (25 % ahead, jittered): 3 or 4 calls in 10 s.
    // Three replicas each refreshing on their own would make about 10.
    assert!(
        (2..=5).contains(&calls),
        "{calls} token calls in {window:?} across 3 replicas"
    );
    assert_eq!(sandbox.oauth().max_concurrent_token_calls(), 1);
    // All three end up serving the fleet's newest token, over the wire.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        for (proxy, name) in replicas.iter().zip(names) {
            assert_eq!(get(proxy, name).await, 200);
        }
        let bearers: Vec<_> = names.iter().map(|n| last_bearer(&sandbox, n)).collect();
        if bearers.iter().all(|b| b.is_some() && *b == bearers[0]) {
            break;
        }
        assert!(Instant::now() < deadline, "replicas serve different tokens");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Each replica counted its own calls and adoptions; together they match the stand-in.
    let mut total_refreshes = 0.0;
    let mut total_adoptions = 0.0;
    for proxy in &replicas {
        let m = proxy.metrics().await;
        total_refreshes += refreshes(&m);
        total_adoptions += adoptions(&m);
    }
    assert_eq!(total_refreshes as u64, sandbox.oauth().token_calls());
    assert!(
        total_adoptions >= 2.0 * (calls as f64) - 2.0,
        "{total_adoptions}"
    );
    // Every replica's file holds the fleet's (rotated) refresh token, and it still works.
    let files: Vec<String> = names
        .iter()
        .map(|n| std::fs::read_to_string(scratch.path(&format!("{n}.refresh"))).unwrap())
        .collect();
    assert!(files.iter().all(|f| *f == files[0]));
    assert!(sandbox.oauth().refresh_token_valid(files[0].trim()));
    let all = secrets(&sandbox, &scratch, &names);
    assert_redis_free_of(&redis, &all);
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    for proxy in &replicas {
        proxy.assert_log_free_of(&refs);
    }
}

/// (2) HubSpot calls the fleet's token expired while requests are in flight on all three
/// replicas: one token call for the fleet, every request replayed with the new token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_authentication_on_every_replica_causes_one_fleet_refresh() {
    let (_redis, sandbox, _scratch, replicas) = three_replicas(1800).await;
    let names = NAMES;
    assert_eq!(sandbox.oauth().token_calls(), 1, "later replicas adopted");
    sandbox.oauth().expire_access_tokens_early();
    // The 401s are held a moment, so every replica's requests see the dead token together.
    sandbox
        .oauth()
        .set_expired_delay(Duration::from_millis(300));
    let requests = replicas.iter().zip(names).flat_map(|(proxy, name)| {
        (0..4).map(move |_| {
            let url = proxy.url(&format!("/crm/v3/objects/contacts?replica={name}"));
            async move { status_of(&url).await }
        })
    });
    let statuses = join_all(requests).await;
    assert!(
        statuses.iter().all(|s| *s == 200),
        "{statuses:?}\n{}",
        replicas[0].log()
    );
    assert_eq!(
        sandbox.oauth().token_calls(),
        2,
        "one fleet refresh after EXPIRED_AUTHENTICATION"
    );
    let mut replays = 0.0;
    for proxy in &replicas {
        let m = proxy.metrics().await;
        replays += metric(
            &m,
            r#"hubspot_proxy_replays_total{account="marketing",reason="expired_token"}"#,
        )
        .unwrap_or(0.0);
    }
    assert_eq!(replays, 12.0, "every request was replayed");
}

/// (3) A replica that starts while the fleet holds a valid token adopts it with the fleet's
/// refresh token (its own file holds one the fleet rotated away) and makes no token call.
/// (5) Redis holds nothing readable. `/status` says where each replica's token came from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_started_later_adopts_the_fleets_token_and_refresh_token() {
    let redis = RedisServer::start();
    let sandbox = oauth_sandbox(1800).await;
    let scratch = Scratch::new();
    let fleet = fleet_section(&redis);
    let a = replica(&sandbox, &scratch, "a", REFRESH, &fleet).await;
    assert_eq!(sandbox.oauth().token_calls(), 1);
    // The rotated refresh token lands in A's file just after the token is stored.
    let rotated = eventually(Duration::from_secs(5), "A saves the rotated token", || {
        std::fs::read_to_string(scratch.path("a.refresh"))
            .ok()
            .filter(|t| t != REFRESH)
    })
    .await;
    assert!(!sandbox.oauth().refresh_token_valid(REFRESH));
    // B's file holds the refresh token the fleet already rotated away.
    let b = replica(&sandbox, &scratch, "b", REFRESH, &fleet).await;
    assert_eq!(sandbox.oauth().token_calls(), 1, "B made no token call");
    assert_eq!(get(&b, "b").await, 200);
    assert_eq!(last_bearer(&sandbox, "b"), {
        assert_eq!(get(&a, "a").await, 200);
        last_bearer(&sandbox, "a")
    });
    eventually(
        Duration::from_secs(5),
        "B writes the fleet's refresh token to its own file",
        || (std::fs::read_to_string(scratch.path("b.refresh")).ok()? == rotated).then_some(()),
    )
    .await;
    assert_eq!(adoptions(&b.metrics().await), 1.0);
    assert_eq!(refreshes(&b.metrics().await), 0.0);
    let status_a = &a.status_json().await;
    let status_b = &b.status_json().await;
    let token_of = |s: &serde_json::Value| s["accounts"][0]["fleet_token"].clone();
    assert_eq!(token_of(status_a)["origin"], "refreshed_here");
    assert_eq!(token_of(status_b)["origin"], "adopted");
    assert_eq!(
        token_of(status_a)["generation"],
        token_of(status_b)["generation"]
    );
    let all = secrets(&sandbox, &scratch, &["a", "b"]);
    for secret in &all {
        for status in [&status_a, &status_b] {
            assert!(!status.to_string().contains(secret.as_str()));
        }
    }
    assert_redis_free_of(&redis, &all);
}

/// (6) Redis goes away: replicas keep serving their token and refresh on their own when due,
/// logging the fallback once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_replicas_keep_serving_and_refresh_on_their_own() {
    let mut redis = RedisServer::start();
    let sandbox = oauth_sandbox(4).await;
    sandbox.oauth().set_rotation(false);
    let scratch = Scratch::new();
    let fleet = fleet_section(&redis);
    let a = replica(&sandbox, &scratch, "a", REFRESH, &fleet).await;
    let b = replica(&sandbox, &scratch, "b", REFRESH, &fleet).await;
    redis.stop();
    let before = [refreshes(&a.metrics().await), refreshes(&b.metrics().await)];
    let started = Instant::now();
    // Two token lifetimes: each replica must refresh by itself at least once.
    while started.elapsed() < Duration::from_secs(8) {
        assert_eq!(get(&a, "a").await, 200, "{}", a.log());
        assert_eq!(get(&b, "b").await, 200, "{}", b.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = [refreshes(&a.metrics().await), refreshes(&b.metrics().await)];
    assert!(
        after[0] > before[0] && after[1] > before[1],
        "{before:?} {after:?}"
    );
    for proxy in [&a, &b] {
        let log = proxy.log();
        assert_eq!(
            log.matches("cannot share this account's token").count(),
            1,
            "{log}"
        );
        let status = proxy.status_json().await;
        assert_eq!(
            status["accounts"][0]["fleet_token"]["origin"],
            "refreshed_locally"
        );
    }
}
