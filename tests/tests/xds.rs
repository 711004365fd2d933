//! xDS end to end: the real `sluice proxy` binary on loopback, configured only by the scripted
//! ADS server (`sluice_tests::xds_server`), State-of-the-world and Delta. After each snapshot
//! version sluice has ACKed (or NACKed) it and curl through it reaches the expected upstream:
//! add listener / route / cluster, change a route, EDS endpoint add and remove, cluster removal,
//! listener replacement, RDS rename, EDS health change, weights, a header rule; a dangling
//! cluster, an invalid regex and an unsupported field are NACKed naming resource and field path
//! while traffic stays on the previous version; the server stopped mid-traffic and restarted:
//! traffic keeps flowing, sluice reconnects and converges (Delta: without a full resend). The
//! same script against Envoy 1.40 gives the same ACK/NACK sequence and request outcomes.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sluice_tests::{
    upstream::{
        harness::{free_port, ProxyProcess, TempDir},
        TestUpstream,
    },
    xds_run::{get, ready_status, spawn_sluice, start_proxy, Kind, Run},
    xds_script::{
        bootstrap, bootstrap_to, cla, eds_cluster, listener, rds, router, routes, static_cluster,
        web_backend,
    },
    xds_server::{Snapshot, XdsServer, CDS, EDS, LDS, RDS},
};

