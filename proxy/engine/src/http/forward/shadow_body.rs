//! The body of a shadow (`request_mirror_policies`) when the request's body is streamed: as
//! Envoy's router streams a shadow (`streamingShadow`), each frame the main request reads from
//! the client goes to the shadows too, so a chunked, gRPC or large request is mirrored whole.
//!
//! The main request never waits for a shadow: each shadow has a queue of
//! [`SHADOW_QUEUE_FRAMES`] frames, and a shadow that falls that far behind is dropped (its
//! request reset) where Envoy would slow the client down. A shadow whose main request stops
//! reading before the end (answered early, reset) is reset too, never sent as if complete.

use std::{
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use tokio::sync::mpsc;

use crate::http::{Body, BodyError};

/// Frames a shadow may lag behind its main request before it is dropped.
pub(crate) const SHADOW_QUEUE_FRAMES: usize = 64;

/// The main request's body, handing each frame it gives to the shadows as well.
pub(crate) struct Teed {
    source: Body,
    /// The source's exact length (`content-length`) and the bytes read so far: hyper stops
    /// polling a body of known length at its last byte, whether or not its end came with it.
    exact: Option<u64>,
    seen: u64,
    /// Each shadow still fed: its queue, and its flag set when the source ended (a shadow
    /// whose queue closes without it was cut off).
    shadows: Vec<(mpsc::Sender<Frame<Bytes>>, Arc<AtomicBool>)>,
}

/// Splits `source` into the main request's body and `n` shadow bodies.
pub(crate) fn tee(source: Body, n: usize) -> (Body, Vec<Body>) {
    let hint = source.size_hint();
    let (senders, bodies) = (0..n)
        .map(|_| {
            let (tx, rx) = mpsc::channel(SHADOW_QUEUE_FRAMES);
            let ended = Arc::new(AtomicBool::new(false));
            let body = ShadowBody {
                rx,
                ended: Arc::clone(&ended),
                hint,
            };
            ((tx, ended), http_body_util::BodyExt::boxed(body))
        })
        .unzip();
    let main = Teed {
        exact: hint.exact(),
        seen: 0,
        source,
        shadows: senders,
    };
    (http_body_util::BodyExt::boxed(main), bodies)
}

impl http_body::Body for Teed {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let polled = Pin::new(&mut self.source).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                let copy = || match (frame.data_ref(), frame.trailers_ref()) {
                    (Some(d), _) => Some(Frame::data(d.clone())),
                    (None, Some(t)) => Some(Frame::trailers(t.clone())),
                    (None, None) => None,
                };
                // A full queue drops its shadow (the main request is not held back).
                self.shadows
                    .retain(|(tx, _)| copy().is_some_and(|f| tx.try_send(f).is_ok()));
                self.seen += n;
                if self.source.is_end_stream() || self.exact == Some(self.seen) {
                    self.finish();
                }
            }
            Poll::Ready(None) => self.finish(),
            // The client's body broke off: the shadows are cut off with it.
            Poll::Ready(Some(Err(_))) => self.shadows.clear(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.source.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.source.size_hint()
    }
}

impl Teed {
    /// The source ended: the shadows' queues end cleanly.
    fn finish(&mut self) {
        for (_, ended) in self.shadows.drain(..) {
            ended.store(true, Ordering::Release);
        }
    }
}

/// A shadow's body: the frames its main request read, then its end, or an error when the main
/// request stopped short of the end or the shadow fell behind.
struct ShadowBody {
    rx: mpsc::Receiver<Frame<Bytes>>,
    ended: Arc<AtomicBool>,
    hint: SizeHint,
}

impl http_body::Body for ShadowBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(f)) => Poll::Ready(Some(Ok(f))),
            Poll::Ready(None) if self.ended.load(Ordering::Acquire) => Poll::Ready(None),
            Poll::Ready(None) => {
                Poll::Ready(Some(Err("the mirrored request body was cut off".into())))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, StreamBody};

    use super::{super::test_bodies::fed, *};

    fn chunked(parts: Vec<&'static str>) -> Body {
        let frames: Vec<Result<Frame<Bytes>, BodyError>> = parts
            .into_iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames)).boxed()
    }

    #[tokio::test]
    async fn every_shadow_gets_what_the_main_request_read() {
        let (main, shadows) = tee(chunked(vec!["ab", "cd"]), 2);
        assert_eq!(main.collect().await.unwrap().to_bytes(), "abcd");
        for s in shadows {
            assert_eq!(s.collect().await.unwrap().to_bytes(), "abcd");
        }
    }

    #[tokio::test]
    async fn a_main_request_that_stops_short_cuts_its_shadow_off() {
        let (mut main, mut shadows) = tee(chunked(vec!["ab", "cd"]), 1);
        main.frame().await.unwrap().unwrap();
        drop(main);
        let shadow = shadows.pop().unwrap();
        assert!(shadow.collect().await.is_err());
    }

    #[tokio::test]
    async fn a_shadow_that_falls_behind_is_dropped_and_the_main_request_goes_on() {
        let parts = vec!["x"; SHADOW_QUEUE_FRAMES + 1];
        let (main, mut shadows) = tee(chunked(parts), 1);
        assert_eq!(
            main.collect().await.unwrap().to_bytes().len(),
            SHADOW_QUEUE_FRAMES + 1
        );
        assert!(shadows.pop().unwrap().collect().await.is_err());
    }

    #[tokio::test]
    async fn a_known_length_ends_the_shadow_at_its_last_byte_without_the_clients_end() {
        // 5 bytes said and sent, the stream never ended (END_STREAM in a later, empty frame).
        let (tx, source) = fed(Some(5));
        tx.send(Ok(Frame::data(Bytes::from_static(b"whole"))))
            .await
            .unwrap();
        let (mut main, mut shadows) = tee(source, 1);
        main.frame().await.unwrap().unwrap();
        drop(main);
        let shadow = shadows.pop().unwrap();
        assert_eq!(shadow.collect().await.unwrap().to_bytes(), "whole");
        drop(tx);
    }

    #[tokio::test]
    async fn a_known_length_ends_the_shadow_at_its_last_byte() {
        let body = http_body_util::Full::new(Bytes::from_static(b"whole"))
            .map_err(|e| match e {})
            .boxed();
        let (mut main, mut shadows) = tee(body, 1);
        assert_eq!(shadows[0].size_hint().exact(), Some(5));
        // The main request reads its one frame and, its length reached, no further.
        main.frame().await.unwrap().unwrap();
        let shadow = shadows.pop().unwrap();
        assert_eq!(shadow.collect().await.unwrap().to_bytes(), "whole");
        drop(main);
    }
}
