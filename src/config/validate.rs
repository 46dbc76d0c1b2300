//! Config validation: every problem at once, each naming its key path, and the value checkers
//! (URLs, globs, rules, hashes, names) that runtime code reuses.

use std::fmt;

use super::{Config, OAuthConfig};

/// One thing wrong with the config, with the key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

pub(super) fn problem(key: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        key: key.into(),
        message: message.into(),
    }
}

/// `*` matches one path segment and `**` the rest, as in the config docs.
pub fn developer_path_glob(glob: &str) -> Result<globset::Glob, String> {
    if !glob.starts_with('/') {
        return Err(format!("{glob:?} must start with '/'"));
    }
    globset::GlobBuilder::new(glob)
        .literal_separator(true)
        .build()
        .map_err(|e| format!("{glob:?} is not a valid glob: {e}"))
}

/// `"GET /crm/v3/objects/**"`: a method (or `*`) and a path glob.
pub fn parse_rule(rule: &str) -> Result<(Option<http::Method>, globset::GlobMatcher), String> {
    let (method, path) = rule
        .split_once(' ')
        .ok_or_else(|| format!("{rule:?} must be \"METHOD /path/glob\""))?;
    let method = match method {
        "*" => None,
        m => Some(
            http::Method::from_bytes(m.as_bytes())
                .map_err(|_| format!("{m:?} in {rule:?} is not an HTTP method"))?,
        ),
    };
    let glob = developer_path_glob(path.trim())?;
    Ok((method, glob.compile_matcher()))
}

pub fn parse_sha256(hex_digest: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_digest, &mut out).ok()?;
    Some(out)
}

fn validate_oauth(key: &str, oauth: &OAuthConfig, out: &mut Vec<Problem>) {
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
    if oauth.token_timeout_secs == 0 {
        out.push(problem(
            format!("{key}.oauth.token_timeout_secs"),
            "must be greater than 0",
        ));
    }
}

