//! A minimal, exact HTTP/1.1 client: one request per connection, the bytes written exactly as given.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    sync::Arc,
    time::{Duration, Instant},
};

use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};

/// One request as the test writes it on the wire.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// Method token, e.g. `GET`.
    pub method: &'a str,
    /// Request target (path and query), written verbatim.
    pub path: &'a str,
    /// `Host` header value; `None` sends no Host header.
    pub host: Option<&'a str>,
    /// Extra headers in order.
    pub headers: &'a [(String, String)],
    /// Body; sent with a `content-length` header.
    pub body: Option<&'a [u8]>,
    /// Send `HTTP/1.0` instead of `HTTP/1.1` in the request line.
    pub http10: bool,
    /// Bytes written first on a new connection (a PROXY protocol header), before any TLS.
    pub preamble: Option<&'a [u8]>,
}

/// A parsed response. Header names are lower-cased, order kept.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers in arrival order.
    pub headers: Vec<(String, String)>,
    /// De-chunked body.
    pub body: Vec<u8>,
    /// Interim (1xx, not 101) responses before it, e.g. `100 Continue`, in order.
    pub interim: Vec<u16>,
    /// The status line's reason phrase.
    pub reason: String,
    /// The header names that came with an upper-case letter, as written, in arrival order.
    pub cased: Vec<String>,
}

impl Response {
    /// The headers `names` as `name=value`, in the order of `names`, each name's values in
    /// arrival order.
    pub fn kept(&self, names: &[&str]) -> Vec<String> {
        names
            .iter()
            .flat_map(|n| {
                self.headers
                    .iter()
                    .filter(move |(k, _)| k == n)
                    .map(|(k, v)| format!("{k}={v}"))
            })
            .collect()
    }
}

/// Sends `req` to `addr` on a fresh connection and reads one response.
pub fn send(addr: SocketAddr, req: &Request<'_>, timeout: Duration) -> Result<Response, String> {
    send_on(None, addr, req, timeout).map(|(r, _)| r)
}

/// Like [`send`], on `conn` when given (a kept-alive connection of an earlier request), else on a
/// fresh one; returns the connection for reuse.
pub fn send_on(
    conn: Option<TcpStream>,
    addr: SocketAddr,
    req: &Request<'_>,
    timeout: Duration,
) -> Result<(Response, TcpStream), String> {
    let fresh = conn.is_none();
    let mut s = match conn {
        Some(s) => s,
        None => connect(addr, timeout)?,
    };
    // A preamble goes in the same write as the request: a proxy that refuses it closes a
    // connection whose bytes all came, whatever its speed.
    let mut bytes = match req.preamble.filter(|_| fresh) {
        Some(p) => p.to_vec(),
        None => Vec::new(),
    };
    bytes.extend_from_slice(&encode(req));
    s.write_all(&bytes)
        .map_err(|e| format!("write to {addr}: {e}"))?;
    let resp = read_response(&mut s, req.method == "HEAD", Instant::now() + timeout)?;
    Ok((resp, s))
}

