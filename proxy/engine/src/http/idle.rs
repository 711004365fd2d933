//! Stream idle timeout on response bodies: a body that yields nothing for the idle time fails,
//! which resets the downstream stream (HTTP/2) or closes the connection (HTTP/1.1), as Envoy's
//! `stream_idle_timeout` / route `idle_timeout` do.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::time::{Instant, Sleep};

use super::{Body, BodyError};

/// The error a timed-out body ends with.
#[derive(Debug, thiserror::Error)]
#[error("stream idle timeout ({0:?} without data)")]
pub struct StreamIdleTimeout(pub Duration);

/// A body with an idle timer reset by every frame.
pub struct IdleBody {
    inner: Body,
    idle: Duration,
    sleep: Pin<Box<Sleep>>,
}

impl IdleBody {
    /// Wraps `inner` with an `idle` timeout.
    pub fn wrap(inner: Body, idle: Duration) -> Body {
        Self {
            inner,
            idle,
            sleep: Box::pin(tokio::time::sleep(idle)),
        }
        .boxed()
    }
}

impl HttpBody for IdleBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(r) => {
                let deadline = Instant::now() + this.idle;
                this.sleep.as_mut().reset(deadline);
                Poll::Ready(r)
            }
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(StreamIdleTimeout(this.idle))))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
