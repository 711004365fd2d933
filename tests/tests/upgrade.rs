//! Graceful agent upgrade under load: `sluice agent --upgrade-from SOCK` takes over the pods'
//! listening sockets (15001 and 15006, v4 and v6, over SCM_RIGHTS), links and control socket
//! from a running agent while 100 long-lived streaming connections and a steady 500 new
//! connections/s flow through the proxy. Half of them go to a server in an enrolled node-mode
//! pod, so they are captured twice: outbound in the client pod and inbound (sk_lookup, 15006)
//! in the server pod. No established connection may drop and no new one may be refused; the
//! old agent drains its outbound and inbound connections and exits by itself.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use sluice_node::agent::protocol::StatusReport;
use sluice_tests::{
    datapath::LoadSite,
    inbound::{send, sk_lookup_links, sk_lookup_links_gone, ProxyPod},
    require_root,
    sluice_cli::{sluice_ok, SluiceProcess},
    stream_load::{one_request, open_streams, spawn_load, start_server, PeerCount, StreamReport},
    Cgroup, Netns, PinDir, Veth,
};

const STREAMS: usize = 100;
const RATE_PER_SEC: u64 = 500;

fn status(control: &str) -> StatusReport {
    let out = sluice_ok(&["status", "--json", "--control", control]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("status JSON {out:?}: {e}"))
}

