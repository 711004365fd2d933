//! The protocol sniffer on a captured connection's first bytes (`detect::sniff`, what
//! `detect::detect` decides from each peek).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_engine::detect::{sniff, Protocol, PEEK_MAX};

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fuzz_target!(|data: &[u8]| {
    let data = &data[..data.len().min(PEEK_MAX)];
    match sniff(data) {
        Some(Protocol::Http2) => assert!(data.starts_with(H2_PREFACE)),
        Some(Protocol::Tls {
            sni: Some(name), ..
        }) => {
            assert_eq!(data[0], 0x16, "TLS verdict without a handshake record");
            assert!(name.len() <= data.len(), "SNI longer than the bytes peeked");
        }
        Some(_) => {}
        // Undecided only while fewer than PEEK_MAX bytes have arrived.
        None => assert!(data.len() < PEEK_MAX),
    }
    // A full peek buffer always decides.
    if data.len() == PEEK_MAX {
        assert!(sniff(data).is_some());
    }
});
