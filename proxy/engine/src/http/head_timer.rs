//! The request head timer of an HTTP/1 connection, as Envoy's HCM runs
//! `request_headers_timeout`: it starts at the first byte of a request head and stops when the
//! head is complete (the request begins a stream, [`Activity::begin`]); when it fires the
//! client gets `408` `request header timeout` with `connection: close` and the connection
//! closes (observed against Envoy 1.40: `tests/tests/request_headers_timeout.rs`). An idle
//! keep-alive connection runs no timer (hyper's own `header_read_timeout` runs from the end of
//! the last response, so it is off).
//!
//! The timer lives in the connection's IO: bytes read while no stream is active begin a head.
//! Bytes of a pipelined next request read during the current one do not, so a client that
//! pipelines a partial head is left to the idle timeout (Envoy times that head too). HTTP/2
//! (the preface) and upgraded connections (a tunnel follows) never run it.
//!
//! The wrapper also closes the connection as `delayed_close_timeout` says (`http::delayed_close`).

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use http::HeaderValue;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::{Instant, Sleep},
};

use super::{conn_timers::Activity, delayed_close::DelayedClose};
use crate::config::{HttpConnectionManager, ServerTransformation};

/// The HTTP/2 connection preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long a head may take and how the connection answers when it takes longer.
#[derive(Debug, Clone)]
pub struct HeadTimeout {
    /// From the first byte of a head.
    pub after: Duration,
    /// The 408's body: `request header timeout` (`request_headers_timeout`) or `request
    /// timeout` (the HCM's `request_timeout` fired first: Envoy's stream timer runs from the
    /// head's first byte too).
    pub body: &'static str,
    /// The `server` header local replies carry (none with `PASS_THROUGH`).
    pub server: Option<HeaderValue>,
}

impl HeadTimeout {
    /// The head timeout of connections to `cfg`: the shorter of `request_headers_timeout` and
    /// `request_timeout` (each answers with its own body, as Envoy), else
    /// [`super::DEFAULT_HEADER_READ_TIMEOUT`] (a slowloris guard; Envoy has none by default).
    pub fn of(cfg: &HttpConnectionManager) -> Self {
        let (after, body) = match (cfg.request_headers_timeout, cfg.request_timeout) {
            (Some(h), Some(r)) if r < h => (r, "request timeout"),
            (Some(h), _) => (h, "request header timeout"),
            (None, Some(r)) => (r, "request timeout"),
            (None, None) => (super::DEFAULT_HEADER_READ_TIMEOUT, "request header timeout"),
        };
        let server = match cfg.server_header.transformation {
            ServerTransformation::PassThrough => None,
            _ => Some(cfg.server_header.name.clone()),
        };
        Self {
            after,
            body,
            server,
        }
    }
}

/// Where the head sniffing stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// This many bytes of the HTTP/2 preface seen so far.
    Sniff(usize),
    /// HTTP/1: heads are timed.
    Http1,
    /// HTTP/2: never timed.
    Off,
}

/// A head being timed.
#[derive(Debug, Clone, Copy)]
struct Armed {
    /// Streams begun when its first byte arrived: one more means the head was complete.
    begun: u64,
    /// When it times out.
    at: Instant,
    /// Whether `sleep` is set for it: only once the head is still incomplete at the next
    /// read (a head that arrives whole costs no timer).
    registered: bool,
}

/// A downstream connection's IO with the head timer on its reads.
#[derive(Debug)]
pub(crate) struct HeadTimer<I> {
    io: I,
    activity: Arc<Activity>,
    timeout: HeadTimeout,
    mode: Mode,
    /// Allocated when a head first needs a timer, then reset for each such head.
    sleep: Option<Pin<Box<Sleep>>>,
    /// The head being timed, if any.
    armed: Option<Armed>,
    /// The 408 being written, and how much of it is out.
    reply: Option<(Bytes, usize)>,
    /// The connection's close (`delayed_close_timeout`).
    close: DelayedClose,
}

