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
