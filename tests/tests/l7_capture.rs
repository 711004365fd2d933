//! The L7 engine behind the node agent's capture listeners (`sluice agent --config`): a curl in
//! an enrolled pod to a ClusterIP is routed by the `virtualOutbound` listener's HCM (host +
//! prefix -> STATIC cluster, path rewrite, added header), and the upstream connection is opened
//! from inside the pod (source IP = the pod's).

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use sluice_node::agent::protocol::PodStatus;
use sluice_tests::{
    agent_node::Node, l7_pods::L7Pods, ns_server::NsServer, sluice_cli::SluiceProcess, Netns,
};

/// The pod's status once its connections have ended and their bytes were reported (bounded).
fn wait_for_closed_bytes(node: &Node, pod: &Netns) -> PodStatus {
    for _ in 0..100 {
        let st = node.pod(pod);
        if st.active == 0 && st.bytes_in > 0 {
            return st;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("connection bytes never reported: {:?}", node.pod(pod));
}

#[test]
fn node_mode_outbound_is_routed_by_the_l7_engine() {
    let p = L7Pods::new("l7");
    let node = Node::start_with("l7", &["--config", &p.cfg]);
    node.enroll(&p.client, &[]);

    // Host svc.test + /api: routed to the STATIC cluster, path rewritten, header added.
    let body = p.get_svc(&node);
    assert!(body.contains("line=GET /v2/api/items HTTP/1.1"), "{body}");
    assert!(body.contains("routed=sluice-l7"), "{body}");
    let client_ip: IpAddr = p.veth.a_v4.into();
    assert!(
        body.contains(&format!("peer={client_ip}:")),
        "the upstream must come from the client pod: {body}"
    );
    let pod = node.pod(&p.client);
    assert!(
        pod.recent_destinations
            .contains(&"10.96.0.10:80".to_string()),
        "{pod:?}"
    );
    // The pod is served by the L7 engine, and `sluice status` counts it like an L4 pod: one
    // connection, closed, with the request's and the response's bytes (curl closed it).
    let pod = wait_for_closed_bytes(&node, &p.client);
    assert_eq!(
        (pod.accepted, pod.active, pod.upstream_failures),
        (1, 0, 0),
        "{pod:?}"
    );
    assert!(pod.bytes_out > 60, "request bytes app -> upstream: {pod:?}");
    assert!(
        pod.bytes_in > 100,
        "response bytes upstream -> app: {pod:?}"
    );

    // Another host falls to the ORIGINAL_DST passthrough: straight to the server pod, not rewritten.
    let url = format!("http://{}/api/items", p.app.addr);
    let out = p.curl(&node, &[&url]);
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(body.contains("line=GET /api/items HTTP/1.1"), "{body}");
    assert!(body.contains("routed=\n"), "{body}");
    assert!(body.contains(&format!("peer={client_ip}:")), "{body}");
}

/// `sluice sidecar --config` in a sidecar-mode client pod routes outbound with `virtualOutbound`;
/// the server pod (node mode, `sluice agent --config`) serves the connection with
/// `virtualInbound`, whose upstream socket is bound to 127.0.0.6 inside the server pod.
#[test]
fn sidecar_outbound_and_node_inbound_through_the_l7_engine() {
    let p = L7Pods::new("l8");
    let node = Node::start_with("l8", &["--config", &p.cfg]);
    node.enroll(&p.server, &[]);
    node.enroll(&p.client, &["--mode", "sidecar"]);
    let ctl = node.ctl();
    let mut sidecar = SluiceProcess::sidecar_with(
        &p.client,
        1337,
        Some(&node.cgroup),
        &["--config", &p.cfg, "--agent-control", &ctl],
    );
    sidecar.wait_for_log("inbound listeners registered", Duration::from_secs(5));

    let body = p.get_svc(&node);
    assert!(body.contains("line=GET /v2/api/items HTTP/1.1"), "{body}");
    assert!(
        body.contains("routed=sluice-l7"),
        "outbound L7 (sidecar): {body}"
    );
    assert!(
        body.contains("inbound=sluice-in"),
        "inbound L7 (agent): {body}"
    );
    assert!(
        body.contains("peer=127.0.0.6:"),
        "inbound upstream source: {body}"
    );
    assert!(
        sidecar.log().contains("orig_dst=10.96.0.10:80"),
        "{}",
        sidecar.log()
    );
    assert_eq!(node.pod(&p.server).inbound_accepted, 1);
    assert_eq!(
        node.pod(&p.client).accepted,
        0,
        "the agent must not proxy a sidecar pod"
    );
}

/// Graceful upgrade with `--config`: the new agent serves the handed-over 15001 and 15006
/// sockets of node-mode pods with the L7 engine, exactly as the old one did (outbound routed by
/// `virtualOutbound`, inbound by `virtualInbound` with its upstream from 127.0.0.6).
#[test]
fn node_mode_l7_is_served_by_the_new_agent_after_an_upgrade() {
    let p = L7Pods::new("l9");
    let mut node = Node::start_with("l9", &["--config", &p.cfg]);
    node.enroll(&p.server, &[]);
    node.enroll(&p.client, &[]);
    let request = |node: &Node| {
        let body = p.get_svc(node);
        assert!(body.contains("line=GET /v2/api/items HTTP/1.1"), "{body}");
        assert!(body.contains("routed=sluice-l7"), "outbound L7: {body}");
        assert!(body.contains("inbound=sluice-in"), "inbound L7: {body}");
        assert!(body.contains("peer=127.0.0.6:"), "inbound upstream: {body}");
    };
    request(&node);
    assert_eq!(node.pod(&p.server).inbound_accepted, 1);

    node.upgrade(Duration::from_secs(10));
    assert!(
        node.agent_log().contains("took over from the old agent"),
        "{}",
        node.agent_log()
    );
    request(&node);
    // Counted by the new agent: its adopted 15006 socket served the request.
    let s = node.pod(&p.server);
    assert_eq!(s.inbound_accepted, 1, "{s:?}");
    assert!(s.listeners.contains(&"[::]:15006".to_string()), "{s:?}");
    assert_eq!(node.pod(&p.client).accepted, 1);
}

/// Protocol detection waits 100 ms for a captured client's first bytes. A client that is only
/// slow to start (a busy node can hold its first write back that long: the soak's h2load once
/// lost a whole run this way) must still get its HTTP chain, not be sent to the passthrough as
/// opaque TCP: its late request is routed like any other.
#[test]
fn a_client_slow_to_send_its_first_bytes_is_still_routed_as_http() {
    let p = L7Pods::new("ls");
    let node = Node::start_with("ls", &["--config", &p.cfg]);
    node.enroll(&p.client, &[]);
    let _in = node.cgroup.enter_process();
    // 10.96.0.10 has no host behind it (the passthrough connect fails at once); the app's own
    // address has one that accepts and stays silent (the passthrough connect succeeds, the
    // client speaks first): both late requests are routed by the HCM.
    for dst in ["10.96.0.10:80".parse().expect("addr"), p.app.addr] {
        let answer = p.client.run(move || {
            let mut s = TcpStream::connect_timeout(&dst, Duration::from_secs(5)).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(5))).ok();
            std::thread::sleep(Duration::from_millis(400));
            s.write_all(b"GET /api/items HTTP/1.1\r\nHost: svc.test\r\nConnection: close\r\n\r\n")
                .expect("send");
            let mut answer = String::new();
            let _ = s.read_to_string(&mut answer);
            answer
        });
        assert!(answer.starts_with("HTTP/1.1 200"), "to {dst}: {answer}");
        assert!(
            answer.contains("line=GET /v2/api/items HTTP/1.1"),
            "to {dst}: {answer}"
        );
        assert!(answer.contains("routed=sluice-l7"), "to {dst}: {answer}");
    }
}

