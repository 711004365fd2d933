//! Bad host input (issue 11, test 6), with the real `sluice agent` / `sluice install-cni`
//! processes as the DaemonSet runs them (`--health-addr`): each case logs one clear error naming
//! the path and what to do, stays live (`/healthz/live` 200, so the kubelet does not restart it
//! into a crash loop), is not ready with the reason in the 503's body, leaves nothing
//! half-installed (pins, links, control socket, CNI entry, binary, temp files), and becomes ready
//! without a restart once the host is fixed; SIGTERM in that state exits cleanly.
//!
//! Cases: a missing cgroup, a pin dir off bpffs, a cgroup v1 hierarchy and a tmpfs (the v1
//! controllers' parent of hybrid hosts) as `--cgroup`, a read-only control socket directory
//! (fails after the data path was loaded and pinned: the cleanup is what is tested), a
//! read-only CNI conf dir, missing CNI bin and conf dirs. The fourth kind of the issue, an
//! unreachable API server, is `pod_watcher.rs`'s
//! `agent_watch_pods_enrolls_from_the_api_server_and_is_not_ready_without_it` (same 503 with
//! the reason, agent live and running).

use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use sluice_tests::{
    http_get,
    http_probe::free_addr,
    require_root, run_cmd, run_cmd_quiet,
    sluice_cli::{sluice_bin, SluiceProcess},
    unique_name, until, Cgroup, PinDir,
};

/// The agent's / installer's log line for a start it cannot make.
const CANNOT_START: &str = "cannot start on this host";

/// A temporary directory, removed on drop (after the mounts in it: declare mounts later).
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(unique_name(tag));
        fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        Self(p)
    }
    fn dir(&self, name: &str) -> PathBuf {
        let p = self.0.join(name);
        fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A mount this test made; lazily unmounted on drop.
struct Mounted(PathBuf);

impl Mounted {
    /// `mount <args> <dir>`.
    fn new(args: &[&str], dir: &Path) -> Self {
        let mut a = args.to_vec();
        a.push(dir.to_str().expect("utf-8 path"));
        run_cmd("mount", &a);
        Self(dir.to_path_buf())
    }
    /// `dir` bind-mounted onto itself, read-only.
    fn read_only(dir: &Path) -> Self {
        let d = dir.to_str().expect("utf-8 path");
        run_cmd("mount", &["--bind", d, d]);
        let m = Self(dir.to_path_buf());
        run_cmd("mount", &["-o", "remount,bind,ro", d]);
        m
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        run_cmd_quiet("umount", &["-l", self.0.to_str().unwrap_or("")]);
    }
}

/// A cgroup directory the test may create later; removed on drop.
struct LateCgroup(PathBuf);

impl Drop for LateCgroup {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.0);
    }
}

/// `sluice agent` with a health endpoint, not waiting for it to be ready.
fn agent(
    cgroup: &Path,
    pins: &Path,
    control: &Path,
    extra: &[&str],
) -> (SluiceProcess, SocketAddr) {
    let health = free_addr();
    let mut cmd = Command::new(sluice_bin());
    cmd.arg("agent")
        .arg("--cgroup")
        .arg(cgroup)
        .arg("--pin-dir")
        .arg(pins)
        .arg("--control")
        .arg(control)
        .arg("--health-addr")
        .arg(health.to_string())
        .args(extra);
    (SluiceProcess::spawn(cmd), health)
}

/// Waits for a 503 whose body says `needle`; checks liveness beside it.
fn wait_not_ready(health: SocketAddr, needle: &str) -> String {
    let body = until(
        &format!("503 saying {needle:?}"),
        || http_get(health, "/healthz/ready"),
        |r| r.starts_with("HTTP/1.1 503") && r.contains(needle),
    );
    let live = http_get(health, "/healthz/live");
    assert!(
        live.starts_with("HTTP/1.1 200"),
        "not live while not ready: {live}"
    );
    body
}

/// Waits for `/healthz/ready` 200.
fn wait_ready(health: SocketAddr) {
    until(
        "ready",
        || http_get(health, "/healthz/ready"),
        |r| r.starts_with("HTTP/1.1 200"),
    );
}

/// SIGTERM; the process must exit 0 soon.
fn stops_cleanly(p: &mut SluiceProcess, what: &str) {
    let exit = p.terminate(Duration::from_secs(10));
    assert!(
        exit.is_some_and(|e| e.success()),
        "{what} after SIGTERM: {exit:?}\n{}",
        p.log()
    );
}

/// Programs attached to `cgroup` (`bpftool cgroup show`).
fn attached(cgroup: &Path) -> String {
    run_cmd("bpftool", &["cgroup", "show", cgroup.to_str().unwrap()])
}

fn assert_nothing_installed(pins: &PinDir, control: &Path) {
    assert!(pins.entries().is_empty(), "pinned: {:?}", pins.entries());
    assert!(
        !control.exists(),
        "control socket {} created",
        control.display()
    );
}

