//! The worker's own HTTP/1.1 connections to HubSpot, on hyper's connection-level client.
//!
//! hyper-util's pooled client shares one pool behind a mutex and a hashed key, clones itself
//! per request, and spawns a task per response to put its connection back once the body is
//! read. A worker needs none of that: its connections never leave its thread. Here idle
//! connections are a plain stack (most recently used first), a connection goes back on it from
//! the response's [`Slot`](crate::body::Slot) when the body has been read to the end, and is
//! only ever reused between whole exchanges.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http::header::HOST;
use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_rustls::HttpsConnector;
use tokio::time::Instant;
use tower_service::Service;

use super::{classify, Failed};
use crate::body::{BoxError, Checkin, OutboundBody, Reuse};
use crate::egress::Connector;

pub(super) struct Http1 {
    connector: HttpsConnector<Connector>,
    base: Uri,
    /// `Host` as hyper-util wrote it: the host, and the port only when not the scheme's default.
    host: HeaderValue,
    idle: Arc<IdleConnections>,
}

impl Http1 {
    /// `connector` must offer only http/1.1 in ALPN: these connections never speak h2.
    pub(super) fn new(
        connector: HttpsConnector<Connector>,
        base: Uri,
        idle_timeout: Duration,
        max_idle: usize,
    ) -> Http1 {
        let host = host_header(&base);
        Http1 {
            connector,
            base,
            host,
            idle: IdleConnections::new(idle_timeout, max_idle),
        }
    }

    /// Sends on an idle connection, or a new one. A request an idle connection turned down
    /// unwritten (HubSpot closed it as it was picked) goes once more on a fresh connection, as
    /// hyper-util's pool did.
    pub(super) async fn send(
        &self,
        mut request: Request<OutboundBody>,
    ) -> Result<(Response<Incoming>, Reuse), Failed> {
        origin_form(&mut request);
        request
            .headers_mut()
            .entry(HOST)
            .or_insert_with(|| self.host.clone());
        if let Some(mut sender) = self.idle.checkout() {
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(self.answered(response, sender)),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(Failed::sending(&e.into_error())),
                },
            }
        }
        // Boxed: the dial holds the TCP and TLS handshakes, a large future that every request's
        // future would otherwise carry, and copy, though most requests find an idle connection.
        let mut sender = Box::pin(self.dial())
            .await
            .map_err(|e| Failed::dialling(classify(&*e, true)))?;
        match sender.send_request(request).await {
            Ok(response) => Ok(self.answered(response, sender)),
            Err(e) => Err(Failed::sending(&e)),
        }
    }

    /// The answer, and its connection to hand back once the body is read.
    fn answered(
        &self,
        response: Response<Incoming>,
        sender: SendRequest<OutboundBody>,
    ) -> (Response<Incoming>, Reuse) {
        let home: Arc<dyn Checkin> = self.idle.clone();
        (response, Reuse::new(home, sender))
    }

    async fn dial(&self) -> Result<SendRequest<OutboundBody>, BoxError> {
        let io = self.connector.clone().call(self.base.clone()).await?;
        let (sender, connection) = http1::Builder::new().handshake(io).await?;
        // Ends when HubSpot closes the connection, or once the last sender is dropped and the
        // exchange in flight is done.
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "upstream HTTP/1.1 connection ended");
            }
        });
        Ok(sender)
    }
}

/// The worker's idle connections, newest on top.
struct IdleConnections {
    stack: Mutex<Vec<(SendRequest<OutboundBody>, Instant)>>,
    /// `upstream.pool_idle_timeout_secs`: older idle connections are closed.
    timeout: Duration,
    /// `upstream.pool_max_idle_per_host`.
    max: usize,
    /// Whether a sweeper task is closing connections that stay idle past the timeout.
    sweeping: AtomicBool,
}

impl IdleConnections {
    fn new(timeout: Duration, max: usize) -> Arc<IdleConnections> {
        Arc::new(IdleConnections {
            stack: Mutex::new(Vec::new()),
            timeout,
            max,
            sweeping: AtomicBool::new(false),
        })
    }

    /// The newest idle connection that can take a request now; closed and expired ones are
    /// dropped on the way. One not ready yet stays: its connection task has not yet taken in
    /// the end of the last exchange (or, rarely, HubSpot answered before the request body was
    /// all sent).
    fn checkout(&self) -> Option<SendRequest<OutboundBody>> {
        let now = Instant::now();
        let mut stack = self.stack.lock().unwrap();
        let mut index = stack.len();
        while index > 0 {
            index -= 1;
            let (sender, since) = &stack[index];
            if sender.is_closed() || now.duration_since(*since) >= self.timeout {
                stack.remove(index);
            } else if sender.is_ready() {
                return Some(stack.remove(index).0);
            }
        }
        None
    }

    /// Closes the connections idle past the timeout (the oldest are at the bottom); when the
    /// next one expires, or `None` (and the sweeper stops) when none are left.
    fn sweep(&self) -> Option<Instant> {
        let now = Instant::now();
        let mut stack = self.stack.lock().unwrap();
        let expired = stack
            .iter()
            .take_while(|(_, since)| now.duration_since(*since) >= self.timeout)
            .count();
        stack.drain(..expired);
        let next = stack.first().map(|(_, since)| *since + self.timeout);
        // Under the lock: a connection handed back from here on starts a new sweeper.
        if next.is_none() {
            self.sweeping.store(false, Ordering::Relaxed);
        }
        next
    }

