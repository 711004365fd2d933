//! The network RBAC filter (`envoy.filters.network.rbac`) against a real Envoy 1.40 on the same
//! YAML, over raw TCP (the conformance suite's client speaks HTTP only): before a tcp_proxy, a
//! server that speaks first still gets its greeting to the client, and the client's first bytes
//! then close a denied connection (they never reach the server) or pass on an allowed one; with
//! `delay_deny` the close waits; before an HTTP connection manager a denied connection closes
//! without a response. The counters (`<stat_prefix>.rbac.*`, shadow ones under their prefix,
//! Istio's `tcp.` prefix) are compared line by line.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use sluice_tests::{
    admin_run::{get, start_text},
    conformance::proxy::free_ports,
};

/// A server that greets each connection with `HELLO\n`, then echoes with an `echo:` prefix;
/// counts the bytes it received.
struct Greeter {
    port: u16,
    received: Arc<AtomicUsize>,
}

fn greeter() -> Greeter {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind greeter");
    let port = l.local_addr().unwrap().port();
    let received = Arc::new(AtomicUsize::new(0));
    let r = received.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { return };
            let r = r.clone();
            std::thread::spawn(move || {
                let _ = c.write_all(b"HELLO\n");
                let mut b = [0u8; 256];
                while let Ok(n) = c.read(&mut b) {
                    if n == 0 {
                        break;
                    }
                    r.fetch_add(n, Ordering::SeqCst);
                    let _ = c.write_all(&[b"echo:".as_slice(), &b[..n]].concat());
                }
            });
        }
    });
    Greeter { port, received }
}

/// A bootstrap with two listeners: TCP (`tcp_port`, network RBAC filters `filters` then a
/// tcp_proxy to the greeter) and HTTP (`http_port`, the same filters then an HCM answering 200).
fn config(tcp_port: u16, http_port: u16, greeter: u16, filters: &str) -> String {
    format!(
        r#"admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: ADMIN_PORT}}}}}}
static_resources:
  listeners:
  - name: tcp
    address: {{socket_address: {{address: 127.0.0.1, port_value: {tcp_port}}}}}
    filter_chains:
    - filters:
{filters}
      - name: envoy.filters.network.tcp_proxy
        typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: tp, cluster: g}}
  - name: http
    address: {{socket_address: {{address: 127.0.0.1, port_value: {http_port}}}}}
    filter_chains:
    - filters:
{filters}
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: h
          http_filters: [{{name: envoy.filters.http.router, typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}}}]
          route_config: {{virtual_hosts: [{{name: v, domains: ["*"], routes: [{{match: {{prefix: /}}, direct_response: {{status: 200}}}}]}}]}}
  clusters:
  - name: g
    type: STATIC
    connect_timeout: 1s
    load_assignment: {{cluster_name: g, endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {greeter}}}}}}}}}]}}]}}
"#
    )
}

/// One network RBAC filter entry (YAML list item at the chain's filter indentation).
fn rbac(stat_prefix: &str, rules: &str, extra: &str) -> String {
    format!(
        "      - name: envoy.filters.network.rbac\n        typed_config: {{\"@type\": type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC, stat_prefix: \"{stat_prefix}\", rules: {rules}{extra}}}\n"
    )
}

/// What a raw TCP client sees: the greeting read before sending, what comes back after sending
/// `hi`, and how long the close took after the send.
#[derive(Debug, PartialEq)]
struct TcpOutcome {
    greeting: String,
    after_send: String,
}

fn tcp_session(port: u16) -> (TcpOutcome, Duration) {
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut b = [0u8; 64];
    let n = c.read(&mut b).unwrap_or(0);
    let greeting = String::from_utf8_lossy(&b[..n]).into_owned();
    c.write_all(b"hi").expect("send");
    let sent = Instant::now();
    let mut after = Vec::new();
    loop {
        match c.read(&mut b) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                after.extend_from_slice(&b[..n]);
                if after.ends_with(b"hi") {
                    break;
                }
            }
        }
    }
    let took = sent.elapsed();
    let after_send = String::from_utf8_lossy(&after).into_owned();
    (
        TcpOutcome {
            greeting,
            after_send,
        },
        took,
    )
}

/// The status line of a plain HTTP/1.1 GET, or what ended the connection.
fn http_get(port: u16) -> String {
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let _ = c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut out = Vec::new();
    match c.read_to_end(&mut out) {
        Ok(_) if out.is_empty() => "closed without a response".into(),
        Ok(_) => String::from_utf8_lossy(&out)
            .lines()
            .next()
            .unwrap_or("")
            .to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => "reset".into(),
        Err(e) => format!("error {e}"),
    }
}

