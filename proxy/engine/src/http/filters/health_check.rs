//! `envoy.filters.http.health_check` (extensions.filters.http.health_check.v3.HealthCheck): the
//! front proxy's own health check endpoint, as Envoy's `HealthCheckFilter`.
//!
//! A request matching every `headers` matcher is a health check. Without `pass_through_mode` it
//! is answered here: 200, or 503 once the server fails its health checks (admin
//! `/healthcheck/fail`), or per `cluster_min_healthy_percentages` (a cluster missing, empty or
//! with too few healthy and degraded hosts: 503). In pass-through mode it goes on to the router
//! unless the server fails (503 here) or a `cache_time` window holds an answer (that answer's
//! status, and `x-envoy-degraded` when it had it). A health check's answer carries
//! `x-envoy-upstream-healthchecked-cluster` (the node's cluster); while the server fails, every
//! answer through the filter carries `x-envoy-immediate-health-check-fail: true`.

use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use serde::Deserialize;

use crate::{
    config::{duration::PbDuration, raw_cluster::RawPercent, raw_route::RawHeaderMatcher},
    config::{ConfigError, FieldPath},
    route::{build_match::header_matcher, HeaderMatcher, RequestView},
    upstream::Cluster,
};

/// The filter's `@type`.
pub const TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck";

/// `HealthCheck`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHealthCheck {
    pass_through_mode: Option<bool>,
    cache_time: Option<PbDuration>,
    #[serde(default)]
    cluster_min_healthy_percentages: BTreeMap<String, RawPercent>,
    #[serde(default)]
    headers: Vec<RawHeaderMatcher>,
}

/// One configured health check filter.
#[derive(Debug)]
pub struct HealthCheck {
    pass_through: bool,
    headers: Vec<HeaderMatcher>,
    min_healthy: Vec<(String, f64)>,
    cache: Option<Cache>,
}

/// `cache_time`'s answer cache: Envoy's timer clears it every `cache_time` from the filter's
/// creation; an answer to a health check fills it until then.
#[derive(Debug)]
struct Cache {
    start: Instant,
    every: Duration,
    /// The window the cached answer belongs to (+1; 0: none), its status, and whether it was
    /// degraded, packed: `window << 17 | degraded << 16 | status`.
    answer: AtomicU64,
}

impl Cache {
    fn window(&self) -> u64 {
        let ms = self.every.as_millis().max(1) as u64;
        self.start.elapsed().as_millis() as u64 / ms + 1
    }

    fn get(&self) -> Option<(u16, bool)> {
        let a = self.answer.load(Ordering::Acquire);
        (a >> 17 == self.window()).then_some(((a & 0xffff) as u16, a & (1 << 16) != 0))
    }

    fn set(&self, status: u16, degraded: bool) {
        let a = self.window() << 17 | u64::from(degraded) << 16 | u64::from(status);
        self.answer.store(a, Ordering::Release);
    }
}

/// The filter's config at `p`.
pub(crate) fn build(raw: RawHealthCheck, p: &FieldPath) -> Result<HealthCheck, ConfigError> {
    let pass_through = raw
        .pass_through_mode
        .ok_or_else(|| p.field("pass_through_mode").err("required"))?;
    let mut headers = Vec::with_capacity(raw.headers.len());
    for (i, h) in raw.headers.iter().enumerate() {
        headers.push(header_matcher(h, &p.field("headers").index(i))?);
    }
    let mut min_healthy = Vec::new();
    for (name, pct) in &raw.cluster_min_healthy_percentages {
        let v = pct.value.unwrap_or(0.0);
        if !(0.0..=100.0).contains(&v) {
            return Err(p
                .field("cluster_min_healthy_percentages")
                .field(name)
                .field("value")
                .err("must be within [0, 100]"));
        }
        min_healthy.push((name.clone(), v));
    }
    if !pass_through && raw.cache_time.is_some_and(|d| !d.0.is_zero()) {
        return Err(p
            .field("cache_time")
            .err("must not be set when pass_through_mode is false (Envoy's validation)"));
    }
    let cache = raw
        .cache_time
        .map(|d| d.0)
        .filter(|d| pass_through && !d.is_zero())
        .map(|every| Cache {
            start: Instant::now(),
            every,
            answer: AtomicU64::new(0),
        });
    Ok(HealthCheck {
        pass_through,
        headers,
        min_healthy,
        cache,
    })
}

/// What the filter decided for a health check request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 200: no cluster to look at, or every cluster healthy enough (`clusters`).
    Ok { clusters: bool },
    /// 503: the server fails its health checks.
    ServerFailed,
    /// The cached answer of the current `cache_time` window.
    Cached { status: u16, degraded: bool },
    /// 503: a `cluster_min_healthy_percentages` cluster is missing.
    NoCluster,
    /// 503: a cluster has no hosts (and a percentage above 0).
    ClusterEmpty,
    /// 503: a cluster has too few healthy and degraded hosts.
    ClusterUnhealthy,
    /// Passed on to the router (pass-through mode).
    PassOn,
}

impl Answer {
    /// The status, whether `x-envoy-degraded` goes with it, and Envoy's response code details.
    fn reply(self) -> (u16, bool, &'static str) {
        match self {
            Answer::Ok { clusters: false } => (200, false, "health_check_ok"),
            Answer::Ok { clusters: true } => (200, false, "health_check_ok_cluster_healthy"),
            Answer::ServerFailed => (503, false, "health_check_failed"),
            Answer::Cached { status, degraded } => (status, degraded, "health_check_cached"),
            Answer::NoCluster => (503, false, "health_check_failed_no_cluster_found"),
            Answer::ClusterEmpty => (503, false, "health_check_failed_cluster_empty"),
            Answer::ClusterUnhealthy => (503, false, "health_check_failed_cluster_unhealthy"),
            Answer::PassOn => (0, false, ""),
        }
    }
}

