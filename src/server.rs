//! Listeners: accept loops, optional TLS, the HTTP/1.1 + h2 connection builder, and draining.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::body::ProxyBody;
use crate::tls::SharedAcceptor;

/// Per-connection settings that protect the listener from slow or oversized clients.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionLimits {
    /// Also bounds the TLS handshake.
    pub(crate) header_read_timeout: Duration,
    /// hyper's own hard caps sit above the handler's 431 checks, so that clients
    /// normally get the JSON answer and only absurd requests are cut off by hyper.
    pub(crate) max_header_count: usize,
    pub(crate) max_header_bytes: usize,
}

impl ConnectionLimits {
    fn builder(&self) -> auto::Builder<TokioExecutor> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            .max_headers(self.max_header_count * 2)
            .max_buf_size((self.max_header_bytes * 2).max(400 * 1024));
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(self.max_header_bytes * 2).unwrap_or(u32::MAX));
        builder
    }
}

pub(crate) async fn bind(addr: SocketAddr, what: &'static str) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { what, addr, source })
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} ({what}): {source}")]
pub struct BindError {
    pub(crate) what: &'static str,
    pub(crate) addr: SocketAddr,
    pub(crate) source: std::io::Error,
}

/// What every connection task shares.
struct Shared<H> {
    builder: auto::Builder<TokioExecutor>,
    handler: H,
    tls: Option<SharedAcceptor>,
    handshake_timeout: Duration,
}

/// Serves `listener` until `stop` turns true, then lets open connections finish for up to `grace`.
pub(crate) async fn serve<H, F>(
    listener: TcpListener,
    handler: H,
    limits: ConnectionLimits,
    tls: Option<SharedAcceptor>,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let shared = Arc::new(Shared {
        builder: limits.builder(),
        handler,
        tls,
        handshake_timeout: limits.header_read_timeout,
    });
    // Each connection task holds a sender; when all are dropped, every connection has ended.
    let (alive, mut all_closed) = mpsc::channel::<()>(1);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.wait_for(|stopped| *stopped) => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Usually EMFILE: back off instead of spinning, and keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        tokio::spawn(connection(
            shared.clone(),
            stream,
            peer,
            stop.clone(),
            alive.clone(),
        ));
    }
    drop(listener);
    drop(alive);
    if tokio::time::timeout(grace, all_closed.recv())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_secs = grace.as_secs(),
            "shutdown grace period over; closing remaining connections"
        );
    }
}

async fn connection<H, F>(
    shared: Arc<Shared<H>>,
    stream: TcpStream,
    peer: SocketAddr,
    stop: watch::Receiver<bool>,
    _alive: mpsc::Sender<()>,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    // Small JSON exchanges dominate; Nagle would add up to 40 ms to each.
    let _ = stream.set_nodelay(true);
    match &shared.tls {
        None => drive(&shared, stream, peer, stop).await,
        // Boxed: a task is as large as its largest state, and the TLS states (the handshake,
        // the TLS stream) would otherwise make every plaintext connection pay for them.
        Some(acceptor) => Box::pin(drive_tls(&shared, acceptor, stream, peer, stop)).await,
    }
}

/// The TLS handshake, bounded like a header read, then the connection over TLS.
async fn drive_tls<H, F>(
    shared: &Shared<H>,
    acceptor: &SharedAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    stop: watch::Receiver<bool>,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let acceptor = acceptor.load_full();
    match tokio::time::timeout(shared.handshake_timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => drive(shared, tls, peer, stop).await,
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
    }
}

/// Serves one connection; on shutdown, lets its current request finish, then closes it.
async fn drive<H, F, I>(
    shared: &Shared<H>,
    io: I,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<ProxyBody>> + Send + 'static,
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let handler = shared.handler.clone();
    let service = hyper::service::service_fn(move |request| {
        let response = handler(request, peer);
        async move { Ok::<_, Infallible>(response.await) }
    });
    let connection = shared.builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let finished = tokio::select! {
        result = connection.as_mut() => Some(result),
        _ = stop.wait_for(|stopped| *stopped) => None,
    };
    let result = match finished {
        Some(result) => result,
        None => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
