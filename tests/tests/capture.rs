//! eBPF capture end to end, against the real `sluice` binary: `sluice agent` attached to a test
//! cgroup, pods enrolled with `sluice enroll`, apps running as threads of the test process inside
//! that cgroup and the pod netns.

use std::{
    io::Write,
    net::{IpAddr, SocketAddr, TcpStream},
    time::Duration,
};

use sluice_tests::{
    agent_node::{status_at, Node},
    require_root, run_cmd,
    sluice_cli::{
        exchange, failed_upstream, read_answer, sluice_err, sluice_ok, EchoPeerServer,
        SluiceProcess,
    },
    Cgroup, Netns, PinDir, Veth,
};

const VIP: &str = "10.96.0.10:80";
/// An unrouted IPv6 service VIP.
const VIP6: &str = "[fd00:96::10]:80";

/// Connects from inside `ns`, records getpeername and `ss` while the connection is open, sends,
/// half-closes, reads the answer.
fn open_and_inspect(ns: &Netns, dst: SocketAddr) -> (SocketAddr, String, String) {
    ns.run(move || {
        let mut s = TcpStream::connect_timeout(&dst, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect {dst}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let peer = s.peer_addr().expect("getpeername");
        let local = s.local_addr().expect("getsockname");
        // `ss` forked from this thread runs in the pod netns; netlink shows the real peer.
        let ss = run_cmd("ss", &["-tnH", "state", "established"]);
        let mine = ss
            .lines()
            .find(|l| l.contains(&local.to_string()))
            .unwrap_or_else(|| panic!("app socket {local} not in ss:\n{ss}"))
            .to_string();
        s.write_all(&[b'y'; 50_000]).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let answer = read_answer(&mut s).expect("answer");
        (peer, mine, answer)
    })
}

fn peer_prefix(ip: IpAddr) -> String {
    let any = SocketAddr::new(ip, 0).to_string();
    format!("peer={}", any.strip_suffix('0').unwrap())
}

fn captured_through_proxy(v6: bool, fast_path: bool) {
    let mut node = Node::start(match (v6, fast_path) {
        (false, true) => "c4",
        (true, _) => "c6",
        (false, false) => "cf",
    });
    let pod = Netns::new("cp");
    let server_ns = Netns::new("cs");
    let veth = Veth::new("cp", &pod, &server_ns);
    let (server_ip, pod_ip, listener): (IpAddr, IpAddr, &str) = if v6 {
        (veth.b_v6.into(), veth.a_v6.into(), "[::1]:15001")
    } else {
        (veth.b_v4.into(), veth.a_v4.into(), "127.0.0.1:15001")
    };
    let server = EchoPeerServer::start(&server_ns, SocketAddr::new(server_ip, 0));
    let fp = if fast_path { "on" } else { "off" };
    let out = node.enroll(&pod, &["--fast-path", fp]);
    assert!(out.contains("mode=node") && out.contains(listener), "{out}");
    let _in_cgroup = node.cgroup.enter_process();
    let fast_before = node.counter("fast_path_bytes");

    let (peer, ss_line, answer) = open_and_inspect(&pod, server.addr);
    assert_eq!(
        peer, server.addr,
        "getpeername must show the original destination"
    );
    assert!(
        ss_line.contains(listener),
        "app socket not connected to the proxy listener: {ss_line}"
    );
    assert!(
        answer.starts_with(&peer_prefix(pod_ip)),
        "server saw another source: {answer}"
    );
    assert!(answer.ends_with("bytes=50000"), "{answer}");
    let p = node.pod(&pod);
    assert!(
        p.recent_destinations.contains(&server.addr.to_string()),
        "{p:?}"
    );
    node.agent()
        .wait_for_log(&format!("orig_dst={}", server.addr), Duration::from_secs(5));
    let fast = node.counter("fast_path_bytes") - fast_before;
    if fast_path {
        assert!(fast >= 50_000, "fast path carried only {fast} bytes");
    } else {
        assert_eq!(fast, 0, "fast path used although switched off");
    }

    // Unrouted ClusterIP: captured, reported with its original destination, and the failed
    // upstream (ENETUNREACH inside the pod) ends the client at once.
    let vip: SocketAddr = if v6 { VIP6 } else { VIP }.parse().unwrap();
    let (r, took) = failed_upstream(&pod, vip);
    assert!(took < Duration::from_secs(2), "client waited {took:?}");
    match r {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        Ok(n) => assert_eq!(n, 0),
    }
    let p = node.pod(&pod);
    assert!(p.recent_destinations.contains(&vip.to_string()), "{p:?}");
    assert!(p.upstream_failures >= 1, "{p:?}");
    assert!(node.counter("captured") >= 2);
    assert!(node.counter("orig_dst_answered") >= 2);
}

/// Test 1: an enrolled pod's connection goes through the agent's proxy.
#[test]
fn enrolled_pod_is_captured_v4() {
    captured_through_proxy(false, true);
}

/// Test 1 with the sk_msg fast path switched off for the pod: same result, bytes through TCP.
#[test]
fn enrolled_pod_is_captured_without_fast_path() {
    captured_through_proxy(false, false);
}

/// Test 5: the same over IPv6.
#[test]
fn enrolled_pod_is_captured_v6() {
    captured_through_proxy(true, true);
}

/// Test 2: a netns that is not enrolled, an excluded port and an excluded CIDR are untouched.
#[test]
fn not_enrolled_and_excluded_are_untouched() {
    let node = Node::start("ux");
    let other = Netns::new("uo");
    let pod = Netns::new("up");
    let server_ns = Netns::new("us");
    let veth = Veth::new("ux", &pod, &server_ns);
    let server = EchoPeerServer::start(&server_ns, SocketAddr::new(veth.b_v4.into(), 0));
    let port = server.addr.port().to_string();
    node.enroll(
        &pod,
        &[
            "--exclude-outbound-ports",
            &port,
            "--exclude-outbound-cidrs",
            "10.96.0.0/16",
        ],
    );
    let _in_cgroup = node.cgroup.enter_process();

    let vip: SocketAddr = VIP.parse().unwrap();
    for ns in [&other, &pod] {
        let err =
            ns.run(move || TcpStream::connect_timeout(&vip, Duration::from_secs(2)).unwrap_err());
        assert_eq!(
            err.raw_os_error(),
            Some(libc::ENETUNREACH),
            "{}: {err}",
            ns.name()
        );
    }
    let (peer, ss_line, answer) = open_and_inspect(&pod, server.addr);
    assert_eq!(peer, server.addr);
    assert!(
        !ss_line.contains(":15001"),
        "excluded port captured: {ss_line}"
    );
    assert!(
        answer.starts_with(&peer_prefix(veth.a_v4.into())),
        "{answer}"
    );
    assert_eq!(
        node.pod(&pod).accepted,
        0,
        "the proxy saw an excluded connection"
    );
}

/// Test 3: the proxy's upstream sockets are never captured (no loop), and an app running as
/// uid 1337 in node mode is captured.
#[test]
fn no_loop_and_uid_1337_is_captured() {
    let node = Node::start("nl");
    let pod = Netns::new("np");
    let server_ns = Netns::new("ns");
    let veth = Veth::new("nl", &pod, &server_ns);
    let server = EchoPeerServer::start(&server_ns, SocketAddr::new(veth.b_v4.into(), 0));
    node.enroll(&pod, &[]);
    let _in_cgroup = node.cgroup.enter_process();
    for (i, uid) in [None, Some(1337)].into_iter().enumerate() {
        let x = exchange(&pod, server.addr, 1000, uid);
        assert!(
            x.answer.starts_with(&peer_prefix(veth.a_v4.into())),
            "{x:?}"
        );
        assert!(
            x.local.ip().is_loopback(),
            "uid {uid:?} not captured: {x:?}"
        );
        // Exactly one accepted connection per app connection: the proxy's own upstream socket
        // was not captured again.
        assert_eq!(node.pod(&pod).accepted, i as u64 + 1, "uid {uid:?}");
    }
    assert!(
        node.counter("skip_proxy") >= 2,
        "proxy sockets not recognised by their mark"
    );
}

/// Test 6: unenroll leaves no entry for the cookie; 50 pods enrolled and unenrolled leave the maps
/// as they started; a mode switch starts and stops the listener without a restart.
#[test]
fn unenroll_and_churn_leave_maps_clean() {
    let node = Node::start("ch");
    let before = node.status().kernel_policies;
    let pod = Netns::new("cm");
    let listening = |ns: &Netns| ns.run(|| run_cmd("ss", &["-tlnH"])).contains(":15001");
    node.enroll(&pod, &[]);
    assert!(listening(&pod));
    let p = node.pod(&pod);
    assert!(p.map_entries >= 1, "{p:?}");
    node.enroll(&pod, &["--mode", "sidecar"]);
    assert!(
        !listening(&pod),
        "sidecar mode must not keep the agent's listener"
    );
    assert_eq!(node.pod(&pod).mode, "sidecar");
    node.enroll(&pod, &["--mode", "node"]);
    node.enroll(&pod, &["--mode", "node"]); // idempotent
    assert!(listening(&pod));
    let out = node.unenroll(&pod);
    assert!(out.contains("remaining_entries=0"), "{out}");
    assert!(!listening(&pod));

    let pods: Vec<Netns> = (0..50).map(|_| Netns::new("cz")).collect();
    for p in &pods {
        node.enroll(p, &[]);
    }
    let s = node.status();
    assert_eq!(s.pods.len(), 50);
    assert_eq!(s.kernel_policies.len(), before.len() + 50);
    for p in &pods {
        let out = node.unenroll(p);
        assert!(out.contains("remaining_entries=0"), "{out}");
    }
    let s = node.status();
    assert!(s.pods.is_empty(), "{:?}", s.pods);
    assert_eq!(s.kernel_policies, before);
    let err = sluice_err(&["unenroll", "--netns", pod.name(), "--control", &node.ctl()]);
    assert!(
        err.contains("not enrolled") && err.contains(pod.name()),
        "{err}"
    );
}

/// Test 8 (agent side): a refused request changes nothing, and the agent validates on its own
/// (a raw protocol request bypassing the CLI's checks is refused the same way).
#[test]
fn agent_refuses_bad_requests_without_changes() {
    use std::{io::BufRead, os::unix::net::UnixStream};
    let node = Node::start("br");
    let pod = Netns::new("bp");
    node.enroll(&pod, &[]);
    let before = node.status();
    let err = sluice_err(&[
        "enroll",
        "--netns",
        pod.name(),
        "--mode",
        "turbo",
        "--control",
        &node.ctl(),
    ]);
    assert!(err.contains("\"turbo\""), "{err}");
    let missing = format!("{}-gone", pod.name());
    for line in [
        format!(
            r#"{{"op":"enroll","netns":"{}","mode":"sidecar","exclude_outbound_ports":"80,x"}}"#,
            pod.name()
        ),
        format!(
            r#"{{"op":"enroll","netns":"{}","mode":"warp"}}"#,
            pod.name()
        ),
        format!(r#"{{"op":"enroll","netns":"{missing}"}}"#),
    ] {
        let mut s = UnixStream::connect(node.control.path()).unwrap();
        writeln!(s, "{line}").unwrap();
        let mut answer = String::new();
        std::io::BufReader::new(s).read_line(&mut answer).unwrap();
        assert!(answer.contains(r#""result":"error""#), "{line} -> {answer}");
        let named = ["\\\"x\\\"", "\\\"warp\\\"", missing.as_str()]
            .iter()
            .any(|n| answer.contains(n));
        assert!(named, "{answer}");
    }
    assert_eq!(
        node.status(),
        before,
        "a refused request changed the agent's state"
    );
}

/// The agent: control socket is root-only, SIGTERM shuts it down cleanly (listeners closed,
/// socket removed), and a restarted agent re-adopts the pods it finds in the pinned policy map.
#[test]
fn agent_shutdown_and_restart_keep_pods() {
    use std::os::unix::fs::PermissionsExt;
    require_root();
    let cgroup = Cgroup::new("rs");
    let pins = PinDir::new("rs");
    let pod = Netns::new("rp");
    let server_ns = Netns::new("rv");
    let veth = Veth::new("rs", &pod, &server_ns);
    let server = EchoPeerServer::start(&server_ns, SocketAddr::new(veth.b_v4.into(), 0));
    let listening = |ns: &Netns| ns.run(|| run_cmd("ss", &["-tlnH"])).contains(":15001");

    let (mut first, control) = SluiceProcess::agent(&cgroup, pins.path(), &["--persist"]);
    let mode = std::fs::metadata(control.path())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "control socket must be root-only");
    sluice_ok(&["enroll", "--netns", pod.name(), "--control", &control.arg()]);
    assert!(listening(&pod));
    let st = first
        .terminate(Duration::from_secs(5))
        .expect("agent ignored SIGTERM");
    assert!(st.success(), "agent exit {st}: {}", first.log());
    assert!(first.log().contains("left attached"), "{}", first.log());
    assert!(!control.path().exists(), "control socket left behind");
    assert!(!listening(&pod), "listener left open after shutdown");

    let (mut second, control) = SluiceProcess::agent(&cgroup, pins.path(), &[]);
    assert!(second.log().contains("adopted=1"), "{}", second.log());
    let cookie = pod.cookie();
    let st = status_at(&control.arg());
    let p = st
        .pods
        .iter()
        .find(|p| p.cookie == cookie)
        .unwrap_or_else(|| panic!("{st:?}"));
    assert_eq!(p.mode, "node");
    assert!(!p.listeners.is_empty(), "{p:?}");
    let _in_cgroup = cgroup.enter_process();
    let x = exchange(&pod, server.addr, 10, None);
    assert!(
        x.local.ip().is_loopback(),
        "not captured after restart: {x:?}"
    );
    second.wait_for_log(&format!("orig_dst={}", server.addr), Duration::from_secs(5));
    drop(_in_cgroup);
    sluice_ok(&[
        "unenroll",
        "--netns",
        pod.name(),
        "--control",
        &control.arg(),
    ]);
}

/// eBPF `sidecar` mode: the agent only manages the maps; a `sluice sidecar` process inside the pod
/// (uid 1337, keeping CAP_NET_ADMIN for SO_MARK) owns 15001 and proxies with the same code.
#[test]
fn sidecar_mode_uses_the_sidecar_process() {
    let node = Node::start("sm");
    let pod = Netns::new("sp");
    let server_ns = Netns::new("sv");
    let veth = Veth::new("sm", &pod, &server_ns);
    let server = EchoPeerServer::start(&server_ns, SocketAddr::new(veth.b_v4.into(), 0));
    let out = node.enroll(&pod, &["--mode", "sidecar"]);
    assert!(
        out.contains("mode=sidecar") && out.contains("listener=-"),
        "{out}"
    );
    let mut sidecar = SluiceProcess::sidecar_in(&pod, 1337, Some(&node.cgroup));
    let _in_cgroup = node.cgroup.enter_process();
    let x = exchange(&pod, server.addr, 5000, None);
    assert_eq!(x.peer, server.addr, "{x:?}");
    assert!(x.local.ip().is_loopback(), "not captured: {x:?}");
    assert!(
        x.answer.starts_with(&peer_prefix(veth.a_v4.into())),
        "{x:?}"
    );
    assert!(x.answer.ends_with("bytes=5000"), "{x:?}");
    sidecar.wait_for_log(&format!("orig_dst={}", server.addr), Duration::from_secs(5));
    assert_eq!(
        sidecar.log().matches("accepted").count(),
        1,
        "loop: {}",
        sidecar.log()
    );
    assert_eq!(
        node.pod(&pod).accepted,
        0,
        "the agent must not proxy a sidecar-mode pod"
    );
}

/// `--fail-open`: a sidecar-mode pod whose sidecar is not running yet connects direct instead of
/// failing; without it the connection is refused (captured, nobody on 15001).
#[test]
fn fail_open_goes_direct_while_no_proxy_listens() {
    let node = Node::start("fo");
    let pod = Netns::new("fp");
    let server_ns = Netns::new("fs");
    let veth = Veth::new("fo", &pod, &server_ns);
    let server = EchoPeerServer::start(&server_ns, SocketAddr::new(veth.b_v4.into(), 0));
    let _in_cgroup = node.cgroup.enter_process();
    node.enroll(&pod, &["--mode", "sidecar"]);
    let dst = server.addr;
    let err =
        pod.run(move || TcpStream::connect_timeout(&dst, Duration::from_secs(2)).unwrap_err());
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    node.enroll(&pod, &["--mode", "sidecar", "--fail-open"]);
    let x = exchange(&pod, server.addr, 10, None);
    assert_eq!(x.local.ip(), IpAddr::from(veth.a_v4), "not direct: {x:?}");
    assert!(
        x.answer.starts_with(&peer_prefix(veth.a_v4.into())),
        "{x:?}"
    );
    assert!(node.counter("skip_no_listener") >= 1);
}
