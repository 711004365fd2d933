//! A streamed request body kept for a retry, as Envoy's router keeps it: the downstream body
//! goes to the attempt as it arrives and a copy of it is retained up to the request's buffer
//! limit (a route's `request_body_buffer_limit` / `per_request_buffer_limit_bytes`, else the
//! listener's `per_connection_buffer_limit_bytes`, 1 MiB by default). A retry replays what was
//! retained and goes on reading the downstream body where the last attempt left it, so a
//! request whose length is unknown (chunked HTTP/1, HTTP/2 without `content-length`: every
//! gRPC call) can be retried, and one that is still being sent (a client stream) is not held
//! back. Past the limit the copy is dropped and the request can no longer be retried
//! (`retry_or_shadow_abandoned`, Envoy's counter).
//!
//! Each attempt reads through its own [`Reader`]; they share the downstream body under a lock
//! that is hardly ever contended (one attempt reads at a time, though a failed attempt's body
//! may still be polled for a moment; a hedged request's attempts are not given one) and is
//! taken once per body frame of requests that have a retry policy and a body not read whole
//! before the first attempt. A reader waiting on the client is woken whichever reader pulls the
//! next frame (the source keeps one waker, the last poller's). The copy lives as long as a
//! reader does (a retry still replaying it when its answer came), bounded by the limit.

use std::{
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll, Waker},
};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body as _, Frame, SizeHint};

use crate::{
    http::{Body, BodyError},
    server::stats::ClusterStats,
};

/// An empty body that goes upstream without a length: the request's headers end its stream and
/// carry no `content-length` (a filter took the client's out).
pub(crate) fn ended_unsized() -> Body {
    http_body_util::BodyExt::boxed(EndedUnsized)
}

struct EndedUnsized;

impl http_body::Body for EndedUnsized {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        true
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// A body read whole that goes upstream without a length, as its request came (chunked).
pub(crate) fn unsized_body(b: Bytes) -> Body {
    let frame: Result<Frame<Bytes>, BodyError> = Ok(Frame::data(b));
    http_body_util::BodyExt::boxed(http_body_util::StreamBody::new(futures_util::stream::iter(
        [frame],
    )))
}

/// The request's body and the copy kept of it.
pub(crate) struct Retained(Arc<Mutex<State>>);

struct State {
    /// The downstream body; `None` once it ended.
    source: Option<Body>,
    /// The data frames read so far, while under the limit and retained.
    chunks: Vec<Bytes>,
    /// Bytes in `chunks`.
    len: u64,
    /// Data frames read from `source` (a reader at this index reads on from the source).
    read: usize,
    /// Bytes read from `source`.
    read_bytes: u64,
    limit: u64,
    /// The copy was dropped (over the limit).
    dropped: bool,
    /// Readers waiting for the source's next frame.
    waiters: Vec<Waker>,
    /// The downstream body ended (its trailers, if any, in `trailers`).
    ended: bool,
    trailers: Option<HeaderMap>,
    /// The downstream body broke off.
    failed: bool,
    /// The source's exact length, when it said (`content-length`).
    exact: Option<u64>,
    stats: Arc<ClusterStats>,
}

impl Retained {
    /// Retains `body` up to `limit` bytes; an overflow counts on `stats`.
    pub(crate) fn new(body: Body, limit: u64, stats: Arc<ClusterStats>) -> Self {
        let exact = body.size_hint().exact();
        Self(Arc::new(Mutex::new(State {
            source: Some(body),
            chunks: Vec::new(),
            len: 0,
            read: 0,
            read_bytes: 0,
            waiters: Vec::new(),
            limit,
            dropped: false,
            ended: false,
            trailers: None,
            failed: false,
            exact,
            stats,
        })))
    }

    /// A body for another attempt: what was retained, then the rest of the downstream body.
    /// `None` once the copy was dropped.
    pub(crate) fn reader(&self) -> Option<Body> {
        if lock(&self.0).dropped {
            return None;
        }
        Some(http_body_util::BodyExt::boxed(Reader {
            state: Arc::clone(&self.0),
            at: 0,
            sent: 0,
            trailers_sent: false,
        }))
    }

    /// Whether another attempt could still be given the whole body.
    pub(crate) fn replayable(&self) -> bool {
        !lock(&self.0).dropped
    }

