//! `with_request_body` (Istio's `includeRequestBodyInCheck`): the request body read before
//! the check and sent with it, as Envoy's ext_authz buffers it.
//!
//! Envoy holds the request until its body has ended or `max_request_bytes` have come; with
//! `allow_partial_message` the check then carries the first `max_request_bytes` and an
//! `x-envoy-auth-partial-body: true` header when more had come, without it a body over the
//! bound is the HCM's 413 (the decoder buffer's limit) before any check. Here the body is read
//! when the first filter that runs and wants it has its turn ([`BodySlot`]), up to its bound
//! (a later one with a larger bound reads on), so a route without such a filter streams its
//! body as before and a filter before it still answers first. What was read goes upstream
//! first, then the rest of the stream.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::Deserialize;

use crate::config::{ConfigError, FieldPath};

/// The header that tells the service whether it got the whole body.
pub(crate) const PARTIAL_HEADER: &str = "x-envoy-auth-partial-body";

/// `BufferSettings`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBufferSettings {
    max_request_bytes: Option<u32>,
    allow_partial_message: Option<bool>,
    pack_as_bytes: Option<bool>,
}

/// A filter's `with_request_body`, compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BodySettings {
    /// `max_request_bytes`.
    pub max: usize,
    /// `allow_partial_message`.
    pub partial: bool,
    /// `pack_as_bytes`: a gRPC check carries it in `raw_body` instead of `body`.
    pub pack_as_bytes: bool,
}

/// Compiles `with_request_body` at `p`.
pub(crate) fn settings(
    raw: &RawBufferSettings,
    p: &FieldPath,
) -> Result<BodySettings, ConfigError> {
    let max = match raw.max_request_bytes {
        Some(n) if n > 0 => n as usize,
        _ => return Err(p.field("max_request_bytes").err("must be greater than 0")),
    };
    Ok(BodySettings {
        max,
        partial: raw.allow_partial_message == Some(true),
        pack_as_bytes: raw.pack_as_bytes == Some(true),
    })
}

/// The request body, read by the ext_authz filters that want it when their turn comes (the
/// first one that runs and wants it reads up to its bound, a later one with a larger bound
/// reads on), and handed to the router afterwards: untouched when no filter read it.
#[derive(Debug, Default)]
pub struct BodySlot {
    /// The stream (None: a request without one, or taken).
    incoming: Option<Incoming>,
    buf: BytesMut,
    /// The body ended (`trailers` hold its trailers, if it had any).
    complete: bool,
    trailers: Option<HeaderMap>,
    /// Its length was known when it came (a Content-Length): upstream it goes with one too,
    /// else as it came (chunked).
    sized: bool,
    /// HTTP/2: a DATA frame can carry the stream's end; Envoy's HTTP/1 codec ends the body
    /// with an empty frame of its own.
    h2: bool,
    /// The bytes buffered before the last data frame, when that frame carried the end: Envoy
    /// takes it in whatever its size (the buffer's limit is checked on frames before the end).
    end_frame_start: Option<usize>,
    /// The request had a body (its head did not end the stream).
    had_body: bool,
    /// Something was read.
    touched: bool,
    /// `request_timeout`, from the request's start.
    request_deadline: Option<Instant>,
    /// `stream_idle_timeout`: the longest wait for a frame.
    idle: Option<Duration>,
}

/// Why the body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadError {
    /// The client's body broke off (Envoy resets the stream).
    Broken,
    /// No frame within `stream_idle_timeout`.
    Idle,
    /// `request_timeout` passed.
    RequestTimeout,
    /// The stream's deadline (`max_stream_duration`) passed.
    Deadline,
}

impl BodySlot {
    /// The slot for a request's body stream. An upgrade request's is never read (Envoy does
    /// not buffer it: what follows may be the new protocol).
    pub fn new(
        incoming: Incoming,
        version: http::Version,
        upgrade: bool,
        request_deadline: Option<Instant>,
        idle: Option<Duration>,
    ) -> BodySlot {
        let ended = incoming.is_end_stream();
        BodySlot {
            sized: incoming.size_hint().exact().is_some(),
            incoming: Some(incoming),
            complete: ended,
            h2: version == http::Version::HTTP_2,
            had_body: !ended && !upgrade,
            request_deadline,
            idle,
            ..BodySlot::default()
        }
    }

    /// A request without a body.
    #[cfg(test)]
    pub fn none() -> BodySlot {
        BodySlot {
            complete: true,
            ..BodySlot::default()
        }
    }

