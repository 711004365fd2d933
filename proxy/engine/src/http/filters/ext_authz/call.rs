//! One call to a side service's cluster, shared by ext_authz's HTTP and gRPC checks and
//! jwt_authn's key set fetch: a
//! host of the cluster (looked up per call: a cluster CDS removed is an error), the request
//! through its pool, and the answer read to its end within the timeout — its body kept up to
//! what the caller asks for (the rest is read and dropped, so an HTTP/1 connection goes back
//! to the pool), and its trailers.

use std::{collections::HashMap, sync::Arc, time::Duration};

use bytes::{Bytes, BytesMut};
use http::{response::Parts, HeaderMap, Request};

use crate::{
    http::Body,
    upstream::{Cluster, LbContext},
};

/// What the service answered.
pub(crate) struct Answer {
    /// The response head.
    pub head: Parts,
    /// The body, up to what the caller kept.
    pub body: Bytes,
    /// The body was longer than that.
    pub cut: bool,
    /// The body broke off before its end.
    pub broken: bool,
    /// The trailers, if any came.
    pub trailers: Option<HeaderMap>,
}

/// Sends `req` to a host of `cluster` and reads the answer, keeping `keep(&head)` bytes of its
/// body; None when there is no such cluster or host, the request failed, or `timeout` passed.
pub(crate) async fn call(
    cluster: &str,
    clusters: &HashMap<String, Arc<Cluster>>,
    req: Request<Body>,
    timeout: Option<Duration>,
    keep: impl FnOnce(&Parts) -> usize,
) -> Option<Answer> {
    let Some(cluster) = clusters.get(cluster) else {
        tracing::debug!(%cluster, "ext_authz: no such cluster");
        return None;
    };
    let host = cluster.choose_host(&LbContext::default())?;
    let send = async {
        let pool = host.pool(crate::config::RoutingPriority::Default);
        let resp = pool
            .send(cluster, host.addr, req, || None, None, &|_| {})
            .await
            .ok()?;
        let (head, body) = resp.into_parts();
        let keep = keep(&head);
        let mut body = std::pin::pin!(body);
        let (mut buf, mut cut, mut broken, mut trailers) = (BytesMut::new(), false, false, None);
        // Frame by frame: `BodyExt::collect` trips rustc's higher-ranked `Send` check on the
        // body's error type (rust-lang/rust#102211).
        while let Some(frame) =
            std::future::poll_fn(|cx| http_body::Body::poll_frame(body.as_mut(), cx)).await
        {
            let Ok(frame) = frame else {
                broken = true;
                break;
            };
            match frame.into_data() {
                Ok(d) => {
                    let room = keep - buf.len();
                    cut |= d.len() > room;
                    buf.extend_from_slice(&d[..d.len().min(room)]);
                }
                Err(f) => trailers = f.into_trailers().ok(),
            }
        }
        Some(Answer {
            head,
            body: buf.freeze(),
            cut,
            broken,
            trailers,
        })
    };
    match timeout {
        Some(t) => tokio::time::timeout(t, send).await.ok().flatten(),
        None => send.await,
    }
}
