//! The right portal: which HubSpot portal (hub id) and scopes each account's token belongs to,
//! checked against the account's configured `hub_id`. A mismatch takes the account out of
//! service, so a staging token in production cannot write to the wrong CRM.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::account::Account;
use crate::config::Secret;
use crate::error::ProxyError;

/// HubSpot's introspection endpoint for private app and service-key tokens.
pub const ACCESS_TOKEN_INFO_PATH: &str = "/oauth/v2/private-apps/get/access-token-info";
/// One introspection call may take this long.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
const RETRY_MAX: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    PrivateApp,
    ServiceKey,
    OAuth,
}

impl TokenKind {
    /// Private app tokens start `pat-`; any other static bearer is taken as a service key.
    pub fn of_static(token: &str) -> TokenKind {
        if token.starts_with("pat-") {
            TokenKind::PrivateApp
        } else {
            TokenKind::ServiceKey
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::PrivateApp => "private_app",
            TokenKind::ServiceKey => "service_key",
            TokenKind::OAuth => "oauth",
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Seen {
    hub_id: Option<u64>,
    scopes: Vec<String>,
    kind: Option<TokenKind>,
    last_error: Option<String>,
}

/// Per account: the expected portal, what the token says, and the data plane's one-load check.
#[derive(Default)]
pub struct Portal {
    expected: OnceLock<u64>,
    seen: Mutex<Seen>,
    /// The token's portal when it differs from `expected`; 0 when fine (hub ids are positive).
    wrong: AtomicU64,
}

impl Portal {
    pub fn expect(&self, hub_id: Option<u64>) {
        if let Some(id) = hub_id {
            let _ = self.expected.set(id);
        }
    }

    pub fn expected(&self) -> Option<u64> {
        self.expected.get().copied()
    }

    /// What HubSpot said about the current token (control plane only).
    pub fn observe(&self, hub_id: Option<u64>, scopes: Vec<String>, kind: TokenKind) {
        let wrong = match (self.expected(), hub_id) {
            (Some(expected), Some(actual)) if expected != actual => actual,
            _ => 0,
        };
        self.wrong.store(wrong, Ordering::SeqCst);
        *self.seen.lock().expect("portal lock") = Seen {
            hub_id,
            scopes,
            kind: Some(kind),
            last_error: None,
        };
    }

    fn check_failed(&self, kind: TokenKind, error: String) {
        let mut seen = self.seen.lock().expect("portal lock");
        seen.kind = Some(kind);
        seen.last_error = Some(error);
    }

    /// The scopes HubSpot last reported for the token (empty until it has said).
    pub fn scopes(&self) -> Vec<String> {
        self.seen.lock().expect("portal lock").scopes.clone()
    }

    /// `(expected, actual)` while the token belongs to another portal.
    pub fn mismatch(&self) -> Option<(u64, u64)> {
        match self.wrong.load(Ordering::SeqCst) {
            0 => None,
            actual => Some((self.expected().unwrap_or(0), actual)),
        }
    }

    /// The refusal for requests while the token belongs to another portal.
    pub fn refusal(&self, account: &Arc<str>) -> Option<ProxyError> {
        self.mismatch()
            .map(|(expected, actual)| ProxyError::WrongPortal {
                account: account.clone(),
                expected,
                actual,
            })
    }

    /// For `/status`: never the token.
    pub fn status(&self) -> Value {
        let seen = self.seen.lock().expect("portal lock").clone();
        json!({
            "hub_id": seen.hub_id,
            "expected_hub_id": self.expected(),
            "scopes": seen.scopes,
            "token_kind": seen.kind.map(TokenKind::as_str),
            "portal_check_error": seen.last_error,
        })
    }
}

/// HubSpot's answer to access-token-info.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenInfo {
    pub hub_id: u64,
    #[serde(default)]
    pub scopes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
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
pub async fn access_token_info(
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
pub fn spawn_static_check(
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
pub fn client(upstream: &crate::config::UpstreamConfig) -> Result<reqwest::Client, String> {
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
