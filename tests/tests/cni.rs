//! sluice-cni chained after the Debian reference plugins (`bridge` + `host-local`, `loopback`),
//! exec'd exactly as a container runtime does, against the real `sluice agent`: pods get
//! addresses on a test bridge, are enrolled by ADD, talk to each other captured, and are
//! cleaned up by DEL; an unreachable agent fails ADD closed (or open with `failOpen`); 200 pods
//! of churn leave the agent's maps, fds, threads and listeners where they were.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use serde_json::json;
use sluice_tests::{
    agent_node::Node,
    cni::CniNetwork,
    require_root, run_cmd,
    sluice_cli::{exchange, ControlSocket, EchoPeerServer},
    Netns,
};

fn pod_args(name: &str) -> String {
    format!("IgnoreUnknown=1;K8S_POD_NAME={name};K8S_POD_NAMESPACE=shop")
}

fn listening_in(ns: &Netns) -> String {
    ns.run(|| run_cmd("ss", &["-ltnH"]))
}

/// ADD enrolls with the pod's identity, the pods talk captured both ways, CHECK passes, DEL
/// leaves no policy, no map entry and no listener; DEL is idempotent (also without netns).
#[test]
fn cni_pods_are_enrolled_captured_and_cleaned_up() {
    let node = Node::start("cn");
    let net = CniNetwork::new(json!({ "control": node.ctl(), "mode": "node" }));
    let a = Netns::new("cna");
    let b = Netns::new("cnb");
    let add_a = net.add(&a, "ctr-a", &pod_args("web-a"));
    assert!(
        add_a.ok,
        "ADD a failed: {} {:?}",
        add_a.result, add_a.sluice
    );
    assert_eq!(
        add_a.result, add_a.prev,
        "prevResult must come back unchanged"
    );
    let add_b = net.add(&b, "ctr-b", &pod_args("web-b"));
    assert!(add_b.ok, "ADD b failed: {}", add_b.result);
    let (ip_a, ip_b) = (
        CniNetwork::pod_ip(&add_a.result),
        CniNetwork::pod_ip(&add_b.result),
    );
    for ns in [&a, &b] {
        let routes = ns.ip(&["-4", "route", "show", "default"]);
        assert!(
            routes.trim().is_empty(),
            "pod has a default route: {routes}"
        );
    }
    let pa = node.pod(&a);
    let id = pa.pod.clone().expect("identity in status");
    assert_eq!(id.container_id, "ctr-a");
    assert_eq!(id.pod_name.as_deref(), Some("web-a"));
    assert_eq!(id.pod_namespace.as_deref(), Some("shop"));
    assert_eq!(pa.mode, "node");
    for l in [
        "127.0.0.1:15001",
        "[::1]:15001",
        "0.0.0.0:15006",
        "[::]:15006",
    ] {
        assert!(pa.listeners.contains(&l.to_string()), "{l}: {pa:?}");
    }
    let check = net.check(&a, "ctr-a", &pod_args("web-a"), &add_a.result);
    assert!(check.ok, "CHECK failed: {} {}", check.stdout, check.stderr);

    // Both directions, each captured twice: the caller's outbound connection (15001 in its pod)
    // and the server pod's inbound one (15006, sk_lookup), whose passthrough dials the app from
    // 127.0.0.6.
    let server_b = EchoPeerServer::start(&b, SocketAddr::new(IpAddr::V4(ip_b), 8080));
    let server_a = EchoPeerServer::start(&a, SocketAddr::new(IpAddr::V4(ip_a), 8081));
    let in_cgroup = node.cgroup.enter_process();
    let ab = exchange(&a, server_b.addr, 1000, None);
    let ba = exchange(&b, server_a.addr, 2000, None);
    drop(in_cgroup);
    assert_eq!(ab.peer, server_b.addr, "getpeername shows the original dst");
    assert_eq!(ba.peer, server_a.addr, "getpeername shows the original dst");
    assert!(
        ab.answer.starts_with("peer=127.0.0.6:") && ab.answer.ends_with("bytes=1000"),
        "server app in b must see the inbound passthrough source: {}",
        ab.answer
    );
    assert!(
        ba.answer.starts_with("peer=127.0.0.6:") && ba.answer.ends_with("bytes=2000"),
        "server app in a must see the inbound passthrough source: {}",
        ba.answer
    );
    let (pa, pb) = (node.pod(&a), node.pod(&b));
    assert!(
        pa.recent_destinations.contains(&server_b.addr.to_string()) && pa.accepted >= 1,
        "{pa:?}"
    );
    assert!(
        pb.recent_destinations.contains(&server_a.addr.to_string()) && pb.accepted >= 1,
        "{pb:?}"
    );
    // ... and each server side came in through its pod's inbound listener.
    assert!(
        pb.inbound_recent_destinations
            .contains(&server_b.addr.to_string())
            && pb.inbound_accepted >= 1,
        "{pb:?}"
    );
    assert!(
        pa.inbound_recent_destinations
            .contains(&server_a.addr.to_string())
            && pa.inbound_accepted >= 1,
        "{pa:?}"
    );
    drop((server_a, server_b));

    let (ca, cb) = (a.cookie(), b.cookie());
    net.del(Some(&a), "ctr-a", &pod_args("web-a"));
    assert_eq!(node.unenrolled_remaining(ca), 0, "map entries left for a");
    // The runtime lost b's netns path: DEL by container id alone.
    net.del(None, "ctr-b", &pod_args("web-b"));
    assert_eq!(node.unenrolled_remaining(cb), 0, "map entries left for b");
    let s = node.status();
    assert!(s.pods.is_empty(), "{:?}", s.pods);
    assert!(
        !s.kernel_policies.contains(&ca) && !s.kernel_policies.contains(&cb),
        "{:?}",
        s.kernel_policies
    );
    for ns in [&a, &b] {
        let l = listening_in(ns);
        assert!(
            !l.contains(":15001") && !l.contains(":15006"),
            "listener left in {}: {l}",
            ns.name()
        );
    }
    // Idempotent: again, and for a pod that never existed.
    net.del(Some(&a), "ctr-a", &pod_args("web-a"));
    net.del(None, "ctr-never", "");
    let check = net.check(&a, "ctr-a", &pod_args("web-a"), &add_a.result);
    assert!(!check.ok, "CHECK of a deleted pod passed");
    assert_eq!(check.stdout["code"], 102, "{}", check.stdout);
}

