//! Replaying a request: small bodies are kept so the request can go again (after HubSpot's
//! 401 `EXPIRED_AUTHENTICATION`, a retryable 429 or a gateway error); large ones stream and
//! cannot. Kept bytes come out of one process-wide budget, so many slow clients cannot make
//! the proxy hold unbounded memory.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Uri, Version};
use http_body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::body::{self, BodyLimits, LimitedBody, OutboundBody, OutboundFault};
use crate::error::ProxyError;
use crate::metrics::{BodyMetrics, ClientBodyFault};

/// Bodies up to this size are held in memory so the request can be sent a second time.
pub(crate) const KEEP_FOR_REPLAY: u64 = 1024 * 1024;

/// Everything needed to send the request again.
pub(crate) struct Replay {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    _reserved: Option<Reservation>,
}

impl Replay {
    /// A fresh copy of the request. The kept headers never hold the proxy's bearer; the caller
    /// sets the current one on each copy.
    pub(crate) fn request(&self) -> Request<OutboundBody> {
        let mut request = Request::new(body::kept(self.body.clone()));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = self.headers.clone();
        request
    }
}

/// `server.max_replay_buffer_bytes`: the bytes all workers together may keep for replay.
pub(crate) struct ReplayBudget {
    limit: u64,
    in_use: AtomicU64,
    metrics: BodyMetrics,
}

impl ReplayBudget {
    pub(crate) fn new(limit: u64, metrics: BodyMetrics) -> Arc<ReplayBudget> {
        Arc::new(ReplayBudget {
            limit,
            in_use: AtomicU64::new(0),
            metrics,
        })
    }

    /// Bytes held now (what the gauge shows).
    #[cfg(test)]
    fn in_use(&self) -> u64 {
        self.in_use.load(Ordering::Relaxed)
    }

    /// `bytes` out of the budget until the reservation drops; `None` (counted) when they do not
    /// fit. A lock-free check-and-add, so two requests can never both take the last bytes.
    fn reserve(self: &Arc<Self>, bytes: u64) -> Option<Reservation> {
        let fits = |held: u64| held.checked_add(bytes).filter(|&n| n <= self.limit);
        let taken = self
            .in_use
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, fits);
        if taken.is_err() {
            self.metrics.replay_unbudgeted();
            return None;
        }
        self.metrics.replay_bytes().add(bytes as i64);
        Some(Reservation {
            budget: self.clone(),
            bytes,
        })
    }
}

/// Bytes of the replay budget held by one kept body, given back on drop.
struct Reservation {
    budget: Arc<ReplayBudget>,
    bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.in_use.fetch_sub(self.bytes, Ordering::AcqRel);
        self.budget.metrics.replay_bytes().sub(self.bytes as i64);
    }
}

/// Builds the upstream request. With a `budget` (the account may resend), a body that is empty
/// or declares at most `KEEP_FOR_REPLAY` bytes that still fit the budget is read first, and a
/// `Replay` is returned beside the request; any other body streams.
pub(crate) async fn outbound(
    parts: http::request::Parts,
    body: Incoming,
    limits: BodyLimits,
    budget: Option<&Arc<ReplayBudget>>,
    deadline: Instant,
) -> Result<(Request<OutboundBody>, Option<Replay>), ProxyError> {
    let declared = if body.is_end_stream() {
        Some(0)
    } else {
        body.size_hint().upper().filter(|&n| n <= KEEP_FOR_REPLAY)
    };
    // Empty bodies cost the budget nothing and take no reservation.
    let reserved = match (budget, declared) {
        (Some(_), Some(0)) => Some(None),
        (Some(budget), Some(n)) => budget.reserve(n).map(Some),
        _ => None,
    };
    let Some(reserved) = reserved else {
        let streamed = body::streaming(body, limits);
        return Ok((Request::from_parts(parts, streamed), None));
    };
    let bytes = read_whole(body, limits, deadline).await?;
    let replay = Replay {
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        headers: parts.headers.clone(),
        body: bytes.clone(),
        _reserved: reserved,
    };
    Ok((Request::from_parts(parts, body::kept(bytes)), Some(replay)))
}

/// The client's whole (small, declared) body, under the same limits as a streamed one.
async fn read_whole(
    body: Incoming,
    limits: BodyLimits,
    deadline: Instant,
) -> Result<Bytes, ProxyError> {
    let body = LimitedBody::new(body, limits, None);
    match tokio::time::timeout_at(deadline, body.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) => Err(OutboundFault::of(&*e)
            .unwrap_or(OutboundFault::Client(ClientBodyFault::Aborted))
            .into()),
        // Still arriving at the request's deadline: too slow, which is the client's doing.
        Err(_) => Err(ProxyError::ClientBody {
            fault: ClientBodyFault::Stalled,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    #[test]
    fn reservations_fit_the_budget_and_are_given_back_on_drop() {
        let metrics = Metrics::new();
        let budget = ReplayBudget::new(1000, metrics.bodies().clone());
        let first = budget.reserve(600).expect("fits");
        assert!(budget.reserve(401).is_none(), "past the budget");
        let second = budget.reserve(400).expect("exactly fills it");
        assert_eq!(budget.in_use(), 1000);
        assert_eq!(metrics.bodies().replay_bytes().get(), 1000);
        drop(first);
        drop(second);
        assert_eq!(budget.in_use(), 0);
        assert_eq!(metrics.bodies().replay_bytes().get(), 0);
        assert!(budget.reserve(u64::MAX).is_none(), "no overflow");
    }
}
