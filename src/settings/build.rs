//! From `Config` to `Settings` in one pass: each key is checked and parsed together, so what
//! passes is already in its runtime form. Every problem is collected (not just the first),
//! in file order: server, upstream, accounts, legacy, clients, fleet.

use std::collections::HashSet;
use std::time::Duration;

use globset::GlobSetBuilder;

use super::{
    AccountSettings, BaseUrl, ClientRule, ClientSettings, CredentialSettings, FleetSettings,
    LegacyKeySettings, LegacySettings, OAuthSettings, RateLimitSettings, ServerSettings, Settings,
    UpstreamSettings,
};
use crate::config::validate::problem;
use crate::config::{
    developer_path_glob, parse_base_url, parse_rule, parse_sha256, valid_account_name,
    AccountConfig, ClientConfig, Config, FleetConfig, OAuthConfig, Problem,
};

/// A call that takes longer than this is no longer "one quick round trip" on the hot path.
const MAX_FLEET_TIMEOUT_MS: u64 = 10_000;

impl Config {
    /// Every problem at once, not just the first (what `Settings::from_config` refuses).
    pub fn validate(&self) -> Vec<Problem> {
        settings(self).err().unwrap_or_default()
    }
}

/// The settings, or every problem found. A part that could not be parsed is `None` only
/// alongside a problem about it.
pub(super) fn settings(config: &Config) -> Result<Settings, Vec<Problem>> {
    let mut out = Vec::new();
    let server = server(config, &mut out);
    let upstream = upstream(config, &mut out);
    let accounts = accounts(config, &mut out);
    let legacy = legacy(config, &mut out);
    let clients = clients(config, &mut out);
    // `Some(None)`: no [fleet]; `None`: a [fleet] with a problem.
    let fleet = match &config.fleet {
        None => Some(None),
        Some(f) => fleet(f, &mut out).map(Some),
    };
    match (upstream, accounts, legacy, clients, fleet) {
        (Some(upstream), Some(accounts), Some(legacy), Some(clients), Some(fleet))
            if out.is_empty() =>
        {
            Ok(Settings {
                server,
                upstream,
                default_account: config.accounts.iter().position(|a| a.default).unwrap_or(0),
                accounts,
                legacy,
                clients,
                fleet,
                path: config.path.clone(),
            })
        }
        _ if out.is_empty() => Err(vec![problem(
            "(config)",
            "could not be read into settings (a bug: please report it)",
        )]),
        _ => Err(out),
    }
}

fn positive(key: &str, value: u64, out: &mut Vec<Problem>) {
    if value == 0 {
        out.push(problem(key, "must be greater than 0"));
    }
}

fn server(config: &Config, out: &mut Vec<Problem>) -> ServerSettings {
    let s = &config.server;
    if s.listen == s.admin_listen && s.listen.port() != 0 {
        out.push(problem(
            "server.admin_listen",
            "must differ from server.listen",
        ));
    }
    positive("server.max_body_bytes", s.max_body_bytes, out);
    positive(
        "server.header_read_timeout_secs",
        s.header_read_timeout_secs,
        out,
    );
    positive(
        "server.body_read_timeout_secs",
        s.body_read_timeout_secs,
        out,
    );
    if s.max_header_count == 0 || s.max_header_bytes < 1024 {
        out.push(problem(
            "server.max_header_count",
            "max_header_count must be > 0 and max_header_bytes >= 1024",
        ));
    }
    ServerSettings {
        listen: s.listen,
        admin_listen: s.admin_listen,
        max_body_bytes: s.max_body_bytes,
        shutdown_grace: Duration::from_secs(s.shutdown_grace_secs),
        shutdown_min_delay: Duration::from_secs(s.shutdown_min_delay_secs),
        enable_quit: s.enable_quit,
        allowed_networks: s.allowed_networks.clone(),
        trust_forwarded_for: s.trust_forwarded_for,
        tls: s.tls.clone(),
        workers: s.workers,
        access_log: s.access_log,
        header_read_timeout: Duration::from_secs(s.header_read_timeout_secs),
        max_header_count: s.max_header_count,
        max_header_bytes: s.max_header_bytes,
        body_read_timeout: Duration::from_secs(s.body_read_timeout_secs),
        max_replay_buffer_bytes: s.max_replay_buffer_bytes,
        deprecation_headers: s.deprecation_headers,
    }
}