#[test]
fn cgroup_v1_and_tmpfs_are_refused_as_such_live_not_ready_one_log_line() {
    require_root();
    let tmp = TempDir::new("bh-v1");
    let (v1_dir, tmpfs_dir) = (tmp.dir("v1"), tmp.dir("tmpfs"));
    let name = format!("name=sluicetest{}", std::process::id());
    let _v1 = Mounted::new(
        &["-t", "cgroup", "-o", &format!("none,{name}"), "cgroup"],
        &v1_dir,
    );
    let _tmpfs = Mounted::new(&["-t", "tmpfs", "tmpfs"], &tmpfs_dir);
    let cases = [
        (&v1_dir, "is a cgroup v1 hierarchy (cgroup v1 only host?)"),
        (
            &tmpfs_dir,
            "it is a tmpfs, the parent of cgroup v1 controllers",
        ),
    ];
    for (cgroup, says) in cases {
        let pins = PinDir::new("bh-v1");
        let control = tmp.0.join(unique_name("ctl")).join("agent.sock");
        let (mut a, health) = agent(cgroup, pins.path(), &control, &["--persist"]);
        let body = wait_not_ready(health, says);
        assert!(
            body.contains(&format!(
                "{} is not a cgroup v2 directory",
                cgroup.display()
            )) && body
                .contains("set cgroup: /host/sys/fs/cgroup/unified in the sluice-config ConfigMap"),
            "{body}"
        );
        a.wait_for_log(says, Duration::from_secs(5));
        // Three attempts (0, 1, 3 s): still one error line, still running, nothing installed.
        std::thread::sleep(Duration::from_millis(3500));
        let log = a.log();
        assert_eq!(log.matches(CANNOT_START).count(), 1, "{log}");
        assert!(
            a.wait_exit(Duration::from_millis(100)).is_none(),
            "exited:\n{log}"
        );
        assert!(
            !log.contains("os error"),
            "a raw errno instead of the check: {log}"
        );
        assert_nothing_installed(&pins, &control);
        assert!(
            !control.parent().unwrap().exists(),
            "control dir left behind"
        );
        stops_cleanly(&mut a, "agent");
    }
}

#[test]
fn missing_cgroup_then_created_becomes_ready_without_restart() {
    require_root();
    let root = sluice_node::bpf::default_cgroup_root().expect("cgroup v2 root");
    let late = LateCgroup(root.join(unique_name("bh-late")));
    let pins = PinDir::new("bh-late");
    let ctl = TempDir::new("bh-late-ctl");
    let control = ctl.0.join("agent.sock");
    let (mut a, health) = agent(&late.0, pins.path(), &control, &[]);
    let body = wait_not_ready(health, "does not exist");
    assert!(
        body.contains(&format!("cgroup {}", late.0.display())),
        "{body}"
    );
    assert_nothing_installed(&pins, &control);
    fs::create_dir(&late.0).unwrap();
    wait_ready(health);
    a.wait_for_log("agent ready", Duration::from_secs(5));
    assert!(!pins.entries().is_empty(), "maps pinned once started");
    assert!(control.exists());
    stops_cleanly(&mut a, "agent");
}

#[test]
fn pin_dir_off_bpffs_then_bpffs_mounted_becomes_ready() {
    require_root();
    let tmp = TempDir::new("bh-pin");
    let cgroup = Cgroup::new("bh-pin");
    let bpf = tmp.dir("bpf");
    let pin_dir = bpf.join("sluice");
    let control = tmp.0.join("ctl/agent.sock");
    let (mut a, health) = agent(cgroup.path(), &pin_dir, &control, &[]);
    let body = wait_not_ready(health, "is not on a bpffs mount");
    assert!(
        body.contains(&format!("pin directory {}", pin_dir.display()))
            && body.contains(&format!("({} is ", bpf.display()))
            && body.contains("mount -t bpf bpf /sys/fs/bpf"),
        "{body}"
    );
    assert!(!pin_dir.exists(), "pin dir created off bpffs");
    assert!(!control.exists());
    let _bpffs = Mounted::new(&["-t", "bpf", "bpf"], &bpf);
    wait_ready(health);
    let pinned = fs::read_dir(&pin_dir).map(|d| d.count()).unwrap_or(0);
    assert!(pinned > 0, "nothing pinned on the bpffs mounted later");
    stops_cleanly(&mut a, "agent");
}

