//! The agent's health endpoint for the kubelet (`--health-addr`, Istio's port 15021):
//! `GET /healthz/ready` is 200 once the data path is loaded and the control socket bound, 503
//! before (`sluice sidecar --health-port` serves the same in its pod: ready while its capture
//! listeners serve); `GET /healthz/live` is 200 while the agent runs. Anything else is 404.
//!
//! The socket has `SO_REUSEPORT`: during a rolling update the new agent pod starts beside the
//! old one on the host network and must bind the same port. The old agent closes its endpoint
//! (drops [`Health`]) as soon as it has handed over, so from then on every probe reaches the new
//! one.

use std::{
    io,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

/// An extra readiness condition (e.g. the pod watcher's "API server answers"): `/healthz/ready`
/// is 200 only while every gate is true.
pub type ReadyGate = Arc<AtomicBool>;

/// A running health endpoint; dropping it closes the socket.
pub struct Health {
    ready: Arc<AtomicBool>,
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
        let ready = Arc::new(AtomicBool::new(false));
        let flag = ready.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let ready =
                    flag.load(Ordering::Relaxed) && gates.iter().all(|g| g.load(Ordering::Relaxed));
                tokio::spawn(answer(stream, ready));
            }
        });
        Ok(Self { ready, task, addr })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Flips `/healthz/ready`.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
}

impl Drop for Health {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request head (bounded) and answers it.
async fn answer(mut stream: TcpStream, ready: bool) {
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
        "/healthz/ready" if ready => ("200 OK", "ready\n"),
        "/healthz/ready" => ("503 Service Unavailable", "not ready\n"),
        "/healthz/live" => ("200 OK", "live\n"),
        _ => ("404 Not Found", "not found\n"),
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

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out.lines().next().unwrap_or("").to_string()
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
