//! The admin listener: health, readiness and metrics. It reads state and never proxies.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};

use crate::account::Accounts;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::proxy::body::ProxyBody;

pub struct Admin {
    accounts: Arc<Accounts>,
    metrics: Arc<Metrics>,
    lifecycle: Arc<Lifecycle>,
}

impl Admin {
    pub fn new(accounts: Arc<Accounts>, metrics: Arc<Metrics>, lifecycle: Arc<Lifecycle>) -> Self {
        Admin {
            accounts,
            metrics,
            lifecycle,
        }
    }

    pub fn handle<B>(&self, request: &Request<B>) -> Response<ProxyBody> {
        if !matches!(*request.method(), Method::GET | Method::HEAD) {
            return json(
                StatusCode::METHOD_NOT_ALLOWED,
                serde_json::json!({"status": "error", "message": "The admin endpoints answer GET only."}),
            );
        }
        match request.uri().path() {
            "/healthz" => json(StatusCode::OK, serde_json::json!({"status": "ok"})),
            "/readyz" => self.readiness(),
            "/metrics" => text(
                "text/plain; version=0.0.4; charset=utf-8",
                self.metrics.render(),
            ),
            _ => json(
                StatusCode::NOT_FOUND,
                serde_json::json!({"status": "error", "message": "Unknown admin path; try /healthz, /readyz or /metrics."}),
            ),
        }
    }

    /// Ready once every account holds a usable token, and not while draining.
    fn readiness(&self) -> Response<ProxyBody> {
        let now = Instant::now();
        let not_ready: Vec<&str> = self
            .accounts
            .iter()
            .filter(|a| !a.token.is_ready(now))
            .map(|a| &*a.name)
            .collect();
        let draining = self.lifecycle.is_draining();
        if not_ready.is_empty() && !draining {
            json(StatusCode::OK, serde_json::json!({"ready": true}))
        } else {
            json(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"ready": false, "draining": draining, "not_ready": not_ready}),
            )
        }
    }
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<ProxyBody> {
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
