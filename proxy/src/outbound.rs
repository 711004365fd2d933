//! Outbound TCP passthrough (Envoy's ORIGINAL_DST / PassthroughCluster): connect to where the app
//! was going (or to a VIP's endpoint from the static service table) and copy bytes both ways.

use std::{net::SocketAddr, sync::Arc};

use tokio::net::TcpStream;
use tracing::{debug, info};

use crate::{
    listener::{reset, Accepted, ConnectionHandler, HandlerFuture, ProxyError},
    services::Services,
};

/// Per-direction copy buffer. Allocated once per connection, reused for every read.
pub const COPY_BUF: usize = 16 * 1024;

/// The outbound TCP passthrough handler.
#[derive(Debug, Clone)]
pub struct Passthrough {
    services: Arc<Services>,
}

impl Passthrough {
    /// A passthrough that consults `services` for VIPs.
    pub fn new(services: Arc<Services>) -> Self {
        Self { services }
    }
}

impl ConnectionHandler for Passthrough {
    fn handle(&self, conn: Accepted) -> HandlerFuture {
        let target = self.services.resolve(conn.orig_dst);
        Box::pin(proxy_to(conn, target, None))
    }
}

/// Connects to `target` (from `bind` if given) through the listener's upstream factory and
/// splices the two sockets. On a failed connect the downstream gets an RST at once.
pub async fn proxy_to(
    conn: Accepted,
    target: SocketAddr,
    bind: Option<SocketAddr>,
) -> Result<(), ProxyError> {
    let Accepted {
        stream: mut down,
        ctx,
        ..
    } = conn;
    let mut up = match ctx.upstream.connect(target, bind).await {
        Ok(s) => s,
        Err(e) => {
            reset(down);
            return Err(e);
        }
    };
    debug!(upstream = %target, "upstream connected");
    let (out, inn) = splice(&mut down, &mut up)
        .await
        .map_err(|source| ProxyError::Copy {
            addr: target,
            source,
        })?;
    let stats = &ctx.stats;
    stats
        .bytes_out
        .fetch_add(out, std::sync::atomic::Ordering::Relaxed);
    stats
        .bytes_in
        .fetch_add(inn, std::sync::atomic::Ordering::Relaxed);
    info!(upstream = %target, bytes_out = out, bytes_in = inn, "closed");
    Ok(())
}

/// Copies both ways until both directions end. When one side finishes sending, the other side's
/// write half is shut down (half-close) and the opposite direction keeps flowing.
pub async fn splice(down: &mut TcpStream, up: &mut TcpStream) -> std::io::Result<(u64, u64)> {
    tokio::io::copy_bidirectional_with_sizes(down, up, COPY_BUF, COPY_BUF).await
}
