//! The agent's control connections: who may talk to it, for how long, how many at once, and
//! the line-delimited JSON requests themselves (each answered by one line; descriptors that
//! arrive with a line, `SCM_RIGHTS`, go to that request).
//!
//! The socket file is root-only (0600), and each connection is also checked: its peer must be
//! root or a uid the agent was told to trust (`SO_PEERCRED`); at most [`MAX_CLIENTS`] are served
//! at once; one that sends nothing, or only part of a line, for [`IDLE_TIMEOUT`] is closed; and a
//! request carrying more than [`fd_passing::MAX_FDS`] descriptors is refused with all of them
//! closed (none is leaked).

use std::{io, os::fd::AsRawFd as _, os::fd::OwnedFd, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncWriteExt as _, Interest},
    net::UnixStream,
    sync::Mutex,
};
use tracing::warn;

use super::{
    fd_passing,
    protocol::{self, Request, Response},
    registry::{self, Registry},
    upgrade,
};

/// Control connections served at once; more are closed at accept.
pub const MAX_CLIENTS: usize = 64;
/// A connection silent (or stuck in the middle of a line) this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether a connection may be served: its peer is root, the agent's own uid, or one of
/// `allowed_uids`. The error says who was refused.
pub fn admit(stream: &UnixStream, allowed_uids: &[u32]) -> Result<(), String> {
    let cred = stream
        .peer_cred()
        .map_err(|e| format!("SO_PEERCRED: {e}"))?;
    let uid = cred.uid();
    let own = nix::unistd::geteuid().as_raw();
    if uid == 0 || uid == own || allowed_uids.contains(&uid) {
        return Ok(());
    }
    Err(format!(
        "peer uid {uid} (pid {:?}) is not root and not allowed (--control-allow-uid)",
        cred.pid()
    ))
}

/// Longest request line accepted.
const MAX_LINE: usize = 1 << 20;

/// Serves one control connection: JSON lines, each answered by one line. Descriptors that arrive
/// with a line (`SCM_RIGHTS`) go to that request. An `upgrade_begin` first request turns the
/// connection into the old agent's side of a graceful upgrade.
pub async fn serve_client(
    mut stream: UnixStream,
    registry: Arc<Mutex<Registry>>,
    upgrade_state: Arc<upgrade::UpgradeState>,
) {
    let mut buf: Vec<u8> = Vec::new();
    let mut fds: Vec<OwnedFd> = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let resp = match protocol::decode_request(&line[..pos]) {
                Ok(Request::UpgradeBegin) => {
                    return upgrade::serve_old(stream, registry, upgrade_state).await;
                }
                Ok(req) => handle(req, std::mem::take(&mut fds), &registry).await,
                Err(message) => Response::Error { message },
            };
            if let Err(e) = write_response(&mut stream, &resp).await {
                return warn!(error = %e, "control write failed");
            }
        }
        if buf.len() > MAX_LINE {
            return warn!(len = buf.len(), "control request line too long");
        }
        match tokio::time::timeout(IDLE_TIMEOUT, stream.readable()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return warn!(error = %e, "control read failed"),
            Err(_) => {
                if !buf.is_empty() {
                    warn!(
                        bytes = buf.len(),
                        "control request not finished within the idle timeout"
                    );
                }
                return;
            }
        }
        let fd = stream.as_raw_fd();
        match stream.try_io(Interest::READABLE, || {
            fd_passing::recv_with_fds(fd, &mut chunk)
        }) {
            Ok((0, _)) => return,
            Ok((n, more)) => {
                buf.extend_from_slice(&chunk[..n]);
                fds.extend(more);
                if fds.len() > fd_passing::MAX_FDS {
                    // Dropping them closes every one: nothing stays open in the agent.
                    let n = fds.len();
                    drop(std::mem::take(&mut fds));
                    let resp = Response::Error {
                        message: format!(
                            "{n} descriptors with one request; at most {}",
                            fd_passing::MAX_FDS
                        ),
                    };
                    let _ = write_response(&mut stream, &resp).await;
                    return warn!(fds = n, "control request with too many descriptors refused");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return warn!(error = %e, "control read failed"),
        }
    }
}

async fn handle(req: Request, fds: Vec<OwnedFd>, registry: &Mutex<Registry>) -> Response {
    // Takes the lock only to find the pod's server: a dump never holds the registry.
    let req = match req {
        Request::Admin(a) => return super::pod_admin::control(a, registry).await,
        req => req,
    };
    let mut reg = registry.lock().await;
    let error = |e: registry::AgentError| {
        warn!(error = %e, "request refused");
        Response::Error {
            message: e.to_string(),
        }
    };
    match req {
        Request::Enroll(spec) => match reg.enroll(&spec).await {
            Ok(pod) => Response::Enrolled(Box::new(pod)),
            Err(e) => error(e),
        },
        Request::Unenroll { netns } => match reg.unenroll(&netns).await {
            Ok((cookie, removed, remaining)) => Response::Unenrolled {
                netns,
                cookie,
                removed,
                remaining,
            },
            Err(e) => error(e),
        },
        Request::Status => Response::Status(reg.status()),
        Request::RegisterInbound { netns } => match reg.register_inbound(&netns, fds) {
            Ok((cookie, listeners)) => Response::Registered {
                netns,
                cookie,
                listeners,
            },
            Err(e) => error(e),
        },
        Request::Release {
            container_id,
            netns,
        } => match reg.release(&container_id, netns.as_deref()).await {
            Ok(r) => Response::Released {
                container_id,
                cookie: r.map(|(c, _, _)| c),
                removed: r.map_or(0, |(_, n, _)| n),
                remaining: r.map_or(0, |(_, _, n)| n),
            },
            Err(e) => error(e),
        },
        Request::Admin(_) => unreachable!("answered above, without the lock"),
        Request::UpgradeBegin | Request::UpgradeCommit => Response::Error {
            message: "upgrade_commit without a hand-over on this connection".into(),
        },
    }
}

/// Writes one answer line.
async fn write_response(stream: &mut UnixStream, resp: &Response) -> io::Result<()> {
    let mut out = serde_json::to_string(resp).expect("responses always serialize");
    out.push('\n');
    stream.write_all(out.as_bytes()).await
}
