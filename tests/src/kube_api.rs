//! A fake Kubernetes API server on loopback for the pod watcher's plumbing (`sluice agent
//! --watch-pods --kubeconfig`): it answers the pod and namespace list requests with fixed
//! objects, holds watch requests open (nothing changes), and records every request line.
//! Plain HTTP; stopped (every connection closed) on drop.

use std::{
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::Duration,
};

/// The fake server.
pub struct FakeApiServer {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeApiServer {
    /// Serves `pods` at /api/v1/pods and `namespaces` at /api/v1/namespaces.
    pub fn start(pods: Vec<serde_json::Value>, namespaces: Vec<serde_json::Value>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake API server");
        let addr = listener.local_addr().expect("local addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let lists = Arc::new((list("PodList", pods), list("NamespaceList", namespaces)));
        let (reqs, halt) = (requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut conns = Vec::new();
            for stream in listener.incoming() {
                if halt.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (reqs, halt, lists) = (reqs.clone(), halt.clone(), lists.clone());
                conns.push(std::thread::spawn(move || {
                    serve(stream, &reqs, &halt, &lists)
                }));
            }
            for c in conns {
                let _ = c.join();
            }
        });
        Self {
            addr,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Writes a kubeconfig naming this server into `dir` and returns its path.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n\
             current-context: fake\nusers:\n- name: fake\n  user: {{}}\n",
            self.addr
        );
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }

    /// Every request line so far (`GET /api/v1/pods?... HTTP/1.1`).
    pub fn requests(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn list(kind: &str, items: Vec<serde_json::Value>) -> String {
    serde_json::json!({
        "kind": kind, "apiVersion": "v1",
        "metadata": {"resourceVersion": "1000"}, "items": items
    })
    .to_string()
}

/// One connection: requests in order; a watch holds the connection until the server stops.
fn serve(
    stream: TcpStream,
    reqs: &Mutex<Vec<String>>,
    halt: &AtomicBool,
    lists: &(String, String),
) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let mut out = match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    while !halt.load(Ordering::Relaxed) {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => {}
            Err(_) => continue,
        }
        // The rest of the head.
        loop {
            let mut h = String::new();
            match reader.read_line(&mut h) {
                Ok(0) => return,
                Ok(_) if h == "\r\n" => break,
                Ok(_) => {}
                Err(_) if halt.load(Ordering::Relaxed) => return,
                Err(_) => {}
            }
        }
        let line = line.trim_end().to_string();
        reqs.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(line.clone());
        let path = line.split_whitespace().nth(1).unwrap_or("");
        if path.contains("watch=true") || path.contains("watch=1") {
            let _ = out.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
            );
            while !halt.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
            }
            return;
        }
        let body = if path.starts_with("/api/v1/pods") {
            &lists.0
        } else if path.starts_with("/api/v1/namespaces") {
            &lists.1
        } else {
            let _ = out.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n");
            continue;
        };
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        let _ = out.write_all(head.as_bytes());
        let _ = out.write_all(body.as_bytes());
    }
}
