//! Body types for both directions: a size-limited outbound stream and a deadline-guarded response.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::upstream::Slot;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Raised inside the outbound stream when a client sends more than `max_body_bytes`;
/// found again in the upstream error chain and answered with 413.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds {limit} bytes")]
pub struct BodyTooLarge {
    pub limit: u64,
}

/// Raised when the response body is still streaming at the exchange deadline.
#[derive(Debug, thiserror::Error)]
#[error("upstream response did not finish before the deadline")]
pub struct DeadlineExceeded;

pin_project! {
    /// The client's body on its way upstream, cut off once it passes the limit.
    pub struct LimitedBody {
        #[pin]
        inner: Incoming,
        remaining: u64,
        limit: u64,
    }
}

impl LimitedBody {
    pub fn new(inner: Incoming, limit: u64) -> Self {
        LimitedBody {
            inner,
            remaining: limit,
            limit,
        }
    }
}

impl Body for LimitedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, |d| d.len() as u64);
                if len > *this.remaining {
                    return Poll::Ready(Some(Err(Box::new(BodyTooLarge { limit: *this.limit }))));
                }
                *this.remaining -= len;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project! {
    /// What goes upstream: the client's body streamed, or kept whole so it can be sent again.
    #[project = OutboundProj]
    pub enum OutboundBody {
        Streaming {
            #[pin]
            body: LimitedBody,
        },
        Kept {
            #[pin]
            body: Full<Bytes>,
        },
    }
}

impl OutboundBody {
    pub fn kept(bytes: Bytes) -> Self {
        OutboundBody::Kept {
            body: Full::new(bytes),
        }
    }
}

impl Body for OutboundBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            OutboundProj::Streaming { body } => body.poll_frame(cx),
            OutboundProj::Kept { body } => body.poll_frame(cx).map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            OutboundBody::Streaming { body } => body.is_end_stream(),
            OutboundBody::Kept { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            OutboundBody::Streaming { body } => body.size_hint(),
            OutboundBody::Kept { body } => body.size_hint(),
        }
    }
}

pin_project! {
    /// What the proxy sends back: HubSpot's streamed body, or a small body of its own.
    #[project = ProxyBodyProj]
    pub enum ProxyBody {
        Upstream {
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
    pub fn upstream(body: Incoming, deadline: Instant, slot: Slot) -> Self {
        ProxyBody::Upstream {
            body,
            deadline: tokio::time::sleep_until(deadline),
            slot,
        }
    }

    pub fn full(bytes: impl Into<Bytes>) -> Self {
        ProxyBody::Local {
            body: Full::new(bytes.into()),
        }
    }

    pub fn empty() -> Self {
        ProxyBody::full(Bytes::new())
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
            ProxyBodyProj::Upstream { body, deadline, .. } => match body.poll_frame(cx) {
                Poll::Ready(r) => Poll::Ready(r.map(|r| r.map_err(Into::into))),
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
            ProxyBody::Upstream { body, .. } => body.is_end_stream(),
            ProxyBody::Local { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream { body, .. } => body.size_hint(),
            ProxyBody::Local { body } => body.size_hint(),
        }
    }
}
