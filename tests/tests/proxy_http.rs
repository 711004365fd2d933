//! `sluice proxy` HTTP behaviour with real clients: keep-alive reuse, Envoy's default headers,
//! access log, HTTP/2 (curl + h2load), WebSocket upgrade, 404 NR, 503 UH/UF.

use std::time::Duration;

use sluice_tests::upstream::{
    harness::{
        curl, free_port, header, http_bootstrap, route_to, static_cluster, ProxyProcess, TempDir,
    },
    TestUpstream,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

fn is_uuid_v4(s: &str) -> bool {
    let b = s.as_bytes();
    s.len() == 36
        && [8, 13, 18, 23].iter().all(|i| b[*i] == b'-')
        && b[14] == b'4'
        && s.chars()
            .filter(|c| *c != '-')
            .all(|c| c.is_ascii_hexdigit())
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// curl's `<status> <http version>` for `url` with the protocol option `flag`.
async fn curl_code_version(flag: &'static str, url: String) -> String {
    let out = blocking(move || {
        std::process::Command::new("curl")
            .args([
                "-s",
                flag,
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{http_version}",
                &url,
            ])
            .output()
            .unwrap()
    })
    .await;
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A bootstrap (admin on `admin`) whose listener on `port` has `routes`, and one cluster
/// `backend` with `up` as its endpoint.
fn backend_bootstrap(admin: u16, port: u16, routes: &str, up: &TestUpstream) -> String {
    http_bootstrap(
        admin,
        port,
        routes,
        &static_cluster("backend", &[up.port()], ""),
        "",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_headers_access_log_and_local_replies() {
    let up = TestUpstream::start("a").await;
    let (admin, port) = (free_port(), free_port());
    let dir = TempDir::new("http");
    let access = dir.path("access.log");
    let dead = free_port();
    let routes = "              - match: { prefix: \"/dead\" }\n                route: { cluster: dead }\n              - match: { prefix: \"/empty\" }\n                route: { cluster: empty }\n              - match: { prefix: \"/\" }\n                route: { cluster: backend }\n";
    let clusters = format!(
        "{}{}{}",
        static_cluster("backend", &[up.port()], ""),
        static_cluster("dead", &[dead], ""),
        static_cluster("empty", &[], "")
    );
    let hcm_extra = format!(
        "          access_log:\n          - name: envoy.access_loggers.file\n            typed_config:\n              \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n              path: {}\n",
        access.display()
    );
    let yaml = http_bootstrap(admin, port, routes, &clusters, &hcm_extra);
    let proxy = ProxyProcess::start_in(dir, &yaml, admin);

    // Keep-alive: 20 requests on one curl connection -> the upstream sees far fewer connections.
    let url = format!("http://127.0.0.1:{port}/k");
    let urls: Vec<String> = (0..20).map(|i| format!("{url}{i}")).collect();
    let out = blocking(move || {
        let mut args = vec!["-s".to_string(), "-w".into(), "%{http_code}\\n".into()];
        for u in urls {
            args.extend(["-o".to_string(), "/dev/null".into(), u]);
        }
        std::process::Command::new("curl")
            .args(&args)
            .output()
            .unwrap()
    })
    .await;
    let codes = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        codes.lines().filter(|l| *l == "200").count(),
        20,
        "codes: {codes}"
    );
    let conns = up
        .state
        .connections
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        conns <= 2,
        "upstream saw {conns} connections for 20 keep-alive requests"
    );
    assert_eq!(up.state.request_count(), 20);

    // Envoy default headers (use_remote_address false): XFF untouched, XFP set, request id.
    let u = format!("http://127.0.0.1:{port}/hdr");
    let (status, headers, body) =
        blocking(move || curl(&["-s", "-H", "x-forwarded-for: 203.0.113.9", &u])).await;
    assert_eq!(status, 200);
    assert_eq!(body, "a");
    assert!(
        header(&headers, "x-envoy-upstream-service-time").is_some(),
        "{headers:?}"
    );
    let rec = up.state.last_request().unwrap();
    assert_eq!(rec.path, "/hdr");
    assert_eq!(rec.headers["x-forwarded-for"], "203.0.113.9");
    assert_eq!(rec.headers["x-forwarded-proto"], "http");
    assert_eq!(rec.headers["host"], format!("127.0.0.1:{port}"));
    let rid = rec.headers["x-request-id"].to_str().unwrap().to_string();
    assert!(is_uuid_v4(&rid), "x-request-id {rid}");
    assert_eq!(rec.headers["x-envoy-expected-rq-timeout-ms"], "15000");
    // An incoming x-request-id is kept.
    let u = format!("http://127.0.0.1:{port}/rid");
    blocking(move || curl(&["-s", "-H", "x-request-id: my-id-1", &u])).await;
    assert_eq!(
        up.state.last_request().unwrap().headers["x-request-id"],
        "my-id-1"
    );

    // 503 UF: connection refused.
    let u = format!("http://127.0.0.1:{port}/dead");
    let (status, _, body) = blocking(move || curl(&["-s", &u])).await;
    assert_eq!(status, 503);
    assert!(body.starts_with("upstream connect error or disconnect/reset before headers. reset reason: remote connection failure"), "{body}");
    // 503 UH: no hosts.
    let u = format!("http://127.0.0.1:{port}/empty");
    let (status, _, body) = blocking(move || curl(&["-s", &u])).await;
    assert_eq!((status, body.as_str()), (503, "no healthy upstream"));

    // Access log: Envoy's default format, with flags.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = std::fs::read_to_string(&access).expect("access log written");
    assert!(
        log.lines()
            .any(|l| l.contains("\"GET /hdr HTTP/1.1\" 200 - ") && l.contains("\"203.0.113.9\"")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("\"GET /dead HTTP/1.1\" 503 UF ")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("\"GET /empty HTTP/1.1\" 503 UH ")),
        "{log}"
    );
    assert!(log.starts_with('['), "{log}");
    assert!(proxy.stat("http.ingress.downstream_rq_total") >= 24);
    assert!(proxy.stat("cluster.backend.upstream_rq_2xx") >= 22);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_is_404_nr() {
    let up = TestUpstream::start("a").await;
    let (admin, port) = (free_port(), free_port());
    let routes =
        "              - match: { path: \"/only\" }\n                route: { cluster: backend }\n";
    let yaml = backend_bootstrap(admin, port, routes, &up)
        .replace("domains: [\"*\"]", "domains: [\"svc.local\"]");
    let proxy = ProxyProcess::start(&yaml, admin);
    let u = format!("http://127.0.0.1:{port}/only");
    let (s1, _, _) = blocking({
        let u = u.clone();
        move || curl(&["-s", "-H", "host: svc.local", &u])
    })
    .await;
    let (s2, _, b2) = blocking({
        let u = u.clone();
        move || curl(&["-s", "-H", "host: other.local", &u])
    })
    .await;
    let u3 = format!("http://127.0.0.1:{port}/nope");
    let (s3, _, _) = blocking(move || curl(&["-s", "-H", "host: svc.local", &u3])).await;
    assert_eq!((s1, s2, s3), (200, 404, 404));
    assert!(b2.is_empty());
    assert_eq!(proxy.stat("http.ingress.no_route"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_downstream_and_upstream() {
    let up = TestUpstream::start("h2").await;
    let (admin, port) = (free_port(), free_port());
    let h2 = "    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        explicit_http_config:\n          http2_protocol_options: {}\n";
    let routes = &route_to("backend");
    let yaml = http_bootstrap(
        admin,
        port,
        routes,
        &static_cluster("backend", &[up.port()], h2),
        "",
    );
    let proxy = ProxyProcess::start(&yaml, admin);

    let u = format!("http://127.0.0.1:{port}/x");
    assert_eq!(
        curl_code_version("--http2-prior-knowledge", u).await,
        "200 2"
    );
    assert_eq!(
        up.state.last_request().unwrap().version,
        http::Version::HTTP_2
    );

    let u = format!("http://127.0.0.1:{port}/load");
    let out = blocking(move || {
        std::process::Command::new("h2load")
            .args(["-n", "400", "-c", "4", "-m", "10", &u])
            .output()
            .expect("run h2load")
    })
    .await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("400 succeeded, 0 failed"), "{text}");
    assert!(text.contains("status codes: 400 2xx"), "{text}");
    // All 400 multiplexed on HTTP/2 upstream connections: few connections.
    let conns = up
        .state
        .connections
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(conns <= 4, "h2 upstream connections: {conns}");
    assert!(proxy.stat("cluster.backend.upstream_rq_2xx") >= 401);
}

/// `use_downstream_protocol_config` (istiod's on every cluster of a port whose protocol it
/// sniffs): an HTTP/2 request goes upstream over HTTP/2, an HTTP/1.1 one over HTTP/1.1, one
/// after the other on the same cluster and host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn use_downstream_protocol_follows_each_request() {
    let up = TestUpstream::start("either").await;
    let (admin, port) = (free_port(), free_port());
    let opts = "    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        common_http_protocol_options: {idle_timeout: 300s}\n        use_downstream_protocol_config: {http_protocol_options: {}, http2_protocol_options: {}}\n";
    let yaml = http_bootstrap(
        admin,
        port,
        &route_to("backend"),
        &static_cluster("backend", &[up.port()], opts),
        "",
    );
    let _proxy = ProxyProcess::start(&yaml, admin);
    for (flag, want_code, want) in [
        ("--http2-prior-knowledge", "200 2", http::Version::HTTP_2),
        ("--http1.1", "200 1.1", http::Version::HTTP_11),
        ("--http2-prior-knowledge", "200 2", http::Version::HTTP_2),
    ] {
        let u = format!("http://127.0.0.1:{port}/x");
        assert_eq!(curl_code_version(flag, u).await, want_code, "{flag}");
        assert_eq!(up.state.last_request().unwrap().version, want, "{flag}");
    }
}

/// A cluster's `idle_timeout` (istiod sets 300 s on its passthrough clusters): the pooled
/// connection of a host that gets no more requests is closed by the idle sweep (within 1.25
/// times the timeout), and the next request opens a new one; without it (Envoy's 1 h
/// default) the connection stays open and is reused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_idle_timeout_closes_pooled_connections() {
    use std::sync::atomic::Ordering::SeqCst;
    let (short, long) = (
        TestUpstream::start("short").await,
        TestUpstream::start("long").await,
    );
    let (admin, port) = (free_port(), free_port());
    let opts = "    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        common_http_protocol_options: {idle_timeout: 0.4s}\n        explicit_http_config: {http_protocol_options: {}}\n";
    let routes = format!(
        "              - match: {{ prefix: \"/short\" }}\n                route: {{ cluster: short }}\n{}",
        route_to("long")
    );
    let clusters = static_cluster("short", &[short.port()], opts)
        + &static_cluster("long", &[long.port()], "");
    let proxy = ProxyProcess::start(&http_bootstrap(admin, port, &routes, &clusters, ""), admin);
    for path in ["/short", "/long"] {
        let u = format!("http://127.0.0.1:{port}{path}");
        assert_eq!(curl_code_version("--http1.1", u).await, "200 1.1", "{path}");
    }
    assert_eq!(
        (short.state.open.load(SeqCst), long.state.open.load(SeqCst)),
        (1, 1)
    );
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    assert_eq!(short.state.open.load(SeqCst), 0, "closed by the idle sweep");
    assert_eq!(
        long.state.open.load(SeqCst),
        1,
        "kept under the 1 h default"
    );
    assert_eq!(proxy.stat("cluster.short.upstream_cx_idle_timeout"), 1);
    assert_eq!(proxy.stat("cluster.long.upstream_cx_idle_timeout"), 0);
    for path in ["/short", "/long"] {
        let u = format!("http://127.0.0.1:{port}{path}");
        assert_eq!(curl_code_version("--http1.1", u).await, "200 1.1", "{path}");
    }
    assert_eq!(
        short.state.connections.load(SeqCst),
        2,
        "a new connection after the close"
    );
    assert_eq!(
        long.state.connections.load(SeqCst),
        1,
        "the kept one reused"
    );
}

/// A cluster's `max_connection_duration` (HttpProtocolOptions): a request in flight when the
/// connection reaches it finishes on it, the connection then takes no new request (the next
/// opens a new one), and a connection left idle past it is closed by the sweep; both counted
/// in `upstream_cx_max_duration_reached`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_max_connection_duration_drains_connections() {
    use std::sync::atomic::Ordering::SeqCst;
    let up = TestUpstream::start("aged").await;
    let (admin, port) = (free_port(), free_port());
    let opts = "    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        common_http_protocol_options: {max_connection_duration: 0.6s}\n        explicit_http_config: {http_protocol_options: {}}\n";
    let clusters = static_cluster("aged", &[up.port()], opts);
    let proxy = ProxyProcess::start(
        &http_bootstrap(admin, port, &route_to("aged"), &clusters, ""),
        admin,
    );
    let url = format!("http://127.0.0.1:{port}/x");
    assert_eq!(curl_code_version("--http1.1", url.clone()).await, "200 1.1");
    // In flight across the deadline: answered on the same connection.
    up.state.delay_ms.store(900, SeqCst);
    assert_eq!(curl_code_version("--http1.1", url.clone()).await, "200 1.1");
    up.state.delay_ms.store(0, SeqCst);
    assert_eq!(
        up.state.connections.load(SeqCst),
        1,
        "the slow one went on the first"
    );
    // Past the duration: a new connection, and the old one is closed.
    assert_eq!(curl_code_version("--http1.1", url.clone()).await, "200 1.1");
    assert_eq!(up.state.connections.load(SeqCst), 2, "a new connection");
    assert_eq!(up.state.open.load(SeqCst), 1, "the aged one closed");
    // Left idle past its own duration, the new one is closed by the sweep.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    assert_eq!(up.state.open.load(SeqCst), 0, "closed by the sweep");
    assert_eq!(
        proxy.stat("cluster.aged.upstream_cx_max_duration_reached"),
        2
    );
}

/// An HTTP/2 upstream that answers the first request of its first connection and then stops
/// reading that connection (a peer gone silent: PINGs go unanswered); later connections are
/// served. Returns its port and the count of accepted connections.
async fn silent_after_first_h2() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::{atomic::Ordering::SeqCst, Arc};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = l.accept().await {
            let first = count.fetch_add(1, SeqCst) == 0;
            let mut conn = h2::server::handshake(sock).await.unwrap();
            let serve_one =
                |req: http::Request<h2::RecvStream>,
                 mut tx: h2::server::SendResponse<bytes::Bytes>| {
                    drop(req);
                    let resp = http::Response::builder().status(200).body(()).unwrap();
                    tx.send_response(resp, true).unwrap();
                };
            if first {
                if let Some(Ok((req, tx))) = conn.accept().await {
                    serve_one(req, tx);
                }
                // Flush the answer, then never poll again: PINGs are not acknowledged.
                let _ = tokio::time::timeout(Duration::from_millis(50), conn.accept()).await;
                held.push(conn);
            } else {
                tokio::spawn(async move {
                    while let Some(Ok((req, tx))) = conn.accept().await {
                        serve_one(req, tx);
                    }
                });
            }
        }
    });
    (port, accepted)
}

