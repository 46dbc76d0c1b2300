//! Configuration: serde types mirroring the TOML, their defaults, and validation that names key paths.

pub(crate) mod fleet;
pub(crate) mod secret;
pub(crate) mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub(crate) use fleet::FleetConfig;
pub use secret::Secret;
pub(crate) use secret::{SecretError, SecretReader, SecretSource};
pub(crate) use validate::{
    developer_path_glob, parse_base_url, parse_rule, parse_sha256, valid_account_name, Problem,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub(crate) upstream: UpstreamConfig,
    #[serde(default)]
    pub accounts: Vec<AccountConfig>,
    #[serde(default)]
    pub(crate) legacy: LegacyConfig,
    /// When any is listed, every request must name one with `X-Auth-Proxy-Key`.
    #[serde(default)]
    pub(crate) clients: Vec<ClientConfig>,
    /// Replicas share budgets and OAuth tokens through Redis (see src/fleet.rs).
    #[serde(default)]
    pub fleet: Option<FleetConfig>,
    /// The file this config was loaded from, so messages can name the exact command to run.
    #[serde(skip)]
    pub(crate) path: Option<PathBuf>,
}

/// A caller of the proxy, identified by a key it sends; scoped to accounts and method+path rules.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClientConfig {
    pub(crate) name: String,
    /// SHA-256 hex of the key the client sends in `X-Auth-Proxy-Key`.
    pub(crate) key_sha256: String,
    /// Accounts it may use; absent means all.
    #[serde(default)]
    pub(crate) accounts: Option<Vec<String>>,
    /// `"METHOD /path/glob"` rules (`*` for any method); absent means everything.
    #[serde(default)]
    pub(crate) allow: Option<Vec<String>>,
}

/// Inbound TLS on the proxy listener; certificate and key are re-read when they change.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TlsConfig {
    pub(crate) cert_file: PathBuf,
    pub(crate) key_file: PathBuf,
    /// Clients must present a certificate from this CA (mutual TLS).
    #[serde(default)]
    pub(crate) client_ca_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    #[serde(default = "default_admin_listen")]
    pub admin_listen: SocketAddr,
    #[serde(default = "default_max_body_bytes")]
    pub(crate) max_body_bytes: u64,
    #[serde(default = "default_shutdown_grace_secs")]
    pub(crate) shutdown_grace_secs: u64,
    /// After SIGTERM, keep serving this long with /readyz already 503, so load balancers and
    /// Kubernetes endpoints stop sending traffic before the listener closes.
    #[serde(default)]
    pub(crate) shutdown_min_delay_secs: u64,
    /// `POST /quitquitquit` on the admin listener starts a shutdown (for Kubernetes Jobs).
    #[serde(default)]
    pub enable_quit: bool,
    /// Peers outside these networks get 403 PROXY_FORBIDDEN_NETWORK.
    #[serde(default = "default_allowed_networks")]
    pub(crate) allowed_networks: Vec<ipnet::IpNet>,
    /// Take the client address from the last X-Forwarded-For entry (only behind a trusted hop).
    #[serde(default)]
    pub(crate) trust_forwarded_for: bool,
    #[serde(default)]
    pub(crate) tls: Option<TlsConfig>,
    /// Data-plane threads, each with its own listener and upstream pool; 0 means one per core.
    #[serde(default)]
    pub(crate) workers: usize,
    /// One log line per request at info level (account, method, status, duration, correlation id).
    #[serde(default)]
    pub(crate) access_log: bool,
    /// A client that has not sent its whole header block by then is disconnected (slowloris).
    #[serde(default = "default_header_read_timeout_secs")]
    pub(crate) header_read_timeout_secs: u64,
    /// More request headers than this, or more header bytes than `max_header_bytes`, get 431.
    #[serde(default = "default_max_header_count")]
    pub(crate) max_header_count: usize,
    #[serde(default = "default_max_header_bytes")]
    pub(crate) max_header_bytes: usize,
    /// A client that sends no request body data for this long mid-body gets 408, so a stalled
    /// upload cannot hold an upstream slot.
    #[serde(default = "default_body_read_timeout_secs")]
    pub(crate) body_read_timeout_secs: u64,
    /// Bytes of request bodies kept for replay at once, across all workers; past it, requests
    /// stream without a copy and are not resent. 0 keeps none (empty bodies cost nothing).
    #[serde(default = "default_max_replay_buffer_bytes")]
    pub(crate) max_replay_buffer_bytes: u64,
    /// Answers to deprecated or unsupported HubSpot APIs carry Deprecation, Sunset and Link.
    #[serde(default)]
    pub(crate) deprecation_headers: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpstreamConfig {
    #[serde(default = "default_base_url")]
    pub(crate) base_url: String,
    #[serde(default = "default_connect_timeout_ms")]
    pub(crate) connect_timeout_ms: u64,
    #[serde(default = "default_timeout_secs")]
    pub(crate) timeout_secs: u64,
    #[serde(default)]
    pub(crate) ca_file: Option<PathBuf>,
    #[serde(default = "default_pool_idle_timeout_secs")]
    pub(crate) pool_idle_timeout_secs: u64,
    #[serde(default = "default_pool_max_idle_per_host")]
    pub(crate) pool_max_idle_per_host: usize,
    /// Requests in flight to HubSpot at once, across all workers (each gets an equal share).
    /// More wait for a free slot, within the request's deadline. HubSpot's rate limits make a
    /// few dozen concurrent requests the useful most; the bound also caps upstream connections
    /// and the memory they hold.
    #[serde(default = "default_max_connections")]
    pub(crate) max_connections: usize,
    /// An HTTP CONNECT proxy for HubSpot and token calls; unset, HTTPS_PROXY/NO_PROXY apply.
    #[serde(default)]
    pub(crate) proxy_url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    pub(crate) name: String,
    /// A private app access token or service key: a static bearer.
    #[serde(default)]
    pub token: Option<SecretSource>,
    /// Marks the account used when a request names none; otherwise the first account is.
    #[serde(default)]
    pub(crate) default: bool,
    /// An OAuth app installation: the proxy refreshes its access token itself.
    #[serde(default)]
    pub(crate) oauth: Option<OAuthConfig>,
    #[serde(default)]
    pub(crate) rate_limit: RateLimitConfig,
    /// The HubSpot portal this account's token must belong to; a token for another is refused.
    #[serde(default)]
    pub(crate) hub_id: Option<u64>,
    /// Scopes `check --online` requires the token to hold.
    #[serde(default)]
    pub(crate) required_scopes: Vec<String>,
}

