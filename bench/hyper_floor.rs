//! The load benchmark's hyper floor: the least forwarder that can be built on the crates this
//! project is built on (hyper's HTTP/1.1 server, hyper's client connections, tokio, rustls), with
//! no features. Where `bench/floor.rs` shows what the machine allows, this shows what the stack
//! allows: no proxy built on hyper's server does less work per request than this. Not a product:
//! no limits, no timeouts, no error answers beyond a bare 502.
//!
//!   cargo run --release --example hyper_floor -- LISTEN http://UPSTREAM BEARER
//!   cargo run --release --example hyper_floor -- LISTEN https://UPSTREAM BEARER CA_PEM
//!
//! Thread per core like the proxy: each worker has a current-thread runtime and accepts on a
//! duplicate of one listening socket. Over plain HTTP each client connection owns one upstream
//! HTTP/1.1 connection (no pool to consult at all); over TLS each worker holds one h2 connection,
//! offered h2 only in ALPN, that all its client connections share, dialled again once it closes
//! (the upstream ends idle connections).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONNECTION, HOST};
use http::{HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::{combinators::BoxBody, BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
use tokio::net::{TcpListener, TcpStream};

type Answer = Response<BoxBody<Bytes, hyper::Error>>;

/// What every worker shares: the upstream, and the two header values it sets.
struct Target {
    upstream: SocketAddr,
    authority: http::uri::Authority,
    host: HeaderValue,
    bearer: HeaderValue,
    tls: Option<tokio_rustls::TlsConnector>,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (listen, upstream, bearer, ca) = match args.as_slice() {
        [l, u, b] => (l, u, b, None),
        [l, u, b, ca] => (l, u, b, Some(ca)),
        _ => usage(),
    };
    let uri: Uri = upstream.parse().unwrap_or_else(|_| usage());
    let authority = uri.authority().cloned().unwrap_or_else(|| usage());
    let mut bearer = HeaderValue::from_str(&format!("Bearer {bearer}")).unwrap_or_else(|_| usage());
    bearer.set_sensitive(true);
    let target = Arc::new(Target {
        upstream: authority.as_str().parse().unwrap_or_else(|_| usage()),
        host: HeaderValue::from_str(authority.as_str()).unwrap_or_else(|_| usage()),
        authority,
        bearer,
        tls: (uri.scheme_str() == Some("https")).then(|| connector(ca.unwrap_or_else(|| usage()))),
    });
    let listener = std::net::TcpListener::bind(listen.as_str()).expect("LISTEN is free");
    listener
        .set_nonblocking(true)
        .expect("non-blocking listener");
    let workers: Vec<_> = (0..std::thread::available_parallelism().map_or(1, |n| n.get()))
        .map(|_| {
            let (listener, target) = (listener.try_clone().expect("dup"), target.clone());
            std::thread::spawn(move || worker(listener, target))
        })
        .collect();
    for worker in workers {
        let _ = worker.join();
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: hyper_floor LISTEN http://UPSTREAM BEARER | LISTEN https://UPSTREAM BEARER CA_PEM"
    );
    std::process::exit(2)
}

fn connector(ca: &str) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("CA_PEM is readable") {
        roots
            .add(cert.expect("CA_PEM holds certificates"))
            .expect("a CA certificate");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

fn worker(listener: std::net::TcpListener, target: Arc<Target>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let listener = TcpListener::from_std(listener).expect("listener");
        let shared = target.tls.is_some().then(|| Arc::new(Mutex::new(None)));
        loop {
            let Ok((client, _)) = listener.accept().await else {
                continue;
            };
            let _ = client.set_nodelay(true);
            let (target, shared) = (target.clone(), shared.clone());
            tokio::spawn(async move {
                let upstream = match shared {
                    Some(h2) => Upstream::H2(h2),
                    None => match dial_h1(target.upstream).await {
                        Some(h1) => Upstream::H1(Arc::new(Mutex::new(Some(h1)))),
                        None => return,
                    },
                };
                let service =
                    service_fn(move |request| forward(request, target.clone(), upstream.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(client), service)
                    .await;
            });
        }
    });
}

#[derive(Clone)]
enum Upstream {
    /// This client connection's own; taken out while a request uses it.
    H1(Arc<Mutex<Option<http1::SendRequest<Incoming>>>>),
    /// The worker's h2 connection, once dialled.
    H2(Arc<Mutex<Option<http2::SendRequest<Incoming>>>>),
}

async fn dial_h1(upstream: SocketAddr) -> Option<http1::SendRequest<Incoming>> {
    let stream = TcpStream::connect(upstream).await.ok()?;
    stream.set_nodelay(true).ok()?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::spawn(connection);
    Some(sender)
}

/// The worker's open h2 connection, or a new one if it has none or the upstream closed it
/// (requests that find it closed at the same moment may each dial one; the last one stays).
async fn h2_sender(
    shared: &Mutex<Option<http2::SendRequest<Incoming>>>,
    target: &Target,
) -> Option<http2::SendRequest<Incoming>> {
    if let Some(open) = shared.lock().expect("one thread").as_ref() {
        if !open.is_closed() {
            return Some(open.clone());
        }
    }
    let fresh = dial_h2(target).await?;
    *shared.lock().expect("one thread") = Some(fresh.clone());
    Some(fresh)
}

async fn dial_h2(target: &Target) -> Option<http2::SendRequest<Incoming>> {
    let tls = target.tls.as_ref()?;
    let stream = TcpStream::connect(target.upstream).await.ok()?;
    stream.set_nodelay(true).ok()?;
    let name = ServerName::try_from("localhost").expect("a valid name");
    let stream = tls.connect(name, stream).await.ok()?;
    let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(connection);
    Some(sender)
}

async fn forward(
    request: Request<Incoming>,
    target: Arc<Target>,
    upstream: Upstream,
) -> Result<Answer, hyper::Error> {
    let (mut parts, body) = request.into_parts();
    parts.headers.remove(CONNECTION);
    parts.headers.insert(AUTHORIZATION, target.bearer.clone());
    let sent = match upstream {
        Upstream::H1(slot) => {
            parts.headers.insert(HOST, target.host.clone());
            let Some(mut sender) = slot.lock().expect("one user").take() else {
                return Ok(bad_gateway());
            };
            if sender.ready().await.is_err() {
                return Ok(bad_gateway());
            }
            let response = sender.send_request(Request::from_parts(parts, body));
            *slot.lock().expect("one user") = Some(sender);
            response.await
        }
        Upstream::H2(shared) => {
            parts.headers.remove(HOST);
            let path = parts.uri.path_and_query().cloned();
            let mut uri = Uri::builder()
                .scheme("https")
                .authority(target.authority.clone());
            if let Some(path) = path {
                uri = uri.path_and_query(path);
            }
            parts.uri = uri.build().expect("an absolute URI");
            parts.version = http::Version::HTTP_2;
            let Some(mut sender) = h2_sender(&shared, &target).await else {
                return Ok(bad_gateway());
            };
            if sender.ready().await.is_err() {
                return Ok(bad_gateway());
            }
            sender.send_request(Request::from_parts(parts, body)).await
        }
    };
    Ok(match sent {
        Ok(response) => response.map(|body| body.boxed()),
        Err(_) => bad_gateway(),
    })
}

fn bad_gateway() -> Answer {
    let mut answer = Response::new(Empty::new().map_err(|never| match never {}).boxed());
    *answer.status_mut() = StatusCode::BAD_GATEWAY;
    answer
}