/// Account names become metric labels and header values, so they stay a small, safe alphabet.
pub fn valid_account_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// `base_url` must be `http(s)://host[:port]` with no path: the request's own path is appended.
pub fn parse_base_url(raw: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = raw
        .parse()
        .map_err(|e| format!("{raw:?} is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(format!("{raw:?} must start with https:// or http://")),
    }
    if uri.authority().is_none() {
        return Err(format!("{raw:?} has no host"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!(
            "{raw:?} must not have a path or query: the request's own path is appended"
        ));
    }
    Ok(uri)
}

impl Config {
    /// Every problem at once, not just the first.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        self.validate_server(&mut problems);
        self.validate_upstream(&mut problems);
        self.validate_accounts(&mut problems);
        self.validate_legacy(&mut problems);
        self.validate_clients(&mut problems);
        if let Some(fleet) = &self.fleet {
            fleet.validate(&mut problems);
        }
        problems
    }

    fn validate_server(&self, out: &mut Vec<Problem>) {
        let s = &self.server;
        if s.listen == s.admin_listen && s.listen.port() != 0 {
            out.push(problem(
                "server.admin_listen",
                "must differ from server.listen",
            ));
        }
        if s.max_body_bytes == 0 {
            out.push(problem("server.max_body_bytes", "must be greater than 0"));
        }
        if s.header_read_timeout_secs == 0 {
            out.push(problem(
                "server.header_read_timeout_secs",
                "must be greater than 0",
            ));
        }
        if s.body_read_timeout_secs == 0 {
            out.push(problem(
                "server.body_read_timeout_secs",
                "must be greater than 0",
            ));
        }
        if s.max_header_count == 0 || s.max_header_bytes < 1024 {
            out.push(problem(
                "server.max_header_count",
                "max_header_count must be > 0 and max_header_bytes >= 1024",
            ));
        }
    }

    fn validate_upstream(&self, out: &mut Vec<Problem>) {
        let u = &self.upstream;
        if let Err(message) = parse_base_url(&u.base_url) {
            out.push(problem("upstream.base_url", message));
        }
        if u.connect_timeout_ms == 0 {
            out.push(problem(
                "upstream.connect_timeout_ms",
                "must be greater than 0",
            ));
        }
        if u.timeout_secs == 0 {
            out.push(problem("upstream.timeout_secs", "must be greater than 0"));
        }
        if u.max_connections == 0 {
            out.push(problem(
                "upstream.max_connections",
                "must be greater than 0",
            ));
        } else if u.max_connections < self.server.workers {
            // Each worker holds its own share of the slots; a worker with none could never send.
            out.push(problem(
                "upstream.max_connections",
                format!(
                    "must be at least server.workers ({}), since each worker needs an upstream slot",
                    self.server.workers
                ),
            ));
        }
    }

    fn validate_accounts(&self, out: &mut Vec<Problem>) {
        if self.accounts.is_empty() {
            out.push(problem(
                "accounts",
                "at least one [[accounts]] entry is required",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, account) in self.accounts.iter().enumerate() {
            let key = format!("accounts[{i}]");
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
            match (&account.token, &account.oauth) {
                (None, None) => out.push(problem(
                    format!("{key}.token"),
                    "a credential is required: token = { file = \"...\" } or { env = \"...\" }, or an [accounts.oauth] table",
                )),
                (Some(_), Some(_)) => out.push(problem(
                    format!("{key}.oauth"),
                    "give either token or oauth, not both",
                )),
                (None, Some(oauth)) => validate_oauth(&key, oauth, out),
                (Some(_), None) => {}
            }
            if account.rate_limit.max_retries_429 > 10 || account.rate_limit.max_retries_5xx > 10 {
                out.push(problem(
                    format!("{key}.rate_limit"),
                    "max_retries_429 and max_retries_5xx must be at most 10",
                ));
            }
        }
    }

    fn validate_legacy(&self, out: &mut Vec<Problem>) {
        let defaults = self.accounts.iter().filter(|a| a.default).count();
        if defaults > 1 {
            out.push(problem(
                "accounts",
                format!("{defaults} accounts say default = true; at most one may"),
            ));
        }
        let mut hashes = std::collections::HashSet::new();
        for (i, key) in self.legacy.keys.iter().enumerate() {
            let at = format!("legacy.keys[{i}]");
            if parse_sha256(&key.sha256).is_none() {
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
            if !self.accounts.iter().any(|a| a.name == key.account) {
                out.push(problem(
                    format!("{at}.account"),
                    format!("no account is named {:?}", key.account),
                ));
            }
        }
        for (i, glob) in self.legacy.developer_key_paths.iter().enumerate() {
            if let Err(message) = developer_path_glob(glob) {
                out.push(problem(format!("legacy.developer_key_paths[{i}]"), message));
            }
        }
    }

    fn validate_clients(&self, out: &mut Vec<Problem>) {
        let mut names = std::collections::HashSet::new();
        let mut keys = std::collections::HashSet::new();
        for (i, client) in self.clients.iter().enumerate() {
            let at = format!("clients[{i}]");
            if !valid_account_name(&client.name) || !names.insert(client.name.as_str()) {
                out.push(problem(
                    format!("{at}.name"),
                    format!("{:?} is not a valid, unique name", client.name),
                ));
            }
            if parse_sha256(&client.key_sha256).is_none() {
                out.push(problem(
                    format!("{at}.key_sha256"),
                    "must be 64 hex digits (make one with `hubspot-auth-proxy hash-key`)",
                ));
            } else if !keys.insert(client.key_sha256.to_ascii_lowercase()) {
                out.push(problem(format!("{at}.key_sha256"), "listed twice"));
            }
            for (j, account) in client.accounts.iter().flatten().enumerate() {
                if !self.accounts.iter().any(|a| &a.name == account) {
                    out.push(problem(
                        format!("{at}.accounts[{j}]"),
                        format!("no account is named {account:?}"),
                    ));
                }
            }
            for (j, rule) in client.allow.iter().flatten().enumerate() {
                if let Err(message) = parse_rule(rule) {
                    out.push(problem(format!("{at}.allow[{j}]"), message));
                }
            }
        }
        for (i, key) in self.legacy.keys.iter().enumerate() {
            if let Some(client) = &key.client {
                if !self.clients.iter().any(|c| &c.name == client) {
                    out.push(problem(
                        format!("legacy.keys[{i}].client"),
                        format!("no [[clients]] entry is named {client:?}"),
                    ));
                }
            }
        }
    }
}