/// The `/stats` lines whose name contains `.rbac.`, sorted.
fn rbac_stats(admin: &str) -> Vec<String> {
    let (status, body) = get(admin, "GET", "/stats");
    assert_eq!(status, 200);
    let mut v: Vec<String> = body
        .lines()
        .filter(|l| l.contains(".rbac."))
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

/// One proxy's run: (name, tcp outcome, close delay after the first bytes, http outcome, rbac
/// counters, bytes that reached the server).
type Run = (
    &'static str,
    TcpOutcome,
    Duration,
    String,
    Vec<String>,
    usize,
);

/// Runs `filters` under both proxies, Envoy first.
fn run(filters: &str) -> Vec<Run> {
    let mut out = Vec::new();
    for envoy in [true, false] {
        let g = greeter();
        let [tcp, http] = free_ports::<2>();
        let p = start_text("network-rbac", &config(tcp, http, g.port, filters), envoy);
        let (t, took) = tcp_session(tcp);
        let h = http_get(http);
        // The greeter counts what reached it; give a forwarded byte time to land.
        std::thread::sleep(Duration::from_millis(100));
        let who = if envoy { "envoy" } else { "sluice" };
        out.push((
            who,
            t,
            took,
            h,
            rbac_stats(&p.admin),
            g.received.load(Ordering::SeqCst),
        ));
    }
    out
}

#[test]
fn network_rbac_decides_on_the_first_bytes_as_envoy_does() {
    let deny_local = rbac(
        "netrbac",
        "{action: DENY, policies: {local: {permissions: [{destination_ip: {address_prefix: 127.0.0.0, prefix_len: 8}}], principals: [{direct_remote_ip: {address_prefix: 127.0.0.1, prefix_len: 32}}]}}}",
        ", shadow_rules_stat_prefix: dry_, shadow_rules: {action: ALLOW}",
    );
    let allow_local = rbac(
        "tcp.",
        "{action: ALLOW, policies: {local: {permissions: [{not_rule: {url_path: {path: {prefix: /}}}}], principals: [{remote_ip: {address_prefix: 127.0.0.1, prefix_len: 32}}]}}}",
        ", enforcement_type: CONTINUOUS",
    );
    for (filters, denied) in [(deny_local.as_str(), true), (allow_local.as_str(), false)] {
        let runs = run(filters);
        let (_, e_tcp, _, e_http, e_stats, e_recv) = &runs[0];
        for (who, tcp, _, http, stats, recv) in &runs {
            assert_eq!(
                tcp.greeting, "HELLO\n",
                "{who}: the server's greeting comes first"
            );
            if denied {
                assert_eq!(tcp.after_send, "", "{who}: a denied connection closes");
                assert_eq!(*recv, 0, "{who}: the client's bytes never reach the server");
                assert_ne!(http, "HTTP/1.1 200 OK", "{who}");
            } else {
                assert_eq!(tcp.after_send, "echo:hi", "{who}");
                assert_eq!(*recv, 2, "{who}");
                assert_eq!(http, "HTTP/1.1 200 OK", "{who}");
            }
            assert_eq!(tcp, e_tcp, "{who} vs envoy");
            assert_eq!(recv, e_recv, "{who} vs envoy");
            if denied {
                assert_eq!(stats, e_stats, "{who} vs envoy: counters");
            } else {
                // CONTINUOUS counts every read (how a stream is split into reads is each
                // proxy's own): at least one per connection, and never a denial.
                let allowed = stats
                    .iter()
                    .find_map(|l| l.strip_prefix("tcp.rbac.allowed: "))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
                assert!(allowed >= 2, "{who}: {stats:?}");
                assert!(
                    stats.contains(&"tcp.rbac.denied: 0".to_string()),
                    "{who}: {stats:?}"
                );
            }
        }
        // Envoy closes a denied HTTP connection without a response (or resets it): either way
        // no response; both proxies must say the same.
        assert_eq!(runs[1].3 == "HTTP/1.1 200 OK", e_http == "HTTP/1.1 200 OK");
    }
}

#[test]
fn delay_deny_holds_a_denied_connection_open_first() {
    let filters = rbac("netrbac", "{action: ALLOW}", ", delay_deny: 0.5s");
    for (who, tcp, took, _, stats, recv) in run(&filters) {
        assert_eq!(tcp.greeting, "HELLO\n", "{who}");
        assert_eq!(tcp.after_send, "", "{who}");
        assert_eq!(recv, 0, "{who}");
        assert!(
            took >= Duration::from_millis(450) && took < Duration::from_millis(1500),
            "{who}: closed {took:?} after the first bytes, want about 500 ms"
        );
        assert!(
            stats.contains(&"netrbac.rbac.denied: 2".to_string()),
            "{who}: {stats:?}"
        );
    }
}
