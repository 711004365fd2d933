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
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .expect("write");
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
