//! A connection's first bytes: the protocol sniffer on a captured connection (`detect::sniff`,
//! what `detect::detect` decides from each peek), and the proxy_protocol listener filter's
//! header parser (`proxy_protocol::parse::parse`, what `proxy_protocol::read` decides from each
//! peek) under each of its accept settings.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_engine::detect::{sniff, Protocol, PEEK_MAX};
use sluice_engine::proxy_protocol::{
    encode,
    parse::{parse, Accept, Header, Parsed},
};

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
    for accept in [
        Accept::default(),
        Accept {
            without: true,
            ..Accept::default()
        },
        Accept {
            v1: false,
            without: true,
            ..Accept::default()
        },
    ] {
        proxy_header(data, accept);
    }
});

fn proxy_header(data: &[u8], accept: Accept) {
    match parse(data, accept) {
        Parsed::Header(h) => {
            assert!(h.len <= data.len() && h.len >= 15, "header length {}", h.len);
            // A header delimits itself: the bytes after it change nothing.
            assert_eq!(parse(&data[..h.len], accept), Parsed::Header(h));
            // What it states, written again, reads back the same.
            if let Some(addrs) = h.addrs {
                let own = ("127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap());
                let again = encode::header(h.version, Some(addrs), own);
                assert!(matches!(
                    parse(&again, Accept::default()),
                    Parsed::Header(Header { addrs: Some(a), .. }) if a == addrs
                ));
            }
        }
        Parsed::More { need } => assert!(need > data.len(), "more, yet {need} <= {}", data.len()),
        Parsed::Absent => assert!(accept.without, "absent where a header is required"),
        Parsed::Denied(_) | Parsed::Error(_) => {}
    }
}
