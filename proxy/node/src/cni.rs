//! `sluice-cni`: a CNI plugin chained after the pod network plugin (like istio-cni) that
//! enrolls each new pod with the node agent.
//!
//! The runtime execs the plugin with `CNI_COMMAND` and friends in the environment and the
//! network configuration on stdin ([`config`]). ADD sends the agent an enroll request with the
//! pod's netns path, mode and identity (container id, pod name/namespace) and prints
//! `prevResult` unchanged; DEL releases the pod (idempotent); CHECK verifies it is enrolled;
//! VERSION lists the spec versions; STATUS reports whether the agent is reachable; GC releases
//! pods whose container id is not among `cni.dev/valid-attachments`. Failures are printed as
//! the spec's error object (`{cniVersion, code, msg, details}`) with a non-zero exit status.

pub mod atomic_file;
pub mod config;
pub mod conflist;
pub mod install;

use std::path::Path;

use serde::Serialize;

pub use self::config::{CniEnv, NetConf};
use crate::{
    agent::protocol::{self, ClientError, PodStatus, Request, Response},
    policy::{EnrollSpec, PodIdentity},
};

/// Spec versions this plugin speaks.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
/// Version used for answers when the configuration gives none.
pub const LATEST: &str = "1.1.0";

/// CNI error codes (spec section "Error"); 100+ are sluice's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// 1: the configuration's cniVersion is not supported.
    IncompatibleVersion = 1,
    /// 4: a required `CNI_*` variable is missing or `CNI_COMMAND` is unknown.
    InvalidEnv = 4,
    /// 6: stdin is not a valid network configuration.
    DecodeFailure = 6,
    /// 7: an option of the configuration is invalid.
    InvalidConfig = 7,
    /// 50: STATUS: the plugin cannot serve ADDs now (agent unreachable).
    NotAvailable = 50,
    /// 100: the agent cannot be reached.
    AgentUnreachable = 100,
    /// 101: the agent refused the request.
    AgentRefused = 101,
    /// 102: CHECK: the pod is not enrolled as configured.
    NotEnrolled = 102,
}

/// The spec's error object; printed to stdout, exit status 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(rename_all = "camelCase")]
#[error("CNI error {code}: {msg} ({details})")]
pub struct CniError {
    /// Version of the answer.
    pub cni_version: String,
    /// Error code.
    pub code: u32,
    /// Short message.
    pub msg: String,
    /// Longer explanation.
    pub details: String,
}

impl CniError {
    /// An error; its `cniVersion` is filled in by [`run`].
    pub fn new(code: ErrorCode, msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self {
            cni_version: String::new(),
            code: code as u32,
            msg: msg.into(),
            details: details.into(),
        }
    }
}

/// What the plugin prints on success and what it tells the runtime on stderr.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// JSON for stdout (may be empty: DEL, CHECK, STATUS, GC print nothing).
    pub stdout: String,
    /// Warnings for stderr (e.g. fail-open on an unreachable agent).
    pub warnings: Vec<String>,
}

/// One plugin invocation: `env` from the `CNI_*` variables, `stdin` the network configuration.
/// Errors carry the configuration's cniVersion (or [`LATEST`]).
pub fn run(env: &CniEnv, stdin: &[u8]) -> Result<Outcome, CniError> {
    if env.command == "VERSION" {
        return Ok(Outcome {
            stdout: version_json(),
            warnings: Vec::new(),
        });
    }
    let conf = NetConf::parse(stdin).map_err(|e| with_version(e, LATEST))?;
    let v = conf.cni_version.clone();
    dispatch(env, &conf).map_err(|e| {
        let ver = if v.is_empty() { LATEST } else { &v };
        with_version(e, ver)
    })
}

fn with_version(mut e: CniError, v: &str) -> CniError {
    e.cni_version = v.to_string();
    e
}

