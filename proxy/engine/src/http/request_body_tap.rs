//! What the connection manager learns of a downstream request body on its way upstream: that it
//! has ended (the HCM's `request_timeout` is then disarmed, [`super::request_timeout`]) and how
//! many bytes it carried (the access log's `%BYTES_RECEIVED%`). One wrapper for both, put on a
//! streamed body only when one of them is wanted.

use std::{
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

/// A request body that raises `end` once it has yielded its last frame and adds the length of
/// each data frame to `count`.
pub(crate) struct Tapped<B> {
    inner: B,
    end: Option<Arc<AtomicBool>>,
    count: Option<Arc<AtomicU64>>,
}

impl<B: HttpBody + Unpin> Tapped<B> {
    /// Wraps `inner`.
    pub(crate) fn new(
        inner: B,
        end: Option<Arc<AtomicBool>>,
        count: Option<Arc<AtomicU64>>,
    ) -> Self {
        let this = Self { inner, end, count };
        if this.inner.is_end_stream() {
            this.ended();
        }
        this
    }

    fn ended(&self) {
        if let Some(end) = &self.end {
            end.store(true, Ordering::Release);
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
        if let (Poll::Ready(Some(Ok(f))), Some(count)) = (&r, &self.count) {
            if let Some(d) = f.data_ref() {
                count.fetch_add(d.len() as u64, Ordering::Relaxed);
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
        let count = Arc::new(AtomicU64::new(0));
        let got = Tapped::new(body, None, Some(count.clone()))
            .collect()
            .await
            .expect("body")
            .to_bytes();
        assert_eq!(
            (got.as_ref(), count.load(Ordering::Relaxed)),
            (&b"hello world"[..], 11)
        );
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
