//! Account selection: legacy key mapping, then `X-Auth-Proxy-Account`, then the default;
//! and what a `?hapikey=` request becomes (translated, rejected, passed through).

use std::collections::HashMap;
use std::sync::Arc;

use globset::GlobSet;
use http::request::Parts;
use http::{HeaderName, Uri};
use sha2::{Digest, Sha256};

use super::hapikey;
use crate::account::{Account, Accounts};
use crate::config::HapikeyMode;
use crate::error::ProxyError;
use crate::metrics::HapikeyAction;
use crate::settings::LegacySettings;

pub(crate) static ACCOUNT_HEADER: HeaderName = HeaderName::from_static("x-auth-proxy-account");

/// Whose credential a request goes to HubSpot with: its account's, which the proxy puts on as
/// the bearer, or the client's own. (What kind the account's credential is: `account::Credential`.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CredentialSource {
    Account,
    /// Developer API keys on app-settings paths, and `forward` mode: the client's own key.
    ClientOwn,
}

pub struct Routed<'a> {
    pub(crate) account: &'a Arc<Account>,
    pub(crate) credential: CredentialSource,
    /// The `[[clients]]` name a mapped legacy key stands for, if its entry names one.
    pub(crate) legacy_client: Option<&'a str>,
    /// A mapped legacy key's caller name for the migration report (its label or hash prefix).
    pub(crate) legacy_label: Option<&'a str>,
}

/// A refused request, with the account its metrics count under.
pub struct Refused<'a> {
    pub(crate) account: &'a Arc<Account>,
    pub(crate) error: ProxyError,
}

pub struct Router {
    accounts: Arc<Accounts>,
    mode: HapikeyMode,
    /// SHA-256 of a legacy key → account index, client name and report label. Only hashes are held.
    keys: HashMap<[u8; 32], (usize, Option<String>, String)>,
    developer_paths: GlobSet,
}

impl Router {
    /// `accounts` in the settings' order: legacy keys name accounts by index.
    pub fn new(accounts: Arc<Accounts>, legacy: &LegacySettings) -> Router {
        let keys = legacy
            .keys
            .iter()
            .map(|k| (k.hash, (k.account, k.client.clone(), k.label.clone())))
            .collect();
        Router {
            accounts,
            mode: legacy.hapikey,
            keys,
            developer_paths: legacy.developer_paths.clone(),
        }
    }

    pub(crate) fn default_account(&self) -> &Arc<Account> {
        self.accounts.default_account()
    }

    /// Picks the account and credential, rewriting the target when a hapikey is stripped.
    /// `hapikey`: whether the query holds a key ([`hapikey::present`], looked for once per request).
    pub fn route(&self, parts: &mut Parts, hapikey: bool) -> Result<Routed<'_>, Refused<'_>> {
        let named = parts.headers.remove(&ACCOUNT_HEADER);
        let chosen = match named {
            None => self.accounts.default_account(),
            Some(name) => match name.to_str().ok().and_then(|n| self.accounts.by_name(n)) {
                Some(account) => account,
                None => return Err(self.refuse(self.default_account(), ProxyError::UnknownAccount)),
            },
        };
        if hapikey {
            return self.route_hapikey(parts, chosen);
        }
        Ok(Routed {
            account: chosen,
            credential: CredentialSource::Account,
            legacy_client: None,
            legacy_label: None,
        })
    }

