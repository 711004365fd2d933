//! Envoy's `circuit_breakers.<priority>.*` gauges of a cluster, read from its resource counts
//! when stats are rendered, so nothing is updated per request: `cx_open`, `cx_pool_open`,
//! `rq_pending_open`, `rq_open` and `rq_retry_open` (1 while the threshold is reached) for
//! both priorities, and for a priority whose entry sets `track_remaining` its `remaining_*`
//! (threshold minus use). `max_connection_pools` is not implemented: pools are unlimited and
//! not counted, so `cx_pool_open` is 0 and `remaining_cx_pools` the maximum.
//! A health checked cluster's `health_check.*` stats go with them (`upstream/health/stats.rs`),
//! and an outlier-detected one's `outlier_detection.ejections_enforced_total`.

use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicUsize, Ordering},
};

use super::Cluster;
use crate::{config::RoutingPriority, server::stats::Gauges};

impl Gauges for Cluster {
    fn render_gauges(&self, prefix: &str, out: &mut BTreeMap<String, u64>) {
        super::health::stats::render(self, prefix, out);
        // Envoy makes its outlier detection's counter with the cluster: 0 from the start.
        if self.spec.outlier.is_some() {
            out.insert(
                format!("{prefix}.outlier_detection.ejections_enforced_total"),
                self.stats.outlier_ejections.get(),
            );
        }
        for (prio, r) in self.resources.iter() {
            let scope = match prio {
                RoutingPriority::Default => "default",
                RoutingPriority::High => "high",
            };
            let (l, n) = (&r.limits, |c: &AtomicUsize| c.load(Ordering::Relaxed));
            // (open gauge, remaining gauge, in use, threshold)
            let used = [
                ("cx", "cx", n(&r.connections), l.max_connections),
                (
                    "rq_pending",
                    "pending",
                    n(&r.pending),
                    l.max_pending_requests,
                ),
                ("rq", "rq", n(&r.requests), l.max_requests),
                ("rq_retry", "retries", n(&r.retries), r.max_retries()),
            ];
            let mut put = |stat: &str, v: u64| {
                out.insert(format!("{prefix}.circuit_breakers.{scope}.{stat}"), v);
            };
            put("cx_pool_open", 0);
            for (open, _, n, max) in used {
                put(&format!("{open}_open"), u64::from(n >= max));
            }
            if l.track_remaining {
                put("remaining_cx_pools", u64::MAX);
                for (_, remaining, n, max) in used {
                    put(
                        &format!("remaining_{remaining}"),
                        max.saturating_sub(n) as u64,
                    );
                }
            }
        }
    }
}
