//! Pod lifecycle on top of the registry: CNI release by container id, and both halves of the
//! graceful-upgrade hand-over (the old agent exports its node-mode listening sockets, the new one
//! serves them).

use std::{net::SocketAddr, os::fd::OwnedFd, sync::Arc};

use tracing::{info, warn};

use super::{AgentError, BoundSockets, Pod, Registry};
use crate::{
    agent::protocol::{HandoverListener, HandoverPod},
    listener::{Direction, ListenerContext},
    netns::{Netns, NetnsError},
    pod_sockets::PodSockets,
    policy::{Enrollment, Mode},
};

/// Direction names on the wire.
const OUTBOUND: &str = "outbound";
const INBOUND: &str = "inbound";

impl Registry {
    /// CNI DEL: removes the pod enrolled with `container_id`, else the pod in `netns` if it is
    /// enrolled. Idempotent: nothing enrolled (or the netns already gone) is `Ok(None)`.
    /// Returns (cookie, entries removed, entries left) when a pod was removed.
    pub async fn release(
        &mut self,
        container_id: &str,
        netns: Option<&str>,
    ) -> Result<Option<(u64, usize, usize)>, AgentError> {
        let by_id = self
            .pods
            .values()
            .find(|p| {
                p.identity
                    .as_ref()
                    .is_some_and(|i| i.container_id == container_id)
            })
            .map(|p| p.netns_arg.clone());
        let target = match (by_id, netns) {
            (Some(arg), _) => arg,
            (None, Some(n)) if !n.is_empty() => n.to_string(),
            _ => return Ok(None),
        };
        match self.unenroll(&target).await {
            Ok(r) => Ok(Some(r)),
            Err(AgentError::NotEnrolled(_)) | Err(AgentError::Netns(NetnsError::Open { .. })) => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Old agent, upgrade step 1: pins the sk_lookup links for the new agent's load and
    /// returns every pod with duplicates of its node-mode listening sockets, 15001 v4/v6 and
    /// 15006 v4/v6, taken from the sockets the registry serves ([`ServedSockets::duplicates`]).
    /// Sidecar-mode pods go as policy only. Nothing stops: this agent keeps accepting until
    /// [`Registry::stop_accepting`].
    ///
    /// [`ServedSockets::duplicates`]: crate::pod_sockets::ServedSockets::duplicates
    pub fn export_handover(&self) -> Result<(Vec<HandoverPod>, Vec<OwnedFd>), AgentError> {
        self.datapath
            .pin_links_for_upgrade()
            .map_err(|source| AgentError::Bpf {
                netns: "(all)".into(),
                cookie: 0,
                source,
            })?;
        let mut pods = Vec::new();
        let mut fds = Vec::new();
        for (&cookie, pod) in &self.pods {
            let mut listeners = Vec::new();
            if let Some(served) = &pod.listeners {
                let dups = served.served.duplicates().map_err(|source| {
                    AgentError::Netns(NetnsError::Socket {
                        path: crate::netns::resolve(&pod.netns_arg),
                        op: "dup listeners".into(),
                        source,
                    })
                })?;
                for (addr, direction, fd) in dups {
                    listeners.push(HandoverListener {
                        addr: addr.to_string(),
                        direction: match direction {
                            Direction::Inbound => INBOUND,
                            Direction::Outbound => OUTBOUND,
                        }
                        .into(),
                        fd: fds.len(),
                    });
                    fds.push(fd);
                }
            }
            pods.push(HandoverPod {
                netns: pod.netns_arg.clone(),
                cookie,
                mode: pod.enrollment.mode.name().into(),
                pod: pod.identity.clone(),
                listeners,
            });
        }
        Ok((pods, fds))
    }

    /// Old agent, upgrade step 2: stops every accept loop (the sockets stay open in the new
    /// agent) and returns the outbound and inbound listener contexts, whose `active` counters
    /// tell when the connections still served here have ended.
    ///
    /// This only stops the accept loops: the 15006 sockets' entries in the inbound listener
    /// SockHash belong to the new agent now (the same kernel sockets, re-registered by it), so
    /// nothing here calls `remove_inbound_listener`.
    pub async fn stop_accepting(&mut self) -> Vec<Arc<ListenerContext>> {
        let mut ctxs = Vec::new();
        for pod in self.pods.values_mut() {
            if let Some(l) = pod.listeners.take() {
                ctxs.push(l.ctx.clone());
                ctxs.push(l.inbound_ctx.clone());
                l.close().await;
            }
        }
        ctxs
    }

    /// New agent: serves the pods an old agent handed over on the sockets it sent (`fds`,
    /// indexed by [`HandoverListener::fd`]), exactly like freshly enrolled node-mode pods: the
    /// 15006 sockets are registered with sk_lookup again and every socket is served by the
    /// agent's [`super::Handlers`] (the L7 engine with `--config`). Sidecar-mode pods come as
    /// policy only. The policy is read back from the pinned map. A pod whose netns or policy is
    /// gone is skipped (its sockets are closed). Returns how many pods were adopted.
    pub async fn adopt_handover(&mut self, pods: Vec<HandoverPod>, fds: Vec<OwnedFd>) -> usize {
        let mut fds: Vec<Option<OwnedFd>> = fds.into_iter().map(Some).collect();
        let mut adopted = 0;
        for hp in pods {
            let mut sockets = Vec::new();
            for l in &hp.listeners {
                let fd = fds.get_mut(l.fd).and_then(Option::take);
                match (fd, l.addr.parse::<SocketAddr>()) {
                    (Some(fd), Ok(addr)) => {
                        let direction = if l.direction == INBOUND {
                            Direction::Inbound
                        } else {
                            Direction::Outbound
                        };
                        sockets.push((addr, direction, fd))
                    }
                    _ => {
                        warn!(netns = %hp.netns, listener = ?l, "handed-over listener without a descriptor")
                    }
                }
            }
            match self.adopt_one(&hp, sockets).await {
                Ok(()) => adopted += 1,
                Err(e) => {
                    warn!(netns = %hp.netns, cookie = hp.cookie, error = %e, "cannot adopt handed-over pod")
                }
            }
        }
        adopted
    }

    async fn adopt_one(
        &mut self,
        hp: &HandoverPod,
        sockets: Vec<(SocketAddr, Direction, OwnedFd)>,
    ) -> Result<(), AgentError> {
        let bpf_err = |source| AgentError::Bpf {
            netns: hp.netns.clone(),
            cookie: hp.cookie,
            source,
        };
        let policy = self
            .datapath
            .policy(hp.cookie)
            .map_err(bpf_err)?
            .ok_or_else(|| AgentError::NotEnrolled(hp.netns.clone()))?;
        let mode: Mode = hp.mode.parse()?;
        let netns = Arc::new(Netns::open(&hp.netns)?);
        if mode != Mode::Off {
            // Normally adopted from the pin the old agent made; made again if it is missing.
            self.datapath
                .attach_inbound(hp.cookie, &*netns)
                .map_err(bpf_err)?;
        }
        let listeners = if mode == Mode::Node && !sockets.is_empty() {
            let sockets = PodSockets::adopt(sockets).map_err(|source| NetnsError::Socket {
                path: netns.path().to_path_buf(),
                op: "adopt listeners".into(),
                source,
            })?;
            let bound = BoundSockets {
                netns_arg: hp.netns.clone(),
                netns: netns.clone(),
                sockets,
            };
            Some(
                self.register_and_serve(
                    hp.cookie,
                    bound,
                    hp.pod.as_ref(),
                    policy.flags & sluice_common::flags::L4_ONLY != 0,
                )
                .await?,
            )
        } else {
            None
        };
        info!(netns = %hp.netns, cookie = hp.cookie, mode = mode.name(), listeners = listeners.as_ref().map_or(0, |l| l.served.addrs().len()), "adopted pod from the old agent");
        self.pods.insert(
            hp.cookie,
            Pod {
                netns_arg: hp.netns.clone(),
                enrollment: Enrollment { mode, policy },
                listeners,
                identity: hp.pod.clone(),
            },
        );
        Ok(())
    }
}