/// Like [`send`], inside TLS with `sni`, verifying the server against the CA in `ca_pem` (a
/// tcp_proxy passes the TLS through to the case's TLS upstreams).
pub fn send_tls(
    addr: SocketAddr,
    sni: &str,
    ca_pem: &str,
    req: &Request<'_>,
    timeout: Duration,
) -> Result<Response, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(c.map_err(|e| format!("CA PEM: {e}"))?)
            .map_err(|e| format!("CA: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(sni.to_string()).map_err(|e| format!("sni {sni}: {e}"))?;
    let tls = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let mut tcp = connect(addr, timeout)?;
    if let Some(p) = req.preamble {
        tcp.write_all(p)
            .map_err(|e| format!("write to {addr}: {e}"))?;
    }
    let mut s = rustls::StreamOwned::new(tls, tcp);
    s.write_all(&encode(req))
        .map_err(|e| format!("write to {addr} (TLS, sni {sni}): {e}"))?;
    read_response(&mut s, req.method == "HEAD", Instant::now() + timeout)
}

fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, String> {
    let s =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    Ok(s)
}

/// The request's bytes: request line, Host, headers, content-length, body.
fn encode(req: &Request<'_>) -> Vec<u8> {
    let version = if req.http10 { "1.0" } else { "1.1" };
    let mut head = format!("{} {} HTTP/{version}\r\n", req.method, req.path);
    if let Some(h) = req.host {
        head.push_str(&format!("host: {h}\r\n"));
    }
    for (k, v) in req.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    // A request that says `transfer-encoding: chunked` sends its body as one chunk.
    let chunked = req
        .headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if let Some(b) = req.body.filter(|_| !chunked) {
        head.push_str(&format!("content-length: {}\r\n", b.len()));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    match req.body {
        Some(b) if chunked => {
            bytes.extend_from_slice(format!("{:x}\r\n", b.len()).as_bytes());
            bytes.extend_from_slice(b);
            bytes.extend_from_slice(b"\r\n0\r\n\r\n");
        }
        Some(b) => bytes.extend_from_slice(b),
        None if chunked => bytes.extend_from_slice(b"0\r\n\r\n"),
        None => {}
    }
    bytes
}

fn read_response<S: Read>(
    s: &mut S,
    head_only: bool,
    deadline: Instant,
) -> Result<Response, String> {
    let mut buf = Vec::new();
    let mut interim = Vec::new();
    let (head_end, head, status) = loop {
        let head_end = loop {
            if let Some(p) = find(&buf, b"\r\n\r\n") {
                break p;
            }
            if fill(s, &mut buf, deadline)? == 0 {
                return Err(format!(
                    "connection closed before a complete response head ({} bytes read)",
                    buf.len()
                ));
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let status_line = head.split("\r\n").next().unwrap_or_default();
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("bad status line {status_line:?}"))?;
        // An interim response (100 Continue) precedes the one that answers the request.
        if (100..200).contains(&status) && status != 101 {
            interim.push(status);
            buf.drain(..head_end + 4);
            continue;
        }
        break (head_end, head, status);
    };
    let mut lines = head.split("\r\n");
    let reason = lines
        .next()
        .and_then(|l| l.splitn(3, ' ').nth(2))
        .unwrap_or_default()
        .to_string();
    let (headers, cased) = header_lines(lines);
    let mut rest = buf[head_end + 4..].to_vec();
    let header = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    let body = if head_only || status == 204 || status == 304 || (100..200).contains(&status) {
        Vec::new()
    } else if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(s, &mut rest, deadline)?
    } else if let Some(len) = header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| format!("bad content-length {len:?}"))?;
        while rest.len() < len {
            if fill(s, &mut rest, deadline)? == 0 {
                return Err(format!("body cut at {} of {len} bytes", rest.len()));
            }
        }
        rest.truncate(len);
        rest
    } else {
        while fill(s, &mut rest, deadline)? != 0 {}
        rest
    };
    Ok(Response {
        status,
        headers,
        body,
        interim,
        reason,
        cased,
    })
}

fn dechunk<S: Read>(s: &mut S, rest: &mut Vec<u8>, deadline: Instant) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(p) = find(rest, b"\r\n") {
                break p;
            }
            if fill(s, rest, deadline)? == 0 {
                return Err("connection closed inside a chunk size line".into());
            }
        };
        let size_str = String::from_utf8_lossy(&rest[..line_end]).into_owned();
        let size = usize::from_str_radix(size_str.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size {size_str:?}"))?;
        rest.drain(..line_end + 2);
        if size == 0 {
            return Ok(body);
        }
        while rest.len() < size + 2 {
            if fill(s, rest, deadline)? == 0 {
                return Err("connection closed inside a chunk".into());
            }
        }
        body.extend_from_slice(&rest[..size]);
        rest.drain(..size + 2);
    }
}

fn fill<S: Read>(s: &mut S, buf: &mut Vec<u8>, deadline: Instant) -> Result<usize, String> {
    if Instant::now() > deadline {
        return Err("timed out reading the response".into());
    }
    let mut chunk = [0u8; 8192];
    match s.read(&mut chunk) {
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(n)
        }
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Err("timed out reading the response".into())
        }
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(0),
        Err(e) => Err(format!("read: {e}")),
    }
}

/// Position of `needle` in `hay`.
/// A head's header lines as (lower-cased name, value) pairs, and the names written with an
/// upper-case letter as written, both in arrival order.
pub(crate) fn header_lines<'a>(
    lines: impl Iterator<Item = &'a str>,
) -> (Vec<(String, String)>, Vec<String>) {
    let mut headers = Vec::new();
    let mut cased = Vec::new();
    for (k, v) in lines.filter_map(|l| l.split_once(':')) {
        let k = k.trim();
        if k.bytes().any(|b| b.is_ascii_uppercase()) {
            cased.push(k.to_string());
        }
        headers.push((k.to_ascii_lowercase(), v.trim().to_string()));
    }
    (headers, cased)
}

pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
