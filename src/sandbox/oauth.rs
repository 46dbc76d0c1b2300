//! The stand-in's OAuth side: the token endpoints (v1, v3, 2026-03), short-lived access tokens,
//! refresh-token rotation, failure switches, early expiry, and authorization codes with PKCE.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::json::{json_response, oauth_error};
use super::Recorded;
use crate::body::ProxyBody;

/// How the token endpoint misbehaves, for outage tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum TokenMode {
    Normal = 0,
    ServerError = 1,
    Hang = 2,
    BadBody = 3,
}

struct CodeGrant {
    challenge: String,
    redirect_uri: String,
}

pub struct OAuthState {
    client: Mutex<(String, String)>,
    refresh_tokens: Mutex<HashSet<String>>,
    /// Access token → when it stops being accepted.
    access: Mutex<HashMap<String, Instant>>,
    codes: Mutex<HashMap<String, CodeGrant>>,
    expires_in: AtomicU64,
    rotate: AtomicBool,
    mode: AtomicU8,
    /// 401s for expired tokens are held this long, so concurrent requests all see one.
    expired_delay_ms: AtomicU64,
    calls: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    /// Answer EXPIRED_AUTHENTICATION for every access token, even one just issued.
    reject_all: AtomicBool,
}

impl Default for OAuthState {
    fn default() -> Self {
        OAuthState {
            client: Mutex::new(Default::default()),
            refresh_tokens: Mutex::default(),
            access: Mutex::default(),
            codes: Mutex::default(),
            expires_in: AtomicU64::new(1800),
            rotate: AtomicBool::new(false),
            mode: AtomicU8::new(TokenMode::Normal as u8),
            expired_delay_ms: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
            reject_all: AtomicBool::new(false),
        }
    }
}

/// Whether a bearer is an access token this stand-in issued, and if so whether it still works.
pub(crate) enum AccessCheck {
    Valid,
    Expired,
    Unknown,
}

impl OAuthState {
    pub fn set_client(&self, id: &str, secret: &str) {
        *self.client.lock().unwrap() = (id.to_string(), secret.to_string());
    }

    pub fn add_refresh_token(&self, token: &str) {
        self.refresh_tokens
            .lock()
            .unwrap()
            .insert(token.to_string());
    }

    pub fn refresh_token_valid(&self, token: &str) -> bool {
        self.refresh_tokens.lock().unwrap().contains(token)
    }

    pub fn set_expires_in(&self, secs: u64) {
        self.expires_in.store(secs, Ordering::SeqCst);
    }

    pub fn set_rotation(&self, on: bool) {
        self.rotate.store(on, Ordering::SeqCst);
    }

