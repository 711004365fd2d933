//! The agent's health endpoint for the kubelet (`--health-addr`, Istio's port 15021):
//! `GET /healthz/ready` is 200 once the data path is loaded and the control socket bound, 503
//! before, with the reasons in the body (`sluice sidecar --health-port` serves the same in its
//! pod: ready while its capture listeners serve; `sluice install-cni --health-addr` while its
//! entry is installed); `GET /healthz/live` is 200 while the process runs. Anything else is 404.
//!
//! The socket has `SO_REUSEPORT`: during a rolling update the new agent pod starts beside the
//! old one on the host network and must bind the same port. The old agent closes its endpoint
//! (drops [`Health`]) as soon as it has handed over, so from then on every probe reaches the new
//! one.

use std::{
    io,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

/// A readiness condition and, while it does not hold, why (e.g. the pod watcher's "API server
/// answers"): `/healthz/ready` is 200 only while every gate is ready, else 503 with the reasons.
/// Read per probe and written on changes only, never on a request path.
#[derive(Clone, Debug)]
pub struct ReadyGate(Arc<Mutex<Option<String>>>);

impl ReadyGate {
    /// A gate that is not ready, for `reason`.
    pub fn not_ready(reason: impl Into<String>) -> Self {
        Self(Arc::new(Mutex::new(Some(reason.into()))))
    }

    /// Ready from now on.
    pub fn set_ready(&self) {
        *self.lock() = None;
    }

    /// Not ready, for `reason` (kept as is when it is the same reason).
    pub fn set_not_ready(&self, reason: &str) {
        let mut r = self.lock();
        if r.as_deref() != Some(reason) {
            *r = Some(reason.to_string());
        }
    }

    /// Whether the gate holds.
    pub fn is_ready(&self) -> bool {
        self.lock().is_none()
    }

    /// Why it does not hold (`None` when ready).
    pub fn reason(&self) -> Option<String> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running health endpoint; dropping it closes the socket.
pub struct Health {
    ready: ReadyGate,
    task: JoinHandle<()>,
    addr: SocketAddr,
}

impl Health {
    /// Binds `addr` (reuseport) and serves; not ready until [`Health::set_ready`].
    pub fn bind(addr: SocketAddr) -> io::Result<Self> {
        Self::bind_gated(addr, Vec::new())
    }

    /// Like [`Health::bind`], and ready only while every gate is true as well.
    pub fn bind_gated(addr: SocketAddr, gates: Vec<ReadyGate>) -> io::Result<Self> {
        let sock = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            None,
        )?;
        sock.set_reuse_address(true)?;
        sock.set_reuse_port(true)?;
        sock.set_nonblocking(true)?;
        sock.bind(&addr.into())?;
        sock.listen(64)?;
        Self::serve_gated(sock.into(), gates)
    }

    /// Serves an already bound, non-blocking listener (`sluice sidecar` binds its 15021 in the
    /// pod before it drops privileges); not ready until [`Health::set_ready`].
    pub fn serve(listener: std::net::TcpListener) -> io::Result<Self> {
        Self::serve_gated(listener, Vec::new())
    }

    fn serve_gated(listener: std::net::TcpListener, gates: Vec<ReadyGate>) -> io::Result<Self> {
        let listener = TcpListener::from_std(listener)?;
        let addr = listener.local_addr()?;
        let ready = ReadyGate::not_ready("starting");
        let own = ready.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                // The reasons of every gate that does not hold; none = ready.
                let reasons: Vec<String> = std::iter::once(&own)
                    .chain(&gates)
                    .filter_map(ReadyGate::reason)
                    .collect();
                tokio::spawn(answer(stream, reasons));
            }
        });
        Ok(Self { ready, task, addr })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Flips `/healthz/ready` (not ready: "starting" or "stopping").
    pub fn set_ready(&self, ready: bool) {
        match ready {
            true => self.ready.set_ready(),
            false => self.ready.set_not_ready("stopping"),
        }
    }

    /// Not ready, saying why in the 503's body.
    pub fn set_not_ready(&self, reason: &str) {
        self.ready.set_not_ready(reason);
    }
}

impl Drop for Health {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request head (bounded) and answers it; `not_ready` holds the reasons (none: ready).
async fn answer(mut stream: TcpStream, not_ready: Vec<String>) {
    let mut buf = [0u8; 1024];
    let mut len = 0;
    let read = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        while len < buf.len() && !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf[len..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => len += n,
            }
        }
    });
    if read.await.is_err() {
        return;
    }
    let head = String::from_utf8_lossy(&buf[..len]);
    let path = head.split_whitespace().nth(1).unwrap_or("");
    let (status, body) = match path {
        "/healthz/ready" if not_ready.is_empty() => ("200 OK", "ready\n".to_string()),
        "/healthz/ready" => (
            "503 Service Unavailable",
            format!("not ready: {}\n", not_ready.join("; ")),
        ),
        "/healthz/live" => ("200 OK", "live\n".to_string()),
        _ => ("404 Not Found", "not found\n".to_string()),
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(resp.as_bytes()).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get_all(addr: SocketAddr, path: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    async fn get(addr: SocketAddr, path: &str) -> String {
        let out = get_all(addr, path).await;
        out.lines().next().unwrap_or("").to_string()
    }

    #[tokio::test]
    async fn not_ready_says_why() {
        let gate = ReadyGate::not_ready("pod watcher: API server unreachable");
        let h = Health::bind_gated("127.0.0.1:0".parse().unwrap(), vec![gate.clone()]).unwrap();
        h.set_not_ready("cgroup /x is not a cgroup v2 directory");
        let out = get_all(h.addr(), "/healthz/ready").await;
        assert!(out.starts_with("HTTP/1.1 503"), "{out}");
        assert!(
            out.ends_with(
                "not ready: cgroup /x is not a cgroup v2 directory; pod watcher: API server unreachable\n"
            ),
            "{out}"
        );
        h.set_ready(true);
        let out = get_all(h.addr(), "/healthz/ready").await;
        assert!(
            out.ends_with("not ready: pod watcher: API server unreachable\n"),
            "{out}"
        );
        gate.set_ready();
        assert_eq!(get(h.addr(), "/healthz/ready").await, "HTTP/1.1 200 OK");
    }

    #[tokio::test]
    async fn ready_only_after_set_ready_and_a_second_agent_can_bind_beside() {
        let h = Health::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = h.addr();
        assert_eq!(get(addr, "/healthz/live").await, "HTTP/1.1 200 OK");
        assert_eq!(
            get(addr, "/healthz/ready").await,
            "HTTP/1.1 503 Service Unavailable"
        );
        h.set_ready(true);
        assert_eq!(get(addr, "/healthz/ready").await, "HTTP/1.1 200 OK");
        assert_eq!(get(addr, "/other").await, "HTTP/1.1 404 Not Found");
        // The surge pod of a rolling update binds the same port (SO_REUSEPORT).
        let next = Health::bind(addr).unwrap();
        drop(h);
        // The aborted accept task releases the old socket when the runtime next runs it (a
        // probe queued on it in that instant is reset: one failed probe of failureThreshold 3).
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        next.set_ready(true);
        assert_eq!(get(addr, "/healthz/ready").await, "HTTP/1.1 200 OK");
    }
}
