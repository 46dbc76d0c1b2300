//! Data-plane workers: one thread per core, each with its own single-threaded runtime, its own
//! `SO_REUSEPORT` listener and its own upstream connection pool, so a request never crosses
//! threads. Profiling showed cross-thread wake-ups (futex, context switches) as the largest cost
//! with tokio's work-stealing runtime; this is the shape nginx's worker processes have too.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{oneshot, watch};

use crate::proxy::Proxy;
use crate::server::{self, BindError, ConnectionLimits};
use crate::tls::SharedAcceptor;

/// How many workers `workers = 0` (the default) means: one per available core.
pub fn default_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `count` listeners on one address. With port 0 the first picks a port and the rest share it.
pub fn bind(
    addr: SocketAddr,
    count: usize,
) -> Result<(Vec<std::net::TcpListener>, SocketAddr), BindError> {
    let error = |source| BindError {
        what: "server.listen",
        addr,
        source,
    };
    let mut listeners = Vec::with_capacity(count);
    let mut bound = addr;
    for _ in 0..count.max(1) {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(error)?;
        socket.set_reuseaddr(true).map_err(error)?;
        socket.set_reuseport(true).map_err(error)?;
        socket.set_nodelay(true).map_err(error)?;
        socket.bind(bound).map_err(error)?;
        let listener = socket.listen(1024).map_err(error)?;
        bound = listener.local_addr().map_err(error)?;
        listeners.push(listener.into_std().map_err(error)?);
    }
    Ok((listeners, bound))
}

/// Running workers; each reports on its channel when it has drained and stopped.
pub struct Workers {
    done: Vec<oneshot::Receiver<()>>,
}

impl Workers {
    /// Starts one thread per (listener, proxy) pair.
    pub fn spawn(
        listeners: Vec<std::net::TcpListener>,
        proxies: Vec<Proxy>,
        limits: ConnectionLimits,
        tls: Option<SharedAcceptor>,
        stop: watch::Receiver<bool>,
        grace: Duration,
    ) -> std::io::Result<Workers> {
        let mut done = Vec::with_capacity(listeners.len());
        for (index, (listener, proxy)) in listeners.into_iter().zip(proxies).enumerate() {
            let (finished, receiver) = oneshot::channel();
            let (stop, tls) = (stop.clone(), tls.clone());
            std::thread::Builder::new()
                .name(format!("proxy-worker-{index}"))
                .spawn(move || run(listener, proxy, limits, tls, stop, grace, finished))?;
            done.push(receiver);
        }
        Ok(Workers { done })
    }

    /// Waits until every worker has drained its connections and stopped.
    pub async fn finished(self) {
        for done in self.done {
            let _ = done.await;
        }
    }
}

fn run(
    listener: std::net::TcpListener,
    proxy: Proxy,
    limits: ConnectionLimits,
    tls: Option<SharedAcceptor>,
    stop: watch::Receiver<bool>,
    grace: Duration,
    finished: oneshot::Sender<()>,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a worker runtime");
    runtime.block_on(async move {
        let listener = match TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(e) => {
                tracing::error!(error = %e, "worker cannot use its listener");
                return;
            }
        };
        let proxy = Arc::new(proxy);
        let handler = move |request, peer| {
            let proxy = proxy.clone();
            async move { proxy.handle(request, peer).await }
        };
        server::serve(listener, handler, limits, tls, stop, grace).await;
    });
    let _ = finished.send(());
}
