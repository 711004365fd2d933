//! Graceful agent upgrade over the control socket (`sluice agent --upgrade-from SOCK`).
//!
//! 1. The new agent connects to the old one's control socket and sends `upgrade_begin`.
//! 2. The old agent (holding its registry lock until it exits, so nothing changes meanwhile)
//!    pins its sk_lookup links and answers one `handover` line listing every pod, with
//!    duplicates of each node-mode pod's listening sockets (15001 v4/v6, 15006 v4/v6) attached
//!    as SCM_RIGHTS; sidecar-mode pods go as policy only (their sidecar owns its sockets). It
//!    keeps accepting on them.
//! 3. The new agent loads the data path (adopting the pinned links: its programs go in, the
//!    old ones keep running next to them until the old agent exits), starts accepting on the
//!    received sockets with the same handlers as freshly enrolled node-mode pods (the very same
//!    kernel sockets, so their accept queues are shared and no connection is refused),
//!    registers the 15006 ones with sk_lookup again (same sockets: the entries stay valid
//!    throughout), binds the control socket path anew, and sends `upgrade_commit`.
//! 4. The old agent stops accepting (without touching the sk_lookup entries, which are the new
//!    agent's now), answers `draining`, leaves the control socket path to the new agent, waits
//!    until the outbound and inbound connections it still serves end or `--drain-timeout` passes,
//!    and exits (dropping only its own cgroup program attachments).

use std::{
    io::{self, BufRead as _, BufReader, Write as _},
    os::{
        fd::{AsRawFd as _, OwnedFd, RawFd},
        unix::net::UnixStream as StdUnixStream,
    },
    path::{Path, PathBuf},
    sync::{atomic::Ordering, Arc, Mutex as StdMutex},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _},
    net::UnixStream,
    sync::{Mutex, Notify},
};
use tracing::{info, warn};

use super::{
    fd_passing,
    protocol::{HandoverPod, Request, Response},
    registry::Registry,
};
use crate::listener::ListenerContext;

/// Most descriptors one hand-over message carries (4 per node-mode pod; the kernel caps SCM_RIGHTS at 253 per
/// message, so they go in chunks).
const FDS_PER_MSG: usize = fd_passing::MAX_FDS_PER_MSG;
/// How long either side waits for the other's next step.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors of the new agent's side of an upgrade; each names the old agent's socket.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// Talking to the old agent failed.
    #[error("upgrade from {path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        source: io::Error,
    },
    /// The old agent answered something unexpected (e.g. it refused).
    #[error("upgrade from {path}: unexpected answer to {op}: {answer}")]
    Protocol {
        path: PathBuf,
        op: &'static str,
        answer: String,
    },
}

/// What the new agent got from the old one in step 2.
#[derive(Debug)]
pub struct Handover {
    /// Every pod of the old agent.
    pub pods: Vec<HandoverPod>,
    /// The listening sockets, indexed by `HandoverListener::fd`.
    pub fds: Vec<OwnedFd>,
    stream: StdUnixStream,
    path: PathBuf,
}

/// New agent, step 1-2: asks the old agent at `control` for its pods and sockets.
pub fn begin(control: &Path) -> Result<Handover, UpgradeError> {
    let io = |op| {
        let path = control.to_path_buf();
        move |source| UpgradeError::Io { path, op, source }
    };
    let mut stream = StdUnixStream::connect(control).map_err(io("connect"))?;
    stream
        .set_read_timeout(Some(STEP_TIMEOUT))
        .map_err(io("set timeout"))?;
    send_line(&mut stream, &Request::UpgradeBegin, &[]).map_err(io("send upgrade_begin"))?;
    let (line, mut fds) = recv_line(&stream).map_err(io("receive the hand-over"))?;
    let (pods, want) = match serde_json::from_str::<Response>(&line) {
        Ok(Response::Handover { pods, fds }) => (pods, fds),
        _ => {
            return Err(UpgradeError::Protocol {
                path: control.to_path_buf(),
                op: "upgrade_begin",
                answer: line,
            })
        }
    };
    // The rest of the descriptors come in further chunks, each with a one-byte payload.
    while fds.len() < want {
        let (_, more) = recv_chunk(&stream).map_err(io("receive listener descriptors"))?;
        if more.is_empty() {
            return Err(UpgradeError::Protocol {
                path: control.to_path_buf(),
                op: "upgrade_begin",
                answer: format!("{} of {want} descriptors, then nothing", fds.len()),
            });
        }
        fds.extend(more);
    }
    Ok(Handover {
        pods,
        fds,
        stream,
        path: control.to_path_buf(),
    })
}

