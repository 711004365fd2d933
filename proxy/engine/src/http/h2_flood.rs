//! HTTP/2 flood limits on a downstream connection, which hyper and h2 do not have: a wrapper
//! around the connection's IO reads the 9-byte frame headers as bytes pass in both directions
//! (payloads are skipped, nothing is copied or allocated per frame) and ends the connection when
//! the client floods, as Envoy's `http2_protocol_options` flood protections do:
//! - `PING` and `SETTINGS` (not ACKs) sent faster than they are answered: a frame that arrives
//!   while an earlier one still waits for its ACK counts, and more than
//!   [`MAX_UNANSWERED_CONTROL_FRAMES_PER_SEC`] such frames in one second is a flood. A client
//!   that waits for its ACKs (keepalive and BDP pings) never counts. Each such frame costs an
//!   ACK; a peer sending them as fast as it can took a core from every other client. Envoy 1.40
//!   closes such a connection once more than 1000 ACKs are queued (observed: its nghttp2 codec's
//!   "Too many frames in the outbound queue"; Envoy's own `max_outbound_control_frames` is 1000
//!   too); a flood gets there within one read;
//! - frames with an empty payload and no END_STREAM (`DATA`, `HEADERS`, `CONTINUATION`): more
//!   than `max_consecutive_inbound_frames_with_empty_payload` (default 1) in a row;
//! - `PRIORITY`: more than `max_inbound_priority_frames_per_stream` (default 100) x (1 + streams
//!   opened);
//! - `WINDOW_UPDATE`: more than 5 + 2 x (streams opened +
//!   `max_inbound_window_update_frames_per_data_frame_sent` (default 10) x DATA frames sent)
//!   (Envoy's formula).
//!
//! The three limits are the HCM's `http2_protocol_options` ([`H2FloodLimits`]).
//!
//! A flooding connection is not read any further (its frames never reach h2) and is closed
//! [`FLOOD_CLOSE_DELAY`] later with a read error, without GOAWAY: what Envoy does (observed:
//! no GOAWAY, the socket closed after its 1 s `delayed_close_timeout`). The delay also holds a
//! flooder that reconnects at once to one connection per second. HTTP/1 connections are
//! recognised by their first bytes (no h2 preface) and pass through untouched.

use std::{
    future::Future,
    io,
    pin::Pin,
    task::{ready, Context, Poll},
    time::{Duration, Instant},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::config::{CodecType, H2FloodLimits};

/// `PING` + `SETTINGS` frames (not ACKs) a client may send per second while earlier ones are
/// unanswered.
pub const MAX_UNANSWERED_CONTROL_FRAMES_PER_SEC: u32 = 1000;
/// How long a flooding connection is held (unread) before it is closed.
pub const FLOOD_CLOSE_DELAY: Duration = Duration::from_secs(1);

const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const CONTROL_WINDOW: Duration = Duration::from_secs(1);

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_ACK: u8 = 0x1;

/// Which limit a client exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flood {
    /// Too many PING/SETTINGS frames per second.
    Control,
    /// Too many consecutive empty frames.
    Empty,
    /// Too many PRIORITY frames.
    Priority,
    /// Too many WINDOW_UPDATE frames.
    WindowUpdate,
}

impl Flood {
    fn as_str(self) -> &'static str {
        match self {
            Self::Control => "PING/SETTINGS flood",
            Self::Empty => "empty frame flood",
            Self::Priority => "PRIORITY flood",
            Self::WindowUpdate => "WINDOW_UPDATE flood",
        }
    }
}

/// One frame header.
#[derive(Debug, Clone, Copy)]
struct Head {
    len: u32,
    kind: u8,
    flags: u8,
}

/// Finds frame headers in a byte stream fed piecewise.
#[derive(Debug, Default)]
struct Cursor {
    hdr: [u8; 9],
    have: usize,
    skip: usize,
}

impl Cursor {
    /// Feeds `b`; `f` sees each complete header and may stop the scan with an error.
    fn feed<E>(&mut self, mut b: &[u8], mut f: impl FnMut(Head) -> Result<(), E>) -> Result<(), E> {
        while !b.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(b.len());
                self.skip -= n;
                b = &b[n..];
                continue;
            }
            let n = (9 - self.have).min(b.len());
            self.hdr[self.have..self.have + n].copy_from_slice(&b[..n]);
            self.have += n;
            b = &b[n..];
            if self.have == 9 {
                self.have = 0;
                let h = &self.hdr;
                let len = u32::from_be_bytes([0, h[0], h[1], h[2]]);
                self.skip = len as usize;
                f(Head {
                    len,
                    kind: h[3],
                    flags: h[4],
                })?;
            }
        }
        Ok(())
    }
}