impl HealthCheck {
    /// Whether the request is a health check (every `headers` matcher holds).
    pub fn matches<H: crate::route::HeaderLookup + ?Sized>(
        &self,
        req: &RequestView<'_, H>,
    ) -> bool {
        self.headers
            .iter()
            .all(|h| crate::route::header_matches(h, req))
    }

    /// The filter's answer to a health check, the server failing its health checks or not,
    /// with the clusters of its connection manager.
    pub fn answer(
        &self,
        failed: bool,
        clusters: &std::collections::HashMap<String, std::sync::Arc<Cluster>>,
    ) -> Answer {
        if failed {
            return Answer::ServerFailed;
        }
        if let Some((status, degraded)) = self.cache.as_ref().and_then(Cache::get) {
            return Answer::Cached { status, degraded };
        }
        if self.pass_through {
            return Answer::PassOn;
        }
        for (name, min) in &self.min_healthy {
            let Some(c) = clusters.get(name) else {
                return Answer::NoCluster;
            };
            let (total, available) = membership(c);
            // Envoy truncates the percentage first.
            let min = *min as u64;
            if total == 0 {
                if min == 0 {
                    continue;
                }
                return Answer::ClusterEmpty;
            }
            // Envoy's integer comparison: 100 * (healthy + degraded) < total * percentage.
            if (100 * available) < total * min {
                return Answer::ClusterUnhealthy;
            }
        }
        Answer::Ok {
            clusters: !self.min_healthy.is_empty(),
        }
    }

    /// Records the answer a health check got (pass-through mode with `cache_time`).
    pub fn seen(&self, status: u16, degraded: bool) {
        if let Some(c) = &self.cache {
            c.set(status, degraded);
        }
    }
}

/// A cluster's hosts, and those healthy or degraded (Envoy's `membership_total` and
/// `membership_healthy + membership_degraded`).
fn membership(c: &Cluster) -> (u64, u64) {
    use crate::config::EndpointHealth;
    let now = crate::upstream::now_ms();
    let hosts = c.hosts_with_meta();
    let available = hosts
        .iter()
        .filter(|(h, m)| {
            h.is_healthy(now)
                && matches!(m.health, EndpointHealth::Healthy | EndpointHealth::Degraded)
        })
        .count();
    (hosts.len() as u64, available as u64)
}

/// The filter's counters (`http.<stat_prefix>.health_check.*`), counted for the health checks
/// answered here, as Envoy's.
#[derive(Debug)]
pub struct HealthCheckStats {
    request_total: std::sync::Arc<crate::server::stats::Counter>,
    ok: std::sync::Arc<crate::server::stats::Counter>,
    failed: std::sync::Arc<crate::server::stats::Counter>,
    cached_response: std::sync::Arc<crate::server::stats::Counter>,
    failed_cluster_not_found: std::sync::Arc<crate::server::stats::Counter>,
    failed_cluster_empty: std::sync::Arc<crate::server::stats::Counter>,
    failed_cluster_unhealthy: std::sync::Arc<crate::server::stats::Counter>,
    degraded: std::sync::Arc<crate::server::stats::Counter>,
}

impl HealthCheckStats {
    /// The counters from `counter` (by name under the HCM's prefix).
    pub fn new(counter: &dyn Fn(&str) -> std::sync::Arc<crate::server::stats::Counter>) -> Self {
        let c = |n: &str| counter(&format!("health_check.{n}"));
        Self {
            request_total: c("request_total"),
            ok: c("ok"),
            failed: c("failed"),
            cached_response: c("cached_response"),
            failed_cluster_not_found: c("failed_cluster_not_found"),
            failed_cluster_empty: c("failed_cluster_empty"),
            failed_cluster_unhealthy: c("failed_cluster_unhealthy"),
            degraded: c("degraded"),
        }
    }
}

/// The local reply for `answer` (None: passed on), counted in `stats`: an empty body, Envoy's
/// response code details, `x-envoy-degraded` for a degraded cached answer, flag `LH` for a
/// failure.
pub(super) fn reply(
    answer: Answer,
    stats: Option<&HealthCheckStats>,
) -> Option<(
    http::Response<crate::http::Body>,
    crate::http::local_reply::Flag,
)> {
    use crate::http::local_reply::{self, Flag};
    if answer == Answer::PassOn {
        return None;
    }
    let (status, degraded, details) = answer.reply();
    let ok = (200..300).contains(&status);
    if let Some(s) = stats {
        s.request_total.inc();
        // Envoy's counters: the server's failure alone, else the cause and ok / failed.
        match answer {
            Answer::ServerFailed => s.failed.inc(),
            Answer::Cached { .. } => s.cached_response.inc(),
            Answer::NoCluster => s.failed_cluster_not_found.inc(),
            Answer::ClusterEmpty => s.failed_cluster_empty.inc(),
            Answer::ClusterUnhealthy => s.failed_cluster_unhealthy.inc(),
            Answer::Ok { .. } | Answer::PassOn => {}
        }
        if answer != Answer::ServerFailed {
            if ok {
                s.ok.inc();
            } else {
                s.failed.inc();
            }
        }
        if degraded {
            s.degraded.inc();
        }
    }
    let mut r = local_reply::reply(status, "");
    if degraded {
        r.headers_mut()
            .insert("x-envoy-degraded", http::HeaderValue::from_static(""));
    }
    r.extensions_mut()
        .insert(crate::http::access_log::ResponseDetails::Named(details));
    Some((
        r,
        if ok {
            Flag::None
        } else {
            Flag::FailedLocalHealthCheck
        },
    ))
}
