//! Inbound capture fixture: an enrolled server pod with sk_lookup linked to its netns, a client
//! netns joined to it by a veth, and helpers for the test playing the inbound proxy and the app.

use std::{
    io::{self, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    time::{Duration, Instant},
};

use sluice_common::NetnsPolicy;
use sluice_node::bpf::{Datapath, LINKS_DIR, SK_LOOKUP_PIN_PREFIX};

use crate::{
    datapath::{Fixture, Pod},
    run_cmd, Netns, PinDir, Veth,
};

/// An enrolled server pod (inbound capture attached), a client netns and the veth between them.
/// Drops the data path first (detaching the programs), then the namespaces.
pub struct InboundFixture {
    pub f: Fixture,
    /// The server pod (end `b` of the veth: `veth.b_v4` / `veth.b_v6` are its addresses).
    pub pod: Pod,
    /// A non-enrolled client namespace (end `a`).
    pub client: Netns,
    pub veth: Veth,
}

impl InboundFixture {
    /// Loads the data path (test process in its cgroup), enrolls a pod with `policy`, links
    /// sk_lookup to it, and joins a client netns to it. `tag`: at most 3 characters.
    pub fn new(tag: &str, policy: NetnsPolicy) -> Self {
        let mut f = Fixture::new(tag);
        let pod = f.enroll_pod(policy);
        let client = Netns::new(tag);
        let veth = Veth::new(tag, &client, &pod.ns);
        f.dp()
            .attach_inbound(pod.cookie(), pod.ns.file())
            .unwrap_or_else(|e| panic!("attach_inbound to {}: {e}", pod.ns.name()));
        Self {
            f,
            pod,
            client,
            veth,
        }
    }

    /// The pod's IPv4 address with `port`.
    pub fn pod_v4(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.veth.b_v4.into(), port)
    }

    /// The pod's IPv6 address with `port`.
    pub fn pod_v6(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.veth.b_v6.into(), port)
    }

    /// Connects from the client netns.
    pub fn dial(&self, dst: SocketAddr) -> io::Result<TcpStream> {
        self.client.run(move || TcpStream::connect(dst))
    }

    /// Binds a listener inside the pod netns.
    pub fn listen(&self, addr: &str) -> TcpListener {
        let addr = addr.to_string();
        self.pod.run(move || {
            TcpListener::bind(&addr).unwrap_or_else(|e| panic!("bind {addr} in the pod: {e}"))
        })
    }
}

/// A server pod whose inbound proxy the test plays (a listener on `0.0.0.0:15006`) and a client
/// netns dialling it over a veth (pod = end `b`), for tests that load and reload `Datapath`
/// themselves (persisted links adopted by the next agent, the upgrade hand-over).
pub struct ProxyPod {
    /// The test's inbound proxy listener inside the pod.
    pub proxy: TcpListener,
    pub veth: Veth,
    /// The client netns (not enrolled).
    pub client: Netns,
    /// The server pod.
    pub pod: Netns,
    /// What the client dials: the pod's IPv4 address with the app port.
    pub dst: SocketAddr,
}

impl ProxyPod {
    /// Creates the pod and client netns (`tag`: at most 3 characters), the veth, and the proxy
    /// listener; the client dials `app_port`.
    pub fn new(tag: &str, app_port: u16) -> Self {
        let pod = Netns::new(tag);
        let client = Netns::new(tag);
        let veth = Veth::new(tag, &client, &pod);
        let dst = SocketAddr::new(veth.b_v4.into(), app_port);
        let proxy = pod.run(|| {
            TcpListener::bind("0.0.0.0:15006").unwrap_or_else(|e| panic!("bind 15006: {e}"))
        });
        Self {
            proxy,
            veth,
            client,
            pod,
            dst,
        }
    }

