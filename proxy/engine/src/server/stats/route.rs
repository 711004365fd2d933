//! A route's `stat_prefix` counters, Envoy's `vhost.<virtual host>.route.<stat_prefix>.*`:
//! the upstream attempts, retries and route timeouts (shown from the start, as Envoy creates
//! them with the route), and the final answer of each forwarded request by code and class with
//! their total, `upstream_rq_completed` (shown once counted, as Envoy creates them on first
//! use). `upstream_rq_time` (a histogram) is not kept.

use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicU64, Ordering},
};

use super::Counter;

/// The counters of one `(virtual host, stat_prefix)`.
#[derive(Debug)]
pub struct RouteStats {
    /// Attempts sent upstream.
    pub total: Counter,
    /// Retries started.
    pub retry: Counter,
    /// Answers that would have been retried, past `num_retries`.
    pub retry_limit_exceeded: Counter,
    /// Retries the retry circuit breaker refused.
    pub retry_overflow: Counter,
    /// Retried requests that ended with an answer not retried.
    pub retry_success: Counter,
    /// Requests that reached the route timeout.
    pub timeout: Counter,
    /// Final answers by status code (100..=599).
    codes: Box<[AtomicU64]>,
}

impl Default for RouteStats {
    fn default() -> Self {
        Self {
            total: Counter::default(),
            retry: Counter::default(),
            retry_limit_exceeded: Counter::default(),
            retry_overflow: Counter::default(),
            retry_success: Counter::default(),
            timeout: Counter::default(),
            codes: (0..600).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl RouteStats {
    /// Counts a forwarded request's final answer.
    pub fn answered(&self, status: u16) {
        if let Some(c) = self.codes.get(usize::from(status)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `<prefix>.<stat> -> value` for each shown counter, into `out`.
    pub(super) fn render(&self, prefix: &str, out: &mut BTreeMap<String, u64>) {
        for (stat, c) in [
            ("upstream_rq_total", &self.total),
            ("upstream_rq_retry", &self.retry),
            (
                "upstream_rq_retry_limit_exceeded",
                &self.retry_limit_exceeded,
            ),
            ("upstream_rq_retry_overflow", &self.retry_overflow),
            ("upstream_rq_retry_success", &self.retry_success),
            ("upstream_rq_timeout", &self.timeout),
        ] {
            out.insert(format!("{prefix}.{stat}"), c.get());
        }
        let (mut classes, mut completed) = ([0u64; 6], 0);
        for (code, c) in self.codes.iter().enumerate() {
            let v = c.load(Ordering::Relaxed);
            if v > 0 {
                out.insert(format!("{prefix}.upstream_rq_{code}"), v);
                classes[code / 100] += v;
                completed += v;
            }
        }
        for (class, v) in classes.iter().enumerate().filter(|(_, v)| **v > 0) {
            out.insert(format!("{prefix}.upstream_rq_{class}xx"), *v);
        }
        if completed > 0 {
            out.insert(format!("{prefix}.upstream_rq_completed"), completed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eager_counters_always_codes_once_counted() {
        let s = RouteStats::default();
        let mut out = BTreeMap::new();
        s.render("vhost.v.route.r", &mut out);
        assert_eq!(out.len(), 6);
        assert!(out.values().all(|v| *v == 0));
        s.answered(200);
        s.answered(503);
        s.answered(200);
        s.total.add(4);
        let mut out = BTreeMap::new();
        s.render("p", &mut out);
        let shown: Vec<String> = out.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        for want in [
            "p.upstream_rq_200: 2",
            "p.upstream_rq_2xx: 2",
            "p.upstream_rq_503: 1",
            "p.upstream_rq_5xx: 1",
            "p.upstream_rq_completed: 3",
            "p.upstream_rq_total: 4",
        ] {
            assert!(shown.iter().any(|l| l == want), "{want} in {shown:?}");
        }
    }
}
