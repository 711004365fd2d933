//! What the first bytes of a connection say as a PROXY header, as Envoy 1.40's listener filter
//! reads them (`readProxyHeader`, `parseV1Header`, `parseV2Header`, `parseTlvs`). Pure: the
//! fuzz target `proxy_protocol` drives it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{Version, V1_MAX_LEN, V1_SIGNATURE, V2_HEADER_LEN, V2_SIGNATURE};

/// Which versions a listener takes, and whether a connection may come without a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accept {
    /// Not in `disallowed_versions`.
    pub v1: bool,
    /// Not in `disallowed_versions`.
    pub v2: bool,
    /// `allow_requests_without_proxy_protocol`.
    pub without: bool,
}

impl Default for Accept {
    fn default() -> Self {
        Self {
            v1: true,
            v2: true,
            without: false,
        }
    }
}

/// A complete header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Its version.
    pub version: Version,
    /// Its length on the wire (TLVs included): the bytes to consume.
    pub len: usize,
    /// The connection's source and destination as the header states them; `None` for a v2
    /// LOCAL command or a v1 `UNKNOWN` line (the connection's own addresses stand).
    pub addrs: Option<(SocketAddr, SocketAddr)>,
}

/// What the bytes read so far decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// Too few bytes yet; `need`: how many the header has at least (to size the peek).
    More {
        /// At least this many bytes make the header.
        need: usize,
    },
    /// A header.
    Header(Header),
    /// No header, and that is allowed (`allow_requests_without_proxy_protocol`): nothing to
    /// consume.
    Absent,
    /// A header of a version the listener disallows (Envoy closes; stats `found`, `disallowed`).
    Denied(Version),
    /// Malformed (Envoy closes; `None`: not a header at all, stat `not_found_disallowed`).
    Error(Option<Version>),
}

/// What `b` (the connection's first bytes, as many as have come) says.
pub fn parse(b: &[u8], accept: Accept) -> Parsed {
    if accept.without {
        let prefix = |sig: &[u8]| b[..b.len().min(sig.len())] == sig[..b.len().min(sig.len())];
        let may_be_header =
            (accept.v2 && prefix(V2_SIGNATURE)) || (accept.v1 && prefix(V1_SIGNATURE));
        if !may_be_header {
            return Parsed::Absent;
        }
    }
    if b.len() >= V2_HEADER_LEN && b.starts_with(V2_SIGNATURE) {
        if !accept.v2 {
            return Parsed::Denied(Version::V2);
        }
        return v2(b);
    }
    if b.len() >= V2_HEADER_LEN && !b.starts_with(V1_SIGNATURE) {
        return Parsed::Error(None);
    }
    // A v1 line ends at the first CRLF; one ending at index 1 may be the v2 signature's start:
    // Envoy then waits for more bytes (and looks no further).
    match b.windows(2).position(|w| w == b"\r\n") {
        Some(0) if b.len() < V2_HEADER_LEN => Parsed::More {
            need: V2_HEADER_LEN,
        },
        Some(0) => Parsed::Error(None),
        Some(i) if i + 2 > V1_MAX_LEN => Parsed::Error(Some(Version::V1)),
        Some(i) => {
            let end = i + 2;
            if !accept.v1 {
                return Parsed::Denied(Version::V1);
            }
            match v1(&b[..end]) {
                Some(addrs) => Parsed::Header(Header {
                    version: Version::V1,
                    len: end,
                    addrs,
                }),
                None => Parsed::Error(Some(Version::V1)),
            }
        }
        None if b.len() > V1_MAX_LEN => Parsed::Error(None),
        None => Parsed::More {
            need: b.len().max(V2_HEADER_LEN - 1) + 1,
        },
    }
}

/// A v1 line (`PROXY TCP4 src dst sport dport\r\n`, or `PROXY UNKNOWN ...`): `Some(None)` for
/// UNKNOWN, `None` when malformed.
fn v1(line: &[u8]) -> Option<Option<(SocketAddr, SocketAddr)>> {
    // Whatever follows UNKNOWN is ignored (it need not be text).
    if line.starts_with(b"PROXY UNKNOWN") {
        let rest = &line[b"PROXY UNKNOWN".len()..];
        if rest.first() == Some(&b' ') || rest.iter().all(u8::is_ascii_whitespace) {
            return Some(None);
        }
    }
    let line = std::str::from_utf8(line).ok()?.trim_end();
    // Envoy splits on single spaces, keeping empty parts (two spaces make a malformed line).
    let parts: Vec<&str> = line.split(' ').collect();
    if parts.len() < 2 || parts[0] != "PROXY" {
        return None;
    }
    if parts[1] == "UNKNOWN" {
        return Some(None);
    }
    if parts.len() != 6 {
        return None;
    }
    let v4 = match parts[1] {
        "TCP4" => true,
        "TCP6" => false,
        _ => return None,
    };
    let addr = |ip: &str, port: &str| -> Option<SocketAddr> {
        let ip: IpAddr = ip.parse().ok()?;
        if ip.is_ipv4() != v4 {
            return None;
        }
        // absl's SimpleAtoi, as Envoy: surrounding whitespace allowed.
        let port: u16 = port.trim().parse().ok()?;
        Some(SocketAddr::new(ip, port))
    };
    let src = addr(parts[2], parts[4])?;
    let dst = addr(parts[3], parts[5])?;
    (unicast(src.ip()) && unicast(dst.ip())).then_some(Some((src, dst)))
}