fn dispatch(env: &CniEnv, conf: &NetConf) -> Result<Outcome, CniError> {
    if !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
        return Err(CniError::new(
            ErrorCode::IncompatibleVersion,
            format!("cniVersion {:?} is not supported", conf.cni_version),
            format!("supported: {}", SUPPORTED_VERSIONS.join(", ")),
        ));
    }
    match env.command.as_str() {
        "ADD" => add(env, conf),
        "DEL" => del(env, conf),
        "CHECK" => check(env, conf),
        "STATUS" => status(conf),
        "GC" => gc(conf),
        other => Err(CniError::new(
            ErrorCode::InvalidEnv,
            format!("CNI_COMMAND {other:?} is not supported"),
            "expected ADD, DEL, CHECK, VERSION, STATUS or GC",
        )),
    }
}

/// `{"cniVersion":"1.1.0","supportedVersions":[...]}`.
pub fn version_json() -> String {
    serde_json::json!({ "cniVersion": LATEST, "supportedVersions": SUPPORTED_VERSIONS }).to_string()
}

/// The result printed on ADD: prevResult unchanged, or an empty result of the configured
/// version when sluice-cni is (wrongly) first in the chain.
fn passthrough(conf: &NetConf) -> String {
    match &conf.prev_result {
        Some(r) => r.to_string(),
        None => serde_json::json!({ "cniVersion": conf.cni_version }).to_string(),
    }
}

fn identity(env: &CniEnv, container_id: &str) -> PodIdentity {
    PodIdentity {
        container_id: container_id.to_string(),
        pod_name: env.args.get("K8S_POD_NAME").cloned(),
        pod_namespace: env.args.get("K8S_POD_NAMESPACE").cloned(),
    }
}

/// [`call`], retried once when the agent closed the connection without answering (a request
/// that queued behind a graceful upgrade: the socket path belongs to the new agent by then).
/// Every request the plugin sends is idempotent.
fn call(control: &Path, req: &Request) -> Result<Response, ClientError> {
    match protocol::call(control, req) {
        Err(ClientError::Decode { line, .. }) if line.is_empty() => {
            std::thread::sleep(std::time::Duration::from_millis(100));
            protocol::call(control, req)
        }
        r => r,
    }
}

fn unreachable(control: &Path, e: &ClientError) -> CniError {
    CniError::new(
        ErrorCode::AgentUnreachable,
        format!("sluice agent unreachable at {}", control.display()),
        format!("{e}; the pod was not enrolled (set \"failOpen\": true to start pods uncaptured while the agent is down)"),
    )
}

fn refused(what: &str, r: Response) -> CniError {
    match r {
        Response::Error { message } => CniError::new(
            ErrorCode::AgentRefused,
            format!("agent refused {what}"),
            message,
        ),
        other => CniError::new(
            ErrorCode::AgentRefused,
            format!("unexpected agent answer to {what}"),
            format!("{other:?}"),
        ),
    }
}

/// The enroll request for this pod, validated the way the agent validates it.
pub fn enroll_spec(env: &CniEnv, conf: &NetConf, netns: &str, container_id: &str) -> EnrollSpec {
    let list = |o: &Option<config::ListOpt>| o.as_ref().map(config::ListOpt::joined);
    EnrollSpec {
        netns: netns.to_string(),
        mode: conf.mode_for(env),
        exclude_outbound_ports: list(&conf.exclude_outbound_ports),
        include_outbound_ports: list(&conf.include_outbound_ports),
        exclude_outbound_cidrs: list(&conf.exclude_outbound_cidrs),
        include_outbound_cidrs: list(&conf.include_outbound_cidrs),
        exclude_inbound_ports: list(&conf.exclude_inbound_ports),
        fast_path: conf.fast_path.clone(),
        exempt_uid: false,
        fail_open: false,
        engine: conf.engine_for(),
        pod: Some(identity(env, container_id)),
    }
}

