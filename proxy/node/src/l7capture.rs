//! The L7 engine behind the capture listeners: `sluice agent --config envoy.yaml` and
//! `sluice sidecar --config envoy.yaml` hand every connection accepted on 15001 / 15006 to the
//! Envoy-style [`Server`] as the listener named like Istio's: [`OUTBOUND_LISTENER`]
//! (`virtualOutbound`) and [`INBOUND_LISTENER`] (`virtualInbound`), with the original destination.
//!
//! Upstream sockets must be made inside the pod's netns and carry `PROXY_MARK` (or eBPF would
//! capture the proxy's own connections), so each pod gets its own [`Server`] instances whose
//! [`Connector`] is the pod's [`UpstreamFactory`]: one for outbound, one for inbound (whose
//! sockets are bound to 127.0.0.6 / ::6 like Envoy's inbound `upstream_bind_config`, the source
//! sk_lookup never captures). Per-pod servers also keep connection pools per pod: a pooled
//! connection opened from pod A's netns is never reused for pod B. A config without a
//! `virtualInbound` (or `virtualOutbound`) listener keeps the TCP passthrough for that direction.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    sync::Arc,
};

use tracing::warn;

use sluice_engine::{
    config,
    server::{ConnObserver, Server, ServerError, StartOptions},
    upstream::connector::Connector,
};

use crate::{
    inbound::{InboundPassthrough, PASSTHROUGH_SRC_V4, PASSTHROUGH_SRC_V6},
    listener::{Accepted, ConnectionHandler, HandlerFuture},
    upstream_factory::UpstreamFactory,
};

/// Listener name that serves the outbound capture listener (15001), as in Istio.
pub const OUTBOUND_LISTENER: &str = "virtualOutbound";
/// Listener name that serves the inbound capture listener (15006), as in Istio.
pub const INBOUND_LISTENER: &str = "virtualInbound";

/// A validated Envoy bootstrap for the capture listeners.
#[derive(Debug, Clone)]
pub struct L7Config {
    bootstrap: config::Bootstrap,
    source: Arc<serde_json::Value>,
    /// The file it came from (None: no file, [`L7Config::dynamic_only`]).
    path: Option<PathBuf>,
    /// Listeners come later from a per-pod source (xDS): both servers start even when this
    /// config has no `virtualOutbound` / `virtualInbound` listener.
    dynamic: bool,
}

/// The two handlers of one pod, and the engine servers behind them.
#[derive(Clone)]
pub struct PodHandlers {
    /// For the outbound listener.
    pub outbound: Arc<dyn ConnectionHandler>,
    /// For the inbound listener.
    pub inbound: Arc<dyn ConnectionHandler>,
    /// The pod's own engine servers (kept by the agent's per-pod record, so a config can be
    /// pushed to one pod and read back).
    pub servers: PodServers,
}

/// One pod's L7 engine servers: `virtualOutbound` and `virtualInbound` (None where the config
/// has no such listener and the TCP passthrough serves that direction).
#[derive(Clone, Debug, Default)]
pub struct PodServers {
    /// Serves the outbound capture listener (upstream sockets from the pod, marked).
    pub outbound: Option<Arc<Server>>,
    /// Serves the inbound capture listener (upstream sockets bound to 127.0.0.6 / ::6).
    pub inbound: Option<Arc<Server>>,
}

impl L7Config {
    /// Loads and validates `path` (the error names the field).
    pub fn load(path: &Path) -> Result<Self, config::ConfigError> {
        Ok(Self {
            bootstrap: config::load_file(path)?,
            source: Arc::new(sluice_engine::server::source_json(path)),
            path: Some(path.to_path_buf()),
            dynamic: false,
        })
    }

    /// No file: `bootstrap` (e.g. an ADS bootstrap without listeners, validated by the caller)
    /// starts every pod's servers, whose listeners come from the per-pod source only.
    pub fn dynamic_only(bootstrap: config::Bootstrap, source: serde_json::Value) -> Self {
        let source = Arc::new(source);
        Self {
            bootstrap,
            source,
            path: None,
            dynamic: true,
        }
    }

