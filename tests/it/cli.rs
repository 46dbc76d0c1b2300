//! The command line: `check`, config errors naming keys, `--help` and `--version`.

use std::process::Command;

use crate::support::*;

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_remove("HUBSPOT_AUTH_PROXY_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_summarises_accounts_without_secrets() {
    let scratch = Scratch::new();
    let token = scratch.write("token", TOKEN_A);
    let config = scratch.write(
        "c.toml",
        &static_config("https://api.hubapi.com", &token, ""),
    );
    let (code, out, err) = run(&["check", "--config", config.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("account main: static token from file"),
        "{out}"
    );
    assert!(!out.contains(TOKEN_A) && !err.contains(TOKEN_A));
}

#[test]
fn check_reports_every_problem_with_its_key_and_exits_2() {
    let scratch = Scratch::new();
    let config = scratch.write(
        "bad.toml",
        r#"
[upstream]
base_url = "https://api.hubapi.com/v3"
max_connections = 0
[[accounts]]
name = "main"
[[accounts]]
name = "main"
token = { env = "X" }
"#,
    );
    let (code, _, err) = run(&["check", "--config", config.to_str().unwrap()], &[]);
    assert_eq!(code, 2);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 4, "{err}");
    assert!(lines[0].contains("bad.toml: upstream.base_url:"), "{err}");
    assert!(
        lines[1].contains("upstream.max_connections: must be greater than 0"),
        "{err}"
    );
    assert!(lines[2].contains("accounts[0].token:"), "{err}");
    assert!(lines[3].contains("accounts[1].name: duplicate"), "{err}");
}

#[test]
fn unknown_keys_and_missing_credentials_are_named() {
    let scratch = Scratch::new();
    let config = scratch.write(
        "typo.toml",
        "[server]\nlisten = \"127.0.0.1:1\"\nmax_body = 5\n",
    );
    let (code, _, err) = run(&["check", "--config", config.to_str().unwrap()], &[]);
    assert_eq!(code, 2);
    assert!(
        err.contains("typo.toml:3: server.max_body: unknown field `max_body`"),
        "{err}"
    );

    let config = scratch.write(
        "env.toml",
        "[[accounts]]\nname = \"main\"\ntoken = { env = \"HSAP_TEST_UNSET_VAR\" }\n",
    );
    let (code, _, err) = run(&["check", "--config", config.to_str().unwrap()], &[]);
    assert_eq!(code, 2);
    assert!(
        err.contains("accounts[0].token: environment variable HSAP_TEST_UNSET_VAR is not set"),
        "{err}"
    );
    // `serve` refuses the same config with the same line, instead of starting without a token.
    let (code, _, err) = run(&["serve", "--config", config.to_str().unwrap()], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("HSAP_TEST_UNSET_VAR is not set"), "{err}");
}

#[test]
fn config_path_comes_from_the_environment() {
    let scratch = Scratch::new();
    let config = scratch.write(
        "env.toml",
        "[[accounts]]\nname = \"main\"\ntoken = { env = \"HSAP_T\" }\n",
    );
    let (code, out, _) = run(
        &["check"],
        &[
            ("HUBSPOT_AUTH_PROXY_CONFIG", config.to_str().unwrap()),
            ("HSAP_T", TOKEN_A),
        ],
    );
    assert_eq!(code, 0);
    assert!(out.contains("account main: static token from env HSAP_T (ok)"));
    let (code, _, err) = run(&["check"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("config/hubspot-auth-proxy.toml"), "{err}");
}

#[test]
fn help_and_version() {
    let (code, out, _) = run(&["--help"], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("Examples:") && out.contains("serve"));
    let (code, out, _) = run(&["--version"], &[]);
    assert_eq!(code, 0);
    assert!(out.starts_with("hubspot-auth-proxy 0.1.0"));
}

#[test]
fn check_covers_oauth_sources_and_tls_files() {
    let scratch = Scratch::new();
    let refresh = scratch.write("refresh", "na1-refresh");
    let good = format!(
        "[[accounts]]\nname = \"marketing\"\n[accounts.oauth]\nclient_id = \"cid\"\nclient_secret = {{ env = \"HSAP_CHECK_SECRET\" }}\nrefresh_token = {{ file = \"{}\" }}\n",
        refresh.display()
    );
    let config = scratch.write("oauth.toml", &good);
    let (code, out, err) = run(
        &["check", "--config", config.to_str().unwrap()],
        &[("HSAP_CHECK_SECRET", "s3cret-value")],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("account marketing: oauth client cid, refresh token from file"),
        "{out}"
    );
    assert!(!out.contains("s3cret-value") && !out.contains("na1-refresh"));

    let (code, _, err) = run(&["check", "--config", config.to_str().unwrap()], &[]);
    assert_eq!(code, 2);
    assert!(
        err.contains(
            "accounts[0].oauth.client_secret: environment variable HSAP_CHECK_SECRET is not set"
        ),
        "{err}"
    );

    let tls = format!(
        "[server.tls]\ncert_file = \"{0}/missing.crt\"\nkey_file = \"{0}/missing.key\"\n{good}",
        scratch.dir.path().display()
    );
    let config = scratch.write("tls.toml", &tls);
    let (code, _, err) = run(
        &["check", "--config", config.to_str().unwrap()],
        &[("HSAP_CHECK_SECRET", "x")],
    );
    assert_eq!(code, 2);
    assert!(err.contains("server.tls.cert_file"), "{err}");
}

/// Runs the binary to its exit, or panics if it is still running after `limit`.
fn run_to_exit(args: &[&str], env: &[(&str, &str)], limit: std::time::Duration) -> (i32, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("HUBSPOT_AUTH_PROXY_CONFIG")
        .env_remove("HUBSPOT_AUTH_PROXY_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{args:?} was still running after {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    (status.code().unwrap_or(-1), err)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_on_the_same_listen_address_fails_to_start() {
    let scratch = Scratch::new();
    let token = scratch.write("token", TOKEN_A);
    let first =
        TestProxy::start(&static_config("https://127.0.0.1:1", &token, "workers = 3")).await;
    let config = static_config("https://127.0.0.1:1", &token, "workers = 3").replace(
        "\nlisten = \"127.0.0.1:0\"",
        &format!("\nlisten = \"{}\"", first.proxy),
    );
    let path = scratch.write("second.toml", &config);
    let (code, err) = run_to_exit(
        &["serve", "--config", path.to_str().unwrap()],
        &[],
        std::time::Duration::from_secs(10),
    );
    assert_eq!(code, 2, "{err}");
    let named: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("server.listen"))
        .collect();
    assert_eq!(named.len(), 1, "one line names server.listen:\n{err}");
    assert!(named[0].contains(&first.proxy.to_string()), "{err}");
    // The first instance's workers still share their port.
    let answers = join_all((0..6).map(|_| {
        let url = first.url("/crm/v3/objects/contacts");
        async move { client().get(url).send().await.unwrap().status().as_u16() }
    }))
    .await;
    assert!(answers.iter().all(|s| *s == 502), "{answers:?}");
}

#[test]
fn startup_errors_are_printed_once() {
    let scratch = Scratch::new();
    let missing = scratch.path("no-such-token");
    let config = scratch.write(
        "c.toml",
        &static_config("https://api.hubapi.com", &missing, ""),
    );
    let (code, err) = run_to_exit(
        &["serve", "--config", config.to_str().unwrap()],
        &[],
        std::time::Duration::from_secs(10),
    );
    assert_eq!(code, 2, "{err}");
    let named: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("no-such-token"))
        .collect();
    assert_eq!(named.len(), 1, "the error is printed once:\n{err}");
}