/// An HTTP/2 cluster's `connection_keepalive`: the pooled connection to an upstream that no
/// longer answers PINGs is closed after `interval` + `timeout`, so the next request opens a
/// new connection and is answered (without keepalive it would be sent on the silent
/// connection and wait).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_h2_keepalive_drops_a_silent_connection() {
    use std::sync::atomic::Ordering::SeqCst;
    let (up, accepted) = silent_after_first_h2().await;
    let (admin, port) = (free_port(), free_port());
    let opts = "    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        explicit_http_config: {http2_protocol_options: {connection_keepalive: {interval: 0.2s, timeout: 0.2s}}}\n";
    let clusters = static_cluster("h2", &[up], opts);
    let _proxy = ProxyProcess::start(
        &http_bootstrap(admin, port, &route_to("h2"), &clusters, ""),
        admin,
    );
    let url = format!("http://127.0.0.1:{port}/x");
    assert_eq!(curl_code_version("--http1.1", url.clone()).await, "200 1.1");
    assert_eq!(accepted.load(SeqCst), 1);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let second = tokio::time::timeout(
        Duration::from_secs(5),
        curl_code_version("--http1.1", url.clone()),
    )
    .await
    .expect("the second request is answered, not sent on the silent connection");
    assert_eq!(second, "200 1.1");
    assert_eq!(
        accepted.load(SeqCst),
        2,
        "a new connection after the unanswered PING"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_passthrough() {
    let up = TestUpstream::start("ws").await;
    let (admin, port) = (free_port(), free_port());
    let routes = &route_to("backend");
    // Only the upgrade types the HCM enables become tunnels, as in Envoy.
    let yaml = http_bootstrap(
        admin,
        port,
        routes,
        &static_cluster("backend", &[up.port()], ""),
        "          upgrade_configs:\n          - upgrade_type: websocket\n",
    );
    let _proxy = ProxyProcess::start(&yaml, admin);
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let head = send_and_read_head(&mut s, WS_UPGRADE).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );
    for msg in [&b"hello"[..], b"second frame"] {
        s.write_all(msg).await.unwrap();
        let mut echo = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut echo))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(echo, msg);
    }
    let rec = up.state.last_request().unwrap();
    assert_eq!(rec.headers["upgrade"], "websocket");
}

