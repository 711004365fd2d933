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
    /// An HTTP/1.x request line.
    Http1,
    /// The HTTP/2 connection preface (prior knowledge).
    Http2,
    /// A TLS ClientHello, with its SNI when present.
    Tls {
        /// server_name extension.
        sni: Option<String>,
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
        matches!(self, Protocol::Http1 | Protocol::Http2)
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
                return Verdict::Done(Protocol::Http1);
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
            return Verdict::Done(Protocol::Tls {
                sni: parse_sni(&b[5..]),
            });
        }
    }
    Verdict::Done(Protocol::Tcp)
}

/// Extracts the server_name from a ClientHello handshake message (best effort).
fn parse_sni(hs: &[u8]) -> Option<String> {
    let mut p = 4 + 2 + 32; // handshake header, version, random
    let sid = usize::from(*hs.get(p)?);
    p += 1 + sid;
    let cs = usize::from(u16::from_be_bytes([*hs.get(p)?, *hs.get(p + 1)?]));
    p += 2 + cs;
    let cm = usize::from(*hs.get(p)?);
    p += 1 + cm;
    let ext_len = usize::from(u16::from_be_bytes([*hs.get(p)?, *hs.get(p + 1)?]));
    p += 2;
    let end = (p + ext_len).min(hs.len());
    while p + 4 <= end {
        let ty = u16::from_be_bytes([hs[p], hs[p + 1]]);
        let len = usize::from(u16::from_be_bytes([hs[p + 2], hs[p + 3]]));
        p += 4;
        if ty == 0 {
            let list = hs.get(p..p + len)?;
            // list len (2), name type (1), name len (2), name
            let name_len = usize::from(u16::from_be_bytes([*list.get(3)?, *list.get(4)?]));
            let name = list.get(5..5 + name_len)?;
            return std::str::from_utf8(name).ok().map(str::to_string);
        }
        p += len;
    }
    None
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
        assert_eq!(sniff(&hello), Some(Protocol::Tls { sni: None }));
    }
}