    /// The whole body has come (read, or none was sent).
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// A filter read from the body.
    pub fn was_read(&self) -> bool {
        self.touched
    }

    /// The request had a body (its head did not end the stream).
    pub(crate) fn had_body(&self) -> bool {
        self.had_body
    }

    /// Whether a body read whole overflows a buffer of `max` bytes the way Envoy's buffer
    /// filter's does: past it, unless it came whole in one final HTTP/2 DATA frame (nothing was
    /// buffered before it; Envoy's HTTP/1 codec always ends a body with a frame of its own).
    pub(crate) fn buffer_overflows(&self, max: usize) -> bool {
        self.had_body && self.buf.len() > max && self.end_frame_start != Some(0)
    }

    /// The body read whole now goes with its length (a filter gave the request its
    /// `content-length`).
    pub(crate) fn set_sized(&mut self) {
        self.sized = true;
    }

    /// The body's bytes read so far.
    pub(crate) fn received(&self) -> u64 {
        self.buf.len() as u64
    }

    /// Reads on until the stream ends or `s` has what it needs: past `max_request_bytes`, or
    /// up to it with `allow_partial_message` (Envoy's full buffer). `deadline` is the stream's.
    pub(crate) async fn fill(
        &mut self,
        s: &BodySettings,
        deadline: Option<Instant>,
    ) -> Result<(), ReadError> {
        let enough = |len: usize| len > s.max || (s.partial && len >= s.max);
        while self.had_body && !self.complete && !enough(self.buf.len()) {
            let Some(body) = self.incoming.as_mut() else {
                break;
            };
            self.touched = true;
            // The nearest of the stream's deadline, `request_timeout` and the idle bound.
            let idle_until = self.idle.map(|d| Instant::now() + d);
            let until = [deadline, self.request_deadline, idle_until]
                .into_iter()
                .flatten()
                .min();
            let frame = match until {
                None => body.frame().await,
                Some(t) => match tokio::time::timeout_at(t.into(), body.frame()).await {
                    Ok(f) => f,
                    Err(_) => {
                        let passed = |d: Option<Instant>| d.is_some_and(|d| d <= t);
                        return Err(if passed(deadline) {
                            ReadError::Deadline
                        } else if passed(self.request_deadline) {
                            ReadError::RequestTimeout
                        } else {
                            ReadError::Idle
                        });
                    }
                },
            };
            match frame {
                None => self.complete = true,
                Some(Err(_)) => return Err(ReadError::Broken),
                Some(Ok(f)) => match f.into_data() {
                    Ok(d) => {
                        let before = self.buf.len();
                        self.buf.extend_from_slice(&d);
                        if body.is_end_stream() {
                            self.complete = true;
                            if self.h2 {
                                self.end_frame_start = Some(before);
                            }
                        }
                    }
                    Err(f) => {
                        self.trailers = f.into_trailers().ok();
                        self.complete = true;
                    }
                },
            }
        }
        Ok(())
    }

    /// What a filter with `s` sends of what has been read (None: the request has no body).
    pub(crate) fn take(&self, s: &BodySettings) -> Option<ForCheck<'_>> {
        if !self.had_body {
            return None;
        }
        let len = self.buf.len();
        // The limit is Envoy's decoder buffer's, checked as each frame before the end comes.
        let checked = self.end_frame_start.unwrap_or(len);
        if checked > s.max && !s.partial {
            return Some(ForCheck::TooLarge);
        }
        let n = len.min(s.max);
        Some(ForCheck::Send {
            data: &self.buf[..n],
            partial: n != len,
        })
    }

    /// The body for the router: the stream untouched, the bytes read when they are all of it
    /// (with a known length), or what was read followed by the rest of the stream.
    pub(crate) fn into_upstream(self) -> Upstream {
        match self.incoming {
            None => Upstream::Whole(Bytes::new()),
            Some(rest) if !self.touched => Upstream::Untouched(rest),
            Some(_) if self.complete && self.trailers.is_none() && self.sized => {
                Upstream::Whole(self.buf.freeze())
            }
            Some(rest) => Upstream::Prefixed(Prefixed {
                prefix: Some(self.buf.freeze()).filter(|b| !b.is_empty()),
                rest: (!self.complete).then_some(rest),
                trailers: self.trailers,
                sized: self.sized,
            }),
        }
    }
}

/// The request body as it goes to the router.
pub(crate) enum Upstream {
    Untouched(Incoming),
    Whole(Bytes),
    Prefixed(Prefixed),
}