    /// Enrolls the pod in node mode on `dp`, links sk_lookup to it and registers the proxy.
    pub fn enroll(&self, dp: &mut Datapath) {
        let cookie = self.pod.cookie();
        dp.set_policy(cookie, &Fixture::node_policy()).unwrap();
        dp.attach_inbound(cookie, self.pod.file()).unwrap();
        dp.set_inbound_listener(cookie, &self.proxy).unwrap();
    }

    /// Dials `dst` from the client and asserts the proxy accepts it with `dst` as its local
    /// address (captured); returns (client side, proxy side). `what` names the step.
    pub fn captured(&self, what: &str) -> (TcpStream, TcpStream) {
        let dst = self.dst;
        let c = self.client.run(move || TcpStream::connect(dst).unwrap());
        let (down, _) = accept(&self.proxy, what);
        assert_eq!(down.local_addr().unwrap(), dst, "{what}");
        (c, down)
    }

    /// Where a persisted (or upgrade-pinned) sk_lookup link of the pod lives in `pins`.
    pub fn link_pin(&self, pins: &PinDir) -> PathBuf {
        pins.path()
            .join(LINKS_DIR)
            .join(format!("{SK_LOOKUP_PIN_PREFIX}{}", self.pod.cookie()))
    }
}

/// Accepts one connection within `wait` (None when nothing arrived).
pub fn accept_within(l: &TcpListener, wait: Duration) -> Option<(TcpStream, SocketAddr)> {
    l.set_nonblocking(true).expect("set_nonblocking");
    let deadline = Instant::now() + wait;
    let got = loop {
        match l.accept() {
            Ok(c) => break Some(c),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    break None;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    l.set_nonblocking(false).expect("set_blocking");
    if let Some((s, _)) = &got {
        s.set_nonblocking(false).expect("accepted socket blocking");
    }
    got
}

/// Accepts one connection within 2 s, panicking with `what` otherwise.
pub fn accept(l: &TcpListener, what: &str) -> (TcpStream, SocketAddr) {
    accept_within(l, Duration::from_secs(2)).unwrap_or_else(|| panic!("{what}: no connection"))
}

/// Asserts that nothing is waiting on `l` (the connection went elsewhere).
pub fn assert_idle(l: &TcpListener, what: &str) {
    if let Some((_, peer)) = accept_within(l, Duration::ZERO) {
        panic!("{what}: unexpected connection from {peer}");
    }
}

/// Sends `msg` on `from` and checks it arrives on `to`.
pub fn send(from: &mut TcpStream, to: &mut TcpStream, msg: &[u8]) {
    from.write_all(msg).expect("write");
    let mut buf = vec![0u8; msg.len()];
    to.read_exact(&mut buf).expect("read");
    assert_eq!(buf, msg);
}

/// Waits up to 2 s for every sk_lookup link of `ns` to disappear: the kernel frees a link whose
/// last reference was a pin (or a map-held fd) from a workqueue, so `bpftool link show` can list it
/// for a moment after the detach returned. True when none is left.
pub fn sk_lookup_links_gone(ns: &Netns) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        if sk_lookup_links(ns).is_empty() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Ids of the sk_lookup links attached to `ns`, from `bpftool link show`.
pub fn sk_lookup_links(ns: &Netns) -> Vec<u32> {
    let want = format!("netns_ino {}", ns.inode());
    let out = run_cmd("bpftool", &["link", "show"]);
    let mut ids = Vec::new();
    let mut block: Vec<&str> = Vec::new();
    let mut flush = |block: &mut Vec<&str>| {
        let text = block.join(" ");
        if text.contains("sk_lookup")
            && text
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .contains(&want)
        {
            if let Some(id) = block
                .first()
                .and_then(|l| l.split(':').next())
                .and_then(|n| n.trim().parse().ok())
            {
                ids.push(id);
            }
        }
        block.clear();
    };
    for line in out.lines() {
        if line.chars().next().is_some_and(|c| c.is_ascii_digit()) {
            flush(&mut block);
        }
        block.push(line);
    }
    flush(&mut block);
    ids
}
