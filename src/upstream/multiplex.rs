//! One multiplexed h2 connection per worker to HubSpot: dialled by one request at a time, shared
//! by every request, and replaced by a single dial when it goes away.
//!
//! hyper-util's pooled client cannot know before the TLS handshake whether ALPN will pick h2, so
//! it dials once per waiting request: when a busy connection was recycled (GOAWAY), a worker
//! opened one TLS connection per queued request (128 at once in one run). Here the dial is
//! single-flight, and requests wait for it and then multiplex on its result.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::Connection;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower_service::Service;

use crate::body::{BoxError, OutboundBody};
use crate::egress::Connector;
use crate::error::ProxyError;
use crate::metrics::UpstreamErrorKind;

/// Pings an h2 connection while requests are open on it, so a dead peer is found within
/// interval + timeout rather than at the request deadline.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a request goes.
pub(super) enum Route {
    /// Onto the worker's h2 connection; `generation` names that connection.
    H2 {
        sender: SendRequest<OutboundBody>,
        generation: u64,
    },
    /// HubSpot's edge chose http/1.1 in ALPN: the pooled client carries it.
    Http1,
}

pub(super) struct Multiplexed {
    connector: HttpsConnector<Connector>,
    base: Uri,
    current: Mutex<Option<(u64, SendRequest<OutboundBody>)>>,
    generations: AtomicU64,
    /// Held while dialling, so waiting requests share one dial.
    dialling: tokio::sync::Mutex<()>,
    /// Dials begun so far, and how the last one failed: requests that waited on a failed dial
    /// share its answer instead of each dialling in turn (HubSpot down must not mean one
    /// connect timeout per queued request, one after another).
    dials: AtomicU64,
    failed_dial: Mutex<Option<UpstreamErrorKind>>,
    /// Sticky once the edge picks http/1.1.
    http1: AtomicBool,
}

impl Multiplexed {
    pub(super) fn new(connector: HttpsConnector<Connector>, base: Uri) -> Multiplexed {
        Multiplexed {
            connector,
            base,
            current: Mutex::new(None),
            generations: AtomicU64::new(0),
            dialling: tokio::sync::Mutex::new(()),
            dials: AtomicU64::new(0),
            failed_dial: Mutex::new(None),
            http1: AtomicBool::new(false),
        }
    }

    /// The open h2 connection, or the one this call (or a concurrent one) dials.
    pub(super) async fn route(&self) -> Result<Route, ProxyError> {
        match self.ready() {
            Some(route) => Ok(route),
            // Boxed: the dial holds the TCP, TLS and h2 handshakes, kilobytes of future that
            // every request's future would otherwise carry, and copy, for a rare event.
            None => Box::pin(self.dial_once()).await,
        }
    }

    /// Dials, unless a concurrent caller did meanwhile: then its connection, or its failure.
    async fn dial_once(&self) -> Result<Route, ProxyError> {
        let dials_before = self.dials.load(Ordering::SeqCst);
        let _dialling = self.dialling.lock().await;
        if let Some(route) = self.ready() {
            return Ok(route);
        }
        if self.dials.load(Ordering::SeqCst) != dials_before {
            if let Some(kind) = *self.failed_dial.lock().unwrap() {
                return Err(ProxyError::UpstreamUnreachable { kind });
            }
        }
        self.dials.fetch_add(1, Ordering::SeqCst);
        let dialled = self.dial().await;
        *self.failed_dial.lock().unwrap() = match &dialled {
            Err(ProxyError::UpstreamUnreachable { kind }) => Some(*kind),
            Err(_) => Some(UpstreamErrorKind::Connect),
            Ok(_) => None,
        };
        dialled
    }

    async fn dial(&self) -> Result<Route, ProxyError> {
        self.handshake()
            .await
            .map_err(|e| super::classify(&*e, true))
    }

    async fn handshake(&self) -> Result<Route, BoxError> {
        let io = self.connector.clone().call(self.base.clone()).await?;
        if !io.connected().is_negotiated_h2() {
            tracing::info!("HubSpot's edge chose http/1.1; using pooled HTTP/1.1 connections");
            self.http1.store(true, Ordering::Relaxed);
            return Ok(Route::Http1);
        }
        let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
            .handshake(io)
            .await?;
        // The connection task ends when HubSpot closes it (after GOAWAY, once its streams are
        // done) or when the last sender is dropped.
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "upstream h2 connection ended");
            }
        });
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        *self.current.lock().unwrap() = Some((generation, sender.clone()));
        Ok(Route::H2 { sender, generation })
    }

    fn ready(&self) -> Option<Route> {
        if self.http1.load(Ordering::Relaxed) {
            return Some(Route::Http1);
        }
        let current = self.current.lock().unwrap();
        let (generation, sender) = current.as_ref().filter(|(_, s)| s.is_ready())?;
        Some(Route::H2 {
            sender: sender.clone(),
            generation: *generation,
        })
    }

    /// Stops handing out connection `generation` (it refused a stream or is going away); the
    /// next request dials its replacement.
    pub(super) fn retire(&self, generation: u64) {
        let mut current = self.current.lock().unwrap();
        if current.as_ref().is_some_and(|(g, _)| *g == generation) {
            *current = None;
        }
    }
}

/// Sends on an h2 connection; the h2 layer sets `:authority` from the absolute URI.
pub(super) async fn send(
    mut sender: SendRequest<OutboundBody>,
    mut request: Request<OutboundBody>,
) -> Result<Response<Incoming>, hyper::Error> {
    *request.version_mut() = http::Version::HTTP_2;
    sender.ready().await?;
    sender.send_request(request).await
}
