//! `Expect: 100-continue`, as Envoy's HCM handles it (`proxy_100_continue`).
//!
//! Envoy (default `false`) answers `100 Continue` itself as soon as it has the request head,
//! before routing (a direct response is preceded by it too), and removes `Expect` from the
//! request it forwards. With `proxy_100_continue: true` (istiod sets it) `Expect` goes upstream
//! and the upstream's `100 Continue` is relayed. hyper's HTTP/1 server sends `100 Continue`
//! itself the first time the body is read and cannot read a body without it; so the default
//! asks for the body at once (one poll, nothing read), and under `true` the `100 Continue` is
//! sent when forwarding starts reading the body (docs/config.md, Known divergences).

use std::{
    pin::Pin,
    task::{Context, Poll, Waker},
};

use bytes::{Bytes, BytesMut};
use http::{header, Request, Version};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};

/// What the request's body became.
pub(super) enum Continued {
    /// Untouched (or asked for, nothing read): forward the stream.
    Stream,
    /// Read whole (see [`on_request`]).
    Buffered(Bytes),
}

/// Applies `Expect: 100-continue` before routing. `Err` when the client's body failed.
pub(super) async fn on_request(
    proxy_100_continue: bool,
    req: &mut Request<Incoming>,
) -> Result<Continued, ()> {
    // hyper answers 100-continue on HTTP/1.1 only, as Envoy's codec.
    if req.version() != Version::HTTP_11 || proxy_100_continue {
        return Ok(Continued::Stream);
    }
    let expects = req
        .headers()
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if !expects {
        return Ok(Continued::Stream);
    }
    req.headers_mut().remove(header::EXPECT);
    if req.body().is_end_stream() {
        return Ok(Continued::Stream);
    }
    // Ask for the body once: hyper queues `100 Continue` (it reads a waiting body only after
    // this poll asks, so nothing is returned yet), and the yield lets the connection write it
    // before a reply that needs no await (a direct response).
    let polled = {
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(req.body_mut()).poll_frame(&mut cx)
    };
    match polled {
        Poll::Pending | Poll::Ready(None) => {
            tokio::task::yield_now().await;
            Ok(Continued::Stream)
        }
        Poll::Ready(Some(Err(_))) => Err(()),
        // Not reached with hyper's HTTP/1 dispatch; kept lossless: the rest is read too.
        Poll::Ready(Some(Ok(first))) => {
            let mut buf = BytesMut::new();
            if let Ok(d) = first.into_data() {
                buf.extend_from_slice(&d);
            }
            let rest = req.body_mut().collect().await.map_err(|_| ())?.to_bytes();
            buf.extend_from_slice(&rest);
            Ok(Continued::Buffered(buf.freeze()))
        }
    }
}
