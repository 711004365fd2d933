//! A listener's drain (Envoy's, with `--drain-strategy immediate`): when a listener is removed,
//! or replaced in a way that is not an in-place update (new address, `bind_to_port` flipped),
//! its open connections are drained, still on the removed listener's config: every HTTP/1
//! response from then on says `connection: close` (the connection closes after it), HTTP/2 sends
//! GOAWAY with its next response, and whatever is still open when the drain time
//! (`--drain-time-s`) ends is closed: silent keep-alive connections, long streams, tcp_proxy and
//! passthrough connections. Observed against Envoy 1.40 (`--drain-strategy immediate`, LDS
//! removal): the same, except that Envoy keeps a connection it answered with `connection: close`
//! or GOAWAY open until the drain time ends.
//!
//! [`ListenerDrain`] lives in the listener's slot; every connection subscribes once
//! ([`ListenerDrain::watch`]), not per request.

use std::time::Duration;

use tokio::{sync::watch, time::Instant};

/// Envoy's default `--drain-time-s`.
pub const DEFAULT_DRAIN_TIME: Duration = Duration::from_secs(600);

/// The drain signal of one listener: unset while it serves, then the moment its drain ends.
#[derive(Debug)]
pub struct ListenerDrain(watch::Sender<Option<Instant>>);

impl Default for ListenerDrain {
    fn default() -> Self {
        Self(watch::Sender::new(None))
    }
}

impl ListenerDrain {
    /// Starts the drain (once; a second call keeps the first deadline): open connections close
    /// at the latest after `drain_time`.
    pub fn start(&self, drain_time: Duration) {
        let end = Instant::now() + drain_time;
        self.0.send_if_modified(|v| {
            if v.is_some() {
                return false;
            }
            *v = Some(end);
            true
        });
    }

    /// Whether the drain started.
    pub fn started(&self) -> bool {
        self.0.borrow().is_some()
    }

    /// A connection's view of the drain.
    pub fn watch(&self) -> DrainWatch {
        DrainWatch(self.0.subscribe())
    }
}

/// One connection's subscription to its listener's drain.
#[derive(Debug, Clone)]
pub struct DrainWatch(watch::Receiver<Option<Instant>>);

impl DrainWatch {
    /// A watch whose drain never starts (connections outside any listener, tests).
    pub fn never() -> Self {
        Self(watch::Sender::new(None).subscribe())
    }

    /// Resolves when the drain starts, with the moment it ends; never when the listener stays.
    pub async fn started(&mut self) -> Instant {
        let end = self.0.wait_for(Option::is_some).await.map(|end| *end);
        match end {
            Ok(end) => end.unwrap_or_else(Instant::now),
            // The signal is gone without a drain: nothing will ever start it.
            Err(_) => std::future::pending().await,
        }
    }

    /// Resolves when the drain time ends: the connection must close.
    pub async fn ended(mut self) {
        let end = self.started().await;
        tokio::time::sleep_until(end).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_sees_a_drain_started_before_or_after_it_subscribed() {
        let d = ListenerDrain::default();
        let mut early = d.watch();
        assert!(!d.started());
        let waited = tokio::time::timeout(Duration::from_millis(50), early.started()).await;
        assert!(waited.is_err(), "no drain yet");
        d.start(Duration::from_millis(100));
        let end = early.started().await;
        d.start(Duration::from_secs(60));
        let mut late = d.watch();
        assert_eq!(late.started().await, end, "the first deadline stays");
        let t = Instant::now();
        late.ended().await;
        assert!(Instant::now() >= end && t.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn never_never_starts() {
        let mut w = DrainWatch::never();
        let waited = tokio::time::timeout(Duration::from_millis(50), w.started()).await;
        assert!(waited.is_err());
    }
}
