//! The capture side's entry point, in process: `Server::serve_connection` with a known original
//! destination, an ORIGINAL_DST cluster, protocol detection (HTTP vs server-speaks-first TCP).

use std::net::SocketAddr;

use sluice_engine::server::{Server, StartOptions};
use sluice_tests::upstream::{assert_banner_then_echo, banner_server, harness::curl, TestUpstream};
use tokio::net::{TcpListener, TcpStream};

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

/// Starts the proxy without binding (like the capture side) and a loopback acceptor that hands
/// every connection to `serve_connection` with `orig_dst`.
async fn capture(orig_dst: SocketAddr) -> (SocketAddr, std::sync::Arc<Server>) {
    let bootstrap = sluice_engine::config::from_yaml_str(CONFIG).expect("valid config");
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
    tokio::spawn(async move {
        loop {
            let (stream, _) = l.accept().await.unwrap();
            let s = s.clone();
            tokio::spawn(async move {
                s.serve_connection("virtualOutbound", stream, Some(orig_dst))
                    .await
                    .unwrap();
            });
        }
    });
    (addr, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_to_original_destination() {
    let up = TestUpstream::start("orig").await;
    let (entry, server) = capture(up.addr).await;
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_speaks_first_is_not_stalled() {
    let (banner, _task) = banner_server(b"* OK IMAP ready\r\n").await;
    let (entry, _server) = capture(banner).await;
    assert_banner_then_echo(entry, b"* OK IMAP ready\r\n", b"a1 NOOP\r\n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_listener_is_an_error() {
    let up = TestUpstream::start("x").await;
    let (_entry, server) = capture(up.addr).await;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let _c = TcpStream::connect(addr).await.unwrap();
    let (stream, _) = l.accept().await.unwrap();
    let err = server
        .serve_connection("nope", stream, None)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "no listener named nope");
}
