//! podman (Debian's, with the runc runtime and explicit rlimits: ../shared/toolchain.md) and
//! the `podman run` arguments for one container of the pod spec.

use std::{process::Output, time::Duration};

use super::manifest::{Container, PodSpec};

/// `podman --runtime runc <args>`.
pub fn podman(args: &[&str]) -> Output {
    std::process::Command::new("podman")
        .args(["--runtime", "runc"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run podman (apt package podman): {e}"))
}

/// Like [`podman`] but panics with stderr unless it succeeds; returns stdout.
pub fn podman_ok(args: &[&str]) -> String {
    let mut all = vec!["--runtime", "runc"];
    all.extend_from_slice(args);
    crate::run_cmd("podman", &all)
}

/// One bind mount, resolved: host source, container target, options.
pub struct Bind {
    pub source: String,
    pub target: String,
    pub read_only: bool,
    /// Kubernetes mountPropagation.
    pub propagation: Option<String>,
}

impl Bind {
    fn arg(&self) -> String {
        let mut opts = vec![if self.read_only { "ro" } else { "rw" }];
        opts.push(match self.propagation.as_deref() {
            None | Some("None") => "rprivate",
            Some("HostToContainer") => "rslave",
            Some("Bidirectional") => "rshared",
            Some(other) => panic!("mountPropagation {other} is not applied"),
        });
        format!("{}:{}:{}", self.source, self.target, opts.join(","))
    }
}

/// `podman run` arguments (without `run`) for `c` named `name` under `cgroup_parent`, with
/// its resolved env, expanded command/args and mounts.
#[allow(clippy::too_many_arguments)] // one per input of the run; a struct would only rename them
pub fn run_args(
    pod: &PodSpec,
    c: &Container,
    name: &str,
    cgroup_parent: &str,
    env: &[(String, String)],
    command: &[String],
    args: &[String],
    binds: &[Bind],
) -> Vec<String> {
    let mut a: Vec<String> = vec!["--name".into(), name.into()];
    a.push(format!("--cgroup-parent={cgroup_parent}"));
    let s = |v: &str| v.to_string();
    a.extend(
        [
            "--ulimit",
            "nofile=20000:20000",
            "--ulimit",
            "nproc=4096:4096",
        ]
        .map(s),
    );
    let pull = match c.pull_policy.as_deref() {
        Some("Always") => "always",
        Some("Never") => "never",
        _ => "missing",
    };
    a.push(format!("--pull={pull}"));
    assert!(
        pod.host_network,
        "only hostNetwork pods are run (no pod network here)"
    );
    a.extend(["--network", "host"].map(s));
    if pod.host_pid {
        a.extend(["--pid", "host"].map(s));
    }
    let sc = &c.security;
    if sc.privileged {
        a.push("--privileged".into());
    }
    if let Some(u) = sc.run_as_user {
        assert!(
            !(sc.run_as_non_root && u == 0),
            "container {}: runAsNonRoot with runAsUser 0",
            c.name
        );
        a.push(format!("--user={u}"));
    }
    if sc.read_only_root {
        // No tmpfs on /run, /tmp (podman's default): the kubelet adds none.
        a.extend(["--read-only", "--read-only-tmpfs=false"].map(s));
    }
    if sc.no_new_privileges {
        a.extend(["--security-opt", "no-new-privileges"].map(s));
    }
    for cap in &sc.cap_drop {
        a.push(format!("--cap-drop={}", cap_name(cap)));
    }
    for cap in &sc.cap_add {
        a.push(format!("--cap-add={}", cap_name(cap)));
    }
    if sc.seccomp.as_deref() == Some("Unconfined") {
        a.extend(["--security-opt", "seccomp=unconfined"].map(s));
    }
    if sc.apparmor.as_deref() == Some("Unconfined") {
        a.extend(["--security-opt", "apparmor=unconfined"].map(s));
    }
    for (k, v) in env {
        a.push("--env".into());
        a.push(format!("{k}={v}"));
    }
    for b in binds {
        a.push("--volume".into());
        a.push(b.arg());
    }
    if !command.is_empty() {
        a.push("--entrypoint".into());
        a.push(serde_json::to_string(command).expect("command as JSON"));
    }
    a.push(c.image.clone());
    a.extend(args.iter().cloned());
    a
}

/// The kernel's bit of a capability named as in a securityContext (`BPF`, `NET_ADMIN`, ...).
pub fn cap_bit(cap: &str) -> u32 {
    const CAPS: &[(&str, u32)] = &[
        ("CHOWN", 0),
        ("DAC_OVERRIDE", 1),
        ("FOWNER", 3),
        ("KILL", 5),
        ("SETGID", 6),
        ("SETUID", 7),
        ("NET_BIND_SERVICE", 10),
        ("NET_ADMIN", 12),
        ("NET_RAW", 13),
        ("SYS_PTRACE", 19),
        ("SYS_ADMIN", 21),
        ("SYS_RESOURCE", 24),
        ("PERFMON", 38),
        ("BPF", 39),
    ];
    let name = cap.trim_start_matches("CAP_");
    CAPS.iter()
        .find(|(n, _)| *n == name)
        .map(|(_, b)| *b)
        .unwrap_or_else(|| panic!("capability {cap}: add its bit to podrun::podman::cap_bit"))
}

fn cap_name(cap: &str) -> String {
    if cap == "ALL" || cap.starts_with("CAP_") {
        cap.to_string()
    } else {
        format!("CAP_{cap}")
    }
}

/// A container removed (`podman rm -f`) on drop, also on panic.
pub struct ContainerGuard {
    pub name: String,
}

impl ContainerGuard {
    /// The container's log (stdout + stderr).
    pub fn logs(&self) -> String {
        let out = podman(&["logs", &self.name]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// The host pid of the container's process (host PID namespace or not).
    pub fn pid(&self) -> u32 {
        podman_ok(&["inspect", "--format", "{{.State.Pid}}", &self.name])
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("container {}: pid: {e}", self.name))
    }

    /// Whether the container is running.
    pub fn running(&self) -> bool {
        let out = podman(&["inspect", "--format", "{{.State.Running}}", &self.name]);
        String::from_utf8_lossy(&out.stdout).trim() == "true"
    }

    /// The kubelet's stop: SIGTERM, then SIGKILL after `grace`. Returns the exit code.
    pub fn stop(&self, grace: Duration) -> i64 {
        let t = grace.as_secs().to_string();
        podman_ok(&["stop", "--time", &t, &self.name]);
        let code = podman_ok(&["inspect", "--format", "{{.State.ExitCode}}", &self.name]);
        code.trim().parse().unwrap_or(-1)
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let _ = podman(&["rm", "--force", "--time", "0", &self.name]);
    }
}
