//! One request through a host's pool ([`HostPool::send`]) and the stale keep-alive retry: a
//! reused connection the upstream closed meanwhile gets the request once more on a fresh
//! connection. The response body ([`ReturnOnEnd`]) gives its HTTP/1 connection back to the pool.

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{header, Request, Response, Version};
use hyper::body::Incoming;

use super::{
    connect, ConnectError, HostPool, Idle, IdleConn, Local, PoolBody, Purpose, Sender, StreamSlot,
};
use crate::upstream::Cluster;

/// Why a request got no response.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be had (connect failure or timeout, TLS, overflow).
    Connect(ConnectError),
    /// The connection failed or was reset before a response head arrived.
    Reset,
    /// The request never went out (hyper gave it back: the connection closed first), Envoy's
    /// reset with `upstream_request_started` false (`reset-before-request`).
    NotSent,
    /// The upstream reset the HTTP/2 stream (RST_STREAM) before a response head; `refused`:
    /// with REFUSED_STREAM (`refused-stream`). Envoy's `remote (refused stream) reset`.
    StreamReset {
        /// The reset's code was REFUSED_STREAM.
        refused: bool,
    },
    /// The upstream answered with something that is not an HTTP/1 response head (Envoy's
    /// `ProtocolError` reset reason).
    Protocol,
    /// No response head within the idle time given to [`HostPool::send`] (the request was
    /// reset: its connection closed or its HTTP/2 stream cancelled).
    IdleTimeout,
    /// The request body failed on the downstream side (e.g. malformed chunked encoding from
    /// the client): the client's fault, not the upstream's.
    Downstream,
}

/// How one send on one connection failed.
enum Failure<B> {
    /// The request never left: hyper gave it back untouched.
    NotSent(Box<Request<B>>),
    /// The request (or part of it) went out, then the connection closed before a response.
    NoResponse,
    /// The upstream reset the HTTP/2 stream ([`SendError::StreamReset`]).
    StreamReset { refused: bool },
    /// The request body (the client's) failed while being sent.
    Downstream,
    /// No response head within the idle time.
    IdleTimeout,
    /// The response head did not parse.
    Protocol,
    /// Anything else.
    Failed,
}

impl<B: PoolBody> HostPool<B> {
    /// Sends `req` (origin-form URI and a `Host` header; rewritten for an HTTP/2 connection) to
    /// `addr` on a pooled or new connection.
    ///
    /// A reused connection that fails before a response head arrives was closed by the upstream
    /// while idle (keep-alive race): the request goes once more on a fresh connection — the
    /// same request when it never left (hyper hands it back), else `replay()`'s copy, when the
    /// caller can make one (`None`: not replayable, the failure stands). Every other failure is
    /// left to the caller's retry policy, as Envoy's router does.
    ///
    /// `idle` (the route's `per_try_idle_timeout`) bounds the wait for the response head once a
    /// connection is ready, as Envoy's per-try idle timer armed at `onPoolReady`. `on_conn` is
    /// told the local address of each connection the request goes out on.
    pub async fn send(
        &self,
        cluster: &Cluster,
        addr: SocketAddr,
        req: Request<B>,
        replay: impl FnOnce() -> Option<Request<B>>,
        idle: Option<Duration>,
        on_conn: &(dyn Fn(Local) + Sync),
    ) -> Result<Response<ReturnOnEnd<B>>, SendError> {
        // A cluster that uses the downstream's protocol speaks HTTP/2 for an HTTP/2 request
        // (the caller keeps its version) and HTTP/1.1 for the others.
        let purpose = if cluster.spec.follow_downstream && req.version() != Version::HTTP_2 {
            Purpose::PoolH1
        } else {
            Purpose::Pool
        };
        let (sender, reused, left, stream) = self
            .acquire(cluster, addr, purpose)
            .await
            .map_err(SendError::Connect)?;
        on_conn(sender.local());
        let req = match self
            .send_on(cluster, addr, (sender, stream), left, req, idle)
            .await
        {
            Ok(r) => return Ok(r),
            Err(Failure::NotSent(req)) if reused => *req,
            Err(Failure::NoResponse) if reused => replay().ok_or(SendError::Reset)?,
            Err(f) => return Err(f.into()),
        };
        let sender = connect(cluster, self.target(addr), purpose, self.priority)
            .await
            .map_err(SendError::Connect)?;
        let stream = self.here().pool_h2(cluster, &sender);
        on_conn(sender.local());
        let left = super::requests_left(cluster);
        self.send_on(cluster, addr, (sender, stream), left, req, idle)
            .await
            .map_err(SendError::from)
    }

