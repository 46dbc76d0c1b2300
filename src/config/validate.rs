//! Config problems, each naming its key path, and the value checkers (URLs, globs, rules,
//! hashes, names) that settings building (src/settings/build.rs) parses with.

use std::fmt;

/// One thing wrong with the config, with the key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub(crate) key: String,
    pub(crate) message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

pub(crate) fn problem(key: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        key: key.into(),
        message: message.into(),
    }
}

/// `*` matches one path segment and `**` the rest, as in the config docs.
pub(crate) fn developer_path_glob(glob: &str) -> Result<globset::Glob, String> {
    if !glob.starts_with('/') {
        return Err(format!("{glob:?} must start with '/'"));
    }
    globset::GlobBuilder::new(glob)
        .literal_separator(true)
        .build()
        .map_err(|e| format!("{glob:?} is not a valid glob: {e}"))
}

/// `"GET /crm/v3/objects/**"`: a method (or `*`) and a path glob.
pub(crate) fn parse_rule(
    rule: &str,
) -> Result<(Option<http::Method>, globset::GlobMatcher), String> {
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

pub(crate) fn parse_sha256(hex_digest: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_digest, &mut out).ok()?;
    Some(out)
}

/// Account names become metric labels and header values, so they stay a small, safe alphabet.
pub(crate) fn valid_account_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// `base_url` must be `http(s)://host[:port]` with no path: the request's own path is appended.
pub(crate) fn parse_base_url(raw: &str) -> Result<http::Uri, String> {
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
