//! Traffic for upgrade tests: an echo server in a netns, long-lived echo streams and a
//! steady new-connection generator, each reporting what it saw (used by tests/tests/upgrade.rs
//! and tests/tests/daemonset_upgrade.rs).

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

use crate::Netns;

/// A current-thread runtime for a thread inside a netns.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Bytes of one stream message.
pub const MSG: usize = 32;

/// Echo server on a thread (own runtime) inside `ns`: echoes every byte, closes at EOF. Counts
/// the connections it accepted and those whose peer was 127.0.0.6 (the inbound passthrough).
pub fn start_server(
    ns: &Netns,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    peers: Arc<PeerCount>,
) -> std::thread::JoinHandle<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = ns.spawn(move || {
        let rt = runtime();
        rt.block_on(async move {
            let l = TcpListener::bind(addr).await.expect("server bind");
            tx.send(()).expect("ready");
            while !stop.load(Ordering::Relaxed) {
                let Ok(Ok((mut s, peer))) =
                    tokio::time::timeout(Duration::from_millis(100), l.accept()).await
                else {
                    continue;
                };
                peers.total.fetch_add(1, Ordering::Relaxed);
                if peer.ip() == std::net::Ipv4Addr::new(127, 0, 0, 6) {
                    peers.passthrough.fetch_add(1, Ordering::Relaxed);
                }
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if s.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    let _ = s.shutdown().await;
                });
            }
        });
    });
    rx.recv_timeout(Duration::from_secs(5))
        .expect("server did not start");
    h
}

/// Connections a server accepted, and how many of them came from 127.0.0.6.
#[derive(Debug, Default)]
pub struct PeerCount {
    pub total: AtomicU64,
    pub passthrough: AtomicU64,
}

/// What one long-lived stream saw.
#[derive(Debug)]
pub struct StreamReport {
    pub rounds: u64,
    pub rounds_after_upgrade: u64,
}

pub async fn read_full(s: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<()> {
    // The sk_msg fast path can wake a reader without data (EAGAIN): tokio polls again.
    s.read_exact(buf).await.map(|_| ())
}

pub async fn one_stream(
    mut s: TcpStream,
    id: usize,
    stop: Arc<AtomicBool>,
    upgraded: Arc<AtomicBool>,
) -> Result<StreamReport, String> {
    let mut r = StreamReport {
        rounds: 0,
        rounds_after_upgrade: 0,
    };
    let mut back = [0u8; MSG];
    while !stop.load(Ordering::Relaxed) {
        let after = upgraded.load(Ordering::Relaxed);
        let msg = format!("{id:>8}:{:>22}\n", r.rounds);
        s.write_all(msg.as_bytes())
            .await
            .map_err(|e| format!("stream {id} round {}: write: {e}", r.rounds))?;
        read_full(&mut s, &mut back)
            .await
            .map_err(|e| format!("stream {id} round {}: read: {e}", r.rounds))?;
        if back != msg.as_bytes() {
            return Err(format!("stream {id}: echo mismatch"));
        }
        r.rounds += 1;
        if after {
            r.rounds_after_upgrade += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.shutdown()
        .await
        .map_err(|e| format!("stream {id}: shutdown: {e}"))?;
    let mut rest = Vec::new();
    s.read_to_end(&mut rest)
        .await
        .map_err(|e| format!("stream {id}: close: {e}"))?;
    Ok(r)
}

/// What the new-connection generator saw.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub attempted: u64,
    pub ok: u64,
    /// Of `ok`: to the server in the enrolled pod (captured inbound too).
    pub inbound_ok: u64,
    pub failed: u64,
    pub first_errors: Vec<String>,
    pub elapsed: Duration,
}

pub async fn one_request(dst: SocketAddr) -> Result<(), String> {
    let mut s = tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(dst))
        .await
        .map_err(|_| "connect timeout".to_string())?
        .map_err(|e| format!("connect: {e}"))?;
    s.write_all(b"ping")
        .await
        .map_err(|e| format!("write: {e}"))?;
    s.shutdown().await.map_err(|e| format!("shutdown: {e}"))?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out))
        .await
        .map_err(|_| "read timeout".to_string())?
        .map_err(|e| format!("read: {e}"))?;
    if out != b"ping" {
        return Err(format!("answer {out:?}"));
    }
    Ok(())
}