/// Shaping under HubSpot's limits, and retries of what HubSpot did not act on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RateLimitConfig {
    /// Requests per rolling 10 s: 100 (Free/Starter), 190 (Pro/Enterprise), 250 (add-on),
    /// 110 (public OAuth app, per installing account). 0 turns shaping off. Unset: start at
    /// 100 and follow HubSpot's X-HubSpot-RateLimit-Max up or down; set: a ceiling.
    #[serde(default)]
    pub(crate) per_ten_seconds: Option<u32>,
    /// Search endpoints (`POST .../search`) per second; 0 turns the search limit off.
    #[serde(default = "default_search_per_second")]
    pub(crate) search_per_second: u32,
    /// A request that would wait longer for a slot gets a local 429 with Retry-After.
    #[serde(default = "default_max_queue_wait_ms")]
    pub(crate) max_queue_wait_ms: u64,
    /// Shape to HubSpot's X-HubSpot-RateLimit-Max (within `per_ten_seconds` when that is set).
    #[serde(default = "default_true")]
    pub(crate) adaptive: bool,
    /// Retries after HubSpot's TEN_SECONDLY_ROLLING or SECONDLY 429 (bodies up to 1 MiB are kept).
    #[serde(default = "default_max_retries")]
    pub(crate) max_retries_429: u32,
    /// Retries of idempotent requests after 502/503/504/521-524.
    #[serde(default = "default_max_retries")]
    pub(crate) max_retries_5xx: u32,
}

