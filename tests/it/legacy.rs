//! Legacy `?hapikey=` scripts and several accounts behind one proxy, over the wire.

use crate::support::*;

const KEY_MAIN: &str = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
const KEY_MARKETING: &str = "ffffffff-1111-4222-8333-444444444444";
const DEV_KEY: &str = "dev-key-5555-6666";

/// Two static accounts, `main` (TOKEN_A) and `marketing` (TOKEN_B), and the given `[legacy]`
/// section; the binary at debug level when the test reads request lines or checks them for keys.
async fn world(legacy: &str, run: Run) -> World {
    World::build()
        .second_account()
        .tail(legacy)
        .run(run)
        .start()
        .await
}

fn keyed() -> String {
    format!(
        "[legacy]\nhapikey = \"translate\"\nkeys = [\n  {{ sha256 = \"{}\", account = \"main\" }},\n  {{ sha256 = \"{}\", account = \"marketing\" }},\n]\n",
        sha(KEY_MAIN),
        sha(KEY_MARKETING)
    )
}

async fn get(proxy: &TestProxy, target: &str) -> (u16, serde_json::Value) {
    let request = format!("GET {target} HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n");
    let response = raw_exchange(proxy.proxy, request.as_bytes());
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("");
    (
        raw_status(&response),
        serde_json::from_str(body).unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_old_setup_guide_script_works_again() {
    let w = world("", Run::process_debug()).await;
    let (status, body) = get(
        &w.proxy,
        &format!("/contacts/v1/lists/all/contacts/all?hapikey={KEY_MAIN}&count=1"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["contacts"].as_array().unwrap().len(), 1);
    assert_eq!(body["has-more"], true);
    let seen = &w.sandbox.requests()[0];
    assert_eq!(seen.target, "/contacts/v1/lists/all/contacts/all?count=1");
    assert_eq!(seen.bearer(), Some(TOKEN_A));
    eventually(
        std::time::Duration::from_secs(5),
        "the debug log shows the redacted target",
        || w.proxy.log().contains("hapikey=REDACTED").then_some(()),
    )
    .await;
    w.proxy.assert_log_free_of(&[KEY_MAIN, TOKEN_A, TOKEN_B]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hapikey_is_stripped_wherever_it_stands() {
    let w = world("", Run::InProcess).await;
    let cases = [
        (
            format!("/__sandbox/echo?hapikey={KEY_MAIN}&a=1&b=%20"),
            "/__sandbox/echo?a=1&b=%20",
        ),
        (
            format!("/__sandbox/echo?a=1&hapikey={KEY_MAIN}&b=+"),
            "/__sandbox/echo?a=1&b=+",
        ),
        (
            format!("/__sandbox/echo?a=1&a=2&hapikey={KEY_MAIN}"),
            "/__sandbox/echo?a=1&a=2",
        ),
        (
            format!("/__sandbox/echo?hapikey={KEY_MAIN}&x&hapikey={KEY_MAIN}"),
            "/__sandbox/echo?x",
        ),
        (
            format!("/__sandbox/echo?%68apikey={KEY_MAIN}&xhapikey=1"),
            "/__sandbox/echo?xhapikey=1",
        ),
        (
            format!("/__sandbox/echo?hapikey={KEY_MAIN}"),
            "/__sandbox/echo",
        ),
    ];
    for (target, _) in &cases {
        assert_eq!(get(&w.proxy, target).await.0, 200, "{target}");
    }
    let seen: Vec<String> = w.sandbox.requests().into_iter().map(|r| r.target).collect();
    let expected: Vec<&str> = cases.iter().map(|(_, e)| *e).collect();
    assert_eq!(seen, expected);
    let metrics = w.proxy.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"hubspot_proxy_hapikey_requests_total{account="main",action="translated"}"#
        ),
        Some(6.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mapped_keys_pick_accounts_and_unknown_keys_stay_local() {
    let w = world(&keyed(), Run::process_debug()).await;
    assert_eq!(
        get(
            &w.proxy,
            &format!("/crm/v3/objects/contacts?hapikey={KEY_MARKETING}")
        )
        .await
        .0,
        200
    );
    assert_eq!(
        get(
            &w.proxy,
            &format!("/crm/v3/objects/contacts?limit=1&hapikey={KEY_MAIN}")
        )
        .await
        .0,
        200
    );
    let seen = w.sandbox.requests();
    assert_eq!(seen[0].bearer(), Some(TOKEN_B));
    assert_eq!(seen[0].target, "/crm/v3/objects/contacts");
    assert_eq!(seen[1].bearer(), Some(TOKEN_A));
    assert_eq!(seen[1].target, "/crm/v3/objects/contacts?limit=1");

    let (status, body) = get(&w.proxy, "/crm/v3/objects/contacts?hapikey=not-a-known-key").await;
    assert_eq!(status, 401);
    assert_eq!(body["category"], "PROXY_UNKNOWN_API_KEY");
    assert_eq!(body["status"], "error");
    assert_eq!(
        w.sandbox.request_count(),
        2,
        "an unknown key reached HubSpot"
    );
    let metrics = w.proxy.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"hubspot_proxy_hapikey_requests_total{account="marketing",action="translated"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &metrics,
            r#"hubspot_proxy_hapikey_requests_total{account="main",action="unknown_key"}"#
        ),
        Some(1.0)
    );
    w.proxy
        .assert_log_free_of(&[KEY_MAIN, KEY_MARKETING, "not-a-known-key", TOKEN_A, TOKEN_B]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_mode_answers_locally() {
    let w = world("[legacy]\nhapikey = \"reject\"\n", Run::InProcess).await;
    let (status, body) = get(
        &w.proxy,
        &format!("/crm/v3/objects/contacts?hapikey={KEY_MAIN}"),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(body["category"], "PROXY_API_KEY_REJECTED");
    assert!(body["message"].as_str().unwrap().contains("2022-11-30"));
    assert_eq!(w.sandbox.request_count(), 0);
    // Requests without a key are unaffected.
    assert_eq!(get(&w.proxy, "/crm/v3/objects/contacts").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_mode_passes_the_key_to_hubspot() {
    let w = world("[legacy]\nhapikey = \"forward\"\n", Run::InProcess).await;
    let (status, body) = get(
        &w.proxy,
        &format!("/crm/v3/objects/contacts?hapikey={KEY_MAIN}"),
    )
    .await;
    assert_eq!(status, 401, "HubSpot's own answer");
    assert_eq!(body["category"], "INVALID_AUTHENTICATION");
    let seen = &w.sandbox.requests()[0];
    assert_eq!(
        seen.target,
        format!("/crm/v3/objects/contacts?hapikey={KEY_MAIN}")
    );
    assert_eq!(seen.bearer(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn developer_keys_on_app_settings_paths_pass_untouched() {
    let w = world(&keyed(), Run::InProcess).await;
    for target in [
        format!("/webhooks/v3/123456/subscriptions?hapikey={DEV_KEY}"),
        format!("/crm/v3/extensions/videoconferencing/settings/789?hapikey={DEV_KEY}&x=1"),
        format!("/marketing/v3/marketing-events/42/settings?hapikey={DEV_KEY}"),
    ] {
        get(&w.proxy, &target).await;
        let seen = w.sandbox.requests().pop().unwrap();
        assert_eq!(seen.target, target);
        assert_eq!(seen.bearer(), None, "no bearer on a developer-key path");
    }
    // `*` is one segment: a deeper path is not an app-settings path, so the key is treated as legacy.
    let (status, body) = get(
        &w.proxy,
        &format!("/crm/v3/extensions/videoconferencing/settings/1/2?hapikey={DEV_KEY}"),
    )
    .await;
    assert_eq!(
        (status, body["category"].as_str()),
        (401, Some("PROXY_UNKNOWN_API_KEY"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_header_selects_and_is_removed() {
    let w = world("", Run::InProcess).await;
    let response = client()
        .get(w.proxy.url("/crm/v3/objects/contacts"))
        .header("x-auth-proxy-account", "marketing")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    w.proxy.get("/crm/v3/objects/contacts").await;
    let seen = w.sandbox.requests();
    assert_eq!(seen[0].bearer(), Some(TOKEN_B));
    assert!(!seen[0].headers.contains_key("x-auth-proxy-account"));
    assert_eq!(
        seen[1].bearer(),
        Some(TOKEN_A),
        "the first account is the default"
    );

    let response = client()
        .get(w.proxy.url("/crm/v3/objects/contacts"))
        .header("x-auth-proxy-account", "nope")
        .send()
        .await
        .unwrap();
    assert_proxy_error(response, 400, "PROXY_UNKNOWN_ACCOUNT").await;
    assert_eq!(w.sandbox.request_count(), 2);
    let metrics = w.proxy.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"hubspot_proxy_requests_total{account="marketing",method="GET",status="200"}"#
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_flag_moves_the_default_account() {
    let w = World::build()
        .second_account()
        .edit(|c| {
            c.replace(
                "name = \"marketing\"\n",
                "name = \"marketing\"\ndefault = true\n",
            )
        })
        .start()
        .await;
    assert_eq!(get(&w.proxy, "/crm/v3/objects/contacts").await.0, 200);
    assert_eq!(w.sandbox.requests()[0].bearer(), Some(TOKEN_B));
}

#[test]
fn hash_key_reads_stdin() {
    use std::io::Write;
    let mut child = std::process::Command::new(BIN)
        .arg("hash-key")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"test\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_variants_of_hapikey_are_keys_too() {
    // Without mapped keys: stripped and translated like `hapikey`, never forwarded or logged.
    let w = world("", Run::process_debug()).await;
    for target in [
        format!("/crm/v3/objects/contacts?HAPIKEY={KEY_MAIN}&limit=1"),
        format!("/crm/v3/objects/contacts?limit=1&HapiKey={KEY_MAIN}"),
        format!("/crm/v3/objects/contacts?%48APIKEY={KEY_MAIN}&limit=1"),
    ] {
        let (status, _) = get(&w.proxy, &target).await;
        assert_eq!(status, 200, "{target}");
        let seen = w.sandbox.requests().pop().unwrap();
        assert_eq!(seen.target, "/crm/v3/objects/contacts?limit=1", "{target}");
        assert_eq!(seen.bearer(), Some(TOKEN_A));
    }
    // The request log (debug here) saw the targets; the key is redacted in each.
    eventually(
        std::time::Duration::from_secs(5),
        "three request lines",
        || (w.proxy.log().matches("REDACTED").count() >= 3).then_some(()),
    )
    .await;
    w.proxy.assert_log_free_of(&[KEY_MAIN, TOKEN_A]);

    // With mapped keys, HubSpot's spelling is required: a case variant is an unknown key.
    let w = world(&keyed(), Run::process_debug()).await;
    let (status, body) = get(
        &w.proxy,
        &format!("/crm/v3/objects/contacts?HAPIKEY={KEY_MARKETING}"),
    )
    .await;
    assert_eq!(
        (status, body["category"].as_str()),
        (401, Some("PROXY_UNKNOWN_API_KEY"))
    );
    assert_eq!(w.sandbox.request_count(), 0, "nothing was forwarded");
    w.proxy.assert_log_free_of(&[KEY_MARKETING]);
}
