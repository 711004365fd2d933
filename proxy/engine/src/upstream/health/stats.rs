//! A health checked cluster's `cluster.<name>.health_check.*` stats as Envoy shows them: the
//! counters and gauges exist with the checker, so they are shown from the start, zeros too.
//! `passive_failure` and `degraded` stay 0 (no passive health checking, no degraded answers
//! here); `healthy` is counted from the hosts when stats are rendered.

use std::{collections::BTreeMap, sync::atomic::Ordering};

use crate::upstream::Cluster;

/// Inserts `<prefix>.health_check.<stat>` for `c` when it has health checks.
pub(crate) fn render(c: &Cluster, prefix: &str, out: &mut BTreeMap<String, u64>) {
    if c.spec.health_check.is_none() {
        return;
    }
    let s = &c.stats;
    let healthy = c
        .all_hosts()
        .iter()
        .filter(|h| !h.unchecked() && h.hc_healthy.load(Ordering::Relaxed))
        .count() as u64;
    for (stat, v) in [
        ("attempt", s.health_check_attempt.get()),
        ("success", s.health_check_success.get()),
        ("failure", s.health_check_failure.get()),
        ("network_failure", s.health_check_network_failure.get()),
        ("passive_failure", 0),
        ("verify_cluster", s.health_check_verify_cluster.get()),
        ("healthy", healthy),
        ("degraded", 0),
    ] {
        out.insert(format!("{prefix}.health_check.{stat}"), v);
    }
}
