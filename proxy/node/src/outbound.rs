//! Outbound TCP passthrough (Envoy's ORIGINAL_DST / PassthroughCluster): connect to where the app
//! was going (or to a VIP's endpoint from the static service table) and copy bytes both ways.

use std::{net::SocketAddr, sync::Arc};

use tokio::net::TcpStream;
use tracing::{debug, info};

use crate::{
    listener::{reset, Accepted, ConnectionError, ConnectionHandler, HandlerFuture},
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
) -> Result<(), ConnectionError> {
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
        .map_err(|source| ConnectionError::Copy {
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

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::{TcpListener, TcpStream},
    };

    use super::*;
    use crate::{
        listener::{Direction, ListenerContext, ListenerStats},
        upstream_factory::{UpstreamFactory, DEFAULT_CONNECT_TIMEOUT},
    };

    fn ctx() -> Arc<ListenerContext> {
        Arc::new(ListenerContext {
            name: "test",
            direction: Direction::Outbound,
            netns: "self".into(),
            upstream: UpstreamFactory::new(None, None, DEFAULT_CONNECT_TIMEOUT),
            stats: ListenerStats::default(),
            placement: None,
        })
    }

    /// A downstream pair: (the app's end, the proxy's accepted end).
    async fn downstream() -> (TcpStream, TcpStream, SocketAddr) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let app = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (acc, peer) = l.accept().await.unwrap();
        (app, acc, peer)
    }

    #[tokio::test]
    async fn half_close_keeps_the_other_direction_flowing() {
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = server.local_addr().unwrap();
        let srv = tokio::spawn(async move {
            let (mut s, _) = server.accept().await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap(); // ends only if the proxy forwards the FIN
            s.write_all(format!("got {}", got.len()).as_bytes())
                .await
                .unwrap();
        });
        let (mut app, acc, peer) = downstream().await;
        let c = ctx();
        let conn = Accepted {
            stream: acc,
            peer,
            orig_dst: target,
            id: 1,
            ctx: c.clone(),
        };
        let proxy = tokio::spawn(proxy_to(conn, target, None));
        app.write_all(&vec![7u8; 100_000]).await.unwrap();
        app.shutdown().await.unwrap();
        let mut answer = String::new();
        app.read_to_string(&mut answer).await.unwrap();
        assert_eq!(answer, "got 100000");
        proxy.await.unwrap().unwrap();
        srv.await.unwrap();
        assert_eq!(
            c.stats.bytes_out.load(std::sync::atomic::Ordering::Relaxed),
            100_000
        );
        assert_eq!(
            c.stats.bytes_in.load(std::sync::atomic::Ordering::Relaxed),
            10
        );
    }

    #[tokio::test]
    async fn failed_upstream_resets_the_client_at_once() {
        // A port nobody listens on: connect is refused.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let (mut app, acc, peer) = downstream().await;
        let conn = Accepted {
            stream: acc,
            peer,
            orig_dst: closed,
            id: 2,
            ctx: ctx(),
        };
        let err = proxy_to(conn, closed, None).await.unwrap_err();
        assert!(
            matches!(err, ConnectionError::UpstreamConnect { .. }),
            "{err}"
        );
        assert_eq!(err.source_side(), crate::listener::ErrorSource::Upstream);
        let mut buf = [0u8; 8];
        let r = tokio::time::timeout(Duration::from_secs(1), app.read(&mut buf))
            .await
            .expect("client left hanging");
        assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::ConnectionReset);
    }
}