    /// Keeps closing expired connections while any are idle; ends when none are.
    fn start_sweeping(self: &Arc<Self>) {
        // Outside a runtime (a body dropped on another thread) there is nothing to sweep with;
        // checkout still drops the connection once it has expired.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.sweeping.swap(true, Ordering::Relaxed) {
            return;
        }
        let idle: Weak<IdleConnections> = Arc::downgrade(self);
        let mut next = Instant::now() + self.timeout;
        runtime.spawn(async move {
            loop {
                tokio::time::sleep_until(next).await;
                let Some(idle) = idle.upgrade() else { return };
                match idle.sweep() {
                    Some(at) => next = at,
                    None => return,
                }
            }
        });
    }
}

impl Checkin for IdleConnections {
    fn checkin(self: Arc<Self>, sender: SendRequest<OutboundBody>) {
        if sender.is_closed() || self.timeout.is_zero() {
            return;
        }
        {
            let mut stack = self.stack.lock().unwrap();
            if stack.len() >= self.max {
                return;
            }
            stack.push((sender, Instant::now()));
        }
        self.start_sweeping();
    }
}

/// HTTP/1.1 requests go out in origin form: the egress proxy, if any, is a CONNECT tunnel.
fn origin_form(request: &mut Request<OutboundBody>) {
    let path = request
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    *request.uri_mut() = Uri::from(path);
}

fn host_header(base: &Uri) -> HeaderValue {
    let host = base.host().unwrap_or_default();
    let default_port = match base.scheme_str() {
        Some("https") => 443,
        _ => 80,
    };
    let value = match base.port_u16() {
        Some(port) if port != default_port => format!("{host}:{port}"),
        _ => host.to_string(),
    };
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("api.hubapi.com"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sender on an open connection (a pipe whose far end the caller keeps), driven by its
    /// task and ready for a request.
    async fn sender() -> (SendRequest<OutboundBody>, tokio::io::DuplexStream) {
        let (ours, theirs) = tokio::io::duplex(1024);
        let io = hyper_util::rt::TokioIo::new(ours);
        let (sender, connection) = http1::Builder::new().handshake(io).await.unwrap();
        tokio::spawn(connection);
        tokio::task::yield_now().await;
        (sender, theirs)
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_reused_until_it_expires() {
        let idle = IdleConnections::new(Duration::from_secs(90), 8);
        let ((a, _a), (b, _b)) = (sender().await, sender().await);
        idle.clone().checkin(a);
        assert!(idle.checkout().is_some(), "reused within the timeout");
        assert!(idle.checkout().is_none(), "handed out once");
        idle.clone().checkin(b);
        tokio::time::advance(Duration::from_secs(91)).await;
        assert!(idle.checkout().is_none(), "expired");
    }

    #[tokio::test(start_paused = true)]
    async fn the_sweeper_closes_expired_connections_without_a_request() {
        let idle = IdleConnections::new(Duration::from_secs(90), 8);
        let ((a, _a), (b, _b)) = (sender().await, sender().await);
        idle.clone().checkin(a);
        tokio::time::advance(Duration::from_secs(60)).await;
        idle.clone().checkin(b);
        tokio::time::sleep(Duration::from_secs(31)).await;
        assert_eq!(idle.stack.lock().unwrap().len(), 1, "the older one is gone");
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(idle.stack.lock().unwrap().is_empty());
        assert!(
            !idle.sweeping.load(Ordering::Relaxed),
            "the sweeper stopped"
        );
    }

    #[tokio::test]
    async fn limits_keep_fewer_idle_connections() {
        let ((a, _a), (b, _b), (c, _c)) = (sender().await, sender().await, sender().await);
        let capped = IdleConnections::new(Duration::from_secs(90), 1);
        capped.clone().checkin(a);
        capped.clone().checkin(b);
        assert_eq!(
            capped.stack.lock().unwrap().len(),
            1,
            "pool_max_idle_per_host"
        );
        let never = IdleConnections::new(Duration::ZERO, 8);
        never.clone().checkin(c);
        assert!(never.checkout().is_none(), "a zero idle timeout keeps none");
    }

    #[test]
    fn host_header_names_the_port_only_when_not_the_default() {
        let host = |uri: &str| host_header(&uri.parse().unwrap());
        assert_eq!(host("https://api.hubapi.com"), "api.hubapi.com");
        assert_eq!(host("https://api.hubapi.com:443/"), "api.hubapi.com");
        assert_eq!(host("https://api.hubapi.com:8443"), "api.hubapi.com:8443");
        assert_eq!(host("http://127.0.0.1:18081"), "127.0.0.1:18081");
        assert_eq!(host("http://127.0.0.1:80"), "127.0.0.1");
        assert_eq!(host("http://[::1]:9000"), "[::1]:9000");
    }

    #[test]
    fn origin_form_keeps_path_and_query_only() {
        let mut request = Request::new(crate::body::kept(bytes::Bytes::new()));
        *request.uri_mut() = "https://api.hubapi.com/crm/v3/objects?a=1".parse().unwrap();
        origin_form(&mut request);
        assert_eq!(request.uri().to_string(), "/crm/v3/objects?a=1");
    }
}
