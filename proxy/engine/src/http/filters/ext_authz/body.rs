//! `with_request_body` (Istio's `includeRequestBodyInCheck`): the request body read before
//! the check and sent with it, as Envoy's ext_authz buffers it.
//!
//! Envoy holds the request until its body has ended or `max_request_bytes` have come; with
//! `allow_partial_message` the check then carries the first `max_request_bytes` and an
//! `x-envoy-auth-partial-body: true` header when more had come, without it a body over the
//! bound is the HCM's 413 (the decoder buffer's limit) before any check. Here the body is read
//! once, before the filters run, up to the largest bound of the chain's filters that want it
//! ([`Want`]); each filter takes its part when its turn comes, so a filter before it still
//! answers first. What was read goes upstream first, then the rest of the stream.

use std::{
    pin::Pin,
    task::{Context, Poll},
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

/// How much of the body the chain's filters want read before they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Want {
    /// The largest `max_request_bytes`.
    max: usize,
    /// Every filter that wants it takes a partial body: reading stops once `max` have come
    /// (Envoy's full buffer); else it stops only past `max` (a body over the bound is refused).
    partial: bool,
}

impl Want {
    /// What one filter's settings want.
    pub(crate) fn of(s: &BodySettings) -> Want {
        Want {
            max: s.max,
            partial: s.partial,
        }
    }

    /// What two filters want together.
    pub(crate) fn and(self, other: Want) -> Want {
        Want {
            max: self.max.max(other.max),
            partial: self.partial && other.partial,
        }
    }

    fn enough(&self, len: usize) -> bool {
        len > self.max || (self.partial && len >= self.max)
    }
}

/// The request body as read before the filters ran.
#[derive(Debug, Default)]
pub struct BufferedBody {
    /// What came.
    pub bytes: Bytes,
    /// The body ended (`trailers` hold its trailers, if it had any).
    pub complete: bool,
    pub trailers: Option<HeaderMap>,
    /// Its length was known when it came (a Content-Length): upstream it goes with one too,
    /// else as it came (chunked).
    pub sized: bool,
}

impl BufferedBody {
    /// The body may go upstream as these bytes alone, with their length.
    pub fn is_whole(&self) -> bool {
        self.complete && self.trailers.is_none() && self.sized
    }
}

/// What one filter sends of the buffered body.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ForCheck<'a> {
    /// Over `max_request_bytes` without `allow_partial_message`: the HCM's 413.
    TooLarge,
    /// The first `max_request_bytes` (all of it when shorter), whether more had come
    /// (`x-envoy-auth-partial-body`), and the bytes received so far (the check's `size`).
    Send {
        data: &'a [u8],
        partial: bool,
        size: u64,
    },
}

impl BodySettings {
    /// What this filter sends of `b`.
    pub(crate) fn take<'a>(&self, b: &'a BufferedBody) -> ForCheck<'a> {
        let len = b.bytes.len();
        if len > self.max && !self.partial {
            return ForCheck::TooLarge;
        }
        let n = len.min(self.max);
        ForCheck::Send {
            data: &b.bytes[..n],
            partial: n != len,
            size: len as u64,
        }
    }
}

/// Reads `body` until it ends or `want` has come. `Err` when the client's body broke off.
pub(crate) async fn read(body: &mut Incoming, want: Want) -> Result<BufferedBody, ()> {
    let mut buf = BytesMut::new();
    let mut out = BufferedBody {
        sized: body.size_hint().exact().is_some(),
        ..BufferedBody::default()
    };
    while !want.enough(buf.len()) {
        match body.frame().await {
            None => {
                out.complete = true;
                break;
            }
            Some(Err(_)) => return Err(()),
            Some(Ok(f)) => match f.into_data() {
                Ok(d) => buf.extend_from_slice(&d),
                Err(f) => {
                    out.trailers = f.into_trailers().ok();
                    out.complete = true;
                    break;
                }
            },
        }
    }
    if !out.complete && body.is_end_stream() {
        out.complete = true;
    }
    out.bytes = buf.freeze();
    Ok(out)
}

/// The body that goes upstream after a part of it was read: that part, then the rest of the
/// stream (if it had not ended), then the trailers read with it.
#[derive(Debug)]
pub(crate) struct Prefixed {
    prefix: Option<Bytes>,
    rest: Option<Incoming>,
    trailers: Option<HeaderMap>,
    /// The length is known (see [`BufferedBody::sized`]).
    sized: bool,
}

impl Prefixed {
    /// `read` went before; `rest` is the stream it read from.
    pub(crate) fn new(read: BufferedBody, rest: Incoming) -> Prefixed {
        Prefixed {
            prefix: Some(read.bytes).filter(|b| !b.is_empty()),
            rest: (!read.complete).then_some(rest),
            trailers: read.trailers,
            sized: read.sized,
        }
    }
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

    fn body(s: &str, complete: bool) -> BufferedBody {
        BufferedBody {
            bytes: Bytes::copy_from_slice(s.as_bytes()),
            complete,
            trailers: None,
            sized: true,
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
        assert_eq!(
            whole.take(&body("abcd", true)),
            ForCheck::Send {
                data: b"abcd",
                partial: false,
                size: 4
            }
        );
        assert_eq!(whole.take(&body("abcde", false)), ForCheck::TooLarge);
        assert_eq!(
            partial.take(&body("abcdef", false)),
            ForCheck::Send {
                data: b"abcd",
                partial: true,
                size: 6
            }
        );
        // Exactly the bound with more to come: Envoy's header says false (its buffer held no more).
        assert_eq!(
            partial.take(&body("abcd", false)),
            ForCheck::Send {
                data: b"abcd",
                partial: false,
                size: 4
            }
        );
    }

    #[test]
    fn reading_stops_at_the_bound_for_partial_filters_and_past_it_otherwise() {
        let w = |max, partial| Want { max, partial };
        assert!(!w(4, false).enough(4));
        assert!(w(4, false).enough(5));
        assert!(w(4, true).enough(4));
        assert_eq!(w(4, true).and(w(8, false)), w(8, false));
        assert_eq!(w(4, true).and(w(2, true)), w(4, true));
    }
}
