//! A PROXY protocol header the proxy sent ahead of a request (an `upstream_proxy_protocol`
//! transport socket): read off the connection before anything else, and told in a form the
//! two proxies' runs can be compared in (ports of loopback addresses masked: they are the test
//! client's ephemeral ones and each proxy's own listener port). Parsed here on its own, not
//! with sluice's parser, so it checks what sluice writes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::{io::AsyncReadExt, net::TcpStream};

const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// Reads the header `sock` starts with, if any: `v1 TCP4 <src> > <dst>`, `v1 UNKNOWN`,
/// `v2 PROXY <src> > <dst>`, `v2 LOCAL`, or `malformed: ...`.
pub async fn take(sock: &mut TcpStream) -> Option<String> {
    let mut first = [0u8; 12];
    // Enough bytes to tell (a request or a ClientHello starts differently within 6 bytes).
    let n = loop {
        let n = sock.peek(&mut first).await.ok()?;
        if n == 0 {
            return None;
        }
        let could_be = |sig: &[u8]| first[..n.min(sig.len())] == sig[..n.min(sig.len())];
        if !could_be(b"PROXY ") && !could_be(V2_SIGNATURE) {
            return None;
        }
        if n >= 12 || (n >= 6 && &first[..6] == b"PROXY ") {
            break n;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    };
    if n >= 6 && &first[..6] == b"PROXY " {
        let mut line = Vec::new();
        while !line.ends_with(b"\r\n") && line.len() < 120 {
            let mut b = [0u8; 1];
            sock.read_exact(&mut b).await.ok()?;
            line.push(b[0]);
        }
        return Some(describe(&line));
    }
    let mut head = vec![0u8; 16];
    sock.read_exact(&mut head).await.ok()?;
    let len = usize::from(u16::from_be_bytes([head[14], head[15]]));
    head.resize(16 + len, 0);
    sock.read_exact(&mut head[16..]).await.ok()?;
    Some(describe(&head))
}

/// A whole header's bytes (a v1 line with its CRLF, or a v2 header with its TLVs), told as
/// [`take`] tells it.
pub fn describe(header: &[u8]) -> String {
    if header.starts_with(b"PROXY ") {
        return v1(&String::from_utf8_lossy(header));
    }
    if header.len() >= 16 && header.starts_with(V2_SIGNATURE) {
        return v2(header[12], header[13], &header[16..]);
    }
    format!("malformed: {header:?}")
}

fn shown(a: SocketAddr) -> String {
    if a.ip().is_loopback() {
        format!("{}:<port>", a.ip())
    } else {
        a.to_string()
    }
}

fn v1(line: &str) -> String {
    let parts: Vec<&str> = line.trim_end().split(' ').collect();
    match parts.as_slice() {
        ["PROXY", "UNKNOWN", ..] => "v1 UNKNOWN".into(),
        ["PROXY", fam, src, dst, sp, dp] => {
            let addr = |ip: &str, port: &str| -> Option<SocketAddr> {
                Some(SocketAddr::new(ip.parse().ok()?, port.parse().ok()?))
            };
            match (addr(src, sp), addr(dst, dp)) {
                (Some(s), Some(d)) => format!("v1 {fam} {} > {}", shown(s), shown(d)),
                _ => format!("malformed: {line:?}"),
            }
        }
        _ => format!("malformed: {line:?}"),
    }
}

fn v2(ver_cmd: u8, fam: u8, body: &[u8]) -> String {
    match (ver_cmd, fam) {
        (0x20, _) => "v2 LOCAL".into(),
        (0x21, 0x11) if body.len() >= 12 => {
            let ip = |o: usize| {
                IpAddr::V4(Ipv4Addr::new(
                    body[o],
                    body[o + 1],
                    body[o + 2],
                    body[o + 3],
                ))
            };
            let port = |o: usize| u16::from_be_bytes([body[o], body[o + 1]]);
            let (s, d) = (
                SocketAddr::new(ip(0), port(8)),
                SocketAddr::new(ip(4), port(10)),
            );
            format!(
                "v2 PROXY TCP4 {} > {} tlvs={}",
                shown(s),
                shown(d),
                body.len() - 12
            )
        }
        (0x21, 0x21) if body.len() >= 36 => {
            let ip = |o: usize| {
                let mut x = [0u8; 16];
                x.copy_from_slice(&body[o..o + 16]);
                IpAddr::V6(Ipv6Addr::from(x))
            };
            let port = |o: usize| u16::from_be_bytes([body[o], body[o + 1]]);
            let (s, d) = (
                SocketAddr::new(ip(0), port(32)),
                SocketAddr::new(ip(16), port(34)),
            );
            format!(
                "v2 PROXY TCP6 {} > {} tlvs={}",
                shown(s),
                shown(d),
                body.len() - 36
            )
        }
        _ => format!(
            "malformed: ver_cmd {ver_cmd:#x} family {fam:#x} length {}",
            body.len()
        ),
    }
}