/// A v2 header (the signature is there, and the 16 fixed bytes).
fn v2(b: &[u8]) -> Parsed {
    let err = Parsed::Error(Some(Version::V2));
    let (ver_cmd, fam) = (b[12], b[13]);
    if ver_cmd >> 4 != 2 {
        return err;
    }
    let len = usize::from(u16::from_be_bytes([b[14], b[15]]));
    let whole = V2_HEADER_LEN + len;
    let local = ver_cmd & 0xf == 0;
    let addr_len = match (local, fam >> 4) {
        (true, _) => 0,
        (false, 1) => 12,
        (false, 2) => 36,
        _ => return err,
    };
    if len < addr_len {
        return err;
    }
    // With the addresses in, a command other than LOCAL or PROXY, or a transport other than
    // STREAM or DGRAM, is refused at once (the TLVs are not waited for).
    let proxy_over_ip = ver_cmd & 0xf == 1 && matches!(fam & 0xf, 1 | 2);
    if !local && !proxy_over_ip && b.len() >= V2_HEADER_LEN + addr_len {
        return err;
    }
    if b.len() < whole {
        return Parsed::More { need: whole };
    }
    let header = |addrs| {
        Parsed::Header(Header {
            version: Version::V2,
            len: whole,
            addrs,
        })
    };
    if local {
        return header(None);
    }
    let a = &b[V2_HEADER_LEN..V2_HEADER_LEN + addr_len];
    let (src, dst) = if addr_len == 12 {
        let ip = |o: usize| IpAddr::V4(Ipv4Addr::new(a[o], a[o + 1], a[o + 2], a[o + 3]));
        let port = |o: usize| u16::from_be_bytes([a[o], a[o + 1]]);
        (
            SocketAddr::new(ip(0), port(8)),
            SocketAddr::new(ip(4), port(10)),
        )
    } else {
        let ip = |o: usize| {
            let mut x = [0u8; 16];
            x.copy_from_slice(&a[o..o + 16]);
            IpAddr::V6(Ipv6Addr::from(x))
        };
        let port = |o: usize| u16::from_be_bytes([a[o], a[o + 1]]);
        (
            SocketAddr::new(ip(0), port(32)),
            SocketAddr::new(ip(16), port(34)),
        )
    };
    if !tlvs_well_formed(&b[V2_HEADER_LEN + addr_len..whole]) {
        return err;
    }
    if !unicast(src.ip()) || !unicast(dst.ip()) {
        return err;
    }
    header(Some((src, dst)))
}

/// Whether `b` is a sequence of whole TLVs (type, 16-bit length, value).
fn tlvs_well_formed(mut b: &[u8]) -> bool {
    while !b.is_empty() {
        if b.len() < 3 {
            return false;
        }
        let n = usize::from(u16::from_be_bytes([b[1], b[2]]));
        if b.len() < 3 + n {
            return false;
        }
        b = &b[3 + n..];
    }
    true
}

