//! The upstream client over rustls (webpki roots plus an optional CA file): one multiplexed h2
//! connection per worker when HubSpot's edge speaks h2, else the worker's own HTTP/1.1
//! connections.

mod http1;
mod multiplex;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::body::{self, OutboundBody, OutboundFault, Reuse, Slot};
use crate::egress::{proxy_for, Connector};
use crate::error::ProxyError;
use crate::metrics::{SlotMetrics, UpstreamErrorKind};
use crate::settings::UpstreamSettings;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamBuildError {
    #[error("upstream.ca_file: cannot load {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("upstream TLS setup failed: {0}")]
    Tls(String),
    #[error("{0}")]
    Proxy(String),
}

/// A request HubSpot provably never processed is sent again at most this many times.
const MAX_UNPROCESSED_RESENDS: u32 = 3;

pub(crate) struct Upstream {
    http1: http1::Http1,
    /// Only for an `https` base URL: plain HTTP is never h2 here (no h2c prior knowledge).
    multiplexed: Option<multiplex::Multiplexed>,
    scheme: Scheme,
    authority: Authority,
    timeout: Duration,
    slots: Arc<Semaphore>,
    slot_metrics: SlotMetrics,
}

impl Upstream {
    /// One worker's client, with `slots` of `upstream.max_connections` (its exact share).
    pub(crate) fn new(
        config: &UpstreamSettings,
        slots: usize,
        slot_metrics: SlotMetrics,
    ) -> Result<Upstream, UpstreamBuildError> {
        let base = &config.base;
        let tls = tls_config(config.ca_file.as_deref())?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(config.connect_timeout));
        http.set_keepalive(Some(Duration::from_secs(60)));
        let egress =
            proxy_for(config.proxy_url.as_deref(), &base.uri).map_err(UpstreamBuildError::Proxy)?;
        let connector = Connector::new(http, egress);
        // The HTTP/1.1 connections offer only http/1.1 in ALPN, so they never land on h2.
        let http1_only = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls.clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector.clone());
        let multiplexed = (base.scheme == Scheme::HTTPS).then(|| {
            let h2_or_http1 = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls)
                .https_or_http()
                .enable_http1()
                .enable_http2()
                .wrap_connector(connector);
            multiplex::Multiplexed::new(h2_or_http1, base.uri.clone())
        });
        let http1 = http1::Http1::new(
            http1_only,
            base.uri.clone(),
            config.pool_idle_timeout,
            config.pool_max_idle_per_host,
        );
        Ok(Upstream {
            http1,
            multiplexed,
            scheme: base.scheme.clone(),
            authority: base.authority.clone(),
            timeout: config.timeout,
            slots: Arc::new(Semaphore::new(slots)),
            slot_metrics,
        })
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// HubSpot's URL for a client's request: only the path and query are kept, byte for byte.
    /// Whatever authority an absolute-form request names is dropped, so the proxy can never
    /// be used to reach another host.
    pub(crate) fn target(&self, uri: Uri) -> Result<Uri, ProxyError> {
        let path_and_query = match uri.into_parts().path_and_query {
            Some(pq) if pq.as_str().starts_with('/') => pq,
            Some(_) => return Err(ProxyError::BadRequest("The request target must be a path.")),
            None => PathAndQuery::from_static("/"),
        };
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(path_and_query);
        Uri::from_parts(parts).map_err(|_| ProxyError::BadRequest("The request target is invalid."))
    }

    /// Waits for a free slot, then sends; both within the request's deadline. A request HubSpot
    /// provably never processed (refused, or above a GOAWAY's last stream) goes again on a
    /// fresh connection, whatever its method, as `again()` rebuilds it from the kept copy;
    /// the slot is kept, and `resent` counts each time.
    pub(crate) async fn send(
        &self,
        request: Request<OutboundBody>,
        again: impl Fn() -> Option<Request<OutboundBody>>,
        resent: impl Fn(),
        deadline: Instant,
    ) -> Result<(Response<Incoming>, Slot), ProxyError> {
        let body_fault = body::fault_cell(request.body());
        let exchange = async {
            let mut slot = self.take_slot().await;
            let mut request = request;
            let mut resends = 0;
            loop {
                match self.exchange(request).await {
                    Err(e) if e.unprocessed && resends < MAX_UNPROCESSED_RESENDS => {
                        let Some(copy) = again() else {
                            return Err(e.error);
                        };
                        resends += 1;
                        resent();
                        request = copy;
                    }
                    Err(e) => return Err(e.error),
                    Ok((response, reuse)) => {
                        slot.reuse(reuse);
                        return Ok((response, slot));
                    }
                }
            }
        };
        match tokio::time::timeout_at(deadline, exchange).await {
            // A body the client failed to deliver is the client's fault, not HubSpot's: the body
            // records it (over h2, hyper drops the body's error and reports a reset stream).
            Ok(Err(error)) => Err(body_fault
                .as_deref()
                .and_then(|cell| cell.get())
                .map_or(error, |fault| (*fault).into())),
            Ok(result) => result,
            Err(_) => Err(ProxyError::UpstreamTimeout {
                secs: self.timeout.as_secs(),
            }),
        }
    }

    /// One attempt: on the worker's h2 connection, or on one of its HTTP/1.1 connections,
    /// which an answer hands back for reuse once its body is read.
    async fn exchange(
        &self,
        request: Request<OutboundBody>,
    ) -> Result<(Response<Incoming>, Option<Reuse>), Failed> {
        let route = match &self.multiplexed {
            Some(multiplexed) => multiplexed.route().await.map_err(Failed::dialling)?,
            None => multiplex::Route::Http1,
        };
        match route {
            multiplex::Route::Http1 => {
                let (response, reuse) = self.http1.send(request).await?;
                Ok((response, Some(reuse)))
            }
            multiplex::Route::H2 { sender, generation } => {
                let response = multiplex::send(sender, request).await.map_err(|e| {
                    let failed = Failed::sending(&e);
                    if failed.unprocessed || e.is_closed() {
                        if let Some(m) = &self.multiplexed {
                            m.retire(generation);
                        }
                    }
                    failed
                })?;
                Ok((response, None))
            }
        }
    }

    /// A free slot at once, or the next one freed; a wait is counted.
    async fn take_slot(&self) -> Slot {
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                self.slot_metrics.waited();
                let acquired = self.slots.clone().acquire_owned().await;
                acquired.expect("the semaphore is never closed")
            }
        };
        Slot::new(permit, self.slot_metrics.held())
    }
}