/// What the connection's first bytes said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Matching the h2 preface; this many bytes matched so far.
    Sniff(usize),
    /// Matching the h2 preface under `codec_type: HTTP2` (anything else is refused).
    SniffH2Only(usize),
    /// `codec_type: HTTP2` and the connection did not open with the preface: closed.
    NotHttp2,
    /// HTTP/1: not inspected.
    Http1,
    /// HTTP/2 frames.
    Http2,
}

/// The per-connection counters (see the module doc for the limits).
#[derive(Debug, Default)]
struct Counts {
    control_in: u64,
    control_acked: u64,
    control: u32,
    control_window_start: Option<Instant>,
    empty_run: u32,
    priority: u64,
    streams: u64,
    window_updates: u64,
    data_sent: u64,
    limits: H2FloodLimits,
}

impl Counts {
    fn inbound(&mut self, h: Head) -> Result<(), Flood> {
        match h.kind {
            DATA | HEADERS | CONTINUATION => {
                if h.len == 0 && h.flags & FLAG_END_STREAM == 0 {
                    self.empty_run += 1;
                    if self.empty_run > self.limits.max_consecutive_empty {
                        return Err(Flood::Empty);
                    }
                } else {
                    self.empty_run = 0;
                }
                if h.kind == HEADERS {
                    self.streams += 1;
                }
            }
            PING | SETTINGS if h.flags & FLAG_ACK == 0 => {
                self.control_in += 1;
                if self.control_in - self.control_acked.min(self.control_in) <= 1 {
                    return Ok(());
                }
                self.control += 1;
                if self.control_window_start.is_none() {
                    self.control_window_start = Some(Instant::now());
                }
                if self.control > MAX_UNANSWERED_CONTROL_FRAMES_PER_SEC {
                    // The clock is read once per MAX_UNANSWERED_CONTROL_FRAMES_PER_SEC frames at most.
                    let now = Instant::now();
                    match self.control_window_start {
                        Some(t) if now.duration_since(t) < CONTROL_WINDOW => {
                            return Err(Flood::Control);
                        }
                        _ => {
                            self.control_window_start = Some(now);
                            self.control = 1;
                        }
                    }
                }
            }
            PRIORITY => {
                self.priority += 1;
                if self.priority > self.limits.max_priority_per_stream * (1 + self.streams) {
                    return Err(Flood::Priority);
                }
            }
            WINDOW_UPDATE => {
                self.window_updates += 1;
                let limit = 5 + 2
                    * (self.streams
                        + self.limits.max_window_updates_per_data_sent * self.data_sent);
                if self.window_updates > limit {
                    return Err(Flood::WindowUpdate);
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// A downstream connection's IO with the flood limits applied to what it reads.
#[derive(Debug)]
pub struct FloodGuard<I> {
    io: I,
    mode: Mode,
    inbound: Cursor,
    outbound: Cursor,
    counts: Counts,
    flooded: Option<Flood>,
    /// Set when a flood is found: the connection closes when it fires.
    close_at: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<I> FloodGuard<I> {
    /// Wraps `io` for the HCM's `codec_type`: `HTTP1` connections are never inspected; under
    /// `HTTP2` a connection that does not open with the h2 preface is closed at once (Envoy's
    /// HTTP/2 codec refuses it: no response, nothing forwarded).
    pub fn new(io: I, codec: CodecType, limits: H2FloodLimits) -> Self {
        Self {
            io,
            mode: match codec {
                CodecType::Http1 => Mode::Http1,
                CodecType::Auto => Mode::Sniff(0),
                CodecType::Http2 => Mode::SniffH2Only(0),
            },
            inbound: Cursor::default(),
            outbound: Cursor::default(),
            counts: Counts {
                limits,
                ..Counts::default()
            },
            flooded: None,
            close_at: None,
        }
    }

    /// Inspects bytes just read.
    fn inspect(&mut self, mut b: &[u8]) -> Result<(), Flood> {
        if let Mode::Sniff(k) | Mode::SniffH2Only(k) = self.mode {
            let n = (PREFACE.len() - k).min(b.len());
            if b[..n] != PREFACE[k..k + n] {
                self.mode = match self.mode {
                    Mode::SniffH2Only(_) => Mode::NotHttp2,
                    _ => Mode::Http1,
                };
                return Ok(());
            }
            self.mode = match self.mode {
                _ if k + n == PREFACE.len() => Mode::Http2,
                Mode::SniffH2Only(_) => Mode::SniffH2Only(k + n),
                _ => Mode::Sniff(k + n),
            };
            b = &b[n..];
        }
        if self.mode != Mode::Http2 {
            return Ok(());
        }
        let counts = &mut self.counts;
        self.inbound.feed(b, |h| counts.inbound(h))
    }

    /// Counts the DATA frames and control ACKs among bytes just written.
    fn sent(&mut self, b: &[u8]) {
        if self.mode != Mode::Http2 {
            return;
        }
        let counts = &mut self.counts;
        let _ = self.outbound.feed(b, |h| {
            match h.kind {
                DATA => counts.data_sent += 1,
                PING | SETTINGS if h.flags & FLAG_ACK != 0 => counts.control_acked += 1,
                _ => {}
            }
            Ok::<(), ()>(())
        });
    }
}

fn flood_error(f: Flood) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, f.as_str())
}

impl<I: AsyncRead + Unpin> AsyncRead for FloodGuard<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(f) = this.flooded {
            if let Some(t) = this.close_at.as_mut() {
                ready!(t.as_mut().poll(cx));
                this.close_at = None;
            }
            return Poll::Ready(Err(flood_error(f)));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        if this.mode == Mode::Http1 {
            return Poll::Ready(Ok(()));
        }
        let inspected = this.inspect(&buf.filled()[before..]);
        if this.mode == Mode::NotHttp2 {
            buf.set_filled(before);
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "codec_type HTTP2: no HTTP/2 connection preface",
            )));
        }
        if let Err(f) = inspected {
            tracing::debug!(
                flood = f.as_str(),
                "closing an HTTP/2 connection that floods"
            );
            this.flooded = Some(f);
            buf.set_filled(before);
            this.close_at = Some(Box::pin(tokio::time::sleep(FLOOD_CLOSE_DELAY)));
            return Pin::new(this).poll_read(cx, buf);
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for FloodGuard<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.io).poll_write(cx, buf))?;
        this.sent(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.io).poll_write_vectored(cx, bufs))?;
        let mut left = n;
        for b in bufs {
            if left == 0 {
                break;
            }
            let k = left.min(b.len());
            this.sent(&b[..k]);
            left -= k;
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, len: usize) -> Vec<u8> {
        let l = (len as u32).to_be_bytes();
        let mut f = vec![l[1], l[2], l[3], kind, flags, 0, 0, 0, 1];
        f.resize(9 + len, 0xab);
        f
    }

    fn h2() -> FloodGuard<()> {
        let mut g = FloodGuard::new((), CodecType::Auto, H2FloodLimits::default());
        g.inspect(PREFACE).unwrap();
        assert_eq!(g.mode, Mode::Http2);
        g
    }

    #[test]
    fn http1_is_not_inspected() {
        let mut g = FloodGuard::new((), CodecType::Auto, H2FloodLimits::default());
        g.inspect(b"GET / HTTP/1.1\r\n").unwrap();
        assert_eq!(g.mode, Mode::Http1);
        let mut g = FloodGuard::new((), CodecType::Auto, H2FloodLimits::default());
        g.inspect(b"PRI * HTTP/2.0\r\n\r\nSX").unwrap();
        assert_eq!(g.mode, Mode::Http1);
    }

    #[test]
    fn http2_codec_refuses_http1_and_accepts_the_preface_in_pieces() {
        let mut g = FloodGuard::new((), CodecType::Http2, H2FloodLimits::default());
        g.inspect(b"GET / HTTP/1.1\r\n").unwrap();
        assert_eq!(g.mode, Mode::NotHttp2);
        let mut g = FloodGuard::new((), CodecType::Http2, H2FloodLimits::default());
        g.inspect(&PREFACE[..5]).unwrap();
        assert_eq!(g.mode, Mode::SniffH2Only(5));
        g.inspect(&PREFACE[5..]).unwrap();
        assert_eq!(g.mode, Mode::Http2);
        let g = FloodGuard::new((), CodecType::Http1, H2FloodLimits::default());
        assert_eq!(g.mode, Mode::Http1);
    }

    #[test]
    fn headers_split_across_reads_are_parsed() {
        let mut g = FloodGuard::new((), CodecType::Auto, H2FloodLimits::default());
        let mut all = PREFACE.to_vec();
        for _ in 0..=MAX_UNANSWERED_CONTROL_FRAMES_PER_SEC + 1 {
            all.extend(frame(PING, 0, 8));
            all.extend(frame(DATA, 0, 3000));
        }
        let mut res = Ok(());
        for chunk in all.chunks(7) {
            res = g.inspect(chunk);
            if res.is_err() {
                break;
            }
        }
        assert_eq!(res, Err(Flood::Control));
    }

    #[test]
    fn answered_pings_and_a_slow_rate_pass() {
        let mut g = h2();
        // A client waiting for each ACK (keepalive, BDP pings) never counts.
        for _ in 0..10 * MAX_UNANSWERED_CONTROL_FRAMES_PER_SEC {
            g.inspect(&frame(PING, 0, 8)).unwrap();
            g.sent(&frame(PING, FLAG_ACK, 8));
            g.inspect(&frame(PING, FLAG_ACK, 8)).unwrap();
        }
        g.inspect(&frame(SETTINGS, 0, 0)).unwrap();
        for _ in 0..MAX_UNANSWERED_CONTROL_FRAMES_PER_SEC {
            g.inspect(&frame(SETTINGS, 0, 0)).unwrap();
        }
        // A window that has passed starts over.
        g.counts.control_window_start = Some(Instant::now() - 2 * CONTROL_WINDOW);
        g.inspect(&frame(PING, 0, 8)).unwrap();
        let n = MAX_UNANSWERED_CONTROL_FRAMES_PER_SEC as usize;
        assert_eq!(
            g.inspect(&frame(SETTINGS, 0, 0).repeat(n)),
            Err(Flood::Control)
        );
    }

    #[test]
    fn the_hcm_sets_the_limits() {
        let limits = H2FloodLimits {
            max_consecutive_empty: 3,
            max_priority_per_stream: 2,
            max_window_updates_per_data_sent: 1,
        };
        let mut g = FloodGuard::new((), CodecType::Auto, limits);
        g.inspect(PREFACE).unwrap();
        g.inspect(&frame(DATA, 0, 0).repeat(3)).unwrap();
        assert_eq!(g.inspect(&frame(DATA, 0, 0)), Err(Flood::Empty));
        let mut g = FloodGuard::new((), CodecType::Auto, limits);
        g.inspect(PREFACE).unwrap();
        g.inspect(&frame(PRIORITY, 0, 5).repeat(2)).unwrap();
        assert_eq!(g.inspect(&frame(PRIORITY, 0, 5)), Err(Flood::Priority));
    }

    #[test]
    fn empty_frames_priority_and_window_updates_are_bounded() {
        let mut g = h2();
        g.inspect(&frame(DATA, 0, 0)).unwrap();
        g.inspect(&frame(DATA, 0, 5)).unwrap();
        g.inspect(&frame(DATA, 0, 0)).unwrap();
        g.inspect(&frame(DATA, FLAG_END_STREAM, 0)).unwrap();
        g.inspect(&frame(HEADERS, 0, 0)).unwrap();
        assert_eq!(g.inspect(&frame(CONTINUATION, 4, 0)), Err(Flood::Empty));

        let mut g = h2();
        let p = frame(PRIORITY, 0, 5)
            .repeat(crate::config::DEFAULT_MAX_PRIORITY_FRAMES_PER_STREAM as usize);
        g.inspect(&p).unwrap();
        assert_eq!(g.inspect(&frame(PRIORITY, 0, 5)), Err(Flood::Priority));

        let mut g = h2();
        g.inspect(&frame(WINDOW_UPDATE, 0, 4).repeat(5)).unwrap();
        g.sent(&frame(DATA, 0, 100));
        g.inspect(&frame(WINDOW_UPDATE, 0, 4).repeat(20)).unwrap();
        assert_eq!(
            g.inspect(&frame(WINDOW_UPDATE, 0, 4)),
            Err(Flood::WindowUpdate)
        );
    }
}
