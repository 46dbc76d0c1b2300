//! Calls to HubSpot's OAuth token endpoint (v1, v3 or 2026-03): every parameter in a form body.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::config::Secret;

/// What a successful token call returns. Secrets stay wrapped.
#[derive(Debug)]
pub(crate) struct Grant {
    pub(crate) access_token: Secret<String>,
    pub(crate) refresh_token: Option<Secret<String>>,
    pub(crate) expires_in: Duration,
    pub(crate) hub_id: Option<u64>,
    pub(crate) scopes: Vec<String>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum TokenError {
    /// HubSpot refused the credentials: a bad client secret, or a refresh token that is revoked
    /// or unknown. Retrying will not help until someone fixes the config.
    #[error("HubSpot refused the credentials ({error}): {description}")]
    Refused { error: String, description: String },
    #[error("the token endpoint answered HTTP {status}: {message}")]
    Status { status: u16, message: String },
    #[error("the token endpoint did not answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot reach the token endpoint: {0}")]
    Transport(String),
    #[error("the token endpoint answered 200 with an unusable body: {0}")]
    BadBody(String),
}

impl TokenError {
    /// A short, bounded label for metrics and `/status`.
    pub(crate) fn category(&self) -> &'static str {
        match self {
            TokenError::Refused { error, .. } if error == "invalid_client" => "invalid_client",
            TokenError::Refused { error, .. } if error == "invalid_grant" => "invalid_grant",
            TokenError::Refused { .. } => "refused",
            TokenError::Status { .. } => "http_status",
            TokenError::Timeout(_) => "timeout",
            TokenError::Transport(_) => "unreachable",
            TokenError::BadBody(_) => "bad_body",
        }
    }
}

/// HubSpot switches `/oauth/v1/token` off on 2027-02-16: a warning for a `token_url` still on it.
pub(crate) fn v1_warning(url: &str) -> Option<String> {
    let path = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = path.find('/').map_or("", |i| &path[i..]);
    let path = path.split(['?', '#']).next().unwrap_or("");
    path.trim_end_matches('/')
        .ends_with("/oauth/v1/token")
        .then(|| {
            format!(
                "{url} is HubSpot's v1 token endpoint, which HubSpot switches off on 2027-02-16; \
             use {} (the default when token_url is unset)",
                crate::config::DEFAULT_TOKEN_PATH
            )
        })
}

#[derive(Deserialize)]
struct GrantBody {
    access_token: Option<String>,
    refresh_token: Option<String>,
    expires_in: Option<u64>,
    hub_id: Option<u64>,
    #[serde(default)]
    scopes: Vec<String>,
}

/// HubSpot's error bodies carry both RFC 6749 fields and its own.
#[derive(Deserialize, Default)]
struct ErrorBody {
    error: Option<String>,
    error_description: Option<String>,
    status: Option<String>,
    message: Option<String>,
}

pub(crate) struct TokenEndpoint {
    client: reqwest::Client,
    url: String,
    timeout: Duration,
}