fn upstream(config: &Config, out: &mut Vec<Problem>) -> Option<UpstreamSettings> {
    let u = &config.upstream;
    let base = match base_url(&u.base_url) {
        Ok(base) => Some(base),
        Err(message) => {
            out.push(problem("upstream.base_url", message));
            None
        }
    };
    positive("upstream.connect_timeout_ms", u.connect_timeout_ms, out);
    positive("upstream.timeout_secs", u.timeout_secs, out);
    if u.max_connections == 0 {
        out.push(problem(
            "upstream.max_connections",
            "must be greater than 0",
        ));
    } else if u.max_connections < config.server.workers {
        // Each worker holds its own share of the slots; a worker with none could never send.
        out.push(problem(
            "upstream.max_connections",
            format!(
                "must be at least server.workers ({}), since each worker needs an upstream slot",
                config.server.workers
            ),
        ));
    }
    Some(UpstreamSettings {
        base_url: u.base_url.clone(),
        base: base?,
        connect_timeout: Duration::from_millis(u.connect_timeout_ms),
        timeout: Duration::from_secs(u.timeout_secs),
        ca_file: u.ca_file.clone(),
        pool_idle_timeout: Duration::from_secs(u.pool_idle_timeout_secs),
        pool_max_idle_per_host: u.pool_max_idle_per_host,
        max_connections: u.max_connections,
        proxy_url: u.proxy_url.clone(),
    })
}

fn base_url(raw: &str) -> Result<BaseUrl, String> {
    let uri = parse_base_url(raw)?;
    match (uri.scheme().cloned(), uri.authority().cloned()) {
        (Some(scheme), Some(authority)) => Ok(BaseUrl {
            uri,
            scheme,
            authority,
        }),
        _ => Err(format!("{raw:?} must be http(s)://host[:port]")),
    }
}

fn accounts(config: &Config, out: &mut Vec<Problem>) -> Option<Vec<AccountSettings>> {
    if config.accounts.is_empty() {
        out.push(problem(
            "accounts",
            "at least one [[accounts]] entry is required",
        ));
    }
    let mut seen = HashSet::new();
    let built: Vec<_> = config
        .accounts
        .iter()
        .enumerate()
        .map(|(i, account)| self::account(config, i, account, &mut seen, out))
        .collect();
    built.into_iter().collect()
}

fn account<'a>(
    config: &Config,
    index: usize,
    account: &'a AccountConfig,
    seen: &mut HashSet<&'a str>,
    out: &mut Vec<Problem>,
) -> Option<AccountSettings> {
    let key = format!("accounts[{index}]");
    if !valid_account_name(&account.name) {
        out.push(problem(
            format!("{key}.name"),
            format!(
                "{:?} is not a valid name: use letters, digits, '-', '_' or '.', starting with a letter or digit",
                account.name
            ),
        ));
    } else if !seen.insert(account.name.as_str()) {
        out.push(problem(
            format!("{key}.name"),
            format!("duplicate account name {:?}", account.name),
        ));
    }
    let credential = match (&account.token, &account.oauth) {
        (None, None) => {
            out.push(problem(
                format!("{key}.token"),
                "a credential is required: token = { file = \"...\" } or { env = \"...\" }, or an [accounts.oauth] table",
            ));
            None
        }
        (Some(_), Some(_)) => {
            out.push(problem(
                format!("{key}.oauth"),
                "give either token or oauth, not both",
            ));
            None
        }
        (None, Some(oauth)) => {
            oauth_settings(config, &key, oauth, out).map(CredentialSettings::OAuth)
        }
        (Some(token), None) => Some(CredentialSettings::Static(token.clone())),
    };
    let limits = &account.rate_limit;
    if limits.max_retries_429 > 10 || limits.max_retries_5xx > 10 {
        out.push(problem(
            format!("{key}.rate_limit"),
            "max_retries_429 and max_retries_5xx must be at most 10",
        ));
    }
    Some(AccountSettings {
        name: account.name.clone(),
        credential: credential?,
        rate_limit: RateLimitSettings::from(limits),
        hub_id: account.hub_id,
        required_scopes: account.required_scopes.clone(),
    })
}

