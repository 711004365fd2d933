//! Namespaced test harness for sluice's integration tests (see tests/README.md).
//!
//! Every resource here is an RAII guard: network namespaces, veth pairs, cgroup v2 subtrees and
//! bpffs pin directories are removed on `Drop`, which also runs while a test panics. Names carry a
//! caller-chosen tag, the test process id and a counter (`sl-<tag>-<pid>-<n>`), so helpers running
//! tests concurrently never collide.

pub mod admin_run;
pub mod agent_node;
pub mod cgroup;
pub mod cni;
pub mod datapath;
pub mod http_probe;
pub mod inbound;
pub mod inventory;
pub mod kube_api;
pub mod l7_pods;
pub mod netns;
pub mod ns_server;
pub mod pins;
pub mod podrun;
pub mod prometheus;
pub mod sluice_cli;
pub mod sock;
pub mod stream_load;
pub mod trace_peer;
pub mod veth;
pub mod xds_bench;
pub mod xds_run;
pub mod xds_script;
pub mod xds_server;

use std::{
    path::Path,
    sync::atomic::{AtomicU32, Ordering},
};

pub use cgroup::{Cgroup, ProcessInCgroup};
pub use http_probe::http_get;
pub use netns::{LinkStats, Netns};
pub use pins::PinDir;
pub use veth::Veth;

/// `SOL_SOCKET` option returning the network namespace cookie of a socket (Linux 5.14+).
pub const SO_NETNS_COOKIE: libc::c_int = 71;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh per-process counter value, used to make resource names unique.
pub fn next_id() -> u32 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// `sl-<tag>-<pid>-<n>`: the unique name of a namespace, cgroup or pin directory.
pub fn unique_name(tag: &str) -> String {
    format!("sl-{tag}-{}-{}", std::process::id(), next_id())
}

/// Panics with a clear message unless the test runs as root on a host with cgroup v2 and bpffs
/// support. Tests that touch the kernel call this first; they never skip silently.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "this test needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_BPF): run `sudo -E cargo test -p sluice-tests` \
         or `cargo xtask test` as root (euid is {euid})"
    );
    let root = sluice_node::bpf::default_cgroup_root()
        .unwrap_or_else(|e| panic!("this test needs a cgroup v2 mount: {e}"));
    assert!(
        root.join("cgroup.procs").exists(),
        "cgroup v2 root {} has no cgroup.procs",
        root.display()
    );
    assert!(
        Path::new("/sys/fs/bpf").exists(),
        "this test needs /sys/fs/bpf (bpffs mount point) to exist"
    );
    sluice_node::bpf::ensure_bpffs(Path::new("/sys/fs/bpf"))
        .unwrap_or_else(|e| panic!("this test needs bpffs at /sys/fs/bpf: {e}"));
}

/// Runs `cmd` (program + args) to completion and panics with its stderr if it fails.
pub fn run_cmd(program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "`{program} {}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Like [`run_cmd`] but only reports failure (for cleanup paths, which must never panic).
pub fn run_cmd_quiet(program: &str, args: &[&str]) -> bool {
    std::process::Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}
pub mod conformance;
pub mod upstream;

/// Polls until `done` (panics with `what` and the last value after 20 s).
pub fn until<T: std::fmt::Debug>(
    what: &str,
    mut get: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    let start = std::time::Instant::now();
    loop {
        let v = get();
        if done(&v) {
            return v;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "never {what}; last: {v:#?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
