//! Data-plane workers: one thread per core, each with its own single-threaded runtime, its own
//! handle on the shared listening socket and its own upstream connection pool, so a request
//! never crosses threads. Profiling showed cross-thread wake-ups (futex, context switches) as the
//! largest cost with tokio's work-stealing runtime; this is the shape nginx's worker processes
//! have too (with `accept_mutex off`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{oneshot, watch};

use crate::proxy::Proxy;
use crate::server::{self, BindError, ConnectionLimits};
use crate::tls::SharedAcceptor;

/// How many workers `workers = 0` (the default) means: one per available core.
pub(crate) fn default_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// How many workers run: `workers = 0` means one per core, but never more workers than
/// upstream slots, since each worker needs one (validation refuses an explicit count above it).
pub(crate) fn count(configured: usize, max_connections: usize) -> usize {
    match configured {
        0 => default_count().min(max_connections).max(1),
        n => n,
    }
}

/// Worker `index`'s exact share of `total` upstream slots: the first `total % workers`
/// workers get one more, so the shares add up to `total`, never more.
pub(crate) fn slot_share(total: usize, workers: usize, index: usize) -> usize {
    let workers = workers.max(1);
    total / workers + usize::from(index < total % workers)
}

/// `count` handles on one listening socket. The socket is bound without `SO_REUSEPORT`, so a
/// second proxy on the same address fails to start instead of silently taking half the
/// traffic; the workers share the one socket through duplicated descriptors, each registered
/// with its own runtime, and whichever worker is free first accepts a connection.
pub(crate) fn bind(
    addr: SocketAddr,
    count: usize,
) -> Result<(Vec<std::net::TcpListener>, SocketAddr), BindError> {
    let error = |source| BindError {
        what: "server.listen",
        addr,
        source,
    };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(error)?;
    // SO_REUSEADDR only lets a restart bind past connections in TIME_WAIT; on Linux it never
    // lets two listeners share a port.
    socket.set_reuseaddr(true).map_err(error)?;
    socket.set_nodelay(true).map_err(error)?;
    socket.bind(addr).map_err(error)?;
    let listener = socket.listen(1024).map_err(error)?;
    let bound = listener.local_addr().map_err(error)?;
    let listener = listener.into_std().map_err(error)?;
    let mut listeners = Vec::with_capacity(count.max(1));
    for _ in 1..count.max(1) {
        listeners.push(listener.try_clone().map_err(error)?);
    }
    listeners.push(listener);
    Ok((listeners, bound))
}

/// Running workers; each reports on its channel when it has drained and stopped.
pub(crate) struct Workers {
    done: Vec<oneshot::Receiver<()>>,
}

impl Workers {
    /// Starts one thread per (listener, proxy) pair.
    pub(crate) fn spawn(
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
    pub(crate) async fn finished(self) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_shares_add_up_exactly() {
        for (total, workers) in [(4, 4), (12, 8), (128, 3), (5, 2), (1, 1), (7, 7)] {
            let shares: Vec<usize> = (0..workers)
                .map(|i| slot_share(total, workers, i))
                .collect();
            assert_eq!(
                shares.iter().sum::<usize>(),
                total,
                "{total} over {workers}"
            );
            assert!(shares.iter().all(|&s| s >= total / workers && s >= 1));
        }
        assert_eq!(count(0, 1), 1);
        assert_eq!(count(3, 128), 3);
    }
}
