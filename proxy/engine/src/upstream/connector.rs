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
    /// A cluster's `upstream_bind_config.source_address`.
    source: Option<SocketAddr>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("factory", &self.factory.is_some())
            .field("source", &self.source)
            .finish()
    }
}

impl Connector {
    /// Sockets come from `factory`.
    pub fn with_factory(factory: SocketFactory) -> Self {
        Self {
            factory: Some(factory),
            source: None,
        }
    }

    /// The same connector, binding every socket to `source` before connecting.
    pub fn bound_to(mut self, source: SocketAddr) -> Self {
        self.source = Some(source);
        self
    }

    /// Connects to `addr` (no timeout: callers wrap it in theirs).
    pub async fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let sock = match (&self.factory, self.source) {
            (None, None) => return TcpStream::connect(addr).await,
            (Some(f), _) => f(addr)?,
            (None, Some(_)) if addr.is_ipv4() => TcpSocket::new_v4()?,
            (None, Some(_)) => TcpSocket::new_v6()?,
        };
        // A socket the capture side already bound (its inbound passthrough source) keeps it.
        if let Some(src) = self.source {
            if sock.local_addr().is_ok_and(|a| a.ip().is_unspecified()) {
                sock.bind(src)?;
            }
        }
        sock.connect(addr).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bound_connector_connects_from_its_source_address() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let dst = l.local_addr().expect("addr");
        let c = Connector::default().bound_to("127.0.0.6:0".parse().unwrap());
        let (up, accepted) = tokio::join!(c.connect(dst), l.accept());
        let up = up.expect("connect");
        assert_eq!(up.local_addr().unwrap().ip().to_string(), "127.0.0.6");
        assert_eq!(accepted.unwrap().1.ip().to_string(), "127.0.0.6");
    }
}
