//! Listeners: bind, accept, find the original destination, detect the protocol on captured
//! listeners, choose the filter chain and hand the connection to HTTP or TCP proxying.

use std::{net::SocketAddr, os::fd::AsFd, sync::Arc, time::Duration};

use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument;

use super::{ListenerSlot, Server};
use crate::{
    config, detect,
    http::{self, ConnInfo, Hcm},
    tcp_proxy::{self, TcpProxy},
    upstream::connector::Connector,
};

/// Backlog of every listener socket.
const BACKLOG: u32 = 1024;
/// Connect timeout of the passthrough used for non-HTTP traffic on a captured listener without a
/// tcp_proxy chain.
const PASSTHROUGH_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A filter chain's runtime.
#[derive(Debug, Clone)]
pub enum ChainRt {
    /// http_connection_manager.
    Http(Arc<Hcm>),
    /// tcp_proxy.
    Tcp(Arc<TcpProxy>),
}

/// A listener of one config version.
#[derive(Debug)]
pub struct ListenerRt {
    /// The config block.
    pub cfg: config::Listener,
    /// `filter_chains[]` resolved, same order.
    pub chains: Vec<ChainRt>,
}

impl ListenerRt {
    /// Whether connections arrive redirected (iptables/eBPF) so SO_ORIGINAL_DST is meaningful.
    pub fn captured(&self) -> bool {
        self.cfg.use_original_dst || self.cfg.has_original_dst_filter()
    }

    fn chain_index(&self, port: u16) -> Option<usize> {
        let c = self.cfg.select_chain(port)?;
        self.cfg
            .filter_chains
            .iter()
            .position(|x| std::ptr::eq(x, c))
    }
}

/// Why an accepted connection could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// No listener with that name in the running config.
    #[error("no listener named {0}")]
    NoListener(String),
}

/// Binds a listener socket (SO_REUSEADDR) on `addr`.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let sock = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    sock.listen(BACKLOG)
}

/// Accepts until the task is aborted (listener removed).
pub async fn accept_loop(server: Arc<Server>, slot: Arc<ListenerSlot>, l: TcpListener) {
    loop {
        match l.accept().await {
            Ok((stream, _)) => {
                let server = server.clone();
                let slot = slot.clone();
                tokio::spawn(async move { handle_connection(server, slot, stream, None).await });
            }
            Err(e) => crate::accept::failed(&e).await,
        }
    }
}

/// SO_ORIGINAL_DST (IPv4) / IP6T_SO_ORIGINAL_DST (IPv6) of an accepted socket.
pub fn original_dst(stream: &TcpStream) -> Option<SocketAddr> {
    use nix::sys::socket::{getsockopt, sockopt};
    let fd = stream.as_fd();
    if let Ok(sin) = getsockopt(&fd, sockopt::OriginalDst) {
        let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
        return Some(SocketAddr::new(ip.into(), u16::from_be(sin.sin_port)));
    }
    if let Ok(sin6) = getsockopt(&fd, sockopt::Ip6tOriginalDst) {
        let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
        return Some(SocketAddr::new(ip.into(), u16::from_be(sin6.sin6_port)));
    }
    None
}

/// Serves one accepted connection on the listener in `slot`.
pub async fn handle_connection(
    server: Arc<Server>,
    mut slot: Arc<ListenerSlot>,
    stream: TcpStream,
    orig_dst: Option<SocketAddr>,
) {
    let (Ok(peer), Ok(local)) = (stream.peer_addr(), stream.local_addr()) else {
        return;
    };
    server.stats.server.downstream_cx_total.inc();
    let mut l = slot.rt.load_full();
    let dst = if l.captured() || orig_dst.is_some() {
        orig_dst.or_else(|| original_dst(&stream)).unwrap_or(local)
    } else {
        local
    };
    // use_original_dst: hand the connection to the listener owning the original destination.
    if l.cfg.use_original_dst && dst != local {
        if let Some(other) = server.slot_for_addr(dst) {
            if !Arc::ptr_eq(&other, &slot) {
                slot = other;
                l = slot.rt.load_full();
            }
        }
    }
    let span = tracing::debug_span!("conn", listener = %l.cfg.name, %peer, orig_dst = %dst);
    async move {
        let proto = if l.captured() || !l.cfg.listener_filters.is_empty() {
            Some(detect::detect(&stream).await)
        } else {
            None
        };
        let Some(mut idx) = l.chain_index(dst.port()) else {
            tracing::debug!("no filter chain matches; closing");
            return;
        };
        // On captured listeners the detected protocol picks between HTTP and TCP chains.
        if let Some(p) = &proto {
            let want_http = p.is_http();
            let fits = matches!(l.chains[idx], ChainRt::Http(_)) == want_http;
            if !fits {
                match l
                    .chains
                    .iter()
                    .position(|c| matches!(c, ChainRt::Http(_)) == want_http)
                {
                    Some(i) => idx = i,
                    None if !want_http && l.captured() && dst != local => {
                        passthrough(&server.connector, stream, dst).await;
                        return;
                    }
                    None => {}
                }
            }
        }
        let conn = ConnInfo {
            peer,
            local,
            orig_dst: dst,
            tls: false,
        };
        match l.chains[idx].clone() {
            ChainRt::Http(hcm) => {
                hcm.stats.downstream_cx_total.inc();
                let _ = stream.set_nodelay(true);
                let codec = hcm.cfg.codec_type;
                let header_timeout = hcm
                    .cfg
                    .request_timeout
                    .unwrap_or(http::DEFAULT_HEADER_READ_TIMEOUT);
                let fallback = hcm.clone();
                let current = move || match slot.rt.load().chains.get(idx) {
                    Some(ChainRt::Http(h)) => h.clone(),
                    _ => fallback.clone(),
                };
                http::serve(stream, conn, codec, header_timeout, current).await;
            }
            ChainRt::Tcp(tp) => {
                if let Err(e) = tp.serve(stream, Some(dst), peer).await {
                    tracing::debug!(error = %e, "tcp proxy");
                }
            }
        }
    }
    .instrument(span)
    .await
}

/// Opaque TCP to the original destination (Istio's PassthroughCluster) for captured non-HTTP
/// traffic when the listener has no tcp_proxy chain.
async fn passthrough(connector: &Connector, mut down: TcpStream, dst: SocketAddr) {
    let Ok(Ok(up)) =
        tokio::time::timeout(PASSTHROUGH_CONNECT_TIMEOUT, connector.connect(dst)).await
    else {
        return;
    };
    let _ = tcp_proxy::copy_bidirectional_idle(
        &mut down,
        up,
        Some(config::DEFAULT_TCP_PROXY_IDLE_TIMEOUT),
    )
    .await;
}
