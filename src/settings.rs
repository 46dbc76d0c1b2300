//! Settings: the config as the running proxy uses it. `Config` (src/config.rs) mirrors the
//! TOML file; `Settings` is built from it once, in src/settings/build.rs, which reports every
//! problem at once, naming its key. What it holds is parsed already (durations, the upstream
//! URL, key hashes, allow rules, legacy keys resolved to account indexes), so nothing past
//! startup re-validates or converts.

mod build;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::{GlobMatcher, GlobSet};
use http::uri::{Authority, Scheme};
use http::{Method, Uri};

use crate::config::{Config, ConfigError, HapikeyMode, RateLimitConfig, SecretSource, TlsConfig};

#[derive(Debug)]
pub struct Settings {
    pub(crate) server: ServerSettings,
    pub(crate) upstream: UpstreamSettings,
    /// At least one, names unique.
    pub accounts: Vec<AccountSettings>,
    /// Index into `accounts` of the account a request that names none goes to.
    pub default_account: usize,
    pub legacy: LegacySettings,
    /// When any is listed, every request must name one with `X-Auth-Proxy-Key`.
    pub(crate) clients: Vec<ClientSettings>,
    pub fleet: Option<FleetSettings>,
    /// The file the settings were loaded from, so messages can name the exact command to run.
    pub(crate) path: Option<PathBuf>,
}

#[derive(Debug)]
pub(crate) struct ServerSettings {
    pub(crate) listen: SocketAddr,
    pub(crate) admin_listen: SocketAddr,
    pub(crate) max_body_bytes: u64,
    pub(crate) shutdown_grace: Duration,
    pub(crate) shutdown_min_delay: Duration,
    pub(crate) enable_quit: bool,
    pub(crate) allowed_networks: Vec<ipnet::IpNet>,
    pub(crate) trust_forwarded_for: bool,
    pub(crate) tls: Option<TlsConfig>,
    /// 0 means one per core.
    pub(crate) workers: usize,
    pub(crate) access_log: bool,
    pub(crate) header_read_timeout: Duration,
    pub(crate) max_header_count: usize,
    pub(crate) max_header_bytes: usize,
    pub(crate) body_read_timeout: Duration,
    pub(crate) max_replay_buffer_bytes: u64,
    pub(crate) deprecation_headers: bool,
}

#[derive(Debug)]
pub(crate) struct UpstreamSettings {
    /// As written in the config, for messages and for URLs built on it.
    pub(crate) base_url: String,
    pub(crate) base: BaseUrl,
    pub(crate) connect_timeout: Duration,
    pub(crate) timeout: Duration,
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) pool_idle_timeout: Duration,
    pub(crate) pool_max_idle_per_host: usize,
    pub(crate) max_connections: usize,
    pub(crate) proxy_url: Option<String>,
}

/// `http(s)://host[:port]`, with no path: a request's own path is appended.
#[derive(Debug, Clone)]
pub(crate) struct BaseUrl {
    pub(crate) uri: Uri,
    pub(crate) scheme: Scheme,
    pub(crate) authority: Authority,
}

#[derive(Debug)]
pub struct AccountSettings {
    pub name: String,
    pub(crate) credential: CredentialSettings,
    pub rate_limit: RateLimitSettings,
    /// The HubSpot portal this account's token must belong to.
    pub(crate) hub_id: Option<u64>,
    /// Scopes `check --online` requires the token to hold.
    pub(crate) required_scopes: Vec<String>,
}

/// Where an account's bearer comes from: exactly one of `token` and `[accounts.oauth]`.
#[derive(Debug)]
pub(crate) enum CredentialSettings {
    /// A private app access token or service key.
    Static(SecretSource),
    OAuth(OAuthSettings),
}

#[derive(Debug)]
pub(crate) struct OAuthSettings {
    pub(crate) client_id: String,
    pub(crate) client_secret: SecretSource,
    pub(crate) refresh_token: SecretSource,
    /// `oauth.token_url`, or `upstream.base_url` + the default token path.
    pub(crate) token_url: String,
    pub(crate) refresh_margin: Duration,
    pub(crate) token_timeout: Duration,
    pub(crate) refresh_min_interval: Duration,
}

