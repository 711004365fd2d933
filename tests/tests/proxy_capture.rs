//! The capture side's entry point, in process: `Server::serve_captured` with a known original
//! destination, an ORIGINAL_DST cluster, protocol detection (HTTP vs server-speaks-first TCP,
//! and a client whose first bytes come after the detection timeout).

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use sluice_engine::server::{ConnObserver, Server, StartOptions};
use sluice_tests::upstream::{assert_banner_then_echo, banner_server, harness::curl, TestUpstream};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

const CONFIG: &str = r#"
static_resources:
  listeners:
  - name: virtualOutbound
    address:
      socket_address: { address: 127.0.0.1, port_value: 15001 }
    use_original_dst: true
    listener_filters:
    - name: envoy.filters.listener.original_dst
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: outbound
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: PassthroughCluster }
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: PassthroughCluster
    type: ORIGINAL_DST
    lb_policy: CLUSTER_PROVIDED
    connect_timeout: 1s
"#;

/// What the capture side's counters would receive.
#[derive(Default)]
struct Counts {
    from_downstream: AtomicU64,
    to_downstream: AtomicU64,
    closed: AtomicU64,
    upstream_failures: AtomicU64,
}

impl ConnObserver for Counts {
    fn closed(&self, from_downstream: u64, to_downstream: u64) {
        self.from_downstream
            .fetch_add(from_downstream, Ordering::Relaxed);
        self.to_downstream
            .fetch_add(to_downstream, Ordering::Relaxed);
        self.closed.fetch_add(1, Ordering::Relaxed);
    }
    fn upstream_failed(&self) {
        self.upstream_failures.fetch_add(1, Ordering::Relaxed);
    }
}