impl TokenEndpoint {
    /// `proxy_url` is `upstream.proxy_url`; token calls take the same egress route as API calls.
    pub(crate) fn new(
        url: String,
        timeout: Duration,
        ca_file: Option<&Path>,
        proxy_url: Option<&str>,
    ) -> Result<Self, String> {
        let target: http::Uri = url.parse().map_err(|e| format!("{url:?}: {e}"))?;
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .no_proxy()
            .user_agent(concat!("hubspot-auth-proxy/", env!("CARGO_PKG_VERSION")));
        if let Some((proxy, _)) = crate::egress::proxy_for(proxy_url, &target)? {
            let proxy = reqwest::Proxy::all(proxy.to_string()).map_err(|e| e.to_string())?;
            builder = builder.proxy(proxy);
        }
        if let Some(path) = ca_file {
            for cert in crate::upstream::load_pem_certs(path).map_err(|e| e.to_string())? {
                let cert = reqwest::Certificate::from_der(&cert).map_err(|e| e.to_string())?;
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build().map_err(|e| e.to_string())?;
        Ok(TokenEndpoint {
            client,
            url,
            timeout,
        })
    }

    /// The configured HTTP client (CA, egress proxy, timeouts), for the portal check's calls.
    pub(crate) fn http_client(&self) -> &reqwest::Client {
        &self.client
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    pub(crate) async fn refresh(
        &self,
        client_id: &str,
        client_secret: &Secret<String>,
        refresh_token: &Secret<String>,
    ) -> Result<Grant, TokenError> {
        self.call(&[
            ("grant_type", "refresh_token"),
            ("client_id", client_id),
            ("client_secret", client_secret.expose()),
            ("refresh_token", refresh_token.expose()),
        ])
        .await
    }

    pub(crate) async fn exchange_code(
        &self,
        client_id: &str,
        client_secret: &Secret<String>,
        code: &str,
        redirect_uri: &str,
        code_verifier: &str,
    ) -> Result<Grant, TokenError> {
        self.call(&[
            ("grant_type", "authorization_code"),
            ("client_id", client_id),
            ("client_secret", client_secret.expose()),
            ("redirect_uri", redirect_uri),
            ("code", code),
            ("code_verifier", code_verifier),
        ])
        .await
    }

    async fn call(&self, form: &[(&str, &str)]) -> Result<Grant, TokenError> {
        let response = self
            .client
            .post(&self.url)
            .header(reqwest::header::ACCEPT, "application/json")
            .form(form)
            .send()
            .await
            .map_err(|e| self.transport_error(e))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(e))?;
        if status.is_success() {
            parse_grant(&body)
        } else {
            Err(parse_error(status.as_u16(), &body))
        }
    }

    /// reqwest's messages include the URL, never the form body, so they are safe to log.
    fn transport_error(&self, e: reqwest::Error) -> TokenError {
        if e.is_timeout() {
            TokenError::Timeout(self.timeout)
        } else {
            TokenError::Transport(error_chain(&e))
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn parse_grant(body: &[u8]) -> Result<Grant, TokenError> {
    let grant: GrantBody =
        serde_json::from_slice(body).map_err(|e| TokenError::BadBody(e.to_string()))?;
    let access_token = grant
        .access_token
        .filter(|t| !t.is_empty() && t.bytes().all(|b| (0x21..0x7f).contains(&b)))
        .ok_or_else(|| TokenError::BadBody("no usable access_token".into()))?;
    let expires_in = grant
        .expires_in
        .filter(|s| *s > 0)
        .ok_or_else(|| TokenError::BadBody("no positive expires_in".into()))?;
    Ok(Grant {
        access_token: Secret::new(access_token),
        refresh_token: grant
            .refresh_token
            .filter(|t| !t.is_empty())
            .map(Secret::new),
        expires_in: Duration::from_secs(expires_in),
        hub_id: grant.hub_id,
        scopes: grant.scopes,
    })
}

fn parse_error(status: u16, body: &[u8]) -> TokenError {
    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let description = parsed
        .error_description
        .or(parsed.message)
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned());
    match parsed.error {
        Some(error) if (400..500).contains(&status) => TokenError::Refused { error, description },
        _ => TokenError::Status {
            status,
            message: match parsed.status {
                Some(s) => format!("{s}: {description}"),
                None => description,
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_v1_token_url_is_warned_about_with_its_date() {
        let warning = v1_warning("https://api.hubapi.com/oauth/v1/token").unwrap();
        assert!(warning.contains("2027-02-16"), "{warning}");
        assert!(v1_warning("http://127.0.0.1:9/oauth/v1/token/").is_some());
        assert!(v1_warning("https://api.hubapi.com/oauth/v3/token").is_none());
        assert!(v1_warning("https://api.hubapi.com/oauth/2026-03/token").is_none());
    }

    #[test]
    fn grants_and_errors_parse() {
        let g = parse_grant(br#"{"token_type":"bearer","access_token":"CJ-abc","refresh_token":"r-1","expires_in":1800,"hub_id":62515,"scopes":["oauth","crm.objects.contacts.read"]}"#).unwrap();
        assert_eq!(g.expires_in, Duration::from_secs(1800));
        assert_eq!(g.hub_id, Some(62515));
        assert!(!format!("{g:?}").contains("CJ-abc"));
        assert!(matches!(
            parse_grant(br#"{"access_token":"x"}"#),
            Err(TokenError::BadBody(_))
        ));
        assert!(matches!(
            parse_grant(b"<html>"),
            Err(TokenError::BadBody(_))
        ));

        let e = parse_error(400, br#"{"status":"BAD_REFRESH_TOKEN","message":"missing or unknown refresh token","error":"invalid_grant","error_description":"missing or unknown refresh token"}"#);
        assert_eq!(e.category(), "invalid_grant");
        assert!(e.to_string().contains("missing or unknown refresh token"));
        let e = parse_error(400, br#"{"status":"BAD_CLIENT_ID","message":"missing or invalid client_id or client_secret","error":"invalid_client","error_description":"missing or invalid client_id or client_secret"}"#);
        assert_eq!(e.category(), "invalid_client");
        let e = parse_error(502, b"bad gateway");
        assert_eq!(e.category(), "http_status");
    }
}
