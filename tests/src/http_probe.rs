//! The kubelet's view of a health endpoint: one `GET` over HTTP/1.1, the whole answer as text.

use std::{
    io::{Read as _, Write as _},
    net::SocketAddr,
    time::Duration,
};

/// `GET path` on `addr`: status line, headers and body, or `"connect failed"`.
pub fn http_get(addr: SocketAddr, path: &str) -> String {
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return "connect failed".into();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes());
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// A free loopback port for a health endpoint (bound and released).
pub fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr")
}
