//! Issue 11 test 1: the DaemonSet pod of deploy/sluice.yaml, run for real with podman exactly as
//! the manifest says (tests/src/podrun: every field applied or knowingly ignored, host paths
//! remapped into a sandbox), probes checked over HTTP; install-cni patches the node's primary
//! conflist (Debian's bridge + host-local) and pods wired through that patched chain are
//! enrolled by sluice-cni with the containerised agent and captured in both directions.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use sluice_tests::{
    agent_node::status_at,
    podrun::{
        chain::{pod_ip, primary, NodeCni},
        fields,
        node::{cni_args, TestNode},
        podman::cap_bit,
        probe,
    },
    require_root,
    sluice_cli::{exchange, EchoPeerServer},
    until, Netns,
};

#[test]
fn daemonset_pod_runs_as_the_manifest_says_and_captures_cni_pods_both_ways() {
    require_root();
    let start = Instant::now();
    let node = TestNode::new(&["client", "server"]);
    for (path, why) in fields::check(&node.manifest.daemonset) {
        eprintln!("not applied: {path}: {why}");
    }
    let pod = node.start_pod();
    let ready = pod.wait_ready(&node.manifest, Duration::from_secs(90));
    eprintln!("pod {} ready after {ready:?}", pod.name);
    for c in &node.manifest.pod.containers {
        if let Some(p) = &c.liveness {
            assert!(
                probe::passes(p),
                "{} liveness GET :{}{} failed\n{}",
                c.name,
                p.port,
                p.path,
                pod.logs()
            );
        }
    }
    // Each container runs with exactly the manifest's capabilities, no-new-privileges and
    // read-only root as its securityContext says.
    for c in &node.manifest.pod.containers {
        let sc = &c.security;
        assert_eq!(
            sc.cap_drop,
            ["ALL"],
            "{}: the runner checks drop ALL + add",
            c.name
        );
        let want = sc.cap_add.iter().fold(0u64, |m, cap| m | 1 << cap_bit(cap));
        let pid = pod.container(&c.name).pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|| panic!("no {k} in /proc/{pid}/status"))
        };
        let eff = u64::from_str_radix(&field("CapEff:"), 16).expect("CapEff hex");
        assert_eq!(
            eff, want,
            "{}: CapEff {eff:#x}, manifest {:?}",
            c.name, sc.cap_add
        );
        assert_eq!(
            field("NoNewPrivs:") == "1",
            sc.no_new_privileges,
            "{} NoNewPrivs",
            c.name
        );
        let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
        let root_ro = mounts
            .lines()
            .find(|l| l.split_whitespace().nth(4) == Some("/"))
            .is_some_and(|l| {
                l.split_whitespace()
                    .nth(5)
                    .is_some_and(|o| o.split(',').any(|o| o == "ro"))
            });
        assert_eq!(root_ro, sc.read_only_root, "{}: read-only root", c.name);
    }
    // The pod watcher reached the API server through the in-cluster config (TLS, the
    // service-account CA) with the node's field selector from NODE_NAME (downward API).
    let selector = format!("fieldSelector=spec.nodeName%3D{}", node.node_name);
    let reqs = node.api.fake.requests();
    assert!(
        reqs.iter()
            .any(|r| r.starts_with("GET /api/v1/pods?") && r.contains(&selector)),
        "no pod list for this node: {reqs:?}"
    );
    // The agent attached in the sandboxed cgroup root, pinned in the sandboxed bpffs.
    assert!(
        node.sandbox.bpffs.path().join("sluice").is_dir(),
        "no pins under {}: {:?}\n{}",
        node.sandbox.bpffs.path().display(),
        node.sandbox.bpffs.entries(),
        pod.logs()
    );

    // install-cni: sluice-cni copied, the primary conflist patched (same file, entry appended
    // with the manifest's plugin options).
    let (file, list) = until(
        "install-cni patches the primary conflist",
        || primary(&node.sandbox.cni_conf()),
        |(_, l)| {
            l["plugins"]
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p["type"] == "sluice-cni"))
        },
    );
    assert_eq!(
        file, node.primary.file,
        "install-cni must patch the primary file"
    );
    let entry = list["plugins"]
        .as_array()
        .expect("plugins")
        .last()
        .expect("entry")
        .clone();
    assert_eq!(entry["type"], "sluice-cni", "appended last: {list}");
    assert_eq!(entry["control"], "/run/sluice/agent.sock", "{entry}");
    assert_eq!(entry["failOpen"], false, "{entry}");
    let bin = node.sandbox.cni_bin().join("sluice-cni");
    let built = sluice_tests::cni::sluice_cni_bin();
    assert_eq!(
        std::fs::metadata(&bin).map(|m| m.len()).ok(),
        std::fs::metadata(&built).map(|m| m.len()).ok(),
        "{} must be the image's sluice-cni",
        bin.display()
    );

    // Pods through the patched chain: enrolled by sluice-cni with the containerised agent.
    let cni = NodeCni {
        sandbox: &node.sandbox,
    };
    let (a, b) = (Netns::new("dsa"), Netns::new("dsb"));
    let add_a = cni.add(&a, "ctr-client", &cni_args("client"));
    assert!(
        add_a.ok,
        "ADD client: {} {:?}\n{}",
        add_a.result,
        add_a.stderr,
        pod.logs()
    );
    let add_b = cni.add(&b, "ctr-server", &cni_args("server"));
    assert!(add_b.ok, "ADD server: {} {:?}", add_b.result, add_b.stderr);
    let (ip_a, ip_b) = (pod_ip(&add_a.result), pod_ip(&add_b.result));
    for ns in [&a, &b] {
        let routes = ns.ip(&["-4", "route", "show", "default"]);
        assert!(
            routes.trim().is_empty(),
            "pod has a default route: {routes}"
        );
    }
    let ctl = node.control();
    let status = status_at(&ctl);
    for (ns, name) in [(&a, "client"), (&b, "server")] {
        let p = status
            .pods
            .iter()
            .find(|p| p.cookie == ns.cookie())
            .unwrap_or_else(|| panic!("{name} not enrolled: {:?}", status.pods));
        assert_eq!(p.mode, "node");
        assert_eq!(
            p.pod.as_ref().and_then(|i| i.pod_name.as_deref()),
            Some(name)
        );
    }

    // Both directions: client -> server pod (outbound in the client, inbound in the server)
    // and server -> client's app port.
    let server_b = EchoPeerServer::start(&b, SocketAddr::new(IpAddr::V4(ip_b), 8080));
    let server_a = EchoPeerServer::start(&a, SocketAddr::new(IpAddr::V4(ip_a), 8081));
    let in_cgroup = node.sandbox.cgroup.enter_process();
    let both = std::panic::catch_unwind(|| {
        (
            exchange(&a, server_b.addr, 1000, None),
            exchange(&b, server_a.addr, 2000, None),
        )
    });
    drop(in_cgroup);
    let (ab, ba) = both.unwrap_or_else(|_| panic!("captured exchange failed\n{}", pod.logs()));
    for (x, want) in [(&ab, (server_b.addr, 1000)), (&ba, (server_a.addr, 2000))] {
        assert_eq!(x.peer, want.0, "getpeername shows the original dst");
        assert!(
            x.answer.starts_with("peer=127.0.0.6:")
                && x.answer.ends_with(&format!("bytes={}", want.1)),
            "the server app must see the inbound passthrough source: {}",
            x.answer
        );
    }
    let status = status_at(&ctl);
    let of = |ns: &Netns| {
        status
            .pods
            .iter()
            .find(|p| p.cookie == ns.cookie())
            .expect("enrolled")
            .clone()
    };
    let (pa, pb) = (of(&a), of(&b));
    assert!(
        pa.recent_destinations.contains(&server_b.addr.to_string()),
        "outbound a: {pa:?}"
    );
    assert!(
        pb.recent_destinations.contains(&server_a.addr.to_string()),
        "outbound b: {pb:?}"
    );
    assert!(
        pb.inbound_recent_destinations
            .contains(&server_b.addr.to_string()),
        "inbound b: {pb:?}"
    );
    assert!(
        pa.inbound_recent_destinations
            .contains(&server_a.addr.to_string()),
        "inbound a: {pa:?}"
    );
    drop((server_a, server_b));

    for (ns, name) in [(&a, "client"), (&b, "server")] {
        let del = cni.del(Some(ns), &format!("ctr-{name}"), &cni_args(name));
        assert!(del.iter().all(|(_, ok)| *ok), "DEL {name}: {del:?}");
    }
    assert!(
        status_at(&ctl).pods.is_empty(),
        "DEL leaves no pod enrolled"
    );
    let codes = pod.stop(node.manifest.pod.grace);
    eprintln!("pod stopped: {codes:?}; whole test {:?}", start.elapsed());
    assert!(
        codes.iter().all(|(_, c)| *c == 0),
        "containers exit 0 on SIGTERM: {codes:?}\n{}",
        pod.logs()
    );
}
