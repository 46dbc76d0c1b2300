//! The migration report through the real binary: who still calls which HubSpot API generation,
//! counted per caller kind, with support states for a fixed "today".

use crate::support::*;
use serde_json::Value;

const LABELLED_KEY: &str = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
const UNLABELLED_KEY: &str = "ffffffff-1111-4222-8333-444444444444";
const CLIENT_KEY: &str = "client-key-for-ci-bot";
/// v4 is unsupported (since 2027-03-30), v1-v3 deprecated, 2027-03 current, 2025-09 unsupported.
const TODAY: &str = "2027-04-15";

const V1: &str = "/contacts/v1/lists/all/contacts/all";
const V3: &str = "/crm/v3/objects/contacts";
const V4: &str = "/crm/v4/objects/contacts/1/associations/deals";
const DATED_CURRENT: &str = "/crm/objects/2027-03/contacts";
const DATED_OLD: &str = "/crm/objects/2025-09/contacts";

/// The binary: "today" comes from its environment (HUBSPOT_AUTH_PROXY_TODAY).
async fn world(extra_server: &str, rest: &str) -> World {
    let run = Run::Process {
        env: vec![("HUBSPOT_AUTH_PROXY_TODAY".into(), TODAY.into())],
        flags: vec!["--log-level".into(), "info".into()],
    };
    World::build()
        .server(extra_server)
        .tail(rest)
        .run(run)
        .start()
        .await
}

fn legacy_keys() -> String {
    format!(
        "[legacy]\nkeys = [\n  {{ sha256 = \"{}\", account = \"main\", label = \"nightly-sync\" }},\n  {{ sha256 = \"{}\", account = \"main\" }},\n]\n",
        sha(LABELLED_KEY),
        sha(UNLABELLED_KEY)
    )
}

async fn get(w: &World, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = client().get(w.proxy.url(path));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    request.send().await.unwrap()
}

async fn report(w: &World) -> Value {
    w.proxy.admin_get("/migration").await.json().await.unwrap()
}

