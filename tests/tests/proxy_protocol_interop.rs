//! The PROXY protocol against a real Envoy 1.40 on the same YAML, where the conformance suite
//! does not look: the `proxy_protocol` listener filter's counters on `/stats`
//! (`proxy_proto.<stat_prefix>.*` and the legacy `downstream_cx_proxy_proto_error`) after the
//! same connections, and the header an `upstream_proxy_protocol` cluster's active health checks
//! send (no downstream: v1 states the health check connection's own addresses, v2 is LOCAL;
//! a TCP check without a payload writes nothing, so no header either).

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use sluice_tests::{
    admin_run::{get, start_text},
    conformance::{proxy::free_ports, upstream::proxy_header::describe},
};

const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

fn cluster(name: &str, version: &str, port: u16, check: &str) -> String {
    format!(
        r#"  - name: {name}
    type: STATIC
    connect_timeout: 1s
    health_checks: [{{timeout: 1s, interval: 0.3s, unhealthy_threshold: 1, healthy_threshold: 1, {check}}}]
    transport_socket:
      name: envoy.transport_sockets.upstream_proxy_protocol
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.proxy_protocol.v3.ProxyProtocolUpstreamTransport
        config: {{version: {version}}}
        transport_socket: {{name: envoy.transport_sockets.raw_buffer, typed_config: {{"@type": type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer}}}}
    load_assignment:
      cluster_name: {name}
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}}}]}}]
"#
    )
}

fn config(port: u16, hc1: u16, hc2: u16, hc3: u16) -> String {
    format!(
        r#"admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: ADMIN_PORT}}}}}}
static_resources:
  listeners:
  - name: gw
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    listener_filters:
    - name: envoy.filters.listener.proxy_protocol
      typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol, stat_prefix: gw, disallowed_versions: [V1]}}
    listener_filters_timeout: 1s
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: s
          http_filters: [{{name: envoy.filters.http.router, typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}}}]
          route_config: {{virtual_hosts: [{{name: v, domains: ["*"], routes: [{{match: {{prefix: /}}, direct_response: {{status: 200}}}}]}}]}}
  clusters:
{}{}{}"#,
        cluster("hc1", "V1", hc1, "http_health_check: {path: /hc}"),
        cluster("hc2", "V2", hc2, "http_health_check: {path: /hc}"),
        cluster("hc3", "V2", hc3, "tcp_health_check: {}")
    )
}

/// What a connection's first bytes say (`proxy_header::describe`), its loopback ports masked.
fn header_of(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut b = [0u8; 1];
    // Byte by byte: a v1 line ends at its CRLF, a v2 header after 16 + its length.
    loop {
        let whole = if buf.starts_with(b"PROXY ") {
            buf.ends_with(b"\r\n") || buf.len() >= 120
        } else {
            buf.len() >= 16 && buf.len() >= 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]))
        };
        if whole {
            return describe(&buf);
        }
        if s.read(&mut b).unwrap_or(0) == 0 {
            return format!("closed after {buf:?}");
        }
        buf.push(b[0]);
    }
}

/// A health check target: records each connection's header, answers its requests 200.
fn recorder() -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { return };
            let seen = s2.clone();
            std::thread::spawn(move || {
                let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                let h = header_of(&mut c);
                seen.lock().unwrap().push(h);
                let mut req = Vec::new();
                let mut b = [0u8; 1024];
                loop {
                    match c.read(&mut b) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&b[..n]),
                    }
                    while let Some(p) = req.windows(4).position(|w| w == b"\r\n\r\n") {
                        req.drain(..p + 4);
                        if c.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            });
        }
    });
    (port, seen)
}

