//! `[fleet]`: the Redis that replicas share budgets and tokens through, and its validation.

use serde::Deserialize;

use super::validate::{problem, Problem};
use super::SecretSource;

/// Many replicas act as one HubSpot client through this Redis; absent, every process is alone.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// `redis://host:port/db`, or `rediss://` for TLS (rustls; `upstream.ca_file` applies).
    pub redis_url: String,
    /// Kept out of the URL so it never sits in the config file or a log line.
    #[serde(default)]
    pub redis_password: Option<SecretSource>,
    /// Replicas that share budgets and tokens use the same namespace; it prefixes every key.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// One Redis call may take this long; past it the replica falls back to local shaping.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_namespace() -> String {
    "hubspot-auth-proxy".into()
}
fn default_timeout_ms() -> u64 {
    100
}

/// A call that takes longer than this is no longer "one quick round trip" on the hot path.
const MAX_TIMEOUT_MS: u64 = 10_000;

impl FleetConfig {
    /// The URL parsed into redis-rs's connection info, refusing what we do not support.
    /// Messages never quote the URL: it may carry a password.
    pub fn connection_info(&self) -> Result<redis::ConnectionInfo, String> {
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

    pub fn validate(&self, out: &mut Vec<Problem>) {
        if let Err(e) = self.connection_info() {
            out.push(problem("fleet.redis_url", e));
        }
        if !valid_namespace(&self.namespace) {
            out.push(problem(
                "fleet.namespace",
                "must be 1-64 characters of A-Z a-z 0-9 - _ . (it prefixes every Redis key)",
            ));
        }
        if self.timeout_ms == 0 || self.timeout_ms > MAX_TIMEOUT_MS {
            out.push(problem(
                "fleet.timeout_ms",
                format!("must be between 1 and {MAX_TIMEOUT_MS}"),
            ));
        }
    }
}

/// Namespaces become key prefixes: a small alphabet keeps `:` and `{}` (hash tags) ours.
fn valid_namespace(ns: &str) -> bool {
    !ns.is_empty()
        && ns.len() <= 64
        && ns
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet(url: &str) -> FleetConfig {
        FleetConfig {
            redis_url: url.into(),
            redis_password: None,
            namespace: default_namespace(),
            timeout_ms: 100,
        }
    }

    fn problems(config: &FleetConfig) -> Vec<Problem> {
        let mut out = Vec::new();
        config.validate(&mut out);
        out
    }

    #[test]
    fn plain_and_tls_urls_pass() {
        assert!(problems(&fleet("redis://127.0.0.1:6379/0")).is_empty());
        assert!(problems(&fleet("rediss://redis.example.com:6380")).is_empty());
        assert!(problems(&fleet("redis://default@127.0.0.1:6379")).is_empty());
    }

    #[test]
    fn an_inline_password_is_refused_naming_both_keys_without_echoing_it() {
        for url in [
            "redis://:hunter2-secret@127.0.0.1:6379",
            "rediss://user:hunter2-secret@redis.example.com:6380/1",
        ] {
            let p = problems(&fleet(url));
            assert_eq!(p.len(), 1, "{p:?}");
            assert_eq!(p[0].key, "fleet.redis_url");
            assert!(p[0].message.contains("fleet.redis_password"), "{}", p[0]);
            assert!(!p[0].to_string().contains("hunter2"), "{}", p[0]);
        }
    }

    #[test]
    fn bad_scheme_namespace_and_timeout_are_all_reported() {
        let mut config = fleet("http://127.0.0.1:6379");
        config.namespace = "has space".into();
        config.timeout_ms = 0;
        let keys: Vec<_> = problems(&config).into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            ["fleet.redis_url", "fleet.namespace", "fleet.timeout_ms"]
        );
        assert_eq!(problems(&fleet("redis+unix:///tmp/x")).len(), 1);
    }
}
