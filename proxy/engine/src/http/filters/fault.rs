//! `envoy.filters.http.fault` (extensions.filters.http.fault.v3.HTTPFault): delays, aborts and
//! response rate limits (`filters/throttle.rs`), fixed or taken from the request's
//! `x-envoy-fault-*` headers, with Envoy 1.40's checks (upstream cluster, downstream nodes,
//! header matchers, max active faults) in its order.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use http::HeaderMap;
use serde::Deserialize;

use crate::{
    config::{
        duration::PbDuration,
        raw_route::{RawFractionalPercent, RawHeaderMatcher},
        ConfigError, FieldPath,
    },
    route::{header_matcher, percent, FractionalPercent, HeaderMatcher},
};

/// `@type` of the filter's config (also its per-route config).
pub const TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault";

/// `HTTPFault`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFault {
    delay: Option<RawDelay>,
    abort: Option<RawAbort>,
    response_rate_limit: Option<RawRateLimit>,
    upstream_cluster: Option<String>,
    #[serde(default)]
    headers: Vec<RawHeaderMatcher>,
    #[serde(default)]
    downstream_nodes: Vec<String>,
    max_active_faults: Option<u32>,
    // Runtime keys: documented no-ops (no runtime layer; the configured values apply).
    #[allow(dead_code)]
    abort_percent_runtime: Option<String>,
    #[allow(dead_code)]
    delay_percent_runtime: Option<String>,
    #[allow(dead_code)]
    abort_http_status_runtime: Option<String>,
    #[allow(dead_code)]
    abort_grpc_status_runtime: Option<String>,
    #[allow(dead_code)]
    delay_duration_runtime: Option<String>,
    #[allow(dead_code)]
    max_active_faults_runtime: Option<String>,
    #[allow(dead_code)]
    response_rate_limit_percent_runtime: Option<String>,
    /// Only stats: a no-op.
    #[allow(dead_code)]
    disable_downstream_cluster_stats: Option<bool>,
}

/// `extensions.filters.common.fault.v3.FaultDelay`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDelay {
    fixed_delay: Option<PbDuration>,
    header_delay: Option<crate::config::raw::Empty>,
    percentage: Option<RawFractionalPercent>,
}

/// `FaultAbort`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAbort {
    http_status: Option<u32>,
    grpc_status: Option<u32>,
    header_abort: Option<crate::config::raw::Empty>,
    percentage: Option<RawFractionalPercent>,
    response_body: Option<String>,
}

/// `extensions.filters.common.fault.v3.FaultRateLimit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    fixed_limit: Option<RawFixedLimit>,
    header_limit: Option<crate::config::raw::Empty>,
    percentage: Option<RawFractionalPercent>,
}

/// `FaultRateLimit.FixedLimit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFixedLimit {
    limit_kbps: Option<u64>,
}

/// What a delay or abort takes its value from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source<T> {
    Fixed(T),
    Header,
}

