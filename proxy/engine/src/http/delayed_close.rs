//! The HCM's `delayed_close_timeout`, as Envoy closes a downstream connection itself
//! (`FlushWriteAndDelay`): the response is flushed, then the proxy waits up to the timeout for
//! the client to close its side (reading and dropping whatever it still sends) before it closes
//! the socket, so a client that is still sending does not get a reset that could destroy the
//! response in flight. A client that closes first is not waited for, an upgraded connection (a
//! tunnel, whose other direction may still be reading) shuts at once, and so does one whose
//! last request asked for the close (HTTP/1.0, `connection: close`), came whole and was
//! answered by an upstream, as Envoy's `shouldSkipDeferredCloseDelay` (Envoy's reply made while
//! decoding the head keeps the delay). Observed
//! against Envoy 1.40: a drained keep-alive connection closes `drain_timeout` + this after the
//! drain starts, a timed-out request head this after its 408
//! (`tests/tests/connection_close_timing.rs`).

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::Sleep,
};

use super::conn_timers::Activity;

/// Where the close stands.
#[derive(Debug)]
enum Close {
    /// Not closing.
    Open,
    /// Waiting for the client's end of stream until the timer fires (nothing sent meanwhile:
    /// Envoy sends its FIN when it closes the socket).
    Waiting(Pin<Box<Sleep>>),
    /// Shutting the write side.
    Closing,
    /// Done.
    Closed,
}

/// A downstream connection's shutdown that waits for the client to close (kept by the
/// connection's IO wrapper, `http::head_timer::HeadTimer`).
#[derive(Debug)]
pub(crate) struct DelayedClose {
    activity: Arc<Activity>,
    delay: Option<Duration>,
    close: Close,
}

impl DelayedClose {
    /// `delay` `None` closes at once; `activity` says whether the connection was upgraded.
    pub(crate) fn new(activity: Arc<Activity>, delay: Option<Duration>) -> Self {
        Self {
            activity,
            delay,
            close: Close::Open,
        }
    }

    /// Shuts `io` down after the delay (or the client's close).
    pub(crate) fn poll_shutdown<I: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut I,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            match &mut self.close {
                // No delay after a whole request that asked for the close (Envoy's
                // `shouldSkipDeferredCloseDelay`: nothing is still coming from the client).
                Close::Open => match self
                    .delay
                    .filter(|_| !self.activity.upgraded() && !self.activity.closes_complete())
                {
                    Some(d) => self.close = Close::Waiting(Box::pin(tokio::time::sleep(d))),
                    None => self.close = Close::Closing,
                },
                Close::Waiting(timer) => {
                    if timer.as_mut().poll(cx).is_ready() {
                        self.close = Close::Closing;
                        continue;
                    }
                    // Whatever the client still sends is dropped; its end of stream (or an
                    // error) ends the wait.
                    let mut scratch = [0u8; 1024];
                    let mut b = ReadBuf::new(&mut scratch);
                    match ready!(Pin::new(&mut *io).poll_read(cx, &mut b)) {
                        Ok(()) if !b.filled().is_empty() => continue,
                        _ => self.close = Close::Closing,
                    }
                }
                Close::Closing => {
                    let r = ready!(Pin::new(&mut *io).poll_shutdown(cx));
                    self.close = Close::Closed;
                    return Poll::Ready(r);
                }
                Close::Closed => return Poll::Ready(Ok(())),
            }
        }
    }
}
