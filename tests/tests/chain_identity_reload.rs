//! A connection keeps its own filter chain across a reload that moves it: the listener's
//! chain `a` (peers from 127.0.0.1) is first; a reload puts a new chain `c` (peers from 10/8)
//! before it and changes `a`'s answer. The next request on a keep-alive connection that `a`
//! took is answered by `a`'s new version, never by `c`, which now sits at `a`'s old index (as
//! Envoy's connections keep their chain). A new connection gets `a` too.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use sluice_tests::{admin_run::start_text, conformance::proxy::free_ports};

/// The listener on `port` with `chains` (YAML list items at the chains' indentation).
fn config(port: u16, chains: &[(&str, &str, &str)]) -> String {
    let mut out = format!(
        r#"admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: ADMIN_PORT}}}}}}
static_resources:
  listeners:
  - name: l
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
"#
    );
    for (name, source, answer) in chains {
        out.push_str(&format!(
            r#"    - name: {name}
      filter_chain_match: {{direct_source_prefix_ranges: [{source}]}}
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
          http_filters: [{{name: envoy.filters.http.router, typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}}}]
          route_config: {{virtual_hosts: [{{name: v, domains: ["*"], routes: [{{match: {{prefix: /}}, direct_response: {{status: 200, body: {{inline_string: {answer}}}}}}}]}}]}}
"#
        ));
    }
    out
}

/// Sends one keep-alive GET on `c` and returns the body.
fn get(c: &mut TcpStream) -> String {
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send");
    let mut buf = Vec::new();
    let mut b = [0u8; 1024];
    loop {
        let n = c.read(&mut b).expect("read");
        assert!(
            n > 0,
            "connection closed: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&b[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0);
            if body.len() >= len {
                return body[..len].to_string();
            }
        }
    }
}

#[test]
fn a_connection_keeps_its_chain_when_a_reload_moves_it() {
    let [port] = free_ports::<1>();
    let a = ("a", "{address_prefix: 127.0.0.1, prefix_len: 32}", "a1");
    let p = start_text("chain-identity", &config(port, &[a]), false);
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(get(&mut c), "a1");

    // The reload: `c` first, `a` second with a new answer.
    let moved = config(
        port,
        &[
            ("c", "{address_prefix: 10.0.0.0, prefix_len: 8}", "c"),
            ("a", "{address_prefix: 127.0.0.1, prefix_len: 32}", "a2"),
        ],
    );
    let text = moved.replace(
        "ADMIN_PORT",
        p.admin.rsplit(':').next().expect("admin port"),
    );
    std::fs::write(p.config(), text).expect("write config");
    p.sighup();
    // Wait until a new connection sees the new version.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut fresh = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        fresh
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let got = get(&mut fresh);
        if got == "a2" {
            break;
        }
        assert_eq!(got, "a1", "a new connection is answered by chain a");
        assert!(Instant::now() < deadline, "the reload never applied");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The old connection: chain a's new version, not c (now at a's old index).
    assert_eq!(get(&mut c), "a2");
}
