//! Each node-mode pod's Envoy admin, served by the agent: the engine's admin handler
//! (`sluice_engine::admin::respond`) run on the pod's own live [`Server`], reached through the
//! control socket (`{"op":"admin",...}`, [`control`]) and on 127.0.0.1:15000 inside the pod's
//! netns ([`start_port`], on the port server shared with the sidecar: `crate::admin_port`), as
//! an Envoy sidecar's admin is. One agent serves every pod of the node, so the paths whose
//! effect would reach beyond the pod are refused ([`refusal`]).

use std::sync::Arc;

use http::{header, Method, Response};
use http_body_util::BodyExt as _;
use sluice_engine::{admin, http::Body, server::Server};
use tokio::sync::Mutex;

use super::{
    protocol::{AdminRequest, Response as ControlResponse},
    registry::{PodRef, Registry},
};
pub use crate::admin_port::AdminPort;
use crate::{
    admin_port::{self, AdminHandler},
    l7capture::PodServers,
    netns::{Netns, NetnsError},
};

/// Port of the per-pod admin inside each node-mode pod (`--pod-admin-port`; 0 = none), Envoy's.
pub const DEFAULT_POD_ADMIN_PORT: u16 = admin_port::DEFAULT_ADMIN_PORT;
/// Largest admin body the control socket carries (a bigger dump is an error that says how to
/// narrow it); the in-pod port has no such bound, like Envoy's admin.
pub const MAX_ADMIN_BODY: usize = 16 << 20;

/// Where an admin request came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The agent's root-only control socket (node operator).
    Control,
    /// 127.0.0.1:15000 inside the pod (any process of that pod).
    PodPort,
}

/// Why a request is refused in node mode, as (status, message); `None` lets the engine answer.
/// Only POSTs are looked at: a GET of a mutating path gets the engine's (Envoy's) 405.
/// - `/quitquitquit`: the agent serves every pod of the node; it does not exit for one.
/// - `/drain_listeners`: a pod's capture listeners belong to the agent's registry, not to the
///   pod's engine server (not supported yet; `sluice enroll --mode off` stops capture).
/// - `/healthcheck/fail` / `/healthcheck/ok`: the pod's two sides are separate servers (not
///   supported yet).
/// - `/logging` from inside the pod: the log level is the agent's, for every pod; the
///   control socket (root) may change it.
pub fn refusal(method: &Method, path: &str, origin: Origin, pod: &str) -> Option<(u16, String)> {
    if method != Method::POST {
        return None;
    }
    match path {
        "/quitquitquit" => Some((
            403,
            format!(
                "pod {pod}: /quitquitquit is refused in node mode: the agent serves every pod \
                 of the node (unenroll the pod, or stop the agent)"
            ),
        )),
        "/drain_listeners" => Some((
            501,
            format!(
                "pod {pod}: /drain_listeners is not supported in node mode: the pod's capture \
                 listeners belong to the agent (`sluice enroll --mode off` stops capture)"
            ),
        )),
        "/healthcheck/fail" | "/healthcheck/ok" => Some((
            501,
            format!(
                "pod {pod}: {path} is not supported in node mode: the pod's inbound and \
                 outbound sides are served by separate servers of the agent"
            ),
        )),
        "/logging" if origin == Origin::PodPort => Some((
            403,
            format!(
                "pod {pod}: /logging changes the agent's log level for every pod; it is served \
                 on the agent's control socket only"
            ),
        )),
        _ => None,
    }
}

/// The server whose admin stands for the pod: `virtualOutbound`'s, else `virtualInbound`'s.
/// Both run the same config version (reloads apply to both), so the dumps are the same; their
/// counters (`/stats`, `/clusters`) are each server's own.
pub fn admin_server(servers: &PodServers) -> Option<Arc<Server>> {
    servers.outbound.clone().or_else(|| servers.inbound.clone())
}

/// The admin's answer for `pod` (node-mode refusals first, then the engine's handler).
fn respond(
    server: &Server,
    pod: &str,
    method: &Method,
    path: &str,
    query: &str,
    origin: Origin,
) -> Response<Body> {
    match refusal(method, path, origin, pod) {
        Some((status, message)) => admin_port::text(status, message + "\n"),
        None => admin::respond(server, method, path, query),
    }
}

