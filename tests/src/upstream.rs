//! Test peers for the proxy tests: a configurable HTTP upstream (hyper, h1 + h2c, optional TLS)
//! that records what it receives, and a harness that runs the real `sluice proxy -c` binary.

pub mod harness;
pub mod tls;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// HTTP version.
    pub version: Version,
    /// Headers.
    pub headers: HeaderMap,
}

/// Shared state and knobs of a [`TestUpstream`].
#[derive(Debug, Default)]
pub struct UpstreamState {
    /// Name returned in the body and `x-upstream` header.
    pub name: String,
    /// Connections accepted.
    pub connections: AtomicUsize,
    /// Requests received (recorded when the head arrives).
    pub requests: Mutex<Vec<Recorded>>,
    /// Request bodies received, in order (recorded when complete).
    pub bodies: Mutex<Vec<Bytes>>,
    /// Status for normal requests (default 200).
    pub status: AtomicU16,
    /// Delay before answering, ms.
    pub delay_ms: AtomicU64,
    /// The next N requests get `fail_status`.
    pub fail_next: AtomicUsize,
    /// Status used for `fail_next`.
    pub fail_status: AtomicU16,
    /// Requests in flight now.
    pub active: AtomicUsize,
    /// Connections open now (accepted and not yet closed).
    pub open: AtomicUsize,
    /// When > 0: send a first body chunk, stall this long, then the rest (streamed body).
    pub stall_body_ms: AtomicU64,
    /// SNI of TLS connections seen last.
    pub last_sni: Mutex<Option<String>>,
}

impl UpstreamState {
    /// Number of requests received.
    pub fn request_count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
    /// The last request received.
    pub fn last_request(&self) -> Option<Recorded> {
        self.requests.lock().unwrap().last().cloned()
    }
}

/// A running test upstream.
pub struct TestUpstream {
    /// Listening address (127.0.0.1).
    pub addr: SocketAddr,
    /// State and knobs.
    pub state: Arc<UpstreamState>,
    task: JoinHandle<()>,
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestUpstream {
    /// Starts a plaintext upstream (HTTP/1.1 and h2c prior knowledge) named `name`.
    pub async fn start(name: &str) -> Self {
        Self::start_inner(name, None).await
    }

    /// Starts a TLS upstream using `tls` (HTTP/1.1 over TLS).
    pub async fn start_tls(name: &str, tls: Arc<rustls::ServerConfig>) -> Self {
        Self::start_inner(name, Some(tls)).await
    }

    async fn start_inner(name: &str, tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let l = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = l.local_addr().unwrap();
        let state = Arc::new(UpstreamState {
            name: name.to_string(),
            status: AtomicU16::new(200),
            fail_status: AtomicU16::new(503),
            ..Default::default()
        });
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = l.accept().await else {
                    continue;
                };
                st.connections.fetch_add(1, Ordering::SeqCst);
                st.open.fetch_add(1, Ordering::SeqCst);
                let st = st.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        None => serve(TokioIo::new(stream), st.clone()).await,
                        Some(cfg) => {
                            let acc = tokio_rustls::TlsAcceptor::from(cfg);
                            if let Ok(s) = acc.accept(stream).await {
                                *st.last_sni.lock().unwrap() =
                                    s.get_ref().1.server_name().map(str::to_string);
                                serve(TokioIo::new(s), st.clone()).await
                            }
                        }
                    }
                    st.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Self { addr, state, task }
    }

    /// The upstream's port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

async fn serve<I>(io: I, st: Arc<UpstreamState>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let st = st.clone();
        async move { Ok::<_, Infallible>(handle(st, req).await) }
    });
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection_with_upgrades(io, svc)
        .await;
}

/// Response body of the test upstream.
type RespBody = BoxBody<Bytes, Infallible>;

fn full(b: impl Into<Bytes>) -> RespBody {
    Full::new(b.into()).boxed()
}

async fn handle(st: Arc<UpstreamState>, mut req: Request<Incoming>) -> Response<RespBody> {
    st.requests.lock().unwrap().push(Recorded {
        method: req.method().to_string(),
        path: req
            .uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        version: req.version(),
        headers: req.headers().clone(),
    });
    if req.headers().contains_key(http::header::UPGRADE) {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let mut io = TokioIo::new(up);
                let mut buf = [0u8; 1024];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        return Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .body(full(Bytes::new()))
            .unwrap();
    }
    st.active.fetch_add(1, Ordering::SeqCst);
    let delay = st.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if let Ok(b) = req.into_body().collect().await {
        st.bodies.lock().unwrap().push(b.to_bytes());
    }
    st.active.fetch_sub(1, Ordering::SeqCst);
    let failing = st
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let status = if failing {
        st.fail_status.load(Ordering::SeqCst)
    } else {
        st.status.load(Ordering::SeqCst)
    };
    let stall = st.stall_body_ms.load(Ordering::SeqCst);
    let body = if stall > 0 {
        let chunks = futures_util::stream::unfold(0u8, move |i| async move {
            match i {
                0 => Some((
                    Ok(http_body::Frame::data(Bytes::from_static(b"partial "))),
                    1,
                )),
                1 => {
                    tokio::time::sleep(Duration::from_millis(stall)).await;
                    Some((Ok(http_body::Frame::data(Bytes::from_static(b"rest"))), 2))
                }
                _ => None,
            }
        });
        StreamBody::new(chunks).boxed()
    } else {
        full(st.name.clone())
    };
    Response::builder()
        .status(status)
        .header("x-upstream", st.name.as_str())
        .body(body)
        .unwrap()
}

/// A raw TCP server that speaks first: sends `banner` on accept, then echoes.
pub async fn banner_server(banner: &'static [u8]) -> (SocketAddr, JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let _ = s.write_all(banner).await;
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, task)
}

/// Connects to `entry` (a proxy in front of a [`banner_server`] sending `banner`) and sends
/// nothing: protocol detection must give up quickly, so the banner arrives within 800 ms. Then
/// `line` goes up and must come back (the server echoes).
pub async fn assert_banner_then_echo(entry: SocketAddr, banner: &[u8], line: &[u8]) {
    let t0 = Instant::now();
    let mut s = TcpStream::connect(entry).await.unwrap();
    let mut buf = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .expect("banner within 2 s")
        .unwrap();
    assert_eq!(&buf[..n], banner);
    assert!(
        t0.elapsed() < Duration::from_millis(800),
        "banner took {:?}",
        t0.elapsed()
    );
    s.write_all(line).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .expect("echo within 2 s")
        .unwrap();
    assert_eq!(&buf[..n], line);
}