/// The old agent's `draining` answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Draining {
    /// Connections the old agent still serves.
    pub connections: u64,
    /// Its drain deadline.
    pub drain_timeout: Duration,
}

/// The part of a [`Handover`] kept for step 4 (the pods and sockets are consumed by adoption).
#[derive(Debug)]
pub struct Pending {
    stream: StdUnixStream,
    path: PathBuf,
}

impl Handover {
    /// Splits off the connection, to [`commit`] once the pods are served.
    pub fn into_parts(self) -> (Vec<HandoverPod>, Vec<OwnedFd>, Pending) {
        (
            self.pods,
            self.fds,
            Pending {
                stream: self.stream,
                path: self.path,
            },
        )
    }
}

/// New agent, step 3-4: tells the old agent to stop accepting; returns its `draining` answer.
pub fn commit(mut p: Pending) -> Result<Draining, UpgradeError> {
    let io = |op| {
        let path = p.path.clone();
        move |source| UpgradeError::Io { path, op, source }
    };
    send_line(&mut p.stream, &Request::UpgradeCommit, &[]).map_err(io("send upgrade_commit"))?;
    let mut line = String::new();
    BufReader::new(&p.stream)
        .read_line(&mut line)
        .map_err(io("receive draining"))?;
    match serde_json::from_str::<Response>(line.trim_end()) {
        Ok(Response::Draining {
            connections,
            drain_timeout_ms,
        }) => Ok(Draining {
            connections,
            drain_timeout: Duration::from_millis(drain_timeout_ms),
        }),
        _ => Err(UpgradeError::Protocol {
            path: p.path.clone(),
            op: "upgrade_commit",
            answer: line,
        }),
    }
}

/// The old agent's side: set once the hand-over is committed; the main loop then exits and
/// [`UpgradeState::drain`]s.
#[derive(Debug, Default)]
pub struct UpgradeState {
    committed: Notify,
    ctxs: StdMutex<Vec<Arc<ListenerContext>>>,
    drain_timeout: Duration,
}

impl UpgradeState {
    /// A state whose drain waits at most `drain_timeout`.
    pub fn new(drain_timeout: Duration) -> Self {
        Self {
            drain_timeout,
            ..Default::default()
        }
    }

    /// Completes once a new agent committed the hand-over.
    pub async fn committed(&self) {
        self.committed.notified().await
    }

    fn active(&self) -> u64 {
        let ctxs = self.ctxs.lock().unwrap_or_else(|p| p.into_inner());
        ctxs.iter()
            .map(|c| c.stats.active.load(Ordering::Relaxed))
            .sum()
    }

    /// Waits until every connection the old agent still serves has ended, or the drain
    /// deadline. Returns (connections left when the deadline hit, time waited).
    pub async fn drain(&self) -> (u64, Duration) {
        let start = Instant::now();
        let mut left = self.active();
        info!(connections = left, deadline = ?self.drain_timeout, "draining after upgrade");
        while left > 0 && start.elapsed() < self.drain_timeout {
            tokio::time::sleep(Duration::from_millis(20)).await;
            left = self.active();
        }
        if left > 0 {
            warn!(
                connections = left,
                "drain deadline passed; cutting the rest"
            );
        } else {
            info!(took = ?start.elapsed(), "drained");
        }
        (left, start.elapsed())
    }
}