/// A server-speaks-first protocol (SMTP, MySQL, ...) on a port the L7 engine serves: the client
/// sends nothing, so after the detection timeout the connection goes to the app at its original
/// destination as opaque TCP (Envoy's `listener_filters_timeout` with
/// `continue_on_listener_filters_timeout`), the app's greeting reaches the client, and the
/// exchange then runs as plain TCP.
#[test]
fn a_silent_client_gets_the_server_first_greeting_as_tcp() {
    let p = L7Pods::new("lg");
    let node = Node::start_with("lg", &["--config", &p.cfg]);
    node.enroll(&p.client, &[]);
    let greeter = NsServer::start(
        &p.server,
        SocketAddr::new(p.veth.b_v4.into(), 0),
        |mut s, _| {
            let _ = s.write_all(b"220 greeter ready\r\n");
            let mut b = [0u8; 64];
            if let Ok(n) = s.read(&mut b) {
                let _ = s.write_all(&b[..n]);
            }
        },
    );
    let dst = greeter.addr;
    let _in = node.cgroup.enter_process();
    let (greeting, took, echo) = p.client.run(move || {
        let t = Instant::now();
        let mut s = TcpStream::connect_timeout(&dst, Duration::from_secs(5)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).ok();
        let mut b = [0u8; 64];
        let n = s.read(&mut b).expect("the greeting");
        let greeting = String::from_utf8_lossy(&b[..n]).into_owned();
        let took = t.elapsed();
        s.write_all(b"NOOP\r\n").expect("send");
        let n = s.read(&mut b).expect("the echo");
        (
            greeting,
            took,
            String::from_utf8_lossy(&b[..n]).into_owned(),
        )
    });
    assert_eq!(greeting, "220 greeter ready\r\n");
    assert!(
        took >= Duration::from_millis(100) && took < Duration::from_secs(2),
        "the greeting comes after the 100 ms detection timeout: {took:?}"
    );
    assert_eq!(echo, "NOOP\r\n", "then plain TCP both ways");
    let pod = node.pod(&p.client);
    assert_eq!((pod.accepted, pod.upstream_failures), (1, 0), "{pod:?}");
}

