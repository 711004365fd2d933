//! Istio's `istio.alpn` filter against a real Envoy 1.40 as the peer sidecar: Envoy's inbound
//! listener (a tls_inspector and istiod's filter chain matches) picks its HTTP chain by the ALPN
//! names `istio-http/1.0`, `istio-http/1.1`, `istio-h2` and its TCP chain by
//! `istio-peer-exchange`, `istio` — what an Istio cluster's own TLS context offers. sluice as
//! the client sidecar, with istiod's `istio.alpn` config in its connection manager, reaches the
//! HTTP chain over HTTP/1.1 and HTTP/2 (an HTTP/2 cluster, and a cluster that uses the
//! downstream's protocol with an HTTP/2 and an HTTP/1.1 client); a cluster marked
//! `istio.alpn_override: "false"` keeps its own ALPN (the TCP chain), and so does every cluster
//! of a connection manager without the filter. The peer echoes the protocol it was spoken to in
//! `x-proto`. A WebSocket upgrade through the HTTP/2 cluster offers HTTP/1.1's list, the
//! protocol it goes over, and reaches the peer's application.

use std::path::Path;

use sluice_tests::{
    admin_run::start_text,
    conformance::proxy::free_ports,
    upstream::{
        harness::{curl_opt, header, TempDir},
        tls::test_pki,
    },
};

/// istiod's `istio.alpn` filter (pilot `xds/filters`), a plain Any of istio-proxy's type.
const ISTIO_ALPN: &str = r#"{name: istio.alpn, typed_config: {"@type": type.googleapis.com/istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig, alpn_override: [{upstream_protocol: HTTP10, alpn_override: [istio-http/1.0, istio, http/1.0]}, {upstream_protocol: HTTP11, alpn_override: [istio-http/1.1, istio, http/1.1]}, {upstream_protocol: HTTP2, alpn_override: [istio-h2, istio, h2]}]}}, "#;

/// The peer: Envoy's inbound sidecar listener on `port`, an HTTP chain and a TCP chain (here
/// an HCM too, answering `tcp-chain`) told apart by ALPN, both terminating TLS; `/ws` goes
/// to the application on `app` (WebSocket upgrades allowed).
fn peer(dir: &Path, port: u16, app: u16) -> String {
    let file = |n: &str| dir.join(n).display().to_string();
    let chain = |alpns: &str, body: &str| {
        format!(
            r#"    - filter_chain_match: {{transport_protocol: tls, application_protocols: [{alpns}]}}
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            alpn_protocols: [h2, http/1.1]
            tls_certificates: [{{certificate_chain: {{filename: {cert}}}, private_key: {{filename: {key}}}}}]
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: peer
          upgrade_configs: [{{upgrade_type: websocket}}]
          http_filters: [{{name: envoy.filters.http.router, typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}}}]
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              response_headers_to_add: [{{header: {{key: x-proto, value: "%PROTOCOL%"}}}}]
              routes:
              - {{match: {{prefix: /ws}}, route: {{cluster: app}}}}
              - {{match: {{prefix: /}}, direct_response: {{status: 200, body: {{inline_string: {body}}}}}}}
"#,
            cert = file("server.pem"),
            key = file("server.key"),
        )
    };
    format!(
        r#"admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: ADMIN_PORT}}}}}}
static_resources:
  listeners:
  - name: virtualInbound
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    listener_filters: [{{name: envoy.filters.listener.tls_inspector, typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector}}}}]
    filter_chains:
{http}{tcp}  clusters:
  - name: app
    connect_timeout: 2s
    load_assignment: {{cluster_name: app, endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {app}}}}}}}}}]}}]}}
"#,
        http = chain("istio-http/1.0, istio-http/1.1, istio-h2", "http-chain"),
        tcp = chain("istio-peer-exchange, istio", "tcp-chain"),
    )
}