/// Agent unreachable: ADD fails closed with the CNI error object; with `failOpen` it succeeds
/// (prevResult unchanged, a warning on stderr). DEL always succeeds.
#[test]
fn cni_agent_unreachable_fails_closed_or_open() {
    require_root();
    let dir = ControlSocket::new_for_tests();
    let control = dir.arg();
    let closed = CniNetwork::new(json!({ "control": control }));
    let pod = Netns::new("cnu");
    let r = closed.add(&pod, "ctr-u", &pod_args("u"));
    assert!(!r.ok, "ADD with no agent succeeded: {}", r.result);
    let e = &r.result;
    assert_eq!(e["code"], 100, "{e}");
    assert_eq!(e["cniVersion"], "1.0.0", "{e}");
    assert!(
        e["msg"].as_str().unwrap().contains(&control),
        "the error names the socket: {e}"
    );
    assert!(e["details"].as_str().unwrap().contains("failOpen"), "{e}");
    closed.del(Some(&pod), "ctr-u", &pod_args("u"));

    let open = CniNetwork::new(json!({ "control": control, "failOpen": true }));
    let pod = Netns::new("cno");
    let r = open.add(&pod, "ctr-o", &pod_args("o"));
    assert!(r.ok, "failOpen ADD failed: {}", r.result);
    assert_eq!(r.result, r.prev);
    let run = r.sluice.expect("sluice-cni ran");
    assert!(run.stderr.contains("failOpen"), "{}", run.stderr);
    open.del(Some(&pod), "ctr-o", &pod_args("o"));
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// 200 pods ADD/DEL: maps, fds, threads and listeners end where they started; enrollment
/// latency (sluice-cni ADD exec, spawn to exit) p50/p99 printed and bounded.
#[test]
fn cni_pod_churn_leaves_nothing_behind() {
    const PODS: usize = 200;
    let node = Node::start("cc");
    let net = CniNetwork::new(json!({ "control": node.ctl() }));
    let churn = |n: usize, lat: &mut Vec<Duration>| {
        for i in 0..n {
            let ns = Netns::new("cc");
            let id = format!("churn-{i}");
            let r = net.add(&ns, &id, &pod_args(&id));
            assert!(r.ok, "ADD {i} failed: {}", r.result);
            lat.push(r.sluice.expect("sluice-cni ran").took);
            net.del(Some(&ns), &id, &pod_args(&id));
        }
    };
    // Warm up (runtime threads, lazily opened fds), then take the baseline.
    churn(3, &mut Vec::new());
    std::thread::sleep(Duration::from_millis(300));
    let (fds0, threads0) = (node.fds(), node.threads());
    let s0 = node.status();
    assert!(s0.pods.is_empty());
    let start = Instant::now();
    let mut lat = Vec::with_capacity(PODS);
    churn(PODS, &mut lat);
    let took = start.elapsed();
    lat.sort_unstable();
    let (p50, p99, max) = (
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        lat[lat.len() - 1],
    );
    println!(
        "cni churn: {PODS} pods ADD+DEL in {took:?}; sluice-cni ADD latency p50={p50:?} p99={p99:?} max={max:?}"
    );
    // Short-lived helper threads (setns binds) and blocking-pool threads may linger briefly.
    let settle = Instant::now();
    let (mut fds, mut threads) = (node.fds(), node.threads());
    while (fds != fds0 || threads > threads0) && settle.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(100));
        (fds, threads) = (node.fds(), node.threads());
    }
    println!("cni churn: agent fds {fds0} -> {fds}, threads {threads0} -> {threads}");
    assert_eq!(fds, fds0, "agent fds leaked");
    assert!(threads <= threads0, "agent threads {threads0} -> {threads}");
    let s = node.status();
    assert!(s.pods.is_empty(), "pods left: {:?}", s.pods);
    assert_eq!(s.kernel_policies, s0.kernel_policies, "policies left");
    let listening = run_cmd("ss", &["-ltnpH"]);
    let agent_listeners = listening
        .lines()
        .filter(|l| l.contains(&format!("pid={},", node.pid())))
        .count();
    assert_eq!(agent_listeners, 0, "agent listeners in the root netns");
    assert!(
        p99 < Duration::from_millis(500),
        "enrollment p99 {p99:?} >= 500 ms"
    );
}