    /// [`Self::send_head`] within `idle`; dropping the send at the timeout drops its
    /// connection (HTTP/1) or cancels its stream (HTTP/2).
    async fn send_on(
        &self,
        cluster: &Cluster,
        addr: SocketAddr,
        sender: (Sender<B>, StreamSlot),
        left: u32,
        req: Request<B>,
        idle: Option<Duration>,
    ) -> Result<Response<ReturnOnEnd<B>>, Failure<B>> {
        let send = self.send_head(cluster, addr, sender, left, req);
        match idle {
            Some(t) => tokio::time::timeout(t, send)
                .await
                .unwrap_or(Err(Failure::IdleTimeout)),
            None => send.await,
        }
    }

    async fn send_head(
        &self,
        cluster: &Cluster,
        addr: SocketAddr,
        (sender, stream): (Sender<B>, StreamSlot),
        left: u32,
        mut req: Request<B>,
    ) -> Result<Response<ReturnOnEnd<B>>, Failure<B>> {
        match sender {
            Sender::H1(mut s, meta) => {
                if s.ready().await.is_err() {
                    return Err(Failure::NotSent(Box::new(req)));
                }
                *req.version_mut() = Version::HTTP_11;
                add_empty_content_length(&mut req);
                match s.try_send_request(req).await {
                    Ok(resp) => Ok(resp.map(|inner| ReturnOnEnd {
                        inner,
                        slot: Some(((s, left.saturating_sub(1), meta), self.idle_here().clone())),
                        stream: None,
                        local: meta.local,
                    })),
                    Err(mut e) => match e.take_message() {
                        _ if e.error().is_user() => Err(Failure::Downstream),
                        Some(req) if !e.error().is_parse() => Err(Failure::NotSent(Box::new(req))),
                        _ if closed_early(e.error()) => Err(Failure::NoResponse),
                        _ if e.error().is_parse() => Err(Failure::Protocol),
                        _ => Err(Failure::Failed),
                    },
                }
            }
            Sender::H2(mut s, meta) => {
                if s.ready().await.is_err() {
                    return Err(Failure::NotSent(Box::new(req)));
                }
                if !to_h2(&mut req, cluster.tls(self.transport).is_some(), addr) {
                    return Err(Failure::Failed);
                }
                s.send_request(req)
                    .await
                    .map(|r| {
                        r.map(|inner| ReturnOnEnd {
                            inner,
                            slot: None,
                            stream: Some(stream),
                            local: meta.local,
                        })
                    })
                    .map_err(|e| {
                        if e.is_user() {
                            Failure::Downstream
                        } else if let Some(reason) = remote_stream_reset(&e) {
                            Failure::StreamReset {
                                refused: reason == h2::Reason::REFUSED_STREAM,
                            }
                        } else {
                            Failure::Failed
                        }
                    })
            }
        }
    }
}

impl<B> From<Failure<B>> for SendError {
    fn from(f: Failure<B>) -> Self {
        match f {
            Failure::NotSent(_) => SendError::NotSent,
            Failure::StreamReset { refused } => SendError::StreamReset { refused },
            Failure::Downstream => SendError::Downstream,
            Failure::IdleTimeout => SendError::IdleTimeout,
            Failure::Protocol => SendError::Protocol,
            Failure::NoResponse | Failure::Failed => SendError::Reset,
        }
    }
}

