//! An HTTP health check's `send`, `receive`, `response_buffer_size` and `service_name_matcher`
//! against a real Envoy 1.40 on the same YAML: a POST check with a payload, five hosts whose
//! answers pass, miss a `receive` block, name another cluster in
//! `x-envoy-upstream-healthchecked-cluster`, hold the payloads but answer 503, or hold them past
//! the first `response_buffer_size` bytes. The request each host got and the `/clusters` flags
//! must be Envoy's.

use std::{
    io::{Read, Write},
    net::TcpListener,
    sync::{Arc, Mutex},
    time::Duration,
};

use sluice_tests::{
    admin_run::{host_health_flags, one_cluster_bootstrap, start_text},
    conformance::proxy::free_ports,
};

/// A host answering every request with `answer` (a whole HTTP/1.1 response); keeps the first
/// request it got (head lower-cased, then the body).
struct Host {
    port: u16,
    first: Arc<Mutex<Option<String>>>,
}

fn host(answer: String) -> Host {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let first = Arc::new(Mutex::new(None));
    let seen = first.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let (seen, answer) = (seen.clone(), answer.clone());
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]);
                            let mut lines: Vec<&str> = head.lines().collect();
                            lines[1..].sort_unstable();
                            seen.lock()
                                .unwrap()
                                .get_or_insert(format!("{} body={body:?}", lines.join(" | ")));
                            buf.drain(..end + 4 + len);
                            if s.write_all(answer.as_bytes()).is_err() {
                                return;
                            }
                            continue;
                        }
                    }
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    Host { port, first }
}

fn response(status: &str, cluster: Option<&str>, body: &str) -> String {
    let cluster = cluster.map_or(String::new(), |c| {
        format!("x-envoy-upstream-healthchecked-cluster: {c}\r\n")
    });
    format!(
        "HTTP/1.1 {status}\r\ncontent-length: {}\r\n{cluster}\r\n{body}",
        body.len()
    )
}

fn config(port: u16, hosts: &[u16]) -> String {
    // receive: "ok" (hex 6f6b) then "7" (base64 Nw==); send: "ping" (hex).
    let fields = "    health_checks:
    - timeout: 1s
      interval: 0.2s
      no_traffic_interval: 0.2s
      unhealthy_threshold: 1
      healthy_threshold: 1
      http_health_check:
        path: /hc
        method: POST
        send: {text: 70696e67}
        receive: [{text: 6f6b}, {binary: Nw==}]
        service_name_matcher: {prefix: sho}
";
    one_cluster_bootstrap(port, "shop", fields, hosts)
}

#[test]
fn http_check_payloads_and_service_name_are_envoys() {
    let mut rows = Vec::new();
    for envoy in [true, false] {
        let padded = format!("{}ok 7", "x".repeat(2_000));
        let hosts = [
            host(response("200 OK", Some("shop"), "status: ok, version 7")),
            host(response(
                "200 OK",
                Some("shop"),
                "status: failing, version 7",
            )),
            host(response("200 OK", Some("other"), "status: ok, version 7")),
            host(response("503 Service Unavailable", Some("shop"), "ok 7")),
            host(response("200 OK", Some("shop"), &padded)),
        ];
        let ports: Vec<u16> = hosts.iter().map(|h| h.port).collect();
        let [port] = free_ports::<1>();
        let p = start_text("hc-body", &config(port, &ports), envoy);
        std::thread::sleep(Duration::from_millis(1_000));
        let flags: Vec<String> = ports
            .iter()
            .map(|&hp| host_health_flags(&p.admin, "shop", hp))
            .collect();
        let request = hosts[0].first.lock().unwrap().clone().unwrap_or_default();
        let row = format!("{flags:?} request: {request}");
        eprintln!("{}: {row}", if envoy { "envoy" } else { "sluice" });
        rows.push(row);
        drop(p);
    }
    assert_eq!(rows[0], rows[1], "sluice differs from Envoy");
    assert!(
        rows[0].starts_with(
            "[\"healthy\", \"/failed_active_hc\", \"/failed_active_hc\", \"/failed_active_hc\", \"/failed_active_hc\"]"
        ),
        "{}",
        rows[0]
    );
    assert!(rows[0].contains("body=\"ping\""), "{}", rows[0]);
}
