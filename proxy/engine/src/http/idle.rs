//! Stream idle timeout on response bodies: a body that yields nothing for the idle time fails,
//! which resets the downstream stream (HTTP/2) or closes the connection (HTTP/1.1), as Envoy's
//! `stream_idle_timeout` / route `idle_timeout` do; the same for a body still running at a
//! fixed deadline (the HCM's or the route's `max_stream_duration`).

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

/// The error a body ends with when the route's `per_try_idle_timeout` passes without upstream
/// data (Envoy's `onPerTryIdleTimeout` after the response head: the stream is reset, flag UT).
#[derive(Debug, thiserror::Error)]
#[error("per-try idle timeout ({0:?} without upstream data)")]
pub struct PerTryIdleTimeout(pub Duration);

/// The error a body still running at its stream deadline ends with.
#[derive(Debug, thiserror::Error)]
#[error("max stream duration reached")]
pub struct StreamDurationTimeout;

/// A body with an optional idle timer reset by every frame, and an optional fixed deadline.
pub struct IdleBody {
    inner: Body,
    idle: Option<Duration>,
    /// The idle timer is the per-try idle timeout (its error is [`PerTryIdleTimeout`]).
    per_try: bool,
    sleep: Pin<Box<Sleep>>,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl IdleBody {
    /// Wraps `inner` with an `idle` timeout.
    pub fn wrap(inner: Body, idle: Duration) -> Body {
        Self::wrap_until(inner, Some(idle), None)
    }

    /// Wraps `inner` so it fails at `deadline` if it has not ended by then.
    pub fn until(inner: Body, deadline: Instant) -> Body {
        Self::wrap_until(inner, None, Some(deadline))
    }

    /// Wraps `inner` with an optional `idle` timeout and an optional `deadline`; with
    /// neither, `inner` is returned as is.
    pub fn wrap_until(inner: Body, idle: Option<Duration>, deadline: Option<Instant>) -> Body {
        Self::wrap_upstream(inner, idle, None, deadline)
    }

    /// [`Self::wrap_until`] for an upstream response body, whose idle timer is also the
    /// per-try idle timeout: both are reset by every frame, so the shorter one ends it.
    pub fn wrap_upstream(
        inner: Body,
        idle: Option<Duration>,
        per_try_idle: Option<Duration>,
        deadline: Option<Instant>,
    ) -> Body {
        let per_try = per_try_idle.is_some_and(|p| idle.is_none_or(|i| p < i));
        let idle = if per_try { per_try_idle } else { idle };
        if idle.is_none() && deadline.is_none() {
            return inner;
        }
        // Without an idle timeout the idle timer is never polled.
        let first = idle.unwrap_or(Duration::from_secs(100 * 365 * 24 * 3600));
        Self {
            inner,
            idle,
            per_try,
            sleep: Box::pin(tokio::time::sleep(first)),
            deadline: deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
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
        if let Some(d) = this.deadline.as_mut() {
            if d.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Some(Err(Box::new(StreamDurationTimeout))));
            }
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(r) => {
                if let Some(idle) = this.idle {
                    this.sleep.as_mut().reset(Instant::now() + idle);
                }
                Poll::Ready(r)
            }
            Poll::Pending => match (this.sleep.as_mut().poll(cx), this.idle) {
                (Poll::Ready(()), Some(idle)) if this.per_try => {
                    Poll::Ready(Some(Err(Box::new(PerTryIdleTimeout(idle)))))
                }
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

    #[tokio::test]
    async fn the_shorter_of_the_stream_and_per_try_idle_timeouts_ends_the_body() {
        let ms = |n| Some(Duration::from_millis(n));
        for (idle, per_try, per_try_fired) in [
            (ms(300), ms(50), true),
            (ms(50), ms(300), false),
            (None, ms(50), true),
            (ms(50), None, false),
        ] {
            let mut b = IdleBody::wrap_upstream(stalled(), idle, per_try, None);
            assert!(b.frame().await.expect("frame").is_ok());
            let e = b.frame().await.expect("an error").expect_err("cut");
            assert_eq!(e.is::<PerTryIdleTimeout>(), per_try_fired, "{e}");
            assert_eq!(e.is::<StreamIdleTimeout>(), !per_try_fired, "{e}");
        }
    }
}
