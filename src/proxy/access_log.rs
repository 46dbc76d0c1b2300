//! The access log: one line per request, at info when `server.access_log` is on, else at debug.
//! (Who may use the proxy at all is decided elsewhere, in `admission`.)

use std::time::Duration;

use http::{Method, Response, Uri};

use super::hapikey;
use crate::body::ProxyBody;

/// The line keeps the data plane's target, so operators' filters and parsers see it unchanged.
const TARGET: &str = "hubspot_auth_proxy::proxy";

#[derive(Debug, Clone, Copy)]
pub(crate) struct AccessLog {
    /// `server.access_log`: every line at info.
    on: bool,
}

impl AccessLog {
    pub(crate) fn new(on: bool) -> Self {
        AccessLog { on }
    }

    /// The target the line will show, taken before the request is consumed; `None` when no
    /// line is written, so the common path builds no string. `hapikey`: whether the query
    /// holds a key, whose value the line shows as `REDACTED`.
    pub(crate) fn target(&self, uri: &Uri, hapikey: bool) -> Option<String> {
        let write = self.on || tracing::enabled!(target: TARGET, tracing::Level::DEBUG);
        write.then(|| loggable_target(uri, hapikey))
    }

    pub(crate) fn write(
        &self,
        account: &str,
        method: &Method,
        target: &str,
        response: &Response<ProxyBody>,
        elapsed: Duration,
    ) {
        let correlation_id = response
            .headers()
            .get("x-hubspot-correlation-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let status = response.status().as_u16();
        let duration_ms = elapsed.as_secs_f64() * 1000.0;
        if self.on {
            tracing::info!(target: TARGET, account, %method, path = target, status, duration_ms, correlation_id, "request");
        } else {
            tracing::debug!(target: TARGET, account, %method, path = target, status, duration_ms, correlation_id, "request");
        }
    }
}

/// Path and query for logs, with any hapikey value replaced by `REDACTED`.
fn loggable_target(uri: &Uri, hapikey: bool) -> String {
    match uri.query() {
        Some(query) if hapikey => format!("{}?{}", uri.path(), hapikey::redacted(query)),
        Some(query) => format!("{}?{query}", uri.path()),
        None => uri.path().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(uri: &str) -> String {
        let uri: Uri = uri.parse().unwrap();
        let hapikey = uri.query().is_some_and(hapikey::present);
        loggable_target(&uri, hapikey)
    }

    #[test]
    fn the_logged_target_never_shows_a_key() {
        assert_eq!(target("/crm/v3/objects"), "/crm/v3/objects");
        assert_eq!(target("/a?count=1"), "/a?count=1");
        assert_eq!(
            target("/a?HAPIKEY=secret&count=1"),
            "/a?HAPIKEY=REDACTED&count=1"
        );
        assert_eq!(target("/a?h%61pikey=secret"), "/a?h%61pikey=REDACTED");
    }
}