    pub fn set_mode(&self, mode: TokenMode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    pub fn set_expired_delay(&self, delay: Duration) {
        self.expired_delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    pub(super) fn expired_delay(&self) -> Duration {
        Duration::from_millis(self.expired_delay_ms.load(Ordering::SeqCst))
    }

    /// Every access token issued so far stops working now, before its `expires_in` says.
    pub fn expire_access_tokens_early(&self) {
        let now = Instant::now();
        for expiry in self.access.lock().unwrap().values_mut() {
            *expiry = now;
        }
    }

    /// HubSpot rejecting every token as expired, fresh ones too (a refresh storm's trigger).
    pub fn reject_all_as_expired(&self, on: bool) {
        self.reject_all.store(on, Ordering::SeqCst);
    }

    pub fn issued_access_tokens(&self) -> Vec<String> {
        self.access.lock().unwrap().keys().cloned().collect()
    }

    pub fn token_calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn max_concurrent_token_calls(&self) -> u64 {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    /// Registers an authorization code as HubSpot would after the user consents.
    pub fn issue_code(&self, code: &str, code_challenge: &str, redirect_uri: &str) {
        self.codes.lock().unwrap().insert(
            code.to_string(),
            CodeGrant {
                challenge: code_challenge.to_string(),
                redirect_uri: redirect_uri.to_string(),
            },
        );
    }

    pub(super) fn check_access(&self, token: &str) -> AccessCheck {
        match self.access.lock().unwrap().get(token) {
            Some(_) if self.reject_all.load(Ordering::SeqCst) => AccessCheck::Expired,
            Some(expiry) if Instant::now() < *expiry => AccessCheck::Valid,
            Some(_) => AccessCheck::Expired,
            None => AccessCheck::Unknown,
        }
    }
}

/// Counts a token call as in flight for as long as it is being answered.
struct InFlight<'a>(&'a OAuthState);

impl<'a> InFlight<'a> {
    fn enter(state: &'a OAuthState) -> Self {
        state.calls.fetch_add(1, Ordering::SeqCst);
        let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(state)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

pub(super) async fn token_endpoint(
    state: &OAuthState,
    request: &Recorded,
    body: &Bytes,
) -> http::Response<ProxyBody> {
    let _in_flight = InFlight::enter(state);
    // Long enough that two overlapping calls would be seen as concurrent.
    tokio::time::sleep(Duration::from_millis(20)).await;
    match state.mode.load(Ordering::SeqCst) {
        m if m == TokenMode::ServerError as u8 => {
            return json_response(
                502,
                json!({"status": "error", "message": "Bad gateway (sandbox outage)"}),
            )
        }
        m if m == TokenMode::Hang as u8 => tokio::time::sleep(Duration::from_secs(3600)).await,
        m if m == TokenMode::BadBody as u8 => {
            return json_response(200, json!({"unexpected": "shape"}))
        }
        _ => {}
    }
    if request.target.contains('?') {
        return oauth_error(
            400,
            "invalid_request",
            "BAD_REQUEST",
            "Parameters must be sent in the form body, not the query.",
        );
    }
    let form: HashMap<String, String> = form_urlencoded::parse(body).into_owned().collect();
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let (id, secret) = state.client.lock().unwrap().clone();
    if field("client_id") != id || field("client_secret") != secret {
        return oauth_error(
            400,
            "invalid_client",
            "BAD_CLIENT_ID",
            "missing or invalid client_id or client_secret",
        );
    }
    match field("grant_type") {
        "refresh_token" => {
            let presented = field("refresh_token");
            if !state.refresh_token_valid(presented) {
                return oauth_error(
                    400,
                    "invalid_grant",
                    "BAD_REFRESH_TOKEN",
                    "missing or unknown refresh token",
                );
            }
            grant(state, Some(presented))
        }
        "authorization_code" => {
            let Some(code) = state.codes.lock().unwrap().remove(field("code")) else {
                return oauth_error(
                    400,
                    "invalid_grant",
                    "BAD_AUTH_CODE",
                    "missing or unknown auth code",
                );
            };
            let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(Sha256::digest(field("code_verifier").as_bytes()));
            if challenge != code.challenge || field("redirect_uri") != code.redirect_uri {
                return oauth_error(
                    400,
                    "invalid_grant",
                    "BAD_AUTH_CODE",
                    "code_verifier or redirect_uri does not match",
                );
            }
            grant(state, None)
        }
        other => oauth_error(
            400,
            "unsupported_grant_type",
            "BAD_GRANT_TYPE",
            &format!("unsupported grant_type {other:?}"),
        ),
    }
}

fn grant(state: &OAuthState, presented: Option<&str>) -> http::Response<ProxyBody> {
    let expires_in = state.expires_in.load(Ordering::SeqCst);
    let access = format!("CJ-sandbox-{}", uuid::Uuid::new_v4().simple());
    state.access.lock().unwrap().insert(
        access.clone(),
        Instant::now() + Duration::from_secs(expires_in),
    );
    let mut refresh_tokens = state.refresh_tokens.lock().unwrap();
    let refresh = match presented {
        Some(old) if !state.rotate.load(Ordering::SeqCst) => old.to_string(),
        old => {
            if let Some(old) = old {
                refresh_tokens.remove(old);
            }
            let new = format!("na1-sandbox-{}", uuid::Uuid::new_v4().simple());
            refresh_tokens.insert(new.clone());
            new
        }
    };
    json_response(
        200,
        json!({
            "token_type": "bearer",
            "access_token": access,
            "refresh_token": refresh,
            "expires_in": expires_in,
            "hub_id": 62515,
            "scopes": ["oauth", "crm.objects.contacts.read", "crm.objects.contacts.write"],
        }),
    )
}
