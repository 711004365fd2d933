//! `/clusters`: Envoy's `cluster::field::value` text and `?format=json` (`ClusterStatuses`),
//! with the counters sluice keeps per host (rq_active, rq_error, rq_success, rq_total; the
//! cluster's open connections as cx_active). Counters Envoy has and sluice does not
//! (cx_connect_fail, cx_total, rq_timeout, rq_pending_active per host) are left out rather
//! than printed as zeros.

use std::{fmt::Write as _, sync::atomic::Ordering::Relaxed};

use serde_json::{json, Value};

use crate::{
    config::Locality,
    server::Runtime,
    upstream::{now_ms, Cluster, Host},
};

fn host_counters(c: &Cluster, h: &Host) -> [(&'static str, bool, u64); 5] {
    let total = h.rq_total.load(Relaxed);
    let error = h.rq_error.load(Relaxed);
    let cx_active: usize = c
        .resources
        .0
        .iter()
        .map(|r| r.connections.load(Relaxed))
        .sum();
    [
        ("cx_active", true, cx_active as u64),
        ("rq_active", true, h.active_rq.load(Relaxed) as u64),
        ("rq_error", false, error),
        ("rq_success", false, total.saturating_sub(error)),
        ("rq_total", false, total),
    ]
}

/// The circuit-breaker lines of both priorities.
fn thresholds(c: &Cluster) -> [(&'static str, [(&'static str, usize); 4]); 2] {
    let line = |b: &crate::upstream::Breakers| {
        [
            ("max_connections", b.max_connections),
            ("max_pending_requests", b.max_pending_requests),
            ("max_requests", b.max_requests),
            ("max_retries", b.max_retries),
        ]
    };
    let [default, high] = &c.spec.breakers.0;
    [
        ("default_priority", line(default)),
        ("high_priority", line(high)),
    ]
}

/// Evaluates an outlier sweep that is due, as Envoy's timer would have by now.
fn sweep(c: &crate::upstream::Cluster) {
    if let Some(o) = &c.spec.outlier {
        crate::upstream::success_rate::sweep_if_due(c, o, now_ms());
    }
}

/// Envoy's text format.
pub fn text(rt: &Runtime) -> String {
    let mut out = String::new();
    for name in &rt.cluster_order {
        let Some(c) = rt.clusters.get(name) else {
            continue;
        };
        sweep(c);
        let _ = writeln!(
            out,
            "{name}::observability_name::{}",
            c.spec.observability_name()
        );
        if c.spec.outlier.is_some() {
            for (local, prefix) in [(false, ""), (true, "local_origin_")] {
                let (avg, threshold) = c.outlier_sweeps.success_rate(local);
                let _ = writeln!(out, "{name}::outlier::{prefix}success_rate_average::{avg}");
                let _ = writeln!(
                    out,
                    "{name}::outlier::{prefix}success_rate_ejection_threshold::{threshold}"
                );
            }
        }
        for (prio, lines) in thresholds(c) {
            for (k, v) in lines {
                let _ = writeln!(out, "{name}::{prio}::{k}::{v}");
            }
        }
        let via_api = rt.origin.clusters.contains_key(name);
        let _ = writeln!(out, "{name}::added_via_api::{via_api}");
        let (hosts, localities) = c.hosts_view();
        let none = Locality::default();
        for (h, meta) in hosts {
            let a = h.addr;
            for (k, _, v) in host_counters(c, &h) {
                let _ = writeln!(out, "{name}::{a}::{k}::{v}");
            }
            let hostname = h.hostname.as_deref().unwrap_or("");
            let _ = writeln!(out, "{name}::{a}::hostname::{hostname}");
            let flags = h.health_flags(meta.health);
            let _ = writeln!(out, "{name}::{a}::health_flags::{flags}");
            let _ = writeln!(out, "{name}::{a}::weight::{}", h.weight);
            let l = localities.get(meta.locality as usize).unwrap_or(&none);
            let _ = writeln!(out, "{name}::{a}::region::{}", l.region);
            let _ = writeln!(out, "{name}::{a}::zone::{}", l.zone);
            let _ = writeln!(out, "{name}::{a}::sub_zone::{}", l.sub_zone);
            let _ = writeln!(out, "{name}::{a}::canary::{}", meta.canary);
            let _ = writeln!(out, "{name}::{a}::priority::{}", meta.priority);
            // What the last outlier sweep computed (-1: none, or no outlier detection).
            let _ = writeln!(out, "{name}::{a}::success_rate::{}", h.sr_external.last());
            let _ = writeln!(
                out,
                "{name}::{a}::local_origin_success_rate::{}",
                h.sr_local.last()
            );
        }
    }
    out
}

