//! Fleet mode's building blocks against a real redis-server: the shared window under
//! concurrency from several connections, lease and fence, the sealed token exchange,
//! heartbeats, reconnection after a restart, and `check`.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::redis_server::RedisServer;
use crate::support::*;
use hubspot_auth_proxy::config::Secret;
use hubspot_auth_proxy::fleet::{
    AccountTokens, FencedWrite, Fleet, FleetError, FleetMetrics, Redis, SharedToken, SharedWindow,
};
use hubspot_auth_proxy::ratelimit::{Admission, TEN_SECONDS};
use hubspot_auth_proxy::settings::{FleetSettings, Settings};

const ACCESS: &str = "CJSP5qf1KhICAQEYs-gDIIGOBii1hQIyGQAf3xBKmlwHjX7OIpuIFEavB2";
const REFRESH: &str = "na1-6a7e-2c4f-4c1b-9f70-1234567890ab";
const CLIENT_SECRET: &str = "cs-0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";

fn fleet_config(url: &str, timeout_ms: u64) -> FleetSettings {
    let text = format!(
        "[[accounts]]\nname = \"main\"\ntoken = {{ value = \"x\" }}\n[fleet]\nredis_url = \"{url}\"\nnamespace = \"t\"\ntimeout_ms = {timeout_ms}\n"
    );
    let config = hubspot_auth_proxy::config::Config::parse(&text).unwrap();
    Settings::from_config(config).unwrap().fleet.unwrap()
}

/// One "replica": its own connection manager, as a separate process would have.
fn replica(server: &RedisServer) -> Redis {
    Redis::connect(
        &fleet_config(&server.url(), 2000),
        None,
        FleetMetrics::unregistered(),
    )
    .unwrap()
}

fn window(redis: &Redis, limit: u32, search: u32) -> SharedWindow {
    SharedWindow::new(
        redis.clone(),
        hubspot_auth_proxy::fleet::keys::AccountKeys::new("t", "main"),
        limit,
        search,
    )
}

/// Fires `count` admissions spread over the replicas at once; the answers in completion order.
async fn admit_all(
    windows: &[SharedWindow],
    count: usize,
    search: bool,
    max_wait: Duration,
) -> Vec<Admission> {
    let futures = (0..count).map(|i| {
        let w = windows[i % windows.len()].clone();
        async move { w.admit(search, max_wait).await.unwrap().admission }
    });
    join_all(futures).await
}

fn send_times(answers: &[Admission]) -> Vec<tokio::time::Instant> {
    let mut times: Vec<tokio::time::Instant> = answers
        .iter()
        .filter_map(|a| match a {
            Admission::SendAt(t) => Some(*t),
            Admission::Refused { .. } => None,
        })
        .collect();
    times.sort();
    times
}

#[tokio::test]
async fn three_replicas_never_plan_more_than_the_limit_in_any_window() {
    let server = RedisServer::start();
    let windows: Vec<_> = (0..3).map(|_| window(&replica(&server), 20, 0)).collect();
    // 90 requests at once, 3x the budget, all willing to wait a minute.
    let answers = admit_all(&windows, 90, false, Duration::from_secs(60)).await;
    let times = send_times(&answers);
    assert_eq!(times.len(), 90, "every request gets a slot within a minute");
    // Any window a little shorter than TEN_SECONDS (slack for the answers' arrival jitter)
    // holds at most 20 planned sends; the budget is used: 20 go at once.
    let span = TEN_SECONDS - Duration::from_millis(100);
    for (i, start) in times.iter().enumerate() {
        let inside = times[i..]
            .iter()
            .take_while(|t| **t < *start + span)
            .count();
        assert!(inside <= 20, "{inside} sends planned within one window");
    }
    let first = times[0];
    assert_eq!(
        times
            .iter()
            .filter(|t| **t < first + Duration::from_secs(1))
            .count(),
        20
    );
    let last = *times.last().unwrap();
    assert!(last - first >= TEN_SECONDS * 4 - Duration::from_millis(200));

    // Memory stays bounded and every key expires.
    let mut redis = server.inspect();
    let card: usize = ::redis::cmd("ZCARD")
        .arg("t:acct:{main}:window")
        .query(&mut redis)
        .unwrap();
    assert!(card <= 20, "window holds {card} entries");
    let ttl: i64 = ::redis::cmd("PTTL")
        .arg("t:acct:{main}:window")
        .query(&mut redis)
        .unwrap();
    assert!(ttl > 0 && ttl <= 60_000 + 10_250 + 1_000, "ttl {ttl}");
}