fn add(env: &CniEnv, conf: &NetConf) -> Result<Outcome, CniError> {
    let container_id = env.container_id()?;
    let netns = env.require("CNI_NETNS", &env.netns)?;
    env.require("CNI_IFNAME", &env.ifname)?;
    let mut out = Outcome {
        stdout: passthrough(conf),
        warnings: Vec::new(),
    };
    if let Some(ns) = env.args.get("K8S_POD_NAMESPACE") {
        if conf.exclude_namespaces.iter().any(|x| x == ns) {
            return Ok(out);
        }
    }
    let spec = enroll_spec(env, conf, netns, container_id);
    spec.validate().map_err(|e| {
        CniError::new(
            ErrorCode::InvalidConfig,
            "invalid sluice options in the network configuration",
            e.to_string(),
        )
    })?;
    let control = conf.control();
    match call(&control, &Request::Enroll(spec)) {
        Ok(Response::Enrolled(_)) => Ok(out),
        Ok(other) => Err(refused("the enrollment", other)),
        Err(e @ ClientError::Io { .. }) if conf.fail_open => {
            out.warnings.push(format!(
                "sluice-cni: warning: {}; failOpen is set, pod {container_id} starts without capture",
                unreachable(&control, &e)
            ));
            Ok(out)
        }
        Err(e) => Err(unreachable(&control, &e)),
    }
}

fn del(env: &CniEnv, conf: &NetConf) -> Result<Outcome, CniError> {
    let container_id = env.container_id()?;
    let control = conf.control();
    let req = Request::Release {
        container_id: container_id.to_string(),
        netns: env.netns.clone(),
    };
    match call(&control, &req) {
        Ok(Response::Released { .. }) => Ok(Outcome::default()),
        Ok(other) => Err(refused("the release", other)),
        // Nothing to undo on this node's side that a later agent would not clean up: the pod's
        // cookie dies with its netns. DEL must not block pod deletion while the agent is down.
        Err(e @ ClientError::Io { .. }) => Ok(Outcome {
            stdout: String::new(),
            warnings: vec![format!(
                "sluice-cni: warning: {}; nothing released",
                unreachable(&control, &e)
            )],
        }),
        Err(e) => Err(unreachable(&control, &e)),
    }
}

fn enrolled_pods(conf: &NetConf) -> Result<Vec<PodStatus>, CniError> {
    let control = conf.control();
    match call(&control, &Request::Status) {
        Ok(Response::Status(s)) => Ok(s.pods),
        Ok(other) => Err(refused("the status request", other)),
        Err(e) => Err(unreachable(&control, &e)),
    }
}

fn check(env: &CniEnv, conf: &NetConf) -> Result<Outcome, CniError> {
    let container_id = env.container_id()?;
    env.require("CNI_NETNS", &env.netns)?;
    if let Some(ns) = env.args.get("K8S_POD_NAMESPACE") {
        if conf.exclude_namespaces.iter().any(|x| x == ns) {
            return Ok(Outcome::default());
        }
    }
    let pods = enrolled_pods(conf)?;
    let pod = pods
        .iter()
        .find(|p| {
            p.pod
                .as_ref()
                .is_some_and(|i| i.container_id == container_id)
        })
        .ok_or_else(|| {
            CniError::new(
                ErrorCode::NotEnrolled,
                format!("container {container_id} is not enrolled"),
                format!("{} pods enrolled", pods.len()),
            )
        })?;
    let want = conf.mode_for(env).unwrap_or_else(|| "node".into());
    if pod.mode != want {
        return Err(CniError::new(
            ErrorCode::NotEnrolled,
            format!(
                "container {container_id} is enrolled in mode {}, configured {want}",
                pod.mode
            ),
            format!("netns {} cookie {}", pod.netns, pod.cookie),
        ));
    }
    if want == "node" && pod.listeners.is_empty() {
        return Err(CniError::new(
            ErrorCode::NotEnrolled,
            format!("container {container_id}: node mode without listeners"),
            format!("netns {} cookie {}", pod.netns, pod.cookie),
        ));
    }
    Ok(Outcome::default())
}