/// Old agent: serves a control connection whose first request was `upgrade_begin`.
pub async fn serve_old(
    mut stream: UnixStream,
    registry: Arc<Mutex<Registry>>,
    state: Arc<UpgradeState>,
) {
    // Held until this process exits: nothing may change under the new agent's feet.
    let mut reg = registry.lock_owned().await;
    let (pods, fds) = match reg.export_handover() {
        Ok(x) => x,
        Err(e) => {
            warn!(error = %e, "upgrade refused");
            let resp = Response::Error {
                message: format!("hand-over: {e}"),
            };
            let _ = write_async(&mut stream, &resp).await;
            return;
        }
    };
    let n = fds.len();
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let handover = Response::Handover {
        pods: pods.clone(),
        fds: n,
    };
    let sent = async {
        let (first, rest) = raw.split_at(n.min(FDS_PER_MSG));
        let mut line = serde_json::to_vec(&handover).expect("responses always serialize");
        line.push(b'\n');
        send_async(&stream, &line, first).await?;
        for chunk in rest.chunks(FDS_PER_MSG) {
            send_async(&stream, b"+", chunk).await?;
        }
        io::Result::Ok(())
    }
    .await;
    drop(fds);
    if let Err(e) = sent {
        return warn!(error = %e, "upgrade: sending the hand-over failed");
    }
    info!(
        pods = pods.len(),
        sockets = n,
        "upgrade: handed over, waiting for commit"
    );
    let mut line = String::new();
    let mut rd = tokio::io::BufReader::new(&mut stream);
    let read = tokio::time::timeout(STEP_TIMEOUT, rd.read_line(&mut line)).await;
    match (read, serde_json::from_str::<Request>(line.trim_end())) {
        (Ok(Ok(_)), Ok(Request::UpgradeCommit)) => {}
        _ => {
            // The new agent gave up: keep serving as before (the links it adopted keep
            // working with whichever program they hold; our own fds keep them alive).
            return warn!(answer = %line.trim_end(), "upgrade aborted by the new agent; still serving");
        }
    }
    let ctxs = reg.stop_accepting().await;
    *state.ctxs.lock().unwrap_or_else(|p| p.into_inner()) = ctxs;
    let connections = state.active();
    let resp = Response::Draining {
        connections,
        drain_timeout_ms: state.drain_timeout.as_millis() as u64,
    };
    if let Err(e) = write_async(&mut stream, &resp).await {
        warn!(error = %e, "upgrade: answering the commit failed");
    }
    info!(connections, "upgrade committed: stopped accepting");
    state.committed.notify_one();
    // Keep the registry locked: the main loop takes it back after aborting this task.
    std::future::pending::<()>().await;
}

async fn write_async(stream: &mut UnixStream, resp: &Response) -> io::Result<()> {
    let mut out = serde_json::to_string(resp).expect("responses always serialize");
    out.push('\n');
    stream.write_all(out.as_bytes()).await
}

async fn send_async(stream: &UnixStream, bytes: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let mut off = 0;
    while off < bytes.len() {
        stream.writable().await?;
        let r = stream.try_io(tokio::io::Interest::WRITABLE, || {
            fd_passing::send_some(
                stream.as_raw_fd(),
                &bytes[off..],
                if off == 0 { fds } else { &[] },
            )
        });
        match r {
            Ok(n) => off += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn send_line(stream: &mut StdUnixStream, req: &Request, fds: &[RawFd]) -> io::Result<()> {
    let mut line = serde_json::to_vec(req).expect("requests always serialize");
    line.push(b'\n');
    let n = fd_passing::send_some(stream.as_raw_fd(), &line, fds)?;
    stream.write_all(&line[n..])
}

/// Receives one chunk: bytes and any descriptors that came with them (close-on-exec).
fn recv_chunk(stream: &StdUnixStream) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut buf = vec![0u8; 256 * 1024];
    let (n, fds) = fd_passing::recv_many_fds(stream.as_raw_fd(), &mut buf)?;
    buf.truncate(n);
    Ok((buf, fds))
}

/// Receives the first line (it may arrive in several reads; descriptors come with the first).
fn recv_line(stream: &StdUnixStream) -> io::Result<(String, Vec<OwnedFd>)> {
    let mut bytes = Vec::new();
    let mut fds = Vec::new();
    loop {
        let (b, f) = recv_chunk(stream)?;
        if b.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the old agent closed the connection",
            ));
        }
        bytes.extend_from_slice(&b);
        fds.extend(f);
        if bytes.ends_with(b"\n") {
            break;
        }
    }
    Ok((String::from_utf8_lossy(&bytes).trim_end().to_string(), fds))
}
