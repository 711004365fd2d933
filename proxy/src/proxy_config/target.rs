//! What a TARGET of `sluice proxy-config` (and of every command reading an admin through
//! `fetch::get_json`) names: an admin address (`HOST:PORT`), a node-mode pod by the identity
//! it was enrolled with (`NAMESPACE/NAME`), or a pod's netns (a name under /run/netns or a
//! path). Pods are asked through the node agent's control socket (`{"op":"admin"}`), at
//! `$SLUICE_CONTROL` or /run/sluice/agent.sock.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context as _};
use serde_json::Value;
use sluice_node::agent::protocol::{self, AdminRequest, Request, Response, DEFAULT_CONTROL};

/// Environment variable naming the agent's control socket.
pub const CONTROL_ENV: &str = "SLUICE_CONTROL";

/// A parsed TARGET.
#[derive(Debug, PartialEq, Eq)]
pub enum Target<'a> {
    /// `HOST:PORT` of an admin listener (a Kubernetes name or a netns name has no `:`).
    Admin(&'a str),
    /// `NAMESPACE/NAME` of a pod enrolled with that identity.
    Pod(&'a str),
    /// A netns name (no `/`) or path (starting with `/` or `.`).
    Netns(&'a str),
}

impl<'a> Target<'a> {
    /// Classifies `s` (see [`Target`]).
    pub fn parse(s: &'a str) -> Self {
        if s.contains(':') {
            Target::Admin(s)
        } else if s.starts_with('/') || s.starts_with('.') {
            Target::Netns(s)
        } else if s.contains('/') {
            Target::Pod(s)
        } else {
            Target::Netns(s)
        }
    }
}

/// The agent's control socket: `$SLUICE_CONTROL`, else the default path.
pub fn control_path() -> PathBuf {
    std::env::var_os(CONTROL_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONTROL))
}

/// GETs `path` from a pod's admin through the agent and parses the JSON body.
pub fn get_json_from_agent(target: &Target, path: &str) -> anyhow::Result<Value> {
    let (pod, netns, hint) = match *target {
        Target::Pod(p) => (Some(p.to_string()), None, ""),
        Target::Netns(n) => (
            None,
            Some(n.to_string()),
            " (a TARGET without ':' or '/' is a netns name; an admin address is HOST:PORT)",
        ),
        Target::Admin(a) => bail!("{a} is an admin address, not a pod"),
    };
    let control = control_path();
    let req = Request::Admin(AdminRequest {
        pod,
        netns,
        method: "GET".into(),
        path: path.into(),
    });
    let ctl = control.display();
    let answer = protocol::call(&control, &req)
        .map_err(|e| anyhow!("asking the node agent (${CONTROL_ENV}) for a pod's admin: {e}"))?;
    match answer {
        Response::Admin {
            pod, status, body, ..
        } => {
            if status != 200 {
                bail!(
                    "GET {path} from pod {pod}: status {status}: {}",
                    body.trim()
                );
            }
            serde_json::from_str(&body)
                .with_context(|| format!("GET {path} from pod {pod}: not JSON"))
        }
        Response::Error { message } => bail!("agent at {ctl}: {message}{hint}"),
        other => bail!("agent at {ctl}: unexpected answer {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_kinds() {
        assert_eq!(
            Target::parse("127.0.0.1:15000"),
            Target::Admin("127.0.0.1:15000")
        );
        assert_eq!(
            Target::parse("localhost:15000"),
            Target::Admin("localhost:15000")
        );
        assert_eq!(Target::parse("[::1]:15000"), Target::Admin("[::1]:15000"));
        assert_eq!(
            Target::parse("default/notebook"),
            Target::Pod("default/notebook")
        );
        assert_eq!(Target::parse("pod-a"), Target::Netns("pod-a"));
        assert_eq!(
            Target::parse("/run/netns/pod-a"),
            Target::Netns("/run/netns/pod-a")
        );
        assert_eq!(Target::parse("./ns"), Target::Netns("./ns"));
    }
}
