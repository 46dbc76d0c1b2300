//! The right portal: which HubSpot portal (hub id) and scopes each account's token belongs to,
//! checked against the account's configured `hub_id`. A mismatch takes the account out of
//! service, so a staging token in production cannot write to the wrong CRM. This file holds the
//! checks (HubSpot's introspection call, the static-token check task); what they learn is kept
//! in each account's `portal_state::Portal`.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use crate::account::Account;
use crate::config::Secret;
use crate::portal_state::TokenKind;

/// HubSpot's introspection endpoint for private app and service-key tokens.
pub(crate) const ACCESS_TOKEN_INFO_PATH: &str = "/oauth/v2/private-apps/get/access-token-info";
/// One introspection call may take this long.
pub(crate) const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// HubSpot's answer to access-token-info.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TokenInfo {
    pub(crate) hub_id: u64,
    #[serde(default)]
    pub(crate) scopes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum CheckError {
    #[error("HubSpot rejected the token ({status})")]
    Rejected { status: u16 },
    #[error("access-token-info answered {status}")]
    Upstream { status: u16 },
    #[error("cannot reach access-token-info: {0}")]
    Unreachable(String),
    #[error("access-token-info answered something unreadable: {0}")]
    BadBody(String),
}

/// `POST {base}/oauth/v2/private-apps/get/access-token-info` with `{"tokenKey": token}`.
pub(crate) async fn access_token_info(
    client: &reqwest::Client,
    base_url: &str,
    token: &Secret<String>,
) -> Result<TokenInfo, CheckError> {
    let url = format!("{}{ACCESS_TOKEN_INFO_PATH}", base_url.trim_end_matches('/'));
    let response = client
        .post(&url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(json!({ "tokenKey": token.expose() }).to_string())
        .send()
        .await
        // Without the URL: reqwest errors can quote it, and nothing here may carry the token.
        .map_err(|e| CheckError::Unreachable(e.without_url().to_string()))?;
    let status = response.status().as_u16();
    match status {
        200..=299 => {}
        400 | 401 | 403 | 404 => return Err(CheckError::Rejected { status }),
        _ => return Err(CheckError::Upstream { status }),
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| CheckError::Unreachable(e.without_url().to_string()))?;
    serde_json::from_slice(&body).map_err(|e| CheckError::BadBody(e.to_string()))
}

/// Checks a static account's token at startup and after every change, retrying with capped
/// backoff while HubSpot cannot answer. Startup never waits for it.
pub(crate) fn spawn_static_check(
    account: Arc<Account>,
    client: reqwest::Client,
    base_url: String,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut verified = 0;
        let mut backoff = Duration::from_secs(1);
        loop {
            let token = account.token.snapshot();
            let mut wait = Duration::from_secs(1);
            if let Some(token) = token.filter(|t| t.generation() != verified) {
                let secret = bearer_secret(token.header());
                let kind = TokenKind::of_static(secret.expose());
                match access_token_info(&client, &base_url, &secret).await {
                    Ok(info) => {
                        verified = token.generation();
                        backoff = Duration::from_secs(1);
                        account.portal.observe(Some(info.hub_id), info.scopes, kind);
                        log_result(&account);
                    }
                    Err(e) => {
                        tracing::warn!(account = %account.name, retry_in_secs = backoff.as_secs(), "portal check failed: {e}");
                        account.portal.check_failed(kind, e.to_string());
                        wait = backoff;
                        backoff = (backoff * 2).min(RETRY_MAX);
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
        }
    })
}

fn log_result(account: &Account) {
    match account.portal.mismatch() {
        Some((expected, actual)) => tracing::error!(
            account = %account.name,
            expected_hub_id = expected,
            token_hub_id = actual,
            "the token belongs to another HubSpot portal; the account refuses requests until its token changes"
        ),
        None => tracing::info!(account = %account.name, "portal check passed"),
    }
}

/// The token inside a prepared `Bearer …` header value.
fn bearer_secret(header: &http::HeaderValue) -> Secret<String> {
    let text = header.to_str().unwrap_or("");
    Secret::new(text.strip_prefix("Bearer ").unwrap_or(text).to_string())
}

/// A client for introspection calls, with the upstream's CA and egress settings.
pub(crate) fn client(
    upstream: &crate::settings::UpstreamSettings,
) -> Result<reqwest::Client, String> {
    let url = format!(
        "{}{ACCESS_TOKEN_INFO_PATH}",
        upstream.base_url.trim_end_matches('/')
    );
    crate::credentials::token_endpoint::TokenEndpoint::new(
        url,
        CHECK_TIMEOUT,
        upstream.ca_file.as_deref(),
        upstream.proxy_url.as_deref(),
    )
    .map(|endpoint| endpoint.http_client().clone())
}
