//! How the L7 runtime opens upstream TCP sockets: plain `connect()` in the process's own netns
//! (`sluice proxy`), or through a socket factory the capture side supplies (the node agent makes
//! each pod's upstream sockets inside that pod's netns, marked with `PROXY_MARK`).

use std::{io, net::SocketAddr, sync::Arc};

use tokio::net::{TcpSocket, TcpStream};

/// Makes an unconnected socket for a destination (in the right netns, marked, maybe bound).
pub type SocketFactory = Arc<dyn Fn(SocketAddr) -> io::Result<TcpSocket> + Send + Sync>;

/// Opens upstream connections for clusters, tcp_proxy, health checks and the passthrough.
#[derive(Clone, Default)]
pub struct Connector {
    factory: Option<SocketFactory>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("factory", &self.factory.is_some())
            .finish()
    }
}

impl Connector {
    /// Sockets come from `factory`.
    pub fn with_factory(factory: SocketFactory) -> Self {
        Self {
            factory: Some(factory),
        }
    }

    /// Connects to `addr` (no timeout: callers wrap it in theirs).
    pub async fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        match &self.factory {
            None => TcpStream::connect(addr).await,
            Some(f) => f(addr)?.connect(addr).await,
        }
    }
}
