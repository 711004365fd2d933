//! Client side of `sluice enroll | unenroll | status`: validate locally, call the agent, print.

use std::{fmt::Write as _, path::Path};

use sluice_node::{
    agent::protocol::{call, ClientError, PodStatus, Request, Response, StatusReport},
    netns::{Netns, NetnsError},
    policy::{EnrollSpec, PolicyError},
};

/// Errors of the CLI commands. A refused request carries the agent's message verbatim.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A value is malformed (checked before contacting the agent).
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The netns does not exist (checked before contacting the agent).
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// The agent cannot be reached.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The agent refused.
    #[error("agent refused: {0}")]
    Refused(String),
    /// The agent answered something else than expected.
    #[error("unexpected agent response: {0:?}")]
    Unexpected(Box<Response>),
}

/// Validates the enrollment fully (values and netns) and sends it; returns the pod's status.
pub fn enroll(control: &Path, spec: EnrollSpec) -> Result<PodStatus, CliError> {
    spec.validate()?;
    Netns::open(&spec.netns)?;
    match call(control, &Request::Enroll(spec))? {
        Response::Enrolled(p) => Ok(*p),
        other => Err(refused(other)),
    }
}

/// Unenrolls a netns; returns (cookie, map entries removed, map entries left).
pub fn unenroll(control: &Path, netns: &str) -> Result<(u64, usize, usize), CliError> {
    match call(
        control,
        &Request::Unenroll {
            netns: netns.to_string(),
        },
    )? {
        Response::Unenrolled {
            cookie,
            removed,
            remaining,
            ..
        } => Ok((cookie, removed, remaining)),
        other => Err(refused(other)),
    }
}

/// The agent's status report.
pub fn status(control: &Path) -> Result<StatusReport, CliError> {
    match call(control, &Request::Status)? {
        Response::Status(s) => Ok(s),
        other => Err(refused(other)),
    }
}

/// Whether an agent serves `control` (a stale socket file left by a crash does not count).
pub fn agent_answers(control: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(control).is_ok()
}

fn refused(r: Response) -> CliError {
    match r {
        Response::Error { message } => CliError::Refused(message),
        other => CliError::Unexpected(Box::new(other)),
    }
}

/// One line describing a pod (used by enroll's output).
pub fn pod_line(p: &PodStatus) -> String {
    let listener = if p.listeners.is_empty() {
        "-".to_string()
    } else {
        p.listeners.join(",")
    };
    let mut line = format!(
        "netns={} cookie={} mode={} listener={} map_entries={}",
        p.netns, p.cookie, p.mode, listener, p.map_entries
    );
    if let Some(id) = &p.pod {
        let _ = write!(line, " pod={} container={}", pod_name(p), id.container_id);
    }
    if let Some(engine) = &p.engine {
        let _ = write!(line, " engine={engine}");
    }
    if !p.workers.is_empty() {
        let _ = write!(line, " workers={}", workers_cell(p));
    }
    if let Some(admin) = &p.admin {
        let _ = write!(line, " admin={admin}");
    }
    line
}

/// `namespace/name` of a CNI-enrolled pod, `-` otherwise.
pub fn pod_name(p: &PodStatus) -> String {
    match &p.pod {
        Some(id) => format!(
            "{}/{}",
            id.pod_namespace.as_deref().unwrap_or("-"),
            id.pod_name.as_deref().unwrap_or("-")
        ),
        None => "-".into(),
    }
}

/// How `sluice status` orders its pod rows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SortBy {
    /// By netns name (then cookie).
    #[default]
    Name,
    /// Most connections accepted first.
    Accepted,
    /// Most connections open now first.
    Active,
    /// Most upstream failures first.
    Failed,
    /// Most bytes (both ways) first.
    Bytes,
}

/// Keeps the pods whose netns, `namespace/name` or container id contains `filter` and orders
/// them by `sort`. Counters and kernel policies are left as they are.
pub fn select_pods(s: &mut StatusReport, filter: Option<&str>, sort: SortBy) {
    if let Some(f) = filter {
        s.pods.retain(|p| {
            p.netns.contains(f)
                || pod_name(p).contains(f)
                || p.pod.as_ref().is_some_and(|i| i.container_id.contains(f))
        });
    }
    match sort {
        SortBy::Name => s
            .pods
            .sort_by(|a, b| (&a.netns, a.cookie).cmp(&(&b.netns, b.cookie))),
        SortBy::Accepted => s
            .pods
            .sort_by_key(|p| std::cmp::Reverse(p.accepted + p.inbound_accepted)),
        SortBy::Active => s.pods.sort_by_key(|p| std::cmp::Reverse(p.active)),
        SortBy::Failed => s
            .pods
            .sort_by_key(|p| std::cmp::Reverse(p.upstream_failures)),
        SortBy::Bytes => s
            .pods
            .sort_by_key(|p| std::cmp::Reverse(p.bytes_in + p.bytes_out)),
    }
}

/// The workers a pod is placed on (`0,1`), `-` for none.
fn workers_cell(p: &PodStatus) -> String {
    if p.workers.is_empty() {
        return "-".into();
    }
    let w: Vec<String> = p.workers.iter().map(ToString::to_string).collect();
    w.join(",")
}

