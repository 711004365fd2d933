//! Stream idle timeout on response bodies: a body that yields nothing for the idle time fails,
//! which resets the downstream stream (HTTP/2) or closes the connection (HTTP/1.1), as Envoy's
//! `stream_idle_timeout` / route `idle_timeout` do. [`IdleBody::until`] is the same with a fixed
//! deadline (the HCM's `max_stream_duration` while a response body streams).

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

/// The error a body cut by [`IdleBody::until`] ends with.
#[derive(Debug, thiserror::Error)]
#[error("max stream duration reached")]
pub struct StreamDurationTimeout;

/// A body with an idle timer reset by every frame (or, `idle` = `None`, a fixed deadline).
pub struct IdleBody {
    inner: Body,
    idle: Option<Duration>,
    sleep: Pin<Box<Sleep>>,
}

impl IdleBody {
    /// Wraps `inner` with an `idle` timeout.
    pub fn wrap(inner: Body, idle: Duration) -> Body {
        Self {
            inner,
            idle: Some(idle),
            sleep: Box::pin(tokio::time::sleep(idle)),
        }
        .boxed()
    }

    /// Wraps `inner` so it fails at `deadline` if it has not ended by then.
    pub fn until(inner: Body, deadline: Instant) -> Body {
        Self {
            inner,
            idle: None,
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
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
                if let Some(idle) = this.idle {
                    this.sleep.as_mut().reset(Instant::now() + idle);
                }
                Poll::Ready(r)
            }
            Poll::Pending => match (this.sleep.as_mut().poll(cx), this.idle) {
                (Poll::Ready(()), Some(idle)) => {
                    Poll::Ready(Some(Err(Box::new(StreamIdleTimeout(idle)))))
                }
                (Poll::Ready(()), None) => Poll::Ready(Some(Err(Box::new(StreamDurationTimeout)))),
                (Poll::Pending, _) => Poll::Pending,
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

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;
    use http_body_util::{BodyExt, StreamBody};

    use super::*;

    /// A body that yields one frame and then nothing.
    fn stalled() -> Body {
        let frames =
            futures_util::stream::iter([Ok::<_, BodyError>(Frame::data(Bytes::from("a")))])
                .chain(futures_util::stream::pending());
        BodyExt::boxed(StreamBody::new(frames))
    }

    #[tokio::test]
    async fn until_cuts_a_body_still_streaming_at_the_deadline() {
        let start = Instant::now();
        let mut b = IdleBody::until(stalled(), start + Duration::from_millis(100));
        assert!(b.frame().await.expect("frame").is_ok());
        let e = b.frame().await.expect("an error").expect_err("cut");
        assert!(e.is::<StreamDurationTimeout>(), "{e}");
        assert!(start.elapsed() >= Duration::from_millis(100));
    }
}
