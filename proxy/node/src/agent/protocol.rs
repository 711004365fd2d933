//! The control protocol: one JSON object per line, one response line per request, over the
//! agent's root-only unix socket. A blocking client ([`call`]) for the CLI lives here too.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::policy::{EnrollSpec, PodIdentity};

/// Default control socket path.
pub const DEFAULT_CONTROL: &str = "/run/sluice/agent.sock";

/// A request to the agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
// One request per control line, never stored in bulk: the size difference does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Request {
    /// Enroll (or re-enroll) a pod netns.
    Enroll(EnrollSpec),
    /// Remove a pod netns: every map entry and its listeners.
    Unenroll {
        /// Name under /run/netns or a path.
        netns: String,
    },
    /// Enrolled pods and counters.
    Status,
    /// A sidecar-mode pod's proxy hands over its inbound listening sockets (sent with the line as
    /// `SCM_RIGHTS`); the agent registers them with sk_lookup. Their netns decides the pod.
    RegisterInbound {
        /// The pod netns as the sidecar knows it (for logs).
        netns: String,
    },
    // --- CNI and graceful upgrade (additive) ---
    /// CNI DEL: removes the pod enrolled with `container_id` (else the one in `netns`, if
    /// given and enrolled). Idempotent: an unknown pod or a missing netns is not an error.
    Release {
        /// CNI_CONTAINERID.
        container_id: String,
        /// CNI_NETNS, when the runtime still has it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        netns: Option<String>,
    },
    /// Graceful upgrade, step 1 (sent by `sluice agent --upgrade-from`, first request on its
    /// connection): the old agent pins its sk_lookup links and answers [`Response::Handover`]
    /// with every pod, each node-mode pod's 15001 and 15006 listening sockets (v4 and v6)
    /// riding along as SCM_RIGHTS.
    UpgradeBegin,
    /// Graceful upgrade, step 2: the new agent serves every pod and the control socket; the old
    /// one stops accepting, answers [`Response::Draining`] and exits once its connections end
    /// (or its drain deadline passes).
    UpgradeCommit,
    /// One request to a node-mode pod's admin (`sluice proxy-config NAMESPACE/NAME`): the
    /// engine's admin handler run on that pod's live server (`agent::pod_admin`).
    Admin(AdminRequest),
}

/// [`Request::Admin`]: which pod (exactly one of `pod` and `netns`) and the HTTP request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminRequest {
    /// `NAMESPACE/NAME` of a pod enrolled with that identity (CNI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The pod's netns: a name under /run/netns or a path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    /// HTTP method (default GET); mutating paths answer POST only, as in Envoy.
    #[serde(default = "default_method")]
    pub method: String,
    /// Path and query, e.g. `/config_dump?include_eds`.
    pub path: String,
}

fn default_method() -> String {
    "GET".into()
}

/// The agent's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    /// The pod is enrolled as described.
    Enrolled(Box<PodStatus>),
    /// The pod is gone from the maps.
    Unenrolled {
        /// Netns as given.
        netns: String,
        /// Its cookie.
        cookie: u64,
        /// Map entries deleted.
        removed: usize,
        /// Map entries still keyed by the cookie afterwards (`entries_for`; 0 when clean).
        remaining: usize,
    },
    /// Everything the agent knows.
    Status(StatusReport),
    /// Inbound listeners registered for a sidecar-mode pod.
    Registered {
        /// Netns as given.
        netns: String,
        /// Its cookie.
        cookie: u64,
        /// Sockets registered.
        listeners: usize,
    },
    /// Answer to [`Request::Release`].
    Released {
        /// The container id asked for.
        container_id: String,
        /// Cookie of the pod removed, `None` when nothing was enrolled (still success).
        #[serde(default)]
        cookie: Option<u64>,
        /// Map entries deleted.
        removed: usize,
        /// Map entries still keyed by the cookie afterwards (0 when clean).
        remaining: usize,
    },
    /// Answer to [`Request::UpgradeBegin`]; `fds` listening sockets came with this line.
    Handover {
        /// Every pod of the old agent.
        pods: Vec<HandoverPod>,
        /// Number of descriptors attached (SCM_RIGHTS), indexed by [`HandoverListener::fd`].
        fds: usize,
    },
    /// Answer to [`Request::UpgradeCommit`]: the old agent stopped accepting.
    Draining {
        /// Connections still open in the old agent.
        connections: u64,
        /// How long it waits for them at most, in milliseconds.
        drain_timeout_ms: u64,
    },
    /// Answer to [`Request::Admin`]: what the pod's admin answered (any HTTP status).
    Admin {
        /// The pod (`NAMESPACE/NAME` when known, else its netns).
        pod: String,
        /// HTTP status.
        status: u16,
        /// `Content-Type` of the body.
        content_type: String,
        /// The body (at most `pod_admin::MAX_ADMIN_BODY` bytes).
        body: String,
    },
    /// The request was refused; nothing changed.
    Error {
        /// What was wrong, naming the value.
        message: String,
    },
}

