//! The stand-in's HubSpot API surface: auth checks, CRM v3 contacts, the legacy v1 contact list,
//! and `/__sandbox/*` routes the tests use to provoke statuses, delays and large bodies.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Response};
use serde_json::{json, Value};

use super::json::{error, json_response};
use super::oauth::{token_endpoint, AccessCheck};
use super::ratelimit::Admission;
use super::{Recorded, State};
use crate::body::ProxyBody;

pub(super) fn seed_contacts(state: &State) {
    let mut contacts = state.contacts.lock().unwrap();
    for (id, first, last, email) in [
        ("101", "Ada", "Lovelace", "ada@example.com"),
        ("102", "Grace", "Hopper", "grace@example.com"),
        ("103", "Alan", "Turing", "alan@example.com"),
    ] {
        contacts.push(contact(id, first, last, email));
    }
}

fn contact(id: &str, first: &str, last: &str, email: &str) -> Value {
    json!({
        "id": id,
        "properties": {
            "createdate": "2026-01-05T10:00:00.000Z",
            "email": email,
            "firstname": first,
            "hs_object_id": id,
            "lastmodifieddate": "2026-11-01T09:30:00.000Z",
            "lastname": last,
        },
        "createdAt": "2026-01-05T10:00:00.000Z",
        "updatedAt": "2026-11-01T09:30:00.000Z",
        "archived": false,
    })
}

fn query_param<'a>(target: &'a str, key: &str) -> Option<&'a str> {
    let query = target.split_once('?')?.1;
    query
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// HubSpot's token introspection: access-token-info (private app and service-key tokens) and
/// the OAuth introspect endpoint; the proxy's own control-plane calls.
pub(super) fn is_introspection(request: &Recorded) -> bool {
    let path = request.target.split('?').next().unwrap_or("/");
    request.method == Method::POST
        && matches!(
            path,
            crate::portal::ACCESS_TOKEN_INFO_PATH | "/oauth/2026-03/token/introspect"
        )
}

/// `{"tokenKey": …}` (JSON) or `token=…` (form) → the token's portal and scopes, or 401.
pub(super) fn introspect(state: &State, body: &[u8]) -> Response<ProxyBody> {
    let token = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["tokenKey"].as_str().map(String::from))
        .or_else(|| {
            form_urlencoded::parse(body)
                .find(|(k, _)| k == "token")
                .map(|(_, v)| v.into_owned())
        })
        .unwrap_or_default();
    let known = state.static_token_valid(&token)
        || matches!(
            state.oauth.check_access(&token),
            super::oauth::AccessCheck::Valid
        );
    if !known {
        return error(401, "INVALID_AUTHENTICATION", "The token is not valid.");
    }
    let hub_id = state.hub_id(&token);
    json_response(
        200,
        json!({
            "hubId": hub_id,
            "hub_id": hub_id,
            "active": true,
            "scopes": ["oauth", "crm.objects.contacts.read", "crm.objects.contacts.write"],
        }),
    )
}

/// Answers one request the way HubSpot would.
pub(super) async fn respond(state: &State, request: &Recorded, body: Bytes) -> Response<ProxyBody> {
    let path = request.target.split('?').next().unwrap_or("/");
    if request.method == Method::POST
        && matches!(
            path,
            "/oauth/v1/token" | "/oauth/v3/token" | "/oauth/2026-03/token"
        )
    {
        return token_endpoint(&state.oauth, request, &body).await;
    }
    if let Some(answer) = developer_key_answer(state, request) {
        return answer;
    }
    let daily = match authenticate(state, request).await {
        Ok(kind) => kind == BearerKind::Static,
        Err(denied) => return denied,
    };
    if let Some(injected) = state.take_injected() {
        return injected_answer(injected);
    }
    let search = request.method == Method::POST && path.ends_with("/search");
    let remaining = match state.limits.admit(search) {
        Admission::Allowed { remaining } => remaining,
        Admission::Limited { policy } => return rate_limited(policy),
    };
    let mut response = route(state, request, path, body).await;
    state
        .limits
        .headers(response.headers_mut(), remaining, daily);
    response
}

