//! `sluice proxy` operations: hot reload (good and bad files, traffic flowing throughout,
//! listener added), malformed traffic (garbage, oversized headers, slowloris), tcp_proxy with a
//! server-speaks-first upstream on an original-destination listener, admin endpoints.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use sluice_tests::upstream::{
    assert_banner_then_echo, banner_server,
    harness::{curl, curl_opt, free_port, http_bootstrap, route_to, static_cluster, ProxyProcess},
    TestUpstream,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

fn write_atomically(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A second HCM listener named `extra` on `port` routing to `cluster`, inserted before clusters.
fn with_extra_listener(yaml: &str, port: u16, cluster: &str) -> String {
    let l = format!(
        r#"  - name: extra
    address:
      socket_address: {{ address: 127.0.0.1, port_value: {port} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: extra
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: {cluster} }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
"#
    );
    yaml.replacen("  clusters:\n", &l, 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_good_and_bad_while_serving() {
    let a = TestUpstream::start("a").await;
    let b = TestUpstream::start("b").await;
    let (admin, port, port2) = (free_port(), free_port(), free_port());
    let clusters = format!(
        "{}{}",
        static_cluster("a", &[a.port()], ""),
        static_cluster("b", &[b.port()], "")
    );
    let v1 = http_bootstrap(admin, port, &route_to("a"), &clusters, "");
    let proxy = ProxyProcess::start(&v1, admin);

    // Background traffic: keep-alive bursts, every status recorded.
    let stop = Arc::new(AtomicBool::new(false));
    let url = format!("http://127.0.0.1:{port}/");
    let traffic = {
        let stop = stop.clone();
        tokio::task::spawn_blocking(move || {
            let mut codes = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let mut args = vec!["-s".to_string(), "-w".into(), "%{http_code}\\n".into()];
                for _ in 0..10 {
                    args.extend(["-o".to_string(), "/dev/null".into(), url.clone()]);
                }
                let out = std::process::Command::new("curl")
                    .args(&args)
                    .output()
                    .unwrap();
                codes.extend(
                    String::from_utf8_lossy(&out.stdout)
                        .lines()
                        .map(|l| l.parse::<u16>().unwrap_or(0)),
                );
            }
            codes
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(a.state.request_count() > 0);

    let a_conns_before = a.state.connections.load(Ordering::SeqCst);
    // Good reload: route to b and add a listener.
    let v2 = with_extra_listener(
        &http_bootstrap(admin, port, &route_to("b"), &clusters, ""),
        port2,
        "a",
    );
    write_atomically(&proxy.config, &v2);
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.state.request_count() == 0 {
        assert!(
            Instant::now() < deadline,
            "reload not applied; log:\n{}",
            proxy.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let a_after = a.state.request_count();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        a.state.request_count(),
        a_after,
        "main listener still routes to a"
    );
    let u2 = format!("http://127.0.0.1:{port2}/");
    let (s, _, body) = tokio::task::spawn_blocking(move || curl(&["-s", &u2]))
        .await
        .unwrap();
    assert_eq!((s, body.as_str()), (200, "a"), "added listener serves");
    // Cluster a is unchanged by the reload: it is kept with its connection pool.
    let a_conns = a.state.connections.load(Ordering::SeqCst);
    assert_eq!(
        a_conns, a_conns_before,
        "cluster a rebuilt on reload (pool lost)"
    );
    assert_eq!(proxy.stat("server.reloads"), 1);

    // Bad reload: rejected with the field path, the running config keeps serving.
    let bad = v2.replace(
        "    connect_timeout: 1s\n",
        "    connect_timeout: 1s\n    lb_policy: NOT_A_POLICY\n",
    );
    write_atomically(&proxy.config, &bad);
    let deadline = Instant::now() + Duration::from_secs(5);
    while proxy.stat("server.reload_failures") == 0 {
        assert!(
            Instant::now() < deadline,
            "bad config not noticed; log:\n{}",
            proxy.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        proxy
            .log()
            .contains("static_resources.clusters[0].lb_policy"),
        "{}",
        proxy.log()
    );
    let b_before = b.state.request_count();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let codes = traffic.await.unwrap();
    assert!(
        b.state.request_count() > b_before,
        "traffic still flows to b after the bad file"
    );
    assert!(codes.len() > 20, "too little traffic: {}", codes.len());
    assert!(
        codes.iter().all(|c| *c == 200),
        "non-200 during reloads: {codes:?}"
    );
    assert_eq!(proxy.stat("server.reloads"), 1);
    // Istio's request counter survived the reload: every answer of both versions is counted
    // (the traffic's and the added listener's one request).
    let prom = proxy.admin_get("/stats/prometheus");
    let counted: u64 = prom
        .lines()
        .filter(|l| l.starts_with("istio_requests_total{") && l.contains("response_code=\"200\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(counted, codes.len() as u64 + 1, "{prom}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_traffic_is_rejected_and_others_served() {
    let up = TestUpstream::start("a").await;
    let (admin, port) = (free_port(), free_port());
    let yaml = http_bootstrap(
        admin,
        port,
        &route_to("a"),
        &static_cluster("a", &[up.port()], ""),
        "          request_timeout: 1s\n",
    );
    let _proxy = ProxyProcess::start(&yaml, admin);

    // Garbage request line -> 400.
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"GARBAGE \x01\x02 NOT-HTTP\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");

    // Oversized headers (> 60 KiB) -> 431 or close.
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let _ = s.write_all(big.as_bytes()).await;
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(n == 0 || text.starts_with("HTTP/1.1 431"), "{text}");

    // Slowloris: headers trickle in; the connection is closed within bounded time, while
    // another client is served normally.
    let mut slow = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let t0 = Instant::now();
    let trickle = tokio::spawn(async move {
        let mut buf = [0u8; 256];
        loop {
            if slow.write_all(b"X-a: b\r\n").await.is_err() {
                return t0.elapsed();
            }
            match tokio::time::timeout(Duration::from_millis(200), slow.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return t0.elapsed(),
                Ok(Ok(_)) => return t0.elapsed(), // 408 or similar, then close
                Err(_) => {}
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "slowloris connection never closed"
            );
        }
    });
    let u = format!("http://127.0.0.1:{port}/ok");
    let (status, _, body) = tokio::task::spawn_blocking(move || curl(&["-s", "-m", "3", &u]))
        .await
        .unwrap();
    assert_eq!((status, body.as_str()), (200, "a"));
    let closed_after = trickle.await.unwrap();
    assert!(
        closed_after < Duration::from_secs(4),
        "slowloris closed after {closed_after:?}"
    );
    // Still serving.
    let u = format!("http://127.0.0.1:{port}/after");
    assert_eq!(
        tokio::task::spawn_blocking(move || curl(&["-s", &u]))
            .await
            .unwrap()
            .0,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_proxy_server_speaks_first_and_admin() {
    let (banner, _task) = banner_server(b"220 banner ready\r\n").await;
    let up = TestUpstream::start("a").await;
    let (admin, port, tcp_port) = (free_port(), free_port(), free_port());
    let tcp_listener = format!(
        r#"  - name: tcp
    address:
      socket_address: {{ address: 127.0.0.1, port_value: {tcp_port} }}
    listener_filters:
    - name: envoy.filters.listener.original_dst
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: banner
          cluster: banner
  clusters:
"#
    );
    let clusters = format!(
        "{}{}",
        static_cluster("a", &[up.port()], ""),
        static_cluster("banner", &[banner.port()], "")
    );
    let yaml = http_bootstrap(admin, port, &route_to("a"), &clusters, "").replacen(
        "  clusters:\n",
        &tcp_listener,
        1,
    );
    let proxy = ProxyProcess::start(&yaml, admin);

    // The client sends nothing: detection gives up after its short budget and the banner arrives.
    let entry = SocketAddr::from(([127, 0, 0, 1], tcp_port));
    assert_banner_then_echo(entry, b"220 banner ready\r\n", b"HELO x\r\n").await;

    // Admin endpoints.
    let ready = curl_opt(&["-s", &format!("http://{}/ready", proxy.admin)]).unwrap();
    assert_eq!((ready.0, ready.2.as_str()), (200, "LIVE\n"));
    let dump = proxy.admin_get("/config_dump");
    assert!(
        dump.contains("BootstrapConfigDump") && dump.contains("static_resources"),
        "{dump}"
    );
    let clusters = proxy.admin_get("/clusters");
    assert!(
        clusters.contains(&format!("a::{}::health_flags::healthy", up.addr)),
        "{clusters}"
    );
    assert!(
        clusters.contains("a::default_priority::max_connections::1024"),
        "{clusters}"
    );
    let u = format!("http://127.0.0.1:{port}/");
    tokio::task::spawn_blocking(move || curl(&["-s", &u]))
        .await
        .unwrap();
    assert_eq!(proxy.stat("cluster.a.upstream_rq_total"), 1);
    assert_eq!(proxy.stat("http.ingress.downstream_rq_2xx"), 1);
    assert!(proxy.stat("tcp.banner.downstream_cx_total") >= 1);
    let prom = proxy.admin_get("/stats/prometheus");
    assert!(
        prom.contains("# TYPE envoy_cluster_upstream_rq_total counter"),
        "{prom}"
    );
    assert!(
        prom.contains("envoy_cluster_upstream_rq_total{envoy_cluster_name=\"a\"} 1"),
        "{prom}"
    );
    assert!(
        prom.contains(
            "envoy_http_downstream_rq_xx{envoy_response_code_class=\"2\",\
             envoy_http_conn_manager_prefix=\"ingress\"} 1"
        ),
        "{prom}"
    );
    // Istio's metrics: cluster `a` is not an Istio name, so the destination is unknown; the port
    // is the listener's.
    let istio = format!(
        "istio_requests_total{{reporter=\"source\",destination_service=\"unknown\",\
         destination_service_name=\"unknown\",destination_service_namespace=\"unknown\",\
         destination_port=\"{port}\",request_protocol=\"http\",response_code=\"200\",\
         response_flags=\"-\"}} 1"
    );
    assert!(prom.contains(&istio), "{istio} in\n{prom}");
    assert!(
        prom.contains("# TYPE istio_request_duration_milliseconds histogram"),
        "{prom}"
    );
    assert!(
        prom.contains("istio_tcp_connections_opened_total{reporter=\"source\""),
        "{prom}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_without_polling() {
    let a = TestUpstream::start("a").await;
    let b = TestUpstream::start("b").await;
    let (admin, port) = (free_port(), free_port());
    let clusters = format!(
        "{}{}",
        static_cluster("a", &[a.port()], ""),
        static_cluster("b", &[b.port()], "")
    );
    let dir = sluice_tests::upstream::harness::TempDir::new("hup");
    let proxy = ProxyProcess::start_with(
        dir,
        &http_bootstrap(admin, port, &route_to("a"), &clusters, ""),
        admin,
        0,
    );
    let get = || {
        let u = format!("http://127.0.0.1:{port}/");
        tokio::task::spawn_blocking(move || curl(&["-s", &u]).2)
    };
    assert_eq!(get().await.unwrap(), "a");
    write_atomically(
        &proxy.config,
        &http_bootstrap(admin, port, &route_to("b"), &clusters, ""),
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        get().await.unwrap(),
        "a",
        "no polling: file change alone does nothing"
    );
    proxy.reload().await;
    assert_eq!(get().await.unwrap(), "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_proxy_weighted_clusters_and_idle_timeout() {
    let (one, _t1) = banner_server(b"one\r\n").await;
    let (two, _t2) = banner_server(b"two\r\n").await;
    let (admin, tcp_port) = (free_port(), free_port());
    let yaml = tcp_proxy_bootstrap(
        admin,
        tcp_port,
        "stat_prefix: split
          idle_timeout: 0.5s
          weighted_clusters:
            clusters:
            - { name: one, weight: 1 }
            - { name: two, weight: 1 }",
        &format!(
            "{}{}",
            static_cluster("one", &[one.port()], ""),
            static_cluster("two", &[two.port()], "")
        ),
    );
    let proxy = ProxyProcess::start(&yaml, admin);
    let mut seen = std::collections::HashMap::new();
    for _ in 0..30 {
        let mut s = TcpStream::connect(("127.0.0.1", tcp_port)).await.unwrap();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        *seen
            .entry(String::from_utf8_lossy(&buf[..n]).to_string())
            .or_insert(0) += 1;
    }
    let (a, b) = (
        seen.get("one\r\n").copied().unwrap_or(0),
        seen.get("two\r\n").copied().unwrap_or(0),
    );
    assert_eq!(a + b, 30, "{seen:?}");
    assert!(a >= 5 && b >= 5, "weighted split {a}/{b}");
    // Idle connection closed after idle_timeout.
    let mut s = TcpStream::connect(("127.0.0.1", tcp_port)).await.unwrap();
    let mut buf = [0u8; 16];
    let _ = s.read(&mut buf).await.unwrap();
    let t0 = Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
        .await
        .expect("closed by idle_timeout")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(
        t0.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t0.elapsed()
    );
    assert!(proxy.stat("tcp.split.idle_timeout") >= 1);
}

/// `max_downstream_connection_duration` closes a connection that long after it was accepted,
/// however busy it is (an echo every 100 ms keeps it far from `idle_timeout`), and counts it in
/// `tcp.<stat_prefix>.max_downstream_connection_duration`, as Envoy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_proxy_max_downstream_connection_duration_closes_a_busy_connection() {
    let (echo, _t) = banner_server(b"hi\r\n").await;
    let (admin, tcp_port) = (free_port(), free_port());
    let yaml = tcp_proxy_bootstrap(
        admin,
        tcp_port,
        "stat_prefix: capped
          cluster: echo
          idle_timeout: 10s
          max_downstream_connection_duration: 0.8s",
        &static_cluster("echo", &[echo.port()], ""),
    );
    let proxy = ProxyProcess::start(&yaml, admin);
    let t0 = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", tcp_port)).await.unwrap();
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"hi\r\n");
    let mut echoed = 0;
    let closed_after = loop {
        assert!(t0.elapsed() < Duration::from_secs(5), "never closed");
        if s.write_all(b"ping").await.is_err() {
            break t0.elapsed();
        }
        match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break t0.elapsed(),
            Ok(Ok(_)) => {
                echoed += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(_) => {}
        }
    };
    assert!(echoed >= 3, "the connection carried {echoed} echoes");
    assert!(
        closed_after >= Duration::from_millis(750) && closed_after < Duration::from_millis(2000),
        "closed after {closed_after:?}"
    );
    assert_eq!(
        proxy.stat("tcp.capped.max_downstream_connection_duration"),
        1
    );
    assert_eq!(proxy.stat("tcp.capped.idle_timeout"), 0);
}

/// A bootstrap with an admin on `admin` and one listener on `port` whose only filter is a
/// tcp_proxy with `fields` (YAML at the typed_config's indentation), and `clusters`.
fn tcp_proxy_bootstrap(admin: u16, port: u16, fields: &str, clusters: &str) -> String {
    format!(
        r#"admin:
  address:
    socket_address: {{ address: 127.0.0.1, port_value: {admin} }}
static_resources:
  listeners:
  - name: tcp
    address:
      socket_address: {{ address: 127.0.0.1, port_value: {port} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          {fields}
  clusters:
{clusters}"#
    )
}

/// `additional_addresses`: the listener takes connections on each of its addresses, as Envoy's
/// (istiod's dual-stack listeners put `::` beside `0.0.0.0`: the IPv6 socket is IPv6 only, so
/// both bind), and `/listeners` shows them as Envoy does (a line per address; JSON
/// `additional_local_addresses`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_additional_addresses_each_take_connections() {
    let (echo, _t) = banner_server(b"hi\r\n").await;
    let (admin, port) = (free_port(), free_port());
    let v4_only = tcp_proxy_bootstrap(
        admin,
        port,
        "stat_prefix: dual
          cluster: echo",
        &static_cluster("echo", &[echo.port()], ""),
    )
    .replace(
        &format!("address: 127.0.0.1, port_value: {port} }}"),
        &format!("address: 0.0.0.0, port_value: {port} }}"),
    );
    let dual = v4_only.replace(
        &format!("      socket_address: {{ address: 0.0.0.0, port_value: {port} }}\n"),
        &format!(
            "      socket_address: {{ address: 0.0.0.0, port_value: {port} }}\n    \
             additional_addresses:\n    \
             - address: {{ socket_address: {{ address: \"::\", port_value: {port} }} }}\n"
        ),
    );
    assert!(dual.contains("additional_addresses"), "{dual}");
    let (v4, v6) = (format!("127.0.0.1:{port}"), format!("[::1]:{port}"));
    let banner = |entry: String| async move {
        let mut s = TcpStream::connect(&entry).await?;
        let mut buf = [0u8; 8];
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await??;
        Ok::<_, Box<dyn std::error::Error>>(buf[..n].to_vec())
    };
    // SIGHUP only: a rejected reload is not retried behind the test's back.
    let proxy = ProxyProcess::start_with(
        sluice_tests::upstream::harness::TempDir::new("dual"),
        &v4_only,
        admin,
        0,
    );
    assert_eq!(banner(v4.clone()).await.unwrap(), b"hi\r\n");
    assert!(banner(v6.clone()).await.is_err(), "no IPv6 address yet");
    // Adding the IPv6 address re-binds the listener: its IPv4 socket is taken over, not
    // bound anew (that would fail: the old one is still open).
    std::fs::write(&proxy.config, &dual).unwrap();
    proxy.reload().await;
    assert!(!proxy.log().contains("config rejected"), "{}", proxy.log());
    for entry in [v4, v6] {
        assert_eq!(banner(entry.clone()).await.unwrap(), b"hi\r\n", "{entry}");
    }
    assert_eq!(
        proxy.admin_get("/listeners"),
        format!("tcp::0.0.0.0:{port}\ntcp::[::]:{port}\n")
    );
    let json: serde_json::Value =
        serde_json::from_str(&proxy.admin_get("/listeners?format=json")).unwrap();
    assert_eq!(
        json["listener_statuses"][0]["additional_local_addresses"],
        serde_json::json!([{"socket_address": {"address": "::", "port_value": port}}])
    );
}
