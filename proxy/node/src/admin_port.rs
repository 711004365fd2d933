//! An Envoy admin port inside a pod (127.0.0.1:15000): the one small HTTP/1 server that the
//! agent runs for each node-mode pod (`agent::pod_admin`) and `sluice sidecar` runs for its own
//! pod (`sidecar::admin`). At most [`MAX_CONNECTIONS`] connections at once, [`HEADER_TIMEOUT`]
//! to send the request head. Each mode answers through its [`AdminHandler`]: the engine's
//! `admin::respond` on the pod's server, behind that mode's own rules for the mutating paths.

use std::{
    convert::Infallible,
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use http::{header, HeaderValue, Method, Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use sluice_engine::http::{local_reply, Body};
use tokio::{net::TcpListener, sync::Semaphore, task::JoinHandle};
use tracing::{debug, warn};

use crate::netns::{Netns, NetnsError};

/// Envoy's admin port in a pod (the agent's `--pod-admin-port`, the sidecar's `--admin-port`).
pub const DEFAULT_ADMIN_PORT: u16 = 15000;
/// Connections served at once on one pod's admin port; more are closed at accept.
pub const MAX_CONNECTIONS: usize = 8;
/// A connection that has not sent its request head within this is closed.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// What a pod's admin port answers.
pub trait AdminHandler: Send + Sync + 'static {
    /// The answer to `method path?query`.
    fn respond(&self, method: &Method, path: &str, query: &str) -> Response<Body>;
}

/// A `text/plain` answer of the admin port's own (a refusal, a sidecar's drain).
pub fn text(status: u16, body: String) -> Response<Body> {
    let mut r = Response::new(local_reply::full(body));
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or_default();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=UTF-8"),
    );
    r
}

/// A pod's admin port being served until [`close`](AdminPort::close) (or drop).
#[derive(Debug)]
pub struct AdminPort {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl AdminPort {
    /// The agent: binds 127.0.0.1:`port` in `netns` with `SO_REUSEPORT` (an upgrading agent
    /// binds its own while the old one still serves; both root) and serves `handler` on it.
    /// `pod` names the pod in logs.
    pub fn start_in(
        netns: &Netns,
        port: u16,
        handler: Arc<dyn AdminHandler>,
        pod: String,
    ) -> Result<Self, NetnsError> {
        let addr = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port);
        let socket_err = |op: &str, source| NetnsError::Socket {
            path: netns.path().to_path_buf(),
            op: format!("{op} admin {addr}"),
            source,
        };
        let std = netns
            .run(|| bind_reuseport(addr))?
            .map_err(|e| socket_err("bind", e))?;
        Self::serve(std, handler, pod).map_err(|e| socket_err("serve", e))
    }

    /// Serves `handler` on an already bound, non-blocking listener (the sidecar binds before
    /// it drops privileges). Needs a tokio runtime.
    pub fn serve(
        listener: std::net::TcpListener,
        handler: Arc<dyn AdminHandler>,
        pod: String,
    ) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let listener = TcpListener::from_std(listener)?;
        let task = tokio::spawn(serve(listener, handler, pod.into()));
        Ok(Self { addr, task })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and waits until the socket is closed (requests in flight finish).
    pub async fn close(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for AdminPort {
    /// Dropped without [`AdminPort::close`] (an error path): the socket still closes, soon.
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn bind_reuseport(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.cloexec(),
        Some(Protocol::TCP),
    )?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    sock.bind(&addr.into())?;
    sock.listen(64)?;
    sock.set_nonblocking(true)?;
    Ok(sock.into())
}

async fn serve(listener: TcpListener, handler: Arc<dyn AdminHandler>, pod: Arc<str>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                warn!(pod = %pod, error = %e, "pod admin accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            debug!(pod = %pod, max = MAX_CONNECTIONS, "pod admin busy: connection closed");
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let query = req.uri().query().unwrap_or("");
                let r = handler.respond(req.method(), req.uri().path(), query);
                async move { Ok::<_, Infallible>(r) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