fn status(conf: &NetConf) -> Result<Outcome, CniError> {
    let control = conf.control();
    match call(&control, &Request::Status) {
        Ok(Response::Status(_)) => Ok(Outcome::default()),
        Ok(other) => Err(refused("the status request", other)),
        Err(e) if conf.fail_open => Ok(Outcome {
            stdout: String::new(),
            warnings: vec![format!(
                "sluice-cni: warning: {}",
                unreachable(&control, &e)
            )],
        }),
        Err(e) => Err(CniError::new(
            ErrorCode::NotAvailable,
            format!("sluice agent unreachable at {}", control.display()),
            e.to_string(),
        )),
    }
}

/// GC: releases every CNI-enrolled pod whose container id is not a valid attachment.
fn gc(conf: &NetConf) -> Result<Outcome, CniError> {
    let valid: Vec<String> = conf
        .runtime_config
        .as_ref()
        .and_then(|rc| rc.get("cni.dev/valid-attachments"))
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|x| x.get("containerID").and_then(|c| c.as_str()))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let control = conf.control();
    for p in enrolled_pods(conf)? {
        let Some(id) = p.pod.map(|i| i.container_id) else {
            continue;
        };
        if valid.contains(&id) {
            continue;
        }
        let req = Request::Release {
            container_id: id,
            netns: None,
        };
        match call(&control, &req) {
            Ok(Response::Released { .. }) => {}
            Ok(other) => return Err(refused("a release", other)),
            Err(e) => return Err(unreachable(&control, &e)),
        }
    }
    Ok(Outcome::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(cmd: &str) -> CniEnv {
        CniEnv {
            command: cmd.into(),
            container_id: Some("c1".into()),
            netns: Some("/run/netns/x".into()),
            ifname: Some("eth0".into()),
            ..Default::default()
        }
    }

    #[test]
    fn version_lists_supported() {
        let out = run(&env("VERSION"), b"").unwrap();
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(v["supportedVersions"].as_array().unwrap().len(), 5);
    }

    #[test]
    fn errors_are_spec_objects() {
        let e = run(&env("ADD"), br#"{"cniVersion":"0.2.0","name":"n"}"#).unwrap_err();
        assert_eq!((e.code, e.cni_version.as_str()), (1, "0.2.0"));
        let mut no_ns = env("ADD");
        no_ns.netns = None;
        let e = run(&no_ns, br#"{"cniVersion":"1.0.0"}"#).unwrap_err();
        assert_eq!(e.code, 4);
        assert!(e.msg.contains("CNI_NETNS"), "{}", e.msg);
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["cniVersion"], "1.0.0");
        assert!(json.get("details").is_some());
        let e = run(&env("ADD"), b"{not json").unwrap_err();
        assert_eq!(e.code, 6);
        let e = run(
            &env("ADD"),
            br#"{"cniVersion":"1.0.0","excludeOutboundPorts":"http","control":"/nonexistent"}"#,
        )
        .unwrap_err();
        assert_eq!(e.code, 7, "{e}");
        assert!(e.details.contains("http"), "{e}");
    }

    #[test]
    fn unreachable_agent_fails_closed_unless_fail_open() {
        let conf = br#"{"cniVersion":"1.0.0","control":"/nonexistent/sluice.sock","prevResult":{"cniVersion":"1.0.0","ips":[]}}"#;
        let e = run(&env("ADD"), conf).unwrap_err();
        assert_eq!(e.code, 100);
        assert!(e.msg.contains("/nonexistent/sluice.sock"), "{e}");
        let open = br#"{"cniVersion":"1.0.0","failOpen":true,"control":"/nonexistent/s.sock","prevResult":{"cniVersion":"1.0.0","ips":[]}}"#;
        let out = run(&env("ADD"), open).unwrap();
        assert_eq!(out.stdout, r#"{"cniVersion":"1.0.0","ips":[]}"#);
        assert_eq!(out.warnings.len(), 1);
        // DEL never blocks pod deletion.
        assert!(run(&env("DEL"), conf).is_ok());
    }
}