/// The listener filter's counters (and the legacy one), sorted.
fn proxy_proto_stats(admin: &str) -> Vec<String> {
    let (status, body) = get(admin, "GET", "/stats");
    assert_eq!(status, 200);
    let mut lines: Vec<String> = body
        .lines()
        .filter(|l| l.contains("proxy_proto"))
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

/// Sends `preamble` then a request on a new connection; true when a response came.
fn answered(port: u16, preamble: &[u8]) -> bool {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
    let mut bytes = preamble.to_vec();
    bytes.extend_from_slice(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    if s.write_all(&bytes).is_err() {
        return false;
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out.starts_with(b"HTTP/1.1 200")
}

#[test]
fn listener_counters_and_health_check_headers_are_envoys() {
    let mut v2 = V2_SIGNATURE.to_vec();
    v2.extend_from_slice(&[
        0x21, 0x11, 0, 12, 203, 0, 113, 7, 198, 51, 100, 1, 0x9c, 0x40, 0, 80,
    ]);
    let mut local = V2_SIGNATURE.to_vec();
    local.extend_from_slice(&[0x20, 0, 0, 0]);
    let mut bad_family = V2_SIGNATURE.to_vec();
    bad_family.extend_from_slice(&[0x21, 0x31, 0, 0]);
    let connections: [(&str, &[u8], bool); 6] = [
        ("v2", &v2, true),
        ("v2 again", &v2, true),
        ("v2 LOCAL", &local, true),
        (
            "v1 (disallowed)",
            b"PROXY TCP4 203.0.113.7 198.51.100.1 1 80\r\n",
            false,
        ),
        ("v2 AF_UNIX", &bad_family, false),
        ("no header", b"", false),
    ];
    let mut runs = Vec::new();
    for envoy in [true, false] {
        let who = if envoy { "envoy" } else { "sluice" };
        let (hc1, seen1) = recorder();
        let (hc2, seen2) = recorder();
        let (hc3, seen3) = recorder();
        let [port] = free_ports::<1>();
        let p = start_text("proxy-protocol", &config(port, hc1, hc2, hc3), envoy);
        let before = proxy_proto_stats(&p.admin);
        for (what, preamble, want) in connections {
            assert_eq!(answered(port, preamble), want, "{who}: {what}");
        }
        // Health checks every 0.3 s: a few rounds of each cluster.
        let deadline = Instant::now() + Duration::from_secs(10);
        let short = |s: &Arc<Mutex<Vec<String>>>| s.lock().unwrap().len() < 2;
        while (short(&seen1) || short(&seen2) || short(&seen3)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let first = |s: &Arc<Mutex<Vec<String>>>| s.lock().unwrap().first().cloned();
        let hcs = [first(&seen1), first(&seen2), first(&seen3)];
        runs.push((who, before, proxy_proto_stats(&p.admin), hcs));
        drop(p);
    }
    let (_, e_before, e_after, e_hcs) = &runs[0];
    let (_, s_before, s_after, s_hcs) = &runs[1];
    assert_eq!(s_before, e_before, "counters before any connection");
    assert_eq!(s_after, e_after, "counters after the connections");
    for want in [
        "proxy_proto.gw.versions.v2.found: 3",
        "proxy_proto.gw.versions.v1.disallowed: 1",
        "proxy_proto.gw.versions.v2.error: 1",
        "proxy_proto.gw.not_found_disallowed: 1",
    ] {
        assert!(e_after.iter().any(|l| l == want), "{want} in {e_after:?}");
    }
    assert_eq!(
        e_hcs[0].as_deref(),
        Some("v1 TCP4 127.0.0.1:<port> > 127.0.0.1:<port>")
    );
    assert_eq!(e_hcs[1].as_deref(), Some("v2 LOCAL"));
    // A TCP check without a payload writes nothing, so no header either: Envoy's transport
    // socket sends its header with the first bytes.
    assert_eq!(
        e_hcs[2].as_deref(),
        Some("closed after []"),
        "TCP health check"
    );
    assert_eq!(
        s_hcs, e_hcs,
        "health check headers (HTTP v1, HTTP v2, TCP v2)"
    );
}
