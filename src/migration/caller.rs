//! `X-Auth-Proxy-Caller`: a self-declared name for callers without keys, for the migration
//! report only. It is always removed before the request goes to HubSpot.

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::error::ProxyError;

pub(crate) static CALLER_HEADER: HeaderName = HeaderName::from_static("x-auth-proxy-caller");

/// Longest accepted name: enough for `team.service-name.env`, short enough for a table column.
pub(crate) const MAX_LEN: usize = 64;

/// Removes the header and returns its value when it names a valid caller. An invalid value is
/// refused (400) rather than counted as anonymous: a typo then shows up at once, instead of as
/// a caller that silently vanished from the report. Repeated headers are refused too.
pub(crate) fn take(headers: &mut HeaderMap) -> Result<Option<HeaderValue>, ProxyError> {
    if !headers.contains_key(&CALLER_HEADER) {
        return Ok(None);
    }
    let mut values = match headers.entry(&CALLER_HEADER) {
        http::header::Entry::Occupied(entry) => entry.remove_entry_mult().1,
        http::header::Entry::Vacant(_) => return Ok(None),
    };
    let first = values.next().expect("occupied entry has a value");
    if values.next().is_some() {
        return Err(ProxyError::InvalidCaller("it is sent more than once"));
    }
    validate(&first)?;
    Ok(Some(first))
}

/// The trimmed name in a value `take` accepted.
pub(crate) fn name(value: &HeaderValue) -> &str {
    value.to_str().map(str::trim).unwrap_or("")
}

fn validate(value: &HeaderValue) -> Result<(), ProxyError> {
    let text = value
        .to_str()
        .map_err(|_| ProxyError::InvalidCaller("it holds non-ASCII bytes"))?
        .trim();
    if text.is_empty() {
        return Err(ProxyError::InvalidCaller("it is empty"));
    }
    if text.len() > MAX_LEN {
        return Err(ProxyError::InvalidCaller("it is longer than 64 characters"));
    }
    if !text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(ProxyError::InvalidCaller(
            "only letters, digits, '.', '_' and '-' are allowed",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taken(values: &[&str]) -> Result<Option<String>, ProxyError> {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(&CALLER_HEADER, HeaderValue::from_str(v).unwrap());
        }
        let out = take(&mut headers).map(|v| v.map(|v| name(&v).to_string()));
        assert!(!headers.contains_key(&CALLER_HEADER), "always removed");
        out
    }

    #[test]
    fn accepted_and_refused_names() {
        assert_eq!(taken(&[]).unwrap(), None);
        assert_eq!(
            taken(&["  nightly-sync "]).unwrap().unwrap(),
            "nightly-sync"
        );
        assert_eq!(taken(&["a.b_c-D9"]).unwrap().unwrap(), "a.b_c-D9");
        assert!(taken(&[&"x".repeat(64)]).is_ok());
        assert!(taken(&[&"x".repeat(65)]).is_err());
        assert!(taken(&["two words"]).is_err());
        assert!(taken(&["   "]).is_err());
        assert!(taken(&["a/b"]).is_err());
        assert!(taken(&["a", "b"]).is_err());
    }
}