#[derive(Debug)]
struct Delay {
    source: Source<Duration>,
    percent: FractionalPercent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AbortKind {
    Http(u16),
    Grpc(u32),
}

#[derive(Debug)]
struct Abort {
    source: Source<AbortKind>,
    percent: FractionalPercent,
    /// `response_body` (empty: Envoy's `fault filter abort`).
    body: Arc<str>,
}

/// `response_rate_limit`: KiB/s.
#[derive(Debug)]
struct RateLimit {
    source: Source<u64>,
    percent: FractionalPercent,
}

/// A compiled `HTTPFault`.
#[derive(Debug)]
pub struct Fault {
    delay: Option<Delay>,
    abort: Option<Abort>,
    rate_limit: Option<RateLimit>,
    upstream_cluster: Option<String>,
    headers: Vec<HeaderMatcher>,
    downstream_nodes: Vec<String>,
    max_active: Option<u64>,
    /// Faults in progress (delays waiting, aborts being answered), for `max_active_faults`.
    active: Arc<AtomicU64>,
}

/// Envoy's default percentage of a delay or abort without `percentage`: 0 (never).
fn pct(
    raw: &Option<RawFractionalPercent>,
    p: &FieldPath,
) -> Result<FractionalPercent, ConfigError> {
    match raw {
        Some(r) => percent(r, &p.field("percentage")),
        None => Ok(FractionalPercent {
            numerator: 0,
            denominator: 100,
        }),
    }
}

/// A fault's value: fixed (`fixed`, already checked) or from a header; exactly one of the
/// two fields `names` must be set.
fn fixed_or_header<T>(
    fixed: Option<Result<T, ConfigError>>,
    header: bool,
    names: (&str, &str),
    p: &FieldPath,
) -> Result<Source<T>, ConfigError> {
    match (fixed, header) {
        (Some(f), false) => Ok(Source::Fixed(f?)),
        (None, true) => Ok(Source::Header),
        (None, false) => Err(p.err(format!("one of {} and {} is required", names.0, names.1))),
        (Some(_), true) => Err(p.err(format!(
            "only one of {} and {} may be set",
            names.0, names.1
        ))),
    }
}

/// Compiles `raw` (at `p`).
pub(crate) fn build(raw: RawFault, p: &FieldPath) -> Result<Fault, ConfigError> {
    let delay = match raw.delay {
        None => None,
        Some(d) => {
            let dp = p.field("delay");
            let source = fixed_or_header(
                d.fixed_delay.map(|f| Ok(f.0)),
                d.header_delay.is_some(),
                ("fixed_delay", "header_delay"),
                &dp,
            )?;
            Some(Delay {
                source,
                percent: pct(&d.percentage, &dp)?,
            })
        }
    };
    let abort = match raw.abort {
        None => None,
        Some(a) => {
            let ap = p.field("abort");
            let source = match (a.http_status, a.grpc_status, a.header_abort) {
                (Some(s), None, None) => {
                    if !(200..600).contains(&s) {
                        return Err(ap
                            .field("http_status")
                            .err(format!("{s} is not in [200, 600)")));
                    }
                    Source::Fixed(AbortKind::Http(s as u16))
                }
                (None, Some(g), None) => Source::Fixed(AbortKind::Grpc(g)),
                (None, None, Some(_)) => Source::Header,
                (None, None, None) => {
                    return Err(
                        ap.err("one of http_status, grpc_status and header_abort is required")
                    )
                }
                _ => {
                    return Err(
                        ap.err("only one of http_status, grpc_status and header_abort may be set")
                    )
                }
            };
            Some(Abort {
                source,
                percent: pct(&a.percentage, &ap)?,
                body: a
                    .response_body
                    .filter(|b| !b.is_empty())
                    .unwrap_or_else(|| DEFAULT_ABORT_BODY.to_string())
                    .into(),
            })
        }
    };
    let rate_limit = match raw.response_rate_limit {
        None => None,
        Some(r) => {
            let rp = p.field("response_rate_limit");
            let fixed = r.fixed_limit.map(|f| match f.limit_kbps {
                Some(k) if k >= 1 => Ok(k),
                _ => Err(rp
                    .field("fixed_limit")
                    .field("limit_kbps")
                    .err("must be at least 1")),
            });
            let source = fixed_or_header(
                fixed,
                r.header_limit.is_some(),
                ("fixed_limit", "header_limit"),
                &rp,
            )?;
            Some(RateLimit {
                source,
                percent: pct(&r.percentage, &rp)?,
            })
        }
    };
    let mut headers = Vec::with_capacity(raw.headers.len());
    for (i, h) in raw.headers.iter().enumerate() {
        headers.push(header_matcher(h, &p.field("headers").index(i))?);
    }
    Ok(Fault {
        delay,
        abort,
        rate_limit,
        upstream_cluster: raw.upstream_cluster.filter(|c| !c.is_empty()),
        headers,
        downstream_nodes: raw.downstream_nodes,
        max_active: raw.max_active_faults.map(u64::from),
        active: Arc::new(AtomicU64::new(0)),
    })
}

/// A fault in progress: counts toward `max_active_faults` until dropped.
pub struct ActiveFault(Arc<AtomicU64>);

impl Drop for ActiveFault {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the fault filter does with one request.
pub struct Injected {
    /// Wait this long before going on.
    pub delay: Option<Duration>,
    /// Then answer locally.
    pub abort: Option<AbortReply>,
    /// Pace the response body to this many KiB/s.
    pub throttle_kbps: Option<u64>,
    /// Held for the request's life.
    pub guard: ActiveFault,
}

/// Envoy's abort body when `response_body` is unset.
const DEFAULT_ABORT_BODY: &str = "fault filter abort";

/// A local abort: an HTTP status, or a gRPC status (HTTP 200), and its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbortReply {
    /// The HTTP status.
    pub http: u16,
    /// The explicit gRPC status, if any.
    pub grpc: Option<u32>,
    /// The body (`response_body`, else `fault filter abort`).
    pub body: Arc<str>,
}

const DELAY_HEADER: &str = "x-envoy-fault-delay-request";
const DELAY_PCT_HEADER: &str = "x-envoy-fault-delay-request-percentage";
const ABORT_HEADER: &str = "x-envoy-fault-abort-request";
const ABORT_GRPC_HEADER: &str = "x-envoy-fault-abort-grpc-request";
const ABORT_PCT_HEADER: &str = "x-envoy-fault-abort-request-percentage";
const NODE_HEADER: &str = "x-envoy-downstream-service-node";
const THROUGHPUT_HEADER: &str = "x-envoy-fault-throughput-response";
const THROUGHPUT_PCT_HEADER: &str = "x-envoy-fault-throughput-response-percentage";

fn header_u64(h: &HeaderMap, name: &str) -> Option<u64> {
    h.get(name)?.to_str().ok()?.parse().ok()
}

/// Envoy's header-controlled percentage: the header's numerator capped by the configured
/// one, over the configured denominator; the configured percentage without the header.
fn effective(p: FractionalPercent, h: &HeaderMap, name: &str) -> FractionalPercent {
    match header_u64(h, name) {
        Some(n) => FractionalPercent {
            numerator: (n.min(u64::from(p.numerator))) as u32,
            denominator: p.denominator,
        },
        None => p,
    }
}

impl Fault {
    /// Envoy's `FaultFilter::decodeHeaders`: `cluster` is the routed cluster (None without a
    /// forwarding route); `random` draws the percentages.
    pub fn decide(
        &self,
        h: &HeaderMap,
        cluster: Option<&str>,
        mut random: impl FnMut() -> u64,
    ) -> Option<Injected> {
        if let Some(want) = &self.upstream_cluster {
            if cluster != Some(want.as_str()) {
                return None;
            }
        }
        if !self.downstream_nodes.is_empty() {
            let node = h.get(NODE_HEADER).and_then(|v| v.to_str().ok())?;
            if !self.downstream_nodes.iter().any(|n| n == node) {
                return None;
            }
        }
        if !self.headers.iter().all(|m| m.matches_any(&m.name, h)) {
            return None;
        }
        if let Some(max) = self.max_active {
            if self.active.load(Ordering::Relaxed) >= max {
                return None;
            }
        }
        // Envoy sets up the response rate limit first, then the delay, then the abort.
        let throttle_kbps = self.rate_limit.as_ref().and_then(|r| {
            if !effective(r.percent, h, THROUGHPUT_PCT_HEADER).holds(random()) {
                return None;
            }
            match r.source {
                Source::Fixed(k) => Some(k),
                Source::Header => header_u64(h, THROUGHPUT_HEADER).filter(|k| *k > 0),
            }
        });
        let delay = self.delay.as_ref().and_then(|d| {
            if !effective(d.percent, h, DELAY_PCT_HEADER).holds(random()) {
                return None;
            }
            let t = match d.source {
                Source::Fixed(t) => t,
                Source::Header => Duration::from_millis(header_u64(h, DELAY_HEADER)?),
            };
            (!t.is_zero()).then_some(t)
        });
        let abort = self.abort.as_ref().and_then(|a| {
            if !effective(a.percent, h, ABORT_PCT_HEADER).holds(random()) {
                return None;
            }
            match a.source {
                Source::Fixed(AbortKind::Http(s)) => Some(AbortReply {
                    http: s,
                    grpc: None,
                    body: a.body.clone(),
                }),
                Source::Fixed(AbortKind::Grpc(g)) => Some(AbortReply {
                    http: 200,
                    grpc: Some(g),
                    body: a.body.clone(),
                }),
                Source::Header => {
                    let http = header_u64(h, ABORT_HEADER).filter(|s| (200..600).contains(s));
                    match http {
                        Some(s) => Some(AbortReply {
                            http: s as u16,
                            grpc: None,
                            body: a.body.clone(),
                        }),
                        None => header_u64(h, ABORT_GRPC_HEADER).map(|g| AbortReply {
                            http: 200,
                            grpc: Some(g as u32),
                            body: a.body.clone(),
                        }),
                    }
                }
            }
        });
        if delay.is_none() && abort.is_none() && throttle_kbps.is_none() {
            return None;
        }
        self.active.fetch_add(1, Ordering::Relaxed);
        Some(Injected {
            delay,
            abort,
            throttle_kbps,
            guard: ActiveFault(self.active.clone()),
        })
    }
}
