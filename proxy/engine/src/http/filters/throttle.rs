//! The fault filter's `response_rate_limit`: a response body sent at most `kbps` KiB/s, as
//! Envoy's `StreamRateLimiter` paces it: a token bucket of bytes (`kbps` x 1024 at most,
//! refilled at that rate per second) that holds one fill interval's worth (50 ms) when the
//! request arrives; data that arrives goes out at once as far as the tokens allow, and while
//! some is left, the rest goes every 50 ms as far as the tokens then allow. Trailers follow the
//! last byte.

use std::{
    future::Future,
    pin::Pin,
    task::{ready, Context, Poll},
    time::Duration,
};

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body as _, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::fault::ActiveFault;
use crate::http::{Body, BodyError};

/// Envoy's fill interval.
const FILL_INTERVAL: Duration = Duration::from_millis(50);

/// A response body paced to `kbps` KiB/s; the faults it holds stay active until it ends.
pub struct Throttled {
    inner: Body,
    /// Bytes per second, and the bucket's size.
    rate: f64,
    /// Tokens (bytes) in the bucket as of `at`.
    tokens: f64,
    at: Instant,
    /// Bytes received and not yet let out.
    buf: BytesMut,
    trailers: Option<HeaderMap>,
    inner_done: bool,
    /// When the pacing timer fires next (None: not running, data goes out when it arrives).
    next: Option<Instant>,
    sleep: Option<Pin<Box<Sleep>>>,
    _faults: Vec<ActiveFault>,
}

impl Throttled {
    /// Paces `inner` to `kbps` KiB/s with a bucket made at `since` (the request's arrival).
    pub fn new(inner: Body, kbps: u64, since: Instant, faults: Vec<ActiveFault>) -> Self {
        let rate = kbps.saturating_mul(1024) as f64;
        Self {
            inner,
            rate,
            tokens: (rate * FILL_INTERVAL.as_secs_f64()).floor(),
            at: since,
            buf: BytesMut::new(),
            trailers: None,
            inner_done: false,
            next: None,
            sleep: None,
            _faults: faults,
        }
    }

    /// Refills the bucket up to `now`.
    fn refill(&mut self, now: Instant) {
        let earned = now.saturating_duration_since(self.at).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + earned).min(self.rate);
        self.at = now;
    }

    /// Reads what the inner body has ready.
    fn pull(&mut self, cx: &mut Context<'_>) -> Result<(), BodyError> {
        while !self.inner_done {
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(f))) => match f.into_data() {
                    Ok(d) => self.buf.extend_from_slice(&d),
                    Err(f) => {
                        if let Ok(t) = f.into_trailers() {
                            self.trailers = Some(t);
                        }
                    }
                },
                Poll::Ready(Some(Err(e))) => return Err(e),
                Poll::Ready(None) => self.inner_done = true,
                Poll::Pending => break,
            }
        }
        Ok(())
    }
}

impl http_body::Body for Throttled {
    type Data = Bytes;
    type Error = BodyError;

    fn is_end_stream(&self) -> bool {
        self.inner_done && self.buf.is_empty() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        let buffered = self.buf.remaining() as u64;
        let mut h = SizeHint::new();
        h.set_lower(inner.lower() + buffered);
        if let Some(u) = inner.upper() {
            h.set_upper(u + buffered);
        }
        h
    }

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if let Err(e) = this.pull(cx) {
            return Poll::Ready(Some(Err(e)));
        }
        if this.buf.is_empty() {
            if !this.inner_done {
                return Poll::Pending;
            }
            return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
        }
        loop {
            let now = Instant::now();
            match this.next {
                Some(at) if at > now => {
                    let sleep = match this.sleep.as_mut() {
                        Some(s) => {
                            s.as_mut().reset(at);
                            s
                        }
                        None => this.sleep.insert(Box::pin(tokio::time::sleep_until(at))),
                    };
                    ready!(sleep.as_mut().poll(cx));
                    continue;
                }
                _ => {}
            }
            // The timer fires: out goes what the tokens allow; the timer runs on while data is
            // left.
            this.refill(now);
            let n = (this.tokens.floor() as usize).min(this.buf.len());
            this.tokens -= n as f64;
            let out = this.buf.split_to(n).freeze();
            this.next = (!this.buf.is_empty()).then(|| now + FILL_INTERVAL);
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(out))));
            }
        }
    }
}
