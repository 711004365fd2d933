//! Finding a pod's engine server for its admin: by the identity the CNI plugin enrolled it
//! with (`NAMESPACE/NAME`) or by its netns (a name under /run/netns or a path).

use std::sync::Arc;

use sluice_engine::server::Server;

use super::{AgentError, Pod, Registry};
use crate::{netns::Netns, policy::Mode};

/// Which pod an admin request is for.
#[derive(Clone, Copy, Debug)]
pub enum PodRef<'a> {
    /// `NAMESPACE/NAME` from the pod's enrollment (CNI).
    Name(&'a str),
    /// Netns name or path.
    Netns(&'a str),
}

impl Registry {
    /// The pod's label (`NAMESPACE/NAME` when known, else its netns) and the engine server
    /// whose admin answers for it, cloned out so the caller can release the registry lock.
    pub fn admin_server(&self, target: &PodRef) -> Result<(String, Arc<Server>), AgentError> {
        let (cookie, pod) = self.find(target)?;
        let label = match &pod.identity {
            Some(i) => match (&i.pod_namespace, &i.pod_name) {
                (Some(ns), Some(name)) => format!("{ns}/{name}"),
                _ => pod.netns_arg.clone(),
            },
            None => pod.netns_arg.clone(),
        };
        if pod.enrollment.mode != Mode::Node {
            return Err(AgentError::NoEngine {
                pod: label,
                reason: format!(
                    "mode {}: the agent serves the admin of node-mode pods only",
                    pod.enrollment.mode.name()
                ),
            });
        }
        let no_engine = |reason: &str| AgentError::NoEngine {
            pod: label.clone(),
            reason: reason.into(),
        };
        if self.handlers.l7.is_none() {
            return Err(no_engine("agent runs without --config"));
        }
        let servers = self
            .pod_servers(cookie)
            .ok_or_else(|| no_engine("its listeners are not served by the engine"))?;
        let server = crate::agent::pod_admin::admin_server(servers).ok_or_else(|| {
            no_engine("the config has neither a virtualOutbound nor a virtualInbound listener")
        })?;
        Ok((label, server))
    }

    fn find(&self, target: &PodRef) -> Result<(u64, &Pod), AgentError> {
        let found = match *target {
            PodRef::Name(name) => {
                let (ns, n) = name.split_once('/').unwrap_or(("", name));
                self.pods.iter().find(|(_, p)| {
                    p.identity.as_ref().is_some_and(|i| {
                        i.pod_namespace.as_deref() == Some(ns) && i.pod_name.as_deref() == Some(n)
                    })
                })
            }
            PodRef::Netns(arg) => {
                let path = crate::netns::resolve(arg);
                let by_path = self
                    .pods
                    .iter()
                    .find(|(_, p)| crate::netns::resolve(&p.netns_arg) == path);
                // The same netns under another name: its cookie decides.
                by_path.or_else(|| {
                    let cookie = Netns::open(arg).and_then(|n| n.cookie()).ok()?;
                    self.pods.get_key_value(&cookie)
                })
            }
        };
        let name = match *target {
            PodRef::Name(n) => n.to_string(),
            PodRef::Netns(n) => format!("in netns {n}"),
        };
        found.map(|(c, p)| (*c, p)).ok_or(AgentError::NoPod(name))
    }
}
