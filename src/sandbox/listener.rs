//! The stand-in's listener: plain HTTP (HTTP/1.1 + h2c) or TLS with ALPN, like HubSpot's edge,
//! counting the connections it accepts and optionally recycling each one after N requests.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderValue, Request, Response, Version};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio_rustls::TlsAcceptor;

use crate::body::ProxyBody;

/// Which protocols the stand-in's TLS offers in ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// `h2` then `http/1.1`, as api.hubapi.com does.
    H2AndHttp1,
    /// Only `http/1.1`, for an edge that never speaks h2.
    Http1Only,
}

/// A throwaway CA and a leaf for `127.0.0.1` and `localhost` signed by it.
pub(super) struct Certificates {
    pub(crate) ca_pem: String,
    leaf: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl Certificates {
    pub(super) fn generate() -> Result<Certificates, rcgen::Error> {
        let ca_key = rcgen::KeyPair::generate()?;
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "HubSpot stand-in test CA");
        let ca = ca_params.self_signed(&ca_key)?;
        let leaf_key = rcgen::KeyPair::generate()?;
        let leaf_params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
        let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key)?;
        Ok(Certificates {
            ca_pem: ca.pem(),
            leaf: leaf.der().clone(),
            key: PrivatePkcs8KeyDer::from(leaf_key.serialize_der()),
        })
    }

    pub(super) fn acceptor(&self, alpn: Alpn) -> Result<TlsAcceptor, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(
                vec![self.leaf.clone()],
                PrivateKeyDer::Pkcs8(self.key.clone_key()),
            )?;
        config.alpn_protocols = match alpn {
            Alpn::H2AndHttp1 => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            Alpn::Http1Only => vec![b"http/1.1".to_vec()],
        };
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

/// What the accept loop needs besides the handler.
pub(super) struct Listening {
    pub(crate) tls: Option<TlsAcceptor>,
    /// Close each connection once it has answered this many requests: `Connection: close` on
    /// HTTP/1.1, a graceful GOAWAY on h2 (what nginx's `keepalive_requests` does).
    pub(crate) recycle_after: Option<usize>,
    pub(crate) accepted: Arc<AtomicUsize>,
    /// Connections accepted and not yet closed.
    pub(crate) open: Arc<AtomicUsize>,
}

/// Counts a connection open until dropped.
struct Open(Arc<AtomicUsize>);

impl Open {
    fn count(open: &Arc<AtomicUsize>) -> Open {
        open.fetch_add(1, Ordering::SeqCst);
        Open(open.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Serves until `stop` turns true; open connections are then dropped.
pub(super) async fn serve<H, F>(
    listener: TcpListener,
    listening: Listening,
    handler: H,
    mut stop: watch::Receiver<bool>,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let listening = Arc::new(listening);
    loop {
        let stream = tokio::select! {
            _ = stopped(&mut stop) => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        listening.accepted.fetch_add(1, Ordering::SeqCst);
        let open = Open::count(&listening.open);
        let _ = stream.set_nodelay(true);
        let (listening, handler, stop) = (listening.clone(), handler.clone(), stop.clone());
        tokio::spawn(async move {
            let _open = open;
            match &listening.tls {
                None => connection(stream, listening.recycle_after, handler, stop).await,
                Some(acceptor) => {
                    let handshake = acceptor.accept(stream);
                    if let Ok(Ok(tls)) =
                        tokio::time::timeout(Duration::from_secs(10), handshake).await
                    {
                        connection(tls, listening.recycle_after, handler, stop).await;
                    }
                }
            }
        });
    }
}

async fn connection<I, H, F>(
    io: I,
    recycle_after: Option<usize>,
    handler: H,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let served = Arc::new(AtomicUsize::new(0));
    let recycle = Arc::new(Notify::new());
    let service = {
        let (served, recycle) = (served.clone(), recycle.clone());
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let version = request.version();
            let nth = served.fetch_add(1, Ordering::SeqCst) + 1;
            let last = recycle_after.is_some_and(|n| nth == n);
            let response = handler(request);
            let recycle = recycle.clone();
            async move {
                let mut response = response.await;
                if last {
                    if version == Version::HTTP_2 {
                        // GOAWAY now: streams the client opened after this one are refused.
                        recycle.notify_one();
                    } else {
                        response
                            .headers_mut()
                            .insert(header::CONNECTION, HeaderValue::from_static("close"));
                    }
                }
                Ok::<_, Infallible>(response)
            }
        })
    };
    // Roomy limits: the proxy's own caps are what the tests probe, not the stand-in's.
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .max_headers(400)
        .max_buf_size(400 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(128 * 1024);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        _ = stopped(&mut stop) => return,
        _ = recycle.notified() => connection.as_mut().graceful_shutdown(),
    }
    // The streams opened before the GOAWAY finish; the stand-in stopping ends them too.
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = stopped(&mut stop) => {}
    }
}

/// Resolves once `stop` turns true (or its sender is gone), holding no borrow of it.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}