impl Counts {
    /// Waits (bounded) until `n` connections have been reported closed.
    async fn wait_closed(&self, n: u64) {
        for _ in 0..200 {
            if self.closed.load(Ordering::Relaxed) >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{n} connection(s) never reported closed");
    }
}

/// [`CONFIG`] plus, first, a tcp_proxy chain for another port (as the bench's iperf3 chain on
/// 5201) to a cluster nobody listens on.
fn with_other_port_tcp_chain() -> String {
    CONFIG
        .replace(
            "    filter_chains:\n",
            "    filter_chains:\n    - filter_chain_match: {destination_port: 5201}\n      filters:\n      \
             - name: envoy.filters.network.tcp_proxy\n        typed_config:\n          \
             \"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\n          \
             stat_prefix: other\n          cluster: other\n",
        )
        .replace(
            "  clusters:\n",
            "  clusters:\n  - name: other\n    type: STATIC\n    connect_timeout: 1s\n    \
             load_assignment: {cluster_name: other, endpoints: [{lb_endpoints: [{endpoint: \
             {address: {socket_address: {address: 127.0.0.1, port_value: 1}}}}]}]}\n",
        )
}

/// Starts the proxy without binding (like the capture side) and a loopback acceptor that hands
/// every connection to `serve_captured` with `orig_dst`.
async fn capture(orig_dst: SocketAddr) -> (SocketAddr, Arc<Server>, Arc<Counts>) {
    capture_with(CONFIG, orig_dst).await
}

async fn capture_with(
    config: &str,
    orig_dst: SocketAddr,
) -> (SocketAddr, Arc<Server>, Arc<Counts>) {
    let bootstrap = sluice_engine::config::from_yaml_str(config).expect("valid config");
    let server = Server::start_with(
        bootstrap,
        serde_json::Value::Null,
        None,
        StartOptions {
            bind_listeners: false,
            admin: false,
            ..Default::default()
        },
    )
    .await
    .expect("server starts");
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let s = server.clone();
    let counts = Arc::new(Counts::default());
    let c = counts.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = l.accept().await.unwrap();
            let s = s.clone();
            let observer: Arc<dyn ConnObserver> = c.clone();
            tokio::spawn(async move {
                s.serve_captured("virtualOutbound", stream, orig_dst, observer)
                    .await
                    .unwrap();
            });
        }
    });
    (addr, server, counts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_to_original_destination() {
    let up = TestUpstream::start("orig").await;
    let (entry, server, counts) = capture(up.addr).await;
    let u = format!("http://{entry}/svc");
    let (status, _, body) = tokio::task::spawn_blocking(move || {
        curl(&["-s", "-H", "host: reviews.default.svc:9080", &u])
    })
    .await
    .unwrap();
    assert_eq!((status, body.as_str()), (200, "orig"));
    let rec = up.state.last_request().unwrap();
    assert_eq!(rec.headers["host"], "reviews.default.svc:9080");
    assert_eq!(rec.path, "/svc");
    assert!(server
        .stats
        .render()
        .contains("cluster.PassthroughCluster.upstream_rq_2xx: 1"));
    // The capture side's counters got the connection's raw bytes: curl's request line and
    // headers in, the response (status line, headers, "orig") out.
    counts.wait_closed(1).await;
    let (rx, tx) = (
        counts.from_downstream.load(Ordering::Relaxed),
        counts.to_downstream.load(Ordering::Relaxed),
    );
    assert!(
        rx > "GET /svc HTTP/1.1\r\n".len() as u64,
        "from downstream: {rx}"
    );
    assert!(
        tx > "HTTP/1.1 200 OK\r\n".len() as u64 + 4,
        "to downstream: {tx}"
    );
    assert_eq!(counts.upstream_failures.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_upstream_counts_as_an_upstream_failure() {
    // A port nobody listens on: the ORIGINAL_DST cluster's connect is refused -> 503 UF.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = closed.local_addr().unwrap();
    drop(closed);
    let (entry, _server, counts) = capture(dead).await;
    let u = format!("http://{entry}/svc");
    let (status, _, _) = tokio::task::spawn_blocking(move || curl(&["-s", &u]))
        .await
        .unwrap();
    assert_eq!(status, 503);
    counts.wait_closed(1).await;
    assert_eq!(counts.upstream_failures.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_speaks_first_is_not_stalled() {
    let (banner, _task) = banner_server(b"* OK IMAP ready\r\n").await;
    let (entry, _server, counts) = capture(banner).await;
    assert_banner_then_echo(entry, b"* OK IMAP ready\r\n", b"a1 NOOP\r\n").await;
    counts.wait_closed(1).await;
    assert_eq!(counts.from_downstream.load(Ordering::Relaxed), 9);
    assert!(counts.to_downstream.load(Ordering::Relaxed) >= 17);
}

/// A client that connects and sends its HTTP request only after the detection timeout: the
/// connection is not detected as HTTP, and must stay on a chain its port admits (here none but
/// the HTTP one: plain TCP passthrough to the original destination), never the tcp_proxy chain
/// of port 5201 (found by `cargo xtask bench --scale`: with 100 pods, first requests sent later
/// than 100 ms after connect went to the iperf3 cluster and were closed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_first_bytes_stay_on_their_port() {
    let up = TestUpstream::start("orig").await;
    let (entry, _server, counts) = capture_with(&with_other_port_tcp_chain(), up.addr).await;
    let mut s = TcpStream::connect(entry).await.unwrap();
    tokio::time::sleep(sluice_engine::detect::DETECT_TIMEOUT * 3).await;
    s.write_all(b"GET /late HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .expect("response within 5 s")
        .unwrap();
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("orig"), "{text}");
    assert_eq!(counts.upstream_failures.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_listener_is_an_error() {
    let up = TestUpstream::start("x").await;
    let (_entry, server, _counts) = capture(up.addr).await;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let _c = TcpStream::connect(addr).await.unwrap();
    let (stream, _) = l.accept().await.unwrap();
    let err = server
        .serve_captured("nope", stream, addr, Arc::new(Counts::default()))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "no listener named nope");
}
