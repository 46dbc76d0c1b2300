//! Body types for both directions: a size-limited, idle-guarded outbound stream and a
//! deadline-guarded response, with the upstream slot a forwarded response holds.
//!
//! It sits below the proxy, the upstream client and the error mapping, which all speak of
//! bodies; it imports none of them.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use pin_project_lite::pin_project;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};

use crate::metrics::{ClientBodyFault, GaugeGuard};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Raised inside the outbound stream when a client sends more than `max_body_bytes`; answered
/// with 413.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds {limit} bytes")]
pub(crate) struct BodyTooLarge {
    pub(crate) limit: u64,
}

/// Raised when the response body is still streaming at the exchange deadline.
#[derive(Debug, thiserror::Error)]
#[error("upstream response did not finish before the deadline")]
pub(crate) struct DeadlineExceeded;

/// Raised inside the outbound stream when the client fails to deliver its body; answered 400
/// or 408, and never counted against HubSpot.
#[derive(Debug, thiserror::Error)]
#[error("the client's request body failed ({})", fault.as_str())]
pub(crate) struct ClientBodyError {
    pub(crate) fault: ClientBodyFault,
    #[source]
    source: Option<hyper::Error>,
}

impl ClientBodyError {
    fn from_hyper(error: hyper::Error) -> Self {
        ClientBodyError {
            fault: fault_of(&error),
            source: Some(error),
        }
    }
}

/// Hyper's chunked and length decoders report bad framing as InvalidInput or InvalidData; any
/// other failure (an early EOF, a reset, an h2 RST_STREAM) is the client leaving.
fn fault_of(error: &hyper::Error) -> ClientBodyFault {
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::{InvalidData, InvalidInput};
            if matches!(io.kind(), InvalidInput | InvalidData) {
                return ClientBodyFault::Malformed;
            }
        }
        source = e.source();
    }
    ClientBodyFault::Aborted
}

/// Why the outbound body failed: the client's doing, not HubSpot's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutboundFault {
    TooLarge { limit: u64 },
    Client(ClientBodyFault),
}

impl OutboundFault {
    /// The fault behind an error the outbound body raised, if it was one of ours.
    pub(crate) fn of(error: &(dyn std::error::Error + 'static)) -> Option<OutboundFault> {
        if let Some(e) = error.downcast_ref::<BodyTooLarge>() {
            return Some(OutboundFault::TooLarge { limit: e.limit });
        }
        let e = error.downcast_ref::<ClientBodyError>()?;
        Some(OutboundFault::Client(e.fault))
    }
}

/// Where a streamed body records its fault for the exchange to read. Over HTTP/1.1 the body's
/// error reaches the exchange in hyper's error chain, but over h2 hyper only resets the stream
/// and drops it, so the error chain alone would blame HubSpot for the client's fault.
pub(crate) type FaultCell = Arc<OnceLock<OutboundFault>>;

/// How much of a client's body is accepted, and how long it may go quiet mid-way.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyLimits {
    pub(crate) max_bytes: u64,
    pub(crate) idle: Duration,
}

pin_project! {
    /// The client's body on its way upstream, cut off once it passes the limit, or once the
    /// client has sent nothing for `idle` (so a stalled upload cannot hold an upstream slot).
    pub(crate) struct LimitedBody {
        #[pin]
        inner: Incoming,
        remaining: u64,
        limits: BodyLimits,
        // Armed when the client goes quiet after a frame, not per frame: a body that flows
        // never touches the timer, and a wait for upstream capacity is not the client's stall.
        // Boxed, and only once needed: hyper-util's client wants an `Unpin` body.
        idle_timer: Option<Pin<Box<Sleep>>>,
        armed: bool,
        fault: Option<FaultCell>,
    }
}

impl LimitedBody {
    /// `fault`, when given, receives the reason the body failed.
    pub(crate) fn new(inner: Incoming, limits: BodyLimits, fault: Option<FaultCell>) -> Self {
        LimitedBody {
            inner,
            remaining: limits.max_bytes,
            limits,
            idle_timer: None,
            armed: false,
            fault,
        }
    }
}

type Polled = Poll<Option<Result<Frame<Bytes>, BoxError>>>;

/// Records `fault` where the exchange will look, and raises `error` to hyper.
fn fail(fault: &Option<FaultCell>, recorded: OutboundFault, error: BoxError) -> Polled {
    if let Some(cell) = fault {
        let _ = cell.set(recorded);
    }
    Poll::Ready(Some(Err(error)))
}