    /// Both servers of every pod start even without a `virtualOutbound` / `virtualInbound`
    /// listener here: a per-pod source (xDS) brings them.
    pub fn with_dynamic_listeners(mut self) -> Self {
        self.dynamic = true;
        self
    }

    /// The file it came from (None for [`L7Config::dynamic_only`]).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The bootstrap document as read (JSON; `Null` when the file is not YAML/JSON text): the
    /// base a per-pod source adds its resources to.
    pub fn source(&self) -> &serde_json::Value {
        &self.source
    }

    /// Gives a pod's running servers this config through [`Server::apply`] (validated whole,
    /// swapped atomically); a server that refuses it keeps serving its running version. The
    /// pod's handlers keep their shape: a listener the new config drops stops being served
    /// by the engine, it does not fall back to the passthrough.
    pub async fn apply_to(&self, servers: &PodServers) -> Result<(), ServerError> {
        for s in [&servers.outbound, &servers.inbound].into_iter().flatten() {
            s.apply(self.bootstrap.clone(), self.source.clone()).await?;
        }
        Ok(())
    }

    fn has_listener(&self, name: &str) -> bool {
        self.dynamic
            || self
                .bootstrap
                .listeners
                .iter()
                .any(|l| l.name.as_str() == name)
    }

    /// Starts this pod's servers (no listener binding, no admin) whose upstream sockets come from
    /// `upstream`, and returns the handlers for its listeners. `outbound` is used when the config
    /// has no `virtualOutbound` listener.
    pub async fn pod_handlers(
        &self,
        upstream: &UpstreamFactory,
        outbound: Arc<dyn ConnectionHandler>,
    ) -> Result<PodHandlers, ServerError> {
        let mut servers = PodServers::default();
        let out: Arc<dyn ConnectionHandler> = if self.has_listener(OUTBOUND_LISTENER) {
            let f = upstream.clone();
            let connector = Connector::with_factory(Arc::new(move |dst| f.socket(dst, None)));
            let server = self.start(connector).await?;
            servers.outbound = Some(server.clone());
            Arc::new(L7Handler {
                server,
                listener: OUTBOUND_LISTENER,
            })
        } else {
            outbound
        };
        let inb: Arc<dyn ConnectionHandler> = if self.has_listener(INBOUND_LISTENER) {
            let f = upstream.clone();
            let connector = Connector::with_factory(Arc::new(move |dst: SocketAddr| {
                let src: IpAddr = match dst {
                    SocketAddr::V4(_) => PASSTHROUGH_SRC_V4.into(),
                    SocketAddr::V6(_) => PASSTHROUGH_SRC_V6.into(),
                };
                f.socket(dst, Some(SocketAddr::new(src, 0)))
            }));
            let server = self.start(connector).await?;
            servers.inbound = Some(server.clone());
            Arc::new(L7Handler {
                server,
                listener: INBOUND_LISTENER,
            })
        } else {
            Arc::new(InboundPassthrough)
        };
        Ok(PodHandlers {
            outbound: out,
            inbound: inb,
            servers,
        })
    }

    async fn start(&self, connector: Connector) -> Result<Arc<Server>, ServerError> {
        Server::start_with(
            self.bootstrap.clone(),
            self.source.clone(),
            None,
            StartOptions {
                bind_listeners: false,
                admin: false,
                connector,
                // The agent has no --drain-time-s: Envoy's default.
                ..StartOptions::default()
            },
        )
        .await
    }
}

/// Hands accepted connections to a [`Server`] listener.
struct L7Handler {
    server: Arc<Server>,
    listener: &'static str,
}

impl ConnectionHandler for L7Handler {
    fn handle(&self, conn: Accepted) -> HandlerFuture {
        let server = self.server.clone();
        let listener = self.listener;
        Box::pin(async move {
            // The capture listener already resolved the destination and opened the span; the
            // engine reports bytes and upstream failures into the listener's counters.
            let observer: Arc<dyn ConnObserver> = conn.ctx.clone();
            if let Err(e) = server
                .serve_captured(listener, conn.stream, conn.orig_dst, observer)
                .await
            {
                warn!(error = %e, listener, "L7 engine refused the connection");
            }
            Ok(())
        })
    }
}