/// One enrolled pod.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodStatus {
    /// Netns as given at enrollment.
    pub netns: String,
    /// Netns cookie (the map key).
    pub cookie: u64,
    /// node, sidecar or off.
    pub mode: String,
    /// Addresses the agent listens on inside the pod (node mode), empty otherwise.
    pub listeners: Vec<String>,
    /// Connections accepted by the agent's listeners for this pod.
    pub accepted: u64,
    /// Connections open now.
    pub active: u64,
    /// Connections whose upstream connect failed.
    pub upstream_failures: u64,
    /// Bytes app -> upstream over closed connections.
    pub bytes_out: u64,
    /// Bytes upstream -> app over closed connections.
    pub bytes_in: u64,
    /// Most recent original destinations, oldest first.
    pub recent_destinations: Vec<String>,
    /// Kernel map entries keyed by this cookie.
    pub map_entries: usize,
    /// Connections accepted by the agent's inbound (15006) listeners for this pod.
    #[serde(default)]
    pub inbound_accepted: u64,
    /// Most recent original destinations of inbound connections, oldest first.
    #[serde(default)]
    pub inbound_recent_destinations: Vec<String>,
    /// Who the pod is, when enrolled by the CNI plugin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodIdentity>,
    /// The pod's admin address inside its netns (node mode with `--config`, `--pod-admin-port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<String>,
    /// Config version of the pod's L7 engine servers (outbound, inbound; node mode with
    /// `--config`): what the pod's own engine is running right now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_versions: Option<(Option<u64>, Option<u64>)>,
    /// What serves a node-mode pod's listeners: `l7` (the agent's L7 config) or `l4` (the
    /// passthrough: the agent has no config or the pod was enrolled with `--engine l4`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// The agent's workers the pod's connections run on (node mode with a per-pod placement,
    /// `--pod-workers`); empty: any worker.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workers: Vec<usize>,
}

/// One pod handed from an old agent to a new one (graceful upgrade).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoverPod {
    /// Netns as given at enrollment.
    pub netns: String,
    /// Netns cookie.
    pub cookie: u64,
    /// node, sidecar or off.
    pub mode: String,
    /// Who the pod is (CNI), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodIdentity>,
    /// The pod's listening sockets the old agent served (node mode).
    #[serde(default)]
    pub listeners: Vec<HandoverListener>,
}

/// A listening socket handed over: where it is bound and which SCM_RIGHTS descriptor it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoverListener {
    /// Bound address (`127.0.0.1:15001`, `[::1]:15001`, `0.0.0.0:15006`, `[::]:15006`).
    pub addr: String,
    /// `outbound` (15001) or `inbound` (15006).
    pub direction: String,
    /// Index into the descriptors that came with the [`Response::Handover`] line.
    pub fd: usize,
}

/// The answer to [`Request::Status`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// Every enrolled pod, by cookie.
    pub pods: Vec<PodStatus>,
    /// Cookies that have a policy in the kernel map (includes pods enrolled by an earlier agent).
    pub kernel_policies: Vec<u64>,
    /// eBPF counters by name.
    pub counters: Vec<(String, u64)>,
    /// Pods placed on each of the agent's workers, by worker.
    #[serde(default)]
    pub pods_per_worker: Vec<usize>,
}

/// Errors talking to the agent; each names the socket path.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting, writing or reading failed.
    #[error("control socket {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The agent's answer is not valid protocol.
    #[error("control socket {path}: bad response {line:?}: {source}")]
    Decode {
        path: PathBuf,
        line: String,
        source: serde_json::Error,
    },
}

/// Decodes one request line (without its newline) as the agent's control loop does: bytes
/// that are not UTF-8 are replaced, not refused. The error is the answer's message, naming
/// the line.
pub fn decode_request(line: &[u8]) -> Result<Request, String> {
    let line = String::from_utf8_lossy(line);
    serde_json::from_str::<Request>(&line).map_err(|e| format!("malformed request {line:?}: {e}"))
}

/// Sends one request and waits (at most 30 s) for its response.
pub fn call(control: &Path, req: &Request) -> Result<Response, ClientError> {
    let s = UnixStream::connect(control).map_err(|source| ClientError::Io {
        path: control.to_path_buf(),
        source,
    })?;
    call_on(s, control, req)
}

/// [`call`] on a connection the caller made (e.g. to check its peer first); `control` names it
/// in errors.
pub fn call_on(mut s: UnixStream, control: &Path, req: &Request) -> Result<Response, ClientError> {
    let io = |source| ClientError::Io {
        path: control.to_path_buf(),
        source,
    };
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(io)?;
    let mut line = serde_json::to_string(req).expect("requests always serialize");
    line.push('\n');
    s.write_all(line.as_bytes()).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer).map_err(io)?;
    serde_json::from_str(answer.trim_end()).map_err(|source| ClientError::Decode {
        path: control.to_path_buf(),
        line: answer.clone(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format_is_tagged_json() {
        let req = Request::Enroll(EnrollSpec {
            netns: "pod".into(),
            mode: Some("node".into()),
            ..Default::default()
        });
        let line = serde_json::to_string(&req).unwrap();
        assert!(
            line.starts_with(r#"{"op":"enroll","netns":"pod","mode":"node""#),
            "{line}"
        );
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), req);
        let un: Request = serde_json::from_str(r#"{"op":"unenroll","netns":"x"}"#).unwrap();
        assert_eq!(un, Request::Unenroll { netns: "x".into() });
        let reg: Request =
            serde_json::from_str(r#"{"op":"register_inbound","netns":"p"}"#).unwrap();
        assert_eq!(reg, Request::RegisterInbound { netns: "p".into() });
        let admin: Request =
            serde_json::from_str(r#"{"op":"admin","pod":"default/web","path":"/ready"}"#).unwrap();
        assert_eq!(
            admin,
            Request::Admin(AdminRequest {
                pod: Some("default/web".into()),
                netns: None,
                method: "GET".into(),
                path: "/ready".into(),
            })
        );
        let err = Response::Error {
            message: "m".into(),
        };
        let line = serde_json::to_string(&err).unwrap();
        assert_eq!(line, r#"{"result":"error","message":"m"}"#);
    }
}
