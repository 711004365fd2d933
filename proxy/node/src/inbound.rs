//! Inbound passthrough (Envoy's InboundPassthroughCluster): deliver a captured inbound connection
//! to the pod's own app at its original destination, from source 127.0.0.6 (::6 for IPv6), the
//! address the capture rules never redirect, so there is no loop.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::{
    listener::{Accepted, ConnectionHandler, HandlerFuture},
    outbound::proxy_to,
};

/// Source address of inbound passthrough connections (IPv4).
pub const PASSTHROUGH_SRC_V4: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);
/// Source address of inbound passthrough connections (IPv6).
pub const PASSTHROUGH_SRC_V6: Ipv6Addr = Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6);

/// The inbound passthrough handler.
#[derive(Debug, Clone, Default)]
pub struct InboundPassthrough;

impl ConnectionHandler for InboundPassthrough {
    fn handle(&self, conn: Accepted) -> HandlerFuture {
        let src = match conn.orig_dst.ip() {
            IpAddr::V4(_) => IpAddr::V4(PASSTHROUGH_SRC_V4),
            IpAddr::V6(_) => IpAddr::V6(PASSTHROUGH_SRC_V6),
        };
        let target = conn.orig_dst;
        Box::pin(proxy_to(conn, target, Some(SocketAddr::new(src, 0))))
    }
}