#[tokio::test]
async fn the_wait_bound_admits_exactly_the_budget_and_refuses_the_rest() {
    let server = RedisServer::start();
    let windows: Vec<_> = (0..3).map(|_| window(&replica(&server), 20, 0)).collect();
    let answers = admit_all(&windows, 60, false, Duration::from_secs(5)).await;
    assert_eq!(send_times(&answers).len(), 20);
    for answer in &answers {
        if let Admission::Refused { retry_after } = answer {
            assert!(*retry_after > Duration::from_secs(9) && *retry_after <= TEN_SECONDS);
        }
    }
    // Refusals reserved nothing.
    let card: usize = ::redis::cmd("ZCARD")
        .arg("t:acct:{main}:window")
        .query(&mut server.inspect())
        .unwrap();
    assert_eq!(card, 20);
}

#[tokio::test]
async fn search_adaptive_limit_and_release_hold_fleet_wide() {
    let server = RedisServer::start();
    let windows: Vec<_> = (0..2).map(|_| window(&replica(&server), 10, 2)).collect();
    // Search: 2 per second across both replicas; non-search traffic is not held back.
    let answers = admit_all(&windows, 6, true, Duration::ZERO).await;
    assert_eq!(send_times(&answers).len(), 2);
    let answers = admit_all(&windows, 3, false, Duration::ZERO).await;
    assert_eq!(send_times(&answers).len(), 3);
    assert_eq!(windows[0].usage().await.unwrap().used, 5);

    // Adaptive shaping lowers the budget for every replica at once.
    windows[1].set_limit(6).await.unwrap();
    let answers = admit_all(&windows, 4, false, Duration::ZERO).await;
    assert_eq!(send_times(&answers).len(), 1, "5 used of 6");
    let usage = windows[0].usage().await.unwrap();
    assert_eq!((usage.used, usage.limit), (6, 6));
    let ttl: i64 = ::redis::cmd("PTTL")
        .arg("t:acct:{main}:limit")
        .query(&mut server.inspect())
        .unwrap();
    assert!(ttl > 0);

    // A released reservation frees its slot.
    windows[1].set_limit(7).await.unwrap();
    let admitted = windows[0].admit(false, Duration::ZERO).await.unwrap();
    assert!(matches!(admitted.admission, Admission::SendAt(_)));
    let refused = windows[1].admit(false, Duration::ZERO).await.unwrap();
    assert!(matches!(refused.admission, Admission::Refused { .. }));
    windows[0].release(admitted.ticket.unwrap()).await.unwrap();
    let again = windows[1].admit(false, Duration::ZERO).await.unwrap();
    assert!(matches!(again.admission, Admission::SendAt(_)));
}

fn shared_token(generation: u64, access: &str) -> SharedToken {
    SharedToken {
        access_token: Secret::new(access.to_string()),
        expires_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 1800,
        refresh_token: Some(Secret::new(REFRESH.to_string())),
        generation,
    }
}

fn tokens_of(fleet: &Fleet) -> AccountTokens {
    fleet
        .tokens()
        .account("main", &Secret::new(CLIENT_SECRET.to_string()))
}

fn fleet(server: &RedisServer) -> Fleet {
    Fleet::connect(
        &fleet_config(&server.url(), 2000),
        None,
        FleetMetrics::unregistered(),
    )
    .unwrap()
}