/// One line that sums the pods up: how many per mode, listening, connections, failures, and the
/// pods placed on each worker.
pub fn summary_line(s: &StatusReport) -> String {
    let mode = |m: &str| s.pods.iter().filter(|p| p.mode == m).count();
    let sum = |f: fn(&PodStatus) -> u64| s.pods.iter().map(f).sum::<u64>();
    let mut line = format!(
        "{} pods ({} node, {} sidecar, {} off), {} with listeners up, {} connections open, \
         {} accepted, {} upstream failures",
        s.pods.len(),
        mode("node"),
        mode("sidecar"),
        mode("off"),
        s.pods.iter().filter(|p| !p.listeners.is_empty()).count(),
        sum(|p| p.active),
        sum(|p| p.accepted + p.inbound_accepted),
        sum(|p| p.upstream_failures),
    );
    if s.pods_per_worker.iter().any(|&n| n > 0) {
        let w: Vec<String> = s.pods_per_worker.iter().map(ToString::to_string).collect();
        let _ = write!(line, ", pods per worker {}", w.join("/"));
    }
    line
}

/// The status report as tables: pods, a summary line, then counters.
pub fn format_status(s: &StatusReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<28} {:>20} {:<8} {:<24} {:<8} {:<7} {:>8} {:>6} {:>6} {:>10} {:>10} {:>7}  RECENT ORIGINAL DESTINATIONS",
        "NETNS", "COOKIE", "MODE", "POD", "LISTENER", "WORKERS", "ACCEPTED", "ACTIVE", "FAILED", "BYTES_OUT", "BYTES_IN", "ENTRIES"
    );
    for p in &s.pods {
        // Listeners up: the engine serving them (l4 / l7).
        let up = match (&p.engine, p.listeners.is_empty()) {
            (_, true) => "-",
            (Some(e), false) => e.as_str(),
            (None, false) => "up",
        };
        let _ = writeln!(
            out,
            "{:<28} {:>20} {:<8} {:<24} {:<8} {:<7} {:>8} {:>6} {:>6} {:>10} {:>10} {:>7}  {}",
            p.netns,
            p.cookie,
            p.mode,
            pod_name(p),
            up,
            workers_cell(p),
            p.accepted,
            p.active,
            p.upstream_failures,
            p.bytes_out,
            p.bytes_in,
            p.map_entries,
            p.recent_destinations.join(" ")
        );
    }
    let _ = writeln!(out, "{}", summary_line(s));
    let orphans: Vec<String> = s
        .kernel_policies
        .iter()
        .filter(|c| !s.pods.iter().any(|p| p.cookie == **c))
        .map(ToString::to_string)
        .collect();
    if !orphans.is_empty() {
        let _ = writeln!(
            out,
            "kernel policies without a known netns: {}",
            orphans.join(" ")
        );
    }
    let _ = writeln!(out, "\n{:<20} {:>14}", "COUNTER", "VALUE");
    for (name, v) in &s.counters {
        let _ = writeln!(out, "{name:<20} {v:>14}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_table_shows_pods_and_counters() {
        let s = StatusReport {
            pods: vec![PodStatus {
                netns: "pod-a".into(),
                cookie: 4097,
                mode: "node".into(),
                listeners: vec!["127.0.0.1:15001".into()],
                accepted: 2,
                recent_destinations: vec!["10.96.0.10:80".into()],
                map_entries: 1,
                pod: Some(sluice_node::policy::PodIdentity {
                    container_id: "c0ffee".into(),
                    pod_name: Some("web-0".into()),
                    pod_namespace: Some("shop".into()),
                }),
                workers: vec![1],
                ..Default::default()
            }],
            kernel_policies: vec![4097, 5000],
            counters: vec![("captured".into(), 2)],
            pods_per_worker: vec![0, 1],
        };
        let t = format_status(&s);
        assert!(
            t.contains("pod-a") && t.contains("4097") && t.contains(" up "),
            "{t}"
        );
        assert!(t.contains("10.96.0.10:80"), "{t}");
        assert!(t.contains("shop/web-0"), "{t}");
        assert!(t.contains(" up       1 "), "the WORKERS column: {t}");
        assert!(t.contains(", pods per worker 0/1"), "{t}");
        assert!(
            pod_line(&s.pods[0]).ends_with("pod=shop/web-0 container=c0ffee workers=1"),
            "{}",
            pod_line(&s.pods[0])
        );
        assert!(t.contains("without a known netns: 5000"), "{t}");
        assert!(
            t.contains("captured") && t.lines().last().unwrap().ends_with('2'),
            "{t}"
        );
    }

    fn pod(netns: &str, mode: &str, accepted: u64, active: u64) -> PodStatus {
        PodStatus {
            netns: netns.into(),
            cookie: accepted,
            mode: mode.into(),
            accepted,
            active,
            ..Default::default()
        }
    }

    #[test]
    fn status_filters_sorts_and_sums_up_a_thousand_pods() {
        let mut s = StatusReport {
            pods: (0..1000)
                .map(|i| {
                    let mode = ["node", "sidecar", "off", "node"][i % 4];
                    pod(&format!("pod-{i:04}"), mode, i as u64, (i % 3) as u64)
                })
                .collect(),
            kernel_policies: Vec::new(),
            counters: Vec::new(),
            pods_per_worker: Vec::new(),
        };
        assert_eq!(
            summary_line(&s),
            "1000 pods (500 node, 250 sidecar, 250 off), 0 with listeners up, 999 connections \
             open, 499500 accepted, 0 upstream failures"
        );
        select_pods(&mut s, None, SortBy::Accepted);
        assert_eq!(s.pods[0].netns, "pod-0999");
        select_pods(&mut s, Some("pod-01"), SortBy::Name);
        assert_eq!(s.pods.len(), 100);
        assert_eq!(s.pods[0].netns, "pod-0100");
        assert!(format_status(&s).contains("100 pods (50 node, 25 sidecar, 25 off)"));
    }
}