impl<I> HeadTimer<I> {
    /// Wraps `io`; `activity` counts the connection's streams; `close` is how it closes.
    pub(crate) fn new(
        io: I,
        activity: Arc<Activity>,
        timeout: HeadTimeout,
        close: DelayedClose,
    ) -> Self {
        Self {
            io,
            activity,
            timeout,
            close,
            mode: Mode::Sniff(0),
            sleep: None,
            armed: None,
            reply: None,
        }
    }

    /// Never times a head (an HTTP/2-only connection).
    pub(crate) fn disabled(mut self) -> Self {
        self.mode = Mode::Off;
        self
    }

    /// Sorts the connection by its first bytes.
    fn sniff(&mut self, b: &[u8]) {
        let Mode::Sniff(k) = self.mode else { return };
        let n = (PREFACE.len() - k).min(b.len());
        self.mode = if b[..n] != PREFACE[k..k + n] {
            Mode::Http1
        } else if k + n == PREFACE.len() {
            Mode::Off
        } else {
            Mode::Sniff(k + n)
        };
    }

    /// Starts timing a head whose first bytes were just read.
    fn arm(&mut self) {
        self.armed = Some(Armed {
            begun: self.activity.streams_begun(),
            at: Instant::now() + self.timeout.after,
            registered: false,
        });
        self.activity.head_started();
    }

    /// Whether the head being timed is past its time (the timer registered with `cx`).
    fn timed_out(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(a) = self.armed.as_mut() else {
            return false;
        };
        if self.activity.streams_begun() != a.begun {
            self.armed = None;
            return false;
        }
        let sleep = match self.sleep.as_mut() {
            Some(s) => {
                if !a.registered {
                    s.as_mut().reset(a.at);
                }
                s
            }
            None => self.sleep.insert(Box::pin(tokio::time::sleep_until(a.at))),
        };
        a.registered = true;
        if sleep.as_mut().poll(cx).is_ready() {
            self.armed = None;
            return true;
        }
        false
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> HeadTimer<I> {
    /// Writes the 408, shuts the write side and ends the connection's reads with an error
    /// (hyper then closes it without an answer of its own).
    fn poll_reply(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some((bytes, sent)) = self.reply.as_mut() {
            while *sent < bytes.len() {
                let n = ready!(Pin::new(&mut self.io).poll_write(cx, &bytes[*sent..]))?;
                if n == 0 {
                    break;
                }
                *sent += n;
            }
            ready!(Pin::new(&mut self.io).poll_flush(cx))?;
            let _ = ready!(self.close.poll_shutdown(&mut self.io, cx));
        }
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            self.timeout.body,
        )))
    }
}

/// Envoy's 408 for a head that took too long.
fn reply(t: &HeadTimeout) -> Bytes {
    let mut r = format!(
        "HTTP/1.1 408 Request Timeout\r\ncontent-length: {}\r\ncontent-type: text/plain\r\n\
         date: {}\r\n",
        t.body.len(),
        httpdate::fmt_http_date(SystemTime::now())
    );
    if let Some(s) = t.server.as_ref().and_then(|s| s.to_str().ok()) {
        r.push_str("server: ");
        r.push_str(s);
        r.push_str("\r\n");
    }
    r.push_str("connection: close\r\n\r\n");
    r.push_str(t.body);
    Bytes::from(r)
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncRead for HeadTimer<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.reply.is_some() {
            return this.poll_reply(cx);
        }
        if this.timed_out(cx) {
            tracing::debug!(body = this.timeout.body, "request head timed out: 408");
            this.reply = Some((reply(&this.timeout), 0));
            return this.poll_reply(cx);
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        if this.mode == Mode::Off || this.armed.is_some() || buf.filled().len() == before {
            return Poll::Ready(Ok(()));
        }
        this.sniff(&buf.filled()[before..]);
        if this.mode == Mode::Http1 && this.activity.active_streams() == 0 {
            if this.activity.upgraded() {
                this.mode = Mode::Off;
            } else {
                // hyper reads again at once when the head is incomplete: the timer is
                // registered then.
                this.arm();
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncWrite for HeadTimer<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.close.poll_shutdown(&mut this.io, cx)
    }
}
