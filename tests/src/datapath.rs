//! A loaded data path on a test cgroup, with the test process inside it, and enrolled pods.

use std::{
    net::{TcpListener, TcpStream},
    time::{Duration, Instant},
};

use sluice_common::{mode, NetnsPolicy, INBOUND_PORT, OUTBOUND_PORT};
use sluice_node::bpf::{Datapath, LoadOptions, LINKS_DIR};

use crate::{require_root, Cgroup, Netns, PinDir, ProcessInCgroup};

/// The service VIP tests dial (unrouted in a pod netns: only capture makes it reachable).
pub const VIP4: &str = "10.96.0.10:80";
/// An IPv6 service VIP (unrouted as well).
pub const VIP6: &str = "[fd00:96::10]:80";

/// `Datapath` attached to a fresh cgroup, maps pinned in a fresh pin dir, and the test process
/// inside the cgroup (so its listeners and connects are seen by the programs). Drops in order:
/// process moves back, programs detach, pins go, cgroup goes.
pub struct Fixture {
    inside: Option<ProcessInCgroup>,
    dp: Option<Datapath>,
    /// Where the maps are pinned.
    pub pins: PinDir,
    /// The cgroup the programs are attached to.
    pub cg: Cgroup,
    tag: String,
}

/// An enrolled network namespace ("pod") and its cookie.
pub struct Pod {
    pub ns: Netns,
    cookie: u64,
}

impl Pod {
    pub fn cookie(&self) -> u64 {
        self.cookie
    }

    /// Runs `f` on a thread inside the pod netns.
    pub fn run<F, R>(&self, f: F) -> R
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        self.ns.run(f)
    }

    /// A captured connection inside the pod: the test plays the proxy on 127.0.0.1:15001 and
    /// the app connects to [`VIP4`]. Returns (listener, app end, proxy end).
    pub fn captured_pair(&self) -> (TcpListener, TcpStream, TcpStream) {
        self.run(|| {
            let l = TcpListener::bind("127.0.0.1:15001").unwrap();
            let app = TcpStream::connect(VIP4).unwrap();
            let (proxy, _) = l.accept().unwrap();
            (l, app, proxy)
        })
    }
}

/// A fresh test cgroup and pin dir for tests that load (and reload) `Datapath` themselves: an
/// agent restart, a persisted data path, an upgrade hand-over. Declare it before the `Datapath`s
/// so they drop (detach) first; then the pins go, then the cgroup.
pub struct LoadSite {
    /// Where the maps (and persisted links) are pinned.
    pub pins: PinDir,
    /// The cgroup the programs attach to.
    pub cg: Cgroup,
}

impl LoadSite {
    /// Requires root, creates the cgroup and the pin dir.
    pub fn new(tag: &str) -> Self {
        require_root();
        Self {
            cg: Cgroup::new(tag),
            pins: PinDir::new(tag),
        }
    }

    /// The load options naming this cgroup and pin dir.
    pub fn opts(&self) -> LoadOptions {
        LoadOptions {
            cgroup: self.cg.path().to_path_buf(),
            pin_dir: self.pins.path().to_path_buf(),
        }
    }

    /// `Datapath::load` on this site; panics naming the cgroup on failure.
    pub fn load(&self) -> Datapath {
        Datapath::load(&self.opts())
            .unwrap_or_else(|e| panic!("Datapath::load on {}: {e}", self.cg.path().display()))
    }

    /// `unload_and_unpin` of `dp`, then asserts that no pin is left.
    pub fn unload(&self, dp: Datapath) {
        dp.unload_and_unpin()
            .unwrap_or_else(|e| panic!("unload_and_unpin: {e}"));
        let left = self.pins.entries();
        assert!(
            left.is_empty(),
            "pins left after unload_and_unpin: {left:?}"
        );
    }

    /// Whether any link is pinned (persisted, or pinned for an upgrade) in the pin dir.
    pub fn links_pinned(&self) -> bool {
        let dir = self.pins.path().join(LINKS_DIR);
        dir.read_dir()
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .next()
            .is_some()
    }
}

impl Fixture {
    /// Requires root, creates cgroup + pin dir, loads and attaches, enters the cgroup.
    pub fn new(tag: &str) -> Self {
        let site = LoadSite::new(tag);
        let dp = site.load();
        let inside = site.cg.enter_process();
        let LoadSite { pins, cg } = site;
        Self {
            inside: Some(inside),
            dp: Some(dp),
            pins,
            cg,
            tag: tag.to_string(),
        }
    }

    /// The default policy of a node-mode pod: capture everything, fast path on.
    pub fn node_policy() -> NetnsPolicy {
        let mut p = NetnsPolicy::zeroed();
        p.mode = mode::NODE;
        p.fast_path = 1;
        p.outbound_port = OUTBOUND_PORT;
        p.inbound_port = INBOUND_PORT;
        p
    }

    /// The loaded data path (panics after [`Fixture::drop_datapath`]).
    pub fn dp(&mut self) -> &mut Datapath {
        self.dp.as_mut().expect("datapath already dropped")
    }

    /// Creates a netns and enrolls it with `policy`.
    pub fn enroll_pod(&mut self, policy: NetnsPolicy) -> Pod {
        let ns = Netns::new(&self.tag);
        let cookie = ns.cookie();
        self.dp()
            .set_policy(cookie, &policy)
            .unwrap_or_else(|e| panic!("set_policy for {}: {e}", ns.name()));
        Pod { ns, cookie }
    }

    /// Drops the data path now (detaching every program); the test process stays in the cgroup.
    pub fn drop_datapath(&mut self) {
        self.dp.take();
    }

    /// Waits (up to 2 s) until `entries_for(cookie) == n`: socket close callbacks run as the
    /// TCP state machine reaches CLOSE.
    pub fn wait_entries(&mut self, cookie: u64, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let got = self.dp().entries_for(cookie).expect("entries_for");
            if got == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "netns {cookie:#x} has {got} map entries, expected {n}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.inside.take();
        self.dp.take();
    }
}
