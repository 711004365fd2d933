//! `sluice proxy` resilience: retries (5xx, connect failure), route timeout 504 UT, circuit
//! breaker overflow 503 UO, outlier ejection and return.

use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use sluice_tests::upstream::{
    harness::{curl, free_port, header, http_bootstrap, route_to, static_cluster, ProxyProcess},
    TestUpstream,
};

async fn get(url: String, extra: &'static [&'static str]) -> (u16, Vec<(String, String)>, String) {
    tokio::task::spawn_blocking(move || {
        let mut args: Vec<&str> = vec!["-s", "-m", "10"];
        args.extend_from_slice(extra);
        args.push(&url);
        curl(&args)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_on_5xx_and_connect_failure() {
    let flaky = TestUpstream::start("flaky").await;
    let good = TestUpstream::start("good").await;
    let dead = free_port();
    let (admin, port) = (free_port(), free_port());
    let routes = format!(
        "{}{}{}",
        "              - match: { prefix: \"/retry\" }\n                route:\n                  cluster: flaky\n                  retry_policy: { retry_on: \"5xx\", num_retries: 3 }\n",
        "              - match: { prefix: \"/noretry\" }\n                route: { cluster: flaky }\n",
        "              - match: { prefix: \"/cf\" }\n                route:\n                  cluster: mixed\n                  retry_policy: { retry_on: \"connect-failure\", num_retries: 2 }\n",
    );
    let clusters = format!(
        "{}{}",
        static_cluster("flaky", &[flaky.port()], ""),
        static_cluster("mixed", &[dead, good.port()], "")
    );
    let proxy = ProxyProcess::start(&http_bootstrap(admin, port, &routes, &clusters, ""), admin);

    // Two 503s then success: the client sees 200, the upstream saw 3 attempts.
    flaky.state.fail_next.store(2, Ordering::SeqCst);
    let (status, _, body) = get(format!("http://127.0.0.1:{port}/retry"), &[]).await;
    assert_eq!((status, body.as_str()), (200, "flaky"));
    assert_eq!(flaky.state.request_count(), 3);
    assert_eq!(proxy.stat("cluster.flaky.upstream_rq_retry"), 2);
    // Without a retry policy the 503 goes to the client.
    flaky.state.fail_next.store(1, Ordering::SeqCst);
    let (status, _, _) = get(format!("http://127.0.0.1:{port}/noretry"), &[]).await;
    assert_eq!(status, 503);
    // More failures than retries: the last upstream 503 is returned.
    flaky.state.fail_next.store(10, Ordering::SeqCst);
    let (status, _, _) = get(format!("http://127.0.0.1:{port}/retry"), &[]).await;
    assert_eq!(status, 503);
    assert_eq!(flaky.state.request_count(), 3 + 1 + 4);
    // Router headers from downstream: Envoy 1.40 treats no request as internal (no
    // internal_address_config), so x-envoy-retry-on / x-envoy-max-retries are stripped and not
    // honoured: the 503 goes to the client after one attempt.
    flaky.state.fail_next.store(1, Ordering::SeqCst);
    let (status, _, _) = get(
        format!("http://127.0.0.1:{port}/noretry"),
        &[
            "-H",
            "x-envoy-retry-on: 5xx",
            "-H",
            "x-envoy-max-retries: 2",
        ],
    )
    .await;
    assert_eq!(status, 503);
    assert_eq!(flaky.state.request_count(), 3 + 1 + 4 + 1);
    let last = flaky.state.last_request().unwrap();
    assert!(!last.headers.contains_key("x-envoy-retry-on"));
    assert!(!last.headers.contains_key("x-envoy-max-retries"));

    // A request body is buffered and replayed on the retry.
    flaky.state.fail_next.store(1, Ordering::SeqCst);
    let (status, _, _) = get(
        format!("http://127.0.0.1:{port}/retry"),
        &["-X", "POST", "--data-binary", "payload-123"],
    )
    .await;
    assert_eq!(status, 200);
    let bodies = flaky.state.bodies.lock().unwrap().clone();
    assert_eq!(
        &bodies[bodies.len() - 2..],
        [&b"payload-123"[..], &b"payload-123"[..]]
    );

    // Connect failure on the dead host is retried (round robin moves on to the live one).
    for _ in 0..10 {
        let (status, _, body) = get(format!("http://127.0.0.1:{port}/cf"), &[]).await;
        assert_eq!((status, body.as_str()), (200, "good"));
    }
    assert!(proxy.stat("cluster.mixed.upstream_cx_connect_fail") >= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_timeout_is_504_ut() {
    let slow = TestUpstream::start("slow").await;
    slow.state.delay_ms.store(2000, Ordering::SeqCst);
    let (admin, port) = (free_port(), free_port());
    let routes = "              - match: { prefix: \"/\" }\n                route: { cluster: slow, timeout: 0.3s }\n";
    let proxy = ProxyProcess::start(
        &http_bootstrap(
            admin,
            port,
            routes,
            &static_cluster("slow", &[slow.port()], ""),
            "",
        ),
        admin,
    );
    let t0 = Instant::now();
    let (status, _, body) = get(format!("http://127.0.0.1:{port}/"), &[]).await;
    let took = t0.elapsed();
    assert_eq!((status, body.as_str()), (504, "upstream request timeout"));
    assert!(
        took >= Duration::from_millis(280) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    assert_eq!(proxy.stat("cluster.slow.upstream_rq_timeout"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breaker_overflow_is_503_uo() {
    let up = TestUpstream::start("cb").await;
    up.state.delay_ms.store(500, Ordering::SeqCst);
    let (admin, port) = (free_port(), free_port());
    let routes = &route_to("cb");
    let cb = "    circuit_breakers:\n      thresholds:\n      - max_connections: 1\n        max_pending_requests: 1\n        max_requests: 2\n";
    let proxy = ProxyProcess::start(
        &http_bootstrap(
            admin,
            port,
            routes,
            &static_cluster("cb", &[up.port()], cb),
            "",
        ),
        admin,
    );
    let url = format!("http://127.0.0.1:{port}/");
    let reqs: Vec<_> = (0..6)
        .map(|_| tokio::spawn(get(url.clone(), &[])))
        .collect();
    let mut ok = 0;
    let mut overflow = 0;
    for r in reqs {
        let (status, headers, body) = r.await.unwrap();
        match status {
            200 => ok += 1,
            503 => {
                assert_eq!(header(&headers, "x-envoy-overloaded"), Some("true"));
                assert!(body.ends_with("reset reason: overflow"), "{body}");
                overflow += 1;
            }
            s => panic!("unexpected status {s}"),
        }
    }
    assert!(ok >= 1 && overflow >= 3, "ok {ok} overflow {overflow}");
    assert!(up.state.connections.load(Ordering::SeqCst) <= 1);
    assert!(proxy.stat("cluster.cb.upstream_rq_pending_overflow") >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_ejection_and_return() {
    let good = TestUpstream::start("good").await;
    let bad = TestUpstream::start("bad").await;
    bad.state.status.store(500, Ordering::SeqCst);
    let (admin, port) = (free_port(), free_port());
    let routes = &route_to("pair");
    let od = "    outlier_detection:\n      consecutive_5xx: 3\n      interval: 0.5s\n      base_ejection_time: 1s\n      max_ejection_percent: 50\n";
    let proxy = ProxyProcess::start(
        &http_bootstrap(
            admin,
            port,
            routes,
            &static_cluster("pair", &[good.port(), bad.port()], od),
            "",
        ),
        admin,
    );
    let url = format!("http://127.0.0.1:{port}/");
    // Round robin: the bad host gets every other request until its 3rd consecutive 5xx.
    for _ in 0..6 {
        get(url.clone(), &[]).await;
    }
    assert_eq!(bad.state.request_count(), 3);
    let clusters = proxy.admin_get("/clusters");
    let bad_flags = format!("pair::{}::health_flags::/failed_outlier_check", bad.addr);
    assert!(clusters.contains(&bad_flags), "{clusters}");
    // Ejected: everything goes to the good host.
    for _ in 0..10 {
        let (status, _, body) = get(url.clone(), &[]).await;
        assert_eq!((status, body.as_str()), (200, "good"));
    }
    assert_eq!(bad.state.request_count(), 3);
    assert_eq!(
        proxy.stat("cluster.pair.outlier_detection.ejections_enforced_total"),
        1
    );
    // The host returns at the first outlier sweep (every 0.5 s from the cluster's creation) at
    // least base_ejection_time (1 s) after its ejection: at most 1.5 s after it (and, now
    // healthy, stays).
    bad.state.status.store(200, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1700)).await;
    for _ in 0..10 {
        let (status, _, _) = get(url.clone(), &[]).await;
        assert_eq!(status, 200);
    }
    assert!(
        bad.state.request_count() >= 3 + 4,
        "bad host did not return: {}",
        bad.state.request_count()
    );
    let clusters = proxy.admin_get("/clusters");
    assert!(
        clusters.contains(&format!("pair::{}::health_flags::healthy", bad.addr)),
        "{clusters}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_health_check_excludes_failing_host() {
    let good = TestUpstream::start("good").await;
    let bad = TestUpstream::start("bad").await;
    bad.state.status.store(503, Ordering::SeqCst);
    let (admin, port) = (free_port(), free_port());
    let routes = &route_to("hc");
    // no_traffic_interval: Envoy's default 60 s would hold the first recheck (scheduled before
    // any traffic) past the end of the test.
    let hc = "    health_checks:\n    - timeout: 1s\n      interval: 0.2s\n      no_traffic_interval: 0.2s\n      unhealthy_threshold: 1\n      healthy_threshold: 1\n      http_health_check: { path: /healthz }\n";
    let proxy = ProxyProcess::start(
        &http_bootstrap(
            admin,
            port,
            routes,
            &static_cluster("hc", &[good.port(), bad.port()], hc),
            "",
        ),
        admin,
    );
    let app_requests = |u: &TestUpstream| {
        u.state
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path != "/healthz")
            .count()
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let clusters = proxy.admin_get("/clusters");
    assert!(
        clusters.contains(&format!(
            "hc::{}::health_flags::/failed_active_hc",
            bad.addr
        )),
        "{clusters}"
    );
    let hc_req = bad
        .state
        .requests
        .lock()
        .unwrap()
        .iter()
        .find(|r| r.path == "/healthz")
        .cloned()
        .unwrap();
    assert_eq!(hc_req.headers["host"], "hc");
    let url = format!("http://127.0.0.1:{port}/");
    for _ in 0..8 {
        let (status, _, body) = get(url.clone(), &[]).await;
        assert_eq!((status, body.as_str()), (200, "good"));
    }
    assert_eq!(app_requests(&bad), 0);
    // Recovers: the next passing check puts it back in rotation.
    bad.state.status.store(200, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(600)).await;
    for _ in 0..8 {
        assert_eq!(get(url.clone(), &[]).await.0, 200);
    }
    assert!(
        app_requests(&bad) >= 3,
        "bad host back in rotation: {}",
        app_requests(&bad)
    );
    assert!(proxy.stat("cluster.hc.health_check.failure") >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_response_body_hits_idle_timeout() {
    let up = TestUpstream::start("stall").await;
    up.state.stall_body_ms.store(5000, Ordering::SeqCst);
    let (admin, port) = (free_port(), free_port());
    let routes = "              - match: { prefix: \"/\" }\n                route: { cluster: stall, idle_timeout: 0.3s }\n";
    let _proxy = ProxyProcess::start(
        &http_bootstrap(
            admin,
            port,
            routes,
            &static_cluster("stall", &[up.port()], ""),
            "",
        ),
        admin,
    );
    let url = format!("http://127.0.0.1:{port}/");
    let t0 = Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args(["-s", "-m", "10", &url])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let took = t0.elapsed();
    // Headers and the first chunk arrived, then the stream was cut after ~0.3 s idle.
    assert_eq!(String::from_utf8_lossy(&out.stdout), "partial ");
    assert!(
        !out.status.success(),
        "curl should see a truncated transfer"
    );
    assert!(took < Duration::from_secs(2), "{took:?}");
}

/// A malformed chunked request body is the client's protocol error (issue 13, item 9): the client
/// gets 400 with `connection: close`, the upstream is not blamed, and outlier detection never
/// ejects a healthy host for it (before the fix 8 such requests ejected it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_chunked_bodies_are_the_clients_fault() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let up = TestUpstream::start("only").await;
    let (admin, port) = (free_port(), free_port());
    let od = "    outlier_detection:\n      consecutive_5xx: 3\n      interval: 0.2s\n      base_ejection_time: 30s\n      max_ejection_percent: 100\n";
    let proxy = ProxyProcess::start(
        &http_bootstrap(
            admin,
            port,
            &route_to("one"),
            &static_cluster("one", &[up.port()], od),
            "",
        ),
        admin,
    );
    for _ in 0..8 {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(
            b"POST /upload HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZZ\r\n",
        )
        .await
        .unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer))
            .await
            .expect("the proxy answers and closes")
            .unwrap();
        let text = String::from_utf8_lossy(&answer).to_ascii_lowercase();
        assert!(text.starts_with("http/1.1 400"), "{text}");
        assert!(text.contains("connection: close"), "{text}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        proxy.stat("cluster.one.outlier_detection.ejections_enforced_total"),
        0
    );
    let url = format!("http://127.0.0.1:{port}/");
    let (status, _, body) = get(url, &[]).await;
    assert_eq!((status, body.as_str()), (200, "only"));
}
