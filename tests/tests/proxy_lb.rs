//! `sluice proxy` load balancing (round robin, least request, ring hash) and TLS origination.

use std::sync::atomic::Ordering;

use sluice_tests::upstream::{
    harness::{curl, free_port, http_bootstrap, static_cluster, ProxyProcess, TempDir},
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

const ROUTE: &str =
    "              - match: { prefix: \"/\" }\n                route: { cluster: pool }\n";

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
            ROUTE,
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
            ROUTE,
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
async fn tls_origination_with_ca_validation() {
    let pki = test_pki();
    let other = test_pki();
    let up = TestUpstream::start_tls("secure", pki.server.clone()).await;
    let dir = TempDir::new("tls");
    let ca = dir.path("ca.pem");
    let wrong_ca = dir.path("wrong-ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    std::fs::write(&wrong_ca, &other.ca_pem).unwrap();
    let tls = |ca: &std::path::Path| {
        format!(
            "    transport_socket:\n      name: envoy.transport_sockets.tls\n      typed_config:\n        \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext\n        sni: localhost\n        common_tls_context:\n          validation_context:\n            trusted_ca: {{ filename: {} }}\n",
            ca.display()
        )
    };
    let routes = "              - match: { prefix: \"/bad\" }\n                route: { cluster: wrongca }\n              - match: { prefix: \"/\" }\n                route: { cluster: secure }\n";
    let clusters = format!(
        "{}{}",
        static_cluster("secure", &[up.port()], &tls(&ca)),
        static_cluster("wrongca", &[up.port()], &tls(&wrong_ca))
    );
    let (admin, port) = (free_port(), free_port());
    let proxy = ProxyProcess::start_in(
        dir,
        &http_bootstrap(admin, port, routes, &clusters, ""),
        admin,
    );
    let u = format!("http://127.0.0.1:{port}/hello");
    let (status, _, body) = tokio::task::spawn_blocking(move || curl(&["-s", &u]))
        .await
        .unwrap();
    assert_eq!((status, body.as_str()), (200, "secure"), "{}", proxy.log());
    assert_eq!(
        up.state.last_sni.lock().unwrap().as_deref(),
        Some("localhost")
    );
    // A server certificate from another CA is refused: 503 UF.
    let u = format!("http://127.0.0.1:{port}/bad");
    let (status, _, body) = tokio::task::spawn_blocking(move || curl(&["-s", &u]))
        .await
        .unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(up.state.request_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_dns_cluster_resolves_before_serving() {
    let a = TestUpstream::start("a").await;
    let b = TestUpstream::start("b").await;
    let (admin, port) = (free_port(), free_port());
    // `localhost` may also resolve to ::1 where the upstreams do not listen: retry those.
    let routes = "              - match: { prefix: \"/\" }\n                route:\n                  cluster: dns\n                  retry_policy: { retry_on: connect-failure, num_retries: 3 }\n";
    let clusters = static_cluster("dns", &[a.port(), b.port()], "")
        .replace("type: STATIC", "type: STRICT_DNS\n    dns_refresh_rate: 1s")
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