/// `sluice enroll --engine l4` on an agent with `--config`: that pod gets the L4 passthrough
/// (its connection to the service VIP goes to the VIP itself, which nothing answers), a pod
/// enrolled without it the L7 engine; re-enrolling switches the engine live, and an upgraded
/// agent serves each pod with the engine it had (the choice is kept in the kernel policy).
#[test]
fn engine_l4_pods_get_the_passthrough_on_an_agent_with_an_l7_config() {
    let p = L7Pods::new("le");
    let mut node = Node::start_with("le", &["--config", &p.cfg]);
    let svc = [
        "-sS",
        "-m",
        "3",
        "-H",
        "Host: svc.test",
        "http://10.96.0.10/api/items",
    ];
    let l4 = |node: &Node| {
        let out = p.curl(node, &svc);
        assert!(
            !out.status.success(),
            "an l4 pod's request to the VIP must not be routed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(node.pod(&p.client).engine.as_deref(), Some("l4"));
    };
    let l7 = |node: &Node| {
        assert!(p.get_svc(node).contains("routed=sluice-l7"));
        assert_eq!(node.pod(&p.client).engine.as_deref(), Some("l7"));
    };
    let line = node.enroll(&p.client, &["--engine", "l4"]);
    assert!(line.contains("engine=l4"), "{line}");
    l4(&node);
    node.enroll(&p.client, &["--engine", "l7"]);
    l7(&node);
    node.enroll(&p.client, &["--engine", "l4"]);
    l4(&node);
    node.upgrade(Duration::from_secs(10));
    l4(&node);
    // The same for a pod enrolled with the default engine.
    node.enroll(&p.client, &[]);
    l7(&node);
    node.upgrade(Duration::from_secs(10));
    l7(&node);
    let bad = sluice_tests::sluice_cli::sluice_err(&[
        "enroll",
        "--netns",
        p.client.name(),
        "--control",
        &node.ctl(),
        "--engine",
        "l9",
    ]);
    assert!(bad.contains("--engine: \"l9\" is not l4 or l7"), "{bad}");
}