#[test]
fn read_only_control_dir_after_the_load_leaves_no_pins_or_links_and_recovers() {
    require_root();
    let cgroup = Cgroup::new("bh-ro");
    let pins = PinDir::new("bh-ro");
    let tmp = TempDir::new("bh-ro");
    let ctl_dir = tmp.dir("ctl");
    let control = ctl_dir.join("agent.sock");
    let ro = Mounted::read_only(&ctl_dir);
    // --persist: the links are pinned before the control socket is bound.
    let (mut a, health) = agent(cgroup.path(), pins.path(), &control, &["--persist"]);
    let body = wait_not_ready(health, "Read-only file system");
    assert!(
        body.contains(&format!("control socket {}", control.display())),
        "{body}"
    );
    a.wait_for_log(
        "removed what the failed start created",
        Duration::from_secs(5),
    );
    assert_nothing_installed(&pins, &control);
    until(
        "programs detached",
        || attached(cgroup.path()),
        |s| !s.contains("sluice"),
    );
    drop(ro);
    wait_ready(health);
    assert!(
        attached(cgroup.path()).contains("sluice"),
        "attached once started"
    );
    assert!(control.exists());
    stops_cleanly(&mut a, "agent");
}

/// A CNI node under a temp dir: bin, net.d (with a primary conflist), lock, plugin stand-in.
struct CniNode {
    tmp: TempDir,
}

const PRIMARY: &str =
    r#"{"cniVersion":"1.0.0","name":"k8s","plugins":[{"type":"bridge","bridge":"cni0"}]}"#;

impl CniNode {
    fn new() -> Self {
        let tmp = TempDir::new("bh-cni");
        fs::write(tmp.dir("net.d").join("10-k8s.conflist"), PRIMARY).unwrap();
        tmp.dir("bin");
        fs::write(tmp.0.join("plugin"), b"#!/bin/sh\necho stand-in\n").unwrap();
        Self { tmp }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.tmp.0.join(name)
    }
    /// `sluice install-cni` watching with bin/conf dirs `bin` and `conf` under the temp dir.
    fn installer(&self, bin: &str, conf: &str) -> (SluiceProcess, SocketAddr) {
        let health = free_addr();
        let mut cmd = Command::new(sluice_bin());
        cmd.arg("install-cni")
            .arg("--cni-bin-dir")
            .arg(self.path(bin))
            .arg("--cni-conf-dir")
            .arg(self.path(conf))
            .arg("--lock-file")
            .arg(self.path("install-cni.lock"))
            .arg("--plugin-binary")
            .arg(self.path("plugin"))
            .args(["--plugin-options", r#"{"mode":"node"}"#])
            .arg("--health-addr")
            .arg(health.to_string());
        (SluiceProcess::spawn(cmd), health)
    }
    fn names(&self, dir: &str) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.path(dir))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

#[test]
fn install_cni_read_only_conf_dir_untouched_not_ready_then_recovers() {
    require_root();
    let node = CniNode::new();
    let primary = node.path("net.d/10-k8s.conflist");
    let ro = Mounted::read_only(&node.path("net.d"));
    let (mut i, health) = node.installer("bin", "net.d");
    let body = wait_not_ready(health, "read-only mount");
    assert!(
        body.contains(&format!("writing {}", primary.display())),
        "{body}"
    );
    i.wait_for_log("read-only mount", Duration::from_secs(5));
    assert_eq!(
        fs::read_to_string(&primary).unwrap(),
        PRIMARY,
        "primary config touched"
    );
    assert_eq!(node.names("net.d"), ["10-k8s.conflist"], "temp files left");
    assert!(
        node.names("bin").is_empty(),
        "binary installed without an entry: {:?}",
        node.names("bin")
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(i.log().matches("read-only mount").count(), 1, "{}", i.log());
    drop(ro);
    wait_ready(health);
    assert!(fs::read_to_string(&primary).unwrap().contains("sluice-cni"));
    assert_eq!(node.names("bin"), ["sluice-cni"]);
    stops_cleanly(&mut i, "install-cni");
}

#[test]
fn install_cni_missing_dirs_are_named_ready_once_created_and_sigterm_exits_cleanly() {
    require_root();
    let node = CniNode::new();
    // No bin dir: named, not ready, SIGTERM in that state exits 0 and leaves the config alone.
    let (mut i, health) = node.installer("no-bin", "net.d");
    let body = wait_not_ready(health, "the directory does not exist");
    assert!(
        body.contains(&node.path("no-bin/sluice-cni").display().to_string()),
        "{body}"
    );
    stops_cleanly(&mut i, "install-cni");
    assert_eq!(
        fs::read_to_string(node.path("net.d/10-k8s.conflist")).unwrap(),
        PRIMARY
    );
    assert!(!node.path("no-bin").exists());
    // No conf dir: named; created (with a primary config) later, the entry goes in.
    let (mut i, health) = node.installer("bin", "later.d");
    let body = wait_not_ready(health, "the directory does not exist");
    assert!(
        body.contains(&format!("listing {}", node.path("later.d").display())),
        "{body}"
    );
    assert!(
        node.names("bin").is_empty(),
        "binary installed without an entry"
    );
    fs::write(node.tmp.dir("later.d").join("10-k8s.conflist"), PRIMARY).unwrap();
    wait_ready(health);
    assert!(fs::read_to_string(node.path("later.d/10-k8s.conflist"))
        .unwrap()
        .contains("sluice-cni"));
    stops_cleanly(&mut i, "install-cni");
}