/// Shaping under HubSpot's limits, and retries (see `RateLimitConfig` for each key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitSettings {
    /// `None`: follow HubSpot's reported Max; `Some(0)`: shaping off; `Some(n)`: a ceiling.
    pub(crate) per_ten_seconds: Option<u32>,
    pub(crate) search_per_second: u32,
    pub(crate) max_queue_wait: Duration,
    pub(crate) adaptive: bool,
    pub(crate) max_retries_429: u32,
    pub(crate) max_retries_5xx: u32,
}

impl From<&RateLimitConfig> for RateLimitSettings {
    fn from(c: &RateLimitConfig) -> Self {
        RateLimitSettings {
            per_ten_seconds: c.per_ten_seconds,
            search_per_second: c.search_per_second,
            max_queue_wait: Duration::from_millis(c.max_queue_wait_ms),
            adaptive: c.adaptive,
            max_retries_429: c.max_retries_429,
            max_retries_5xx: c.max_retries_5xx,
        }
    }
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        RateLimitSettings::from(&RateLimitConfig::default())
    }
}

#[derive(Debug)]
pub struct LegacySettings {
    pub(crate) hapikey: HapikeyMode,
    pub(crate) keys: Vec<LegacyKeySettings>,
    /// Paths where `hapikey` is a developer API key, left untouched.
    pub(crate) developer_paths: GlobSet,
}

#[derive(Debug)]
pub(crate) struct LegacyKeySettings {
    /// SHA-256 of the key; only hashes are held.
    pub(crate) hash: [u8; 32],
    /// Index into `Settings::accounts`.
    pub(crate) account: usize,
    /// The `[[clients]]` entry this key also identifies.
    pub(crate) client: Option<String>,
    /// The caller's name in the migration report: its label, or the hash's first 8 hex digits.
    pub(crate) label: String,
}

#[derive(Debug)]
pub(crate) struct ClientSettings {
    pub(crate) name: String,
    /// SHA-256 of the key the client sends in `X-Auth-Proxy-Key`.
    pub(crate) key_hash: [u8; 32],
    /// Accounts it may use; `None` means all.
    pub(crate) accounts: Option<Vec<String>>,
    /// Its allow rules; `None` means everything.
    pub(crate) rules: Option<Vec<ClientRule>>,
}

/// `"METHOD /path/glob"`, parsed: `None` for `*` (any method).
#[derive(Debug, Clone)]
pub(crate) struct ClientRule {
    pub(crate) method: Option<Method>,
    pub(crate) path: GlobMatcher,
}

/// `[fleet]`: the Redis replicas share budgets and tokens through.
#[derive(Debug, Clone)]
pub struct FleetSettings {
    /// `fleet.redis_url`, parsed; it never holds a password.
    pub(crate) connection: redis::ConnectionInfo,
    pub(crate) redis_password: Option<SecretSource>,
    pub(crate) namespace: String,
    /// One Redis call may take this long.
    pub(crate) timeout: Duration,
}

impl Settings {
    /// Reads, parses and checks a config file.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        Settings::from_config(Config::read(path)?)
    }

    /// Every problem at once, each naming its key; a config with none becomes settings.
    pub fn from_config(config: Config) -> Result<Settings, ConfigError> {
        build::settings(&config).map_err(|problems| ConfigError::Invalid {
            path: config
                .path
                .clone()
                .unwrap_or_else(|| PathBuf::from("(config)")),
            problems,
        })
    }

    /// Unit tests' settings: one static account, then `extra` TOML (tables only).
    #[cfg(test)]
    pub(crate) fn for_tests(extra: &str) -> Settings {
        let text = format!("[[accounts]]\nname = \"main\"\ntoken = {{ env = \"T\" }}\n{extra}");
        Settings::from_config(Config::parse(&text).expect("test TOML")).expect("test settings")
    }
}

/// Unit tests' `key_sha256` / `sha256` values: the hex SHA-256 of a key.
#[cfg(test)]
pub(crate) fn key_sha256(key: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(key.as_bytes()))
}
