//! Sends finished spans to the collector as Envoy's tracers do: batched, a batch sent when it
//! holds 5 spans (Envoy's `tracing.{zipkin,opentelemetry}.min_flush_spans`) or 5 s after its
//! first span (`flush_interval_ms`). Zipkin: a JSON array POSTed (`content-type:
//! application/json`, the collector's Host and headers, a 5 s timeout; 202 counts as sent).
//! OpenTelemetry: one OTLP `ExportTraceServiceRequest`, as a unary gRPC `TraceService/Export`
//! call (no timeout, as Envoy's) or a protobuf POST (`http_uri.timeout`). A task per connection
//! manager (at most 16 batches in flight), ended when the config version it serves is gone and
//! its spans are sent; a span
//! that finds the queue full (Zipkin: 4096; OpenTelemetry: `max_cache_size`) is dropped and
//! counted, never waited for. Envoy's counters are kept in the stats store.

use std::{collections::HashMap, sync::Arc, time::Duration};

use bytes::{BufMut, Bytes, BytesMut};
use http::{header, HeaderName, HeaderValue, Method, Request};
use opentelemetry_proto::tonic::trace::v1::Span as Otlp;
use prost::Message;
use tokio::sync::mpsc;

use crate::{
    config::{OpenTelemetry, OtelExport, Zipkin},
    server::stats::{Counter, StatsStore},
    upstream::Cluster,
};

/// Envoy's `min_flush_spans`.
const MIN_FLUSH_SPANS: usize = 5;
/// Envoy's `flush_interval_ms`.
const FLUSH_INTERVAL: Duration = Duration::from_secs(5);
/// Envoy's `tracing.zipkin.request_timeout`.
const ZIPKIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Zipkin spans waiting to be sent at most (more are dropped).
pub(crate) const QUEUE: usize = 4096;
/// The OTLP gRPC method's path.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// A finished span.
#[derive(Debug)]
pub(crate) enum Item {
    /// A Zipkin v2 JSON object.
    Json(String),
    /// An OTLP span.
    Otlp(Box<Otlp>),
}

/// A tracer's counters (the stats store's, shown by the admin's `/stats`).
#[derive(Debug, Clone)]
pub(crate) struct Stats {
    /// `spans_sent`: spans in batches sent.
    spans_sent: Arc<Counter>,
    /// `timer_flushed`: batches sent by the interval rather than by count.
    timer_flushed: Arc<Counter>,
    /// `spans_dropped`: spans dropped because the queue was full.
    spans_dropped: Arc<Counter>,
    /// Zipkin's report counters: `reports_sent` (202), `reports_dropped` (another answer),
    /// `reports_failed` (none), `reports_skipped_no_cluster`.
    reports: Option<[Arc<Counter>; 4]>,
}

impl Stats {
    /// The counters under `prefix` in `stats`; `reports`: Zipkin's report counters too.
    pub(crate) fn of(stats: &StatsStore, prefix: &str, reports: bool) -> Self {
        let c = |n: &str| stats.named_counter(&format!("{prefix}{n}"), false);
        Self {
            spans_sent: c("spans_sent"),
            timer_flushed: c("timer_flushed"),
            spans_dropped: c("spans_dropped"),
            reports: reports.then(|| {
                [
                    c("reports_sent"),
                    c("reports_dropped"),
                    c("reports_failed"),
                    c("reports_skipped_no_cluster"),
                ]
            }),
        }
    }

    fn report(&self, i: usize) {
        if let Some(r) = &self.reports {
            r[i].inc();
        }
    }
}

/// Where batches go.
pub(crate) struct Sink {
    /// The collector's cluster (empty: gone, or none configured).
    clusters: HashMap<String, Arc<Cluster>>,
    name: String,
    kind: SinkKind,
}

enum SinkKind {
    Zipkin {
        path: String,
        host: Option<HeaderValue>,
        headers: Vec<(HeaderName, HeaderValue)>,
    },
    Otel {
        resource: Vec<(String, String)>,
        export: OtelExport,
    },
}

impl Sink {
    /// Zipkin's collector, `cluster` (None: it is gone).
    pub(crate) fn zipkin(z: &Zipkin, cluster: Option<Arc<Cluster>>) -> Self {
        Self {
            clusters: cluster
                .map(|c| HashMap::from([(z.cluster.clone(), c)]))
                .unwrap_or_default(),
            name: z.cluster.clone(),
            kind: SinkKind::Zipkin {
                path: z.path.clone(),
                host: HeaderValue::from_str(&z.host).ok(),
                headers: z.headers.clone(),
            },
        }
    }

    /// The OpenTelemetry exporter, its cluster looked up in `clusters`.
    pub(crate) fn otel(o: &OpenTelemetry, clusters: &HashMap<String, Arc<Cluster>>) -> Self {
        let name = o.export.cluster().unwrap_or_default().to_string();
        Self {
            clusters: clusters
                .get(&name)
                .map(|c| HashMap::from([(name.clone(), c.clone())]))
                .unwrap_or_default(),
            name,
            kind: SinkKind::Otel {
                resource: o.resource.clone(),
                export: o.export.clone(),
            },
        }
    }
}

/// A connection manager's reporter.
#[derive(Debug)]
pub(crate) struct Reporter {
    /// None: a queue of size 0 (every span dropped).
    tx: Option<mpsc::Sender<Item>>,
    stats: Stats,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink").field("cluster", &self.name).finish()
    }
}

