//! `oauth authorize`: the one-time consent that yields an account's first refresh token,
//! with `state` and PKCE, a loopback redirect listener, and an atomic write of the token file.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

use crate::config::Secret;
use crate::credentials::persist::write_secret_file;
use crate::credentials::token_endpoint::{Grant, TokenEndpoint};
use crate::settings::{CredentialSettings, Settings};

pub struct AuthorizeArgs {
    pub account: String,
    pub scopes: String,
    pub redirect_port: u16,
    pub authorize_url: String,
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum AuthorizeError {
    #[error("{0}")]
    Config(String),
    #[error("cannot listen for the redirect on 127.0.0.1:{port}: {source}")]
    Listen { port: u16, source: std::io::Error },
    #[error("no redirect arrived within {0:?}; nothing was written")]
    Timeout(Duration),
    #[error("{0}; nothing was written")]
    Redirect(String),
}

/// What the user is told on success.
pub(crate) struct Authorized {
    pub(crate) file: PathBuf,
    pub(crate) hub_id: Option<u64>,
    pub(crate) scopes: Vec<String>,
}

struct Flow {
    client_id: String,
    client_secret: Secret<String>,
    endpoint: TokenEndpoint,
    file: PathBuf,
    state: String,
    verifier: String,
    redirect_uri: String,
    outcome: Mutex<Option<Result<Authorized, AuthorizeError>>>,
}

/// Runs the flow; `print_url` receives the authorize URL as soon as the listener is up.
pub(crate) async fn run(
    settings: &Settings,
    args: &AuthorizeArgs,
    print_url: impl FnOnce(&str),
) -> Result<Authorized, AuthorizeError> {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], args.redirect_port)))
        .await
        .map_err(|source| AuthorizeError::Listen {
            port: args.redirect_port,
            source,
        })?;
    let port = listener
        .local_addr()
        .map_err(|source| AuthorizeError::Listen {
            port: args.redirect_port,
            source,
        })?
        .port();
    let flow = Arc::new(prepare(settings, args, port)?);
    print_url(&authorize_url(&flow, args));
    let wait = async {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handler = flow.clone();
            let service = hyper::service::service_fn(move |request| {
                let flow = handler.clone();
                async move { Ok::<_, Infallible>(flow.redirect(request).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            let outcome = flow.outcome.lock().expect("outcome lock").take();
            if let Some(outcome) = outcome {
                return outcome;
            }
        }
    };
    tokio::time::timeout(args.timeout, wait)
        .await
        .map_err(|_| AuthorizeError::Timeout(args.timeout))?
}

fn prepare(settings: &Settings, args: &AuthorizeArgs, port: u16) -> Result<Flow, AuthorizeError> {
    let (index, account) = settings
        .accounts
        .iter()
        .enumerate()
        .find(|(_, a)| a.name == args.account)
        .ok_or_else(|| AuthorizeError::Config(format!("no account is named {:?}", args.account)))?;
    let key = format!("accounts[{index}].oauth");
    let CredentialSettings::OAuth(oauth) = &account.credential else {
        return Err(AuthorizeError::Config(format!(
            "{key}: account {:?} has no [accounts.oauth] table",
            args.account
        )));
    };
    let file = oauth
        .refresh_token
        .file()
        .ok_or_else(|| {
            AuthorizeError::Config(format!(
                "{key}.refresh_token must be {{ file = \"...\" }} so the token can be written"
            ))
        })?
        .to_path_buf();
    let client_secret = oauth
        .client_secret
        .load()
        .map_err(|e| AuthorizeError::Config(format!("{key}.client_secret: {e}")))?;
    let endpoint = TokenEndpoint::new(
        oauth.token_url.clone(),
        oauth.token_timeout,
        settings.upstream.ca_file.as_deref(),
        settings.upstream.proxy_url.as_deref(),
    )
    .map_err(|e| AuthorizeError::Config(format!("{key}.token_url: {e}")))?;
    let verifier = random_b64(32);
    Ok(Flow {
        client_id: oauth.client_id.clone(),
        client_secret,
        endpoint,
        file,
        state: random_b64(16),
        verifier,
        redirect_uri: format!("http://localhost:{port}/"),
        outcome: Mutex::new(None),
    })
}

fn random_b64(bytes: usize) -> String {
    let raw: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn authorize_url(flow: &Flow, args: &AuthorizeArgs) -> String {
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(flow.verifier.as_bytes()));
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("client_id", &flow.client_id)
        .append_pair("redirect_uri", &flow.redirect_uri)
        .append_pair("scope", &args.scopes)
        .append_pair("state", &flow.state)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .finish();
    format!("{}?{query}", args.authorize_url)
}

impl Flow {
    async fn redirect(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        if request.uri().path() != "/" {
            return page(StatusCode::NOT_FOUND, "Not the redirect path.");
        }
        let params: HashMap<String, String> =
            form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
                .into_owned()
                .collect();
        let outcome = self.complete(&params).await;
        let response = match &outcome {
            Ok(_) => page(
                StatusCode::OK,
                "HubSpot authorization complete. You can close this tab.",
            ),
            Err(e) => page(
                StatusCode::BAD_REQUEST,
                &format!("Authorization failed: {e}"),
            ),
        };
        *self.outcome.lock().expect("outcome lock") = Some(outcome);
        response
    }

    async fn complete(
        &self,
        params: &HashMap<String, String>,
    ) -> Result<Authorized, AuthorizeError> {
        let get = |k: &str| params.get(k).map(String::as_str);
        if let Some(error) = get("error") {
            let description = get("error_description").unwrap_or("");
            return Err(AuthorizeError::Redirect(format!(
                "HubSpot redirected with error={error}: {description}"
            )));
        }
        if get("state") != Some(self.state.as_str()) {
            return Err(AuthorizeError::Redirect(
                "the redirect's state does not match this session (a stale or forged redirect)"
                    .into(),
            ));
        }
        let code = get("code")
            .ok_or_else(|| AuthorizeError::Redirect("the redirect carries no code".into()))?;
        let grant: Grant = self
            .endpoint
            .exchange_code(
                &self.client_id,
                &self.client_secret,
                code,
                &self.redirect_uri,
                &self.verifier,
            )
            .await
            .map_err(|e| AuthorizeError::Redirect(format!("code exchange failed: {e}")))?;
        let refresh = grant.refresh_token.ok_or_else(|| {
            AuthorizeError::Redirect("the token response has no refresh_token".into())
        })?;
        write_secret_file(&self.file, refresh.expose()).map_err(|e| {
            AuthorizeError::Redirect(format!("cannot write {}: {e}", self.file.display()))
        })?;
        Ok(Authorized {
            file: self.file.clone(),
            hub_id: grant.hub_id,
            scopes: grant.scopes,
        })
    }
}

fn page(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(format!(
        "<!doctype html><title>hubspot-auth-proxy</title><p>{}</p>",
        text.replace('<', "&lt;")
    ))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}