fn default_search_per_second() -> u32 {
    5
}
fn default_max_queue_wait_ms() -> u64 {
    10_000
}
fn default_true() -> bool {
    true
}
fn default_max_retries() -> u32 {
    2
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            per_ten_seconds: None,
            search_per_second: default_search_per_second(),
            max_queue_wait_ms: default_max_queue_wait_ms(),
            adaptive: true,
            max_retries_429: default_max_retries(),
            max_retries_5xx: default_max_retries(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OAuthConfig {
    /// Not secret: it appears in the authorize URL.
    pub(crate) client_id: String,
    pub(crate) client_secret: SecretSource,
    /// A `{ file = ... }` source gets rotated refresh tokens written back to it.
    pub(crate) refresh_token: SecretSource,
    /// Defaults to `upstream.base_url` + `/oauth/2026-03/token`; v1 and v3 work too.
    #[serde(default)]
    pub(crate) token_url: Option<String>,
    #[serde(default = "default_refresh_margin_secs")]
    pub(crate) refresh_margin_secs: u64,
    /// One token endpoint call may take this long.
    #[serde(default = "default_token_timeout_secs")]
    pub(crate) token_timeout_secs: u64,
    /// Forced refreshes (after HubSpot's EXPIRED_AUTHENTICATION) are at least this far apart.
    #[serde(default = "default_refresh_min_interval_secs")]
    pub(crate) refresh_min_interval_secs: u64,
}

fn default_refresh_margin_secs() -> u64 {
    300
}
fn default_refresh_min_interval_secs() -> u64 {
    5
}
fn default_token_timeout_secs() -> u64 {
    10
}

/// HubSpot's date-versioned token endpoint; `/oauth/v1/token` is deprecated on 2027-02-16.
pub(crate) const DEFAULT_TOKEN_PATH: &str = "/oauth/2026-03/token";

impl OAuthConfig {
    pub(crate) fn token_url(&self, upstream: &UpstreamConfig) -> String {
        match &self.token_url {
            Some(url) => url.clone(),
            None => format!(
                "{}{DEFAULT_TOKEN_PATH}",
                upstream.base_url.trim_end_matches('/')
            ),
        }
    }
}

/// What to do with `?hapikey=` account API keys, which HubSpot stopped accepting on 2022-11-30.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LegacyConfig {
    #[serde(default)]
    pub(crate) hapikey: HapikeyMode,
    /// Keys scripts still send, as SHA-256 hex, each mapped to an account.
    #[serde(default)]
    pub(crate) keys: Vec<LegacyKey>,
    /// Paths where `hapikey` is a developer API key that HubSpot still accepts: left untouched.
    #[serde(default = "default_developer_key_paths")]
    pub(crate) developer_key_paths: Vec<String>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum HapikeyMode {
    /// Strip the key and send the account's bearer instead.
    #[default]
    Translate,
    /// Answer 401 locally, explaining that API keys are retired.
    Reject,
    /// Pass the request through untouched, for HubSpot's own answer.
    Forward,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LegacyKey {
    pub(crate) sha256: String,
    pub(crate) account: String,
    /// The `[[clients]]` entry this key also identifies, for scoping migrated scripts.
    #[serde(default)]
    pub(crate) client: Option<String>,
    /// The caller's name in the migration report; otherwise the hash's first 8 hex digits.
    #[serde(default)]
    pub(crate) label: Option<String>,
}

impl Default for LegacyConfig {
    fn default() -> Self {
        LegacyConfig {
            hapikey: HapikeyMode::default(),
            keys: Vec::new(),
            developer_key_paths: default_developer_key_paths(),
        }
    }
}

/// HubSpot's app-settings APIs, where `hapikey` is a developer key and still the credential.
pub(crate) fn default_developer_key_paths() -> Vec<String> {
    [
        "/webhooks/v3/*/**",
        "/app-webhooks/**",
        "/integrators/timeline/v3/*/event-templates/**",
        "/crm/v3/extensions/cards-dev/**",
        "/crm/v3/extensions/calling/*/settings/**",
        "/crm/v3/extensions/videoconferencing/settings/*",
        "/crm/extensions/**",
        "/marketing/v3/marketing-events/*/settings",
        "/marketing/marketing-events/*/*/settings",
        "/automation/v4/actions/*/**",
        "/automation/actions/**",
        "/media-bridge/**",
        "/conversations/custom-channels/**",
    ]
    .map(String::from)
    .to_vec()
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9090))
}
fn default_max_body_bytes() -> u64 {
    10 * 1024 * 1024
}
/// Loopback only: a proxy that holds HubSpot credentials is closed until opened on purpose.
pub(crate) fn default_allowed_networks() -> Vec<ipnet::IpNet> {
    vec![
        "127.0.0.0/8".parse().expect("valid network"),
        "::1/128".parse().expect("valid network"),
    ]
}

fn default_shutdown_grace_secs() -> u64 {
    25
}
fn default_header_read_timeout_secs() -> u64 {
    30
}
fn default_body_read_timeout_secs() -> u64 {
    30
}
fn default_max_replay_buffer_bytes() -> u64 {
    64 * 1024 * 1024
}
fn default_max_header_count() -> usize {
    100
}
fn default_max_header_bytes() -> usize {
    32 * 1024
}
fn default_base_url() -> String {
    "https://api.hubapi.com".to_string()
}
fn default_connect_timeout_ms() -> u64 {
    3000
}
fn default_timeout_secs() -> u64 {
    60
}
fn default_pool_idle_timeout_secs() -> u64 {
    90
}
fn default_pool_max_idle_per_host() -> usize {
    256
}
fn default_max_connections() -> usize {
    128
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            admin_listen: default_admin_listen(),
            max_body_bytes: default_max_body_bytes(),
            shutdown_grace_secs: default_shutdown_grace_secs(),
            shutdown_min_delay_secs: 0,
            enable_quit: false,
            access_log: false,
            workers: 0,
            allowed_networks: default_allowed_networks(),
            trust_forwarded_for: false,
            tls: None,
            header_read_timeout_secs: default_header_read_timeout_secs(),
            max_header_count: default_max_header_count(),
            max_header_bytes: default_max_header_bytes(),
            body_read_timeout_secs: default_body_read_timeout_secs(),
            max_replay_buffer_bytes: default_max_replay_buffer_bytes(),
            deprecation_headers: false,
        }
    }
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            base_url: default_base_url(),
            connect_timeout_ms: default_connect_timeout_ms(),
            timeout_secs: default_timeout_secs(),
            ca_file: None,
            pool_idle_timeout_secs: default_pool_idle_timeout_secs(),
            pool_max_idle_per_host: default_pool_max_idle_per_host(),
            max_connections: default_max_connections(),
            proxy_url: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read the config file: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path}:{line}: {key}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        key: String,
        message: String,
    },
    #[error("{path}: {} problem(s): {}", problems.len(), join(problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

