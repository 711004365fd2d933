//! The fault filter's `response_rate_limit` against a real Envoy 1.40 on the same YAML: how long
//! a 2 KiB response body takes at a fixed 1 KiB/s and at the rate the request's
//! `x-envoy-fault-throughput-response` header asks for (`header_limit`); without the header the
//! header-controlled limit does not apply. The conformance suite does not time responses.

use std::time::{Duration, Instant};

use sluice_tests::{
    admin_run::{hcm_config, start_text},
    conformance::proxy::free_ports,
    upstream::harness::curl,
};

/// A listener on `port` whose fault filter has `limit` as its `response_rate_limit`, answering
/// 2048 bytes itself.
fn config(port: u16, limit: &str) -> String {
    let fault = format!(
        r#"{{name: envoy.filters.http.fault, typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault, response_rate_limit: {limit}}}}}, "#
    );
    let body = "x".repeat(2048);
    let action = format!("direct_response: {{status: 200, body: {{inline_string: {body}}}}}");
    hcm_config(port, "", &fault, &action)
}

/// How long the whole body takes (and its length), with `headers`.
fn fetch(port: u16, headers: &[&str]) -> (usize, Duration) {
    let url = format!("http://127.0.0.1:{port}/");
    let mut args = vec!["-s", url.as_str()];
    for h in headers {
        args.extend(["-H", h]);
    }
    let t = Instant::now();
    let (status, _, body) = curl(&args);
    assert_eq!(status, 200);
    (body.len(), t.elapsed())
}

#[test]
fn response_bodies_are_paced_as_envoy_paces_them() {
    for (limit, headers, expected) in [
        // 51 bytes at once, then 51.2 bytes per 50 ms: 2048 bytes in about 1.95 s.
        (
            "{fixed_limit: {limit_kbps: 1}, percentage: {numerator: 100}}",
            &[][..],
            Duration::from_millis(1950),
        ),
        // The header asks for 2 KiB/s: about 0.95 s.
        (
            "{header_limit: {}, percentage: {numerator: 100}}",
            &["x-envoy-fault-throughput-response: 2"][..],
            Duration::from_millis(950),
        ),
        // No header: no limit.
        (
            "{header_limit: {}, percentage: {numerator: 100}}",
            &[][..],
            Duration::ZERO,
        ),
    ] {
        let [e_port, s_port] = free_ports::<2>();
        let envoy = start_text("fault-rate-limit", &config(e_port, limit), true);
        let sluice = start_text("fault-rate-limit", &config(s_port, limit), false);
        for (who, port) in [("envoy", e_port), ("sluice", s_port)] {
            let (len, took) = fetch(port, headers);
            assert_eq!(len, 2048, "{who}");
            assert!(
                took + Duration::from_millis(100) >= expected
                    && took <= expected + Duration::from_millis(250),
                "{who} took {took:?}, want about {expected:?} ({limit}, {headers:?})"
            );
        }
        drop((envoy, sluice));
    }
}
