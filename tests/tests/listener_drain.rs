//! Listener drain on removal (Envoy's, with `--drain-strategy immediate`), through a file reload
//! of the real `sluice proxy` (xDS applies configs through the same engine entry): once a
//! listener is gone, every HTTP/1 response on its connections (the request in flight's too)
//! carries `connection: close` and the connection closes after it, and what is still open when
//! `--drain-time-s` ends (a silent keep-alive connection, a WebSocket tunnel, a tcp_proxy
//! connection) is closed then;
//! a connection on a listener that stays keeps working. Observed the same against Envoy 1.40
//! (`--drain-time-s 2 --drain-strategy immediate`, LDS from a file).

use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use sluice_tests::{
    upstream::{
        banner_server,
        harness::{free_port, static_cluster, ProxyProcess, TempDir},
        TestUpstream,
    },
    xds_run::Run,
    xds_script::{self, bootstrap, cla, eds_cluster, listener, rds, routes},
    xds_server::{Snapshot, XdsServer, CDS, LDS},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const DRAIN_TIME: Duration = Duration::from_secs(2);

/// How soon a drained HTTP/1 connection closes after its `connection: close` response: the
/// HCM's `delayed_close_timeout` (1 s: the socket stays open that long unless the client
/// closes first, as Envoy's `FlushWriteAndDelay`) and some slack.
const HTTP1_CLOSE: Duration = Duration::from_millis(1500);

fn http_listener(name: &str, port: u16, cluster: &str) -> String {
    format!(
        r#"  - name: {name}
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
          upgrade_configs: [{{ upgrade_type: websocket }}]
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - {{ match: {{ prefix: "/" }}, route: {{ cluster: {cluster} }} }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#
    )
}

fn tcp_listener(name: &str, port: u16, cluster: &str) -> String {
    sluice_tests::admin_run::tcp_proxy_listener(name, port, cluster, "")
}

fn config(admin: u16, listeners: &[String], clusters: &str) -> String {
    format!(
        "admin:\n  address:\n    socket_address: {{ address: 127.0.0.1, port_value: {admin} }}\nstatic_resources:\n  listeners:\n{}  clusters:\n{clusters}",
        listeners.concat()
    )
}

/// Reads one HTTP/1.1 response (head and a content-length body) off a keep-alive connection.
async fn read_response(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = String::from_utf8_lossy(&out).to_ascii_lowercase();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if out.len() >= end + 4 + len {
                return String::from_utf8_lossy(&out).into_owned();
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, s.read(&mut buf))
            .await
            .expect("response within 5 s")
            .expect("read");
        assert!(
            n > 0,
            "closed mid-response: {}",
            String::from_utf8_lossy(&out)
        );
        out.extend_from_slice(&buf[..n]);
    }
}

/// Waits (within `within`) for the proxy to close `s`; returns when it did.
async fn closed_within(s: &mut TcpStream, within: Duration, what: &str) -> Instant {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(within, s.read(&mut buf)).await {
        Ok(Ok(0) | Err(_)) => Instant::now(),
        Ok(Ok(n)) => panic!("{what}: unexpected bytes {:?}", &buf[..n]),
        Err(_) => panic!("{what}: still open after {within:?}"),
    }
}

async fn echo(s: &mut TcpStream, line: &[u8]) {
    s.write_all(line).await.expect("write");
    let mut buf = vec![0u8; line.len()];
    tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut buf))
        .await
        .expect("echo within 3 s")
        .expect("echo");
    assert_eq!(buf, line);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_listener_drains_http_and_closes_tcp_at_drain_time() {
    let a = TestUpstream::start("a").await;
    let (echo_addr, _echo_task) = banner_server(b"hi\n").await;
    let (admin, web, tcp, stay) = (free_port(), free_port(), free_port(), free_port());
    let clusters = format!(
        "{}{}",
        static_cluster("a", &[a.port()], ""),
        static_cluster("echo", &[echo_addr.port()], "")
    );
    let stay_listener = tcp_listener("stay", stay, "echo");
    let v1 = config(
        admin,
        &[
            http_listener("web", web, "a"),
            tcp_listener("tcp", tcp, "echo"),
            stay_listener.clone(),
        ],
        &clusters,
    );
    let drain = DRAIN_TIME.as_secs().to_string();
    let proxy = ProxyProcess::start_args(
        TempDir::new("drain"),
        &v1,
        admin,
        0,
        &["--drain-time-s", &drain],
    );

    let get = b"GET / HTTP/1.1\r\nhost: web\r\n\r\n";
    let connect = || TcpStream::connect(("127.0.0.1", web));
    let (mut busy, mut idle, mut silent) = (
        connect().await.unwrap(),
        connect().await.unwrap(),
        connect().await.unwrap(),
    );
    for s in [&mut busy, &mut idle, &mut silent] {
        s.write_all(get).await.unwrap();
        let r = read_response(s).await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        assert!(!r.to_ascii_lowercase().contains("connection: close"), "{r}");
    }
    let mut tunnel = connect().await.unwrap();
    tunnel
        .write_all(
            b"GET /ws HTTP/1.1\r\nhost: web\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
        )
        .await
        .unwrap();
    let r = read_response(&mut tunnel).await;
    assert!(r.starts_with("HTTP/1.1 101"), "{r}");
    let mut tcp_conn = TcpStream::connect(("127.0.0.1", tcp)).await.unwrap();
    let mut stay_conn = TcpStream::connect(("127.0.0.1", stay)).await.unwrap();
    for s in [&mut tcp_conn, &mut stay_conn] {
        let mut hi = [0u8; 3];
        tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut hi))
            .await
            .expect("banner within 3 s")
            .unwrap();
        assert_eq!(&hi, b"hi\n");
    }

    // A request in flight (the upstream answers after 800 ms) while `web` and `tcp` are removed.
    a.state.delay_ms.store(800, Ordering::SeqCst);
    busy.write_all(get).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    std::fs::write(&proxy.config, config(admin, &[stay_listener], &clusters)).unwrap();
    proxy.reload().await;
    let removed = Instant::now();
    a.state.delay_ms.store(0, Ordering::SeqCst);

    // A keep-alive connection still carries a request, answered with `connection: close`.
    idle.write_all(get).await.unwrap();
    let r = read_response(&mut idle).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.to_ascii_lowercase().contains("connection: close"), "{r}");
    closed_within(&mut idle, HTTP1_CLOSE, "drained keep-alive connection").await;
    let r = read_response(&mut busy).await;
    assert!(
        r.starts_with("HTTP/1.1 200"),
        "the request in flight finished: {r}"
    );
    assert!(
        r.to_ascii_lowercase().contains("connection: close"),
        "drained: {r}"
    );
    closed_within(&mut busy, HTTP1_CLOSE, "drained HTTP/1 connection").await;

    // The tcp_proxy connection and the tunnel work until the drain time ends; then they and the
    // silent HTTP connection are closed.
    echo(&mut tcp_conn, b"draining\n").await;
    echo(&mut tunnel, b"tunnel\n").await;
    for (s, what) in [
        (&mut tcp_conn, "tcp_proxy"),
        (&mut silent, "silent HTTP/1"),
        (&mut tunnel, "WebSocket tunnel"),
    ] {
        let at = closed_within(s, DRAIN_TIME * 3, what).await;
        let after = at - removed;
        assert!(
            after >= DRAIN_TIME - Duration::from_millis(300),
            "{what} connection closed after {after:?}, before the drain time"
        );
    }
    // The listener that stayed keeps its connection.
    echo(&mut stay_conn, b"still here\n").await;
    assert!(
        TcpStream::connect(("127.0.0.1", web)).await.is_err(),
        "the removed listener no longer accepts"
    );
}