/// `?format=json`: `envoy.admin.v3.Clusters`.
pub fn json(rt: &Runtime) -> Value {
    let now = now_ms();
    let statuses: Vec<Value> = rt
        .cluster_order
        .iter()
        .filter_map(|name| rt.clusters.get(name).map(|c| (name, c)))
        .map(|(name, c)| {
            sweep(c);
            let (hosts, localities) = c.hosts_view();
            let hosts: Vec<Value> = hosts
                .iter()
                .map(|(h, meta)| {
                    let stats: Vec<Value> = host_counters(c, h)
                        .iter()
                        .map(|(k, gauge, v)| {
                            let mut s = json!({"name": k});
                            if *gauge {
                                s["type"] = json!("GAUGE");
                            }
                            if *v != 0 {
                                s["value"] = json!(v.to_string());
                            }
                            s
                        })
                        .collect();
                    let mut health = json!({"eds_health_status": meta.health.as_str()});
                    if !h.hc_healthy.load(Relaxed) {
                        health["failed_active_health_check"] = json!(true);
                    }
                    if h.is_ejected(now) {
                        health["failed_outlier_check"] = json!(true);
                    }
                    let mut hs = json!({
                        "address": {"socket_address": {"address": h.addr.ip().to_string(), "port_value": h.addr.port()}},
                        "stats": stats,
                        "health_status": health,
                        "weight": h.weight,
                        "locality": localities
                            .get(meta.locality as usize)
                            .map_or_else(|| json!({}), super::config_dump::locality_json),
                    });
                    if meta.priority != 0 {
                        hs["priority"] = json!(meta.priority);
                    }
                    if let Some(n) = &h.hostname {
                        hs["hostname"] = json!(n.as_ref());
                    }
                    for (k, v) in [
                        ("success_rate", h.sr_external.last()),
                        ("local_origin_success_rate", h.sr_local.last()),
                    ] {
                        if v >= 0.0 {
                            hs[k] = json!({"value": v});
                        }
                    }
                    hs
                })
                .collect();
            let th: Vec<Value> = thresholds(c)
                .iter()
                .map(|(prio, lines)| {
                    let mut t = json!({});
                    if *prio == "high_priority" {
                        t["priority"] = json!("HIGH");
                    }
                    for (k, v) in lines {
                        t[*k] = json!(v);
                    }
                    t
                })
                .collect();
            let mut s = json!({
                "name": name,
                "circuit_breakers": {"thresholds": th},
                "observability_name": c.spec.observability_name(),
            });
            if rt.origin.clusters.contains_key(name.as_str()) {
                s["added_via_api"] = json!(true);
            }
            for (local, k) in [
                (false, "success_rate_ejection_threshold"),
                (true, "local_origin_success_rate_ejection_threshold"),
            ] {
                let (_, threshold) = c.outlier_sweeps.success_rate(local);
                if threshold >= 0.0 {
                    s[k] = json!({"value": threshold});
                }
            }
            if !hosts.is_empty() {
                s["host_statuses"] = json!(hosts);
            }
            s
        })
        .collect();
    json!({ "cluster_statuses": statuses })
}