#[test]
fn upgrade_under_load_drops_and_refuses_nothing() {
    require_root();
    let test_start = Instant::now();
    let cgroup = Cgroup::new("up");
    let pins = PinDir::new("up");
    let (mut old, control) =
        SluiceProcess::agent(&cgroup, pins.path(), &["--drain-timeout", "20s"]);
    let ctl = control.arg();
    let pod = Netns::new("upp");
    let server_ns = Netns::new("ups");
    let veth = Veth::new("up", &pod, &server_ns);
    let dst = SocketAddr::new(veth.b_v4.into(), 9000);
    // A server pod, enrolled too: connections to it are captured inbound by its 15006.
    let server_pod = Netns::new("upi");
    let veth_in = Veth::new("upi", &pod, &server_pod);
    let dst_in = SocketAddr::new(veth_in.b_v4.into(), 9000);
    let dsts = [dst, dst_in];
    let server_stop = Arc::new(AtomicBool::new(false));
    let (peers, peers_in) = (Arc::<PeerCount>::default(), Arc::<PeerCount>::default());
    let server = start_server(&server_ns, dst, server_stop.clone(), peers.clone());
    let server_in = start_server(&server_pod, dst_in, server_stop.clone(), peers_in.clone());
    sluice_ok(&["enroll", "--netns", pod.name(), "--control", &ctl]);
    sluice_ok(&["enroll", "--netns", server_pod.name(), "--control", &ctl]);
    let in_cgroup = cgroup.enter_process();
    let pod_of = |s: &StatusReport, ns: &Netns| {
        s.pods
            .iter()
            .find(|p| p.cookie == ns.cookie())
            .cloned()
            .unwrap_or_else(|| panic!("{} not in {s:?}", ns.name()))
    };

    // 100 long-lived streams, opened through the old agent.
    let stop_streams = Arc::new(AtomicBool::new(false));
    let upgraded = Arc::new(AtomicBool::new(false));
    let streams = open_streams(
        &pod,
        dsts,
        STREAMS,
        stop_streams.clone(),
        upgraded.clone(),
        Duration::from_secs(10),
    );
    let before = status(&ctl);
    assert_eq!(before.pods.len(), 2);
    let (client_before, server_before) = (pod_of(&before, &pod), pod_of(&before, &server_pod));
    assert!(client_before.active >= STREAMS as u64, "{client_before:?}");
    assert!(
        server_before.inbound_accepted >= STREAMS as u64 / 2,
        "the server pod's streams were not captured inbound: {server_before:?}"
    );

    // A steady stream of new connections for the whole upgrade.
    let stop_load = Arc::new(AtomicBool::new(false));
    let loader = spawn_load(&pod, dsts, stop_load.clone(), RATE_PER_SEC);
    // Control requests keep being answered across the hand-over (a request queued behind it
    // is closed unanswered and retried once, as sluice-cni does).
    let stop_ctl = Arc::new(AtomicBool::new(false));
    let ctl_client = {
        let (stop, path) = (stop_ctl.clone(), control.path());
        std::thread::spawn(move || {
            use sluice_node::agent::protocol::{call, ClientError, Request, Response};
            let (mut calls, mut retried, mut failed) = (0u64, 0u64, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                calls += 1;
                let r = match call(&path, &Request::Status) {
                    Err(ClientError::Decode { line, .. }) if line.is_empty() => {
                        retried += 1;
                        std::thread::sleep(Duration::from_millis(100));
                        call(&path, &Request::Status)
                    }
                    r => r,
                };
                match r {
                    Ok(Response::Status(s)) if s.pods.len() == 2 => {}
                    other => failed.push(format!("{other:?}")),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (calls, retried, failed)
        })
    };
    std::thread::sleep(Duration::from_secs(2));

    // The upgrade: a new agent on the same control socket path.
    let up_start = Instant::now();
    let new = SluiceProcess::agent_at(
        &cgroup,
        pins.path(),
        &control.path(),
        &["--upgrade-from", &ctl],
    );
    let took_over = up_start.elapsed();
    upgraded.store(true, Ordering::Relaxed);
    old.wait_for_log("upgrade committed", Duration::from_secs(5));
    assert!(
        new.log().contains("took over from the old agent"),
        "{}",
        new.log()
    );
    // The old agent's drain counts the inbound connections too: 100 outbound streams in the
    // client pod + 50 inbound ones in the server pod (+ load connections in flight).
    let old_connections: u64 = new
        .log()
        .split("old_connections=")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no old_connections in\n{}", new.log()));
    assert!(
        old_connections >= STREAMS as u64 * 3 / 2,
        "the old agent drains {old_connections} connections, fewer than the 150 streams"
    );
    std::thread::sleep(Duration::from_secs(2));
    // The new agent answers on the path and serves the pod (new connections land there).
    let after = status(&ctl);
    assert_eq!(after.pods.len(), 2, "{after:?}");
    let (client_after, server_after) = (pod_of(&after, &pod), pod_of(&after, &server_pod));
    assert!(
        client_after.accepted > 0,
        "new agent accepted nothing: {client_after:?}"
    );
    // The new agent serves the adopted 15006 sockets (re-registered with sk_lookup).
    for l in [
        "0.0.0.0:15006",
        "[::]:15006",
        "127.0.0.1:15001",
        "[::1]:15001",
    ] {
        assert!(
            server_after.listeners.contains(&l.to_string()),
            "{l} not adopted: {server_after:?}"
        );
    }
    assert!(
        server_after.inbound_accepted > 0,
        "new agent accepted nothing inbound: {server_after:?}"
    );

    // End the streams: the old agent has drained and exits by itself.
    stop_streams.store(true, Ordering::Relaxed);
    let reports = streams.join().expect("streams thread");
    let drain_start = Instant::now();
    let exit = old.wait_exit(Duration::from_secs(10));
    let drained_in = drain_start.elapsed();
    std::thread::sleep(Duration::from_secs(1)); // new connections with only the new agent left
    stop_load.store(true, Ordering::Relaxed);
    let load = loader.join().expect("load thread");
    stop_ctl.store(true, Ordering::Relaxed);
    let (ctl_calls, ctl_retried, ctl_failed) = ctl_client.join().expect("control client");
    drop(in_cgroup);
    println!(
        "upgrade: control socket: {ctl_calls} status calls, {ctl_retried} retried once, {} failed",
        ctl_failed.len()
    );
    assert!(
        ctl_failed.is_empty(),
        "control requests failed: {ctl_failed:?}"
    );

    let dropped: Vec<&String> = reports.iter().filter_map(|r| r.as_ref().err()).collect();
    let ok: Vec<&StreamReport> = reports.iter().filter_map(|r| r.as_ref().ok()).collect();
    let rounds: u64 = ok.iter().map(|r| r.rounds).sum();
    let min_after = ok.iter().map(|r| r.rounds_after_upgrade).min().unwrap_or(0);
    println!(
        "upgrade: new agent ready {took_over:?} after start; streams {} ok / {} dropped ({rounds} echo rounds, >= {min_after} each after the upgrade); \
         new connections {} attempted, {} ok ({} of them inbound captured), {} refused/failed in {:?} ({:.0}/s); \
         old agent drained {old_connections} connections, exited {drained_in:?} after the streams ended: {exit:?}",
        ok.len(),
        dropped.len(),
        load.attempted,
        load.ok,
        load.inbound_ok,
        load.failed,
        load.elapsed,
        load.attempted as f64 / load.elapsed.as_secs_f64()
    );
    assert!(dropped.is_empty(), "dropped streams: {dropped:?}");
    assert_eq!(ok.len(), STREAMS);
    assert!(min_after > 0, "a stream made no progress after the upgrade");
    assert_eq!(load.failed, 0, "refused/failed: {:?}", load.first_errors);
    assert!(
        load.inbound_ok >= load.attempted / 2 - 1,
        "inbound connections missing: {load:?}"
    );
    // Every connection the server pod's app saw came through the inbound passthrough.
    let (total_in, via_passthrough) = (
        peers_in.total.load(Ordering::Relaxed),
        peers_in.passthrough.load(Ordering::Relaxed),
    );
    println!("upgrade: server pod app: {total_in} connections, {via_passthrough} from 127.0.0.6");
    assert_eq!(
        via_passthrough, total_in,
        "connections to the server pod bypassed inbound capture"
    );
    assert_eq!(
        total_in,
        STREAMS as u64 / 2 + load.inbound_ok,
        "server pod connections"
    );
    assert_eq!(
        peers.passthrough.load(Ordering::Relaxed),
        0,
        "the unenrolled server saw 127.0.0.6"
    );
    assert!(
        load.attempted as f64 / load.elapsed.as_secs_f64() > RATE_PER_SEC as f64 * 0.8,
        "load generator too slow: {load:?}"
    );
    let exit = exit.unwrap_or_else(|| panic!("old agent did not exit:\n{}", old.log()));
    assert!(exit.success(), "old agent: {exit}\n{}", old.log());
    assert!(old.log().contains("drained"), "{}", old.log());
    // Capture still works with only the new agent's programs.
    let last = status(&ctl);
    assert!(
        pod_of(&last, &pod).accepted > client_after.accepted,
        "{last:?}"
    );
    assert!(
        pod_of(&last, &server_pod).inbound_accepted > server_after.inbound_accepted,
        "{last:?}"
    );
    server_stop.store(true, Ordering::Relaxed);
    server.join().expect("server thread");
    server_in.join().expect("server thread");
    drop(new);
    assert!(
        test_start.elapsed() < Duration::from_secs(30),
        "took {:?}",
        test_start.elapsed()
    );
}

/// The data-path half of the upgrade, inbound: the old agent pins its sk_lookup links while it
/// keeps running (`Datapath::pin_links_for_upgrade`); the new agent's load adopts the same
/// link with its own program; when the old agent's data path drops, inbound capture and the
/// established inbound connection carry on.
#[test]
fn upgrade_hands_sk_lookup_links_over_while_the_old_agent_runs() {
    let site = LoadSite::new("upl");
    let p = ProxyPod::new("upl", 8080);
    let link_pin = p.link_pin(&site.pins);

    let mut old = site.load();
    p.enroll(&mut old);
    let (mut est_client, mut est_proxy) = p.captured("old agent");
    let links = sk_lookup_links(&p.pod);
    assert_eq!(links.len(), 1);

    assert_eq!(old.pin_links_for_upgrade().unwrap(), 1);
    assert!(link_pin.exists(), "not pinned at {}", link_pin.display());
    let _both = p.captured("pinned, old agent still running");

    let new = site.load();
    assert!(!link_pin.exists(), "pin not taken over");
    assert_eq!(new.inbound_netns(), vec![p.pod.cookie()]);
    assert_eq!(sk_lookup_links(&p.pod), links, "the same link, adopted");
    let _during = p.captured("both agents running");

    drop(old);
    assert_eq!(
        sk_lookup_links(&p.pod),
        links,
        "link detached with the old agent"
    );
    let _after = p.captured("new agent alone");
    send(&mut est_client, &mut est_proxy, b"still here");
    send(&mut est_proxy, &mut est_client, b"both ways");
    drop(new);
    // The kernel frees the link from a workqueue (and a concurrent `bpftool link show` may hold
    // it for a moment): bounded poll.
    assert!(
        sk_lookup_links_gone(&p.pod),
        "link left after the last agent: {:?}",
        sk_lookup_links(&p.pod)
    );
}

/// The drain is bounded: a connection that never ends is cut at `--drain-timeout` and the old
/// agent exits anyway. The new agent can itself be upgraded (its adopted sockets hand over
/// again), and `--upgrade-from` a socket nobody serves fails naming it.
#[test]
fn drain_deadline_bounds_the_old_agent_and_upgrades_chain() {
    require_root();
    let cgroup = Cgroup::new("ud");
    let pins = PinDir::new("ud");
    let (mut first, control) =
        SluiceProcess::agent(&cgroup, pins.path(), &["--drain-timeout", "1s"]);
    let ctl = control.arg();
    let pod = Netns::new("udp");
    let server_ns = Netns::new("uds");
    let veth = Veth::new("ud", &pod, &server_ns);
    let dst = SocketAddr::new(veth.b_v4.into(), 9000);
    let server_stop = Arc::new(AtomicBool::new(false));
    let server = start_server(&server_ns, dst, server_stop.clone(), Arc::default());
    sluice_ok(&[
        "enroll",
        "--netns",
        pod.name(),
        "--fast-path",
        "on",
        "--control",
        &ctl,
    ]);
    // A sidecar-mode pod is handed over as policy only (its sidecar owns its sockets).
    let side = Netns::new("udc");
    sluice_ok(&[
        "enroll",
        "--netns",
        side.name(),
        "--mode",
        "sidecar",
        "--control",
        &ctl,
    ]);
    let in_cgroup = cgroup.enter_process();
    let request = || {
        pod.run_async(move || async move { one_request(dst).await })
            .unwrap_or_else(|e| panic!("request through the proxy: {e}"))
    };
    request();
    // A connection that stays open past the deadline.
    let (open_tx, open_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let holder = pod.spawn(move || {
        let mut s = std::net::TcpStream::connect(dst).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        open_tx.send(()).unwrap();
        let _ = done_rx.recv_timeout(Duration::from_secs(20));
        let mut buf = [0u8; 16];
        std::io::Read::read(&mut s, &mut buf)
    });
    open_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("opened");

    let mut second = SluiceProcess::agent_at(
        &cgroup,
        pins.path(),
        &control.path(),
        &["--upgrade-from", &ctl, "--drain-timeout", "1s"],
    );
    request();
    let start = Instant::now();
    let exit = first.wait_exit(Duration::from_secs(5));
    println!(
        "drain deadline 1s: old agent exited after {:?}: {exit:?}",
        start.elapsed()
    );
    assert!(exit.is_some_and(|e| e.success()), "{}", first.log());
    assert!(
        first.log().contains("drain deadline passed"),
        "{}",
        first.log()
    );
    done_tx.send(()).unwrap();
    // Cut by the old agent's exit: EOF or reset, not a hang.
    let cut = holder.join().expect("holder");
    assert!(matches!(cut, Ok(0) | Err(_)), "{cut:?}");
    // The old agent's exit left the new agent's programs in place, sk_msg fast path included.
    let counter = |name: &str| {
        status(&ctl)
            .counters
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no counter {name}"))
    };
    let (captured0, fast0) = (counter("captured"), counter("fast_path_bytes"));
    request();
    assert!(
        counter("captured") > captured0,
        "not captured after the old agent left"
    );
    assert!(
        counter("fast_path_bytes") > fast0,
        "sk_msg fast path gone with the old agent"
    );

    // Upgrade the upgraded agent.
    let third = SluiceProcess::agent_at(
        &cgroup,
        pins.path(),
        &control.path(),
        &["--upgrade-from", &ctl],
    );
    assert!(
        second
            .wait_exit(Duration::from_secs(5))
            .is_some_and(|e| e.success()),
        "{}",
        second.log()
    );
    request();
    let s = status(&ctl);
    assert_eq!(s.pods.len(), 2, "{s:?}");
    let node_pod = s
        .pods
        .iter()
        .find(|p| p.cookie == pod.cookie())
        .expect("node pod");
    assert!(node_pod.accepted >= 1, "{s:?}");
    let side_pod = s
        .pods
        .iter()
        .find(|p| p.cookie == side.cookie())
        .expect("sidecar pod");
    assert_eq!(side_pod.mode, "sidecar", "{side_pod:?}");
    assert!(side_pod.listeners.is_empty(), "{side_pod:?}");
    assert!(s.kernel_policies.contains(&side.cookie()), "{s:?}");
    let ss = side.run(|| sluice_tests::run_cmd("ss", &["-ltnH"]));
    assert!(
        !ss.contains(":15001") && !ss.contains(":15006"),
        "agent listeners in the sidecar-mode pod: {ss}"
    );
    assert!(
        third.log().contains("adopted pod from the old agent"),
        "{}",
        third.log()
    );
    drop(in_cgroup);

    let nobody = std::env::temp_dir().join(sluice_tests::unique_name("nobody.sock"));
    let err = sluice_tests::sluice_cli::sluice_err(&[
        "agent",
        "--cgroup",
        &cgroup.path().display().to_string(),
        "--pin-dir",
        &pins.path().display().to_string(),
        "--control",
        &nobody.display().to_string(),
        "--upgrade-from",
        &nobody.display().to_string(),
    ]);
    assert!(
        err.contains(&format!("upgrade from {}: connect", nobody.display())),
        "{err}"
    );
    server_stop.store(true, Ordering::Relaxed);
    server.join().expect("server");
    drop(third);
}

/// A new agent that fails after the hand-over started (here: its data path cannot load) leaves
/// the old agent serving: it keeps accepting, answers the control socket, and a later upgrade
/// still works (the links it pinned for the failed one are pinned again).
#[test]
fn failed_upgrade_leaves_the_old_agent_serving() {
    require_root();
    let cgroup = Cgroup::new("uf");
    let pins = PinDir::new("uf");
    let (mut old, control) = SluiceProcess::agent(&cgroup, pins.path(), &[]);
    let ctl = control.arg();
    let pod = Netns::new("ufp");
    let server_ns = Netns::new("ufs");
    let veth = Veth::new("uf", &pod, &server_ns);
    let dst = SocketAddr::new(veth.b_v4.into(), 9000);
    let server_stop = Arc::new(AtomicBool::new(false));
    let server = start_server(&server_ns, dst, server_stop.clone(), Arc::default());
    sluice_ok(&["enroll", "--netns", pod.name(), "--control", &ctl]);
    let in_cgroup = cgroup.enter_process();
    let request = || {
        pod.run_async(move || async move { one_request(dst).await })
            .unwrap_or_else(|e| panic!("request through the proxy: {e}"))
    };
    request();

    let err = sluice_tests::sluice_cli::sluice_err(&[
        "agent",
        "--cgroup",
        "/sys/fs/cgroup/unified/sl-no-such-cgroup",
        "--pin-dir",
        &pins.path().display().to_string(),
        "--control",
        &ctl,
        "--upgrade-from",
        &ctl,
    ]);
    assert!(err.contains("sl-no-such-cgroup"), "{err}");
    old.wait_for_log("upgrade aborted", Duration::from_secs(5));
    request();
    let s = status(&ctl);
    assert_eq!(s.pods.len(), 1, "{s:?}");
    assert!(s.pods[0].accepted >= 2, "{s:?}");

    let new = SluiceProcess::agent_at(
        &cgroup,
        pins.path(),
        &control.path(),
        &["--upgrade-from", &ctl],
    );
    assert!(
        old.wait_exit(Duration::from_secs(5))
            .is_some_and(|e| e.success()),
        "{}",
        old.log()
    );
    request();
    drop(in_cgroup);
    server_stop.store(true, Ordering::Relaxed);
    server.join().expect("server");
    drop(new);
}
