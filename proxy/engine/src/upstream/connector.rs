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
    /// Its `extra_source_addresses` entry, of the other IP family.
    extra: Option<SocketAddr>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("factory", &self.factory.is_some())
            .field("source", &self.source)
            .field("extra", &self.extra)
            .finish()
    }
}

impl Connector {
    /// Sockets come from `factory`.
    pub fn with_factory(factory: SocketFactory) -> Self {
        Self {
            factory: Some(factory),
            source: None,
            extra: None,
        }
    }

    /// The same connector, binding every socket to `source` before connecting (to `extra`,
    /// of the other IP family, for a destination of that family).
    pub fn bound_to(mut self, source: SocketAddr, extra: Option<SocketAddr>) -> Self {
        self.source = Some(source);
        self.extra = extra;
        self
    }

    /// The source address for `addr`: the bound one of its family, else `source_address`.
    fn source_for(&self, addr: SocketAddr) -> Option<SocketAddr> {
        match self.extra {
            Some(e) if e.is_ipv4() == addr.is_ipv4() => Some(e),
            _ => self.source,
        }
    }

    /// Connects to `addr` (no timeout: callers wrap it in theirs).
    pub async fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let source = self.source_for(addr);
        let sock = match (&self.factory, source) {
            (None, None) => return TcpStream::connect(addr).await,
            (Some(f), _) => f(addr)?,
            (None, Some(_)) if addr.is_ipv4() => TcpSocket::new_v4()?,
            (None, Some(_)) => TcpSocket::new_v6()?,
        };
        // A socket the capture side already bound (its inbound passthrough source) keeps it.
        if let Some(src) = source {
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
        let c = Connector::default().bound_to(
            "127.0.0.6:0".parse().unwrap(),
            Some("[::1]:0".parse().unwrap()),
        );
        let (up, accepted) = tokio::join!(c.connect(dst), l.accept());
        let up = up.expect("connect");
        assert_eq!(up.local_addr().unwrap().ip().to_string(), "127.0.0.6");
        assert_eq!(accepted.unwrap().1.ip().to_string(), "127.0.0.6");
        // An IPv6 destination: the extra source address, of its family.
        let l6 = tokio::net::TcpListener::bind("[::1]:0")
            .await
            .expect("bind [::1] (IPv6 loopback)");
        let dst6 = l6.local_addr().expect("addr");
        let (up, accepted) = tokio::join!(c.connect(dst6), l6.accept());
        assert_eq!(
            up.expect("connect").local_addr().unwrap().ip().to_string(),
            "::1"
        );
        assert_eq!(accepted.unwrap().1.ip().to_string(), "::1");
    }
}