/// What one filter sends of the buffered body.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ForCheck<'a> {
    /// Over `max_request_bytes` without `allow_partial_message`: the HCM's 413.
    TooLarge,
    /// The first `max_request_bytes` (all of it when shorter) and whether more had come
    /// (`x-envoy-auth-partial-body`).
    Send { data: &'a [u8], partial: bool },
}

/// A body for a gRPC `string` field, as Envoy's `MessageUtil::sanitizeUtf8String`: each byte
/// that breaks UTF-8 becomes `!` (the length stays).
pub(crate) fn sanitize_utf8(mut data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len());
    loop {
        match std::str::from_utf8(data) {
            Ok(s) => {
                out.push_str(s);
                return out;
            }
            Err(e) => {
                let (valid, rest) = data.split_at(e.valid_up_to());
                // Valid by construction.
                out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                out.push('!');
                data = &rest[1..];
            }
        }
    }
}

/// The body that goes upstream after a part of it was read: that part, then the rest of the
/// stream (if it had not ended), then the trailers read with it.
#[derive(Debug)]
pub(crate) struct Prefixed {
    prefix: Option<Bytes>,
    rest: Option<Incoming>,
    trailers: Option<HeaderMap>,
    /// The length is known (see [`BodySlot`]'s `sized`).
    sized: bool,
}

impl HttpBody for Prefixed {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if let Some(b) = self.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        if let Some(rest) = self.rest.as_mut() {
            match Pin::new(rest).poll_frame(cx) {
                Poll::Ready(None) => self.rest = None,
                other => return other,
            }
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none()
            && self.rest.as_ref().is_none_or(HttpBody::is_end_stream)
            && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        if !self.sized {
            return SizeHint::new();
        }
        let prefix = self.prefix.as_ref().map_or(0, |b| b.len() as u64);
        let rest = match &self.rest {
            Some(r) => r.size_hint(),
            None => SizeHint::with_exact(0),
        };
        let mut h = SizeHint::new();
        if let Some(u) = rest.upper() {
            h.set_upper(u + prefix);
        }
        h.set_lower(rest.lower() + prefix);
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(s: &str, complete: bool, end_frame_start: Option<usize>) -> BodySlot {
        BodySlot {
            buf: BytesMut::from(s.as_bytes()),
            complete,
            had_body: true,
            touched: true,
            end_frame_start,
            ..BodySlot::default()
        }
    }

    #[test]
    fn a_filter_takes_up_to_its_bound_or_refuses_what_is_over_it() {
        let whole = BodySettings {
            max: 4,
            partial: false,
            pack_as_bytes: false,
        };
        let partial = BodySettings {
            partial: true,
            ..whole
        };
        let send = |data: &'static [u8], partial| Some(ForCheck::Send { data, partial });
        assert_eq!(
            whole.take_of(&slot("abcd", true, None)),
            send(b"abcd", false)
        );
        assert_eq!(
            whole.take_of(&slot("abcde", false, None)),
            Some(ForCheck::TooLarge)
        );
        assert_eq!(
            partial.take_of(&slot("abcdef", false, None)),
            send(b"abcd", true)
        );
        // Exactly the bound with more to come: Envoy's header says false (its buffer held no more).
        assert_eq!(
            partial.take_of(&slot("abcd", false, None)),
            send(b"abcd", false)
        );
        // HTTP/2: the frame that carried the end went past the bound; Envoy takes it in.
        assert_eq!(
            whole.take_of(&slot("abcdef", true, Some(0))),
            send(b"abcd", true)
        );
        assert_eq!(
            whole.take_of(&slot("abcdefgh", true, Some(5))),
            Some(ForCheck::TooLarge)
        );
        assert_eq!(whole.take_of(&BodySlot::none()), None);
    }

    impl BodySettings {
        fn take_of<'a>(&self, b: &'a BodySlot) -> Option<ForCheck<'a>> {
            b.take(self)
        }
    }

    #[test]
    fn a_body_that_is_not_utf8_has_each_bad_byte_replaced_by_a_bang() {
        let mut v = b"valid_prefix".to_vec();
        v.extend([0xc3, 0xc7]);
        v.extend(b"valid_middle");
        v.push(0xc4);
        v.extend(b"valid_suffix");
        let s = sanitize_utf8(&v);
        assert_eq!(s, "valid_prefix!!valid_middle!valid_suffix");
        assert_eq!(s.len(), v.len());
        assert_eq!(sanitize_utf8("héllo".as_bytes()), "héllo");
    }
}
