//! Root attachment, the production default: `sluice agent` without `--cgroup` attaches at the
//! detected cgroup v2 root. This is the only test that attaches there (every other test uses a
//! cgroup subtree). It shows that at the root only enrolled netns are captured — a process that
//! was never moved into a test cgroup is, a netns that is not enrolled and the root netns's
//! loopback are not — and that nothing stays attached or pinned once the agent exits, also when
//! the test panics.
//!
//! Safety: programs at the root see every socket on the machine, but act only on the netns
//! cookies in this agent's own (freshly pinned) policy map. The test connects only to loopback in
//! the root netns, and to veth addresses inside namespaces it created.

use std::{
    fs::File,
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use sluice_node::agent::protocol::StatusReport;
use sluice_tests::{
    agent_node::{counter_at, status_at},
    cgroup::current_cgroup,
    require_root, run_cmd, run_cmd_quiet,
    sluice_cli::{exchange, sluice_bin, sluice_ok, ControlSocket, EchoPeerServer, SluiceProcess},
    sock::orig_dst_v4,
    Netns, PinDir, Veth,
};

/// An unrouted service VIP: a netns without a default route gets ENETUNREACH for it.
const VIP: &str = "10.96.0.10:80";

/// The cgroup hooks (attach types as `bpftool -j cgroup show` names them) that must be attached
/// at the root while the agent runs (sk_msg attaches to the SockHash, not to a cgroup).
const ROOT_HOOKS: [&str; 6] = [
    "cgroup_inet4_connect",
    "cgroup_inet6_connect",
    "cgroup_sock_ops",
    "cgroup_getsockopt",
    "cgroup_inet4_getpeername",
    "cgroup_inet6_getpeername",
];

/// One program attached to a cgroup, as `bpftool -j cgroup show` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Attached {
    id: u64,
    attach_type: String,
    name: String,
}

/// The sluice programs attached directly at `cgroup` (program names start with `sluice_`).
fn sluice_programs_at(cgroup: &Path) -> Vec<Attached> {
    let out = run_cmd("bpftool", &["-j", "cgroup", "show", path_str(cgroup)]);
    if out.trim().is_empty() {
        return Vec::new();
    }
    let v: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("bpftool JSON {out:?}: {e}"));
    v.as_array()
        .unwrap_or_else(|| panic!("bpftool cgroup show: not an array: {out}"))
        .iter()
        .map(|p| Attached {
            id: p["id"].as_u64().unwrap_or(0),
            attach_type: p["attach_type"].as_str().unwrap_or("").to_string(),
            name: p["name"].as_str().unwrap_or("").to_string(),
        })
        .filter(|p| p.name.starts_with("sluice_"))
        .collect()
}

fn path_str(p: &Path) -> &str {
    p.to_str()
        .unwrap_or_else(|| panic!("non UTF-8 path {}", p.display()))
}

/// Detaches whatever program with one of `ids` is still attached at `root`: through its bpf_link
/// (how the agent attaches), else as a legacy attachment. Cleanup path: never panics.
fn detach_at_root(root: &Path, left: &[Attached]) {
    let links = std::process::Command::new("bpftool")
        .args(["-j", "link", "show"])
        .output()
        .ok()
        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok());
    for p in left {
        let link = links.as_ref().and_then(|l| {
            l.as_array()?
                .iter()
                .find(|x| x["prog_id"].as_u64() == Some(p.id))
                .and_then(|x| x["id"].as_u64())
        });
        let done = match link {
            Some(l) => run_cmd_quiet("bpftool", &["link", "detach", "id", &l.to_string()]),
            None => run_cmd_quiet(
                "bpftool",
                &[
                    "cgroup",
                    "detach",
                    path_str(root),
                    &p.attach_type,
                    "id",
                    &p.id.to_string(),
                ],
            ),
        };
        eprintln!(
            "warning: program {} ({}) was still attached at {} after the agent exited; detach {}",
            p.id,
            p.name,
            root.display(),
            if done { "done" } else { "FAILED" }
        );
    }
}

/// Exclusive `flock` on the cgroup v2 root directory: two runs of this test on one machine (a CI
/// run next to a developer's) take turns, so "no sluice program at the root" is exact.
struct RootLock {
    _held: File,
}

impl RootLock {
    fn acquire(root: &Path) -> Self {
        let f = File::open(root).unwrap_or_else(|e| panic!("open {}: {e}", root.display()));
        // SAFETY: flock on a descriptor we own; released when the file is closed.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(
            rc,
            0,
            "flock {}: {}",
            root.display(),
            std::io::Error::last_os_error()
        );
        Self { _held: f }
    }
}

