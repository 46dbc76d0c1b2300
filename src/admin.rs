//! The admin listener: health, readiness, metrics, status and quit. It reads state and never proxies.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use serde_json::{json, Value};

use crate::account::{Account, Accounts};
use crate::body::ProxyBody;
use crate::fleet::Fleet;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::migration::Report;
use crate::shaping::SharedShaper;

pub(crate) struct Admin {
    pub(crate) accounts: Arc<Accounts>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) lifecycle: Arc<Lifecycle>,
    pub(crate) enable_quit: bool,
    pub(crate) report: Arc<Report>,
    pub(crate) fleet: Option<Arc<Fleet>>,
}

impl Admin {
    pub(crate) fn handle<B>(&self, request: &Request<B>) -> Response<ProxyBody> {
        let read = matches!(*request.method(), Method::GET | Method::HEAD);
        match (request.uri().path(), read) {
            ("/healthz", true) => json_response(StatusCode::OK, json!({"status": "ok"})),
            ("/readyz", true) => self.readiness(),
            ("/metrics", true) => {
                // Account states are derived (a token expires without an event): set at scrape.
                let now = Instant::now();
                for account in self.accounts.iter() {
                    account.metrics.set_state(account.state(now));
                }
                text(
                    "text/plain; version=0.0.4; charset=utf-8",
                    self.metrics.render(),
                )
            }
            ("/status", true) => json_response(StatusCode::OK, self.status()),
            ("/migration", true) => json_response(StatusCode::OK, self.report.to_json()),
            ("/quitquitquit", _) => self.quit(request.method()),
            ("/healthz" | "/readyz" | "/metrics" | "/status" | "/migration", false) => {
                json_response(
                    StatusCode::METHOD_NOT_ALLOWED,
                    json!({"status": "error", "message": "This admin endpoint answers GET only."}),
                )
            }
            _ => json_response(
                StatusCode::NOT_FOUND,
                json!({"status": "error", "message": "Unknown admin path; try /healthz, /readyz, /metrics, /status or /migration."}),
            ),
        }
    }

    /// Ready once every account holds a usable token, and not while draining.
    fn readiness(&self) -> Response<ProxyBody> {
        let now = Instant::now();
        let not_ready: Vec<Value> = self
            .accounts
            .iter()
            .filter(|a| !a.token.is_ready(now) || a.portal.mismatch().is_some())
            .map(|a| match a.portal.mismatch() {
                Some((expected, actual)) => json!({"account": &*a.name, "reason": "wrong_portal", "last_error": "wrong_portal",
                    "message": format!("configured for portal {expected}, the token belongs to portal {actual}")}),
                None => json!({"account": &*a.name, "reason": a.state(now).as_str(), "last_error": a.status.snapshot().last_error}),
            })
            .collect();
        let draining = self.lifecycle.is_draining();
        if not_ready.is_empty() && !draining {
            json_response(StatusCode::OK, json!({"ready": true}))
        } else {
            json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"ready": false, "draining": draining, "not_ready": not_ready}),
            )
        }
    }

    /// Per-account credential health and HubSpot's rate-limit budget. Never a secret.
    pub(crate) fn status(&self) -> Value {
        let now = Instant::now();
        let accounts: Vec<Value> = self
            .accounts
            .iter()
            .map(|a| account_status(a, now))
            .collect();
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "draining": self.lifecycle.is_draining(),
            "fleet": self.fleet.as_deref().map(fleet_status),
            "accounts": accounts,
        })
    }

    fn quit(&self, method: &Method) -> Response<ProxyBody> {
        if !self.enable_quit {
            return json_response(
                StatusCode::FORBIDDEN,
                json!({"status": "error", "message": "Shutdown over HTTP is off; set [server] enable_quit = true to allow POST /quitquitquit."}),
            );
        }
        if *method != Method::POST {
            return json_response(
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"status": "error", "message": "Use POST /quitquitquit."}),
            );
        }
        self.lifecycle.request_quit();
        json_response(StatusCode::OK, json!({"status": "shutting down"}))
    }
}

fn account_status(account: &Account, now: Instant) -> Value {
    let snapshot = account.status.snapshot();
    let token = account.token.snapshot();
    let expires_in = token
        .as_ref()
        .and_then(|t| t.expires_at())
        .map(|at| at.saturating_duration_since(now).as_secs());
    let unix = |t: SystemTime| t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).ok();
    let [ten_remaining, ten_max, daily_remaining, daily_max] = account.metrics.ratelimit_seen();
    json!({
        "name": &*account.name,
        "kind": account.credential.as_str(),
        "ready": account.token.is_ready(now),
        "token_expires_in_secs": expires_in,
        "last_refresh_unix": snapshot.last_refresh.and_then(unix),
        "last_refresh_result": snapshot.last_refresh_ok.map(|ok| if ok { "success" } else { "failure" }),
        "consecutive_failures": snapshot.consecutive_failures,
        "last_error": snapshot.last_error,
        "daily_limit_hit_unix": snapshot.daily_limit_hit.and_then(unix),
        "state": account.state(now).as_str(),
        "reauthorization": snapshot.reauthorization.as_ref().map(|r| json!({
            "error": r.error, "detail": r.detail, "action": r.action,
        })),
        "portal": account.portal.status(),
        "fleet_token": snapshot.fleet_token.map(|t| json!({
            "generation": t.generation, "origin": t.origin.as_str(),
        })),
        "ratelimit": {
            "ten_second": {"remaining": ten_remaining, "max": ten_max, "budget": account.shaper.as_ref().map(|s| s.limit())},
            "shared": account.shaper.as_ref().and_then(|s| s.shared()).map(|s| shared_status(s, unix)),
            "daily": {"remaining": daily_remaining, "max": daily_max},
        },
    })
}

/// The fleet-wide budget in use, as the last shared admission saw it, and this replica's share
/// should Redis go away.
fn shared_status(shaper: &SharedShaper, unix: impl Fn(SystemTime) -> Option<u64>) -> Value {
    let status = shaper.status();
    json!({
        "in_use": status.in_use.map(|(usage, _)| usage.used),
        "limit": status.in_use.map(|(usage, _)| usage.limit),
        "seen_unix": status.in_use.and_then(|(_, at)| unix(at)),
        "fallback_share": status.fallback_share,
    })
}

fn json_response(status: StatusCode, body: Value) -> Response<ProxyBody> {
    let mut response = text("application/json", body.to_string().into_bytes());
    *response.status_mut() = status;
    response
}

fn text(content_type: &'static str, body: Vec<u8>) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::full(Bytes::from(body)));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Fleet mode at a glance: shared (Redis answering) or local fallback, and replicas seen.
fn fleet_status(fleet: &Fleet) -> Value {
    json!({
        "redis": if fleet.is_up() { "up" } else { "down" },
        "mode": if fleet.is_up() { "shared" } else { "fallback" },
        "replicas": fleet.replicas(),
    })
}
