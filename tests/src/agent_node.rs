//! A test "node": `sluice agent` in its own cgroup with its pins and control socket, and the CLI
//! calls tests make against it (enroll, unenroll, status, counters).

use std::time::{Duration, Instant};

use sluice_node::agent::protocol::{PodStatus, StatusReport};

use crate::{
    require_root,
    sluice_cli::{sluice_ok, ControlSocket, SluiceProcess},
    Cgroup, Netns, PinDir,
};

/// Agent running in its own cgroup (the programs attach there) with its pins and control socket.
pub struct Node {
    // Drop order: the agent first, then pins and cgroup.
    /// The agent process (`None` while stopped).
    pub agent: Option<SluiceProcess>,
    /// Its control socket.
    pub control: ControlSocket,
    /// Its pins.
    pub pins: PinDir,
    /// Its cgroup (the programs attach there; pods' apps join it).
    pub cgroup: Cgroup,
    extra: Vec<String>,
}

impl Node {
    /// Starts `sluice agent <extra>`.
    pub fn start_with(tag: &str, extra: &[&str]) -> Self {
        require_root();
        let cgroup = Cgroup::new(tag);
        let pins = PinDir::new(tag);
        let (agent, control) = SluiceProcess::agent(&cgroup, pins.path(), extra);
        Self {
            agent: Some(agent),
            control,
            pins,
            cgroup,
            extra: extra.iter().map(ToString::to_string).collect(),
        }
    }

    /// Starts `sluice agent` with default options.
    pub fn start(tag: &str) -> Self {
        Self::start_with(tag, &[])
    }

    /// Starts a new agent on the same cgroup, pins and control socket (after a stop or a kill).
    pub fn restart(&mut self) {
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        let agent =
            SluiceProcess::agent_at(&self.cgroup, self.pins.path(), &self.control.path(), &extra);
        self.agent = Some(agent);
    }

    /// Graceful upgrade: a new agent (same options) with `--upgrade-from` the control socket
    /// takes over; waits (at most `timeout`) until the old one has drained and exited 0.
    pub fn upgrade(&mut self, timeout: Duration) {
        let ctl = self.ctl();
        let mut extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        extra.extend(["--upgrade-from", &ctl]);
        let new =
            SluiceProcess::agent_at(&self.cgroup, self.pins.path(), &self.control.path(), &extra);
        let mut old = self.agent.replace(new).expect("agent is running");
        let exit = old.wait_exit(timeout);
        assert!(
            exit.is_some_and(|e| e.success()),
            "old agent after the upgrade: {exit:?}\n{}",
            old.log()
        );
    }

    /// The running agent.
    pub fn agent(&mut self) -> &mut SluiceProcess {
        self.agent.as_mut().expect("agent is running")
    }

    /// The agent's log so far.
    pub fn agent_log(&self) -> String {
        self.agent.as_ref().map(|a| a.log()).unwrap_or_default()
    }

    /// `--control <path>`.
    pub fn ctl(&self) -> String {
        self.control.arg()
    }

    /// `sluice enroll --netns <ns> <extra>`.
    pub fn enroll(&self, ns: &Netns, extra: &[&str]) -> String {
        let ctl = self.ctl();
        let mut args = vec!["enroll", "--netns", ns.name(), "--control", &ctl];
        args.extend_from_slice(extra);
        sluice_ok(&args)
    }

    /// Enrolls `ns` in node mode as the CNI plugin would (control protocol), with the pod
    /// identity `namespace/name`.
    pub fn enroll_pod(&self, ns: &Netns, namespace: &str, name: &str) {
        use sluice_node::{
            agent::protocol::{call, Request, Response},
            policy::{EnrollSpec, PodIdentity},
        };
        let spec = EnrollSpec {
            netns: ns.name().to_string(),
            mode: Some("node".into()),
            pod: Some(PodIdentity {
                container_id: format!("cid-{name}"),
                pod_name: Some(name.into()),
                pod_namespace: Some(namespace.into()),
            }),
            ..Default::default()
        };
        match call(&self.control.path(), &Request::Enroll(spec)) {
            Ok(Response::Enrolled(_)) => {}
            other => panic!("enroll {}: {other:?}", ns.name()),
        }
    }

    /// `sluice <args>` with this node's control socket in `$SLUICE_CONTROL` (not checked).
    pub fn sluice(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(crate::sluice_cli::sluice_bin())
            .args(args)
            .env("SLUICE_CONTROL", self.control.path())
            .output()
            .expect("run sluice")
    }

    /// `sluice unenroll --netns <ns>`.
    pub fn unenroll(&self, ns: &Netns) -> String {
        sluice_ok(&["unenroll", "--netns", ns.name(), "--control", &self.ctl()])
    }

    /// `sluice status --json`.
    pub fn status(&self) -> StatusReport {
        status_at(&self.ctl())
    }

    /// One pod's status.
    pub fn pod(&self, ns: &Netns) -> PodStatus {
        let cookie = ns.cookie();
        self.status()
            .pods
            .into_iter()
            .find(|p| p.cookie == cookie)
            .unwrap_or_else(|| panic!("netns {} (cookie {cookie}) not in status", ns.name()))
    }

    /// One eBPF counter.
    pub fn counter(&self, name: &str) -> u64 {
        counter_at(&self.ctl(), name)
    }

    /// Waits until the agent's log contains `needle`.
    pub fn wait_for_log(&mut self, needle: &str) {
        self.agent().wait_for_log(needle, Duration::from_secs(10));
    }

    /// How many file descriptors the agent process holds open.
    pub fn fds(&self) -> usize {
        count_dir(&format!("/proc/{}/fd", self.pid()))
    }

    /// How many threads the agent process runs.
    pub fn threads(&self) -> usize {
        count_dir(&format!("/proc/{}/task", self.pid()))
    }

    /// Waits (at most 5 s) for the agent's `unenrolled` log line of `cookie` and returns its
    /// `remaining=` value (map entries left for the cookie).
    pub fn unenrolled_remaining(&self, cookie: u64) -> u64 {
        let needle = format!("cookie={cookie}");
        let start = Instant::now();
        loop {
            let log = self.agent_log();
            if let Some(line) = log
                .lines()
                .find(|l| l.contains("unenrolled") && l.contains(&needle))
            {
                let v = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("remaining="))
                    .unwrap_or_else(|| panic!("no remaining= in {line}"));
                return v.parse().unwrap_or_else(|_| panic!("remaining={v}"));
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "no unenrolled line for {needle}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The running agent's pid.
    pub fn pid(&self) -> u32 {
        self.agent.as_ref().expect("agent is running").pid()
    }
}

/// `sluice status --json --control <ctl>`, parsed.
pub fn status_at(ctl: &str) -> StatusReport {
    let out = sluice_ok(&["status", "--json", "--control", ctl]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("status JSON {out:?}: {e}"))
}

/// One eBPF counter of the agent behind `ctl`.
pub fn counter_at(ctl: &str, name: &str) -> u64 {
    status_at(ctl)
        .counters
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no counter {name}"))
}

fn count_dir(path: &str) -> usize {
    std::fs::read_dir(path)
        .unwrap_or_else(|e| panic!("read {path}: {e}"))
        .count()
}
