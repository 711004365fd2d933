//! Recording upstream servers: one loopback HTTP/1.1 server per cluster that logs every request it
//! gets and answers from a per-request script; requests for the case's health check path answer
//! from a script of their own, by their count since the server started.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde::Deserialize;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpListener,
    runtime::Runtime,
    task::JoinHandle,
};
use tokio_rustls::TlsAcceptor;

use super::client::find;

mod grpc_authz;
mod h2;
pub mod proxy_header;

/// One scripted answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reply {
    /// Status code (default 200).
    #[serde(default = "default_status")]
    pub status: u16,
    /// Response headers in order.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// Body; default: the upstream's name.
    pub body: Option<String>,
    /// Wait this long before answering (timeout cases).
    #[serde(default)]
    pub delay_ms: u64,
    /// Instead of `body`: this many bytes of [`pattern`] (large-body cases).
    pub body_size: Option<usize>,
    /// Close the connection without answering (an upstream reset before headers).
    #[serde(default)]
    pub close: bool,
    /// HTTP/2 only: reset the stream with this RST_STREAM code (`REFUSED_STREAM`,
    /// `INTERNAL_ERROR`, ...) instead of answering.
    pub rst_stream: Option<String>,
    /// Send the body chunked instead of with a content-length.
    #[serde(default)]
    pub chunked: bool,
    /// Wait this long between the response head and its body (body idle timeouts).
    #[serde(default)]
    pub body_delay_ms: u64,
    /// Instead of a response: these bytes, then close (a malformed response head; HTTP/1).
    pub raw: Option<String>,
    /// The status line's reason phrase (default: the status's standard one; HTTP/1).
    pub reason: Option<String>,
}

fn default_status() -> u16 {
    200
}

/// A request as an upstream server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Name of the upstream (the cluster) that got it.
    pub upstream: String,
    /// Method token.
    pub method: String,
    /// Request target (path with query).
    pub path: String,
    /// Headers in arrival order, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
    /// The connection it came on: 1 for the server's first accepted connection, 2 for the next.
    pub conn: usize,
    /// The address the connection came from (the proxy's upstream source address).
    pub peer: std::net::IpAddr,
    /// The port it came from.
    pub peer_port: u16,
    /// It was for the case's health check path (answered from [`HealthScripts`]).
    pub health_check: bool,
    /// For a TLS upstream: the SNI and ALPN the proxy sent (`sni=localhost alpn=-`), and the
    /// names of the client certificate it presented, if any (` client=spiffe://...`).
    pub tls: Option<String>,
    /// `h2` when the request came over HTTP/2; `None` for HTTP/1.1.
    pub protocol: Option<&'static str>,
    /// The PROXY protocol header its connection began with ([`proxy_header::take`]).
    pub proxy_header: Option<String>,
    /// HTTP/1: the header names that came with an upper-case letter, as written, in arrival
    /// order (header casing: Envoy and hyper write lower case unless told otherwise).
    pub cased: Vec<String>,
}

/// How the upstream servers answer the proxy's active health checks: requests for `path` get
/// reply i of `replies[name]` for the server's i-th such request since it started (the last
/// repeating; none: 200), whatever the requests of the case in between.
#[derive(Debug, Clone, Default)]
pub struct HealthScripts {
    /// The health check path; `None`: health checks are requests like any other.
    pub path: Option<String>,
    /// Reply scripts by upstream name.
    pub replies: BTreeMap<String, Vec<Reply>>,
}

#[derive(Default)]
struct Shared {
    log: Vec<Recorded>,
    /// Requests each upstream answered since the last `take` (indexes the reply script).
    count: BTreeMap<String, usize>,
    /// Health checks each upstream answered since it started (indexes its health script).
    health_count: BTreeMap<String, usize>,
}

/// The running set of upstream servers of one proxy run. Dropping it stops them.
pub struct Upstreams {
    shared: Arc<Mutex<Shared>>,
    ports: BTreeMap<String, u16>,
    tasks: Vec<JoinHandle<()>>,
    pki: Option<crate::upstream::tls::TestPki>,
}