fn oauth_settings(
    config: &Config,
    key: &str,
    oauth: &OAuthConfig,
    out: &mut Vec<Problem>,
) -> Option<OAuthSettings> {
    let before = out.len();
    if oauth.client_id.trim().is_empty() {
        out.push(problem(
            format!("{key}.oauth.client_id"),
            "must not be empty",
        ));
    }
    if let Some(url) = &oauth.token_url {
        let ok = url.parse::<http::Uri>().ok().is_some_and(|u| {
            matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some()
        });
        if !ok {
            out.push(problem(
                format!("{key}.oauth.token_url"),
                format!("{url:?} must be an http(s) URL"),
            ));
        }
    }
    positive(
        &format!("{key}.oauth.token_timeout_secs"),
        oauth.token_timeout_secs,
        out,
    );
    (out.len() == before).then(|| OAuthSettings {
        client_id: oauth.client_id.clone(),
        client_secret: oauth.client_secret.clone(),
        refresh_token: oauth.refresh_token.clone(),
        token_url: oauth.token_url(&config.upstream),
        refresh_margin: Duration::from_secs(oauth.refresh_margin_secs),
        token_timeout: Duration::from_secs(oauth.token_timeout_secs),
        refresh_min_interval: Duration::from_secs(oauth.refresh_min_interval_secs),
    })
}

fn legacy(config: &Config, out: &mut Vec<Problem>) -> Option<LegacySettings> {
    let defaults = config.accounts.iter().filter(|a| a.default).count();
    if defaults > 1 {
        out.push(problem(
            "accounts",
            format!("{defaults} accounts say default = true; at most one may"),
        ));
    }
    let mut hashes = HashSet::new();
    let keys: Vec<_> = config
        .legacy
        .keys
        .iter()
        .enumerate()
        .map(|(i, key)| {
            let at = format!("legacy.keys[{i}]");
            let hash = parse_sha256(&key.sha256);
            if hash.is_none() {
                out.push(problem(
                    format!("{at}.sha256"),
                    "must be 64 hex digits (make one with `hubspot-auth-proxy hash-key`)",
                ));
            } else if !hashes.insert(key.sha256.to_ascii_lowercase()) {
                out.push(problem(format!("{at}.sha256"), "listed twice"));
            }
            if key.label.as_deref().is_some_and(|l| !valid_account_name(l)) {
                out.push(problem(
                    format!("{at}.label"),
                    "use at most 64 letters, digits, '-', '_' or '.', starting with a letter or digit",
                ));
            }
            let account = config.accounts.iter().position(|a| a.name == key.account);
            if account.is_none() {
                out.push(problem(
                    format!("{at}.account"),
                    format!("no account is named {:?}", key.account),
                ));
            }
            let hash = hash?;
            Some(LegacyKeySettings {
                hash,
                account: account?,
                client: key.client.clone(),
                // Eight hex digits of the hash name the key without revealing it.
                label: key.label.clone().unwrap_or_else(|| hex::encode(&hash[..4])),
            })
        })
        .collect();
    let mut globs = GlobSetBuilder::new();
    for (i, glob) in config.legacy.developer_key_paths.iter().enumerate() {
        match developer_path_glob(glob) {
            Ok(glob) => {
                globs.add(glob);
            }
            Err(message) => out.push(problem(format!("legacy.developer_key_paths[{i}]"), message)),
        }
    }
    let developer_paths = globs
        .build()
        .map_err(|e| out.push(problem("legacy.developer_key_paths", e.to_string())))
        .ok();
    Some(LegacySettings {
        hapikey: config.legacy.hapikey,
        keys: keys.into_iter().collect::<Option<_>>()?,
        developer_paths: developer_paths?,
    })
}

