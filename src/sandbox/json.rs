//! The stand-in's JSON answers, shared by its API surface and its token endpoint: HubSpot's
//! error shape, the token endpoint's error shape, and the headers every JSON answer carries.

use http::{header, HeaderValue, Response, StatusCode};
use serde_json::{json, Value};

use crate::body::ProxyBody;

/// HubSpot's error shape: `{"status":"error","message":…,"correlationId":…,"category":…}`.
pub(super) fn error(status: u16, category: &str, message: &str) -> Response<ProxyBody> {
    json_response(
        status,
        json!({
            "status": "error",
            "message": message,
            "correlationId": uuid::Uuid::new_v4().to_string(),
            "category": category,
        }),
    )
}

pub(super) fn json_response(status: u16, body: Value) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::full(body.to_string()));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=utf-8"),
    );
    headers.insert(
        "x-hubspot-correlation-id",
        HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()).expect("uuid is ASCII"),
    );
    response
}

/// Token endpoint errors carry RFC 6749 fields and HubSpot's own.
pub(super) fn oauth_error(
    status: u16,
    error: &str,
    hubspot_status: &str,
    description: &str,
) -> Response<ProxyBody> {
    json_response(
        status,
        json!({
            "status": hubspot_status,
            "message": description,
            "correlationId": uuid::Uuid::new_v4().to_string(),
            "error": error,
            "error_description": description,
        }),
    )
}
