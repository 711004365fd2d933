//! The HCM's `request_headers_timeout` (and `request_timeout` while a head arrives) against a
//! real Envoy 1.40 on the same YAML: a head that stops short gets Envoy's 408 (same status line,
//! headers and body; only `date` differs) about the timeout after its first byte, and the
//! connection closes; an idle keep-alive connection runs no timer, so a request after a pause
//! longer than the timeout is served (hyper's own header timer used to close such connections).

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use sluice_tests::{
    admin_run::{direct_response_config as config, start_text},
    conformance::proxy::free_ports,
};

/// Sends `head` and reads until the server closes (or 5 s pass): what came back, without its
/// `date` line, and how long it took.
fn partial_head(port: u16, head: &[u8]) -> (String, Duration) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let t = Instant::now();
    s.write_all(head).expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out)
        .split("\r\n")
        .filter(|l| !l.starts_with("date: "))
        .collect::<Vec<_>>()
        .join("\r\n");
    (text, t.elapsed())
}

/// Two requests on one connection with `pause` between them: both statuses.
fn keep_alive_after(port: u16, pause: Duration) -> (String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut get = || {
        let _ = s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n");
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n])
            .lines()
            .next()
            .unwrap_or("")
            .to_string()
    };
    let first = get();
    std::thread::sleep(pause);
    (first, get())
}

#[test]
fn a_slow_head_gets_envoys_408_and_idle_keep_alive_survives() {
    let cases = [
        (
            "request_headers_timeout: 1s",
            "request header timeout",
            Duration::from_secs(1),
        ),
        // request_timeout runs from the head's first byte too, and is the shorter one here.
        (
            "request_headers_timeout: 3s\n          request_timeout: 1s",
            "request timeout",
            Duration::from_secs(1),
        ),
    ];
    for (options, body, after) in cases {
        let [e_port, s_port] = free_ports::<2>();
        let envoy = start_text("head-timeout", &config(e_port, options), true);
        let sluice = start_text("head-timeout", &config(s_port, options), false);
        let head = b"GET / HTTP/1.1\r\nhost: x\r\n";
        let (want, e_took) = partial_head(e_port, head);
        assert!(
            want.starts_with("HTTP/1.1 408 Request Timeout\r\n") && want.ends_with(body),
            "Envoy 1.40's answer ({options}): {want:?}"
        );
        let (got, s_took) = partial_head(s_port, head);
        assert_eq!(got, want, "{options}");
        for (who, took) in [("envoy", e_took), ("sluice", s_took)] {
            assert!(
                took >= after && took < after + Duration::from_millis(1500),
                "{who} answered after {took:?} ({options})"
            );
        }
        // Idle longer than the timeout between two requests: no timer runs, both served.
        let pause = after + Duration::from_millis(500);
        let ok = "HTTP/1.1 200 OK".to_string();
        assert_eq!(keep_alive_after(e_port, pause), (ok.clone(), ok.clone()));
        assert_eq!(
            keep_alive_after(s_port, pause),
            (ok.clone(), ok),
            "{options}"
        );
        drop((envoy, sluice));
    }
}

#[test]
fn without_a_timeout_idle_keep_alive_outlives_the_head_guard() {
    // sluice's own head guard (10 s from a head's first byte) never closes an idle connection.
    let [port] = free_ports::<1>();
    let sluice = start_text("head-timeout-default", &config(port, ""), false);
    let ok = "HTTP/1.1 200 OK".to_string();
    assert_eq!(
        keep_alive_after(port, Duration::from_secs(11)),
        (ok.clone(), ok)
    );
    drop(sluice);
}