/// A failed attempt, and whether HubSpot provably never processed it.
struct Failed {
    unprocessed: bool,
    error: ProxyError,
}

impl Failed {
    /// No connection could be had: nothing was sent.
    fn dialling(error: ProxyError) -> Failed {
        Failed {
            unprocessed: false,
            error,
        }
    }

    /// The exchange failed on an open connection.
    fn sending(error: &hyper::Error) -> Failed {
        Failed {
            unprocessed: never_processed(error),
            error: classify(error, false),
        }
    }
}

/// Whether the upstream provably never processed the request, so any method may go again
/// (RFC 9113 §8.7): a stream refused with REFUSED_STREAM, or one above the last stream id of a
/// graceful GOAWAY (h2 fails exactly those, and streams opened after it, with the remote
/// NO_ERROR GOAWAY; an error GOAWAY is also handed to streams it may have processed, so it is
/// not trusted); or hyper's "canceled": the request was never written to the connection.
fn never_processed(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(e) = source {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            let reason = h2.reason();
            return h2.is_remote()
                && ((h2.is_go_away() && reason == Some(h2::Reason::NO_ERROR))
                    || (h2.is_reset() && reason == Some(h2::Reason::REFUSED_STREAM)));
        }
        if e.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_canceled)
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// Sorts a failed exchange into what the client is told and what the metrics count.
fn classify(error: &(dyn std::error::Error + 'static), is_connect: bool) -> ProxyError {
    let mut timed_out = false;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(fault) = OutboundFault::of(e) {
            return fault.into();
        }
        if e.downcast_ref::<rustls::Error>().is_some() {
            return unreachable(UpstreamErrorKind::Tls);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            timed_out |= io.kind() == std::io::ErrorKind::TimedOut;
            if wraps_tls_error(io) {
                return unreachable(UpstreamErrorKind::Tls);
            }
        }
        source = e.source();
    }
    match (is_connect, timed_out) {
        (_, true) => ProxyError::UpstreamUnreachable {
            kind: UpstreamErrorKind::Timeout,
        },
        (true, false) => unreachable(UpstreamErrorKind::Connect),
        (false, false) => unreachable(UpstreamErrorKind::Protocol),
    }
}

