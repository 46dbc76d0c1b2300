//! The right portal, over the wire: a static token for another HubSpot portal is
//! refused, and a token for the configured one is served.

use std::time::Duration;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_another_portal_is_refused_until_the_right_one_arrives() {
    let w = World::build()
        .stand_in(|sandbox| {
            sandbox.accept_token(TOKEN_B);
            sandbox.state().set_hub_id(TOKEN_A, 111);
            sandbox.state().set_hub_id(TOKEN_B, 222);
        })
        .main_account("hub_id = 222")
        .start()
        .await;
    let (sandbox, scratch, proxy) = (&w.sandbox, &w.scratch, &w.proxy);
    let c = client();

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let body: serde_json::Value = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "readyz never named the wrong portal"
        );
        let r = c.get(proxy.admin_url("/readyz")).send().await.unwrap();
        if r.status() == 503 {
            break r.json().await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(body["not_ready"][0]["account"], "main", "{body}");
    assert_eq!(body["not_ready"][0]["last_error"], "wrong_portal", "{body}");

    let response = c
        .get(proxy.url("/crm/v3/objects/contacts"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.headers()["x-auth-proxy-error"],
        "PROXY_WRONG_PORTAL"
    );
    let text = response.text().await.unwrap();
    assert!(text.contains("222") && text.contains("111"), "{text}");
    assert!(!text.contains(TOKEN_A));
    assert!(
        sandbox.requests().is_empty(),
        "nothing reached the wrong portal"
    );

    // The right token arrives: checked again, ready, served.
    scratch.replace_atomically("token", TOKEN_B);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while c
        .get(proxy.admin_url("/readyz"))
        .send()
        .await
        .unwrap()
        .status()
        != 200
    {
        assert!(
            std::time::Instant::now() < deadline,
            "never ready with the right token"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let response = c
        .get(proxy.url("/crm/v3/objects/contacts"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(sandbox.requests()[0].bearer(), Some(TOKEN_B));
    let status: serde_json::Value = c
        .get(proxy.admin_url("/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let portal = &status["accounts"][0]["portal"];
    assert_eq!(portal["hub_id"], 222, "{status}");
    assert_eq!(portal["expected_hub_id"], 222);
    assert_eq!(portal["token_kind"], "private_app");
    assert!(portal["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s == "crm.objects.contacts.read"));
    proxy.assert_log_free_of(&[TOKEN_A, TOKEN_B]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubspot_down_does_not_block_startup() {
    let w = World::build()
        .upstream(format!("http://127.0.0.1:{}", closed_port()))
        .main_account("hub_id = 222")
        .run(Run::process())
        .start()
        .await;
    let proxy = &w.proxy;
    let r = proxy.admin_get("/readyz").await;
    assert_eq!(
        r.status(),
        200,
        "an unverified token is served until HubSpot says otherwise"
    );
    eventually(Duration::from_secs(10), "a logged, retried check", || {
        proxy.log().contains("portal check failed").then_some(())
    })
    .await;
}

/// `check --online` against the stand-in: 0 when portal and scopes match, 2 otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_online_exit_codes() {
    let sandbox = Sandbox::start().await.unwrap();
    sandbox.accept_token(TOKEN_A);
    sandbox.state().set_hub_id(TOKEN_A, 222);
    let scratch = Scratch::new();
    let token = scratch.write("token", TOKEN_A);
    let revoked = scratch.write("revoked", TOKEN_B);
    let base = static_config(&sandbox.url(), &token, "");
    let with = |account_extra: &str| {
        base.replace(
            "name = \"main\"\n",
            &format!("name = \"main\"\n{account_extra}\n"),
        )
    };
    let cases = [
        (
            "hub_id = 222\nrequired_scopes = [\"crm.objects.contacts.read\"]",
            0,
            "portal 222",
        ),
        (
            "hub_id = 111",
            2,
            "configured for portal 111, but the token belongs to portal 222",
        ),
        (
            "required_scopes = [\"crm.objects.deals.write\"]",
            2,
            "lacks crm.objects.deals.write",
        ),
    ];
    let mut runs = Vec::new();
    for (extra, code, text) in cases {
        runs.push((with(extra), code, text));
    }
    runs.push((
        static_config(&sandbox.url(), &revoked, ""),
        2,
        "HubSpot rejected the token",
    ));
    for (config, want, text) in runs {
        let path = scratch.write("config.toml", &config);
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(BIN)
                .args(["check", "--online", "--config", path.to_str().unwrap()])
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(want), "{all}");
        assert!(all.contains(text), "{text:?} not in {all}");
        assert!(!all.contains(TOKEN_A) && !all.contains(TOKEN_B), "{all}");
    }
}

/// OAuth accounts take the portal from the token response (the stand-in says 62515).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oauth_token_for_another_portal_is_refused() {
    let sandbox = Sandbox::start().await.unwrap();
    sandbox.oauth().set_client("c", "s");
    sandbox.oauth().add_refresh_token("r");
    let scratch = Scratch::new();
    let refresh = scratch.write("refresh", "r");
    let config = |hub: u64| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n[upstream]\nbase_url = \"{}\"\n[[accounts]]\nname = \"crm\"\nhub_id = {hub}\n[accounts.oauth]\nclient_id = \"c\"\nclient_secret = {{ value = \"s\" }}\nrefresh_token = {{ file = \"{}\" }}\n",
            sandbox.url(),
            refresh.display()
        )
    };
    for (hub, want) in [
        (999, 503),
        (hubspot_auth_proxy::sandbox::DEFAULT_HUB_ID, 200),
    ] {
        let proxy = TestProxy::in_process(&config(hub)).await;
        let c = client();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let response = loop {
            let r = c
                .get(proxy.url("/crm/v3/objects/contacts"))
                .send()
                .await
                .unwrap();
            let waiting = r
                .headers()
                .get("x-auth-proxy-error")
                .is_some_and(|v| v == "PROXY_NO_TOKEN");
            if !waiting {
                break r;
            }
            assert!(std::time::Instant::now() < deadline, "no token");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(response.status(), want, "hub_id = {hub}");
        let ready = c
            .get(proxy.admin_url("/readyz"))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(ready, want, "readyz with hub_id = {hub}");
    }
}
