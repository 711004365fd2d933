//! The spans of the HCM's tracing provider: OpenTelemetry's ([`otel`]) and Zipkin's, as Envoy
//! 1.40's `envoy.tracers.zipkin` makes them for the HCM's `tracing` with that provider: one span per request, started from the request's B3 (or W3C) context or
//! as a new trace, named by its Host or the route's decorator, sampled by the request's flag or
//! the HCM's trace decision; its context sent upstream as `x-b3-*` headers (and `traceparent`);
//! finished with Envoy's tags when the response ends, and reported — only when sampled — to
//! the collector as Zipkin v2 JSON ([`reporter`]). `spawn_upstream_span` (or the router's
//! `start_child_span`) adds a client span per upstream attempt ([`upstream`]).

pub(crate) mod extract;
pub(crate) mod finish;
mod json;
pub mod local;
pub(crate) mod otel;
pub(crate) mod reporter;
pub(crate) mod tags;
pub(crate) mod upstream;

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use http::{HeaderMap, HeaderValue};

use crate::{
    config::{TraceProvider, TracerConfig, Zipkin},
    upstream::Cluster,
};

pub use local::Local;

/// A connection manager's tracer: its provider's config, who reports, and the reporter.
#[derive(Debug)]
pub(crate) struct Tracer {
    /// The provider and the HCM fields that shape its spans.
    pub provider: Arc<TraceProvider>,
    /// Who reports.
    pub local: Arc<Local>,
    reporter: reporter::Reporter,
}

impl Tracer {
    /// The tracer of `provider`, its collector looked up in `clusters`.
    pub(crate) fn new(
        provider: Arc<TraceProvider>,
        local: Arc<Local>,
        clusters: &HashMap<String, Arc<Cluster>>,
        stats: &crate::server::stats::StatsStore,
    ) -> Self {
        let reporter = match &provider.tracer {
            TracerConfig::Zipkin(z) => reporter::Reporter::start(
                reporter::Sink::zipkin(z, clusters.get(&z.cluster).cloned()),
                reporter::Stats::of(stats, "tracing.zipkin.", true),
                reporter::QUEUE,
            ),
            TracerConfig::OpenTelemetry(o) => reporter::Reporter::start(
                reporter::Sink::otel(o, clusters),
                reporter::Stats::of(stats, "tracing.opentelemetry.", false),
                o.max_cache_size,
            ),
        };
        Self {
            reporter,
            provider,
            local,
        }
    }

    /// The connection manager's span of a request (see [`start`] and [`otel::start`]), with
    /// the tags Envoy's tracer sets on every span it starts (`node_id`; OpenTelemetry keeps
    /// an empty `zone` too).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        &self,
        egress: bool,
        traced: bool,
        headers: &HeaderMap,
        host: &str,
        wall: SystemTime,
        at: Instant,
    ) -> Option<Span> {
        let upstream_spans = self.provider.upstream_spans;
        match &self.provider.tracer {
            TracerConfig::Zipkin(z) => {
                let split = z.split_spans_for_request || upstream_spans;
                let mut s = start(z, split, egress, traced, headers, host, wall, at)?;
                if s.ids.sampled {
                    s.tag("node_id", self.local.node_id.as_str());
                }
                Some(s)
            }
            TracerConfig::OpenTelemetry(_) => {
                let mut s = otel::start(upstream_spans, egress, traced, headers, host, wall, at)?;
                if s.ids.sampled {
                    s.tag("node_id", self.local.node_id.as_str());
                    s.tag("zone", "");
                }
                Some(s)
            }
        }
    }

    /// Sends `span`'s context upstream on `h` (unless `no_context_propagation`).
    pub(crate) fn inject(&self, span: &Span, h: &mut HeaderMap) {
        if self.provider.no_context_propagation {
            return;
        }
        match &self.provider.tracer {
            TracerConfig::Zipkin(z) => inject(&span.ids, span.single_b3, z.w3c, h),
            TracerConfig::OpenTelemetry(_) => otel::inject(&span.ids, &span.trace_state, h),
        }
    }

    /// Finishes `span` now and queues it for the collector.
    pub(crate) fn report(&self, span: &Span) {
        let item = match &self.provider.tracer {
            TracerConfig::Zipkin(_) => reporter::Item::Json(span.finish(&self.local)),
            TracerConfig::OpenTelemetry(_) => reporter::Item::Otlp(Box::new(otel::finish(span))),
        };
        self.reporter.report(item);
    }
}

