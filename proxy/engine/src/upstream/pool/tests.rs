//! The pool's stale keep-alive retry, through the whole request path: the upstream closes a
//! pooled connection (while idle, or as the next request arrives) and the client never sees it.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use crate::testing::{bootstrap, get, serve};

/// How the raw upstream treats its first connection after answering one request.
#[derive(Clone, Copy)]
enum FirstConn {
    /// Close it at once (an idle keep-alive connection the upstream timed out).
    CloseIdle,
    /// Read the next request, then close without answering (the close races the request).
    CloseOnNextRequest,
}

/// Reads one request head; false on EOF.
async fn read_head(s: &mut TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut byte).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&byte[..n]),
        }
    }
    true
}

async fn answer(s: &mut TcpStream, body: &str) {
    let resp = format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = s.write_all(resp.as_bytes()).await;
}

/// An upstream whose first connection answers once then closes as `first` says; later
/// connections answer every request with "fresh". Returns its address and connection count.
async fn raw_upstream(first: FirstConn) -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let conns = Arc::new(AtomicUsize::new(0));
    let count = conns.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let n = count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if n == 0 {
                    if read_head(&mut s).await {
                        answer(&mut s, "first").await;
                    }
                    if let FirstConn::CloseOnNextRequest = first {
                        read_head(&mut s).await;
                    }
                    return;
                }
                while read_head(&mut s).await {
                    answer(&mut s, "fresh").await;
                }
            });
        }
    });
    (addr, conns)
}

#[tokio::test]
async fn connection_closed_while_idle_is_replaced_without_an_error() {
    let (up, conns) = raw_upstream(FirstConn::CloseIdle).await;
    let (_server, front) = serve(bootstrap(&[("/", "a")], &[("a", up)]), None).await;
    assert_eq!(get(front, "/1").await, (200, "first".into()));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(get(front, "/2").await, (200, "fresh".into()));
    assert_eq!(conns.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn close_racing_the_next_request_is_retried_once_on_a_fresh_connection() {
    let (up, conns) = raw_upstream(FirstConn::CloseOnNextRequest).await;
    let (server, front) = serve(bootstrap(&[("/", "a")], &[("a", up)]), None).await;
    assert_eq!(get(front, "/1").await, (200, "first".into()));
    // The pooled connection is still open: the request goes out on it, then the upstream
    // closes it without answering; the pool replays the GET on a fresh connection.
    assert_eq!(get(front, "/2").await, (200, "fresh".into()));
    assert_eq!(conns.load(Ordering::SeqCst), 2);
    let rt = server.runtime();
    let a = rt.clusters.get("a").expect("cluster a");
    assert_eq!(a.stats.upstream_rq_retry.get(), 0, "not a router retry");
}

/// Serves cluster `a` (upstream `up`) with one circuit breaker threshold, e.g. `max_connections: 0`.
async fn serve_with_breaker(up: SocketAddr, threshold: &str) -> SocketAddr {
    let yaml = crate::testing::bootstrap_yaml(&[("/", "a")], &[("a", up)]).replace(
        "    connect_timeout: 1s\n",
        &format!("    connect_timeout: 1s\n    circuit_breakers: {{ thresholds: [{{ {threshold} }}] }}\n"),
    );
    let config = crate::config::from_yaml_str(&yaml).expect("valid breaker config");
    serve(config, None).await.1
}

#[tokio::test]
async fn max_connections_zero_still_opens_the_pools_first_connection() {
    let (up, conns) = raw_upstream(FirstConn::CloseIdle).await;
    let front = serve_with_breaker(up, "max_connections: 0").await;
    let got = tokio::time::timeout(Duration::from_secs(5), get(front, "/1")).await;
    assert_eq!(
        got.expect("answered, not pending forever"),
        (200, "first".into())
    );
    assert_eq!(conns.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn max_pending_requests_zero_refuses_a_request_without_an_idle_connection() {
    let (up, conns) = raw_upstream(FirstConn::CloseIdle).await;
    let front = serve_with_breaker(up, "max_pending_requests: 0").await;
    let (status, body) = get(front, "/1").await;
    assert_eq!(status, 503);
    assert!(body.ends_with("reset reason: overflow"), "{body}");
    assert_eq!(conns.load(Ordering::SeqCst), 0);
}

/// A loopback port whose listener never answers a connect: backlog 0 and its one queued
/// connection never accepted, so the kernel drops the next SYN. Keep both alive.
fn unanswered_port() -> (std::net::TcpListener, std::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    // SAFETY: a valid listening socket owned by `l`; listen() again only sets the backlog.
    assert_eq!(
        unsafe { libc::listen(l.as_raw_fd(), 0) },
        0,
        "listen backlog 0"
    );
    let filler = std::net::TcpStream::connect(l.local_addr().expect("addr")).expect("filler");
    (l, filler)
}

#[tokio::test]
async fn a_connect_timeout_answers_with_envoys_connection_timeout_reason() {
    let (l, _filler) = unanswered_port();
    let up = l.local_addr().expect("addr");
    let yaml = crate::testing::bootstrap_yaml(&[("/", "a")], &[("a", up)])
        .replace("    connect_timeout: 1s\n", "    connect_timeout: 0.2s\n");
    let config = crate::config::from_yaml_str(&yaml).expect("valid config");
    let front = serve(config, None).await.1;
    let (status, body) = tokio::time::timeout(Duration::from_secs(5), get(front, "/1"))
        .await
        .expect("answered after the connect timeout");
    assert_eq!(status, 503);
    assert_eq!(
        body,
        "upstream connect error or disconnect/reset before headers. reset reason: connection timeout"
    );
}