/// `sluice agent` with no `--cgroup` (so it attaches at the detected root), pins in a fresh pin
/// dir, control socket in a fresh directory. Drop: SIGTERM (SIGKILL after 5 s) by pid — closing
/// the agent's link fds detaches its programs — then remove the pins, then detach anything of
/// ours still at the root. The agent also gets SIGTERM if the test thread dies without unwinding
/// (`PR_SET_PDEATHSIG`).
struct RootAgent {
    agent: Option<SluiceProcess>,
    control: ControlSocket,
    pins: Option<PinDir>,
    root: PathBuf,
}

impl RootAgent {
    fn start(root: &Path) -> Self {
        let pins = PinDir::new("ra");
        let control = ControlSocket::new();
        let mut cmd = Command::new(sluice_bin());
        cmd.arg("agent")
            .arg("--pin-dir")
            .arg(pins.path())
            .arg("--control")
            .arg(control.path());
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut me = Self {
            agent: Some(SluiceProcess::spawn(cmd)),
            control,
            pins: Some(pins),
            root: root.to_path_buf(),
        };
        me.agent_mut()
            .wait_for_log("agent ready", Duration::from_secs(20));
        me
    }

    fn agent(&self) -> &SluiceProcess {
        self.agent.as_ref().expect("agent already stopped")
    }

    fn agent_mut(&mut self) -> &mut SluiceProcess {
        self.agent.as_mut().expect("agent already stopped")
    }

    fn ctl(&self) -> String {
        self.control.arg()
    }

    fn status(&self) -> StatusReport {
        status_at(&self.ctl())
    }

    fn counter(&self, name: &str) -> u64 {
        counter_at(&self.ctl(), name)
    }

    /// SIGTERM and wait for a clean exit; panics with the log otherwise.
    fn stop(&mut self) {
        let mut agent = self.agent.take().expect("agent already stopped");
        let st = agent
            .terminate(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("agent ignored SIGTERM:\n{}", agent.log()));
        assert!(st.success(), "agent exit {st}:\n{}", agent.log());
        assert!(
            agent.log().contains("programs detached"),
            "agent did not detach:\n{}",
            agent.log()
        );
    }
}

impl Drop for RootAgent {
    fn drop(&mut self) {
        drop(self.agent.take());
        drop(self.pins.take());
        let left = sluice_programs_at_quiet(&self.root);
        if !left.is_empty() {
            detach_at_root(&self.root, &left);
        }
    }
}

/// [`sluice_programs_at`] for cleanup paths: an empty list when bpftool fails.
fn sluice_programs_at_quiet(cgroup: &Path) -> Vec<Attached> {
    std::panic::catch_unwind(|| sluice_programs_at(cgroup)).unwrap_or_default()
}

