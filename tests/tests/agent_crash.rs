//! A crashed agent (SIGKILL) with `--persist`: the programs stay attached (links pinned from the
//! start), so each pod's `FAIL_OPEN` flag decides while no proxy listens — a fail-open pod's new
//! outbound and inbound connections go direct, a fail-closed pod's are refused. A new agent on
//! the same pins adopts the pods (policies from the pinned map, netns by cookie), rebinds and
//! re-registers their listeners, and capture of new connections resumes; the time is measured.

use std::{
    net::{IpAddr, SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use sluice_tests::{
    agent_node::Node,
    sluice_cli::{exchange, EchoPeerServer},
    Netns, Veth,
};

/// `peer=<ip>:` prefix of an [`EchoPeerServer`] answer for a client at `ip`.
fn from(ip: IpAddr) -> String {
    format!("peer={ip}:")
}

/// Inside `ns`: the connect result to `dst` (short timeout).
fn try_connect(ns: &Netns, dst: SocketAddr) -> std::io::Result<TcpStream> {
    ns.run(move || TcpStream::connect_timeout(&dst, Duration::from_secs(2)))
}

struct Pod {
    ns: Netns,
    ip: IpAddr,
    /// The pod's own app (inbound target).
    app: EchoPeerServer,
    /// An app in the peer netns (outbound target).
    remote: EchoPeerServer,
}

/// Both directions captured: outbound through the pod's 15001, inbound from 127.0.0.6.
fn assert_captured(pod: &Pod, peer: &Netns) {
    let out = exchange(&pod.ns, pod.remote.addr, 100, None);
    assert!(
        out.local.ip().is_loopback(),
        "outbound not captured: {out:?}"
    );
    let inb = exchange(peer, pod.app.addr, 100, None);
    assert!(
        inb.answer.starts_with("peer=127.0.0.6:"),
        "inbound not captured: {inb:?}"
    );
}

#[test]
fn sigkill_fail_open_vs_closed_and_capture_resumes_after_restart() {
    let mut node = Node::start_with("cr", &["--persist"]);
    let peer = Netns::new("crq");
    let mk = |tag: &str, vtag: &str| {
        let ns = Netns::new(tag);
        let veth = Veth::new(vtag, &ns, &peer);
        let ip: IpAddr = veth.a_v4.into();
        let app = EchoPeerServer::start(&ns, SocketAddr::new(ip, 0));
        let remote = EchoPeerServer::start(&peer, SocketAddr::new(veth.b_v4.into(), 0));
        (
            Pod {
                ns,
                ip,
                app,
                remote,
            },
            veth,
        )
    };
    let (open, open_veth) = mk("cro", "co");
    let (closed, _closed_veth) = mk("crc", "cc");
    let peer_ip_open: IpAddr = open_veth.b_v4.into();
    node.enroll(&open.ns, &["--fail-open"]);
    node.enroll(&closed.ns, &[]);
    let _in_cgroup = node.cgroup.enter_process();
    assert_captured(&open, &peer);
    assert_captured(&closed, &peer);

    // Crash: no shutdown code runs.
    node.agent().kill();

    // Fail-open: new connections go direct, both ways.
    let out = exchange(&open.ns, open.remote.addr, 100, None);
    assert!(
        !out.local.ip().is_loopback(),
        "fail-open outbound must go direct: {out:?}"
    );
    assert!(out.answer.starts_with(&from(open.ip)), "{out:?}");
    let inb = exchange(&peer, open.app.addr, 100, None);
    assert!(
        inb.answer.starts_with(&from(peer_ip_open)),
        "fail-open inbound must reach the app directly: {inb:?}"
    );
    // Fail-closed: refused both ways (still captured, nobody listens).
    let e = try_connect(&closed.ns, closed.remote.addr).expect_err("fail-closed outbound");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
    let e = try_connect(&peer, closed.app.addr).expect_err("fail-closed inbound");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");

    // Restart on the same pins: the pods are adopted and capture resumes.
    let t0 = Instant::now();
    node.restart();
    let ready = t0.elapsed();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out_ok = try_connect(&closed.ns, closed.remote.addr).is_ok();
        let in_ok = try_connect(&peer, closed.app.addr).is_ok();
        if out_ok && in_ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "capture did not resume within 5 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let resumed = t0.elapsed();
    eprintln!("restart: agent ready after {ready:?}, capture resumed after {resumed:?}");
    // Once the new agent is up, capture is back at once; loading the programs (debug build,
    // shared CPU) is most of the restart, so the bound from the spawn is looser.
    assert!(
        resumed - ready < Duration::from_secs(1),
        "capture resumed {:?} after the agent was ready",
        resumed - ready
    );
    assert!(
        resumed < Duration::from_secs(3),
        "capture resumed only {resumed:?} after the restart (agent ready after {ready:?})"
    );
    assert_captured(&closed, &peer);
    assert_captured(&open, &peer);
    assert!(node.agent_log().contains("adopted"), "{}", node.agent_log());
}
