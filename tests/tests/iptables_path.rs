//! The iptables baseline: istio-init's rules (`sluice iptables install`) plus `sluice sidecar`
//! running as uid 1337 — the same proxy code as the eBPF path, SO_ORIGINAL_DST from conntrack.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use sluice_tests::{
    require_root, run_cmd,
    sluice_cli::{exchange, failed_upstream, sluice_ok, EchoPeerServer, SluiceProcess},
    Netns, Veth,
};

fn nat_rules(ns: &Netns, save: &str) -> String {
    ns.run({
        let save = save.to_string();
        move || run_cmd(&save, &["-t", "nat"])
    })
}

#[test]
fn iptables_redirect_through_sidecar() {
    require_root();
    let pod = Netns::new("ipt");
    let server_ns = Netns::new("ips");
    let veth = Veth::new("ip", &pod, &server_ns);
    let server4 = EchoPeerServer::start(&server_ns, SocketAddr::from((veth.b_v4, 0)));
    let server6 = EchoPeerServer::start(&server_ns, SocketAddr::from((veth.b_v6, 0)));

    sluice_ok(&["iptables", "install", "--netns", pod.name()]);
    let v4 = nat_rules(&pod, "iptables-save");
    for rule in [
        "-A OUTPUT -p tcp -j ISTIO_OUTPUT",
        "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
        "-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN",
    ] {
        assert!(v4.contains(rule), "missing {rule:?} in:\n{v4}");
    }
    let v6 = nat_rules(&pod, "ip6tables-save");
    assert!(v6.contains("-s ::6/128 -o lo -j RETURN"), "{v6}");
    // Installing twice is refused with the netns and the command named.
    let out = sluice_tests::sluice_cli::sluice(&["iptables", "install", "--netns", pod.name()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(pod.name()) && err.contains("iptables-restore"),
        "{err}"
    );

    let mut sidecar = SluiceProcess::sidecar(&pod, 1337);
    let status = std::fs::read_to_string(format!("/proc/{}/status", sidecar.pid())).unwrap();
    assert!(status.contains("Uid:\t1337\t1337\t1337\t1337"), "{status}");

    for (server, client_ip) in [
        (&server4, SocketAddr::from((veth.a_v4, 0)).ip()),
        (&server6, SocketAddr::from((veth.a_v6, 0)).ip()),
    ] {
        let x = exchange(&pod, server.addr, 100_000, None);
        // The app sees the server's address; the server sees the pod's address.
        assert_eq!(x.peer, server.addr, "{x:?}");
        let any_port = SocketAddr::new(client_ip, 0).to_string();
        let prefix = format!("peer={}", any_port.strip_suffix('0').unwrap());
        assert!(
            x.answer.starts_with(&prefix),
            "server saw another source: {x:?}"
        );
        assert!(
            x.answer.ends_with("bytes=100000"),
            "half-close lost data: {x:?}"
        );
        sidecar.wait_for_log(&format!("orig_dst={}", server.addr), Duration::from_secs(5));
    }

    // Inbound: a peer calls an app in the pod; PREROUTING redirects to 15006 and the sidecar
    // delivers to the app's original address from 127.0.0.6 (::6), like Envoy's inbound passthrough.
    for app_ip in [IpAddr::from(veth.a_v4), IpAddr::from(veth.a_v6)] {
        let app = EchoPeerServer::start(&pod, SocketAddr::new(app_ip, 0));
        let x = exchange(&server_ns, app.addr, 2000, None);
        let src = if app_ip.is_ipv4() {
            "peer=127.0.0.6:"
        } else {
            "peer=[::6]:"
        };
        assert!(
            x.answer.starts_with(src),
            "inbound not passed through the sidecar: {x:?}"
        );
        assert!(x.answer.ends_with("bytes=2000"), "{x:?}");
        sidecar.wait_for_log(&format!("orig_dst={}", app.addr), Duration::from_secs(5));
    }

    // An app running as uid 1337 is NOT captured by istio-init's rules (that is the iptables
    // path's known escape hatch; the eBPF node mode closes it).
    let before = sidecar.log().matches("accepted").count();
    let x = exchange(&pod, server4.addr, 10, Some(1337));
    assert!(x.answer.ends_with("bytes=10"), "{x:?}");
    assert_eq!(
        sidecar.log().matches("accepted").count(),
        before,
        "uid 1337 was captured"
    );

    // Upstream refuses (closed port): the client is ended promptly, not left hanging.
    let closed = SocketAddr::from((veth.b_v4, 1));
    let (r, took) = failed_upstream(&pod, closed);
    assert!(took < Duration::from_secs(2), "client waited {took:?}");
    match r {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        Ok(n) => assert_eq!(n, 0, "got data from a refused upstream"),
    }
    sidecar.wait_for_log(
        &format!("upstream {closed}: connect"),
        Duration::from_secs(5),
    );

    drop(sidecar);
    sluice_ok(&["iptables", "remove", "--netns", pod.name()]);
    for save in ["iptables-save", "ip6tables-save"] {
        let left = nat_rules(&pod, save);
        assert!(!left.contains("ISTIO"), "{save} after remove:\n{left}");
    }
    // Removal is idempotent.
    sluice_ok(&["iptables", "remove", "--netns", pod.name()]);
}
