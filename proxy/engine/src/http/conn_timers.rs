//! The HCM's connection timers (`common_http_protocol_options.idle_timeout` and
//! `.max_connection_duration`), as Envoy's connection manager runs them: the idle timer runs
//! while the connection has no active stream (from accept, and again from the end of each
//! response), the duration timer from accept. Either one firing starts Envoy's drain: HTTP/1
//! responses from then on carry `connection: close` (so the connection closes after the next
//! one; observed against Envoy: `hcm_idle_timeout`, `hcm_max_connection_duration`), and the
//! connection is closed after the HCM's `drain_timeout` ([`ConnTimeouts::drain`]); an HTTP/2 connection gets its GOAWAY at once
//! (hyper's `graceful_shutdown`).
//!
//! `max_requests_per_connection` drains the same way once the connection has carried that many
//! requests ([`Activity::count_request`]).
//!
//! A stream is active from the request's arrival until its response body has been sent (or
//! dropped): [`Activity::track`] wraps the response body with the guard that ends it.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use http_body_util::BodyExt;
use tokio::{sync::Notify, time::Instant};

use super::Body;
use crate::config::ConnTimeouts;

/// Active streams of a connection and when it last became idle.
#[derive(Debug)]
pub(crate) struct Activity {
    start: Instant,
    /// Set when a timer fired: responses close the connection.
    pub(crate) draining: AtomicBool,
    /// Whether the connection speaks HTTP/2 (drained with a GOAWAY at once).
    pub(crate) h2: AtomicBool,
    active: AtomicUsize,
    /// Streams begun so far (the head timer's mark: `http::head_timer`).
    begun: AtomicU64,
    /// Set when a request head's first byte arrived (the accept guard leaves the connection
    /// to the head timer then).
    head_seen: AtomicBool,
    /// Set by an upgrade request: the connection may become a tunnel, heads are no longer timed.
    upgraded: AtomicBool,
    /// Set by a request that asks to close the connection (HTTP/1.0 without keep-alive, or
    /// `connection: close`), came whole (no body) and was answered by an upstream: its close
    /// is not delayed.
    closes_complete: AtomicBool,
    /// Milliseconds from `start` to the moment the last stream ended.
    idle_since_ms: AtomicU64,
    became_idle: Notify,
    /// Requests seen (counted only with `max_requests_per_connection`).
    requests: AtomicU32,
    /// Notified when an HTTP/2 connection reached `max_requests_per_connection`: GOAWAY now.
    pub(crate) drain_now: Notify,
}

impl Activity {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            draining: AtomicBool::new(false),
            h2: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            begun: AtomicU64::new(0),
            head_seen: AtomicBool::new(false),
            upgraded: AtomicBool::new(false),
            closes_complete: AtomicBool::new(false),
            idle_since_ms: AtomicU64::new(0),
            became_idle: Notify::new(),
            requests: AtomicU32::new(0),
            drain_now: Notify::new(),
        })
    }

    /// Counts a request against `max_requests_per_connection`; true for the one that reaches
    /// it (Envoy then drains the connection: HTTP/1 `connection: close` on its response,
    /// HTTP/2 GOAWAY).
    pub(crate) fn count_request(&self, max: Option<u32>) -> bool {
        max.is_some_and(|m| {
            self.requests
                .fetch_add(1, Ordering::Relaxed)
                .saturating_add(1)
                >= m
        })
    }

    /// A stream starts; the returned guard ends it when dropped.
    pub(crate) fn begin(self: &Arc<Self>) -> Guard {
        self.begun.fetch_add(1, Ordering::AcqRel);
        self.active.fetch_add(1, Ordering::AcqRel);
        Guard(self.clone())
    }

    /// Streams begun so far.
    pub(crate) fn streams_begun(&self) -> u64 {
        self.begun.load(Ordering::Acquire)
    }

    /// Streams not yet ended.
    pub(crate) fn active_streams(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// A request head's first byte arrived.
    pub(crate) fn head_started(&self) {
        self.head_seen.store(true, Ordering::Relaxed);
    }

    /// Whether a request head's first byte ever arrived.
    pub(crate) fn head_seen(&self) -> bool {
        self.head_seen.load(Ordering::Relaxed)
    }

    /// An upgrade request arrived.
    /// Notes a request asking to close the connection after it: `skip` when it came whole and
    /// an upstream answered it (Envoy's `shouldSkipDeferredCloseDelay`: nothing is still coming).
    pub(crate) fn set_closing_request(&self, skip: bool) {
        self.closes_complete.store(skip, Ordering::Relaxed);
    }

    /// Whether the connection closes after a whole request that asked for it.
    pub(crate) fn closes_complete(&self) -> bool {
        self.closes_complete.load(Ordering::Relaxed)
    }

    pub(crate) fn set_upgraded(&self) {
        self.upgraded.store(true, Ordering::Relaxed);
    }

    /// Whether an upgrade request arrived.
    pub(crate) fn upgraded(&self) -> bool {
        self.upgraded.load(Ordering::Relaxed)
    }

    /// `body` with `guard` kept until the body ends or is dropped.
    pub(crate) fn track(body: Body, guard: Guard) -> Body {
        body.map_frame(move |f| {
            let _ = &guard;
            f
        })
        .boxed()
    }

    /// Resolves when `timeouts` say the connection should close.
    pub(crate) async fn expired(&self, timeouts: ConnTimeouts) {
        let end = timeouts.max_duration.map(|d| self.start + d);
        loop {
            // Registered before reading the state, so an end of stream in between still wakes.
            let notified = self.became_idle.notified();
            let idle_at = match (timeouts.idle, self.active.load(Ordering::Acquire)) {
                (Some(idle), 0) => {
                    let since = self.idle_since_ms.load(Ordering::Acquire);
                    Some(self.start + Duration::from_millis(since) + idle)
                }
                _ => None,
            };
            let at = match (idle_at, end) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            match at {
                Some(at) if Instant::now() >= at => return,
                Some(at) => tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = notified => {}
                },
                None => notified.await,
            }
        }
    }
}

/// Ends a stream when dropped.
#[derive(Debug)]
pub(crate) struct Guard(Arc<Activity>);

impl Drop for Guard {
    fn drop(&mut self) {
        let a = &self.0;
        let ms = a.start.elapsed().as_millis() as u64;
        a.idle_since_ms.store(ms, Ordering::Release);
        if a.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            a.became_idle.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test]
    async fn idle_timer_runs_only_without_streams() {
        let a = Activity::new();
        let t = ConnTimeouts {
            idle: Some(100 * MS),
            max_duration: None,
            ..ConnTimeouts::default()
        };
        let g = a.begin();
        let waited = tokio::time::timeout(300 * MS, a.expired(t)).await;
        assert!(waited.is_err(), "no idle expiry while a stream is active");
        drop(g);
        let start = Instant::now();
        a.expired(t).await;
        assert!(start.elapsed() >= 90 * MS, "{:?}", start.elapsed());
    }

    #[tokio::test]
    async fn max_duration_fires_even_when_busy() {
        let a = Activity::new();
        let t = ConnTimeouts {
            idle: None,
            max_duration: Some(100 * MS),
            ..ConnTimeouts::default()
        };
        let _g = a.begin();
        a.expired(t).await;
        assert!(a.start.elapsed() >= 100 * MS);
    }
}