/// The same drain when the listeners are removed over ADS (SotW absence, delta removal).
async fn lds_removal(api_type: &str) {
    let a = TestUpstream::start("a").await;
    let (echo_addr, _echo_task) = banner_server(b"hi\n").await;
    let (admin, web, tcp, stay) = (free_port(), free_port(), free_port(), free_port());
    let server = XdsServer::start().await;
    let common = [
        xds_script::tcp_listener("stay", stay, "echo", "stay"),
        xds_script::static_cluster("echo", echo_addr.port()),
        eds_cluster("backend"),
        cla("backend", &[a.port()]),
    ];
    let mut v1 = common.to_vec();
    v1.extend([
        listener("web", web, rds("routes")),
        routes("routes", &[("/", "backend")]),
        xds_script::tcp_listener("tcp", tcp, "echo", "tcp"),
    ]);
    server.set(Snapshot::from_json("1", &v1));
    let drain = DRAIN_TIME.as_secs().to_string();
    let _proxy = ProxyProcess::start_args(
        TempDir::new("xds-drain"),
        &bootstrap(admin, server.addr, api_type),
        admin,
        0,
        &["--drain-time-s", &drain],
    );
    let mut run = Run::strict();
    for ty in [LDS, CDS] {
        run.ack(&server, ty, "1").await;
    }
    run.expect(web, "/", 200, "a").await;
    let mut busy = TcpStream::connect(("127.0.0.1", web)).await.unwrap();
    let mut tcp_conn = TcpStream::connect(("127.0.0.1", tcp)).await.unwrap();
    let mut hi = [0u8; 3];
    tokio::time::timeout(Duration::from_secs(3), tcp_conn.read_exact(&mut hi))
        .await
        .expect("banner within 3 s")
        .unwrap();

    a.state.delay_ms.store(800, Ordering::SeqCst);
    busy.write_all(b"GET / HTTP/1.1\r\nhost: web\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.set(Snapshot::from_json("2", &common));
    run.ack(&server, LDS, "2").await;
    let removed = Instant::now();
    let r = read_response(&mut busy).await;
    assert!(r.starts_with("HTTP/1.1 200"), "in flight: {r}");
    assert!(r.to_ascii_lowercase().contains("connection: close"), "{r}");
    closed_within(&mut busy, HTTP1_CLOSE, "drained HTTP/1").await;
    echo(&mut tcp_conn, b"draining\n").await;
    let after = closed_within(&mut tcp_conn, DRAIN_TIME * 3, "tcp_proxy").await - removed;
    assert!(
        after >= DRAIN_TIME - Duration::from_millis(300),
        "tcp_proxy connection closed after {after:?}, before the drain time"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_lds_removal_drains() {
    lds_removal("GRPC").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_lds_removal_drains() {
    lds_removal("DELTA_GRPC").await;
}
