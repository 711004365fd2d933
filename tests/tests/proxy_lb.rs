//! `sluice proxy` load balancing (round robin, least request, ring hash) and TLS origination.

use std::sync::atomic::Ordering;

use sluice_tests::upstream::{
    harness::{curl, free_port, http_bootstrap, route_to, static_cluster, ProxyProcess, TempDir},
    tls::test_pki,
    TestUpstream,
};

/// One curl process sending `n` keep-alive requests to `url`; returns the status codes.
async fn burst(url: String, n: usize, extra: Vec<String>) -> Vec<u16> {
    tokio::task::spawn_blocking(move || {
        let mut args = vec!["-s".to_string(), "-w".into(), "%{http_code}\\n".into()];
        args.extend(extra);
        for _ in 0..n {
            args.extend(["-o".to_string(), "/dev/null".into(), url.clone()]);
        }
        let out = std::process::Command::new("curl")
            .args(&args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.parse().unwrap())
            .collect()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_is_even() {
    let ups = [
        TestUpstream::start("a").await,
        TestUpstream::start("b").await,
        TestUpstream::start("c").await,
    ];
    let ports: Vec<u16> = ups.iter().map(|u| u.port()).collect();
    let (admin, port) = (free_port(), free_port());
    let _proxy = ProxyProcess::start(
        &http_bootstrap(
            admin,
            port,
            &route_to("pool"),
            &static_cluster("pool", &ports, "    lb_policy: ROUND_ROBIN\n"),
            "",
        ),
        admin,
    );
    let codes = burst(format!("http://127.0.0.1:{port}/"), 300, vec![]).await;
    assert!(codes.iter().all(|c| *c == 200) && codes.len() == 300);
    for u in &ups {
        let n = u.state.request_count();
        assert!(
            (95..=105).contains(&n),
            "round robin share {n}/300 for {}",
            u.state.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_request_prefers_the_fast_host() {
    let fast = TestUpstream::start("fast").await;
    let slow = TestUpstream::start("slow").await;
    slow.state.delay_ms.store(150, Ordering::SeqCst);
    let (admin, port) = (free_port(), free_port());
    let lr = "    lb_policy: LEAST_REQUEST\n    least_request_lb_config: { choice_count: 2 }\n";
    let _proxy = ProxyProcess::start(
        &http_bootstrap(
            admin,
            port,
            &route_to("pool"),
            &static_cluster("pool", &[fast.port(), slow.port()], lr),
            "",
        ),
        admin,
    );
    let url = format!("http://127.0.0.1:{port}/");
    let workers: Vec<_> = (0..8)
        .map(|_| tokio::spawn(burst(url.clone(), 15, vec![])))
        .collect();
    for w in workers {
        assert!(w.await.unwrap().iter().all(|c| *c == 200));
    }
    let (f, s) = (fast.state.request_count(), slow.state.request_count());
    assert_eq!(f + s, 120);
    // Round robin would give 60/60. P2C over two hosts compares two distinct hosts half the
    // time (and then avoids the slow one, which always has requests queued): expected ~70 %+.
    assert!(f >= 75, "least request: fast {f}, slow {s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_hash_is_sticky_and_spreads() {
    let ups = [
        TestUpstream::start("a").await,
        TestUpstream::start("b").await,
        TestUpstream::start("c").await,
        TestUpstream::start("d").await,
    ];
    let ports: Vec<u16> = ups.iter().map(|u| u.port()).collect();
    let (admin, port) = (free_port(), free_port());
    let routes = "              - match: { prefix: \"/\" }\n                route:\n                  cluster: pool\n                  hash_policy:\n                  - header: { header_name: x-user }\n";
    let _proxy = ProxyProcess::start(
        &http_bootstrap(
            admin,
            port,
            routes,
            &static_cluster("pool", &ports, "    lb_policy: RING_HASH\n"),
            "",
        ),
        admin,
    );
    let url = format!("http://127.0.0.1:{port}/");
    // Same key: one host gets all 30.
    burst(url.clone(), 30, vec!["-H".into(), "x-user: alice".into()]).await;
    let counts: Vec<usize> = ups.iter().map(|u| u.state.request_count()).collect();
    assert_eq!(
        counts.iter().filter(|c| **c == 30).count(),
        1,
        "sticky: {counts:?}"
    );
    // 200 distinct keys spread over all four hosts (each >= 10 %).
    let before = counts;
    let mut tasks = Vec::new();
    for chunk in 0..4 {
        let url = url.clone();
        tasks.push(tokio::task::spawn_blocking(move || {
            for k in 0..50 {
                let (s, _, _) = curl(&["-s", "-H", &format!("x-user: user-{chunk}-{k}"), &url]);
                assert_eq!(s, 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for (u, b) in ups.iter().zip(before) {
        let n = u.state.request_count() - b;
        assert!(n >= 20, "ring hash share {n}/200 for {}", u.state.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_origination_with_ca_validation_mtls_and_alpn_h2() {
    let pki = test_pki();
    let other = test_pki();
    let up = TestUpstream::start_tls("secure", pki.server.clone()).await;
    let up_h2 = TestUpstream::start_tls("secure-h2", pki.server_h2.clone()).await;
    let up_mtls = TestUpstream::start_tls("secure-mtls", pki.server_mtls.clone()).await;
    let dir = TempDir::new("tls");
    let ca = dir.path("ca.pem");
    let wrong_ca = dir.path("wrong-ca.pem");
    let (cert, key) = (dir.path("client.pem"), dir.path("client-key.pem"));
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    std::fs::write(&wrong_ca, &other.ca_pem).unwrap();
    std::fs::write(&cert, &pki.client_cert_pem).unwrap();
    std::fs::write(&key, &pki.client_key_pem).unwrap();
    let tls = |ca: &std::path::Path, extra: &str| {
        format!(
            "    transport_socket:\n      name: envoy.transport_sockets.tls\n      typed_config:\n        \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext\n        sni: localhost\n        common_tls_context:\n{extra}          validation_context:\n            trusted_ca: {{ filename: {} }}\n",
            ca.display()
        )
    };
    let client_cert = format!(
        "          tls_certificates:\n          - certificate_chain: {{ filename: {} }}\n            private_key: {{ filename: {} }}\n",
        cert.display(),
        key.display()
    );
    let h2 = "    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        explicit_http_config:\n          http2_protocol_options: {}\n";
    let routes = "              - match: { prefix: \"/bad\" }\n                route: { cluster: wrongca }\n              - match: { prefix: \"/h2\" }\n                route: { cluster: secureh2 }\n              - match: { prefix: \"/mtls\" }\n                route: { cluster: mtls }\n              - match: { prefix: \"/nocert\" }\n                route: { cluster: nocert }\n              - match: { prefix: \"/\" }\n                route: { cluster: secure }\n";
    let clusters = format!(
        "{}{}{}{}{}",
        static_cluster("secure", &[up.port()], &tls(&ca, "")),
        static_cluster("wrongca", &[up.port()], &tls(&wrong_ca, "")),
        static_cluster(
            "secureh2",
            &[up_h2.port()],
            &format!("{}{h2}", tls(&ca, ""))
        ),
        static_cluster("mtls", &[up_mtls.port()], &tls(&ca, &client_cert)),
        static_cluster("nocert", &[up_mtls.port()], &tls(&ca, "")),
    );
    let (admin, port) = (free_port(), free_port());
    let proxy = ProxyProcess::start_in(
        dir,
        &http_bootstrap(admin, port, routes, &clusters, ""),
        admin,
    );
    let get = |path: &'static str| {
        let u = format!("http://127.0.0.1:{port}{path}");
        tokio::task::spawn_blocking(move || curl(&["-s", &u]))
    };
    let (status, _, body) = get("/hello").await.unwrap();
    assert_eq!((status, body.as_str()), (200, "secure"), "{}", proxy.log());
    assert_eq!(
        up.state.last_sni.lock().unwrap().as_deref(),
        Some("localhost")
    );
    // A server certificate from another CA is refused: 503 UF.
    let (status, _, body) = get("/bad").await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(up.state.request_count(), 1);
    // http2 cluster over TLS: ALPN h2, the upstream sees HTTP/2.
    let (status, _, body) = get("/h2").await.unwrap();
    assert_eq!((status, body.as_str()), (200, "secure-h2"));
    assert_eq!(
        up_h2.state.last_request().unwrap().version,
        http::Version::HTTP_2
    );
    // mTLS: the client certificate is presented; without it the upstream refuses the handshake.
    let (status, _, body) = get("/mtls").await.unwrap();
    assert_eq!((status, body.as_str()), (200, "secure-mtls"));
    let (status, _, _) = get("/nocert").await.unwrap();
    assert_eq!(status, 503);
    assert_eq!(up_mtls.state.request_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_dns_cluster_resolves_before_serving() {
    let a = TestUpstream::start("a").await;
    let b = TestUpstream::start("b").await;
    let (admin, port) = (free_port(), free_port());
    // `localhost` may also resolve to ::1 where the upstreams do not listen: V4_ONLY (Envoy's
    // default AUTO would pick ::1 alone when there is one), and retry connect failures.
    let routes = "              - match: { prefix: \"/\" }\n                route:\n                  cluster: dns\n                  retry_policy: { retry_on: connect-failure, num_retries: 3 }\n";
    let clusters = static_cluster("dns", &[a.port(), b.port()], "")
        .replace(
            "type: STATIC",
            "type: STRICT_DNS\n    dns_refresh_rate: 1s\n    dns_lookup_family: V4_ONLY",
        )
        .replace("address: 127.0.0.1", "address: localhost");
    let proxy = ProxyProcess::start(&http_bootstrap(admin, port, routes, &clusters, ""), admin);
    // The very first request already finds resolved hosts (no 503 UH while DNS warms up).
    let codes = burst(format!("http://127.0.0.1:{port}/"), 20, vec![]).await;
    assert!(codes.iter().all(|c| *c == 200), "{codes:?}");
    assert!(a.state.request_count() >= 5 && b.state.request_count() >= 5);
    let clusters = proxy.admin_get("/clusters");
    assert!(
        clusters.contains(&format!(
            "dns::127.0.0.1:{}::health_flags::healthy",
            a.port()
        )),
        "{clusters}"
    );
}
