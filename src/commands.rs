//! The command-line commands' bodies: `serve`, `demo`, `check`, `oauth authorize`, `status`,
//! `migration`, `healthcheck` and `hash-key`. `main.rs` parses arguments and calls these.

use std::path::Path;
use std::process::ExitCode;

use crate::config::secret::ONE_SHOT_READ_LIMIT;
use crate::config::SecretSource;
use crate::demo::Demo;
use crate::oauth_consent::AuthorizeArgs;
use crate::settings::{AccountSettings, CredentialSettings, FleetSettings, Settings};

/// The `--log-level` filter, refused unless every directive sets a level. tracing's syntax
/// reads a bare word as a target with no level, so a typo such as `inf` would silently turn
/// all logging off, token-reload failures included.
pub fn log_filter(spec: &str) -> Result<tracing_subscriber::EnvFilter, String> {
    const LEVELS: &str = "off, error, warn, info, debug or trace";
    let is_level = |word: &str| {
        word.parse::<tracing_subscriber::filter::LevelFilter>()
            .is_ok()
    };
    for directive in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let level = directive
            .rsplit_once('=')
            .map_or(directive, |(_, level)| level);
        if !is_level(level) {
            return Err(format!(
                "{directive:?} in {spec:?} names no level; use {LEVELS}, or target=level (e.g. hubspot_auth_proxy=debug)"
            ));
        }
    }
    if spec.trim().is_empty() {
        return Err(format!("the filter is empty; use {LEVELS}"));
    }
    tracing_subscriber::EnvFilter::try_new(spec)
        .map_err(|e| format!("{spec:?} is not a valid filter: {e}"))
}

fn load_settings(path: &Path) -> Result<Settings, ExitCode> {
    Settings::load(path).map_err(|e| {
        for line in e.lines() {
            eprintln!("error: {line}");
        }
        ExitCode::from(2)
    })
}

fn warn_inline_secrets(settings: &Settings) {
    for (i, account) in settings.accounts.iter().enumerate() {
        if matches!(
            account.credential,
            CredentialSettings::Static(SecretSource::Value(_))
        ) {
            tracing::warn!(
                "accounts[{i}].token: an inline value keeps the token in the config file; prefer {{ file = ... }} or {{ env = ... }}"
            );
        }
    }
}

pub fn serve(path: &Path) -> ExitCode {
    let settings = match load_settings(path) {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    warn_inline_secrets(&settings);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = runtime.block_on(async move {
        let running = match crate::start(settings).await {
            Ok(running) => running,
            Err(e) => {
                // One line for the operator; a log line as well would say it twice.
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        };
        wait_for_signals(&running).await;
        running.shutdown().await;
        ExitCode::SUCCESS
    });
    // Dropping a runtime waits for every blocking task, and a secret read stuck on a hung
    // mount never ends: do not wait for it.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    code
}

pub fn demo(port: u16, admin_port: u16) -> ExitCode {
    use std::io::Write;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let args = crate::demo::DemoArgs {
            listen: ([127, 0, 0, 1], port).into(),
            admin_listen: ([127, 0, 0, 1], admin_port).into(),
        };
        let demo = match crate::demo::start(&args).await {
            Ok(demo) => demo,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        // The OAuth account's first token takes one call to the stand-in; wait for it (bounded).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !demo.proxy.accounts_ready() && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        println!(
            "hubspot-auth-proxy demo: the proxy on http://{} forwards to a HubSpot stand-in on {}.",
            demo.proxy.proxy_addr(),
            demo.sandbox.url()
        );
        println!("Try these in another terminal (Ctrl-C here ends the demo):\n");
        for (what, line) in demo.curl_lines() {
            println!("# {what}\n{line}\n");
        }
        let _ = std::io::stdout().flush();
        wait_for_signals(&demo.proxy).await;
        let Demo {
            proxy,
            sandbox,
            state_dir,
        } = demo;
        proxy.shutdown().await;
        drop((sandbox, state_dir));
        ExitCode::SUCCESS
    })
}

/// Returns on SIGTERM or SIGINT; SIGHUP re-reads file credentials and keeps going.
async fn wait_for_signals(running: &crate::Running) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM received"); return; }
            _ = int.recv() => { tracing::info!("SIGINT received"); return; }
            _ = hup.recv() => { tracing::info!("SIGHUP received: reloading credentials"); running.reload(); }
            _ = running.quit_requested() => { tracing::info!("shutdown requested on /quitquitquit"); return; }
        }
    }
}

