//! The path gate, the first data-plane stage after the request limits: refuses paths an
//! upstream could normalise into another path (dot segments, encoded slashes, backslashes),
//! and gives back the one path that client rules are matched against and that is forwarded.
//!
//! HubSpot API paths never hold a `.` or `..` segment or an encoded `/` or `\`. Were they let
//! through, a client allowed only `GET /crm/v3/objects/**` could send
//! `/crm/v3/objects/../../settings/v3/users`: the rule matches the raw text, and any normaliser
//! upstream serves a path the rule never allowed. Percent-encoded unreserved characters
//! (`%41` for `A`) are decoded, as RFC 3986 §6.2.2.2 makes them equivalent, so a rule sees
//! what HubSpot sees; the result is a fixed point of RFC 3986 normalisation.

use std::borrow::Cow;

use http::Uri;

use crate::error::ProxyError;

const DOT_SEGMENT: &str = "The request path holds a '.' or '..' segment (possibly percent-encoded, or with ';' parameters); HubSpot API paths never do.";
const ENCODED_SEPARATOR: &str =
    "The request path holds an encoded '/' or '\\', or a raw '\\'; HubSpot API paths never do.";
const BAD_ESCAPE: &str = "The request path holds a '%' that does not start a percent-escape.";

/// Checks `uri`'s path, and rewrites it in place when percent-escapes of unreserved
/// characters were decoded. Allocation-free when the path holds no `%`.
pub(crate) fn apply(uri: &mut Uri) -> Result<(), ProxyError> {
    let Cow::Owned(path) = canonical_path(uri.path())? else {
        return Ok(());
    };
    let target = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    let mut parts = std::mem::take(uri).into_parts();
    // Decoding unreserved characters cannot make a valid target invalid.
    parts.path_and_query = Some(
        target
            .parse()
            .map_err(|_| ProxyError::BadRequest(BAD_ESCAPE))?,
    );
    *uri = Uri::from_parts(parts).map_err(|_| ProxyError::BadRequest(BAD_ESCAPE))?;
    Ok(())
}

/// The path with unreserved escapes decoded, or the reason it is refused.
pub(crate) fn canonical_path(path: &str) -> Result<Cow<'_, str>, ProxyError> {
    if path.contains('\\') {
        return Err(ProxyError::BadRequest(ENCODED_SEPARATOR));
    }
    let path = if path.contains('%') {
        Cow::Owned(decode_unreserved(path)?)
    } else {
        Cow::Borrowed(path)
    };
    if path.split('/').any(is_dot_segment) {
        return Err(ProxyError::BadRequest(DOT_SEGMENT));
    }
    Ok(path)
}

/// `.` or `..`, alone or followed by `;` path parameters (raw or as `%3B`): servlet
/// containers such as Tomcat and Jetty drop the parameters before resolving dot segments, so
/// `..;x` climbs a level there.
fn is_dot_segment(segment: &str) -> bool {
    let Some(rest) = segment
        .strip_prefix("..")
        .or_else(|| segment.strip_prefix('.'))
    else {
        return false;
    };
    rest.is_empty()
        || rest.starts_with(';')
        || rest.get(..3).is_some_and(|e| e.eq_ignore_ascii_case("%3b"))
}

/// Decodes `%XY` where it stands for an unreserved character; refuses encoded separators and
/// malformed escapes. Other escapes are kept as sent, so no new escape can appear.
fn decode_unreserved(path: &str) -> Result<String, ProxyError> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            let next = bytes[i..]
                .iter()
                .position(|&b| b == b'%')
                .map_or(bytes.len(), |n| i + n);
            out.push_str(&path[i..next]);
            i = next;
            continue;
        }
        let byte = bytes
            .get(i + 1..i + 3)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            .ok_or(ProxyError::BadRequest(BAD_ESCAPE))?;
        match byte {
            b'/' | b'\\' => return Err(ProxyError::BadRequest(ENCODED_SEPARATOR)),
            b if is_unreserved(b) => out.push(char::from(b)),
            _ => out.push_str(&path[i..i + 3]),
        }
        i += 3;
    }
    Ok(out)
}