/// A WebSocket upgrade request for `/ws`.
const WS_UPGRADE: &[u8] = b"GET /ws HTTP/1.1\r\nHost: ws.local\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

/// Sends `head` on a new connection and returns the response head.
async fn response_head(port: u16, head: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    send_and_read_head(&mut s, head).await
}

/// Sends `head` on `s` and reads up to the end of the response head (the connection stays
/// usable, e.g. as a tunnel after a 101).
async fn send_and_read_head(s: &mut TcpStream, head: &[u8]) -> String {
    s.write_all(head).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed before a response");
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).to_string()
}

/// Issue 13, item 8: an upgrade the HCM does not enable is refused before routing (Envoy's 403)
/// and never reaches a backend, so no 101 can open a tunnel past the route table; `Upgrade: h2c`
/// is stripped and the request served as plain HTTP/1.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_enabled_upgrades_tunnel_and_h2c_is_served_plain() {
    let up = TestUpstream::start("plain").await;
    let (admin, port) = (free_port(), free_port());
    let yaml = backend_bootstrap(admin, port, &route_to("backend"), &up);
    let _proxy = ProxyProcess::start(&yaml, admin);
    let ws = response_head(port, WS_UPGRADE).await;
    assert!(ws.starts_with("HTTP/1.1 403"), "{ws}");
    assert!(
        up.state.last_request().is_none(),
        "the backend never saw it"
    );
    let h2c = response_head(port, b"GET /h2c HTTP/1.1\r\nHost: h.local\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n").await;
    assert!(h2c.starts_with("HTTP/1.1 200"), "{h2c}");
    let rec = up.state.last_request().unwrap();
    assert_eq!(rec.path, "/h2c");
    assert!(
        !rec.headers.contains_key("upgrade") && !rec.headers.contains_key("http2-settings"),
        "{:?}",
        rec.headers
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_actions_rewrites_and_header_mutations() {
    let up = TestUpstream::start("a").await;
    let (admin, port) = (free_port(), free_port());
    let routes = r#"              - match: { prefix: "/direct" }
                direct_response: { status: 418, body: { inline_string: "short and stout" } }
              - match: { prefix: "/old" }
                redirect: { path_redirect: "/new", response_code: FOUND }
              - match: { prefix: "/api/" }
                route: { cluster: backend, prefix_rewrite: "/v2/" }
                request_headers_to_add:
                - header: { key: x-added, value: route-level }
                response_headers_to_add:
                - header: { key: x-resp, value: from-proxy }
                request_headers_to_remove: [x-secret]
"#;
    let yaml = backend_bootstrap(admin, port, routes, &up);
    let _proxy = ProxyProcess::start(&yaml, admin);
    let base = format!("http://127.0.0.1:{port}");
    let (s, _, body) = blocking({
        let u = format!("{base}/direct");
        move || curl(&["-s", &u])
    })
    .await;
    assert_eq!((s, body.as_str()), (418, "short and stout"));
    let (s, headers, _) = blocking({
        let u = format!("{base}/old?q=1");
        move || curl(&["-s", "-H", "host: svc.local", &u])
    })
    .await;
    assert_eq!(s, 302);
    assert_eq!(
        header(&headers, "location"),
        Some("http://svc.local/new?q=1")
    );
    let (s, headers, body) = blocking({
        let u = format!("{base}/api/items?x=1");
        move || curl(&["-s", "-H", "x-secret: s3cr3t", &u])
    })
    .await;
    assert_eq!((s, body.as_str()), (200, "a"));
    assert_eq!(header(&headers, "x-resp"), Some("from-proxy"));
    assert_eq!(header(&headers, "server"), Some("envoy"));
    let rec = up.state.last_request().unwrap();
    assert_eq!(rec.path, "/v2/items?x=1");
    assert_eq!(rec.headers["x-envoy-original-path"], "/api/items?x=1");
    assert_eq!(rec.headers["x-added"], "route-level");
    assert!(!rec.headers.contains_key("x-secret"));
    assert_eq!(up.state.request_count(), 1);
}
