//! Protocol sniffing on captured connections: HTTP/1 request line, HTTP/2 preface, TLS ClientHello.
//!
//! Like Envoy's http_inspector/tls_inspector, the peek is bounded: [`DETECT_TIMEOUT`] (100 ms)
//! after accept, a connection that has sent too little to decide is treated as opaque TCP, and
//! one that has sent nothing at all is [`Protocol::Silent`]: the listener then connects to the
//! original destination so a server-speaks-first protocol (SMTP, MySQL, ...) gets its greeting
//! (Envoy's `listener_filters_timeout` with `continue_on_listener_filters_timeout`), but lets
//! whichever side speaks first decide, so a client that is merely slow to start is not misrouted.
//! Bytes are only peeked (`MSG_PEEK`), never consumed.

use std::time::Duration;

use tokio::net::TcpStream;

/// How long to wait for the client's first bytes before deciding "opaque TCP".
pub const DETECT_TIMEOUT: Duration = Duration::from_millis(100);
/// Bytes peeked at most (enough for a request line's method or a ClientHello's SNI).
pub const PEEK_MAX: usize = 2048;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const METHODS: &[&[u8]] = &[
    b"GET ",
    b"HEAD ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"CONNECT ",
    b"OPTIONS ",
    b"TRACE ",
    b"PATCH ",
];

/// What the first bytes look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protocol {
    /// An HTTP/1.1 request line (or one not complete yet).
    Http1,
    /// An HTTP/1.0 request line.
    Http10,
    /// The HTTP/2 connection preface (prior knowledge).
    Http2,
    /// A TLS ClientHello, with its SNI and ALPN when present.
    Tls {
        /// server_name extension.
        sni: Option<String>,
        /// application_layer_protocol_negotiation extension, in the client's order.
        alpn: Vec<String>,
    },
    /// Anything else, or too little to decide within the budget, or the client closed.
    Tcp,
    /// Not a byte within [`DETECT_TIMEOUT`]: a server-speaks-first protocol, or a client slow
    /// to start (a busy node can delay a client's first write by more than the budget).
    Silent,
}

impl Protocol {
    /// Whether an HTTP connection manager can serve it.
    pub fn is_http(&self) -> bool {
        matches!(self, Protocol::Http1 | Protocol::Http10 | Protocol::Http2)
    }

    /// What Envoy's http_inspector reports as the application protocol (`http/1.1`,
    /// `http/1.0`, `h2c`), if anything.
    pub fn http_inspector_protocol(&self) -> Option<&'static str> {
        match self {
            Protocol::Http1 => Some("http/1.1"),
            Protocol::Http10 => Some("http/1.0"),
            Protocol::Http2 => Some("h2c"),
            _ => None,
        }
    }
}

enum Verdict {
    Done(Protocol),
    NeedMore,
}

fn classify(b: &[u8]) -> Verdict {
    if b.is_empty() {
        return Verdict::NeedMore;
    }
    let n = b.len().min(H2_PREFACE.len());
    if b[..n] == H2_PREFACE[..n] {
        return if n == H2_PREFACE.len() {
            Verdict::Done(Protocol::Http2)
        } else {
            Verdict::NeedMore
        };
    }
    let mut maybe_method = false;
    for m in METHODS {
        let k = b.len().min(m.len());
        if b[..k] == m[..k] {
            if k == m.len() {
                return Verdict::Done(http1_version(b));
            }
            maybe_method = true;
        }
    }
    if maybe_method {
        return Verdict::NeedMore;
    }
    if b[0] == 0x16 {
        if b.len() < 6 {
            return Verdict::NeedMore;
        }
        if b[1] == 0x03 && b[5] == 0x01 {
            let rec_len = usize::from(u16::from_be_bytes([b[3], b[4]]));
            if b.len() < 5 + rec_len && b.len() < PEEK_MAX {
                return Verdict::NeedMore;
            }
            let (sni, alpn) = parse_hello(&b[5..]);
            return Verdict::Done(Protocol::Tls { sni, alpn });
        }
    }
    Verdict::Done(Protocol::Tcp)
}

/// HTTP/1.0 when the request line is complete and ends in `HTTP/1.0`, else HTTP/1.1.
fn http1_version(b: &[u8]) -> Protocol {
    let line = b
        .split(|c| *c == b'\n')
        .next()
        .filter(|_| b.contains(&b'\n'));
    match line.map(|l| l.strip_suffix(b"\r").unwrap_or(l)) {
        Some(l) if l.ends_with(b" HTTP/1.0") => Protocol::Http10,
        _ => Protocol::Http1,
    }
}

/// Extracts the server_name and the ALPN list from a ClientHello handshake message (best
/// effort: what is cut off or malformed is left out).
fn parse_hello(hs: &[u8]) -> (Option<String>, Vec<String>) {
    let (mut sni, mut alpn) = (None, Vec::new());
    let Some(mut p) = extensions_start(hs) else {
        return (sni, alpn);
    };
    let ext_len = usize::from(u16::from_be_bytes([hs[p], hs[p + 1]]));
    p += 2;
    let end = (p + ext_len).min(hs.len());
    while p + 4 <= end {
        let ty = u16::from_be_bytes([hs[p], hs[p + 1]]);
        let len = usize::from(u16::from_be_bytes([hs[p + 2], hs[p + 3]]));
        p += 4;
        let Some(body) = hs.get(p..p + len) else {
            break;
        };
        match ty {
            0 => sni = parse_server_name(body),
            16 => alpn = parse_alpn(body),
            _ => {}
        }
        p += len;
    }
    (sni, alpn)
}

