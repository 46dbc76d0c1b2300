//! Egress: whether HubSpot (and the token endpoint) is reached directly or through an HTTP
//! CONNECT proxy, from `upstream.proxy_url` or else HTTPS_PROXY / HTTP_PROXY / NO_PROXY.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower_service::Service;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The proxy to use for `target`, if any: the configured one (NO_PROXY still applies), else
/// the environment's.
pub(crate) fn proxy_for(
    proxy_url: Option<&str>,
    target: &Uri,
) -> Result<Option<(Uri, Option<http::HeaderValue>)>, String> {
    let matcher = match proxy_url {
        Some(url) => {
            url.parse::<Uri>()
                .ok()
                .filter(|u| u.scheme_str() == Some("http") && u.host().is_some())
                .ok_or_else(|| format!("upstream.proxy_url: {url:?} must be http://host:port"))?;
            let no_proxy = std::env::var("NO_PROXY")
                .or_else(|_| std::env::var("no_proxy"))
                .unwrap_or_default();
            Matcher::builder().all(url).no(no_proxy).build()
        }
        None => Matcher::from_env(),
    };
    Ok(matcher
        .intercept(target)
        .map(|i| (i.uri().clone(), i.basic_auth().cloned())))
}

/// Dials HubSpot directly or through a CONNECT tunnel; decided once, at startup.
#[derive(Clone)]
pub(crate) enum Connector {
    Direct(HttpConnector),
    Tunnel(Tunnel<HttpConnector>),
}

impl Connector {
    pub(crate) fn new(
        http: HttpConnector,
        proxy: Option<(Uri, Option<http::HeaderValue>)>,
    ) -> Connector {
        match proxy {
            None => Connector::Direct(http),
            Some((uri, auth)) => {
                let tunnel = Tunnel::new(uri, http);
                Connector::Tunnel(match auth {
                    Some(auth) => tunnel.with_auth(auth),
                    None => tunnel,
                })
            }
        }
    }
}

impl Service<Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    // One allocation per new connection, not per request.
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            Connector::Direct(c) => c.poll_ready(cx).map_err(Into::into),
            Connector::Tunnel(c) => c.poll_ready(cx).map_err(Into::into),
        }
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        match self {
            Connector::Direct(c) => {
                let f = c.call(dst);
                Box::pin(async move { f.await.map_err(Into::into) })
            }
            Connector::Tunnel(c) => {
                let f = c.call(dst);
                Box::pin(async move { f.await.map_err(Into::into) })
            }
        }
    }
}