/// sluice, the client sidecar: `with` has istio.alpn before the router, `without` does not;
/// both route `/h1`, `/h2`, `/down` and `/own` to TLS clusters of the peer offering Istio's
/// `istio-peer-exchange, istio` (HTTP/1.1, HTTP/2, the downstream's protocol, and HTTP/1.1
/// marked `alpn_override: "false"`).
fn client(dir: &Path, with: u16, without: u16, peer: u16) -> String {
    let ca = dir.join("ca.pem").display().to_string();
    let listener = |name: &str, port: u16, filters: &str| {
        format!(
            r#"  - name: {name}
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
          upgrade_configs: [{{upgrade_type: websocket}}]
          http_filters: [{filters}{{name: envoy.filters.http.router, typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}}}]
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - {{match: {{prefix: /h1}}, route: {{cluster: h1}}}}
              - {{match: {{prefix: /h2}}, route: {{cluster: h2}}}}
              - {{match: {{prefix: /ws}}, route: {{cluster: h2}}}}
              - {{match: {{prefix: /down}}, route: {{cluster: down}}}}
              - {{match: {{prefix: /own}}, route: {{cluster: own}}}}
"#
        )
    };
    let cluster = |name: &str, extra: &str| {
        format!(
            r#"  - name: {name}
    connect_timeout: 2s
    load_assignment: {{cluster_name: {name}, endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {peer}}}}}}}}}]}}]}}
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: outbound_.80_._.peer.test
        common_tls_context:
          alpn_protocols: [istio-peer-exchange, istio]
          validation_context: {{trusted_ca: {{filename: {ca}}}}}
{extra}"#
        )
    };
    let protocol = |config: &str| {
        format!(
            r#"    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        {config}
"#
        )
    };
    format!(
        r#"admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: ADMIN_PORT}}}}}}
static_resources:
  listeners:
{l1}{l2}  clusters:
{c1}{c2}{c3}{c4}"#,
        l1 = listener("with", with, ISTIO_ALPN),
        l2 = listener("without", without, ""),
        c1 = cluster("h1", ""),
        c2 = cluster(
            "h2",
            &protocol("explicit_http_config: {http2_protocol_options: {}}")
        ),
        c3 = cluster(
            "down",
            &protocol(
                "use_downstream_protocol_config: {http_protocol_options: {}, http2_protocol_options: {}}"
            )
        ),
        c4 = cluster(
            "own",
            "    metadata: {filter_metadata: {istio: {alpn_override: \"false\"}}}\n"
        ),
    )
}

/// `(body, x-proto)` of a GET of `path` on `port`, over HTTP/2 with prior knowledge when `h2`.
fn get(port: u16, path: &str, h2: bool) -> (String, String) {
    let url = format!("http://127.0.0.1:{port}{path}");
    let mut args = vec!["-s", "--max-time", "5"];
    if h2 {
        args.push("--http2-prior-knowledge");
    }
    args.push(&url);
    let (status, headers, body) = curl_opt(&args).unwrap_or_else(|| panic!("no response to {url}"));
    let proto = header(&headers, "x-proto").unwrap_or("-").to_string();
    if status != 200 {
        return (format!("{status} {body}"), proto);
    }
    (body, proto)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_alpn_reaches_an_envoy_peers_http_chain() {
    let pki = test_pki();
    let dir = TempDir::new("istio-alpn");
    pki.write_files(&dir.0);
    let app = sluice_tests::upstream::TestUpstream::start("app").await;
    let [peer_port, with, without] = free_ports::<3>();
    let _peer = start_text(
        "istio-alpn-peer",
        &peer(&dir.0, peer_port, app.port()),
        true,
    );
    let _sluice = start_text(
        "istio-alpn-client",
        &client(&dir.0, with, without, peer_port),
        false,
    );
    let http = |proto: &str| ("http-chain".to_string(), proto.to_string());
    let tcp = |proto: &str| ("tcp-chain".to_string(), proto.to_string());
    // With istio.alpn: the HTTP chain, over the protocol the cluster (or the client) speaks.
    assert_eq!(
        get(with, "/h1", false),
        http("HTTP/1.1"),
        "HTTP/1.1 cluster"
    );
    assert_eq!(get(with, "/h2", false), http("HTTP/2"), "HTTP/2 cluster");
    assert_eq!(
        get(with, "/down", true),
        http("HTTP/2"),
        "downstream's, HTTP/2"
    );
    assert_eq!(
        get(with, "/down", false),
        http("HTTP/1.1"),
        "downstream's, HTTP/1.1"
    );
    // Again on the pooled connections.
    assert_eq!(get(with, "/h1", false), http("HTTP/1.1"), "HTTP/1.1 again");
    // alpn_override "false": the cluster's own ALPN, so the peer's TCP chain.
    assert_eq!(
        get(with, "/own", false),
        tcp("HTTP/1.1"),
        "alpn_override false"
    );
    // Without the filter every cluster offers its own ALPN (and a connection made for the
    // filter's requests is not reused for these: pools are keyed by the ALPN).
    assert_eq!(
        get(without, "/h1", false),
        tcp("HTTP/1.1"),
        "no filter, HTTP/1.1"
    );
    assert_eq!(
        get(without, "/h2", false),
        tcp("HTTP/2"),
        "no filter, HTTP/2"
    );
    assert_eq!(get(with, "/h1", false), http("HTTP/1.1"), "filter again");
    // A WebSocket upgrade through the HTTP/2 cluster: HTTP/1.1's ALPN, so the peer speaks
    // HTTP/1.1 and passes the upgrade to the application, which echoes.
    websocket_echo(with).await;
}

/// Upgrades `GET /ws` on `port` to a WebSocket and checks the application's echo.
async fn websocket_echo(port: u16) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        .await
        .expect("write");
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("a response head in time")
            .expect("read");
        assert!(
            n > 0,
            "closed before a response: {}",
            String::from_utf8_lossy(&head)
        );
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s.write_all(b"over the tunnel").await.expect("write");
    let mut echo = [0u8; 15];
    tokio::time::timeout(std::time::Duration::from_secs(5), s.read_exact(&mut echo))
        .await
        .expect("the echo in time")
        .expect("read");
    assert_eq!(&echo, b"over the tunnel");
}