/// A client certificate's URI and DNS SANs, `,`-joined (`-` with none).
fn client_names(der: &[u8]) -> String {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return "-".into();
    };
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::URI(u) | GeneralName::DNSName(u) => names.push(u.to_string()),
                _ => {}
            }
        }
    }
    if names.is_empty() {
        "-".into()
    } else {
        names.join(",")
    }
}

impl Upstreams {
    /// Binds one server per name on 127.0.0.1 (ephemeral port) and serves `scripts[name]`
    /// (reply i for the i-th request since the last [`Upstreams::take`], the last reply repeating),
    /// and health checks from `health`. The servers named in `tls` speak TLS with the test PKI's
    /// `localhost` / 127.0.0.1 certificate (ALPN http/1.1 offered; [`Upstreams::ca_pem`]); those
    /// named in `grpc_authz` are gRPC ext_authz services ([`grpc_authz`]).
    pub fn start(
        rt: &Runtime,
        names: &[String],
        scripts: &BTreeMap<String, Vec<Reply>>,
        health: &HealthScripts,
        tls: &[String],
        grpc_authz: &[String],
    ) -> Upstreams {
        let pki = (!tls.is_empty()).then(crate::upstream::tls::test_pki);
        let shared = Arc::new(Mutex::new(Shared::default()));
        let mut ports = BTreeMap::new();
        let mut tasks = Vec::new();
        for name in names {
            let listener = rt
                .block_on(TcpListener::bind("127.0.0.1:0"))
                .unwrap_or_else(|e| panic!("binding upstream {name} on 127.0.0.1:0: {e}"));
            ports.insert(
                name.clone(),
                listener.local_addr().expect("local_addr").port(),
            );
            let script = Arc::new(Script {
                replies: scripts.get(name).cloned().unwrap_or_default(),
                health_path: health.path.clone(),
                health: health.replies.get(name).cloned().unwrap_or_default(),
            });
            let acceptor = pki
                .as_ref()
                .filter(|_| tls.contains(name))
                .map(|p| TlsAcceptor::from(p.server_optional_mtls.clone()));
            if grpc_authz.contains(name) {
                tasks.push(grpc_authz::spawn(
                    rt,
                    listener,
                    name.clone(),
                    script,
                    shared.clone(),
                ));
                continue;
            }
            let (shared, name) = (shared.clone(), name.clone());
            tasks.push(rt.spawn(async move {
                let mut conns = tokio::task::JoinSet::new();
                let mut serial = 0;
                while let Ok((sock, peer)) = listener.accept().await {
                    serial += 1;
                    let _ = sock.set_nodelay(true);
                    let conn = Conn {
                        serial,
                        peer,
                        name: name.clone(),
                        script: script.clone(),
                        shared: shared.clone(),
                        tls: None,
                        protocol: None,
                        proxy_header: None,
                    };
                    let acceptor = acceptor.clone();
                    conns.spawn(async move {
                        let mut sock = sock;
                        let conn = Conn {
                            proxy_header: proxy_header::take(&mut sock).await,
                            ..conn
                        };
                        let Some(acceptor) = acceptor else {
                            return serve_plain(sock, conn).await;
                        };
                        // A failed handshake is the proxy's to report: nothing recorded.
                        let Ok(s) = acceptor.accept(sock).await else {
                            return;
                        };
                        let session = s.get_ref().1;
                        let text = |v: Option<&[u8]>| {
                            v.map_or("-".into(), |b| String::from_utf8_lossy(b).into_owned())
                        };
                        let mut tls = format!(
                            "sni={} alpn={}",
                            text(session.server_name().map(str::as_bytes)),
                            text(session.alpn_protocol())
                        );
                        if let Some(cert) = session.peer_certificates().and_then(|c| c.first()) {
                            let names = client_names(cert);
                            tls.push_str(&format!(" client={names}"));
                        }
                        serve(
                            s,
                            Conn {
                                tls: Some(tls),
                                ..conn
                            },
                        )
                        .await;
                    });
                }
            }));
        }
        Upstreams {
            shared,
            ports,
            tasks,
            pki,
        }
    }