    fn route_hapikey<'a>(
        &'a self,
        parts: &mut Parts,
        chosen: &'a Arc<Account>,
    ) -> Result<Routed<'a>, Refused<'a>> {
        let passthrough = |account: &'a Arc<Account>, action| {
            account.metrics.hapikey(action);
            Ok(Routed {
                account,
                credential: CredentialSource::ClientOwn,
                legacy_client: None,
                legacy_label: None,
            })
        };
        if self.developer_paths.is_match(parts.uri.path()) {
            return passthrough(chosen, HapikeyAction::DeveloperPassthrough);
        }
        match self.mode {
            HapikeyMode::Forward => passthrough(chosen, HapikeyAction::Forwarded),
            HapikeyMode::Reject => {
                chosen.metrics.hapikey(HapikeyAction::Rejected);
                Err(self.refuse(chosen, ProxyError::ApiKeyRejected))
            }
            HapikeyMode::Translate => self.translate(parts, chosen),
        }
    }

    fn translate<'a>(
        &'a self,
        parts: &mut Parts,
        chosen: &'a Arc<Account>,
    ) -> Result<Routed<'a>, Refused<'a>> {
        let query = parts.uri.query().unwrap_or_default();
        let (account, legacy_client, legacy_label) = if self.keys.is_empty() {
            (chosen, None, None)
        } else if !hapikey::first_is_exact(query) {
            // `HAPIKEY=` never worked at HubSpot; with keys mapped, it is an unknown key.
            chosen.metrics.hapikey(HapikeyAction::UnknownKey);
            return Err(self.refuse(chosen, ProxyError::UnknownApiKey));
        } else {
            let value = hapikey::first_value(query).unwrap_or_default();
            let hash: [u8; 32] = Sha256::digest(&value).into();
            match self.keys.get(&hash) {
                Some((index, client, label)) => (
                    self.accounts.get(*index),
                    client.as_deref(),
                    Some(label.as_str()),
                ),
                None => {
                    chosen.metrics.hapikey(HapikeyAction::UnknownKey);
                    return Err(self.refuse(chosen, ProxyError::UnknownApiKey));
                }
            }
        };
        parts.uri = without_hapikey(&parts.uri);
        account.metrics.hapikey(HapikeyAction::Translated);
        Ok(Routed {
            account,
            credential: CredentialSource::Account,
            legacy_client,
            legacy_label,
        })
    }

    fn refuse<'a>(&self, account: &'a Arc<Account>, error: ProxyError) -> Refused<'a> {
        Refused { account, error }
    }
}

