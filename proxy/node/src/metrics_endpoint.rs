//! A Prometheus scrape endpoint: `GET /stats/prometheus` (Istio's path; `/metrics` too) answers
//! the text a render function makes at scrape time; anything else is 404. The sidecar serves it
//! on 0.0.0.0:15090 inside the pod netns, the node agent on `--metrics-addr` with every pod's
//! series. Nothing here runs on a request's path.

use std::{future::Future, io, net::SocketAddr, pin::Pin, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

/// Makes the scrape's text.
pub type Render = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = String> + Send>> + Send + Sync>;

/// Longest request head read.
const MAX_HEAD: usize = 8 * 1024;

/// A running endpoint; dropping it closes the socket.
pub struct MetricsEndpoint {
    task: JoinHandle<()>,
    addr: SocketAddr,
}

impl MetricsEndpoint {
    /// Binds `addr` and serves `render`'s text.
    pub async fn bind(addr: SocketAddr, render: Render) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        tokio::spawn(serve(stream, render.clone()));
                    }
                    // EMFILE and the like: back off instead of spinning.
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        Ok(Self { task, addr })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The request target of one HTTP/1 request head (its first line), the rest of the head read
/// and dropped; None when the head is missing, too long or too slow.
async fn request_path(stream: &mut TcpStream) -> Option<String> {
    let mut r = BufReader::new(stream);
    let mut first = String::new();
    let mut line = String::new();
    let mut total = 0;
    let read = async {
        r.read_line(&mut first).await.ok()?;
        loop {
            line.clear();
            let n = r.read_line(&mut line).await.ok()?;
            total += n;
            if n == 0 || line == "\r\n" || line == "\n" || total > MAX_HEAD {
                return Some(());
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .ok()??;
    first.split_whitespace().nth(1).map(str::to_string)
}

async fn serve(mut stream: TcpStream, render: Render) {
    let Some(path) = request_path(&mut stream).await else {
        return;
    };
    let path = path.split('?').next().unwrap_or("");
    let (status, ctype, body) = match path {
        "/stats/prometheus" | "/metrics" => {
            ("200 OK", sluice_engine::admin::PROMETHEUS, render().await)
        }
        _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt as _;

    use super::*;

    /// The whole answer to an HTTP/1.0 GET of `path`.
    async fn get(addr: SocketAddr, path: &str) -> String {
        let request = format!("GET {path} HTTP/1.0\r\n\r\n");
        let mut conn = TcpStream::connect(addr).await.expect("connect");
        conn.write_all(request.as_bytes()).await.expect("send");
        let mut answer = Vec::new();
        conn.read_to_end(&mut answer).await.expect("receive");
        String::from_utf8(answer).expect("utf-8")
    }

    #[tokio::test]
    async fn serves_the_rendered_text_on_istios_path_only() {
        let render: Render = Arc::new(|| Box::pin(async { "x_total 1\n".to_string() }));
        let ep = MetricsEndpoint::bind("127.0.0.1:0".parse().unwrap(), render)
            .await
            .unwrap();
        let ok = get(ep.addr(), "/stats/prometheus").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains("content-type: text/plain; version=0.0.4"),
            "{ok}"
        );
        assert!(ok.ends_with("\r\n\r\nx_total 1\n"), "{ok}");
        let missing = get(ep.addr(), "/stats").await;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    }
}