fn find<'a>(report: &'a Value, caller: &str, generation: &str) -> &'a Value {
    report["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["caller"] == caller && i["generation"] == generation)
        .unwrap_or_else(|| panic!("no item for {caller} {generation} in {report:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_counts_each_caller_kind_per_generation() {
    let w = world("", &legacy_keys()).await;
    let hapikey = |key: &str, path: &str| format!("{path}?hapikey={key}");
    // A legacy key with a label: two v1 calls and one v4.
    for _ in 0..2 {
        get(&w, &hapikey(LABELLED_KEY, V1), &[]).await;
    }
    get(&w, &hapikey(LABELLED_KEY, V4), &[]).await;
    // A legacy key without a label: v3.
    get(&w, &hapikey(UNLABELLED_KEY, V3), &[]).await;
    // A self-declared caller: dated current, three times, and dated old.
    for _ in 0..3 {
        get(&w, DATED_CURRENT, &[("x-auth-proxy-caller", " web-shop ")]).await;
    }
    get(&w, DATED_OLD, &[("x-auth-proxy-caller", "web-shop")]).await;
    // Nobody in particular.
    get(&w, V3, &[]).await;

    let r = report(&w).await;
    assert!(r["generated_at"].as_str().unwrap().ends_with('Z'), "{r:#}");
    let v1 = find(&r, "nightly-sync", "legacy-v1");
    assert_eq!(v1["count"], 2);
    assert_eq!(v1["account"], "main");
    assert_eq!(v1["api"], "contacts/v1");
    assert_eq!(v1["state"], "deprecated");
    assert_eq!(v1["unsupported_from"], "2027-09-01");
    assert!(v1["first_seen"].as_str().unwrap() <= v1["last_seen"].as_str().unwrap());
    let v4 = find(&r, "nightly-sync", "legacy-v4");
    assert_eq!(
        (v4["count"].as_u64(), v4["state"].as_str()),
        (Some(1), Some("unsupported"))
    );
    assert_eq!(v4["unsupported_from"], "2027-03-30");
    let hash_label = &sha(UNLABELLED_KEY)[..8];
    let v3 = find(&r, hash_label, "legacy-v3");
    assert_eq!(
        (v3["count"].as_u64(), v3["api"].as_str()),
        (Some(1), Some("crm/v3"))
    );
    let current = find(&r, "web-shop", "2027-03");
    assert_eq!(current["count"], 3);
    assert_eq!(current["state"], "current");
    assert_eq!(current["api"], "crm/dated");
    assert_eq!(current["unsupported_from"], "2028-09-01");
    let old = find(&r, "web-shop", "2025-09");
    assert_eq!(old["state"], "unsupported");
    assert_eq!(old["unsupported_from"], "2027-03-01");
    assert_eq!(find(&r, "anonymous", "legacy-v3")["count"], 1);
    assert_eq!(r["items"].as_array().unwrap().len(), 6, "{r:#}");
    // Most urgent first: the two unsupported items lead, the oldest end date first.
    assert_eq!(r["items"][0]["generation"], "2025-09");
    assert_eq!(r["items"][1]["generation"], "legacy-v4");

    // The keys never reach the report or HubSpot; the caller header never reaches HubSpot.
    let text = r.to_string();
    assert!(!text.contains(LABELLED_KEY) && !text.contains(UNLABELLED_KEY));
    for seen in w.sandbox.requests() {
        assert!(
            !seen.headers.contains_key("x-auth-proxy-caller"),
            "{seen:?}"
        );
    }
    assert_eq!(w.sandbox.requests().len(), 9);

    // The metric counts deprecated and unsupported calls only.
    let metrics = w.proxy.metrics().await;
    let series = |api: &str, generation: &str, state: &str| {
        metric(
            &metrics,
            &format!("hubspot_proxy_deprecated_api_requests_total{{account=\"main\",api=\"{api}\",generation=\"{generation}\",state=\"{state}\"}}"),
        )
    };
    assert_eq!(series("contacts/v1", "legacy-v1", "deprecated"), Some(2.0));
    assert_eq!(series("crm/v3", "legacy-v3", "deprecated"), Some(2.0));
    assert_eq!(series("crm/v4", "legacy-v4", "unsupported"), Some(1.0));
    assert_eq!(series("crm/dated", "2025-09", "unsupported"), Some(1.0));
    assert_eq!(series("crm/dated", "2027-03", "current"), None);

    // A SIGHUP reload keeps the counts.
    w.proxy.signal("HUP");
    eventually(std::time::Duration::from_secs(5), "the reload", || {
        w.proxy.log().contains("SIGHUP received").then_some(())
    })
    .await;
    get(&w, V3, &[]).await;
    assert_eq!(
        find(&report(&w).await, "anonymous", "legacy-v3")["count"],
        2
    );
    assert_eq!(
        find(&report(&w).await, "nightly-sync", "legacy-v1")["count"],
        2
    );

    // The command prints it, most urgent first.
    let out = std::process::Command::new(BIN)
        .args(["migration", "--admin", &w.proxy.admin_url("")])
        .output()
        .unwrap();
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("CALLER"), "{table}");
    assert!(
        lines[1].starts_with("web-shop") && lines[1].contains("unsupported from 2027-03-01"),
        "{table}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("nightly-sync")
            && l.contains("contacts/v1")
            && l.contains("2 calls")),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_keys_name_the_caller_and_headers_are_off_by_default() {
    let clients = format!(
        "[[clients]]\nname = \"ci-bot\"\nkey_sha256 = \"{}\"\n",
        sha(CLIENT_KEY)
    );
    let w = world("", &clients).await;
    let response = get(
        &w,
        V1,
        &[
            ("x-auth-proxy-key", CLIENT_KEY),
            ("x-auth-proxy-caller", "ignored"),
        ],
    )
    .await;
    assert_eq!(response.status(), 200);
    for name in ["deprecation", "sunset", "link"] {
        assert!(
            response.headers().get(name).is_none(),
            "{name} sent while off"
        );
    }
    let r = report(&w).await;
    assert_eq!(
        find(&r, "ci-bot", "legacy-v1")["count"],
        1,
        "a client key outranks a declared name"
    );
    assert_eq!(r["items"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deprecation_and_sunset_headers_when_enabled() {
    let w = world("deprecation_headers = true", "").await;
    let v1 = get(&w, V1, &[]).await;
    assert_eq!(v1.status(), 200);
    // Deprecated since the first dated release, 2026-03-01; unsupported from 2027-09-01.
    assert_eq!(v1.headers()["deprecation"], "@1772323200");
    assert_eq!(v1.headers()["sunset"], "Wed, 01 Sep 2027 00:00:00 GMT");
    let link = v1.headers()["link"].to_str().unwrap();
    assert!(
        link.starts_with("<https://") && link.ends_with("rel=\"deprecation\""),
        "{link}"
    );
    let v4 = get(&w, V4, &[]).await;
    assert_eq!(v4.headers()["sunset"], "Tue, 30 Mar 2027 00:00:00 GMT");
    let current = get(&w, DATED_CURRENT, &[]).await;
    for name in ["deprecation", "sunset", "link"] {
        assert!(
            current.headers().get(name).is_none(),
            "{name} on a current API"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_caller_name_is_refused_before_hubspot() {
    let w = world("", "").await;
    for bad in ["two words", &"x".repeat(65), "a/b"] {
        let response = get(&w, V3, &[("x-auth-proxy-caller", bad)]).await;
        assert_eq!(response.status(), 400, "{bad}");
        assert_eq!(
            response.headers()["x-auth-proxy-error"],
            "PROXY_INVALID_CALLER"
        );
    }
    assert_eq!(w.sandbox.requests().len(), 0);
    assert_eq!(report(&w).await["items"].as_array().unwrap().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_past_the_bound_count_as_other() {
    let w = world("", "").await;
    let http = client();
    for i in 0..1003 {
        let response = http
            .get(w.proxy.url(V3))
            .header("x-auth-proxy-caller", format!("caller-{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let r = report(&w).await;
    let items = r["items"].as_array().unwrap();
    assert_eq!(items.len(), 1001, "1,000 names and other");
    assert_eq!(find(&r, "other", "legacy-v3")["count"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_beta_release_is_the_same_dated_api_as_its_release() {
    let w = world("", "").await;
    get(&w, "/crm/objects/2027-03-beta/contacts", &[]).await;
    get(&w, "/crm/objects/2025-09-beta/contacts", &[]).await;
    let r = report(&w).await;
    let beta = find(&r, "anonymous", "2027-03-beta");
    assert_eq!(
        (beta["api"].as_str(), beta["state"].as_str()),
        (Some("crm/dated"), Some("current")),
        "{r:#}"
    );
    let old = find(&r, "anonymous", "2025-09-beta");
    assert_eq!(old["api"], "crm/dated", "{r:#}");
    let metrics = w.proxy.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "hubspot_proxy_deprecated_api_requests_total{account=\"main\",api=\"crm/dated\",generation=\"2025-09-beta\",state=\"unsupported\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
}