/// Offset of the extensions' length in a ClientHello, if the bytes reach it.
fn extensions_start(hs: &[u8]) -> Option<usize> {
    let mut p = 4 + 2 + 32; // handshake header, version, random
    let sid = usize::from(*hs.get(p)?);
    p += 1 + sid;
    let cs = usize::from(u16::from_be_bytes([*hs.get(p)?, *hs.get(p + 1)?]));
    p += 2 + cs;
    let cm = usize::from(*hs.get(p)?);
    p += 1 + cm;
    hs.get(p + 1)?;
    Some(p)
}

fn parse_server_name(list: &[u8]) -> Option<String> {
    // list len (2), name type (1), name len (2), name
    let name_len = usize::from(u16::from_be_bytes([*list.get(3)?, *list.get(4)?]));
    let name = list.get(5..5 + name_len)?;
    std::str::from_utf8(name).ok().map(str::to_string)
}

fn parse_alpn(body: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut p = 2; // list length
    while let Some(&n) = body.get(p) {
        let Some(name) = body.get(p + 1..p + 1 + usize::from(n)) else {
            break;
        };
        if let Ok(s) = std::str::from_utf8(name) {
            out.push(s.to_string());
        }
        p += 1 + usize::from(n);
    }
    out
}

/// What [`detect`] decides from the bytes peeked so far (at most [`PEEK_MAX`]): `None` while it
/// needs more. Pure; the fuzz target `detect` drives it.
pub fn sniff(b: &[u8]) -> Option<Protocol> {
    match classify(b) {
        Verdict::Done(p) => Some(p),
        Verdict::NeedMore if b.len() >= PEEK_MAX => Some(Protocol::Tcp),
        Verdict::NeedMore => None,
    }
}

/// Peeks at `stream` until the protocol is clear or [`DETECT_TIMEOUT`] passes.
pub async fn detect(stream: &TcpStream) -> Protocol {
    let deadline = tokio::time::Instant::now() + DETECT_TIMEOUT;
    let mut buf = vec![0u8; PEEK_MAX];
    let mut last = 0;
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Err(_) if last == 0 => return Protocol::Silent,
            Err(_) | Ok(Err(_)) | Ok(Ok(0)) => return Protocol::Tcp,
            Ok(Ok(n)) => n,
        };
        if let Some(p) = sniff(&buf[..n]) {
            return p;
        }
        if n == last {
            // peek returns at once while the data is unchanged: wait a little for more.
            if tokio::time::Instant::now() >= deadline {
                return Protocol::Tcp;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        last = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_first_bytes() {
        let table: &[(&[u8], Option<Protocol>)] = &[
            (b"GET / HTTP/1.1\r\n", Some(Protocol::Http1)),
            (b"GET / HTTP/1.0\r\nHost: a\r\n", Some(Protocol::Http10)),
            (b"GET / HTTP/1.0", Some(Protocol::Http1)),
            (b"POST /x", Some(Protocol::Http1)),
            (b"GE", None),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Some(Protocol::Http2)),
            (b"PRI * HT", None),
            (b"SSH-2.0-OpenSSH\r\n", Some(Protocol::Tcp)),
            (b"\x00\x01binary", Some(Protocol::Tcp)),
        ];
        for (input, want) in table {
            assert_eq!(&sniff(input), want, "{:?}", String::from_utf8_lossy(input));
        }
        // A ClientHello announcing more than a full peek buffer decides at PEEK_MAX bytes.
        let mut hello = vec![0x16, 0x03, 0x01, 0xff, 0xff, 0x01];
        hello.resize(PEEK_MAX - 1, 0);
        assert_eq!(sniff(&hello), None);
        hello.push(0);
        assert_eq!(
            sniff(&hello),
            Some(Protocol::Tls {
                sni: None,
                alpn: vec![]
            })
        );
    }

    #[test]
    fn client_hello_sni_and_alpn() {
        let mut ext = Vec::new();
        // server_name: list len, type 0, name len, name
        let name = b"api.example.com";
        let sn_len = (name.len() + 3) as u16;
        ext.extend_from_slice(&[0, 0]);
        ext.extend_from_slice(&(sn_len + 2).to_be_bytes());
        ext.extend_from_slice(&sn_len.to_be_bytes());
        ext.push(0);
        ext.extend_from_slice(&(name.len() as u16).to_be_bytes());
        ext.extend_from_slice(name);
        // ALPN: list len, (len, name)...
        let protos: &[&[u8]] = &[b"istio-peer-exchange", b"h2"];
        let list: Vec<u8> = protos
            .iter()
            .flat_map(|p| std::iter::once(p.len() as u8).chain(p.iter().copied()))
            .collect();
        ext.extend_from_slice(&[0, 16]);
        ext.extend_from_slice(&((list.len() + 2) as u16).to_be_bytes());
        ext.extend_from_slice(&(list.len() as u16).to_be_bytes());
        ext.extend_from_slice(&list);
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[0; 32]); // random
        body.push(0); // session id
        body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one cipher suite
        body.extend_from_slice(&[1, 0]); // null compression
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext);
        let mut hs = vec![0x01, 0];
        hs.extend_from_slice(&(body.len() as u16).to_be_bytes());
        hs.extend_from_slice(&body);
        let mut rec = vec![0x16, 0x03, 0x01];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        assert_eq!(
            sniff(&rec),
            Some(Protocol::Tls {
                sni: Some("api.example.com".into()),
                alpn: vec!["istio-peer-exchange".into(), "h2".into()],
            })
        );
    }
}