/// RFC 3986 §2.3: ALPHA / DIGIT / "-" / "." / "_" / "~".
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn refused(path: &str) -> bool {
        canonical_path(path).is_err()
    }

    #[test]
    fn dot_segments_in_any_spelling_are_refused() {
        for path in [
            "/crm/v3/objects/../../../settings/v3/users",
            "/crm/v3/objects/%2e%2e/%2e%2e/settings",
            "/crm/v3/objects/%2E%2E/settings",
            "/crm/v3/objects/.%2e/settings",
            "/crm/v3/objects/%2e./settings",
            "/crm/v3/objects/./contacts",
            "/crm/v3/objects/%2e/contacts",
            "/crm/v3/objects/..",
            "/..",
            "/.",
            "/crm/v3/objects/..;/settings",
            "/crm/v3/objects/.;x=1/contacts",
            "/crm/v3/objects/%2e%2e;jsessionid=1/settings",
            "/crm/v3/objects/..%3B/settings",
            "/crm/v3/objects/..%3b/settings",
        ] {
            assert!(refused(path), "{path}");
        }
        for path in ["/crm/v3/objects/.../x", "/crm/v3/objects/.x/y", "/a/..x;/b"] {
            assert!(!refused(path), "{path}");
        }
    }

    #[test]
    fn encoded_separators_backslashes_and_bad_escapes_are_refused() {
        for path in [
            "/crm/v3/objects/..%2f..%2fsettings",
            "/crm/v3/objects/a%2Fb",
            "/crm/v3/objects/a%5cb",
            "/crm/v3/objects/a%5Cb",
            "/crm/v3/objects\\..\\settings",
            "/crm/v3/objects/%zz",
            "/crm/v3/objects/%2",
            "/crm/v3/objects/%",
        ] {
            assert!(refused(path), "{path}");
        }
    }

    #[test]
    fn ordinary_paths_pass_unchanged_and_unreserved_escapes_are_decoded() {
        for path in [
            "/crm/v3/objects/contacts",
            "/crm/v3/objects/contacts/",
            "/crm/v3/objects/contacts/a.b@example.com",
            "/files/v3/files/report...pdf",
            "/crm/v3/objects/.hidden",
            "/",
        ] {
            assert!(
                matches!(canonical_path(path), Ok(Cow::Borrowed(p)) if p == path),
                "{path}"
            );
        }
        assert_eq!(
            canonical_path("/crm/v3/%6Fbjects/a%40b%2Ec").unwrap(),
            "/crm/v3/objects/a%40b.c"
        );
        // `%25` is a literal '%', which is kept encoded: no escape is ever created.
        assert_eq!(canonical_path("/a/%252e%252e").unwrap(), "/a/%252e%252e");
    }

    #[test]
    fn apply_rewrites_the_path_and_keeps_the_query() {
        let mut uri: Uri = "/crm/v3/%6Fbjects/contacts?a=%2e&b".parse().unwrap();
        apply(&mut uri).unwrap();
        assert_eq!(uri, "/crm/v3/objects/contacts?a=%2e&b");
        let mut plain: Uri = "/crm/v3/objects/contacts?x=1".parse().unwrap();
        apply(&mut plain).unwrap();
        assert_eq!(plain, "/crm/v3/objects/contacts?x=1");
        let mut bad: Uri = "/crm/v3/objects/%2e%2e/settings?x=1".parse().unwrap();
        assert!(apply(&mut bad).is_err());
    }

    /// What an upstream normaliser does: decode unreserved escapes (RFC 3986 §6.2.2.2), then
    /// remove dot segments (§5.2.4), here also reading encoded and raw `\` and `/` as `/`.
    fn normalise(path: &str) -> String {
        let mut decoded = String::new();
        let mut rest = path;
        while let Some(at) = rest.find('%') {
            decoded.push_str(&rest[..at]);
            let escape = rest.get(at + 1..at + 3);
            match escape.and_then(|hex| u8::from_str_radix(hex, 16).ok()) {
                Some(b) if is_unreserved(b) || b == b'/' || b == b'\\' => {
                    decoded.push(char::from(b));
                    rest = &rest[at + 3..];
                }
                _ => {
                    decoded.push('%');
                    rest = &rest[at + 1..];
                }
            }
        }
        decoded.push_str(rest);
        remove_dot_segments(&decoded.replace('\\', "/"))
    }

    /// RFC 3986 §5.2.4, step by step.
    fn remove_dot_segments(path: &str) -> String {
        let mut input = path.to_string();
        let mut output = String::new();
        while !input.is_empty() {
            if let Some(rest) = input.strip_prefix("../") {
                input = rest.to_string();
            } else if let Some(rest) = input.strip_prefix("./") {
                input = rest.to_string();
            } else if input.starts_with("/./") {
                input.replace_range(..3, "/");
            } else if input == "/." {
                input = "/".into();
            } else if input.starts_with("/../") || input == "/.." {
                let len = if input == "/.." { 3 } else { 4 };
                input.replace_range(..len, "/");
                let cut = output.rfind('/').unwrap_or(0);
                output.truncate(cut);
            } else if input == "." || input == ".." {
                input.clear();
            } else {
                let start = usize::from(input.starts_with('/'));
                let end = input[start..].find('/').map_or(input.len(), |e| e + start);
                output.push_str(&input[..end]);
                input.replace_range(..end, "");
            }
        }
        output
    }

    #[test]
    fn remove_dot_segments_follows_the_rfc_examples() {
        assert_eq!(remove_dot_segments("/a/b/c/./../../g"), "/a/g");
        assert_eq!(remove_dot_segments("mid/content=5/../6"), "mid/6");
        assert_eq!(remove_dot_segments("/a/.."), "/");
    }

    fn rules() -> Vec<globset::GlobMatcher> {
        [
            "/crm/v3/objects/**",
            "/crm/v3/objects/*/search",
            "/crm/v3/[!s]*/**",
            "/crm/*/objects/contacts",
        ]
        .iter()
        .map(|g| {
            crate::config::developer_path_glob(g)
                .unwrap()
                .compile_matcher()
        })
        .collect()
    }

    /// Paths built from pieces an attacker would use.
    fn paths() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("/".to_string()),
            Just(".".to_string()),
            Just("..".to_string()),
            Just("%2e".to_string()),
            Just("%2E".to_string()),
            Just("%2f".to_string()),
            Just("%5C".to_string()),
            Just("\\".to_string()),
            Just("%73".to_string()),
            Just("%25".to_string()),
            Just("crm".to_string()),
            Just("v3".to_string()),
            Just("objects".to_string()),
            Just("settings".to_string()),
            Just("search".to_string()),
            "[a-z0-9._~-]{1,4}",
        ];
        let prefix = prop_oneof![
            Just("/"),
            Just("/crm/v3/"),
            Just("/crm/v3/objects/"),
            Just("/crm/v3/objects/contacts/"),
        ];
        (prefix, proptest::collection::vec(piece, 0..10))
            .prop_map(|(prefix, pieces)| format!("{prefix}{}", pieces.concat()))
    }

    proptest! {
        /// No path that passes the gate matches a rule after normalisation unless the path
        /// the proxy matched (and forwards) matched it too, and the other way round.
        #[test]
        fn the_gate_leaves_nothing_for_a_normaliser_to_change(path in paths()) {
            if let Ok(forwarded) = canonical_path(&path) {
                let normalised = normalise(&path);
                prop_assert_eq!(&normalise(&forwarded), &normalised);
                for rule in rules() {
                    prop_assert_eq!(
                        rule.is_match(&*forwarded),
                        rule.is_match(&normalised),
                        "{} forwarded as {} normalises to {}", path, forwarded, normalised
                    );
                }
            }
        }

        #[test]
        fn arbitrary_paths_never_panic(path in "/\\PC{0,40}") {
            let _ = canonical_path(&path);
        }
    }
}