/// New connections at `rate` per second, alternating between `dsts[0]` and `dsts[1]` (the
/// server in the enrolled pod).
pub async fn load(dsts: [SocketAddr; 2], stop: Arc<AtomicBool>, rate: u64) -> LoadReport {
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    let ok = Arc::new(AtomicU64::new(0));
    let inbound_ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut tasks = tokio::task::JoinSet::new();
    let mut attempted = 0;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        attempted += 1;
        let inbound = attempted % 2 == 0;
        let dst = dsts[usize::from(inbound)];
        let (ok, inbound_ok, errors) = (ok.clone(), inbound_ok.clone(), errors.clone());
        tasks.spawn(async move {
            match one_request(dst).await {
                Ok(()) => {
                    ok.fetch_add(1, Ordering::Relaxed);
                    if inbound {
                        inbound_ok.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(e) => errors.lock().unwrap().push(format!("{dst}: {e}")),
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let errors = errors.lock().unwrap();
    LoadReport {
        attempted,
        ok: ok.load(Ordering::Relaxed),
        inbound_ok: inbound_ok.load(Ordering::Relaxed),
        failed: errors.len() as u64,
        first_errors: errors.iter().take(5).cloned().collect(),
        elapsed: start.elapsed(),
    }
}

/// Opens `n` long-lived streams from `ns`, alternating between `dsts[0]` and `dsts[1]`, each
/// echoed once before this returns (so the whole path has accepted it); they then run until
/// `stop`. The handle yields each stream's report. Panics if they do not connect in `limit`.
pub fn open_streams(
    ns: &Netns,
    dsts: [SocketAddr; 2],
    n: usize,
    stop: Arc<AtomicBool>,
    upgraded: Arc<AtomicBool>,
    limit: Duration,
) -> std::thread::JoinHandle<Vec<Result<StreamReport, String>>> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let h = ns.spawn(move || {
        let rt = runtime();
        rt.block_on(async move {
            let mut set = tokio::task::JoinSet::new();
            for id in 0..n {
                // Every other stream goes to dsts[1] (e.g. a pod captured inbound as well).
                let dst = dsts[id % 2];
                let mut s = TcpStream::connect(dst)
                    .await
                    .unwrap_or_else(|e| panic!("stream {id}: connect {dst}: {e}"));
                // One echo before "ready": the whole path (outbound proxy, the server
                // pod's inbound proxy, the server) has accepted this stream by then.
                let hello = format!("{id:>8}:{:>22}\n", "hello");
                s.write_all(hello.as_bytes())
                    .await
                    .unwrap_or_else(|e| panic!("stream {id}: first write: {e}"));
                let mut back = [0u8; MSG];
                read_full(&mut s, &mut back)
                    .await
                    .unwrap_or_else(|e| panic!("stream {id}: first echo: {e}"));
                assert_eq!(&back[..], hello.as_bytes(), "stream {id}: first echo");
                set.spawn(one_stream(s, id, stop.clone(), upgraded.clone()));
            }
            ready_tx.send(()).expect("ready");
            let mut out = Vec::new();
            while let Some(r) = set.join_next().await {
                out.push(r.expect("stream task"));
            }
            out
        })
    });
    ready_rx
        .recv_timeout(limit)
        .expect("streams did not connect");
    h
}

/// [`load`] on a thread in `ns` (own runtime) until `stop`.
pub fn spawn_load(
    ns: &Netns,
    dsts: [SocketAddr; 2],
    stop: Arc<AtomicBool>,
    rate: u64,
) -> std::thread::JoinHandle<LoadReport> {
    ns.spawn(move || {
        let rt = runtime();
        rt.block_on(load(dsts, stop, rate))
    })
}