pub fn authorize(path: &Path, args: AuthorizeArgs) -> ExitCode {
    use std::io::Write;
    let settings = match load_settings(path) {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    let runtime = current_thread();
    let print_url = |url: &str| {
        println!("{url}");
        let _ = std::io::stdout().flush();
        eprintln!(
            "Open the URL above in a browser and approve access; waiting for the redirect..."
        );
    };
    match runtime.block_on(crate::oauth_consent::run(&settings, &args, print_url)) {
        Ok(done) => {
            let hub = done
                .hub_id
                .map_or(String::new(), |id| format!(" for hub {id}"));
            let scopes = if done.scopes.is_empty() {
                String::new()
            } else {
                format!(" with scopes: {}", done.scopes.join(" "))
            };
            println!(
                "authorized account {}{hub}{scopes}; refresh token written to {}",
                args.account,
                done.file.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

pub fn check(path: &Path, online: bool) -> ExitCode {
    let settings = match load_settings(path) {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    let file = path.display();
    let mut problems = Vec::new();
    if let Err(e) = crate::upstream::Upstream::new(
        &settings.upstream,
        settings.upstream.max_connections,
        crate::metrics::Metrics::new().upstream_slots().clone(),
    ) {
        problems.push(format!("{file}: {e}"));
    }
    if let Some(tls) = &settings.server.tls {
        if let Err(e) = crate::tls::load(tls) {
            problems.push(format!("{file}: {e}"));
        }
    }
    for (i, account) in settings.accounts.iter().enumerate() {
        let token_url = match &account.credential {
            CredentialSettings::OAuth(o) => Some(o.token_url.as_str()),
            CredentialSettings::Static(_) => None,
        };
        if let Some(warning) = token_url.and_then(crate::credentials::token_endpoint::v1_warning) {
            println!("warning: {file}: accounts[{i}].oauth.token_url: {warning}");
        }
        match check_account(account) {
            Ok(summary) => println!("account {}: {summary}", account.name),
            Err(e) => problems.extend(e.into_iter().map(|e| format!("{file}: accounts[{i}].{e}"))),
        }
    }
    if let Some(fleet) = &settings.fleet {
        match check_fleet(fleet, settings.upstream.ca_file.as_deref()) {
            Ok(summary) => println!("fleet: {summary}"),
            Err(e) => problems.push(format!("{file}: {e}")),
        }
    }
    if online && problems.is_empty() {
        problems.extend(
            current_thread()
                .block_on(check_online(&settings))
                .into_iter()
                .map(|p| format!("{file}: {p}")),
        );
    }
    if problems.is_empty() {
        println!("{file}: ok");
        ExitCode::SUCCESS
    } else {
        for p in &problems {
            eprintln!("error: {p}");
        }
        ExitCode::from(2)
    }
}

/// Loads every secret source of one account; the summary names sources, never secrets.
fn check_account(account: &AccountSettings) -> Result<String, Vec<String>> {
    let oauth = match &account.credential {
        CredentialSettings::Static(source) => {
            return source
                .load_within(true, ONE_SHOT_READ_LIMIT)
                .map(|_| format!("static token from {} (ok)", source.describe()))
                .map_err(|e| vec![format!("token: {e}")]);
        }
        CredentialSettings::OAuth(oauth) => oauth,
    };
    let errors: Vec<String> = [
        ("oauth.client_secret", &oauth.client_secret),
        ("oauth.refresh_token", &oauth.refresh_token),
    ]
    .into_iter()
    .filter_map(|(key, source)| {
        source
            .load_within(false, ONE_SHOT_READ_LIMIT)
            .err()
            .map(|e| format!("{key}: {e}"))
    })
    .collect();
    if errors.is_empty() {
        Ok(format!(
            "oauth client {}, refresh token from {} (ok)",
            oauth.client_id,
            oauth.refresh_token.describe()
        ))
    } else {
        Err(errors)
    }
}

/// Reaches the fleet's Redis with one PING under `fleet.timeout_ms`.
fn check_fleet(fleet: &FleetSettings, ca_file: Option<&Path>) -> Result<String, String> {
    use crate::fleet::{FleetError, FleetMetrics, Redis};
    // The connection's "falling back" warning is for `serve`; `check` reports in one line.
    let quiet = tracing::Dispatch::none();
    let _quiet = tracing::dispatcher::set_default(&quiet);
    current_thread().block_on(async {
        let redis = Redis::connect(fleet, ca_file, FleetMetrics::unregistered())
            .map_err(|e| e.to_string())?;
        redis.ping().await.map_err(|e| match e {
            FleetError::Timeout(ms) => {
                format!("fleet.redis_url: cannot reach Redis within {ms} ms (fleet.timeout_ms)")
            }
            other => other.to_string(),
        })?;
        Ok(format!("Redis answers, namespace {}", fleet.namespace))
    })
}

/// `check --online`: each static token's portal and scopes, from HubSpot's access-token-info.
/// OAuth accounts are not refreshed here (a refresh could rotate the stored refresh token);
/// the running proxy checks them at every refresh (`/status`, `/readyz`).
async fn check_online(settings: &Settings) -> Vec<String> {
    let client = match crate::portal::client(&settings.upstream) {
        Ok(client) => client,
        Err(e) => return vec![format!("upstream: {e}")],
    };
    let mut problems = Vec::new();
    for (i, account) in settings.accounts.iter().enumerate() {
        let CredentialSettings::Static(source) = &account.credential else {
            println!(
                "account {}: oauth; its portal is checked by the running proxy at each refresh",
                account.name
            );
            continue;
        };
        let Ok(token) = source.load_within(true, ONE_SHOT_READ_LIMIT) else {
            continue; // already reported offline
        };
        let info =
            match crate::portal::access_token_info(&client, &settings.upstream.base_url, &token)
                .await
            {
                Ok(info) => info,
                Err(e) => {
                    problems.push(format!("accounts[{i}].token ({}): {e}", source.describe()));
                    continue;
                }
            };
        let kind = crate::portal_state::TokenKind::of_static(token.expose()).as_str();
        println!(
            "account {}: {kind} token for portal {}, scopes: {}",
            account.name,
            info.hub_id,
            info.scopes.join(" ")
        );
        if let Some(expected) = account.hub_id.filter(|&id| id != info.hub_id) {
            problems.push(format!(
                "accounts[{i}].hub_id: configured for portal {expected}, but the token belongs to portal {}",
                info.hub_id
            ));
        }
        let missing: Vec<&str> = account
            .required_scopes
            .iter()
            .filter(|s| !info.scopes.contains(s))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            problems.push(format!(
                "accounts[{i}].required_scopes: the token lacks {}",
                missing.join(", ")
            ));
        }
    }
    problems
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

pub fn status(admin: &str, raw: bool) -> ExitCode {
    use crate::admin_client;
    match current_thread().block_on(admin_client::fetch_status(admin)) {
        Ok(status) if raw => {
            println!("{status:#}");
            ExitCode::SUCCESS
        }
        Ok(status) => {
            print!("{}", admin_client::render_table(&status));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `GET /migration` from a running proxy, as a table (or the raw JSON).
pub fn migration(admin: &str, raw: bool) -> ExitCode {
    match current_thread().block_on(crate::admin_client::fetch_json(admin, "/migration")) {
        Ok(report) if raw => {
            println!("{report:#}");
            ExitCode::SUCCESS
        }
        Ok(report) => {
            print!(
                "{}",
                crate::migration::table::render(&report, std::time::SystemTime::now())
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

pub fn healthcheck(url: &str) -> ExitCode {
    match current_thread().block_on(crate::admin_client::healthcheck(url)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("unhealthy: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The key never touches argv (and so never shows in `ps` or shell history).
pub fn hash_key() -> ExitCode {
    use sha2::Digest;
    use std::io::Read;
    let mut input = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("error: cannot read the key from stdin: {e}");
        return ExitCode::from(2);
    }
    let key = input.trim();
    if key.is_empty() {
        eprintln!("error: no key on stdin; try: printf %s \"$KEY\" | hubspot-auth-proxy hash-key");
        return ExitCode::from(2);
    }
    println!("{}", hex::encode(sha2::Sha256::digest(key.as_bytes())));
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::log_filter;

    #[test]
    fn log_filters_must_set_a_level() {
        for good in [
            "info",
            "DEBUG",
            "off",
            "warn,hubspot_auth_proxy=debug",
            "hyper=warn, info",
        ] {
            assert!(log_filter(good).is_ok(), "{good}");
        }
        for bad in ["inf", "", "hubspot_auth_proxy", "info,hyper", "hyper=loud"] {
            assert!(log_filter(bad).is_err(), "{bad}");
        }
    }
}