/// Envoy's `isUnicastAddress`: not the unspecified address, not multicast, not IPv4 broadcast.
fn unicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v) => !v.is_unspecified() && !v.is_multicast() && !v.is_broadcast(),
        IpAddr::V6(v) => !v.is_unspecified() && !v.is_multicast(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn v2_bytes(cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
        let mut b = V2_SIGNATURE.to_vec();
        b.push(0x20 | cmd);
        b.push(fam);
        b.extend_from_slice(&(body.len() as u16).to_be_bytes());
        b.extend_from_slice(body);
        b
    }

    #[test]
    fn v1_lines() {
        let a = Accept::default();
        let line = b"PROXY TCP4 10.1.2.3 10.9.9.9 40000 80\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            parse(line, a),
            Parsed::Header(Header {
                version: Version::V1,
                len: 39,
                addrs: Some((sa("10.1.2.3:40000"), sa("10.9.9.9:80")))
            })
        );
        let six = b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n";
        assert!(
            matches!(parse(six, a), Parsed::Header(Header { addrs: Some((s, _)), .. }) if s == sa("[2001:db8::1]:1"))
        );
        assert!(matches!(
            parse(b"PROXY UNKNOWN whatever\r\n", a),
            Parsed::Header(Header {
                addrs: None,
                len: 24,
                ..
            })
        ));
        assert!(matches!(
            parse(b"PROXY UNKNOWN \xff\xfe\r\n", a),
            Parsed::Header(Header { addrs: None, .. })
        ));
        assert!(matches!(
            parse(b"PROXY TCP4 10.1.2.3 10.9.9.9 1 80\t\r\n", a),
            Parsed::Header(Header { addrs: Some(_), .. })
        ));
        for bad in [
            &b"PROXY TCP4 10.1.2.3 10.9.9.9 40000 70000\r\n"[..],
            b"PROXY TCP4 10.1.2.3  10.9.9.9 1 2\r\n",
            b"PROXY TCP4 2001:db8::1 10.9.9.9 1 2\r\n",
            b"PROXY TCP4 0.0.0.0 10.9.9.9 1 2\r\n",
            b"PROXY TCP4 224.0.0.1 10.9.9.9 1 2\r\n",
            b"PROXY UDP4 10.1.2.3 10.9.9.9 1 2\r\n",
            b"PROXY TCP4 10.1.2.3 10.9.9.9 1\r\n",
        ] {
            assert_eq!(
                parse(bad, a),
                Parsed::Error(Some(Version::V1)),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // Not a header: HTTP on a listener that requires one.
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n", a),
            Parsed::Error(None)
        );
        assert!(matches!(parse(b"PROXY TCP4 10.1", a), Parsed::More { .. }));
        let long = [b'P'; 120];
        assert_eq!(parse(&long, a), Parsed::Error(None));
    }

    #[test]
    fn v2_headers() {
        let a = Accept::default();
        let body = [10, 1, 2, 3, 10, 9, 9, 9, 0x9c, 0x40, 0, 80];
        let h = v2_bytes(1, 0x11, &body);
        assert_eq!(
            parse(&h, a),
            Parsed::Header(Header {
                version: Version::V2,
                len: 28,
                addrs: Some((sa("10.1.2.3:40000"), sa("10.9.9.9:80")))
            })
        );
        // Partial: asks for the whole header.
        assert_eq!(parse(&h[..20], a), Parsed::More { need: 28 });
        assert!(matches!(parse(&h[..5], a), Parsed::More { .. }));
        assert_eq!(parse(&h[..15], a), Parsed::More { need: 16 });
        // LOCAL: no addresses; TLVs after the addresses are skipped.
        let local = v2_bytes(0, 0, &[]);
        assert!(matches!(
            parse(&local, a),
            Parsed::Header(Header {
                addrs: None,
                len: 16,
                ..
            })
        ));
        let mut tlv = body.to_vec();
        tlv.extend_from_slice(&[0x04, 0, 2, b'h', b'i']);
        assert!(matches!(
            parse(&v2_bytes(1, 0x11, &tlv), a),
            Parsed::Header(Header { len: 33, .. })
        ));
        let mut cut = body.to_vec();
        cut.extend_from_slice(&[0x04, 0, 5, b'h']);
        assert_eq!(
            parse(&v2_bytes(1, 0x11, &cut), a),
            Parsed::Error(Some(Version::V2))
        );
        // A bad command or transport is refused with the addresses in, before its TLVs.
        let mut long = v2_bytes(2, 0x11, &body);
        long[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(parse(&long, a), Parsed::Error(Some(Version::V2)));
        let mut unspec_transport = v2_bytes(1, 0x10, &body);
        unspec_transport[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(
            parse(&unspec_transport, a),
            Parsed::Error(Some(Version::V2))
        );
        // AF_UNSPEC with PROXY, a short address block, a bad version: refused.
        assert_eq!(
            parse(&v2_bytes(1, 0x00, &[]), a),
            Parsed::Error(Some(Version::V2))
        );
        assert_eq!(
            parse(&v2_bytes(1, 0x11, &body[..8]), a),
            Parsed::Error(Some(Version::V2))
        );
        let mut bad = h.clone();
        bad[12] = 0x11;
        assert_eq!(parse(&bad, a), Parsed::Error(Some(Version::V2)));
    }

    #[test]
    fn allowed_absence_and_disallowed_versions() {
        let without = Accept {
            without: true,
            ..Accept::default()
        };
        assert_eq!(parse(b"GET / HTTP/1.1\r\n", without), Parsed::Absent);
        assert_eq!(parse(b"\x16\x03\x01", without), Parsed::Absent);
        assert!(matches!(parse(b"PRO", without), Parsed::More { .. }));
        let no_v1 = Accept {
            v1: false,
            ..without
        };
        // With v1 disallowed, a v1 line is not a header at all (it passes through).
        assert_eq!(parse(b"PROXY UNKNOWN\r\n", no_v1), Parsed::Absent);
        let strict_no_v1 = Accept {
            v1: false,
            ..Accept::default()
        };
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n", strict_no_v1),
            Parsed::Denied(Version::V1)
        );
        let strict_no_v2 = Accept {
            v2: false,
            ..Accept::default()
        };
        assert_eq!(
            parse(&v2_bytes(0, 0, &[]), strict_no_v2),
            Parsed::Denied(Version::V2)
        );
    }
}
