//! What the connection manager learns of a downstream request body on its way upstream: that it
//! has ended (the HCM's `request_timeout` is then disarmed, [`super::request_timeout`]), how
//! many bytes it carried and when its last one came (the access log's `%BYTES_RECEIVED%` and
//! `%REQUEST_DURATION%`, [`BodyTally`]). One wrapper for all, put on a streamed body only when
//! one of them is wanted.

use std::{
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

/// The access log's account of a request body: the bytes it carried and when its last one
/// came (Envoy's `lastDownstreamRxByteReceived`), counted from the request's start.
#[derive(Debug)]
pub struct BodyTally {
    start: Instant,
    bytes: AtomicU64,
    /// µs from `start` to the body's end; `u64::MAX` while it has not ended.
    ended_us: AtomicU64,
}

impl BodyTally {
    /// A tally of a request that started at `start`.
    pub fn new(start: Instant) -> Self {
        Self {
            start,
            bytes: AtomicU64::new(0),
            ended_us: AtomicU64::new(u64::MAX),
        }
    }

    /// Counts `n` more bytes.
    pub fn add(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// The body has ended now (the first call counts).
    pub fn end(&self) {
        let us = u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX - 1);
        let _ = self
            .ended_us
            .compare_exchange(u64::MAX, us, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// The bytes counted.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// From the request's start to the body's end; `None` while it has not ended.
    pub fn ended_after(&self) -> Option<Duration> {
        match self.ended_us.load(Ordering::Relaxed) {
            u64::MAX => None,
            us => Some(Duration::from_micros(us)),
        }
    }
}

/// A request body that raises `end` once it has yielded its last frame and tallies its data
/// frames and end in `tally`.
pub(crate) struct Tapped<B> {
    inner: B,
    end: Option<Arc<AtomicBool>>,
    tally: Option<Arc<BodyTally>>,
}

impl<B: HttpBody + Unpin> Tapped<B> {
    /// Wraps `inner`.
    pub(crate) fn new(
        inner: B,
        end: Option<Arc<AtomicBool>>,
        tally: Option<Arc<BodyTally>>,
    ) -> Self {
        let this = Self { inner, end, tally };
        if this.inner.is_end_stream() {
            this.ended();
        }
        this
    }

    fn ended(&self) {
        if let Some(end) = &self.end {
            end.store(true, Ordering::Release);
        }
        if let Some(t) = &self.tally {
            t.end();
        }
    }
}

impl<B: HttpBody<Data = Bytes> + Unpin> HttpBody for Tapped<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if let (Poll::Ready(Some(Ok(f))), Some(tally)) = (&r, &self.tally) {
            if let Some(d) = f.data_ref() {
                tally.add(d.len() as u64);
            }
        }
        if matches!(r, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.ended();
        }
        r
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
    use http_body_util::{BodyExt, StreamBody};

    use super::*;

    #[tokio::test]
    async fn counts_every_data_frame() {
        let frames = ["hello", " ", "world"]
            .map(|s| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(s))));
        let body = StreamBody::new(futures_util::stream::iter(frames));
        let tally = Arc::new(BodyTally::new(Instant::now()));
        let mut body = Tapped::new(body, None, Some(tally.clone()));
        body.frame().await.unwrap().unwrap();
        assert_eq!((tally.bytes(), tally.ended_after()), (5, None));
        let got = body.collect().await.expect("body").to_bytes();
        assert_eq!((got.as_ref(), tally.bytes()), (&b" world"[..], 11));
        assert!(tally.ended_after().is_some(), "the end is timed");
    }

    #[tokio::test]
    async fn a_streamed_body_sets_the_flag_at_its_end() {
        let end = Arc::new(AtomicBool::new(false));
        let frames = futures_util::stream::iter(vec![
            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"a"))),
            Ok(Frame::data(Bytes::from_static(b"b"))),
        ]);
        let mut body = Tapped::new(StreamBody::new(frames), Some(end.clone()), None);
        body.frame().await.unwrap().unwrap();
        assert!(!end.load(Ordering::Acquire));
        body.frame().await.unwrap().unwrap();
        assert!(body.frame().await.is_none());
        assert!(end.load(Ordering::Acquire));
    }
}
