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
        Response::Enrolled(p) => Ok(p),
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

/// The status report as tables: pods, then counters.
pub fn format_status(s: &StatusReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<28} {:>20} {:<8} {:<24} {:<8} {:>8} {:>6} {:>6} {:>10} {:>10} {:>7}  RECENT ORIGINAL DESTINATIONS",
        "NETNS", "COOKIE", "MODE", "POD", "LISTENER", "ACCEPTED", "ACTIVE", "FAILED", "BYTES_OUT", "BYTES_IN", "ENTRIES"
    );
    for p in &s.pods {
        let up = if p.listeners.is_empty() { "-" } else { "up" };
        let _ = writeln!(
            out,
            "{:<28} {:>20} {:<8} {:<24} {:<8} {:>8} {:>6} {:>6} {:>10} {:>10} {:>7}  {}",
            p.netns,
            p.cookie,
            p.mode,
            pod_name(p),
            up,
            p.accepted,
            p.active,
            p.upstream_failures,
            p.bytes_out,
            p.bytes_in,
            p.map_entries,
            p.recent_destinations.join(" ")
        );
    }
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
                ..Default::default()
            }],
            kernel_policies: vec![4097, 5000],
            counters: vec![("captured".into(), 2)],
        };
        let t = format_status(&s);
        assert!(
            t.contains("pod-a") && t.contains("4097") && t.contains(" up "),
            "{t}"
        );
        assert!(t.contains("10.96.0.10:80"), "{t}");
        assert!(t.contains("shop/web-0"), "{t}");
        assert!(
            pod_line(&s.pods[0]).ends_with("pod=shop/web-0 container=c0ffee"),
            "{}",
            pod_line(&s.pods[0])
        );
        assert!(t.contains("without a known netns: 5000"), "{t}");
        assert!(
            t.contains("captured") && t.lines().last().unwrap().ends_with('2'),
            "{t}"
        );
    }
}
