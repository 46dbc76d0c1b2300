//! The `hubspot-auth-proxy` command line: parse arguments, then call into the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use hubspot_auth_proxy::commands;
use hubspot_auth_proxy::oauth_consent::AuthorizeArgs;

// jemalloc hands memory freed after a burst of connections back to the OS (its background
// thread purges on a 10 s decay); glibc's arenas kept a 1,000-connection burst's ~55 MiB
// resident for good, and musl's allocator is slow under the proxy's allocation pattern.
// Throughput is the same as glibc's (bench/NOTES.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const EXAMPLES: &str = "\
Examples:
  hubspot-auth-proxy serve --config /etc/hubspot-auth-proxy/config.toml
  HUBSPOT_TOKEN=pat-na1-... hubspot-auth-proxy serve --config config/minimal.toml
  hubspot-auth-proxy check --config config/example.toml
  hubspot-auth-proxy migration --admin http://127.0.0.1:9090
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
    Check {
        #[command(flatten)]
        config: ConfigArg,
        /// Also ask HubSpot which portal and scopes each static token has, and compare them
        /// with `hub_id` and `required_scopes`.
        #[arg(long)]
        online: bool,
    },
    /// Print each account's credential health and rate-limit budget from a running proxy.
    Status {
        /// The proxy's admin listener.
        #[arg(long, default_value = "http://127.0.0.1:9090")]
        admin: String,
        /// Print the raw JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print which callers still use deprecated HubSpot APIs, most urgent first.
    Migration {
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
    let filter = match commands::log_filter(&cli.log_level) {
        Ok(filter) => filter,
        Err(e) => {
            let from_env = std::env::var("HUBSPOT_AUTH_PROXY_LOG")
                .is_ok_and(|v| v == cli.log_level)
                && !std::env::args().any(|a| a == "--log-level" || a.starts_with("--log-level="));
            let what = if from_env {
                "HUBSPOT_AUTH_PROXY_LOG"
            } else {
                "--log-level"
            };
            eprintln!("error: {what}: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(cli.log_format, filter);
    match cli.command {
        Command::Serve(args) => commands::serve(&args.config),
        Command::Demo { port, admin_port } => commands::demo(port, admin_port),
        Command::Check { config, online } => commands::check(&config.config, online),
        Command::HashKey => commands::hash_key(),
        Command::Status { admin, json } => commands::status(&admin, json),
        Command::Migration { admin, json } => commands::migration(&admin, json),
        Command::Healthcheck { url } => commands::healthcheck(&url),
        Command::Oauth(OauthCommand::Authorize {
            config,
            account,
            scopes,
            redirect_port,
            authorize_url,
            timeout_secs,
        }) => commands::authorize(
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

fn init_logging(format: LogFormat, filter: tracing_subscriber::EnvFilter) {
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