/// The mode comes from the pod annotation (runtimeConfig, then CNI_ARGS), then the config;
/// excluded namespaces pass through untouched; a bad mode is CNI error 7 naming it.
#[test]
fn cni_mode_annotation_and_excluded_namespaces() {
    let node = Node::start("cm");
    let ctl = node.ctl();
    let annotated = CniNetwork::new(json!({
        "control": ctl,
        "mode": "node",
        "runtimeConfig": { "podAnnotations": { "sluice.io/mode": "sidecar" } },
    }));
    let plain = CniNetwork::new(json!({
        "control": ctl,
        "mode": "node",
        "excludeNamespaces": ["kube-system"],
    }));
    let a = Netns::new("cma");
    let r = annotated.add(&a, "ctr-annot", &pod_args("annot"));
    assert!(r.ok, "{}", r.result);
    assert_eq!(node.pod(&a).mode, "sidecar");
    assert!(
        node.pod(&a).listeners.is_empty(),
        "sidecar mode: no agent listener"
    );

    let b = Netns::new("cmb");
    let r = plain.add(
        &b,
        "ctr-args",
        &format!("{};SLUICE_MODE=off", pod_args("args")),
    );
    assert!(r.ok, "{}", r.result);
    assert_eq!(node.pod(&b).mode, "off");

    let sys = Netns::new("cms");
    let r = plain.add(
        &sys,
        "ctr-sys",
        "IgnoreUnknown=1;K8S_POD_NAME=coredns;K8S_POD_NAMESPACE=kube-system",
    );
    assert!(r.ok, "{}", r.result);
    assert_eq!(r.result, r.prev);
    let cookie = sys.cookie();
    assert!(
        !node.status().pods.iter().any(|p| p.cookie == cookie),
        "excluded namespace enrolled"
    );

    let bad = Netns::new("cmx");
    let r = plain.add(
        &bad,
        "ctr-bad",
        &format!("{};SLUICE_MODE=bogus", pod_args("bad")),
    );
    assert!(!r.ok, "bad mode accepted");
    assert_eq!(r.result["code"], 7, "{}", r.result);
    assert!(
        r.result["details"].as_str().unwrap().contains("bogus"),
        "{}",
        r.result
    );
    plain.del(Some(&bad), "ctr-bad", "");
    plain.del(Some(&sys), "ctr-sys", "");
    plain.del(Some(&b), "ctr-args", "");
    annotated.del(Some(&a), "ctr-annot", "");
    assert!(node.status().pods.is_empty(), "{:?}", node.status().pods);
}
