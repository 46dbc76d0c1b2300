//! Limits checked before anything is sent upstream: the method, Host, framing and header size
//! a request may have, and the body size and idle time `replay::outbound` enforces.

use http::{header, HeaderMap, Method, Request, Version};

use crate::body::BodyLimits;
use crate::error::ProxyError;
use crate::settings::ServerSettings;

/// Limits checked before anything is sent upstream.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestLimits {
    pub(crate) max_body_bytes: u64,
    pub(crate) max_header_count: usize,
    pub(crate) max_header_bytes: usize,
    pub(crate) body_read_timeout: std::time::Duration,
}

impl RequestLimits {
    pub(crate) fn from_settings(server: &ServerSettings) -> Self {
        RequestLimits {
            max_body_bytes: server.max_body_bytes,
            max_header_count: server.max_header_count,
            max_header_bytes: server.max_header_bytes,
            body_read_timeout: server.body_read_timeout,
        }
    }

    pub(super) fn body(&self) -> BodyLimits {
        BodyLimits {
            max_bytes: self.max_body_bytes,
            idle: self.body_read_timeout,
        }
    }

    pub(super) fn check<B>(&self, request: &Request<B>) -> Result<(), ProxyError> {
        if request.method() == Method::CONNECT {
            return Err(ProxyError::ConnectNotAllowed);
        }
        // RFC 9112 §3.2: a request with more than one Host is answered 400; two Hosts are a
        // request-smuggling tool when proxies disagree on which one counts. (Content-Length with
        // Transfer-Encoding needs no check here: hyper drops the Content-Length, decodes the
        // chunked body, and closes the connection after the answer.)
        if request
            .headers()
            .get_all(header::HOST)
            .iter()
            .nth(1)
            .is_some()
        {
            return Err(ProxyError::Smuggling(
                "The request has more than one Host header.",
            ));
        }
        // RFC 9112 §3.2: an HTTP/1.1 request without Host is answered 400 (h2 has :authority,
        // HTTP/1.0 predates Host).
        if request.version() == Version::HTTP_11 && !request.headers().contains_key(header::HOST) {
            return Err(ProxyError::BadRequest(
                "An HTTP/1.1 request needs a Host header.",
            ));
        }
        if !only_chunked(request.headers()) {
            return Err(ProxyError::BadRequest(
                "The request's Transfer-Encoding names a coding other than chunked; send a coded body with Content-Encoding instead.",
            ));
        }
        self.check_headers(request.headers())?;
        if declared_length(request.headers()).is_some_and(|len| len > self.max_body_bytes) {
            return Err(ProxyError::BodyTooLarge {
                limit: self.max_body_bytes,
            });
        }
        Ok(())
    }

    fn check_headers(&self, headers: &HeaderMap) -> Result<(), ProxyError> {
        let too_large = || ProxyError::HeadersTooLarge {
            max_count: self.max_header_count,
            max_bytes: self.max_header_bytes,
        };
        if headers.len() > self.max_header_count {
            return Err(too_large());
        }
        let bytes: usize = headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum();
        if bytes > self.max_header_bytes {
            return Err(too_large());
        }
        Ok(())
    }
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// RFC 9112 §6.1: true unless Transfer-Encoding names a coding besides `chunked`. hyper decodes
/// only the chunked framing and the header is hop-by-hop, so a coding beneath it (`gzip,
/// chunked`) would vanish and its coded bytes reach HubSpot as the plain body.
fn only_chunked(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .all(|value| {
            value.to_str().is_ok_and(|codings| {
                codings
                    .split(',')
                    .all(|c| c.trim().eq_ignore_ascii_case("chunked"))
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> RequestLimits {
        RequestLimits {
            max_body_bytes: 100,
            max_header_count: 4,
            max_header_bytes: 200,
            body_read_timeout: std::time::Duration::from_secs(1),
        }
    }

    fn request(method: Method, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder()
            .method(method)
            .uri("/crm/v3/objects/contacts");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    fn category(result: Result<(), ProxyError>) -> &'static str {
        result.err().map_or("ok", |e| e.category())
    }

    #[test]
    fn request_limits_check() {
        let l = limits();
        let host = ("host", "proxy");
        assert_eq!(category(l.check(&request(Method::GET, &[host]))), "ok");
        assert_eq!(
            category(l.check(&request(Method::CONNECT, &[host]))),
            "PROXY_METHOD_NOT_ALLOWED"
        );
        assert_eq!(
            category(l.check(&request(Method::GET, &[host, ("host", "other")]))),
            "PROXY_BAD_REQUEST",
            "two Hosts"
        );
        assert_eq!(
            category(l.check(&request(Method::GET, &[]))),
            "PROXY_BAD_REQUEST",
            "HTTP/1.1 without Host"
        );
        let mut h2 = request(Method::GET, &[]);
        *h2.version_mut() = Version::HTTP_2;
        assert_eq!(category(l.check(&h2)), "ok", "h2 carries :authority");
        let many: Vec<_> = (0..5).map(|_| ("x-n", "1")).collect();
        assert_eq!(
            category(l.check(&request(Method::GET, &[&[host][..], &many].concat()))),
            "PROXY_HEADERS_TOO_LARGE"
        );
        let long = "v".repeat(200);
        assert_eq!(
            category(l.check(&request(Method::GET, &[host, ("x-long", &long)]))),
            "PROXY_HEADERS_TOO_LARGE"
        );
        assert_eq!(
            category(l.check(&request(Method::POST, &[host, ("content-length", "101")]))),
            "PROXY_BODY_TOO_LARGE"
        );
        assert_eq!(
            category(l.check(&request(Method::POST, &[host, ("content-length", "100")]))),
            "ok"
        );
    }
}
