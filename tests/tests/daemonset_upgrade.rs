//! Issue 11 test 2: a rolling update of the DaemonSet pod run with podman as deploy/sluice.yaml
//! says (tests/src/podrun), under 100 long-lived streams and 200 new connections/s through
//! capture: the surge pod starts beside the old one (maxSurge 1, maxUnavailable 0), its agent
//! takes over with `--upgrade-from-if-present` over the host-path control socket, the old pod
//! is stopped as the kubelet stops it after minReadySeconds (SIGTERM, SIGKILL after the grace
//! period) and its install-cni keeps the CNI entry. Then uninstall: the last pod stopped as
//! when the DaemonSet is deleted removes the CNI entry and binary, and its agent
//! (`agent-on-exit: uninstall`, README "Uninstall") detaches every program: no pin and no link
//! is left, and every pod (fail-open or not) works direct.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use sluice_tests::{
    agent_node::status_at,
    inbound::sk_lookup_links,
    podrun::{
        chain::{pod_ip, primary, NodeCni},
        node::{cni_args_in, TestNode},
        probe,
    },
    require_root, run_cmd,
    sluice_cli::sluice_ok,
    stream_load::{open_streams, spawn_load, start_server, PeerCount},
    until, Netns,
};

const STREAMS: usize = 100;
const RATE_PER_SEC: u64 = 200;
/// How long the streams keep exchanging data after the old pod's SIGTERM (on the old agent,
/// which keeps draining them).
const STREAMS_AFTER_SIGTERM: Duration = Duration::from_secs(5);

fn has_entry(node: &TestNode) -> bool {
    let (_, list) = primary(&node.sandbox.cni_conf());
    list["plugins"]
        .as_array()
        .is_some_and(|p| p.iter().any(|p| p["type"] == "sluice-cni"))
}