fn join(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

impl ConfigError {
    /// One readable line per problem, each naming the file and the key.
    pub(crate) fn lines(&self) -> Vec<String> {
        match self {
            ConfigError::Invalid { path, problems } => problems
                .iter()
                .map(|p| format!("{}: {p}", path.display()))
                .collect(),
            other => vec![other.to_string()],
        }
    }
}

impl Config {
    /// Reads and parses a config file; `Settings::load` also checks it.
    pub(crate) fn read(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let mut config = Config::parse(&text).map_err(|e| e.in_file(path))?;
        config.path = Some(path.to_path_buf());
        Ok(config)
    }

    /// Parses TOML text; the error names the key path (`accounts[0].token`) and line.
    pub fn parse(text: &str) -> Result<Config, ParseError> {
        let de = toml::Deserializer::new(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let key = match e.path().to_string() {
                p if p == "." => "(top level)".to_string(),
                p => p,
            };
            let inner = e.into_inner();
            let line = inner
                .span()
                .map(|s| 1 + text[..s.start.min(text.len())].matches('\n').count())
                .unwrap_or(0);
            ParseError {
                key,
                line,
                message: inner.message().to_string(),
            }
        })
    }
}

/// A parse error before the file name is known.
#[derive(Debug)]
pub struct ParseError {
    pub key: String,
    pub(crate) line: usize,
    pub message: String,
}

impl ParseError {
    fn in_file(self, path: &Path) -> ConfigError {
        ConfigError::Parse {
            path: path.to_path_buf(),
            line: self.line,
            key: self.key,
            message: self.message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[[accounts]]
name = "main"
token = { env = "HUBSPOT_TOKEN" }
"#;

    #[test]
    fn defaults_fill_in() {
        let c = Config::parse(MINIMAL).unwrap();
        assert!(c.validate().is_empty());
        assert_eq!(c.server.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.server.max_body_bytes, 10 * 1024 * 1024);
        assert_eq!(c.server.body_read_timeout_secs, 30);
        assert_eq!(c.server.max_replay_buffer_bytes, 64 * 1024 * 1024);
        assert_eq!(c.upstream.base_url, "https://api.hubapi.com");
        assert_eq!(
            c.accounts[0].token,
            Some(SecretSource::Env("HUBSPOT_TOKEN".into()))
        );
    }

    #[test]
    fn body_read_timeout_must_be_positive() {
        let c = Config::parse(&format!("[server]\nbody_read_timeout_secs = 0\n{MINIMAL}")).unwrap();
        let problems: Vec<String> = c.validate().iter().map(|p| p.to_string()).collect();
        assert!(
            problems
                .iter()
                .any(|p| p.contains("server.body_read_timeout_secs")),
            "{problems:?}"
        );
    }

    #[test]
    fn unknown_key_names_its_path() {
        let e = Config::parse("[server]\nlisten = \"127.0.0.1:1\"\nlistne = 3\n").unwrap_err();
        assert_eq!(e.key, "server.listne");
        assert_eq!(e.line, 3);
        assert!(e.message.contains("unknown field"), "{}", e.message);

        let e = Config::parse("[[accounts]]\nname = \"a\"\ntoken = { enc = \"X\" }\n").unwrap_err();
        assert_eq!(e.key, "accounts[0].token");
        assert!(e.message.contains("unknown variant"), "{}", e.message);
    }

    #[test]
    fn validation_reports_every_problem() {
        let text = r#"
[upstream]
base_url = "ftp://example.com/x"
timeout_secs = 0
[[accounts]]
name = "a b"
[[accounts]]
name = "dup"
token = { env = "X" }
[[accounts]]
name = "dup"
token = { env = "X" }
"#;
        let problems = Config::parse(text).unwrap().validate();
        let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "upstream.base_url",
                "upstream.timeout_secs",
                "accounts[0].name",
                "accounts[0].token",
                "accounts[2].name"
            ]
        );
    }

