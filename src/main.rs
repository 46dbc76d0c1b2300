//! The `hubspot-auth-proxy` command line: parse arguments, then call into the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use hubspot_auth_proxy::authorize::AuthorizeArgs;
use hubspot_auth_proxy::config::{Config, SecretSource};
use hubspot_auth_proxy::demo::Demo;

const EXAMPLES: &str = "\
Examples:
  hubspot-auth-proxy serve --config /etc/hubspot-auth-proxy/config.toml
  HUBSPOT_TOKEN=pat-na1-... hubspot-auth-proxy serve --config config/minimal.toml
  hubspot-auth-proxy check --config config/example.toml
  printf %s \"$OLD_API_KEY\" | hubspot-auth-proxy hash-key
  hubspot-auth-proxy --log-format json serve";

#[derive(Parser)]
#[command(name = "hubspot-auth-proxy", version, about, after_help = EXAMPLES)]
struct Cli {
    /// Log format: human-readable lines, or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    /// Log filter (tracing's env-filter syntax), e.g. "info" or "debug".
    #[arg(
        long,
        global = true,
        env = "HUBSPOT_AUTH_PROXY_LOG",
        default_value = "info"
    )]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve(ConfigArg),
    /// Run the proxy in front of a built-in HubSpot stand-in, offline, and print curl lines to try.
    Demo {
        /// Proxy port on 127.0.0.1 (0 picks a free one).
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Admin port on 127.0.0.1 (0 picks a free one).
        #[arg(long, default_value_t = 9090)]
        admin_port: u16,
    },
    /// Validate the config and every credential source, then exit (0 = fine, 2 = problems).
    Check(ConfigArg),
    /// Print each account's credential health and rate-limit budget from a running proxy.
    Status {
        /// The proxy's admin listener.
        #[arg(long, default_value = "http://127.0.0.1:9090")]
        admin: String,
        /// Print the raw JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Exit 0 if URL answers 2xx (for container HEALTHCHECKs in images without curl).
    Healthcheck {
        #[arg(long, default_value = "http://127.0.0.1:9090/readyz")]
        url: String,
    },
    /// Read a legacy API key on stdin and print its SHA-256 hex, for `[legacy] keys`.
    HashKey,
    /// OAuth helpers.
    #[command(subcommand)]
    Oauth(OauthCommand),
}

#[derive(Subcommand)]
enum OauthCommand {
    /// Get an account's first refresh token: open the printed URL, consent, and the proxy
    /// catches the redirect on localhost and writes the token to the account's refresh_token file.
    Authorize {
        #[command(flatten)]
        config: ConfigArg,
        /// The [[accounts]] name.
        #[arg(long)]
        account: String,
        /// Space-separated scopes, as set on the app.
        #[arg(long)]
        scopes: String,
        /// Port for http://localhost:PORT/ (the app's redirect URL); 0 picks a free one.
        #[arg(long, default_value_t = 8090)]
        redirect_port: u16,
        #[arg(long, default_value = "https://app.hubspot.com/oauth/authorize")]
        authorize_url: String,
        /// Give up (writing nothing) if no redirect arrives in this time.
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
    },
}

#[derive(clap::Args)]
struct ConfigArg {
    /// Path of the TOML config.
    #[arg(
        long,
        env = "HUBSPOT_AUTH_PROXY_CONFIG",
        default_value = "./config/hubspot-auth-proxy.toml"
    )]
    config: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, &cli.log_level);
    match cli.command {
        Command::Serve(args) => serve(&args.config),
        Command::Demo { port, admin_port } => demo(port, admin_port),
        Command::Check(args) => check(&args.config),
        Command::HashKey => hash_key(),
        Command::Status { admin, json } => status(&admin, json),
        Command::Healthcheck { url } => healthcheck(&url),
        Command::Oauth(OauthCommand::Authorize {
            config,
            account,
            scopes,
            redirect_port,
            authorize_url,
            timeout_secs,
        }) => authorize(
            &config.config,
            AuthorizeArgs {
                account,
                scopes,
                redirect_port,
                authorize_url,
                timeout: std::time::Duration::from_secs(timeout_secs),
            },
        ),
    }
}

fn init_logging(format: LogFormat, filter: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn load_config(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        for line in e.lines() {
            eprintln!("error: {line}");
        }
        ExitCode::from(2)
    })
}

fn warn_inline_secrets(config: &Config) {
    for (i, account) in config.accounts.iter().enumerate() {
        if matches!(account.token, Some(SecretSource::Value(_))) {
            tracing::warn!(
                "accounts[{i}].token: an inline value keeps the token in the config file; prefer {{ file = ... }} or {{ env = ... }}"
            );
        }
    }
}

fn serve(path: &Path) -> ExitCode {
    let config = match load_config(path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    warn_inline_secrets(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let running = match hubspot_auth_proxy::start(config).await {
            Ok(running) => running,
            Err(e) => {
                tracing::error!("{e}");
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        };
        wait_for_signals(&running).await;
        running.shutdown().await;
        ExitCode::SUCCESS
    })
}

fn demo(port: u16, admin_port: u16) -> ExitCode {
    use std::io::Write;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let args = hubspot_auth_proxy::demo::DemoArgs {
            listen: ([127, 0, 0, 1], port).into(),
            admin_listen: ([127, 0, 0, 1], admin_port).into(),
        };
        let demo = match hubspot_auth_proxy::demo::start(&args).await {
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
async fn wait_for_signals(running: &hubspot_auth_proxy::Running) {
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

fn authorize(path: &Path, args: AuthorizeArgs) -> ExitCode {
    use std::io::Write;
    let config = match load_config(path) {
        Ok(config) => config,
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
    match runtime.block_on(hubspot_auth_proxy::authorize::run(
        &config, &args, print_url,
    )) {
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

fn check(path: &Path) -> ExitCode {
    let config = match load_config(path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let mut problems = Vec::new();
    if let Err(e) = hubspot_auth_proxy::upstream::Upstream::new(&config.upstream) {
        problems.push(format!("{}: {e}", path.display()));
    }
    for (i, account) in config.accounts.iter().enumerate() {
        let Some(source) = &account.token else {
            continue;
        };
        match source.load_header_safe() {
            Ok(_) => println!(
                "account {}: static token from {} (ok)",
                account.name,
                source.describe()
            ),
            Err(e) => problems.push(format!("{}: accounts[{i}].token: {e}", path.display())),
        }
    }
    if problems.is_empty() {
        println!("{}: ok", path.display());
        ExitCode::SUCCESS
    } else {
        for p in &problems {
            eprintln!("error: {p}");
        }
        ExitCode::from(2)
    }
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn status(admin: &str, raw: bool) -> ExitCode {
    use hubspot_auth_proxy::admin_client;
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

fn healthcheck(url: &str) -> ExitCode {
    match current_thread().block_on(hubspot_auth_proxy::admin_client::healthcheck(url)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("unhealthy: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The key never touches argv (and so never shows in `ps` or shell history).
fn hash_key() -> ExitCode {
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