/// One connection from `from` to `dst`: Ok(echo) or the error.
fn try_echo(from: &Netns, dst: SocketAddr) -> Result<(), String> {
    from.run(move || {
        use std::io::{Read as _, Write as _};
        let mut s = std::net::TcpStream::connect_timeout(&dst, Duration::from_secs(2))
            .map_err(|e| format!("connect {dst}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok();
        s.write_all(b"ping").map_err(|e| format!("write: {e}"))?;
        s.shutdown(std::net::Shutdown::Write).ok();
        let mut out = Vec::new();
        s.read_to_end(&mut out).map_err(|e| format!("read: {e}"))?;
        (out == b"ping")
            .then_some(())
            .ok_or(format!("answer {out:?}"))
    })
}

#[test]
fn daemonset_rolling_update_drops_nothing_and_uninstall_leaves_nothing() {
    require_root();
    let test_start = Instant::now();
    let node = TestNode::new(&["client", "server"]);
    let spec = node.manifest.pod.clone();
    assert_eq!(
        (spec.max_surge, spec.max_unavailable),
        (1, 0),
        "the runner applies a surge update only"
    );
    let old = node.start_pod();
    old.wait_ready(&node.manifest, Duration::from_secs(90));
    until(
        "install-cni patches the conflist",
        || has_entry(&node),
        |h| *h,
    );

    // Pods through the patched chain: client and server captured, `infra` in an excluded
    // namespace (kube-system) not captured.
    let cni = NodeCni {
        sandbox: &node.sandbox,
    };
    let (client, server, infra) = (Netns::new("duc"), Netns::new("dus"), Netns::new("dui"));
    let mut ips = Vec::new();
    for (ns, namespace, name) in [
        (&client, "shop", "client"),
        (&server, "shop", "server"),
        (&infra, "kube-system", "infra"),
    ] {
        let r = cni.add(ns, &format!("ctr-{name}"), &cni_args_in(namespace, name));
        assert!(
            r.ok,
            "ADD {name}: {} {:?}\n{}",
            r.result,
            r.stderr,
            old.logs()
        );
        ips.push(pod_ip(&r.result));
    }
    let ctl = node.control();
    assert_eq!(
        status_at(&ctl).pods.len(),
        2,
        "client and server enrolled, infra excluded"
    );
    // dsts[0]: infra (outbound capture only), dsts[1]: server pod (captured inbound too).
    let dsts = [
        SocketAddr::new(IpAddr::V4(ips[2]), 9000),
        SocketAddr::new(IpAddr::V4(ips[1]), 9000),
    ];
    let server_stop = Arc::new(AtomicBool::new(false));
    let (peers, peers_in) = (Arc::<PeerCount>::default(), Arc::<PeerCount>::default());
    let srv = start_server(&infra, dsts[0], server_stop.clone(), peers.clone());
    let srv_in = start_server(&server, dsts[1], server_stop.clone(), peers_in.clone());
    let in_cgroup = node.sandbox.cgroup.enter_process();

    let stop_streams = Arc::new(AtomicBool::new(false));
    let upgraded = Arc::new(AtomicBool::new(false));
    let streams = open_streams(
        &client,
        dsts,
        STREAMS,
        stop_streams.clone(),
        upgraded.clone(),
        Duration::from_secs(20),
    );
    let stop_load = Arc::new(AtomicBool::new(false));
    let loader = spawn_load(&client, dsts, stop_load.clone(), RATE_PER_SEC);
    // The load generator stops by itself if the test dies before it says so.
    let watchdog = {
        let stop = stop_load.clone();
        std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(240);
            while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(100));
            }
            stop.store(true, Ordering::Relaxed);
        })
    };
    std::thread::sleep(Duration::from_secs(2));

    // Rolling update, maxSurge 1: the new pod beside the old one.
    let up_start = Instant::now();
    let new = node.start_pod();
    let agent_new = new.container("agent");
    until(
        "the new agent takes over",
        || agent_new.logs().contains("took over from the old agent"),
        |t| *t,
    );
    let took_over = up_start.elapsed();
    upgraded.store(true, Ordering::Relaxed);
    new.wait_ready(&node.manifest, Duration::from_secs(90));
    let ready_at = up_start.elapsed();
    assert!(has_entry(&node), "the CNI entry stays during the update");
    for c in &spec.containers {
        if let Some(p) = &c.liveness {
            assert!(probe::passes(p), "new pod {} liveness", c.name);
        }
    }
    // The controller deletes the old pod once the new one has been ready for minReadySeconds;
    // the streams, opened before the takeover, still run on the old agent and must outlive its
    // SIGTERM (the old agent drains on, bounded by the grace period): they are closed only
    // STREAMS_AFTER_SIGTERM later, while `old.stop` waits for the old agent to exit.
    let since_ready = up_start.elapsed() - ready_at;
    std::thread::sleep(spec.min_ready.saturating_sub(since_ready));
    let stopper = {
        let stop_streams = stop_streams.clone();
        std::thread::spawn(move || {
            std::thread::sleep(STREAMS_AFTER_SIGTERM);
            stop_streams.store(true, Ordering::Relaxed);
        })
    };
    let stop_start = Instant::now();
    let old_codes = old.stop(spec.grace);
    stopper.join().expect("stopper");
    let reports = streams.join().expect("streams thread");
    let old_stopped_in = stop_start.elapsed();
    assert!(
        has_entry(&node),
        "install-cni of the old pod must keep the entry during an update"
    );
    assert!(
        node.sandbox.cni_bin().join("sluice-cni").exists(),
        "binary kept during the update"
    );
    std::thread::sleep(Duration::from_secs(3)); // new connections with only the new pod left
    stop_load.store(true, Ordering::Relaxed);
    let load_report = loader.join().expect("load thread");
    watchdog.join().expect("watchdog");

    let dropped: Vec<&String> = reports.iter().filter_map(|r| r.as_ref().err()).collect();
    let ok = reports.iter().filter(|r| r.is_ok()).count();
    let min_after = reports
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|r| r.rounds_after_upgrade)
        .min()
        .unwrap_or(0);
    println!(
        "daemonset upgrade: new agent took over {took_over:?} after its pod started, ready at {ready_at:?}; \
         streams {ok} ok / {} dropped (>= {min_after} echo rounds each after the takeover); \
         new connections {} attempted, {} ok ({} inbound captured), {} refused/failed in {:?} ({:.0}/s); \
         old pod stopped in {old_stopped_in:?}: {old_codes:?}",
        dropped.len(),
        load_report.attempted,
        load_report.ok,
        load_report.inbound_ok,
        load_report.failed,
        load_report.elapsed,
        load_report.attempted as f64 / load_report.elapsed.as_secs_f64()
    );
    assert!(dropped.is_empty(), "dropped streams: {dropped:?}");
    assert_eq!(ok, STREAMS);
    assert!(
        min_after > 0,
        "a stream made no progress after the takeover"
    );
    assert_eq!(
        load_report.failed, 0,
        "refused/failed: {:?}",
        load_report.first_errors
    );
    assert!(
        load_report.attempted as f64 / load_report.elapsed.as_secs_f64()
            > RATE_PER_SEC as f64 * 0.8,
        "load generator too slow: {load_report:?}"
    );
    let (total_in, via) = (
        peers_in.total.load(Ordering::Relaxed),
        peers_in.passthrough.load(Ordering::Relaxed),
    );
    assert_eq!(
        via, total_in,
        "connections to the server pod bypassed inbound capture"
    );
    assert!(
        old_codes.iter().all(|(_, c)| *c == 0),
        "old pod exit: {old_codes:?}\n{}",
        old.logs()
    );
    assert!(
        status_at(&ctl).pods.len() == 2,
        "the new agent serves both pods"
    );

    // Uninstall: the client becomes fail-open, then the last pod stops (DaemonSet deleted).
    sluice_ok(&[
        "enroll",
        "--netns",
        &client.path().display().to_string(),
        "--mode",
        "node",
        "--fail-open",
        "--control",
        &ctl,
    ]);
    assert!(
        try_echo(&client, dsts[0]).is_ok(),
        "captured before the uninstall"
    );
    let codes = new.stop(spec.grace);
    assert!(
        codes.iter().all(|(_, c)| *c == 0),
        "last pod exit: {codes:?}\n{}",
        new.logs()
    );
    assert!(
        !has_entry(&node),
        "uninstall must remove the sluice-cni entry"
    );
    let (_, list) = primary(&node.sandbox.cni_conf());
    assert_eq!(
        list["plugins"].as_array().map(Vec::len),
        Some(1),
        "only the primary's plugin is left: {list}"
    );
    assert!(
        !node.sandbox.cni_bin().join("sluice-cni").exists(),
        "uninstall must remove the binary"
    );
    // `agent-on-exit: uninstall`: the agent detached everything and removed its pins.
    assert!(
        node.sandbox.bpffs.entries().is_empty(),
        "pins left: {:?}",
        node.sandbox.bpffs.entries()
    );
    let cg = node.sandbox.cgroup.path().display().to_string();
    until(
        "no program attached to the cgroup",
        || run_cmd("bpftool", &["cgroup", "show", &cg]),
        |s| s.trim().is_empty(),
    );
    for ns in [&client, &server] {
        assert!(
            sk_lookup_links(ns).is_empty(),
            "sk_lookup link left in {}",
            ns.name()
        );
    }
    // The fail-open client and the fail-closed server pod both work direct.
    for (ns, name) in [(&client, "client"), (&server, "server")] {
        assert!(
            try_echo(ns, dsts[0]).is_ok(),
            "{name} works direct after the uninstall"
        );
    }
    assert!(
        try_echo(&server, SocketAddr::new(IpAddr::V4(ips[2]), 9000)).is_ok(),
        "the fail-closed server pod is reachable direct after the uninstall"
    );
    drop(in_cgroup);
    server_stop.store(true, Ordering::Relaxed);
    srv.join().expect("server");
    srv_in.join().expect("server");
    for (ns, namespace, name) in [
        (&client, "shop", "client"),
        (&server, "shop", "server"),
        (&infra, "kube-system", "infra"),
    ] {
        cni.del(
            Some(ns),
            &format!("ctr-{name}"),
            &cni_args_in(namespace, name),
        );
    }
    println!(
        "daemonset upgrade + uninstall: {:?} in all",
        test_start.elapsed()
    );
}