async fn scenario(api_type: &str, kind: Kind) -> Vec<String> {
    let (a, b, c) = (
        TestUpstream::start("a").await,
        TestUpstream::start("b").await,
        TestUpstream::start("c").await,
    );
    let (p1, p2, admin) = (free_port(), free_port(), free_port());
    let mut server = XdsServer::start().await;
    let mut run = Run {
        strict: kind == Kind::Sluice,
        trace: Vec::new(),
        ports: vec![(p1, "p1"), (p2, "p2")],
    };

    // v1: listener (RDS) + route + EDS cluster + endpoints.
    let base = |v: &str, extra: Vec<(&'static str, Value)>| {
        Snapshot::from_json(v, &web_backend(p1, a.port(), extra))
    };
    server.set(base("1", vec![]));
    let proxy = start_proxy(kind, &bootstrap(admin, server.addr, api_type), admin);
    for ty in [CDS, EDS, LDS, RDS] {
        run.ack(&server, ty, "1").await;
    }
    run.expect(p1, "/", 200, "a").await;

    // v2: a new cluster (STATIC over CDS) and a route change.
    let v2 = |v: &str, backend: &[u16]| {
        Snapshot::from_json(
            v,
            &[
                listener("web", p1, rds("routes")),
                routes("routes", &[("/b", "other"), ("/", "backend")]),
                eds_cluster("backend"),
                cla("backend", backend),
                static_cluster("other", b.port()),
            ],
        )
    };
    server.set(v2("2", &[a.port()]));
    run.ack(&server, RDS, "2").await;
    run.ack(&server, CDS, "2").await;
    run.expect(p1, "/b/x", 200, "b").await;
    run.expect(p1, "/", 200, "a").await;

    // v3: EDS endpoint add + remove (a -> c).
    server.set(v2("3", &[c.port()]));
    run.ack(&server, EDS, "3").await;
    run.expect(p1, "/", 200, "c").await;

    // v4: cluster removal: the route naming it answers 503 (RDS does not validate clusters).
    server.set(Snapshot::from_json(
        "4",
        &[
            listener("web", p1, rds("routes")),
            routes("routes", &[("/b", "other"), ("/", "backend")]),
            eds_cluster("backend"),
            cla("backend", &[c.port()]),
        ],
    ));
    run.ack(&server, CDS, "4").await;
    run.expect(p1, "/b", 503, "").await;
    run.expect(p1, "/", 200, "c").await;

    // v5: listener replacement (web on p1 -> web2 on p2).
    let good = |v: &str, extra: Vec<(&str, Value)>| {
        let mut items = vec![
            listener("web2", p2, rds("routes")),
            routes("routes", &[("/", "backend")]),
            eds_cluster("backend"),
            cla("backend", &[c.port()]),
        ];
        items.extend(extra);
        Snapshot::from_json(v, &items)
    };
    server.set(good("5", vec![]));
    run.ack(&server, LDS, "5").await;
    run.expect(p2, "/", 200, "c").await;
    run.closed(p1).await;

    // v6: dangling cluster (inline route config of a listener) -> NACK; traffic unchanged.
    let mut dangling = listener(
        "web3",
        free_port(),
        json!({"route_config": {"name": "inline",
        "virtual_hosts": [{"name": "x", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "route": {"cluster": "ghost"}}]}]}}),
    );
    dangling.1["name"] = json!("web3");
    server.set(good("6", vec![dangling]));
    run.nack(
        &server,
        LDS,
        "6",
        &[
            "Listener \"web3\": filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].routes[0].route.cluster",
            "unknown cluster \"ghost\"",
        ],
    )
    .await;
    run.expect(p2, "/", 200, "c").await;

    // v7: invalid regex in the route configuration -> NACK of RDS.
    let mut bad = routes("routes", &[("/", "backend")]);
    bad.1["virtual_hosts"][0]["routes"][0]["match"] = json!({"safe_regex": {"regex": "(unclosed"}});
    let mut items = vec![
        listener("web2", p2, rds("routes")),
        bad,
        eds_cluster("backend"),
        cla("backend", &[c.port()]),
    ];
    server.set(Snapshot::from_json("7", &items));
    run.nack(
        &server,
        RDS,
        "7",
        &["RouteConfiguration \"routes\": virtual_hosts[0].routes[0].match.safe_regex"],
    )
    .await;
    run.expect(p2, "/", 200, "c").await;

    // v8: an Envoy field sluice does not implement -> NACK naming it.
    items[1] = routes("routes", &[("/", "backend")]);
    items[0].1["tcp_backlog_size"] = json!(128);
    server.set(Snapshot::from_json("8", &items));
    run.nack(
        &server,
        LDS,
        "8",
        &["Listener \"web2\": tcp_backlog_size: not supported"],
    )
    .await;
    run.expect(p2, "/", 200, "c").await;

    // v9: good again (endpoints b).
    server.set(Snapshot::from_json(
        "9",
        &[
            listener("web2", p2, rds("routes")),
            routes("routes", &[("/", "backend")]),
            eds_cluster("backend"),
            cla("backend", &[b.port()]),
        ],
    ));
    run.ack(&server, LDS, "9").await;
    run.ack(&server, EDS, "9").await;
    run.expect(p2, "/", 200, "b").await;

    // Control-plane loss mid-traffic: every request keeps succeeding on the last config.
    let sent_before = server.delta_resources_sent();
    let streams_before = server.streams();
    let traffic = tokio::spawn(async move {
        let until = Instant::now() + Duration::from_millis(1500);
        let (mut n, mut failed) = (0, 0);
        while Instant::now() < until {
            if get(p2, "/").await != Some((200, "b".to_string())) {
                failed += 1;
            }
            n += 1;
        }
        (n, failed)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.stop().await;
    let (n, failed) = traffic.await.unwrap();
    assert!(n > 0);
    run.trace.push(format!(
        "requests failed while the server was down: {failed}"
    ));
    if run.strict {
        assert_eq!(
            failed, 0,
            "requests failed while the control plane was down"
        );
    }
    run.expect(p2, "/", 200, "b").await;
    server.restart().await;
    let restarted = Instant::now();
    // v10 after the restart: an EDS-only change (b -> a) converges over the new stream.
    server.set(Snapshot::from_json(
        "10",
        &[
            listener("web2", p2, rds("routes")),
            routes("routes", &[("/", "backend")]),
            eds_cluster("backend"),
            cla("backend", &[a.port()]),
        ],
    ));
    run.ack(&server, EDS, "10").await;
    assert!(
        restarted.elapsed() < Duration::from_secs(16),
        "reconnected within the backoff bound"
    );
    assert!(server.streams() > streams_before, "a new stream");
    run.expect(p2, "/", 200, "a").await;
    if api_type == "DELTA_GRPC" {
        // initial_resource_versions: only the changed assignment is sent again.
        let resent = server.delta_resources_sent() - sent_before;
        run.trace
            .push(format!("delta resources sent after reconnect: {resent}"));
        if run.strict {
            assert_eq!(resent, 1);
        }
    }

    // v11: RDS rename (the listener names "routes2"; "routes" is unsubscribed).
    let later = |v: &str, route: (&'static str, Value), backend: Value| {
        let mut c = cla("backend", &[]);
        c.1["endpoints"][0]["lb_endpoints"] = backend;
        Snapshot::from_json(
            v,
            &[
                listener("web2", p2, rds(route.1["name"].as_str().unwrap())),
                route,
                eds_cluster("backend"),
                c,
                static_cluster("other", b.port()),
            ],
        )
    };
    let c_port = c.port();
    let ep = |port: u16, health: &str| {
        json!({"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}},
            "health_status": health})
    };
    server.set(later(
        "11",
        routes("routes2", &[("/", "other")]),
        json!([ep(a.port(), "HEALTHY")]),
    ));
    run.ack(&server, RDS, "11").await;
    run.ack(&server, LDS, "11").await;
    run.expect(p2, "/", 200, "b").await;

    // v12: EDS health change: a UNHEALTHY, c HEALTHY -> only c.
    server.set(later(
        "12",
        routes("routes2", &[("/", "backend")]),
        json!([ep(a.port(), "UNHEALTHY"), ep(c.port(), "HEALTHY")]),
    ));
    run.ack(&server, EDS, "12").await;
    for _ in 0..4 {
        run.expect(p2, "/", 200, "c").await;
    }

    // v13: weights change: all of the weight on "other".
    let mut weighted = routes("routes2", &[("/", "backend")]);
    weighted.1["virtual_hosts"][0]["routes"][0]["route"] = json!({"weighted_clusters": {"clusters": [
        {"name": "backend", "weight": 0}, {"name": "other", "weight": 100}]}});
    server.set(later("13", weighted, json!([ep(c.port(), "HEALTHY")])));
    run.ack(&server, RDS, "13").await;
    for _ in 0..4 {
        run.expect(p2, "/", 200, "b").await;
    }

    // v14: a header rule: `x-pick: other` goes to "other", the rest to "backend".
    let mut by_header = routes("routes2", &[("/", "other"), ("/", "backend")]);
    by_header.1["virtual_hosts"][0]["routes"][0]["match"]["headers"] =
        json!([{"name": "x-pick", "string_match": {"exact": "other"}}]);
    server.set(later("14", by_header, json!([ep(c.port(), "HEALTHY")])));
    run.ack(&server, RDS, "14").await;
    run.expect_with(p2, "/", Some("x-pick: other"), 200, "b")
        .await;
    run.expect(p2, "/", 200, "c").await;

    // v15: authorization from the control plane: an RBAC filter on the listener (ALLOW when
    // `x-allow` is present) and an RBACPerRoute without rules turning it off for `/open`.
    let mut guarded = listener("web2", p2, rds("routes2"));
    guarded.1["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"] = json!([
        {"name": "envoy.filters.http.rbac", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "rules": {"action": "ALLOW", "policies": {"with-x-allow": {
                "permissions": [{"header": {"name": "x-allow", "present_match": true}}],
                "principals": [{"any": true}]}}}}},
        router()[0].clone()
    ]);
    let mut open = routes("routes2", &[("/open", "other"), ("/", "backend")]);
    open.1["virtual_hosts"][0]["routes"][0]["typed_per_filter_config"] = json!({
        "envoy.filters.http.rbac": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute"}});
    server.set(Snapshot::from_json(
        "15",
        &[
            guarded,
            open,
            eds_cluster("backend"),
            {
                let mut c = cla("backend", &[]);
                c.1["endpoints"][0]["lb_endpoints"] = json!([ep(c_port, "HEALTHY")]);
                c
            },
            static_cluster("other", b.port()),
        ],
    ));
    run.ack(&server, LDS, "15").await;
    run.ack(&server, RDS, "15").await;
    run.expect(p2, "/", 403, "").await;
    run.expect_with(p2, "/", Some("x-allow: 1"), 200, "c").await;
    run.expect(p2, "/open", 200, "b").await;
    // The whole ACK/NACK sequence per type, in the order the server received it.
    let log = server.log();
    for ty in [CDS, EDS, LDS, RDS] {
        let mut seq: Vec<String> = Vec::new();
        for a in log.iter().filter(|a| a.type_url == ty) {
            let e = format!(
                "v{}:{}",
                a.version,
                if a.error.is_some() { "NACK" } else { "ACK" }
            );
            if seq.last() != Some(&e) {
                seq.push(e);
            }
        }
        let short = ty.rsplit('.').next().unwrap_or(ty);
        run.trace
            .push(format!("{short} sequence: {}", seq.join(" ")));
    }
    proxy.assert_no_panic();
    drop(proxy);
    run.trace
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_ads_end_to_end() {
    scenario("GRPC", Kind::Sluice).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_ads_end_to_end() {
    scenario("DELTA_GRPC", Kind::Sluice).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_503_until_the_first_complete_config() {
    let up = TestUpstream::start("a").await;
    let (port, admin) = (free_port(), free_port());
    let server = XdsServer::start().await;
    // The listener's route never arrives and its fetch never times out (0s = wait forever):
    // the proxy stays unready, and the listener is not served.
    let dir = TempDir::new("xds-ready");
    let config = dir.path("bootstrap.yaml");
    std::fs::write(&config, bootstrap(admin, server.addr, "GRPC")).unwrap();
    let mut hcm = rds("never");
    hcm["rds"]["config_source"]["initial_fetch_timeout"] = json!("0s");
    server.set(Snapshot::from_json(
        "1",
        &[
            listener("web", port, hcm),
            static_cluster("backend", up.port()),
        ],
    ));
    let mut child = spawn_sluice(&config, &dir.path("log"));
    Run::strict().ack(&server, LDS, "1").await;
    let r = ready_status(admin).await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(r, Some(503));
    assert_eq!(
        get(port, "/").await,
        None,
        "a warming listener is not served"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ads_over_a_unix_socket_pipe() {
    let up = TestUpstream::start("u").await;
    let (port, admin) = (free_port(), free_port());
    let dir = TempDir::new("xds-pipe");
    let sock = dir.path("xds.sock");
    let server = XdsServer::start_unix(sock.clone()).await;
    server.set(Snapshot::from_json(
        "1",
        &[
            listener("web", port, rds("r")),
            routes("r", &[("/", "backend")]),
            eds_cluster("backend"),
            cla("backend", &[up.port()]),
        ],
    ));
    let pipe = format!("pipe: {{ path: {} }}", sock.display());
    let proxy = ProxyProcess::start_in(dir, &bootstrap_to(admin, &pipe, "DELTA_GRPC"), admin);
    let mut run = Run::strict();
    run.ack(&server, LDS, "1").await;
    run.expect(port, "/", 200, "u").await;
    let ids = server.node_ids();
    assert!(!ids.is_empty(), "the node is sent");
    assert!(
        ids.iter()
            .all(|i| i == "sidecar~127.0.0.1~test.default~default.svc.cluster.local"),
        "{ids:?}"
    );
    drop(proxy);
}

/// The same scripted server and requests against Envoy 1.40: the ACK/NACK sequence and every
/// request's outcome match sluice's, except the known divergences listed here.
async fn differential(api_type: &str) {
    let sluice = scenario(api_type, Kind::Sluice).await;
    let envoy = scenario(api_type, Kind::Envoy).await;
    // The one known divergence: Envoy implements tcp_backlog_size (v8 is ACKed); sluice does
    // not, and NACKs it naming the field.
    let envoy: Vec<String> = envoy
        .into_iter()
        .map(|l| match l.as_str() {
            "ACK Listener v8" => "NACK Listener v8".to_string(),
            _ if l.starts_with("Listener sequence:") => l.replace("v8:ACK", "v8:NACK"),
            _ => l,
        })
        .collect();
    assert_eq!(sluice, envoy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_differential_sotw() {
    differential("GRPC").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_differential_delta() {
    differential("DELTA_GRPC").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_from_the_server_is_nacked_or_ignored_never_a_crash() {
    let up = TestUpstream::start("ok").await;
    let (port, admin) = (free_port(), free_port());
    let server = XdsServer::start().await;
    let good = || {
        Snapshot::from_json(
            "1",
            &[
                listener("web", port, rds("r")),
                routes("r", &[("/", "backend")]),
                static_cluster("backend", up.port()),
            ],
        )
    };
    server.set(good());
    let proxy = ProxyProcess::start(&bootstrap(admin, server.addr, "GRPC"), admin);
    let mut run = Run::strict();
    run.ack(&server, LDS, "1").await;
    run.expect(port, "/", 200, "ok").await;

    // An Any whose bytes do not decode.
    let mut snap = good();
    snap.version = "2".into();
    let garbage = sluice_xds::convert::Any {
        type_url: LDS.into(),
        value: vec![0xff; 64],
    };
    snap.resources
        .get_mut(LDS)
        .unwrap()
        .insert("junk".into(), garbage);
    server.set(snap);
    run.nack(&server, LDS, "2", &["resources[", "cannot decode"])
        .await;

    // A resource of another type inside a Listener response.
    let mut snap = good();
    snap.version = "3".into();
    let route = snap.resources[RDS]["r"].clone();
    snap.resources
        .get_mut(LDS)
        .unwrap()
        .insert("route".into(), route);
    server.set(snap);
    run.nack(&server, LDS, "3", &["in a Listener response"])
        .await;

    // A route configuration nobody asked for: ignored (the response is ACKed, traffic as before).
    server.send_unrequested(true);
    let mut snap = good();
    snap.version = "4".into();
    let (_, stray) = routes("stray", &[("/", "nope")]);
    let stray = sluice_xds::convert::json_to_any(RDS, &stray).unwrap();
    snap.resources
        .get_mut(RDS)
        .unwrap()
        .insert("stray".into(), stray);
    server.set(snap);
    run.ack(&server, RDS, "4").await;
    run.expect(port, "/", 200, "ok").await;
    assert!(!proxy.log().contains("panicked"));
}