#[test]
fn an_invalid_log_filter_exits_2_naming_its_source() {
    let scratch = Scratch::new();
    let token = scratch.write("token", TOKEN_A);
    let config = scratch.write(
        "c.toml",
        &static_config("https://api.hubapi.com", &token, ""),
    );
    let config = config.to_str().unwrap();
    let limit = std::time::Duration::from_secs(10);
    let (code, err) = run_to_exit(
        &["--log-level", "inf", "check", "--config", config],
        &[],
        limit,
    );
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("--log-level") && err.contains("\"inf\""),
        "{err}"
    );
    let (code, err) = run_to_exit(
        &["serve", "--config", config],
        &[("HUBSPOT_AUTH_PROXY_LOG", "inf")],
        limit,
    );
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("HUBSPOT_AUTH_PROXY_LOG"), "{err}");
    let (code, err) = run_to_exit(
        &[
            "--log-level",
            "warn,hubspot_auth_proxy=debug",
            "check",
            "--config",
            config,
        ],
        &[],
        limit,
    );
    assert_eq!(code, 0, "{err}");
}

#[test]
fn fewer_upstream_slots_than_workers_is_refused() {
    let scratch = Scratch::new();
    let token = scratch.write("token", TOKEN_A);
    let config = static_config("https://api.hubapi.com", &token, "workers = 8")
        .replace("timeout_secs = 5", "timeout_secs = 5\nmax_connections = 4");
    let config = scratch.write("c.toml", &config);
    let (code, _, err) = run(&["check", "--config", config.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("upstream.max_connections") && err.contains("server.workers (8)"),
        "{err}"
    );
}

/// A token or refresh-token file whose read hangs (a stuck mount; a FIFO nobody writes) fails
/// `serve` and `check` with one line naming the key and the file, instead of a silent hang.
#[test]
fn a_hung_secret_file_at_startup_fails_naming_it() {
    let scratch = Scratch::new();
    let fifo = scratch.path("token.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let static_account = scratch.write(
        "static.toml",
        &static_config("https://127.0.0.1:1", &fifo, ""),
    );
    let oauth_account = scratch.write(
        "oauth.toml",
        &format!(
            "[upstream]\nbase_url = \"https://127.0.0.1:1\"\n[[accounts]]\nname = \"m\"\n\
             [accounts.oauth]\nclient_id = \"c\"\nclient_secret = {{ value = \"s\" }}\n\
             refresh_token = {{ file = \"{}\" }}\n",
            fifo.display()
        ),
    );
    let limit = std::time::Duration::from_secs(15);
    let cases = [
        (&static_account, "accounts[0].token"),
        (&oauth_account, "accounts[0].oauth.refresh_token"),
    ]
    .into_iter()
    .flat_map(|(config, key)| ["serve", "check"].map(|command| (config.clone(), key, command)));
    // Each run waits out the 5 s read limit: all four wait at once, not one after another.
    let runs: Vec<_> = cases
        .map(|(config, key, command)| {
            let run = std::thread::spawn(move || {
                run_to_exit(&[command, "--config", config.to_str().unwrap()], &[], limit)
            });
            (key, command, run)
        })
        .collect();
    for (key, command, run) in runs {
        {
            let (code, err) = run.join().unwrap();
            assert_eq!(code, 2, "{command} {key}: {err}");
            let named: Vec<&str> = err
                .lines()
                .filter(|l| l.contains(key) && l.contains("took longer than"))
                .collect();
            assert_eq!(named.len(), 1, "{command}: one line names {key}:\n{err}");
            assert!(named[0].contains("token.fifo"), "{err}");
        }
    }
}
