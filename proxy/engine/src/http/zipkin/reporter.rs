//! Sends finished spans to the collector as Envoy's Zipkin reporter does: batched, a batch
//! POSTed (`content-type: application/json`, the collector's Host and headers, a 5 s timeout)
//! when it holds 5 spans (Envoy's `tracing.zipkin.min_flush_spans`) or 5 s after its first
//! span (`flush_interval_ms`), as a JSON array. A task per connection manager, started with its
//! first span and ended when the config version it serves is gone and its spans are sent;
//! a span that finds the queue full is dropped and counted, never waited for.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request};
use tokio::sync::mpsc;

use crate::{config::Zipkin, upstream::Cluster};

/// Envoy's `tracing.zipkin.min_flush_spans`.
const MIN_FLUSH_SPANS: usize = 5;
/// Envoy's `tracing.zipkin.flush_interval_ms`.
const FLUSH_INTERVAL: Duration = Duration::from_secs(5);
/// Envoy's `tracing.zipkin.request_timeout`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Spans waiting to be sent at most (more are dropped).
const QUEUE: usize = 4096;

/// What the reporters did (the admin's `tracing.zipkin.*` counters).
#[derive(Debug, Default)]
pub struct ZipkinStats {
    /// `spans_sent`: spans in batches sent.
    pub spans_sent: AtomicU64,
    /// `reports_sent`: batches the collector accepted (202).
    pub reports_sent: AtomicU64,
    /// `reports_dropped`: batches it answered otherwise.
    pub reports_dropped: AtomicU64,
    /// `reports_failed`: batches that got no answer.
    pub reports_failed: AtomicU64,
    /// `reports_skipped_no_cluster`: batches with no collector cluster to go to.
    pub reports_skipped_no_cluster: AtomicU64,
    /// `timer_flushed`: batches sent by the interval rather than by count.
    pub timer_flushed: AtomicU64,
    /// Spans dropped because the queue was full.
    pub spans_dropped: AtomicU64,
}

/// The process's Zipkin counters.
pub fn stats() -> &'static ZipkinStats {
    static STATS: std::sync::OnceLock<ZipkinStats> = std::sync::OnceLock::new();
    STATS.get_or_init(ZipkinStats::default)
}

/// A connection manager's reporter.
#[derive(Debug)]
pub(crate) struct Reporter {
    tx: mpsc::Sender<String>,
}

impl Reporter {
    /// Starts the task sending to `z`'s collector, `cluster` (None: it is gone).
    pub(crate) fn start(z: &Zipkin, cluster: Option<Arc<Cluster>>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let target = Target {
            name: z.cluster.clone(),
            clusters: cluster
                .map(|c| HashMap::from([(z.cluster.clone(), c)]))
                .unwrap_or_default(),
            path: z.path.clone(),
            host: HeaderValue::from_str(&z.host).ok(),
            headers: z.headers.clone(),
        };
        tokio::spawn(run(rx, target));
        Self { tx }
    }

    /// Queues a finished span's JSON.
    pub(crate) fn report(&self, span: String) {
        if self.tx.try_send(span).is_err() {
            stats().spans_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Where batches go.
struct Target {
    name: String,
    clusters: HashMap<String, Arc<Cluster>>,
    path: String,
    host: Option<HeaderValue>,
    headers: Vec<(http::HeaderName, HeaderValue)>,
}

/// Batches spans until the sender is gone, then sends what is left.
async fn run(mut rx: mpsc::Receiver<String>, target: Target) {
    let mut batch = Vec::with_capacity(MIN_FLUSH_SPANS);
    loop {
        let Some(first) = rx.recv().await else {
            return;
        };
        batch.push(first);
        let deadline = tokio::time::Instant::now() + FLUSH_INTERVAL;
        let mut closed = false;
        let mut by_timer = false;
        while batch.len() < MIN_FLUSH_SPANS {
            tokio::select! {
                s = rx.recv() => match s {
                    Some(s) => batch.push(s),
                    None => { closed = true; break; }
                },
                () = tokio::time::sleep_until(deadline) => { by_timer = true; break; }
            }
        }
        if by_timer {
            stats().timer_flushed.fetch_add(1, Ordering::Relaxed);
        }
        send(&target, std::mem::take(&mut batch)).await;
        if closed {
            return;
        }
    }
}

/// POSTs one batch.
async fn send(t: &Target, batch: Vec<String>) {
    let s = stats();
    s.spans_sent
        .fetch_add(batch.len() as u64, Ordering::Relaxed);
    if t.clusters.is_empty() {
        s.reports_skipped_no_cluster.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let mut body = String::with_capacity(batch.iter().map(|b| b.len() + 1).sum::<usize>() + 2);
    body.push('[');
    body.push_str(&batch.join(","));
    body.push(']');
    let mut req = Request::new(crate::http::local_reply::full(Bytes::from(body)));
    *req.method_mut() = Method::POST;
    if let Ok(u) = t.path.parse() {
        *req.uri_mut() = u;
    }
    let h = req.headers_mut();
    if let Some(host) = &t.host {
        h.insert(header::HOST, host.clone());
    }
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    for (k, v) in &t.headers {
        h.insert(k.clone(), v.clone());
    }
    let answer = crate::http::filters::ext_authz::call::call(
        &t.name,
        &t.clusters,
        req,
        Some(REQUEST_TIMEOUT),
        |_| 0,
    )
    .await;
    match answer {
        Some(a) if a.head.status == 202 => s.reports_sent.fetch_add(1, Ordering::Relaxed),
        Some(_) => s.reports_dropped.fetch_add(1, Ordering::Relaxed),
        None => s.reports_failed.fetch_add(1, Ordering::Relaxed),
    };
}