fn clients(config: &Config, out: &mut Vec<Problem>) -> Option<Vec<ClientSettings>> {
    let mut names = HashSet::new();
    let mut keys = HashSet::new();
    let built: Vec<_> = config
        .clients
        .iter()
        .enumerate()
        .map(|(i, c)| client(config, i, c, &mut names, &mut keys, out))
        .collect();
    for (i, key) in config.legacy.keys.iter().enumerate() {
        if let Some(client) = &key.client {
            if !config.clients.iter().any(|c| &c.name == client) {
                out.push(problem(
                    format!("legacy.keys[{i}].client"),
                    format!("no [[clients]] entry is named {client:?}"),
                ));
            }
        }
    }
    built.into_iter().collect()
}

fn client<'a>(
    config: &Config,
    index: usize,
    client: &'a ClientConfig,
    names: &mut HashSet<&'a str>,
    keys: &mut HashSet<String>,
    out: &mut Vec<Problem>,
) -> Option<ClientSettings> {
    let at = format!("clients[{index}]");
    if !valid_account_name(&client.name) || !names.insert(client.name.as_str()) {
        out.push(problem(
            format!("{at}.name"),
            format!("{:?} is not a valid, unique name", client.name),
        ));
    }
    let key_hash = parse_sha256(&client.key_sha256);
    if key_hash.is_none() {
        out.push(problem(
            format!("{at}.key_sha256"),
            "must be 64 hex digits (make one with `hubspot-auth-proxy hash-key`)",
        ));
    } else if !keys.insert(client.key_sha256.to_ascii_lowercase()) {
        out.push(problem(format!("{at}.key_sha256"), "listed twice"));
    }
    for (j, account) in client.accounts.iter().flatten().enumerate() {
        if !config.accounts.iter().any(|a| &a.name == account) {
            out.push(problem(
                format!("{at}.accounts[{j}]"),
                format!("no account is named {account:?}"),
            ));
        }
    }
    let rules = client.allow.as_ref().map(|rules| {
        rules
            .iter()
            .enumerate()
            .map(|(j, rule)| match parse_rule(rule) {
                Ok((method, path)) => Some(ClientRule { method, path }),
                Err(message) => {
                    out.push(problem(format!("{at}.allow[{j}]"), message));
                    None
                }
            })
            .collect::<Vec<_>>()
    });
    Some(ClientSettings {
        name: client.name.clone(),
        key_hash: key_hash?,
        accounts: client.accounts.clone(),
        rules: match rules {
            None => None,
            Some(rules) => Some(rules.into_iter().collect::<Option<_>>()?),
        },
    })
}