/// tokio-rustls wraps a handshake failure in an io::Error (and the connector wraps that in
/// another); `source()` skips the error an io::Error wraps, so unwrap them by hand.
fn wraps_tls_error(io: &std::io::Error) -> bool {
    let mut inner = io.get_ref();
    while let Some(e) = inner {
        if e.is::<rustls::Error>() {
            return true;
        }
        inner = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref());
    }
    false
}

fn unreachable(kind: UpstreamErrorKind) -> ProxyError {
    ProxyError::UpstreamUnreachable { kind }
}

fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, UpstreamBuildError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        for cert in load_pem_certs(path)? {
            roots.add(cert).map_err(|e| ca_error(path, e.to_string()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| UpstreamBuildError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

pub(crate) fn load_pem_certs(
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, UpstreamBuildError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| ca_error(path, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ca_error(path, e.to_string()))?;
    if certs.is_empty() {
        return Err(ca_error(path, "no PEM certificates in the file".into()));
    }
    Ok(certs)
}

fn ca_error(path: &Path, reason: String) -> UpstreamBuildError {
    UpstreamBuildError::CaFile {
        path: path.display().to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hubspot() -> Upstream {
        let settings = crate::settings::Settings::for_tests("");
        let metrics = crate::metrics::Metrics::new();
        Upstream::new(&settings.upstream, 1, metrics.upstream_slots().clone()).unwrap()
    }

    /// hyper keeps a request's future for as long as the request is in flight, so the dials
    /// (TCP, TLS and h2 handshakes, needed only when no connection is open) are boxed out of
    /// it. Inline, they made this future 8.5 KB (and the whole request's 19 KB); boxed, 2.7 KB.
    #[test]
    fn the_send_future_leaves_the_dials_out() {
        let upstream = hubspot();
        let request = Request::new(body::kept(bytes::Bytes::new()));
        let deadline = Instant::now() + Duration::from_secs(1);
        let sending = upstream.send(request, || None, || {}, deadline);
        let size = std::mem::size_of_val(&sending);
        assert!(size < 4096, "the send future is {size} bytes");
    }

    fn target(uri: &str) -> Result<String, &'static str> {
        hubspot()
            .target(uri.parse().unwrap())
            .map(|u| u.to_string())
            .map_err(|e| e.category())
    }

    #[test]
    fn target_keeps_path_and_query_and_drops_any_authority() {
        let base = crate::config::UpstreamConfig::default().base_url;
        assert_eq!(base, "https://api.hubapi.com");
        let base = base.trim_end_matches('/');
        assert_eq!(
            target("/crm/v3/objects/contacts?limit=5&a=%2F"),
            Ok(format!("{base}/crm/v3/objects/contacts?limit=5&a=%2F"))
        );
        // Absolute form naming another host: only its path and query are kept.
        assert_eq!(
            target("http://169.254.169.254/latest/meta-data?x=1"),
            Ok(format!("{base}/latest/meta-data?x=1"))
        );
        assert_eq!(target("http://example.com"), Ok(format!("{base}/")));
        assert_eq!(target("*"), Err("PROXY_BAD_REQUEST"), "asterisk form");
    }
}
