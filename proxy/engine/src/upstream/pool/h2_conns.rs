//! A slot's pooled HTTP/2 connections. Without a stream limit one connection carries every
//! request (hyper queues streams past the server's SETTINGS_MAX_CONCURRENT_STREAMS); with the
//! cluster's `http2_protocol_options.max_concurrent_streams` (a DestinationRule's
//! `connectionPool.http.maxConcurrentStreams`) each connection carries at most that many
//! streams at once, and a request that finds every connection full opens another, as Envoy's
//! HTTP/2 pool does. A [`StreamSlot`] holds a stream's place until the response ends.

use std::{
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use hyper::client::conn::http2;

use super::Meta;

/// A stream's place on its connection: given back when dropped (the response ended, or the
/// request failed).
#[derive(Debug)]
pub struct StreamSlot(Option<Arc<AtomicU32>>);

impl StreamSlot {
    /// A place on a connection that counts none (no stream limit).
    pub fn uncounted() -> Self {
        Self(None)
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        if let Some(a) = self.0.take() {
            a.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// One pooled connection.
struct H2Conn<B> {
    tx: http2::SendRequest<B>,
    /// Streams it may still start (`max_requests_per_connection`).
    left: u32,
    meta: Meta,
    /// When it last took a stream.
    last: Instant,
    /// Its streams in flight (counted only under a stream limit).
    active: Arc<AtomicU32>,
}

/// A slot's pooled HTTP/2 connections.
pub struct H2Conns<B>(Vec<H2Conn<B>>);

impl<B> Default for H2Conns<B> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<B> H2Conns<B> {
    /// A stream on a pooled connection that is open, not idle for `timeout` (the upstream
    /// `idle_timeout`; those are let go: they close once their streams end), and below
    /// `limit` streams; the connection's last allowed stream takes it out of the pool.
    pub fn take(
        &mut self,
        timeout: Option<Duration>,
        limit: Option<u32>,
    ) -> Option<(http2::SendRequest<B>, Meta, StreamSlot)> {
        let now = Instant::now();
        self.0.retain(|c| {
            !(c.tx.is_closed()
                || c.meta.expired(now)
                || timeout.is_some_and(|t| now.duration_since(c.last) >= t))
        });
        let i = self
            .0
            .iter()
            .position(|c| limit.is_none_or(|l| c.active.load(Ordering::Acquire) < l))?;
        let c = &mut self.0[i];
        c.last = now;
        c.left -= 1;
        let taken = (c.tx.clone(), c.meta, slot(&c.active, limit));
        if c.left == 0 {
            self.0.remove(i);
        }
        Some(taken)
    }

    /// Pools a new connection whose first stream the caller sends (`left` streams allowed in
    /// all); returns that stream's place. Without a stream limit the new connection replaces
    /// the pooled one (which closes once its streams end): one connection carries all.
    pub fn add(
        &mut self,
        tx: &http2::SendRequest<B>,
        meta: Meta,
        left: u32,
        limit: Option<u32>,
    ) -> StreamSlot {
        let active = Arc::new(AtomicU32::new(0));
        let first = slot(&active, limit);
        if limit.is_none() {
            self.0.clear();
        }
        if left > 1 {
            self.0.push(H2Conn {
                tx: tx.clone(),
                left: left - 1,
                meta,
                last: Instant::now(),
                active,
            });
        }
        first
    }

    /// Keeps the connections `keep(open, meta, last stream)` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(bool, &Meta, Instant) -> bool) {
        self.0.retain(|c| keep(!c.tx.is_closed(), &c.meta, c.last));
    }

    /// Whether one is not known closed.
    pub fn any_open(&self) -> bool {
        self.0.iter().any(|c| !c.tx.is_closed())
    }
}

/// A counted place on `active` under a limit; none without.
fn slot(active: &Arc<AtomicU32>, limit: Option<u32>) -> StreamSlot {
    match limit {
        Some(_) => {
            active.fetch_add(1, Ordering::AcqRel);
            StreamSlot(Some(active.clone()))
        }
        None => StreamSlot::uncounted(),
    }
}
