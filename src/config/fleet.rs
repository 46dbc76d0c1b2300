//! `[fleet]`: the Redis that replicas share budgets and tokens through (checked and parsed in
//! src/settings/build.rs).

use serde::Deserialize;

use super::SecretSource;

/// Many replicas act as one HubSpot client through this Redis; absent, every process is alone.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// `redis://host:port/db`, or `rediss://` for TLS (rustls; `upstream.ca_file` applies).
    pub redis_url: String,
    /// Kept out of the URL so it never sits in the config file or a log line.
    #[serde(default)]
    pub(crate) redis_password: Option<SecretSource>,
    /// Replicas that share budgets and tokens use the same namespace; it prefixes every key.
    #[serde(default = "default_namespace")]
    pub(crate) namespace: String,
    /// One Redis call may take this long; past it the replica falls back to local shaping.
    #[serde(default = "default_timeout_ms")]
    pub(crate) timeout_ms: u64,
}

fn default_namespace() -> String {
    "hubspot-auth-proxy".into()
}
fn default_timeout_ms() -> u64 {
    100
}

impl FleetConfig {
    /// The URL parsed into redis-rs's connection info, refusing what we do not support.
    /// Messages never quote the URL: it may carry a password.
    pub(crate) fn connection_info(&self) -> Result<redis::ConnectionInfo, String> {
        let scheme = self.redis_url.split("://").next().unwrap_or_default();
        if !matches!(scheme, "redis" | "rediss") || !self.redis_url.contains("://") {
            return Err("must start with redis:// or rediss:// (TLS)".into());
        }
        let info = redis::IntoConnectionInfo::into_connection_info(self.redis_url.as_str())
            .map_err(|_| "is not a valid redis:// or rediss:// URL with a host".to_string())?;
        if info.redis_settings().password().is_some() {
            return Err("holds a password; put it in fleet.redis_password (a secret source such as { env = \"REDIS_PASSWORD\" }) instead".into());
        }
        Ok(info)
    }
}