/// Which side of a call a span is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `sr` … `ss`: the connection manager's span of an inbound request (or any, with split
    /// spans).
    Server,
    /// `cs` … `cr`: the span of an outbound request, or an upstream attempt's.
    Client,
}

/// A span's ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ids {
    /// The trace id's high 64 bits (0: a 64-bit trace id).
    pub high: u64,
    /// The trace id's low 64 bits.
    pub trace: u64,
    /// This span's id.
    pub id: u64,
    /// The parent's id (0: none).
    pub parent: u64,
    /// Sampled: reported when finished, and said so upstream.
    pub sampled: bool,
}

/// A span being timed.
#[derive(Debug, Clone)]
pub(crate) struct Span {
    /// Its ids.
    pub ids: Ids,
    /// Its side.
    pub kind: Kind,
    /// A server span under `shared_span_context`: `"shared": true`.
    pub shared: bool,
    /// Its name (empty: none).
    pub name: String,
    /// µs since the epoch when it started.
    pub timestamp_us: u64,
    /// When it started (its duration).
    pub start: Instant,
    /// Its tags, in the order set (a later one of the same name wins).
    pub tags: Vec<(&'static str, String)>,
    /// Custom tags' names (theirs are not static).
    pub custom: Vec<(String, String)>,
    /// The request's context came in the single `b3` header: it goes upstream in that form.
    pub single_b3: bool,
    /// OpenTelemetry: its `tracestate`, and its tags keep empty values (Zipkin drops them).
    pub trace_state: String,
    /// An OpenTelemetry span.
    pub otel: bool,
}

/// µs since the epoch of `t`.
pub(crate) fn epoch_us(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// A fresh span id (never 0: 0 means "none" on the wire).
pub(crate) fn random_id() -> u64 {
    loop {
        let v: u64 = rand::random();
        if v != 0 {
            return v;
        }
    }
}

/// Envoy's `Driver::startSpan` and `Tracer::startSpan` for the connection manager's span of a
/// request with `headers` and `host`, started at `(wall, start)`: `traced` is the HCM's trace
/// decision, `egress` the listener's direction, `split` the provider's
/// `split_spans_for_request` or upstream spans. None when the request's B3 context is
/// malformed (Envoy's null span: nothing sent, nothing reported).
#[allow(clippy::too_many_arguments)]
pub(crate) fn start(
    z: &Zipkin,
    split: bool,
    egress: bool,
    traced: bool,
    headers: &HeaderMap,
    host: &str,
    wall: SystemTime,
    start: Instant,
) -> Option<Span> {
    let flag = extract::sampled(headers, z.w3c);
    let ctx = extract::context(headers, z.w3c, flag.unwrap_or(traced)).ok()?;
    let server = split || !egress;
    let ids = match ctx {
        None => {
            let id = random_id();
            Ids {
                high: if z.trace_id_128bit { random_id() } else { 0 },
                trace: id,
                id,
                parent: 0,
                sampled: flag.unwrap_or(traced),
            }
        }
        Some(c) => join(&c, server, z.shared_span_context),
    };
    let kind = if server { Kind::Server } else { Kind::Client };
    Some(Span {
        shared: server && z.shared_span_context,
        single_b3: headers.contains_key("b3"),
        ..Span::new(ids, kind, host.to_string(), wall, start)
    })
}

/// The ids of a span joining the context `c`: a client span (or any without a shared context)
/// is the caller's child; a server span with a shared context takes the caller's ids.
pub(crate) fn join(c: &extract::Context, server: bool, shared: bool) -> Ids {
    let (id, parent) = if !server || !shared {
        (random_id(), c.id)
    } else {
        (c.id, c.parent)
    };
    Ids {
        high: c.high,
        trace: c.trace,
        id,
        parent,
        sampled: c.sampled,
    }
}

/// Lower-case hex of `v`, 16 digits.
pub(crate) fn hex16(v: u64) -> [u8; 16] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'0'; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = DIGITS[((v >> (60 - 4 * i)) & 0xf) as usize];
    }
    out
}