impl Body for LimitedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                *this.armed = false;
                let len = frame.data_ref().map_or(0, |d| d.len() as u64);
                if len > *this.remaining {
                    let limit = this.limits.max_bytes;
                    let error = Box::new(BodyTooLarge { limit });
                    return fail(this.fault, OutboundFault::TooLarge { limit }, error);
                }
                *this.remaining -= len;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                let error = ClientBodyError::from_hyper(e);
                fail(
                    this.fault,
                    OutboundFault::Client(error.fault),
                    Box::new(error),
                )
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if !*this.armed {
                    *this.armed = true;
                    let at = Instant::now() + this.limits.idle;
                    match this.idle_timer {
                        Some(timer) => timer.as_mut().reset(at),
                        None => *this.idle_timer = Some(Box::pin(tokio::time::sleep_until(at))),
                    }
                }
                let timer = this.idle_timer.as_mut().expect("armed above");
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        let fault = ClientBodyFault::Stalled;
                        let error = ClientBodyError {
                            fault,
                            source: None,
                        };
                        fail(this.fault, OutboundFault::Client(fault), Box::new(error))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What goes upstream: the client's body streamed (`Left`), or kept whole so it can be sent
/// again (`Right`).
pub(crate) type OutboundBody = Either<LimitedBody, Full<Bytes>>;

/// A body kept whole, sent as is (and again, for a replay).
pub(crate) fn kept(bytes: Bytes) -> OutboundBody {
    Either::Right(Full::new(bytes))
}

/// The client's body streamed; a body with anything to send gets a cell for its fault.
pub(crate) fn streaming(inner: Incoming, limits: BodyLimits) -> OutboundBody {
    let fault = (!inner.is_end_stream()).then(FaultCell::default);
    Either::Left(LimitedBody::new(inner, limits, fault))
}

/// Where a streamed body records why it failed, for the exchange to read; a kept body (already
/// read whole) and an empty one cannot fail and have none.
pub(crate) fn fault_cell(body: &OutboundBody) -> Option<FaultCell> {
    match body {
        Either::Left(streamed) => streamed.fault.clone(),
        Either::Right(_) => None,
    }
}

/// One of the worker's upstream slots, held until the response body is dropped: on HTTP/1.1
/// a connection stays busy until its body is read, so this also bounds open connections.
pub(crate) struct Slot {
    _permit: OwnedSemaphorePermit,
    _counted: GaugeGuard,
    /// The HTTP/1.1 connection the answer came on, handed back once its body was read whole.
    reuse: Option<Reuse>,
    read_whole: bool,
}

impl Slot {
    /// `permit` is the worker's semaphore share; `counted` keeps the slot gauge up while held.
    pub(crate) fn new(permit: OwnedSemaphorePermit, counted: GaugeGuard) -> Slot {
        Slot {
            _permit: permit,
            _counted: counted,
            reuse: None,
            read_whole: false,
        }
    }

    pub(crate) fn reuse(&mut self, reuse: Option<Reuse>) {
        self.reuse = reuse;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // A body left half read leaves its connection mid-message: it is closed, not reused.
        if let (true, Some(reuse)) = (self.read_whole, self.reuse.take()) {
            reuse.home.checkin(reuse.sender);
        }
    }
}

/// Where an HTTP/1.1 connection goes back to once its exchange is over.
pub(crate) trait Checkin: Send + Sync {
    fn checkin(self: Arc<Self>, sender: SendRequest<OutboundBody>);
}

/// A connection and where it goes back to.
pub(crate) struct Reuse {
    home: Arc<dyn Checkin>,
    sender: SendRequest<OutboundBody>,
}

impl Reuse {
    pub(crate) fn new(home: Arc<dyn Checkin>, sender: SendRequest<OutboundBody>) -> Reuse {
        Reuse { home, sender }
    }
}

pin_project! {
    /// What the proxy sends back: HubSpot's streamed body, or a small body of its own.
    #[project = ProxyBodyProj]
    pub(crate) enum ProxyBody {
        Forwarded {
            #[pin]
            body: Incoming,
            // The whole exchange has one deadline; a response that stalls mid-body is cut off.
            #[pin]
            deadline: Sleep,
            slot: Slot,
        },
        Local {
            #[pin]
            body: Full<Bytes>,
        },
    }
}

impl ProxyBody {
    pub(crate) fn forwarded(body: Incoming, deadline: Instant, mut slot: Slot) -> Self {
        slot.read_whole = body.is_end_stream();
        ProxyBody::Forwarded {
            body,
            deadline: tokio::time::sleep_until(deadline),
            slot,
        }
    }

    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        ProxyBody::Local {
            body: Full::new(bytes.into()),
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            ProxyBodyProj::Forwarded {
                mut body,
                deadline,
                slot,
            } => match body.as_mut().poll_frame(cx) {
                Poll::Ready(r) => {
                    // The server stops polling once the body says it has ended, so both the
                    // end and a last frame that ends it count as read whole.
                    slot.read_whole = match &r {
                        None => true,
                        Some(Ok(_)) => body.is_end_stream(),
                        Some(Err(_)) => false,
                    };
                    Poll::Ready(r.map(|r| r.map_err(Into::into)))
                }
                Poll::Pending => match deadline.poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(DeadlineExceeded)))),
                    Poll::Pending => Poll::Pending,
                },
            },
            ProxyBodyProj::Local { body } => body.poll_frame(cx).map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Forwarded { body, .. } => body.is_end_stream(),
            ProxyBody::Local { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Forwarded { body, .. } => body.size_hint(),
            ProxyBody::Local { body } => body.size_hint(),
        }
    }
}