/// The code of an RST_STREAM the upstream sent for the stream, or REFUSED_STREAM for a stream
/// its GOAWAY left out (above the last stream it will process: Envoy's codec closes those
/// as refused); not an I/O error or a reset of our own.
fn remote_stream_reset(e: &hyper::Error) -> Option<h2::Reason> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(h2e) = s.downcast_ref::<h2::Error>() {
            if h2e.is_go_away() && h2e.is_remote() {
                return Some(h2::Reason::REFUSED_STREAM);
            }
            return (h2e.is_reset() && h2e.is_remote())
                .then(|| h2e.reason())
                .flatten();
        }
        source = s.source();
    }
    None
}

/// Envoy's HTTP/1 encoder: a request without a body, of a method that may have one, carries
/// `content-length: 0` (GET, HEAD, DELETE, TRACE and CONNECT go without).
pub(crate) fn add_empty_content_length<B: http_body::Body>(req: &mut Request<B>) {
    use http::{header, Method};
    let bodiless = [
        Method::GET,
        Method::HEAD,
        Method::DELETE,
        Method::TRACE,
        Method::CONNECT,
    ];
    if req.body().is_end_stream()
        && !bodiless.contains(req.method())
        && !req.headers().contains_key(header::CONTENT_LENGTH)
        && !req.headers().contains_key(header::TRANSFER_ENCODING)
    {
        req.headers_mut()
            .insert(header::CONTENT_LENGTH, http::HeaderValue::from_static("0"));
    }
}

/// The connection closed (EOF, reset, or hyper dropped the request) before a response head:
/// what a keep-alive connection the upstream timed out looks like.
fn closed_early(e: &hyper::Error) -> bool {
    if e.is_incomplete_message() || e.is_canceled() {
        return true;
    }
    let io = std::error::Error::source(e).and_then(|s| s.downcast_ref::<std::io::Error>());
    io.is_some_and(|io| {
        matches!(
            io.kind(),
            std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::ConnectionAborted
        )
    })
}

/// HTTP/2 form: absolute URI (scheme, the `Host` header as authority, else `addr`), no `Host`.
fn to_h2<B>(req: &mut Request<B>, tls: bool, addr: SocketAddr) -> bool {
    let scheme = if tls { "https" } else { "http" };
    let authority = req
        .headers_mut()
        .remove(header::HOST)
        .and_then(|v| v.to_str().ok().map(str::to_string))
        .unwrap_or_else(|| addr.to_string());
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    match format!("{scheme}://{authority}{path}").parse() {
        Ok(uri) => {
            *req.uri_mut() = uri;
            *req.version_mut() = Version::HTTP_2;
            true
        }
        Err(_) => false,
    }
}

/// An upstream response body that gives its HTTP/1 connection back to the pool once the body
/// has been read to the end (a body abandoned midway closes the connection instead).
pub struct ReturnOnEnd<B> {
    inner: Incoming,
    /// The connection, the requests it may carry after this one, its local address, and the
    /// pool it goes back to.
    slot: Option<(IdleConn<B>, Arc<Idle<B>>)>,
    /// An HTTP/2 response's place on its connection, given back when the body ends (or the
    /// body is dropped).
    stream: Option<StreamSlot>,
    /// The local address of the connection (`%UPSTREAM_LOCAL_ADDRESS%`).
    local: Local,
}

impl<B> ReturnOnEnd<B> {
    /// The local address of the connection the response came on.
    pub fn local(&self) -> Local {
        self.local
    }

    fn give_back(&mut self) {
        self.stream = None;
        if let Some(((s, left, meta), idle)) = self.slot.take() {
            idle.release(s, left, meta);
        }
    }
}

impl<B: PoolBody> http_body::Body for ReturnOnEnd<B> {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        match &r {
            Poll::Ready(None) => this.give_back(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.give_back(),
            Poll::Ready(Some(Err(_))) => this.slot = None,
            _ => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for ReturnOnEnd<B> {
    fn drop(&mut self) {
        if http_body::Body::is_end_stream(&self.inner) {
            self.give_back();
        }
    }
}