/// The trace id as sent: 32 digits with a high part, else 16.
pub(crate) fn trace_hex(ids: &Ids) -> String {
    let mut s = String::with_capacity(32);
    if ids.high != 0 {
        s.push_str(std::str::from_utf8(&hex16(ids.high)).unwrap_or_default());
    }
    s.push_str(std::str::from_utf8(&hex16(ids.trace)).unwrap_or_default());
    s
}

/// Envoy's `Span::injectContext`: the B3 context of `ids` set (replacing) on `h` — in the
/// single `b3` header (`{trace}-{span}-{flag}[-{parent}]`) when the request's came so, else as
/// the `x-b3-*` headers — and with `w3c` a `traceparent`. `x-b3-flags` or a stale
/// `x-b3-parentspanid` is left as it came.
pub(crate) fn inject(ids: &Ids, single: bool, w3c: bool, h: &mut HeaderMap) {
    let value = |b: &[u8]| HeaderValue::from_bytes(b).expect("hex digits");
    let trace = trace_hex(ids);
    let sampled = if ids.sampled { "1" } else { "0" };
    if single {
        let mut b3 = String::with_capacity(68);
        b3.push_str(&trace);
        b3.push('-');
        b3.push_str(std::str::from_utf8(&hex16(ids.id)).unwrap_or_default());
        b3.push('-');
        b3.push_str(sampled);
        if ids.parent != 0 {
            b3.push('-');
            b3.push_str(std::str::from_utf8(&hex16(ids.parent)).unwrap_or_default());
        }
        h.insert("b3", value(b3.as_bytes()));
    } else {
        h.insert("x-b3-traceid", value(trace.as_bytes()));
        h.insert("x-b3-spanid", value(&hex16(ids.id)));
        if ids.parent != 0 {
            h.insert("x-b3-parentspanid", value(&hex16(ids.parent)));
        }
        h.insert("x-b3-sampled", HeaderValue::from_static(sampled));
    }
    if w3c {
        h.insert("traceparent", otel::traceparent(ids));
    }
}

impl Span {
    /// A span with `ids`, of `kind`, named `name`, started at `(wall, start)`: no tags, in
    /// Zipkin's form (its caller sets the form's fields).
    pub(crate) fn new(
        ids: Ids,
        kind: Kind,
        name: String,
        wall: SystemTime,
        start: Instant,
    ) -> Self {
        Span {
            ids,
            kind,
            shared: false,
            name,
            timestamp_us: epoch_us(wall),
            start,
            tags: Vec::new(),
            custom: Vec::new(),
            single_b3: false,
            trace_state: String::new(),
            otel: false,
        }
    }

    /// An upstream attempt's client span under this one (a new id, this one's as parent, its
    /// sampling, form and `tracestate`), named `name`, starting now.
    pub(crate) fn child(&self, name: String) -> Self {
        let ids = Ids {
            id: random_id(),
            parent: self.ids.id,
            ..self.ids
        };
        Span {
            single_b3: self.single_b3,
            trace_state: self.trace_state.clone(),
            otel: self.otel,
            ..Span::new(ids, Kind::Client, name, SystemTime::now(), Instant::now())
        }
    }

    /// Sets a tag (Zipkin drops an empty value; OpenTelemetry keeps it).
    pub(crate) fn tag(&mut self, name: &'static str, value: impl Into<String>) {
        let value = value.into();
        if !value.is_empty() || self.otel {
            self.tags.push((name, value));
        }
    }

    /// Renames the span (an empty name is kept out, as Envoy's `setOperation` of a decorator
    /// with none is never called).
    pub(crate) fn rename(&mut self, name: &str) {
        name.clone_into(&mut self.name);
    }

    /// The span as Zipkin v2 JSON, finished now, for `local`.
    pub(crate) fn finish(&self, local: &Local) -> String {
        let duration = u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX);
        json::span(self, local, duration, epoch_us(SystemTime::now()))
    }
}

#[cfg(test)]
#[path = "spans_tests.rs"]
mod tests;