fn fleet(config: &FleetConfig, out: &mut Vec<Problem>) -> Option<FleetSettings> {
    let connection = config
        .connection_info()
        .map_err(|e| out.push(problem("fleet.redis_url", e)))
        .ok();
    if !valid_namespace(&config.namespace) {
        out.push(problem(
            "fleet.namespace",
            "must be 1-64 characters of A-Z a-z 0-9 - _ . (it prefixes every Redis key)",
        ));
    }
    if config.timeout_ms == 0 || config.timeout_ms > MAX_FLEET_TIMEOUT_MS {
        out.push(problem(
            "fleet.timeout_ms",
            format!("must be between 1 and {MAX_FLEET_TIMEOUT_MS}"),
        ));
    }
    Some(FleetSettings {
        connection: connection?,
        redis_password: config.redis_password.clone(),
        namespace: config.namespace.clone(),
        timeout: Duration::from_millis(config.timeout_ms),
    })
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

    const ACCOUNT: &str = "[[accounts]]\nname = \"main\"\ntoken = { env = \"T\" }\n";

    fn build(text: &str) -> Result<Settings, Vec<Problem>> {
        settings(&Config::parse(text).expect("TOML"))
    }

    fn keys(text: &str) -> Vec<String> {
        build(text)
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|p| p.key)
            .collect()
    }

    #[test]
    fn several_problems_are_all_reported_in_file_order() {
        let text = r#"
[server]
body_read_timeout_secs = 0
[upstream]
base_url = "ftp://example.com"
[[accounts]]
name = "main"
[legacy]
developer_key_paths = ["no-slash"]
[[legacy.keys]]
sha256 = "zz"
account = "nobody"
[[clients]]
name = "ci"
key_sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
allow = ["GET /ok", "GET no-slash", "G@T /x"]
[fleet]
redis_url = "http://127.0.0.1:6379"
"#;
        assert_eq!(
            keys(text),
            [
                "server.body_read_timeout_secs",
                "upstream.base_url",
                "accounts[0].token",
                "legacy.keys[0].sha256",
                "legacy.keys[0].account",
                "legacy.developer_key_paths[0]",
                "clients[0].allow[1]",
                "clients[0].allow[2]",
                "fleet.redis_url",
            ]
        );
    }

    #[test]
    fn an_invalid_rule_is_a_problem_not_a_panic() {
        let hash = "ab".repeat(32);
        let text = format!(
            "{ACCOUNT}[[clients]]\nname = \"ci\"\nkey_sha256 = \"{hash}\"\nallow = [\"GET\"]\n"
        );
        let problems = build(&text).expect_err("refused");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].key, "clients[0].allow[0]");
        assert!(
            problems[0].message.contains("METHOD /path/glob"),
            "{}",
            problems[0]
        );
    }

    #[test]
    fn durations_and_urls_are_parsed() {
        let text = format!(
            "[server]\nheader_read_timeout_secs = 7\nbody_read_timeout_secs = 8\nshutdown_grace_secs = 9\nshutdown_min_delay_secs = 2\n\
             [upstream]\nbase_url = \"http://127.0.0.1:8443/\"\nconnect_timeout_ms = 250\ntimeout_secs = 12\npool_idle_timeout_secs = 4\n\
             {ACCOUNT}[accounts.rate_limit]\nmax_queue_wait_ms = 1500\n\
             [[accounts]]\nname = \"app\"\n[accounts.oauth]\nclient_id = \"c\"\nclient_secret = {{ env = \"S\" }}\nrefresh_token = {{ env = \"R\" }}\nrefresh_margin_secs = 60\ntoken_timeout_secs = 3\nrefresh_min_interval_secs = 11\n\
             [fleet]\nredis_url = \"redis://127.0.0.1:6379/2\"\ntimeout_ms = 250\n"
        );
        let s = build(&text).expect("settings");
        let secs = Duration::from_secs;
        assert_eq!(s.server.header_read_timeout, secs(7));
        assert_eq!(s.server.body_read_timeout, secs(8));
        assert_eq!(s.server.shutdown_grace, secs(9));
        assert_eq!(s.server.shutdown_min_delay, secs(2));
        assert_eq!(s.upstream.connect_timeout, Duration::from_millis(250));
        assert_eq!(s.upstream.timeout, secs(12));
        assert_eq!(s.upstream.pool_idle_timeout, secs(4));
        assert_eq!(s.upstream.base.scheme, http::uri::Scheme::HTTP);
        assert_eq!(s.upstream.base.authority.as_str(), "127.0.0.1:8443");
        assert_eq!(
            s.accounts[0].rate_limit.max_queue_wait,
            Duration::from_millis(1500)
        );
        let CredentialSettings::OAuth(oauth) = &s.accounts[1].credential else {
            panic!("an oauth account");
        };
        // No token_url: the upstream's, with the date-versioned path.
        assert_eq!(oauth.token_url, "http://127.0.0.1:8443/oauth/2026-03/token");
        assert_eq!(oauth.refresh_margin, secs(60));
        assert_eq!(oauth.token_timeout, secs(3));
        assert_eq!(oauth.refresh_min_interval, secs(11));
        let fleet = s.fleet.expect("fleet");
        assert_eq!(fleet.timeout, Duration::from_millis(250));
        assert_eq!(fleet.connection.redis_settings().db(), 2);
    }

    #[test]
    fn the_default_account_is_the_marked_one_else_the_first() {
        let two = format!("{ACCOUNT}[[accounts]]\nname = \"other\"\ntoken = {{ env = \"T\" }}\n");
        assert_eq!(build(&two).expect("settings").default_account, 0);
        let marked = format!("{two}default = true\n");
        assert_eq!(build(&marked).expect("settings").default_account, 1);
        let both = marked.replacen(
            "token = { env = \"T\" }\n",
            "token = { env = \"T\" }\ndefault = true\n",
            1,
        );
        assert_eq!(keys(&both), ["accounts"]);
    }

    #[test]
    fn legacy_keys_resolve_to_account_indexes_and_labels() {
        let hash = "AB".repeat(32);
        let text = format!(
            "{ACCOUNT}[[accounts]]\nname = \"sales\"\ntoken = {{ env = \"T\" }}\n\
             [[legacy.keys]]\nsha256 = \"{hash}\"\naccount = \"sales\"\n\
             [[legacy.keys]]\nsha256 = \"{}\"\naccount = \"main\"\nlabel = \"nightly\"\n",
            "cd".repeat(32)
        );
        let s = build(&text).expect("settings");
        assert_eq!(s.legacy.keys[0].account, 1);
        assert_eq!(s.legacy.keys[0].hash, [0xab; 32]);
        assert_eq!(s.legacy.keys[0].label, "abababab");
        assert_eq!(s.legacy.keys[1].account, 0);
        assert_eq!(s.legacy.keys[1].label, "nightly");
        assert!(s.legacy.developer_paths.is_match("/media-bridge/v1/x"));
        assert!(!s
            .legacy
            .developer_paths
            .is_match("/crm/v3/objects/contacts"));
    }

    #[test]
    fn client_keys_and_rules_are_parsed() {
        let text = format!(
            "{ACCOUNT}[[clients]]\nname = \"ci\"\nkey_sha256 = \"{}\"\naccounts = [\"main\"]\nallow = [\"GET /crm/**\", \"* /files/*\"]\n",
            "01".repeat(32)
        );
        let s = build(&text).expect("settings");
        let client = &s.clients[0];
        assert_eq!(client.key_hash, [1; 32]);
        let rules = client.rules.as_ref().expect("rules");
        assert_eq!(rules[0].method, Some(http::Method::GET));
        assert!(rules[0].path.is_match("/crm/v3/objects"));
        assert!(rules[1].method.is_none());
        assert!(!rules[1].path.is_match("/files/a/b"));
    }

    fn fleet_config(url: &str) -> FleetConfig {
        FleetConfig {
            redis_url: url.into(),
            redis_password: None,
            namespace: "hubspot-auth-proxy".into(),
            timeout_ms: 100,
        }
    }

    fn fleet_problems(config: &FleetConfig) -> Vec<Problem> {
        let mut out = Vec::new();
        let built = fleet(config, &mut out);
        assert_eq!(built.is_some(), out.is_empty(), "{out:?}");
        out
    }

    #[test]
    fn plain_and_tls_fleet_urls_pass() {
        assert!(fleet_problems(&fleet_config("redis://127.0.0.1:6379/0")).is_empty());
        assert!(fleet_problems(&fleet_config("rediss://redis.example.com:6380")).is_empty());
        assert!(fleet_problems(&fleet_config("redis://default@127.0.0.1:6379")).is_empty());
    }

    #[test]
    fn an_inline_redis_password_is_refused_naming_both_keys_without_echoing_it() {
        for url in [
            "redis://:hunter2-secret@127.0.0.1:6379",
            "rediss://user:hunter2-secret@redis.example.com:6380/1",
        ] {
            let p = fleet_problems(&fleet_config(url));
            assert_eq!(p.len(), 1, "{p:?}");
            assert_eq!(p[0].key, "fleet.redis_url");
            assert!(p[0].message.contains("fleet.redis_password"), "{}", p[0]);
            assert!(!p[0].to_string().contains("hunter2"), "{}", p[0]);
        }
    }

    #[test]
    fn bad_fleet_scheme_namespace_and_timeout_are_all_reported() {
        let mut config = fleet_config("http://127.0.0.1:6379");
        config.namespace = "has space".into();
        config.timeout_ms = 0;
        let keys: Vec<_> = fleet_problems(&config).into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            ["fleet.redis_url", "fleet.namespace", "fleet.timeout_ms"]
        );
        assert_eq!(
            fleet_problems(&fleet_config("redis+unix:///tmp/x")).len(),
            1
        );
    }
}