    /// Writes the test PKI's PEM files into `dir` when a TLS upstream runs
    /// ([`TestPki::write_files`]: `ca.pem`, `client.pem` / `client.key`, `spiffe.pem` /
    /// `spiffe.key`, ...).
    pub fn write_pki(&self, dir: &std::path::Path) {
        if let Some(p) = &self.pki {
            p.write_files(dir);
        }
    }

    /// The PEM of the CA that signed the TLS servers' certificate, when there are any.
    pub fn ca_pem(&self) -> Option<&str> {
        self.pki.as_ref().map(|p| p.ca_pem.as_str())
    }

    /// Port of upstream `name`.
    pub fn port(&self, name: &str) -> u16 {
        self.ports[name]
    }

    /// Names of the running upstreams.
    pub fn names(&self) -> Vec<&str> {
        self.ports.keys().map(String::as_str).collect()
    }

    /// Starts the health check scripts over, for the next proxy's run (its first checks come
    /// while it starts).
    pub fn restart_health_scripts(&self) {
        self.shared
            .lock()
            .expect("upstream log lock")
            .health_count
            .clear();
    }

    /// Returns and clears the requests recorded so far (health checks included), resetting the
    /// reply scripts.
    pub fn take_all(&self) -> Vec<Recorded> {
        let mut s = self.shared.lock().expect("upstream log lock");
        s.count.clear();
        std::mem::take(&mut s.log)
    }

    /// [`take_all`](Self::take_all) without the health checks: the case's requests.
    pub fn take(&self) -> Vec<Recorded> {
        let mut recorded = self.take_all();
        recorded.retain(|r| !r.health_check);
        recorded
    }
}

impl Drop for Upstreams {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// One server's replies: to the case's requests, and to health checks.
struct Script {
    replies: Vec<Reply>,
    health_path: Option<String>,
    health: Vec<Reply>,
}

/// Serves a plaintext connection: HTTP/2 when it opens with the prior-knowledge preface.
async fn serve_plain(sock: tokio::net::TcpStream, conn: Conn) {
    let mut first = [0u8; 3];
    match sock.peek(&mut first).await {
        Ok(3) if &first == b"PRI" => {
            h2::serve(
                sock,
                Conn {
                    protocol: Some("h2"),
                    ..conn
                },
            )
            .await;
        }
        _ => serve(sock, conn).await,
    }
}

/// One accepted connection of an upstream server.
struct Conn {
    /// 1 for the server's first connection.
    serial: usize,
    peer: std::net::SocketAddr,
    name: String,
    script: Arc<Script>,
    shared: Arc<Mutex<Shared>>,
    /// The TLS session's SNI and ALPN, for a TLS server.
    tls: Option<String>,
    /// `h2` for an HTTP/2 (prior knowledge) connection.
    protocol: Option<&'static str>,
    /// The PROXY header the connection began with.
    proxy_header: Option<String>,
}

impl Conn {
    /// Records a request and returns the scripted reply to it (default: 200, the name as body).
    fn record(
        &self,
        method: String,
        path: String,
        headers: Vec<(String, String)>,
        cased: Vec<String>,
        body: Vec<u8>,
    ) -> Reply {
        let health_check = self.script.health_path.as_deref() == Some(path.as_str());
        let mut s = self.shared.lock().expect("upstream log lock");
        let (counts, replies) = if health_check {
            (&mut s.health_count, &self.script.health)
        } else {
            (&mut s.count, &self.script.replies)
        };
        let n = counts.entry(self.name.clone()).or_default();
        let i = *n;
        *n += 1;
        let reply = replies.get(i).or(replies.last()).cloned();
        s.log.push(Recorded {
            upstream: self.name.clone(),
            method,
            path,
            headers,
            body,
            conn: self.serial,
            peer: self.peer.ip(),
            peer_port: self.peer.port(),
            health_check,
            tls: self.tls.clone(),
            protocol: self.protocol,
            proxy_header: self.proxy_header.clone(),
            cased,
        });
        reply.unwrap_or(Reply {
            status: 200,
            headers: Vec::new(),
            body: None,
            delay_ms: 0,
            body_size: None,
            close: false,
            rst_stream: None,
            chunked: false,
            body_delay_ms: 0,
            raw: None,
            reason: None,
        })
    }

