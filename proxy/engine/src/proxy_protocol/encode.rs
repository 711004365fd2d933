//! The header an upstream connection starts with (Envoy's `generateV1Header`,
//! `generateV2Header`, `generateV2LocalHeader`).

use std::net::{IpAddr, SocketAddr};

use super::{Version, V2_SIGNATURE};

/// The header of `version` stating `src` -> `dst` (the downstream connection's peer and local
/// address). Without them (a health check's connection), v1 states the upstream connection's
/// own `local` -> `remote`, and v2 is a LOCAL command, as Envoy.
pub fn header(
    version: Version,
    addrs: Option<(SocketAddr, SocketAddr)>,
    own: (SocketAddr, SocketAddr),
) -> Vec<u8> {
    match (version, addrs) {
        (Version::V1, a) => v1(a.unwrap_or(own)),
        (Version::V2, Some(a)) => v2(a),
        (Version::V2, None) => {
            let mut b = V2_SIGNATURE.to_vec();
            b.extend_from_slice(&[0x20, 0, 0, 0]);
            b
        }
    }
}

/// `PROXY TCP4|TCP6 src dst sport dport\r\n` (the family is the source's).
fn v1((src, dst): (SocketAddr, SocketAddr)) -> Vec<u8> {
    let fam = if src.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {fam} {} {} {} {}\r\n",
        src.ip(),
        dst.ip(),
        src.port(),
        dst.port()
    )
    .into_bytes()
}

/// Signature, PROXY command, AF_INET(6) STREAM, addresses and ports (the family is the
/// source's; a destination of the other family is written in the source's: IPv4-mapped, or
/// unmapped when it is one).
fn v2((src, dst): (SocketAddr, SocketAddr)) -> Vec<u8> {
    let mut b = V2_SIGNATURE.to_vec();
    match src.ip() {
        IpAddr::V4(s) => {
            let d = match dst.ip() {
                IpAddr::V4(d) => d,
                IpAddr::V6(d) => d
                    .to_ipv4_mapped()
                    .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
            };
            b.extend_from_slice(&[0x21, 0x11, 0, 12]);
            b.extend_from_slice(&s.octets());
            b.extend_from_slice(&d.octets());
        }
        IpAddr::V6(s) => {
            let d = match dst.ip() {
                IpAddr::V6(d) => d,
                IpAddr::V4(d) => d.to_ipv6_mapped(),
            };
            b.extend_from_slice(&[0x21, 0x21, 0, 36]);
            b.extend_from_slice(&s.octets());
            b.extend_from_slice(&d.octets());
        }
    }
    b.extend_from_slice(&src.port().to_be_bytes());
    b.extend_from_slice(&dst.port().to_be_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::super::parse::{parse, Accept, Header, Parsed};
    use super::*;

    #[test]
    fn headers_read_back_as_written() {
        let own = (
            "127.0.0.1:5000".parse().unwrap(),
            "127.0.0.1:80".parse().unwrap(),
        );
        for (src, dst) in [
            ("10.1.2.3:40000", "10.9.9.9:80"),
            ("[2001:db8::1]:1", "[2001:db8::2]:2"),
        ] {
            let a = (src.parse().unwrap(), dst.parse().unwrap());
            for v in [Version::V1, Version::V2] {
                let h = header(v, Some(a), own);
                assert_eq!(
                    parse(&h, Accept::default()),
                    Parsed::Header(Header {
                        version: v,
                        len: h.len(),
                        addrs: Some(a)
                    })
                );
            }
        }
        assert_eq!(
            header(
                Version::V1,
                Some((
                    "10.1.2.3:40000".parse().unwrap(),
                    "10.9.9.9:80".parse().unwrap()
                )),
                own
            ),
            b"PROXY TCP4 10.1.2.3 10.9.9.9 40000 80\r\n"
        );
        // No downstream: v1 states the connection's own addresses, v2 is LOCAL.
        assert_eq!(
            header(Version::V1, None, own),
            b"PROXY TCP4 127.0.0.1 127.0.0.1 5000 80\r\n"
        );
        let local = header(Version::V2, None, own);
        assert_eq!(local.len(), 16);
        assert!(matches!(
            parse(&local, Accept::default()),
            Parsed::Header(Header { addrs: None, .. })
        ));
    }
}