/// The origin-form target with the hapikey pairs gone; an emptied query loses its `?`.
/// Called only for a query known to hold a key.
fn without_hapikey(uri: &Uri) -> Uri {
    let query = hapikey::stripped(uri.query().unwrap_or_default());
    let target = if query.is_empty() {
        uri.path().to_string()
    } else {
        format!("{}?{query}", uri.path())
    };
    // Removing whole pairs from a valid target leaves a valid target.
    target.parse().expect("a valid target stays valid")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::Credential;
    use crate::metrics::Metrics;
    use crate::settings::key_sha256;
    use crate::settings::{RateLimitSettings, Settings};

    const KEY: &str = "legacy-key-one";

    /// Accounts `main` (the default) and `sales`; `KEY` maps to `sales` for client `etl`.
    fn router(mode: HapikeyMode) -> Router {
        let metrics = Metrics::new();
        let account = |name: &str| {
            Arc::new(Account::new(
                name,
                Credential::Static,
                metrics.for_account(name),
                &RateLimitSettings::default(),
                None,
            ))
        };
        let accounts = Arc::new(Accounts::new(vec![account("main"), account("sales")], 0));
        let mode = match mode {
            HapikeyMode::Translate => "translate",
            HapikeyMode::Reject => "reject",
            HapikeyMode::Forward => "forward",
        };
        let settings = Settings::for_tests(&format!(
            r#"
[[accounts]]
name = "sales"
token = {{ env = "T" }}

[legacy]
hapikey = "{mode}"

[[clients]]
name = "etl"
key_sha256 = "{}"

[[legacy.keys]]
sha256 = "{}"
account = "sales"
client = "etl"
"#,
            key_sha256("etl-own-client-key"),
            key_sha256(KEY)
        ));
        Router::new(accounts, &settings.legacy)
    }

    fn parts(target: &str, account: Option<&str>) -> Parts {
        let mut builder = http::Request::builder().uri(target);
        if let Some(name) = account {
            builder = builder.header(&ACCOUNT_HEADER, name);
        }
        builder.body(()).unwrap().into_parts().0
    }

    /// The routed account's name, its credential and the target left for HubSpot.
    fn route(
        router: &Router,
        target: &str,
        account: Option<&str>,
    ) -> (String, CredentialSource, String) {
        let mut parts = parts(target, account);
        let hapikey = parts.uri.query().is_some_and(hapikey::present);
        let routed = router.route(&mut parts, hapikey).unwrap_or_else(|r| {
            panic!("{target} refused: {}", r.error.category());
        });
        assert!(
            !parts.headers.contains_key(&ACCOUNT_HEADER),
            "the account header never reaches HubSpot"
        );
        (
            routed.account.name.to_string(),
            routed.credential,
            parts.uri.to_string(),
        )
    }

    fn refused(router: &Router, target: &str, account: Option<&str>) -> (String, &'static str) {
        let mut parts = parts(target, account);
        let hapikey = parts.uri.query().is_some_and(hapikey::present);
        match router.route(&mut parts, hapikey) {
            Ok(_) => panic!("{target} was routed"),
            Err(r) => (r.account.name.to_string(), r.error.category()),
        }
    }

    #[test]
    fn the_account_header_picks_the_account_and_the_default_is_the_rest() {
        let r = router(HapikeyMode::Translate);
        let plain = "/crm/v3/objects/contacts?limit=2";
        assert_eq!(
            route(&r, plain, None),
            ("main".into(), CredentialSource::Account, plain.into())
        );
        assert_eq!(route(&r, plain, Some("sales")).0, "sales");
        // An unknown name is refused, never silently sent with the default account's token.
        assert_eq!(
            refused(&r, plain, Some("nobody")),
            ("main".into(), "PROXY_UNKNOWN_ACCOUNT")
        );
    }

    #[test]
    fn a_mapped_legacy_key_routes_to_its_account_and_is_stripped() {
        let r = router(HapikeyMode::Translate);
        let mut p = parts(
            &format!("/crm/v3/objects/contacts?a=1&hapikey={KEY}&b=2"),
            None,
        );
        let routed = r.route(&mut p, true).ok().unwrap();
        assert_eq!(&*routed.account.name, "sales", "the key's account wins");
        assert_eq!(routed.credential, CredentialSource::Account);
        assert_eq!(routed.legacy_client, Some("etl"));
        assert_eq!(routed.legacy_label, Some(&key_sha256(KEY)[..8]));
        assert_eq!(p.uri.to_string(), "/crm/v3/objects/contacts?a=1&b=2");
        // A key that was the whole query leaves no `?` behind.
        let (_, _, target) = route(&r, &format!("/crm/v3/objects/contacts?hapikey={KEY}"), None);
        assert_eq!(target, "/crm/v3/objects/contacts");
        // Unknown keys, and the spelling HubSpot never accepted, are refused on the chosen account.
        assert_eq!(
            refused(&r, "/crm/v3/objects/contacts?hapikey=other", Some("main")),
            ("main".into(), "PROXY_UNKNOWN_API_KEY")
        );
        assert_eq!(
            refused(&r, &format!("/crm/v3/objects/contacts?HAPIKEY={KEY}"), None).1,
            "PROXY_UNKNOWN_API_KEY"
        );
    }

    #[test]
    fn without_mapped_keys_translate_strips_the_key_for_the_chosen_account() {
        let metrics = Metrics::new();
        let accounts = Arc::new(Accounts::new(
            vec![Arc::new(Account::new(
                "main",
                Credential::Static,
                metrics.for_account("main"),
                &RateLimitSettings::default(),
                None,
            ))],
            0,
        ));
        let r = Router::new(accounts, &Settings::for_tests("").legacy);
        assert_eq!(
            route(&r, "/crm/v3/objects/contacts?hapikey=anything&x=1", None),
            (
                "main".into(),
                CredentialSource::Account,
                "/crm/v3/objects/contacts?x=1".into()
            )
        );
    }

    #[test]
    fn reject_and_forward_modes_and_developer_paths() {
        let target = format!("/crm/v3/objects/contacts?hapikey={KEY}");
        let r = router(HapikeyMode::Reject);
        assert_eq!(refused(&r, &target, None).1, "PROXY_API_KEY_REJECTED");
        let r = router(HapikeyMode::Forward);
        assert_eq!(
            route(&r, &target, None),
            ("main".into(), CredentialSource::ClientOwn, target.clone()),
            "forwarded untouched with the client's own key"
        );
        // Developer API keys on app-settings paths pass untouched, in every mode.
        let developer = "/webhooks/v3/123/settings?hapikey=dev-key";
        for mode in [
            HapikeyMode::Translate,
            HapikeyMode::Reject,
            HapikeyMode::Forward,
        ] {
            assert_eq!(
                route(&router(mode), developer, None),
                ("main".into(), CredentialSource::ClientOwn, developer.into()),
                "{mode:?}"
            );
        }
    }
}
