//! When the HCM closes an idle keep-alive HTTP/1 connection, against a real Envoy 1.40 on the
//! same YAML: the `idle_timeout` starts the drain, `drain_timeout` later the connection is closed,
//! and `delayed_close_timeout` (default 1 s) later still the socket is (the proxy waits that long
//! for the client to close first). Both proxies must close within the same window.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use sluice_tests::{
    admin_run::{direct_response_config as config, start_text},
    conformance::proxy::free_ports,
};

/// One request, then how long until the server closes the idle connection (its FIN).
fn closed_after(port: u16) -> Duration {
    fin_after(port, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
}

#[test]
fn idle_drain_and_delayed_close_time_the_close_as_envoy() {
    for (options, expected) in [
        // 0.5 s idle + 1 s drain + the default 1 s delayed close.
        (
            "common_http_protocol_options: {idle_timeout: 0.5s}\n          drain_timeout: 1s",
            Duration::from_millis(2500),
        ),
        (
            "common_http_protocol_options: {idle_timeout: 0.5s}\n          drain_timeout: 1s\n          delayed_close_timeout: 0s",
            Duration::from_millis(1500),
        ),
    ] {
        let [e_port, s_port] = free_ports::<2>();
        let envoy = start_text("close-timing", &config(e_port, options), true);
        let sluice = start_text("close-timing", &config(s_port, options), false);
        for (who, port) in [("envoy", e_port), ("sluice", s_port)] {
            let took = closed_after(port);
            assert!(
                took + Duration::from_millis(150) >= expected
                    && took <= expected + Duration::from_millis(400),
                "{who} closed after {took:?}, want about {expected:?} ({options})"
            );
        }
        drop((envoy, sluice));
    }
}

/// `request`, then how long from the start of its response until the server's FIN.
fn fin_after(port: u16, request: &[u8]) -> Duration {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).expect("write");
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).expect("response");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
    let t = Instant::now();
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return t.elapsed(),
            Ok(_) => {}
        }
    }
}

#[test]
fn a_whole_request_asking_to_close_is_not_held_after_an_upstream_answer() {
    // Envoy's `shouldSkipDeferredCloseDelay`: after an upstream's answer to a request that asked
    // for the close and came whole, the socket closes at once; after a reply made while the
    // head was decoded (a direct response) the default delayed_close_timeout (1 s) holds it.
    let up = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up_port = up.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in up.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
                let _ = s.read(&mut buf);
            });
        }
    });
    let cluster = format!(
        "  - name: up\n    type: STATIC\n    connect_timeout: 1s\n    load_assignment: {{cluster_name: up, endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {up_port}}}}}}}}}]}}]}}\n"
    );
    let routes = r#"route_config: {virtual_hosts: [{name: v, domains: ["*"], routes: [{match: {prefix: /direct}, direct_response: {status: 200}}, {match: {prefix: /}, route: {cluster: up}}]}]}"#;
    let [e_port, s_port] = free_ports::<2>();
    let text = |port| sluice_tests::admin_run::hcm_bootstrap(port, routes, "", &cluster);
    let envoy = start_text("close-timing", &text(e_port), true);
    let sluice = start_text("close-timing", &text(s_port), false);
    for (who, port) in [("envoy", e_port), ("sluice", s_port)] {
        let took = fin_after(
            port,
            b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        );
        assert!(
            took < Duration::from_millis(300),
            "{who}: routed, closed after {took:?}"
        );
        let took = fin_after(
            port,
            b"GET /direct HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        );
        assert!(
            took > Duration::from_millis(850) && took < Duration::from_millis(1400),
            "{who}: direct response, closed after {took:?}"
        );
    }
    drop((envoy, sluice));
}
