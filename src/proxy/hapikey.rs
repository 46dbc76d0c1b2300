//! Legacy `?hapikey=` handling: find, strip and redact the pairs, leaving every other query byte as sent.
//!
//! The key name is matched without regard to case (`HAPIKEY`, `HapiKey`, `%48APIKEY`). HubSpot
//! reads only `hapikey`, but a case variant forwarded would still put a key in HubSpot's logs
//! and in ours; so every spelling is stripped, translated and redacted like `hapikey`. Only a
//! `[legacy] keys` mapping asks for the exact name (see `first_is_exact`).

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

/// Pairs are separated by `&` only: `;` and everything else stays part of a value, as sent.
fn pairs(query: &str) -> impl Iterator<Item = &str> {
    query.split('&')
}

fn key_of(pair: &str) -> &str {
    pair.split_once('=').map_or(pair, |(k, _)| k)
}

/// True when the pair's key is `hapikey` in any case, also with percent-escapes (`%68apikey`).
fn is_hapikey_pair(pair: &str) -> bool {
    let key = key_of(pair);
    key.eq_ignore_ascii_case("hapikey")
        || (key.contains('%')
            && percent_decode_str(key)
                .map(|b| b.to_ascii_lowercase())
                .eq(b"hapikey".iter().copied()))
}

/// Whether the query holds any hapikey pair. Allocation-free: this runs on every request.
pub fn present(query: &str) -> bool {
    // Cheap pre-check: every spelling has "apikey" (in any case) or a percent-escape in it.
    let hint = query.contains('%')
        || query
            .as_bytes()
            .windows(6)
            .any(|w| w.eq_ignore_ascii_case(b"apikey"));
    hint && pairs(query).any(is_hapikey_pair)
}

/// Whether the first hapikey pair spells its name exactly `hapikey` (after percent-decoding),
/// as HubSpot required: a mapped legacy key is only honoured under the name it was used with.
pub(crate) fn first_is_exact(query: &str) -> bool {
    pairs(query)
        .find(|p| is_hapikey_pair(p))
        .is_some_and(|p| percent_decode_str(key_of(p)).eq(b"hapikey".iter().copied()))
}

/// The first hapikey value, percent-decoded (the key as the script's author wrote it).
pub(crate) fn first_value(query: &str) -> Option<Vec<u8>> {
    pairs(query)
        .find(|p| is_hapikey_pair(p))
        .map(|p| p.split_once('=').map_or("", |(_, v)| v))
        .map(|v| percent_decode_str(v).collect())
}

/// The query without any hapikey pair (and their `&` separators); borrowed when nothing changes.
#[cfg(test)]
fn strip(query: &str) -> Cow<'_, str> {
    if !present(query) {
        return Cow::Borrowed(query);
    }
    Cow::Owned(stripped(query))
}

/// `strip` for a query [`present`] already found a key in: the request path looks once.
pub fn stripped(query: &str) -> String {
    let kept: Vec<&str> = pairs(query).filter(|p| !is_hapikey_pair(p)).collect();
    kept.join("&")
}

/// The query with hapikey values replaced by `REDACTED`, for logs.
#[cfg(test)]
fn redact(query: &str) -> Cow<'_, str> {
    if !present(query) {
        return Cow::Borrowed(query);
    }
    Cow::Owned(redacted(query))
}

