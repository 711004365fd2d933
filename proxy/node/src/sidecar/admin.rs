//! The sidecar's own operator ports, as an Envoy sidecar has them: the admin on 127.0.0.1:15000
//! (`--admin-port`, with `--config`: the engine's admin on the pod's server, served by the port
//! server node mode uses, `crate::admin_port`) and `/healthz/ready` on 0.0.0.0:15021
//! (`--health-port`, the kubelet's readiness probe; in the default inbound excludes, so never
//! captured). Both are bound with the capture sockets, before privileges are dropped.
//!
//! The sidecar serves one pod, so the mutating paths act as in Envoy: `/quitquitquit` is the
//! engine's (SIGTERM to this process: the sidecar's normal shutdown), `/logging` the engine's
//! (this process's log filter), and `/drain_listeners` closes the capture sockets
//! ([`DrainRequest`], done by `sidecar::serve`), after which `/healthz/ready` answers 503.

use std::{
    io,
    net::{Ipv4Addr, SocketAddr, TcpListener},
    sync::Arc,
};

use http::{Method, Response};
use sluice_engine::{
    admin::{self, query},
    http::Body,
    server::Server,
};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::{
    admin_port::{self, AdminHandler, AdminPort},
    agent::health::Health,
    netns::bind_tcp_here,
    pod_sockets::ServedSockets,
};

/// Istio's readiness port, served by the sidecar (`--health-port`; 0 = none).
pub const DEFAULT_HEALTH_PORT: u16 = 15021;

/// What `/drain_listeners` asked for; only grows (a drain is not undone).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum DrainRequest {
    /// Nothing drained.
    None,
    /// `inboundonly`: the 15006 sockets.
    Inbound,
    /// Every capture socket.
    All,
}

/// The admin and health sockets, bound in the pod netns, not served yet.
#[derive(Debug, Default)]
pub struct Ports {
    admin: Option<TcpListener>,
    health: Option<TcpListener>,
}

impl Ports {
    /// Binds 127.0.0.1:`admin_port` and 0.0.0.0:`health_port` in the calling thread's netns
    /// (0 = that one not bound). The error names the address.
    pub fn bind_here(admin_port: u16, health_port: u16) -> Result<Self, (SocketAddr, io::Error)> {
        let bind = |ip: Ipv4Addr, port: u16| {
            let addr = SocketAddr::new(ip.into(), port);
            (port != 0)
                .then(|| bind_tcp_here(addr).map_err(|e| (addr, e)))
                .transpose()
        };
        Ok(Self {
            admin: bind(Ipv4Addr::LOCALHOST, admin_port)?,
            health: bind(Ipv4Addr::UNSPECIFIED, health_port)?,
        })
    }
}

/// The admin port and health endpoint being served, and the drain requests of the admin.
pub struct Operator {
    admin: Option<AdminPort>,
    health: Option<Health>,
    drains: watch::Receiver<DrainRequest>,
}

impl Operator {
    /// Serves `ports`: health not ready yet; the admin on `engine`'s admin (no engine, no
    /// admin: without `--config` there is nothing to dump). Needs a tokio runtime.
    pub fn start(ports: Ports, engine: Option<Arc<Server>>, netns: &str) -> io::Result<Self> {
        let (tx, drains) = watch::channel(DrainRequest::None);
        let health = ports.health.map(Health::serve).transpose()?;
        let admin = match (ports.admin, engine) {
            (Some(l), Some(server)) => {
                let handler = Arc::new(SidecarAdmin { server, drains: tx });
                let port = AdminPort::serve(l, handler, netns.to_string())?;
                info!(addr = %port.addr(), "admin listening");
                Some(port)
            }
            (Some(_), None) => {
                warn!("no admin port: no L7 engine (the config has no virtualOutbound or virtualInbound listener)");
                None
            }
            (None, _) => None,
        };
        Ok(Self {
            admin,
            health,
            drains,
        })
    }

    /// Flips `/healthz/ready`.
    pub fn set_ready(&self, ready: bool) {
        if let Some(h) = &self.health {
            h.set_ready(ready);
        }
    }

    /// Waits for the next `/drain_listeners` (never completes without an admin port).
    pub async fn drain_requested(&mut self) -> DrainRequest {
        if self.drains.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        *self.drains.borrow_and_update()
    }

    /// Closes both ports (the next owner of the pod can bind them).
    pub async fn close(self) {
        if let Some(a) = self.admin {
            a.close().await;
        }
        drop(self.health);
    }
}

/// The sidecar's admin handler: the engine's, with `/drain_listeners` on the capture sockets.
struct SidecarAdmin {
    server: Arc<Server>,
    drains: watch::Sender<DrainRequest>,
}

impl AdminHandler for SidecarAdmin {
    fn respond(&self, method: &Method, path: &str, query: &str) -> Response<Body> {
        if matches!(path, "/healthcheck/fail" | "/healthcheck/ok") && method == Method::POST {
            return admin_port::text(
                501,
                format!(
                    "{path} is not supported in sidecar mode: the pod's inbound and outbound \
                     sides are separate servers\n"
                ),
            );
        }
        if path != "/drain_listeners" || method != Method::POST {
            return admin::respond(&self.server, method, path, query);
        }
        request_drain(&self.drains, query);
        admin_port::text(200, "OK\n".into())
    }
}

/// Records a `/drain_listeners?query` (`inboundonly`, else all); a smaller drain than one
/// already asked for changes nothing. Returns whether the serving loop is woken.
fn request_drain(drains: &watch::Sender<DrainRequest>, query: &str) -> bool {
    let req = if query::params(query).any(|(k, _)| k == "inboundonly") {
        DrainRequest::Inbound
    } else {
        DrainRequest::All
    };
    drains.send_if_modified(|cur| {
        let grow = req > *cur;
        if grow {
            *cur = req;
        }
        grow
    })
}

/// Acts on a `/drain_listeners`: not ready from now on, and the capture sockets it names close
/// (their open connections run on). The process keeps serving the admin until it is stopped.
pub async fn drain(served: &mut ServedSockets, operator: &Operator, req: DrainRequest) {
    operator.set_ready(false);
    let inbound_only = req == DrainRequest::Inbound;
    let closed = served.stop(inbound_only).await;
    info!(closed, inbound_only, "admin: capture listeners drained");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_requests_only_grow() {
        let (tx, rx) = watch::channel(DrainRequest::None);
        assert!(request_drain(&tx, "inboundonly&graceful"));
        assert_eq!(*rx.borrow(), DrainRequest::Inbound);
        assert!(!request_drain(&tx, "inboundonly"), "the same drain again");
        assert!(request_drain(&tx, ""));
        assert_eq!(*rx.borrow(), DrainRequest::All);
        assert!(!request_drain(&tx, "inboundonly"), "all already closed");
        assert_eq!(*rx.borrow(), DrainRequest::All);
    }
}
