//! `%BYTES_RECEIVED%` of a request: the body bytes the proxy received and forwarded, counted as
//! they pass (a request answered without an upstream has received none, as Envoy counts it).

use std::{
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

/// A request body that adds the length of each data frame it yields to a counter.
pub(crate) struct CountedBody<B> {
    inner: B,
    count: Arc<AtomicU64>,
}

impl<B> CountedBody<B> {
    /// Wraps `inner`, counting into `count`.
    pub(crate) fn new(inner: B, count: Arc<AtomicU64>) -> Self {
        Self { inner, count }
    }
}

impl<B: HttpBody<Data = Bytes> + Unpin> HttpBody for CountedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &r {
            if let Some(d) = f.data_ref() {
                self.count.fetch_add(d.len() as u64, Ordering::Relaxed);
            }
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
        let got = CountedBody::new(body, count.clone())
            .collect()
            .await
            .expect("body")
            .to_bytes();
        assert_eq!(
            (got.as_ref(), count.load(Ordering::Relaxed)),
            (&b"hello world"[..], 11)
        );
    }
}
