//! Inbound capture in node mode, against the real `sluice agent`: a client pod calls a server
//! pod's IP over a veth; sk_lookup hands the connection to the agent's 15006 listener inside the
//! server pod, which forwards it to the app from 127.0.0.6 / ::6.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use sluice_tests::{
    agent_node::Node,
    sluice_cli::{exchange, EchoPeerServer},
    Netns, Veth,
};

/// `peer=<ip>:` prefix of an [`EchoPeerServer`] answer for a client at `ip`.
fn from(ip: IpAddr) -> String {
    format!(
        "peer={}:",
        SocketAddr::new(ip, 0)
            .to_string()
            .rsplit_once(':')
            .unwrap()
            .0
    )
}

#[test]
fn node_mode_inbound_capture_end_to_end() {
    let mut node = Node::start("ia");
    let client = Netns::new("iac");
    let server = Netns::new("ias");
    let veth = Veth::new("ia", &client, &server);
    let (c4, s4, c6, s6): (IpAddr, IpAddr, IpAddr, IpAddr) = (
        veth.a_v4.into(),
        veth.b_v4.into(),
        veth.a_v6.into(),
        veth.b_v6.into(),
    );
    let app = EchoPeerServer::start(&server, SocketAddr::new(s4, 0));
    let app6 = EchoPeerServer::start(&server, SocketAddr::new(s6, 0));
    let health = EchoPeerServer::start(&server, SocketAddr::new(s4, 15021));
    let custom = EchoPeerServer::start(&server, SocketAddr::new(s4, 9090));

    // Not enrolled yet: untouched, the app sees the client.
    let ex = exchange(&client, app.addr, 1000, None);
    assert!(ex.answer.starts_with(&from(c4)), "{}", ex.answer);

    let out = node.enroll(&server, &["--exclude-inbound-ports", "9090"]);
    assert!(out.contains("0.0.0.0:15006"), "{out}");

    // Captured: the app sees the proxy's passthrough source, v4 and v6.
    let ex = exchange(&client, app.addr, 100_000, None);
    assert_eq!(ex.peer, app.addr, "the client sees the address it dialed");
    assert!(
        ex.answer.starts_with("peer=127.0.0.6:") && ex.answer.ends_with("bytes=100000"),
        "{}",
        ex.answer
    );
    let ex = exchange(&client, app6.addr, 1000, None);
    assert!(ex.answer.starts_with("peer=[::6]:"), "{}", ex.answer);
    // The proxy saw the right original destination.
    let pod = node.pod(&server);
    for a in [app.addr, app6.addr] {
        assert!(
            pod.inbound_recent_destinations.contains(&a.to_string()),
            "{a} not in {:?}",
            pod.inbound_recent_destinations
        );
    }
    assert_eq!(pod.inbound_accepted, 2, "{pod:?}");
    // The log is read by a thread from the agent's stderr: wait for it, do not race it.
    node.wait_for_log(&format!("listener=\"inbound\" orig_dst={}", app.addr));

    // Excluded ports go straight to the app: Istio's 15021 and the pod's own 9090.
    let skip_before = node.counter("inbound_skip_port");
    for s in [&health, &custom] {
        let ex = exchange(&client, s.addr, 10, None);
        assert!(
            ex.answer.starts_with(&from(c4)),
            "{}: {}",
            s.addr,
            ex.answer
        );
    }
    assert!(node.counter("inbound_skip_port") >= skip_before + 2);
    assert!(node.counter("inbound_captured") >= 2);

    // Dialing the inbound listener's own port is not steered (sk_lookup skips 15006); the
    // agent's 0.0.0.0:15006 gets it and resets it instead of proxying to itself.
    let own = SocketAddr::new(s4, 15006);
    let r = client.run(move || {
        let mut s = std::net::TcpStream::connect_timeout(&own, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut b = [0u8; 16];
        std::io::Read::read(&mut s, &mut b)
    });
    assert!(
        matches!(&r, Ok(0))
            || r.as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "{r:?}"
    );
    node.wait_for_log("rejecting connection addressed to the listener itself");
    assert_eq!(node.pod(&server).inbound_accepted, 2, "no loop");

    // Both pods enrolled: the client's outbound proxy and the server's inbound proxy.
    node.enroll(&client, &[]);
    let _in_cgroup = node.cgroup.enter_process();
    let ex = exchange(&client, app.addr, 5000, None);
    assert!(ex.answer.starts_with("peer=127.0.0.6:"), "{}", ex.answer);
    let cpod = node.pod(&client);
    assert!(
        cpod.recent_destinations.contains(&app.addr.to_string()) && cpod.accepted == 1,
        "client outbound did not capture: {cpod:?}"
    );
    assert_eq!(node.pod(&server).inbound_accepted, 3);
    // Outbound the other way too (server -> client app), captured by the server's 15001.
    let capp = EchoPeerServer::start(&client, SocketAddr::new(c6, 0));
    let ex = exchange(&server, capp.addr, 10, None);
    assert!(ex.answer.starts_with("peer=[::6]:"), "{}", ex.answer);
    assert_eq!(node.pod(&server).accepted, 1);

    // Unenrolled server: its inbound is direct again (the client's proxy connects from c4).
    node.unenroll(&server);
    let ex = exchange(&client, app.addr, 10, None);
    assert!(ex.answer.starts_with(&from(c4)), "{}", ex.answer);
}
