//! The health check event log (`event_log_path`, `event_logger` file sinks): one JSON line per
//! event, Envoy's `envoy.data.core.v3.HealthCheckEvent` as its JSON printer writes it (every
//! field, in proto order). A host is ejected or added back when its health changes; a failure
//! is logged on a host's first check (Envoy's hosts start unhealthy, so a first failure ejects
//! nothing) or with `always_log_health_check_failures`, and a pass that changes nothing with
//! `always_log_health_check_success`.

use std::{fmt::Write as _, io::Write as _, sync::Arc};

use super::Verdict;
use crate::{
    config::HealthEventLog,
    upstream::{Cluster, HealthCheckSpec, Host},
};

/// What one check did to its host, for the log.
pub(super) struct Change {
    /// The host's first check.
    pub first: bool,
    /// Its health before and after.
    pub was_healthy: bool,
    pub now_healthy: bool,
}

/// Logs the events of one check of `h`, if the check has a log.
pub(super) fn log(
    c: &Cluster,
    h: &Arc<Host>,
    spec: &HealthCheckSpec,
    verdict: Verdict,
    ch: Change,
) {
    let Some(log) = &spec.event_log else { return };
    let mut events = Vec::new();
    let failure = match verdict {
        Verdict::Pass => None,
        Verdict::BadStatus { .. } => Some("ACTIVE"),
        Verdict::Network => Some("NETWORK"),
        Verdict::Timeout => Some("NETWORK_TIMEOUT"),
    };
    let code = match verdict {
        Verdict::BadStatus { status, .. } => status,
        _ => 0,
    };
    match failure {
        None => {
            // Envoy's hosts start unhealthy: the first pass adds the host.
            if ch.first || (!ch.was_healthy && ch.now_healthy) {
                let add = format!("\"add_healthy_event\":{{\"first_check\":{}}}", ch.first);
                events.push((5, add));
            } else if log.successes {
                events.push((12, "\"successful_health_check_event\":{}".to_string()));
            }
        }
        Some(kind) => {
            if !ch.first && ch.was_healthy && !ch.now_healthy {
                events.push((4, format!(
                    "\"eject_unhealthy_event\":{{\"failure_type\":\"{kind}\",\"http_status_code\":{code}}}"
                )));
            }
            if ch.first || log.failures {
                events.push((7, format!(
                    "\"health_check_failure_event\":{{\"failure_type\":\"{kind}\",\"first_check\":{},\"http_status_code\":{code}}}",
                    ch.first
                )));
            }
        }
    }
    if events.is_empty() {
        return;
    }
    write(c, h, spec, log, &events);
}

/// Writes `events` of host `h` (each with its `HealthCheckEvent` field number, which places
/// it: Envoy's JSON printer writes fields in number order), one line each, to every file of
/// the log.
fn write(
    c: &Cluster,
    h: &Arc<Host>,
    spec: &HealthCheckSpec,
    log: &HealthEventLog,
    events: &[(u32, String)],
) {
    let checker = if spec.grpc.is_some() {
        "GRPC"
    } else if spec.tcp_only {
        "TCP"
    } else {
        "HTTP"
    };
    let (hosts, localities) = c.hosts_view();
    let locality = hosts
        .iter()
        .find(|(x, _)| Arc::ptr_eq(x, h))
        .and_then(|(_, m)| localities.get(m.locality as usize).cloned())
        .unwrap_or_default();
    // Protobuf's JSON writes no fraction for a whole second.
    let mut now = crate::http::access_log::format_time(std::time::SystemTime::now());
    if now.ends_with(".000Z") {
        now.replace_range(now.len() - 5.., "Z");
    }
    let mut out = String::new();
    for (field, e) in events {
        let (before, middle, after) = match field {
            0..=5 => (format!("{e},"), String::new(), String::new()),
            6..=10 => (String::new(), format!("{e},"), String::new()),
            _ => (String::new(), String::new(), format!(",{e}")),
        };
        let _ = writeln!(
            out,
            "{{\"health_checker_type\":\"{checker}\",\"host\":{{\"socket_address\":{{\"protocol\":\"TCP\",\"address\":\"{}\",\"port_value\":{},\"resolver_name\":\"\",\"ipv4_compat\":false,\"network_namespace_filepath\":\"\"}}}},\"cluster_name\":{},{before}\"timestamp\":\"{now}\",{middle}\"locality\":{{\"region\":{},\"zone\":{},\"sub_zone\":{}}}{after}}}",
            h.addr.ip(),
            h.addr.port(),
            json(&c.spec.name),
            json(&locality.region),
            json(&locality.zone),
            json(&locality.sub_zone),
        );
    }
    for path in &log.paths {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path);
        if let Err(e) = file.and_then(|mut f| f.write_all(out.as_bytes())) {
            tracing::warn!(path = %path.display(), error = %e, "health check event log");
        }
    }
}

/// `s` as a JSON string.
fn json(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}
