//! Sends finished spans to the collector as Envoy's Zipkin reporter does: batched, a batch
//! POSTed (`content-type: application/json`, the collector's Host and headers, a 5 s timeout)
//! when it holds 5 spans (Envoy's `tracing.zipkin.min_flush_spans`) or 5 s after its first
//! span (`flush_interval_ms`), as a JSON array. A task per connection manager, started with its
//! first span and ended when the config version it serves is gone and its spans are sent;
//! a span that finds the queue full is dropped and counted, never waited for. Envoy's
//! `tracing.zipkin.*` counters are kept in the stats store.

use std::{collections::HashMap, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request};
use tokio::sync::mpsc;

use crate::{
    config::Zipkin,
    server::stats::{Counter, StatsStore},
    upstream::Cluster,
};

/// Envoy's `tracing.zipkin.min_flush_spans`.
const MIN_FLUSH_SPANS: usize = 5;
/// Envoy's `tracing.zipkin.flush_interval_ms`.
const FLUSH_INTERVAL: Duration = Duration::from_secs(5);
/// Envoy's `tracing.zipkin.request_timeout`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Spans waiting to be sent at most (more are dropped).
const QUEUE: usize = 4096;

/// Envoy's `tracing.zipkin.*` counters (the stats store's, shown by the admin's `/stats`).
#[derive(Debug, Clone)]
pub(crate) struct ZipkinStats {
    /// `spans_sent`: spans in batches sent.
    spans_sent: Arc<Counter>,
    /// `reports_sent`: batches the collector accepted (202).
    reports_sent: Arc<Counter>,
    /// `reports_dropped`: batches it answered otherwise.
    reports_dropped: Arc<Counter>,
    /// `reports_failed`: batches that got no answer.
    reports_failed: Arc<Counter>,
    /// `reports_skipped_no_cluster`: batches with no collector cluster to go to.
    reports_skipped_no_cluster: Arc<Counter>,
    /// `timer_flushed`: batches sent by the interval rather than by count.
    timer_flushed: Arc<Counter>,
    /// `spans_dropped` (sluice's): spans dropped because the queue was full.
    spans_dropped: Arc<Counter>,
}

impl ZipkinStats {
    /// The counters in `stats`.
    pub(crate) fn of(stats: &StatsStore) -> Self {
        let c = |n: &str| stats.named_counter(&format!("tracing.zipkin.{n}"), false);
        Self {
            spans_sent: c("spans_sent"),
            reports_sent: c("reports_sent"),
            reports_dropped: c("reports_dropped"),
            reports_failed: c("reports_failed"),
            reports_skipped_no_cluster: c("reports_skipped_no_cluster"),
            timer_flushed: c("timer_flushed"),
            spans_dropped: c("spans_dropped"),
        }
    }
}

/// A connection manager's reporter.
#[derive(Debug)]
pub(crate) struct Reporter {
    tx: mpsc::Sender<String>,
    stats: ZipkinStats,
}

impl Reporter {
    /// Starts the task sending to `z`'s collector, `cluster` (None: it is gone).
    pub(crate) fn start(z: &Zipkin, cluster: Option<Arc<Cluster>>, stats: ZipkinStats) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let target = Target {
            name: z.cluster.clone(),
            clusters: cluster
                .map(|c| HashMap::from([(z.cluster.clone(), c)]))
                .unwrap_or_default(),
            path: z.path.clone(),
            host: HeaderValue::from_str(&z.host).ok(),
            headers: z.headers.clone(),
            stats: stats.clone(),
        };
        tokio::spawn(run(rx, target));
        Self { tx, stats }
    }

    /// Queues a finished span's JSON.
    pub(crate) fn report(&self, span: String) {
        if self.tx.try_send(span).is_err() {
            self.stats.spans_dropped.inc();
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
    stats: ZipkinStats,
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
            target.stats.timer_flushed.inc();
        }
        send(&target, std::mem::take(&mut batch)).await;
        if closed {
            return;
        }
    }
}

/// POSTs one batch.
async fn send(t: &Target, batch: Vec<String>) {
    let s = &t.stats;
    s.spans_sent.add(batch.len() as u64);
    if t.clusters.is_empty() {
        s.reports_skipped_no_cluster.inc();
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
        Some(a) if a.head.status == 202 => s.reports_sent.inc(),
        Some(_) => s.reports_dropped.inc(),
        None => s.reports_failed.inc(),
    }
}