    #[test]
    fn legacy_section_is_checked() {
        let text = r#"
[legacy]
hapikey = "reject"
keys = [
  { sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", account = "main" },
  { sha256 = "xyz", account = "nobody" },
]
developer_key_paths = ["webhooks/**"]
[[accounts]]
name = "main"
token = { env = "X" }
default = true
"#;
        let c = Config::parse(text).unwrap();
        assert_eq!(c.legacy.hapikey, HapikeyMode::Reject);
        let keys: Vec<_> = c.validate().into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            [
                "legacy.keys[1].sha256",
                "legacy.keys[1].account",
                "legacy.developer_key_paths[0]"
            ]
        );
        let e = Config::parse("[legacy]\nhapikey = \"drop\"\n").unwrap_err();
        assert_eq!(e.key, "legacy.hapikey");
    }

    #[test]
    fn oauth_accounts_parse_and_default_their_endpoint() {
        let text = r#"
[[accounts]]
name = "marketing"
[accounts.oauth]
client_id = "1c0a"
client_secret = { env = "HUBSPOT_CLIENT_SECRET" }
refresh_token = { file = "/var/lib/hsap/marketing.refresh" }
"#;
        let c = Config::parse(text).unwrap();
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        let oauth = c.accounts[0].oauth.as_ref().unwrap();
        assert_eq!(oauth.refresh_margin_secs, 300);
        assert_eq!(
            oauth.token_url(&c.upstream),
            "https://api.hubapi.com/oauth/2026-03/token"
        );
        let both = format!("{text}\ntoken = {{ env = \"X\" }}\n").replace(
            "[accounts.oauth]\n",
            "token = { env = \"X\" }\n[accounts.oauth]\n",
        );
        let both = both.trim_end_matches("token = { env = \"X\" }\n");
        let keys: Vec<_> = Config::parse(both)
            .unwrap()
            .validate()
            .into_iter()
            .map(|p| p.key)
            .collect();
        assert_eq!(keys, ["accounts[0].oauth"]);
    }

    mod matcher_properties {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn rules_never_panic_on_any_input(rule in "\\PC{0,60}") {
                let _ = parse_rule(&rule);
                let _ = developer_path_glob(&rule);
            }

            #[test]
            fn star_is_one_segment_and_double_star_the_rest(
                seg in "[a-zA-Z0-9._~%-]{1,12}",
                rest in proptest::collection::vec("[a-zA-Z0-9._-]{1,8}", 1..4),
            ) {
                let one = parse_rule("GET /crm/v3/objects/*/search").unwrap().1;
                let deeper = rest.join("/");
                let single = format!("/crm/v3/objects/{seg}/search");
                let nested = format!("/crm/v3/objects/{seg}/{deeper}/search");
                prop_assert!(one.is_match(&single));
                prop_assert!(!one.is_match(&nested));
                let all = parse_rule("* /crm/v3/objects/**").unwrap().1;
                let below = format!("/crm/v3/objects/{seg}/{deeper}");
                let elsewhere = format!("/crm/v4/objects/{seg}");
                prop_assert!(all.is_match(&below));
                prop_assert!(!all.is_match(&elsewhere));
            }
        }

        #[test]
        fn rules_need_a_method_and_an_absolute_glob() {
            assert!(parse_rule("GET /x").unwrap().0 == Some(http::Method::GET));
            assert!(parse_rule("* /x").unwrap().0.is_none());
            assert!(parse_rule("/x").is_err());
            assert!(parse_rule("GET x").is_err());
            assert!(parse_rule("G@T /x").is_err());
        }
    }

    #[test]
    fn base_url_rules() {
        assert!(parse_base_url("https://api.hubapi.com").is_ok());
        assert!(parse_base_url("http://127.0.0.1:9999/").is_ok());
        assert!(parse_base_url("https://api.hubapi.com/crm").is_err());
        assert!(parse_base_url("api.hubapi.com").is_err());
    }
}