async fn route(state: &State, request: &Recorded, path: &str, body: Bytes) -> Response<ProxyBody> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (&request.method, segments.as_slice()) {
        (_, ["__sandbox", rest @ ..]) => test_route(state, request, rest).await,
        (&Method::GET, ["crm", "v3", "objects", "contacts"]) => list_contacts(state, request),
        (&Method::POST, ["crm", "v3", "objects", "contacts"]) => create_contact(state, &body),
        (&Method::GET, ["crm", "v3", "objects", "contacts", id]) => get_contact(state, id),
        (&Method::POST, ["crm", "v3", "objects", "contacts", "search"]) => search_contacts(state),
        (&Method::GET, ["contacts", "v1", "lists", "all", "contacts", "all"]) => {
            legacy_contact_list(state, request)
        }
        _ => error(
            404,
            "OBJECT_NOT_FOUND",
            &format!("No route for {} {path}", request.method),
        ),
    }
}

#[derive(PartialEq, Eq)]
enum BearerKind {
    Static,
    OAuth,
}

fn rate_limited(policy: &str) -> Response<ProxyBody> {
    let mut response = json_response(
        429,
        json!({
            "status": "error",
            "message": format!("You have reached your {} limit.", policy.to_ascii_lowercase()),
            "errorType": "RATE_LIMIT",
            "correlationId": uuid::Uuid::new_v4().to_string(),
            "policyName": policy,
        }),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

async fn authenticate(
    state: &State,
    request: &Recorded,
) -> Result<BearerKind, Response<ProxyBody>> {
    let Some(token) = request.bearer() else {
        return Err(missing_credentials(request));
    };
    if state.static_token_valid(token) {
        return Ok(BearerKind::Static);
    }
    match state.oauth.check_access(token) {
        AccessCheck::Valid => Ok(BearerKind::OAuth),
        AccessCheck::Expired => {
            tokio::time::sleep(state.oauth.expired_delay()).await;
            Err(error(
                401,
                "EXPIRED_AUTHENTICATION",
                "The OAuth token used to make this call expired 1 second(s) ago.",
            ))
        }
        AccessCheck::Unknown => Err(error(
            401,
            "INVALID_AUTHENTICATION",
            "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
        )),
    }
}

/// A known developer key without a bearer: HubSpot answers with the developer app's own budget.
fn developer_key_answer(state: &State, request: &Recorded) -> Option<Response<ProxyBody>> {
    if request.bearer().is_some() {
        return None;
    }
    let max = state.developer_key_max(query_param(&request.target, "hapikey")?)?;
    let mut response = json_response(200, json!({ "developerKey": true }));
    let headers = response.headers_mut();
    headers.insert("x-hubspot-ratelimit-max", HeaderValue::from(max));
    headers.insert(
        "x-hubspot-ratelimit-remaining",
        HeaderValue::from(max.saturating_sub(1)),
    );
    Some(response)
}

fn missing_credentials(request: &Recorded) -> Response<ProxyBody> {
    if query_param(&request.target, "hapikey").is_some() {
        return error(
            401,
            "INVALID_AUTHENTICATION",
            "The API key provided is invalid. View or manage your API key here: https://app.hubspot.com/l/api-key/",
        );
    }
    error(
        401,
        "INVALID_AUTHENTICATION",
        "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
    )
}

/// `limit` and `after` work as in HubSpot's v3 paging.
fn list_contacts(state: &State, request: &Recorded) -> Response<ProxyBody> {
    let limit: usize = query_param(&request.target, "limit")
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
        .clamp(1, 100);
    let after: usize = query_param(&request.target, "after")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let contacts = state.contacts.lock().unwrap();
    let page: Vec<Value> = contacts.iter().skip(after).take(limit).cloned().collect();
    let mut body = json!({ "results": page });
    if after + limit < contacts.len() {
        let next = (after + limit).to_string();
        body["paging"] = json!({ "next": { "after": next, "link": format!("?after={next}") } });
    }
    json_response(200, body)
}

fn search_contacts(state: &State) -> Response<ProxyBody> {
    let contacts = state.contacts.lock().unwrap().clone();
    json_response(200, json!({ "total": contacts.len(), "results": contacts }))
}

fn injected_answer(injected: super::Injected) -> Response<ProxyBody> {
    match injected.policy {
        Some(policy) if injected.status == 429 => rate_limited(policy),
        _ => error(
            injected.status,
            "SANDBOX_INJECTED",
            &format!("sandbox injected {}", injected.status),
        ),
    }
}

fn get_contact(state: &State, id: &str) -> Response<ProxyBody> {
    let contacts = state.contacts.lock().unwrap();
    match contacts.iter().find(|c| c["id"] == id) {
        Some(c) => json_response(200, c.clone()),
        None => error(
            404,
            "OBJECT_NOT_FOUND",
            &format!(
                "Object not found.  objectId are usually numeric. Contact {id} does not exist"
            ),
        ),
    }
}

fn create_contact(state: &State, body: &[u8]) -> Response<ProxyBody> {
    let Ok(input) = serde_json::from_slice::<Value>(body) else {
        return error(400, "VALIDATION_ERROR", "Invalid input JSON on line 1");
    };
    let props = &input["properties"];
    let mut contacts = state.contacts.lock().unwrap();
    let id = (101 + contacts.len()).to_string();
    let text = |k: &str| props[k].as_str().unwrap_or("").to_string();
    let created = contact(&id, &text("firstname"), &text("lastname"), &text("email"));
    contacts.push(created.clone());
    json_response(201, created)
}

/// `/contacts/v1/lists/all/contacts/all` in the v1 shape scripts from before 2022 expect.
fn legacy_contact_list(state: &State, request: &Recorded) -> Response<ProxyBody> {
    let count: usize = query_param(&request.target, "count")
        .and_then(|c| c.parse().ok())
        .unwrap_or(20);
    let contacts = state.contacts.lock().unwrap();
    let page: Vec<Value> = contacts
        .iter()
        .take(count)
        .map(|c| {
            let p = &c["properties"];
            json!({
                "vid": c["id"].as_str().and_then(|id| id.parse::<u64>().ok()),
                "canonical-vid": c["id"].as_str().and_then(|id| id.parse::<u64>().ok()),
                "portal-id": 62515,
                "is-contact": true,
                "properties": {
                    "firstname": { "value": p["firstname"] },
                    "lastname": { "value": p["lastname"] },
                    "lastmodifieddate": { "value": "1793525400000" },
                },
                "identity-profiles": [{ "identities": [{ "type": "EMAIL", "value": p["email"] }] }],
            })
        })
        .collect();
    json_response(
        200,
        json!({ "contacts": page, "has-more": contacts.len() > count, "vid-offset": count }),
    )
}

/// Routes that exist only in the stand-in, to provoke what tests need.
async fn test_route(state: &State, request: &Recorded, rest: &[&str]) -> Response<ProxyBody> {
    match rest {
        ["echo"] => json_response(
            200,
            json!({
                "method": request.method.as_str(),
                "target": request.target,
                "body_len": request.body_len,
                "body_sha256": request.body_sha256,
            }),
        ),
        ["status", code] => status_route(request, code.parse().unwrap_or(500)),
        ["slow", ms] => {
            let _inside = state.enter_slow();
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(1000))).await;
            json_response(200, json!({ "slept_ms": ms }))
        }
        ["bytes", n] => {
            let n: usize = n.parse().unwrap_or(0).min(64 * 1024 * 1024);
            Response::new(ProxyBody::full(vec![b'x'; n]))
        }
        ["hop"] => {
            let mut response = json_response(200, json!({}));
            let h = response.headers_mut();
            h.insert(
                header::CONNECTION,
                HeaderValue::from_static("x-sandbox-hop"),
            );
            h.insert("x-sandbox-hop", HeaderValue::from_static("1"));
            h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
            h.insert(
                header::PROXY_AUTHENTICATE,
                HeaderValue::from_static("Basic"),
            );
            h.insert("x-hubspot-kept", HeaderValue::from_static("yes"));
            response
        }
        _ => error(404, "OBJECT_NOT_FOUND", "unknown sandbox route"),
    }
}

fn status_route(request: &Recorded, code: u16) -> Response<ProxyBody> {
    let mut response = match code {
        429 => json_response(
            429,
            json!({
                "status": "error",
                "message": "You have reached your ten_secondly_rolling limit.",
                "errorType": "RATE_LIMIT",
                "correlationId": uuid::Uuid::new_v4().to_string(),
                "policyName": query_param(&request.target, "policy").unwrap_or("TEN_SECONDLY_ROLLING"),
            }),
        ),
        200..=299 => json_response(code, json!({ "id": "555", "status": code })),
        _ => error(
            code,
            "SANDBOX_STATUS",
            &format!("sandbox answered {code} on request"),
        ),
    };
    response
        .headers_mut()
        .insert("x-sandbox-status", HeaderValue::from(code));
    if code == 429 {
        let retry_after = query_param(&request.target, "retry_after")
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(1);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    }
    response
}