impl Reporter {
    /// Starts the task sending to `sink`, at most `queue` spans waiting.
    pub(crate) fn start(sink: Sink, stats: Stats, queue: usize) -> Self {
        let tx = (queue > 0).then(|| {
            let (tx, rx) = mpsc::channel(queue);
            tokio::spawn(run(rx, sink, stats.clone()));
            tx
        });
        Self { tx, stats }
    }

    /// Queues a finished span.
    pub(crate) fn report(&self, span: Item) {
        if self.tx.as_ref().is_none_or(|tx| tx.try_send(span).is_err()) {
            self.stats.spans_dropped.inc();
        }
    }
}

/// Batches sent at once at most (a slow collector holds the rest in the queue).
const IN_FLIGHT: usize = 16;

/// Batches spans until the sender is gone, then sends what is left; a batch goes while the
/// next fills, as Envoy sends without waiting for the last.
async fn run(mut rx: mpsc::Receiver<Item>, sink: Sink, stats: Stats) {
    let sink = Arc::new(sink);
    let slots = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
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
            stats.timer_flushed.inc();
        }
        let batch = std::mem::take(&mut batch);
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (sink, stats) = (sink.clone(), stats.clone());
        tokio::spawn(async move {
            send(&sink, &stats, batch).await;
            drop(slot);
        });
        if closed {
            return;
        }
    }
}

/// Sends one batch.
async fn send(sink: &Sink, stats: &Stats, batch: Vec<Item>) {
    match &sink.kind {
        SinkKind::Zipkin {
            path,
            host,
            headers,
        } => {
            stats.spans_sent.add(batch.len() as u64);
            if sink.clusters.is_empty() {
                stats.report(3);
                return;
            }
            let json: Vec<String> = batch
                .into_iter()
                .filter_map(|i| match i {
                    Item::Json(j) => Some(j),
                    Item::Otlp(_) => None,
                })
                .collect();
            let body = format!("[{}]", json.join(","));
            let mut req = post(path, host.clone(), "application/json", body.into());
            set_all(req.headers_mut(), headers);
            let answer = call(sink, req, Some(ZIPKIN_TIMEOUT)).await;
            stats.report(match answer {
                Some(202) => 0,
                Some(_) => 1,
                None => 2,
            });
        }
        SinkKind::Otel { resource, export } => {
            let spans: Vec<Otlp> = batch
                .into_iter()
                .filter_map(|i| match i {
                    Item::Otlp(s) => Some(*s),
                    Item::Json(_) => None,
                })
                .collect();
            let n = spans.len() as u64;
            let message = super::otel::request(resource, spans).encode_to_vec();
            let agent = HeaderValue::from_str(&format!(
                "OTel-OTLP-Exporter-Envoy/{}",
                crate::config::otel::sdk_version()
            ))
            .expect("a header value");
            match export {
                // No exporter: made and discarded, not counted (as Envoy).
                OtelExport::None => {}
                OtelExport::Grpc {
                    authority,
                    metadata,
                    ..
                } => {
                    stats.spans_sent.add(n);
                    let mut framed = BytesMut::with_capacity(5 + message.len());
                    framed.put_u8(0);
                    framed.put_u32(message.len() as u32);
                    framed.extend_from_slice(&message);
                    let mut req = post(
                        EXPORT_PATH,
                        Some(authority.clone()),
                        "application/grpc",
                        framed.freeze(),
                    );
                    let h = req.headers_mut();
                    h.insert(header::TE, HeaderValue::from_static("trailers"));
                    set_all(h, metadata);
                    h.insert(header::USER_AGENT, agent);
                    call(sink, req, None).await;
                }
                OtelExport::Http {
                    host,
                    path,
                    headers,
                    timeout,
                    ..
                } => {
                    stats.spans_sent.add(n);
                    let host = HeaderValue::from_str(host).ok();
                    let mut req = post(path, host, "application/x-protobuf", message.into());
                    let h = req.headers_mut();
                    h.insert(header::USER_AGENT, agent);
                    set_all(h, headers);
                    call(sink, req, *timeout).await;
                }
            }
        }
    }
}

/// A POST of `body` to `path` with Host `host`.
fn post(
    path: &str,
    host: Option<HeaderValue>,
    content_type: &'static str,
    body: Bytes,
) -> Request<crate::http::Body> {
    let mut req = Request::new(crate::http::local_reply::full(body));
    *req.method_mut() = Method::POST;
    if let Ok(u) = path.parse() {
        *req.uri_mut() = u;
    }
    let h = req.headers_mut();
    if let Some(host) = host {
        h.insert(header::HOST, host);
    }
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    req
}

/// Sets each of `headers` (replacing).
fn set_all(h: &mut http::HeaderMap, headers: &[(HeaderName, HeaderValue)]) {
    for (k, v) in headers {
        h.insert(k.clone(), v.clone());
    }
}

/// Sends `req` to the sink's cluster; the answer's status (None: none came).
async fn call(
    sink: &Sink,
    req: Request<crate::http::Body>,
    timeout: Option<Duration>,
) -> Option<u16> {
    crate::http::filters::ext_authz::call::call(&sink.name, &sink.clusters, req, timeout, |_| 0)
        .await
        .map(|a| a.head.status.as_u16())
}