    /// A reply's body: `body_size` bytes of [`pattern`], its `body`, or the upstream's name.
    fn body(&self, reply: &Reply) -> String {
        match reply.body_size {
            Some(n) => pattern(n),
            None => reply.body.clone().unwrap_or_else(|| self.name.clone()),
        }
    }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut sock: S, c: Conn) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(p) = find(&buf, b"\r\n\r\n") {
                break p;
            }
            let mut chunk = [0u8; 8192];
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        buf.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let mut start = lines.next().unwrap_or_default().split(' ');
        let method = start.next().unwrap_or_default().to_string();
        let path = start.next().unwrap_or_default().to_string();
        let (headers, cased) = super::client::header_lines(lines);
        let header = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        // As most servers do: a client that waits for `100 Continue` gets it before the body.
        if header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
            && sock
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .is_err()
        {
            return;
        }
        let body = if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            match read_chunked(&mut sock, &mut buf).await {
                Some(b) => b,
                None => return,
            }
        } else {
            let len: usize = header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            while buf.len() < len {
                let mut chunk = [0u8; 8192];
                match sock.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            buf.drain(..len).collect()
        };
        let head_only = method == "HEAD";
        let reply = c.record(method, path, headers, cased, body);
        if reply.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(reply.delay_ms)).await;
        }
        if reply.close {
            return;
        }
        if let Some(raw) = &reply.raw {
            let _ = sock.write_all(raw.as_bytes()).await;
            let _ = sock.shutdown().await;
            return;
        }
        let body = c.body(&reply);
        let phrase = reply.reason.as_deref().unwrap_or(reason(reply.status));
        let mut out = format!("HTTP/1.1 {} {phrase}\r\n", reply.status);
        for (k, v) in &reply.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        // Where the head ends: a `body_delay_ms` pause goes there.
        let head_len;
        if reply.chunked {
            out.push_str("transfer-encoding: chunked\r\n\r\n");
            head_len = out.len();
            if !head_only {
                // Small bodies in 4-byte chunks (several chunks to re-frame), large ones in 16 KiB.
                for piece in body
                    .as_bytes()
                    .chunks(if body.len() > 1024 { 16384 } else { 4 })
                {
                    out.push_str(&format!(
                        "{:x}\r\n{}\r\n",
                        piece.len(),
                        String::from_utf8_lossy(piece)
                    ));
                }
                out.push_str("0\r\n\r\n");
            }
        } else {
            out.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
            head_len = out.len();
            if !head_only {
                out.push_str(&body);
            }
        }
        if reply.body_delay_ms > 0 {
            if sock.write_all(&out.as_bytes()[..head_len]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(reply.body_delay_ms)).await;
            out.drain(..head_len);
        }
        if sock.write_all(out.as_bytes()).await.is_err() {
            return;
        }
    }
}

async fn read_chunked<S: AsyncRead + Unpin>(sock: &mut S, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(p) = find(buf, b"\r\n") {
                break p;
            }
            let mut chunk = [0u8; 8192];
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let size_str = String::from_utf8_lossy(&buf[..line_end]).into_owned();
        let size = usize::from_str_radix(size_str.split(';').next()?.trim(), 16).ok()?;
        buf.drain(..line_end + 2);
        while buf.len() < size + 2 {
            let mut chunk = [0u8; 8192];
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        if size == 0 {
            // Trailers are not used by the cases; the final CRLF follows the zero chunk.
            buf.drain(..2);
            return Some(body);
        }
        body.extend_from_slice(&buf[..size]);
        buf.drain(..size + 2);
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// `n` bytes of a fixed pattern (`abc...z` repeated): large bodies that are cheap to check.
pub fn pattern(n: usize) -> String {
    (0..n).map(|i| char::from(b'a' + (i % 26) as u8)).collect()
}
