//! Credentials: builds each account and spawns the control-plane task that writes its token
//! cell (`crate::token_cell`): a static-token watcher or an OAuth refresher.

pub(crate) mod fleet_source;
pub(crate) mod oauth;
pub(crate) mod persist;
pub(crate) mod static_token;
pub(crate) mod token_endpoint;

use std::sync::Arc;

use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::account::{Account, Credential};
use crate::config::SecretSource;
use crate::metrics::Metrics;
use crate::settings::{AccountSettings, CredentialSettings, OAuthSettings, Settings};
use crate::token_cell::RefreshControl;

/// A credential that could not be loaded at startup, with the config key it came from.
#[derive(Debug, thiserror::Error)]
#[error("{key} ({source_desc}): {reason}")]
pub struct CredentialError {
    pub(crate) key: String,
    pub(crate) source_desc: String,
    pub(crate) reason: String,
}

fn credential_error(key: String, source: &SecretSource, reason: impl ToString) -> CredentialError {
    CredentialError {
        key,
        source_desc: source.describe(),
        reason: reason.to_string(),
    }
}

/// An account, and the task that keeps its token fresh (none for a static token that is not
/// read from a file).
type Activated = Result<(Arc<Account>, Option<JoinHandle<()>>), CredentialError>;

/// What every account is wired to, whatever its credential.
struct Wiring<'a> {
    metrics: &'a Metrics,
    reload: &'a Arc<Notify>,
    stop: &'a watch::Receiver<bool>,
    // Fleet mode: where shared budgets and tokens live (a static account's token never goes
    // to Redis; only its budget is shared).
    fleet: Option<&'a Arc<crate::fleet::Fleet>>,
}

impl Wiring<'_> {
    /// The account, its metrics and budget, expecting the portal its settings name.
    fn account(&self, cfg: &AccountSettings, credential: Credential) -> Arc<Account> {
        let account = Arc::new(Account::new(
            &cfg.name,
            credential,
            self.metrics.for_account(&cfg.name),
            &cfg.rate_limit,
            self.fleet,
        ));
        account.portal.expect(cfg.hub_id);
        account
    }
}

/// Builds account `index` and starts the control-plane task that keeps its token fresh.
pub(crate) fn activate(
    settings: &Settings,
    index: usize,
    metrics: &Metrics,
    reload: &Arc<Notify>,
    stop: &watch::Receiver<bool>,
    fleet: Option<&Arc<crate::fleet::Fleet>>,
) -> Activated {
    let cfg = &settings.accounts[index];
    let key = format!("accounts[{index}]");
    let wiring = Wiring {
        metrics,
        reload,
        stop,
        fleet,
    };
    match &cfg.credential {
        CredentialSettings::OAuth(oauth) => activate_oauth(settings, cfg, oauth, &key, &wiring),
        CredentialSettings::Static(source) => activate_static(cfg, source, &key, &wiring),
    }
}

fn activate_static(
    cfg: &AccountSettings,
    source: &SecretSource,
    key: &str,
    wiring: &Wiring,
) -> Activated {
    let account = wiring.account(cfg, Credential::Static);
    let current = static_token::load_initial(&account, source)
        .map_err(|e| credential_error(format!("{key}.token"), source, e))?;
    account.metrics.token_never_expires();
    let watcher = static_token::spawn_watcher(
        account.clone(),
        source.clone(),
        current,
        wiring.reload.clone(),
        wiring.stop.clone(),
    );
    Ok((account, watcher))
}

fn activate_oauth(
    settings: &Settings,
    cfg: &AccountSettings,
    oauth: &OAuthSettings,
    key: &str,
    wiring: &Wiring,
) -> Activated {
    let load = |source: &SecretSource, field: &str| {
        source
            .load_within(false, crate::config::secret::ONE_SHOT_READ_LIMIT)
            .map_err(|e| credential_error(format!("{key}.oauth.{field}"), source, e))
    };
    let client_secret = load(&oauth.client_secret, "client_secret")?;
    let refresh_token = load(&oauth.refresh_token, "refresh_token")?;
    let url = oauth.token_url.clone();
    if let Some(warning) = token_endpoint::v1_warning(&url) {
        tracing::warn!(account = %cfg.name, "{key}.oauth.token_url: {warning}");
    }
    let endpoint = token_endpoint::TokenEndpoint::new(
        url.clone(),
        oauth.token_timeout,
        settings.upstream.ca_file.as_deref(),
        settings.upstream.proxy_url.as_deref(),
    )
    .map_err(|e| CredentialError {
        key: format!("{key}.oauth.token_url"),
        source_desc: url,
        reason: e,
    })?;
    let control = Arc::new(RefreshControl::new(oauth.refresh_min_interval));
    let account = wiring.account(cfg, Credential::OAuth(control.clone()));
    let fleet = wiring.fleet.map(|fleet| {
        let tokens = fleet.tokens();
        // Subscribed before the first refresh, so no notice falls between read and listen.
        fleet_source::FleetSource::new(
            tokens.account(&cfg.name, &client_secret),
            tokens.subscribe(),
            crate::fleet::lease_ttl(oauth.token_timeout),
        )
    });
    let refresher = oauth::Refresher {
        account: account.clone(),
        control,
        endpoint,
        client_id: oauth.client_id.clone(),
        client_secret,
        client_secret_source: oauth.client_secret.clone(),
        refresh_token,
        refresh_source: oauth.refresh_token.clone(),
        margin: oauth.refresh_margin,
        reauthorize_command: format!(
            "hubspot-auth-proxy oauth authorize --config {} --account {}",
            settings
                .path
                .as_deref()
                .map_or("<this proxy's config file>".into(), |p| p
                    .display()
                    .to_string()),
            cfg.name
        ),
        fleet,
    };
    Ok((
        account,
        Some(oauth::spawn(
            refresher,
            wiring.reload.clone(),
            wiring.stop.clone(),
        )),
    ))
}