/// `redact` for a query [`present`] already found a key in.
pub(crate) fn redacted(query: &str) -> String {
    let pairs: Vec<Cow<str>> = pairs(query)
        .map(|p| match (is_hapikey_pair(p), p.split_once('=')) {
            (true, Some((k, _))) => Cow::Owned(format!("{k}=REDACTED")),
            _ => Cow::Borrowed(p),
        })
        .collect();
    pairs.join("&")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn strips_first_middle_last_repeated_and_encoded() {
        let cases = [
            ("hapikey=K&count=1", "count=1"),
            ("count=1&hapikey=K", "count=1"),
            ("a=1&hapikey=K&b=2", "a=1&b=2"),
            ("hapikey=K", ""),
            ("hapikey=K&hapikey=L&x=%20&hapikey", "x=%20"),
            ("%68apikey=K&a=b+c", "a=b+c"),
            // Case variants are keys too (a deliberate change: they used to be forwarded).
            ("HAPIKEY=K&xhapikey=1&hapikey2=3", "xhapikey=1&hapikey2=3"),
            ("a=1&HapiKey=K&%48APIKEY=L", "a=1"),
            ("a=1;hapikey=K&b", "a=1;hapikey=K&b"),
            ("a=&&hapikey=K&", "a=&&"),
        ];
        for (input, expected) in cases {
            assert_eq!(strip(input), expected, "input {input:?}");
        }
    }

    #[test]
    fn absent_means_borrowed() {
        assert!(matches!(strip("count=1&apikeyish=2"), Cow::Borrowed(_)));
        assert!(matches!(redact("a=%20"), Cow::Borrowed(_)));
    }

    #[test]
    fn value_and_redaction() {
        assert_eq!(
            first_value("a=1&hapikey=ab%2Dcd&hapikey=zz").unwrap(),
            b"ab-cd"
        );
        assert_eq!(first_value("hapikey").unwrap(), b"");
        assert_eq!(redact("hapikey=secret&a=1"), "hapikey=REDACTED&a=1");
        assert_eq!(redact("HAPIKEY=secret&a=1"), "HAPIKEY=REDACTED&a=1");
        assert_eq!(redact("h%41pikey=secret"), "h%41pikey=REDACTED");
        assert!(first_is_exact("a=1&%68apikey=K&HAPIKEY=L"));
        assert!(!first_is_exact("HAPIKEY=K&hapikey=L"));
    }

    /// A query as a list of pairs, some of them hapikey pairs in various spellings.
    fn query_parts() -> impl Strategy<Value = Vec<(bool, String)>> {
        let other = "[a-zA-Z0-9%+;=._~-]{0,12}"
            .prop_filter("not a hapikey pair", |s| !is_hapikey_pair(s))
            .prop_map(|s| (false, s));
        let hapikey = prop_oneof![
            "hapikey=[a-zA-Z0-9%-]{0,12}",
            "%68apikey=[a-f0-9-]{0,8}",
            "h%61pikey=[a-f0-9-]{0,8}",
            "HAPIKEY=[a-zA-Z0-9-]{0,8}",
            "HaPiKeY=[a-f0-9-]{0,8}",
            "%48%41pikey=[a-f0-9-]{0,8}",
            Just("hapikey".to_string()),
        ]
        .prop_map(|s| (true, s));
        proptest::collection::vec(prop_oneof![3 => other, 1 => hapikey], 0..10)
    }

    proptest! {
        #[test]
        fn strip_removes_exactly_the_hapikey_pairs(parts in query_parts()) {
            let query = parts.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>().join("&");
            let expected = parts.iter().filter(|(h, _)| !h).map(|(_, s)| s.as_str()).collect::<Vec<_>>().join("&");
            let has_key = parts.iter().any(|(h, _)| *h);
            prop_assert_eq!(present(&query), has_key);
            let stripped = strip(&query);
            prop_assert_eq!(&*stripped, if has_key { expected.as_str() } else { query.as_str() });
            prop_assert!(!present(&stripped));
            // Every key pair's value is redacted, whatever its spelling.
            for pair in redact(&query).split('&').filter(|p| is_hapikey_pair(p)) {
                prop_assert!(pair.split_once('=').is_none_or(|(_, v)| v == "REDACTED"), "{}", pair);
            }
        }

        #[test]
        fn arbitrary_queries_never_panic_and_stay_unchanged_without_a_key(query in "\\PC{0,40}") {
            let stripped = strip(&query);
            if !present(&query) {
                prop_assert_eq!(&*stripped, query.as_str());
            }
        }
    }
}