#[tokio::test]
async fn one_contender_wins_the_lease_and_a_lapsed_holder_cannot_write() {
    let server = RedisServer::start();
    let (a, b) = (fleet(&server), fleet(&server));
    let (ta, tb) = (tokens_of(&a), tokens_of(&b));

    let ttl = Duration::from_millis(300);
    let (la, lb) = tokio::join!(ta.try_lease(ttl), tb.try_lease(ttl));
    let (la, lb) = (la.unwrap(), lb.unwrap());
    assert!(la.is_some() != lb.is_some(), "exactly one contender wins");
    let stalled = la.or(lb).unwrap();

    // The holder stalls past its lease; another replica takes over and writes generation 1.
    eventually(Duration::from_secs(5), "the lease to lapse", || {
        let pttl: i64 = ::redis::cmd("PTTL")
            .arg("t:acct:{main}:lease")
            .query(&mut server.inspect())
            .unwrap();
        (pttl == -2).then_some(())
    })
    .await;
    let leader = tb
        .try_lease(Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert!(
        !stalled.renew().await.unwrap(),
        "a lapsed lease is not renewed"
    );
    assert_eq!(
        tb.publish(&leader, &shared_token(1, "new-token-of-the-leader"))
            .await
            .unwrap(),
        FencedWrite::Written { generation: 1 }
    );
    // The ex-leader's late write is refused, and the leader cannot go backwards either.
    assert_eq!(
        ta.publish(&stalled, &shared_token(2, "late-token-of-the-stalled"))
            .await
            .unwrap(),
        FencedWrite::NotHolder
    );
    assert_eq!(
        tb.publish(&leader, &shared_token(1, "same-generation"))
            .await
            .unwrap(),
        FencedWrite::Stale
    );
    let latest = ta.latest().await.unwrap().unwrap();
    assert_eq!(latest.access_token.expose(), "new-token-of-the-leader");
    assert_eq!(latest.generation, 1);
    leader.release().await.unwrap();
    assert!(tb.try_lease(ttl).await.unwrap().is_some(), "released");
}

#[tokio::test]
async fn replicas_hear_of_a_new_token_within_a_second_and_redis_holds_nothing_readable() {
    let server = RedisServer::start();
    let (writer, reader) = (fleet(&server), fleet(&server));
    let (tw, tr) = (tokens_of(&writer), tokens_of(&reader));
    let mut notices = reader.tokens().subscribe();
    // The write waits until Redis counts both replicas' subscribers on the channel.
    let mut redis = server.inspect();
    eventually(
        Duration::from_secs(5),
        "both subscribers on t:tokens",
        || {
            let (_, subscribers): (String, u64) = ::redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg("t:tokens")
                .query(&mut redis)
                .unwrap();
            (subscribers >= 2).then_some(())
        },
    )
    .await;

    let lease = tw
        .try_lease(Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let written = Instant::now();
    tw.publish(&lease, &shared_token(1, ACCESS)).await.unwrap();
    let notice = tokio::time::timeout(Duration::from_secs(1), notices.recv())
        .await
        .expect("a notice within 1 s")
        .unwrap();
    assert_eq!((notice.account.as_str(), notice.generation), ("main", 1));
    assert!(written.elapsed() < Duration::from_secs(1));
    let token = tr.latest().await.unwrap().unwrap();
    assert_eq!(token.access_token.expose(), ACCESS);
    assert_eq!(token.refresh_token.unwrap().expose(), REFRESH);

    // The poll alone finds a new generation (pub/sub is not needed).
    let lonely = hubspot_auth_proxy::fleet::FleetTokens::new(replica(&server), "t");
    let _account = lonely.account("main", &Secret::new(CLIENT_SECRET.to_string()));
    let mut polled = lonely.subscribe();
    lonely.poll().await.unwrap();
    assert_eq!(polled.try_recv().unwrap().generation, 1);

    // A replica with another client secret cannot open it.
    let stranger = reader
        .tokens()
        .account("main", &Secret::new("other".into()));
    assert!(matches!(
        stranger.latest().await,
        Err(FleetError::Sealed(_))
    ));

    // Whoever dumps Redis reads no secret: every key, by GET or DUMP.
    let mut redis = server.inspect();
    let keys: Vec<String> = ::redis::cmd("KEYS").arg("*").query(&mut redis).unwrap();
    assert!(
        keys.contains(&"t:acct:{main}:token".to_string()),
        "{keys:?}"
    );
    let mut dumped = Vec::new();
    for key in &keys {
        let dump: Vec<u8> = ::redis::cmd("DUMP").arg(key).query(&mut redis).unwrap();
        dumped.extend(dump);
        if let Ok(value) = ::redis::cmd("GET").arg(key).query::<Vec<u8>>(&mut redis) {
            dumped.extend(value);
        }
        let ttl: i64 = ::redis::cmd("PTTL").arg(key).query(&mut redis).unwrap();
        assert!(ttl > 0, "{key} has no TTL");
    }
    let text = String::from_utf8_lossy(&dumped);
    for secret in [ACCESS, REFRESH, CLIENT_SECRET] {
        for part in secret.as_bytes().windows(8) {
            let part = std::str::from_utf8(part).unwrap();
            assert!(!text.contains(part), "{part:?} readable in Redis");
        }
    }
}

#[tokio::test]
async fn heartbeats_count_live_replicas() {
    let server = RedisServer::start();
    let fleets: Vec<Fleet> = (0..3).map(|_| fleet(&server)).collect();
    for f in &fleets {
        f.beat().await.unwrap();
    }
    assert_eq!(fleets[0].beat().await.unwrap(), 3);
    assert_eq!(fleets[0].replicas(), 3);
    assert_eq!(fleets[0].fallback_share(100), 30);
    fleets[2].leave().await.unwrap();
    assert_eq!(fleets[0].beat().await.unwrap(), 2);
    let ttl: i64 = ::redis::cmd("PTTL")
        .arg("t:replicas")
        .query(&mut server.inspect())
        .unwrap();
    assert!(ttl > 0);
}

#[tokio::test]
async fn a_replica_falls_back_once_and_returns_within_5_s_of_a_redis_restart() {
    let mut server = RedisServer::start();
    let registry = prometheus::Registry::new();
    let metrics = FleetMetrics::register(&registry);
    let fleet = Fleet::connect(&fleet_config(&server.url(), 100), None, metrics).unwrap();
    fleet.ping().await.unwrap();
    assert!(fleet.is_up());

    server.stop();
    for _ in 0..5 {
        assert!(fleet.ping().await.is_err());
    }
    assert!(!fleet.is_up());
    let text = render(&registry);
    assert_eq!(metric(&text, "hubspot_proxy_fleet_up"), Some(0.0));
    assert_eq!(
        metric(&text, "hubspot_proxy_fleet_fallbacks_total"),
        Some(1.0),
        "one per outage"
    );

    server.restart();
    let back = Instant::now();
    // No traffic needed: the heartbeat brings the replica back.
    eventually(Duration::from_secs(5), "shared mode again", || {
        fleet.is_up().then_some(())
    })
    .await;
    assert!(back.elapsed() < Duration::from_secs(5));
    let text = render(&registry);
    assert_eq!(metric(&text, "hubspot_proxy_fleet_up"), Some(1.0));
    assert!(metric(&text, "hubspot_proxy_fleet_redis_duration_seconds_count").unwrap() > 5.0);
}

#[tokio::test]
async fn a_redis_that_never_answers_times_out_at_timeout_ms() {
    // Accepts connections, never replies.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}", silent.local_addr().unwrap());
    let redis =
        Redis::connect(&fleet_config(&url, 100), None, FleetMetrics::unregistered()).unwrap();
    let started = Instant::now();
    assert!(matches!(redis.ping().await, Err(FleetError::Timeout(100))));
    assert!(started.elapsed() < Duration::from_secs(1));
}

fn render(registry: &prometheus::Registry) -> String {
    use prometheus::Encoder;
    let mut out = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&registry.gather(), &mut out)
        .unwrap();
    String::from_utf8(out).unwrap()
}

fn check(config: &str) -> (i32, String, String) {
    let scratch = Scratch::new();
    let path = scratch.write("config.toml", config);
    let out = Command::new(BIN)
        .args(["check", "--config", path.to_str().unwrap()])
        .env_remove("HUBSPOT_AUTH_PROXY_CONFIG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn check_config(fleet: &str) -> String {
    format!("[[accounts]]\nname = \"main\"\ntoken = {{ env = \"PATH\" }}\n\n[fleet]\n{fleet}\n")
}

#[test]
fn check_reaches_redis_and_names_fleet_redis_url_when_it_cannot() {
    let server = RedisServer::start();
    let (code, out, err) = check(&check_config(&format!("redis_url = \"{}\"", server.url())));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("fleet: Redis answers"), "{out}");

    let closed = format!("redis_url = \"redis://127.0.0.1:{}\"", closed_port());
    let (code, _, err) = check(&check_config(&closed));
    assert_eq!(code, 2);
    let lines: Vec<_> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains("fleet.redis_url"), "{err}");
}

#[test]
fn check_refuses_a_password_in_the_url_and_bad_values() {
    let (code, _, err) = check(&check_config(
        "redis_url = \"redis://:s3cr3t-pass@127.0.0.1:6379\"",
    ));
    assert_eq!(code, 2);
    assert!(
        err.contains("fleet.redis_url") && err.contains("fleet.redis_password"),
        "{err}"
    );
    assert!(!err.contains("s3cr3t"), "{err}");

    let (code, _, err) = check(&check_config(
        "redis_url = \"http://127.0.0.1:6379\"\ntimeout_ms = 0",
    ));
    assert_eq!(code, 2);
    assert!(
        err.contains("fleet.redis_url") && err.contains("fleet.timeout_ms"),
        "{err}"
    );

    let (code, _, err) = check(&check_config(
        "redis_url = \"redis://127.0.0.1\"\nbogus = 1",
    ));
    assert_eq!(code, 2);
    assert!(err.contains("bogus"), "{err}");
}