    /// The whole body, when it has been read to its end and retained (an internal redirect
    /// sends it again).
    pub(crate) fn whole(&self) -> Option<Bytes> {
        let s = lock(&self.0);
        if s.dropped || !s.ended || s.trailers.is_some() {
            return None;
        }
        Some(match s.chunks.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            many => Bytes::from(many.concat()),
        })
    }
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // A reader panicking mid-frame leaves the state as consistent as before the frame.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One attempt's view of the body.
struct Reader {
    state: Arc<Mutex<State>>,
    /// Index of the next data frame this reader gives.
    at: usize,
    /// Bytes given so far (for the size hint).
    sent: u64,
    trailers_sent: bool,
}

impl Reader {
    fn poll_locked(
        &mut self,
        s: &mut State,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if self.at < s.read {
            // Behind the source: replay the retained frame, if it still is.
            if s.dropped {
                return Poll::Ready(Some(Err("the request body was not retained".into())));
            }
            let chunk = s.chunks[self.at].clone();
            self.at += 1;
            self.sent += chunk.len() as u64;
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if s.ended {
            if !std::mem::replace(&mut self.trailers_sent, true) {
                if let Some(t) = &s.trailers {
                    return Poll::Ready(Some(Ok(Frame::trailers(t.clone()))));
                }
            }
            return Poll::Ready(None);
        }
        if s.failed {
            return Poll::Ready(Some(Err("the request body broke off".into())));
        }
        let Some(source) = s.source.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = match Pin::new(source).poll_frame(cx) {
            Poll::Pending => {
                if !s.waiters.iter().any(|w| w.will_wake(cx.waker())) {
                    s.waiters.push(cx.waker().clone());
                }
                return Poll::Pending;
            }
            Poll::Ready(None) => {
                s.ended = true;
                s.source = None;
                self.trailers_sent = true;
                return Poll::Ready(None);
            }
            Poll::Ready(Some(Err(e))) => {
                s.failed = true;
                return Poll::Ready(Some(Err(e)));
            }
            Poll::Ready(Some(Ok(frame))) => frame,
        };
        match frame.into_data() {
            Ok(data) => {
                let n = data.len() as u64;
                if !s.dropped {
                    if s.len + n > s.limit {
                        s.dropped = true;
                        s.chunks = Vec::new();
                        s.stats.retry_or_shadow_abandoned.inc();
                    } else {
                        s.chunks.push(data.clone());
                        s.len += n;
                    }
                }
                s.read += 1;
                s.read_bytes += n;
                self.at = s.read;
                self.sent += n;
                // A body of known length ends with its last byte (hyper stops polling there,
                // whether or not the client's end of stream came with it).
                let done = s.exact == Some(s.read_bytes)
                    || s.source.as_ref().is_some_and(|b| b.is_end_stream());
                if done {
                    s.ended = true;
                    s.source = None;
                    self.trailers_sent = true;
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Err(frame) => {
                if let Some(t) = frame.trailers_ref() {
                    s.trailers = Some(t.clone());
                    s.ended = true;
                    s.source = None;
                    self.trailers_sent = true;
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }
}

impl Drop for Reader {
    /// A reader that goes while others wait on the source: one of them polls it again (the
    /// source may hold this one's waker).
    fn drop(&mut self) {
        let waiters = std::mem::take(&mut lock(&self.state).waiters);
        waiters.into_iter().for_each(Waker::wake);
    }
}

impl http_body::Body for Reader {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let state = Arc::clone(&self.state);
        let mut s = lock(&state);
        let polled = self.poll_locked(&mut s, cx);
        // Whoever pulled from the source wakes the readers waiting on it.
        let wake = if polled.is_ready() && self.at == s.read {
            std::mem::take(&mut s.waiters)
        } else {
            Vec::new()
        };
        drop(s);
        wake.into_iter().for_each(Waker::wake);
        polled
    }

    fn is_end_stream(&self) -> bool {
        let s = lock(&self.state);
        s.ended && self.at >= s.read && (self.trailers_sent || s.trailers.is_none())
    }

    fn size_hint(&self) -> SizeHint {
        match lock(&self.state).exact {
            Some(n) => SizeHint::with_exact(n.saturating_sub(self.sent)),
            None => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, StreamBody};

    use super::{super::test_bodies::fed, *};

    fn chunked(parts: &[&'static str], trailers: bool) -> Body {
        let mut frames: Vec<Result<Frame<Bytes>, BodyError>> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
            .collect();
        if trailers {
            let mut t = HeaderMap::new();
            t.insert("grpc-status", http::HeaderValue::from_static("0"));
            frames.push(Ok(Frame::trailers(t)));
        }
        StreamBody::new(futures_util::stream::iter(frames)).boxed()
    }

    async fn read(b: Body) -> Result<(Bytes, Option<HeaderMap>), BodyError> {
        let c = b.collect().await?;
        let t = c.trailers().cloned();
        Ok((c.to_bytes(), t))
    }

    #[tokio::test]
    async fn a_retry_replays_what_the_first_attempt_read_then_reads_on() {
        let r = Retained::new(chunked(&["ab", "cd", "ef"], true), 100, Default::default());
        let mut first = r.reader().unwrap();
        // The first attempt takes one frame and fails.
        let f = first.frame().await.unwrap().unwrap();
        assert_eq!(f.into_data().unwrap(), "ab");
        drop(first);
        let (body, trailers) = read(r.reader().unwrap()).await.unwrap();
        assert_eq!(body, "abcdef");
        assert_eq!(trailers.unwrap()["grpc-status"], "0");
        // Read to its end, with trailers: not sent again by a redirect (Envoy's needs the
        // request complete; a body with trailers is never redirected here).
        assert!(r.whole().is_none());
        // A third reader replays all of it.
        assert_eq!(read(r.reader().unwrap()).await.unwrap().0, "abcdef");
    }

    #[tokio::test]
    async fn past_the_limit_the_copy_goes_and_the_attempt_reading_goes_on() {
        let stats: Arc<ClusterStats> = Default::default();
        let r = Retained::new(chunked(&["abcd", "efgh", "ij"], false), 6, stats.clone());
        let (body, _) = read(r.reader().unwrap()).await.unwrap();
        assert_eq!(body, "abcdefghij");
        assert!(!r.replayable());
        assert!(r.reader().is_none());
        assert_eq!(stats.retry_or_shadow_abandoned.get(), 1);
    }

    #[tokio::test]
    async fn a_reader_left_behind_by_the_overflow_fails_instead_of_skipping_data() {
        let r = Retained::new(chunked(&["abcd", "efgh"], false), 6, Default::default());
        let mut ahead = r.reader().unwrap();
        let mut behind = r.reader().unwrap();
        ahead.frame().await.unwrap().unwrap();
        ahead.frame().await.unwrap().unwrap();
        assert!(behind.frame().await.unwrap().is_err());
    }

    #[tokio::test]
    async fn a_whole_body_read_to_its_end_can_be_sent_again_and_a_late_replay_still_reads_it() {
        let r = Retained::new(chunked(&["ab", "cd"], false), 100, Default::default());
        assert!(r.whole().is_none(), "not read yet");
        let reader = r.reader().unwrap();
        assert_eq!(read(reader).await.unwrap().0, "abcd");
        assert_eq!(r.whole().unwrap(), "abcd");
        // A retry still replaying when the request is answered (the owner gone) reads it all.
        let late = r.reader().unwrap();
        drop(r);
        assert_eq!(read(late).await.unwrap().0, "abcd");
    }

    #[tokio::test]
    async fn a_reader_waiting_on_the_client_is_woken_when_another_pulls() {
        let (tx, source) = fed(None);
        let r = Retained::new(source, 100, Default::default());
        let (mut a, mut b) = (r.reader().unwrap(), r.reader().unwrap());
        // b waits first, then a polls the source (its waker replaces b's there).
        let b_next =
            tokio::spawn(async move { b.frame().await.map(|f| f.map(|f| f.into_data().ok())) });
        tokio::task::yield_now().await;
        let a_next = tokio::spawn(async move {
            let f = a.frame().await;
            (a, f)
        });
        tokio::task::yield_now().await;
        tx.send(Ok(Frame::data(Bytes::from_static(b"x"))))
            .await
            .unwrap();
        let (_a, f) = a_next.await.unwrap();
        assert_eq!(f.unwrap().unwrap().into_data().unwrap(), "x");
        let got = tokio::time::timeout(std::time::Duration::from_secs(2), b_next)
            .await
            .expect("b woken")
            .unwrap();
        assert_eq!(got.unwrap().unwrap().unwrap(), "x");
    }

    #[tokio::test]
    async fn a_known_length_ends_with_its_last_byte_without_the_clients_end() {
        // A body that says 4 bytes, sends them and never ends its stream (an HTTP/2 client
        // whose END_STREAM comes in a later, empty frame).
        let (tx, source) = fed(Some(4));
        tx.send(Ok(Frame::data(Bytes::from_static(b"abcd"))))
            .await
            .unwrap();
        let r = Retained::new(source, 100, Default::default());
        let mut reader = r.reader().unwrap();
        reader.frame().await.unwrap().unwrap();
        assert!(reader.is_end_stream());
        assert_eq!(r.whole().unwrap(), "abcd");
        drop(tx);
    }

    #[tokio::test]
    async fn the_size_hint_is_what_is_left_of_a_known_length() {
        let body = http_body_util::Full::new(Bytes::from_static(b"hello"))
            .map_err(|e| match e {})
            .boxed();
        let r = Retained::new(body, 100, Default::default());
        let mut reader = r.reader().unwrap();
        assert_eq!(reader.size_hint().exact(), Some(5));
        // Its one frame is its end: the body is whole without polling for the end.
        assert_eq!(
            reader.frame().await.unwrap().unwrap().into_data().unwrap(),
            "hello"
        );
        assert!(reader.is_end_stream());
        assert_eq!(r.whole().unwrap(), "hello");
        let again = r.reader().unwrap();
        assert_eq!(again.size_hint().exact(), Some(5));
        assert!(!again.is_end_stream());
    }
}