/// The control op: finds the pod's server under the registry lock, releases the lock, then
/// runs the admin handler (a dump never holds the registry). Errors name the pod.
pub async fn control(req: AdminRequest, registry: &Mutex<Registry>) -> ControlResponse {
    let error = |message: String| ControlResponse::Error { message };
    let (target, method) = match parse(&req) {
        Ok(t) => t,
        Err(message) => return error(message),
    };
    let found = registry.lock().await.admin_server(&target);
    let (pod, server) = match found {
        Ok(f) => f,
        Err(e) => return error(e.to_string()),
    };
    let (path, query) = req.path.split_once('?').unwrap_or((&req.path, ""));
    let resp = respond(&server, &pod, &method, path, query, Origin::Control);
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = match resp.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return error(format!("pod {pod}: {method} {}: {e}", req.path)),
    };
    if body.len() > MAX_ADMIN_BODY {
        return error(format!(
            "pod {pod}: {method} {}: the answer is {} bytes, more than the control socket \
             carries ({MAX_ADMIN_BODY}); narrow it with resource=, name_regex= or mask=",
            req.path,
            body.len()
        ));
    }
    ControlResponse::Admin {
        pod,
        status,
        content_type,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Checks a request before the registry is asked: exactly one of `pod` and `netns`, an HTTP
/// method, a path starting with `/`. The error names the pod as given.
fn parse(req: &AdminRequest) -> Result<(PodRef<'_>, Method), String> {
    let (target, name) = match (&req.pod, &req.netns) {
        (Some(p), None) => (PodRef::Name(p), p),
        (None, Some(n)) => (PodRef::Netns(n), n),
        _ => return Err("admin: give exactly one of \"pod\" (NAMESPACE/NAME) or \"netns\"".into()),
    };
    let method = Method::from_bytes(req.method.as_bytes())
        .map_err(|_| format!("pod {name}: {:?} is not an HTTP method", req.method))?;
    if !req.path.starts_with('/') {
        return Err(format!(
            "pod {name}: admin path {:?} must start with /",
            req.path
        ));
    }
    Ok((target, method))
}

/// The node-mode handler of a pod's admin port: the node-mode refusals (as from inside the
/// pod), then the engine's answer on the pod's server.
struct PodPortAdmin {
    server: Arc<Server>,
    pod: String,
}

impl AdminHandler for PodPortAdmin {
    fn respond(&self, method: &Method, path: &str, query: &str) -> Response<Body> {
        respond(
            &self.server,
            &self.pod,
            method,
            path,
            query,
            Origin::PodPort,
        )
    }
}

/// Binds 127.0.0.1:`port` in `netns` (`SO_REUSEPORT`: an upgrading agent binds its own beside
/// the old one's) and serves `server`'s admin for `pod` on it.
pub fn start_port(
    netns: &Netns,
    port: u16,
    server: Arc<Server>,
    pod: String,
) -> Result<AdminPort, NetnsError> {
    let handler = Arc::new(PodPortAdmin {
        server,
        pod: pod.clone(),
    });
    AdminPort::start_in(netns, port, handler, pod)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_checked_before_the_registry() {
        let req = |pod: Option<&str>, netns: Option<&str>, method: &str, path: &str| {
            let r = AdminRequest {
                pod: pod.map(Into::into),
                netns: netns.map(Into::into),
                method: method.into(),
                path: path.into(),
            };
            parse(&r).map(|(t, m)| (format!("{t:?}"), m))
        };
        assert_eq!(
            req(Some("ns/a"), None, "GET", "/ready"),
            Ok(("Name(\"ns/a\")".into(), Method::GET))
        );
        assert_eq!(
            req(None, Some("pod1"), "POST", "/logging?level=info"),
            Ok(("Netns(\"pod1\")".into(), Method::POST))
        );
        for (pod, netns) in [(None, None), (Some("ns/a"), Some("pod1"))] {
            let e = req(pod, netns, "GET", "/ready").unwrap_err();
            assert!(e.contains("exactly one of"), "{e}");
        }
        let e = req(Some("ns/a"), None, "GE T", "/ready").unwrap_err();
        assert_eq!(e, r#"pod ns/a: "GE T" is not an HTTP method"#);
        let e = req(None, Some("pod1"), "GET", "config_dump").unwrap_err();
        assert_eq!(e, r#"pod pod1: admin path "config_dump" must start with /"#);
    }

    #[test]
    fn node_mode_refuses_process_wide_posts() {
        let post = Method::POST;
        let quit = refusal(&post, "/quitquitquit", Origin::Control, "ns/a").unwrap();
        assert_eq!(quit.0, 403);
        assert!(
            quit.1.contains("pod ns/a") && quit.1.contains("every pod"),
            "{}",
            quit.1
        );
        assert_eq!(
            refusal(&post, "/drain_listeners", Origin::PodPort, "p")
                .unwrap()
                .0,
            501
        );
        let log = refusal(&post, "/logging", Origin::PodPort, "p").unwrap();
        assert!(log.1.contains("control socket"), "{}", log.1);
        // The operator may change the agent's level; GETs are the engine's (405 or a read).
        assert_eq!(refusal(&post, "/logging", Origin::Control, "p"), None);
        assert_eq!(
            refusal(&Method::GET, "/quitquitquit", Origin::PodPort, "p"),
            None
        );
        assert_eq!(
            refusal(&Method::GET, "/config_dump", Origin::PodPort, "p"),
            None
        );
    }
}
