//! The HCM's `http2_protocol_options` against a real Envoy 1.40 on the same YAML: the SETTINGS
//! a downstream HTTP/2 connection advertises (`max_concurrent_streams`,
//! `initial_stream_window_size`) and the connection window its first WINDOW_UPDATE opens
//! (`initial_connection_window_size`) are Envoy's; istiod's empty message loads; a value out of
//! Envoy's bounds is refused naming the field.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use sluice_tests::{
    admin_run::{direct_response_config as config, start_text},
    conformance::proxy::free_ports,
};

/// What the server's first frames say: (SETTINGS_MAX_CONCURRENT_STREAMS,
/// SETTINGS_INITIAL_WINDOW_SIZE, the connection window after its WINDOW_UPDATEs).
fn advertised(port: u16) -> (Option<u32>, Option<u32>, u64) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    // The preface and an empty SETTINGS frame.
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .expect("preface");
    let mut buf = Vec::new();
    let deadline = Instant::now() + Duration::from_millis(800);
    while Instant::now() < deadline {
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => {}
        }
    }
    let (mut streams, mut window, mut conn_window) = (None, None, 65_535u64);
    let mut rest = &buf[..];
    while rest.len() >= 9 {
        let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
        let (kind, flags) = (rest[3], rest[4]);
        let stream = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]) & 0x7fff_ffff;
        let Some(payload) = rest.get(9..9 + len) else {
            break;
        };
        match kind {
            0x4 if flags & 1 == 0 => {
                for p in payload.chunks_exact(6) {
                    let v = u32::from_be_bytes([p[2], p[3], p[4], p[5]]);
                    match u16::from_be_bytes([p[0], p[1]]) {
                        3 => streams = Some(v),
                        4 => window = Some(v),
                        _ => {}
                    }
                }
            }
            0x8 if stream == 0 => {
                let inc = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                conn_window += u64::from(inc & 0x7fff_ffff);
            }
            _ => {}
        }
        rest = &rest[9 + len..];
    }
    (streams, window, conn_window)
}

#[test]
fn settings_and_connection_window_are_envoys() {
    let options = "http2_protocol_options: {max_concurrent_streams: 7, initial_stream_window_size: 70000, initial_connection_window_size: 1000000}";
    let [e_port, s_port] = free_ports::<2>();
    let envoy = start_text("h2-options", &config(e_port, options), true);
    let sluice = start_text("h2-options", &config(s_port, options), false);
    let want = advertised(e_port);
    assert_eq!(want, (Some(7), Some(70_000), 1_000_000), "Envoy 1.40's");
    assert_eq!(advertised(s_port), want);
    drop((envoy, sluice));
}

#[test]
fn istiods_empty_options_load_and_bounds_are_envoys() {
    let [port] = free_ports::<1>();
    // As istiod sends it for an HTTP/2 or gRPC port of an inbound listener.
    let sluice = start_text(
        "h2-empty",
        &config(port, "http2_protocol_options: {}"),
        false,
    );
    let (streams, window, _) = advertised(port);
    assert!(streams.is_some() && window.is_some(), "an HTTP/2 server");
    drop(sluice);
    for (options, field) in [
        (
            "http2_protocol_options: {max_concurrent_streams: 0}",
            "http2_protocol_options.max_concurrent_streams",
        ),
        (
            "http2_protocol_options: {initial_stream_window_size: 1000}",
            "http2_protocol_options.initial_stream_window_size",
        ),
        (
            "http2_protocol_options: {hpack_table_size: 0}",
            "http2_protocol_options.hpack_table_size: not supported",
        ),
    ] {
        let text = config(port, options).replace("ADMIN_PORT", "0");
        let err = sluice_engine::config::from_yaml_str(&text).expect_err(options);
        assert!(err.to_string().contains(field), "{options}: {err}");
    }
}