/// Waits (at most 2 s) until no sluice program is attached at `root`.
fn wait_root_clean(root: &Path) -> Vec<Attached> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let left = sluice_programs_at(root);
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn agent_without_cgroup_attaches_at_the_root_and_captures_only_enrolled_netns() {
    require_root();
    let root = sluice_node::bpf::default_cgroup_root().expect("cgroup v2 root");
    let _lock = RootLock::acquire(&root);
    let before = sluice_programs_at(&root);
    assert!(
        before.is_empty(),
        "sluice programs already attached at the cgroup v2 root {} (leaked by an earlier run? \
         `bpftool link show` finds their links, `bpftool link detach id <link>` removes them): \
         {before:?}",
        root.display()
    );
    // The test process, whose threads play the pod's app below, is not in any test cgroup.
    let own_cgroup = current_cgroup();
    assert!(
        !own_cgroup.to_string_lossy().contains("/sl-"),
        "the test process sits in a test cgroup {}",
        own_cgroup.display()
    );

    let pod = Netns::new("rap");
    let server_ns = Netns::new("ras");
    let other = Netns::new("rao");
    let veth = Veth::new("ra", &pod, &server_ns);
    let server = EchoPeerServer::start(&server_ns, SocketAddr::from((veth.b_v4, 0)));

    let mut node = RootAgent::start(&root);
    let agent_cgroup =
        std::fs::read_to_string(format!("/proc/{}/cgroup", node.agent().pid())).unwrap();
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    assert_eq!(
        agent_cgroup.lines().find(|l| l.starts_with("0::")),
        own.lines().find(|l| l.starts_with("0::")),
        "the agent must run where it was started, not in a test cgroup"
    );
    assert!(
        node.agent()
            .log()
            .contains(&format!("cgroup={}", root.display())),
        "agent did not pick the detected root {}:\n{}",
        root.display(),
        node.agent().log()
    );
    let attached = sluice_programs_at(&root);
    for hook in ROOT_HOOKS {
        assert!(
            attached.iter().any(|p| p.attach_type == hook),
            "{hook} not attached at the root {}: {attached:?}",
            root.display()
        );
    }
    assert_eq!(
        attached.len(),
        ROOT_HOOKS.len(),
        "one program per hook: {attached:?}"
    );

    let out = sluice_ok(&["enroll", "--netns", pod.name(), "--control", &node.ctl()]);
    assert!(out.contains("mode=node"), "{out}");

    // 1. Captured: a thread of this process (never moved into a test cgroup) connects from the
    //    pod to the server pod over the veth; the agent's proxy carries it.
    let x = exchange(&pod, server.addr, 20_000, None);
    assert_eq!(
        x.peer, server.addr,
        "getpeername must show the original destination"
    );
    assert!(x.local.ip().is_loopback(), "not captured: {x:?}");
    let pod_src = format!("peer={}:", IpAddr::from(veth.a_v4));
    assert!(
        x.answer.starts_with(&pod_src) && x.answer.ends_with("bytes=20000"),
        "the server must see the pod's address and every byte: {x:?}"
    );
    node.agent_mut()
        .wait_for_log(&format!("orig_dst={}", server.addr), Duration::from_secs(5));
    let cookie = pod.cookie();
    let st = node.status();
    let p = st
        .pods
        .iter()
        .find(|p| p.cookie == cookie)
        .unwrap_or_else(|| panic!("pod not in status: {st:?}"));
    assert_eq!(p.accepted, 1, "{p:?}");
    assert!(
        p.recent_destinations.contains(&server.addr.to_string()),
        "{p:?}"
    );
    let captured = node.counter("captured");
    let answered = node.counter("orig_dst_answered");
    assert!(captured >= 1 && answered >= 1, "{:?}", st.counters);

    // 2. A netns that is not enrolled is untouched: its connect to a VIP is not rewritten to a
    //    listener, it fails for want of a route.
    let vip: SocketAddr = VIP.parse().unwrap();
    let err =
        other.run(move || TcpStream::connect_timeout(&vip, Duration::from_secs(2)).unwrap_err());
    assert_eq!(err.raw_os_error(), Some(libc::ENETUNREACH), "{err}");

    // 3. The root netns's loopback is untouched: connect, getpeername and SO_ORIGINAL_DST are the
    //    kernel's own answers.
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 in the root netns");
    let addr = l.local_addr().unwrap();
    let mut c = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let (mut acc, peer) = l.accept().unwrap();
    assert_eq!(c.peer_addr().unwrap(), addr);
    assert_eq!(peer, c.local_addr().unwrap());
    match orig_dst_v4(&acc) {
        // No conntrack entry (or no conntrack): the kernel's error stands.
        Err(_) => {}
        // conntrack saw the connection: its original destination is the listener itself.
        Ok(d) => assert_eq!(SocketAddr::from(d), addr, "SO_ORIGINAL_DST rewritten"),
    }
    c.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    acc.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
    drop((c, acc, l));
    assert_eq!(
        node.counter("captured"),
        captured,
        "a socket outside the enrolled netns was captured"
    );
    assert_eq!(
        node.counter("orig_dst_answered"),
        answered,
        "SO_ORIGINAL_DST answered outside the enrolled netns"
    );
    assert!(
        node.counter("skip_not_enrolled") > 0,
        "the root programs never saw a socket outside the pod"
    );

    // 4. The agent exits: nothing of it stays attached at the root, no link is pinned, and the
    //    pins go with the pin dir.
    node.stop();
    let left = wait_root_clean(&root);
    assert!(
        left.is_empty(),
        "still attached at the root {} after the agent exited: {left:?}",
        root.display()
    );
    let pins = node.pins.take().expect("pin dir");
    let pin_path = pins.path().to_path_buf();
    assert!(
        !pin_path.join(sluice_node::bpf::LINKS_DIR).exists(),
        "links pinned by an agent that was not asked to persist: {:?}",
        pins.entries()
    );
    drop(pins);
    assert!(
        !pin_path.exists(),
        "pin dir {} left behind",
        pin_path.display()
    );
    // With nothing attached the pod's connections go direct again.
    let x = exchange(&pod, server.addr, 10, None);
    assert_eq!(
        x.local.ip(),
        IpAddr::from(veth.a_v4),
        "still captured: {x:?}"
    );
}
