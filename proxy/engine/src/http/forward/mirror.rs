//! Request mirroring (`request_mirror_policies`): a shadow copy of the request goes to each
//! selected cluster, fire and forget — its response is read and dropped, and it never delays or
//! fails the main request (Envoy's `ShadowWriterImpl`).

use std::{collections::HashMap, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{header, request::Parts, uri::PathAndQuery, HeaderMap, HeaderValue, Request};

use crate::{
    http::{local_reply, Body},
    route::mirror::{shadow_host, MirrorCluster, MirrorMutation, MirrorPolicy},
    upstream::{Cluster, Host, LbContext},
};

/// A resolved mirror target for one request.
pub(crate) struct Shadow {
    cluster: Arc<Cluster>,
    host_suffix: bool,
    host_rewrite: Option<HeaderValue>,
    mutations: Arc<[MirrorMutation]>,
    /// Its body when the request's is streamed ([`super::shadow_body`]).
    pub(super) streamed: Option<Body>,
}

/// The shadows of one request: each policy whose `runtime_fraction` holds and whose cluster
/// exists (a `cluster_header` value naming no cluster sends nothing, as Envoy).
pub(crate) fn select(
    policies: &[MirrorPolicy],
    headers: &HeaderMap,
    clusters: &HashMap<String, Arc<Cluster>>,
) -> Vec<Shadow> {
    let mut out = Vec::new();
    for p in policies {
        if p.fraction.is_some_and(|f| !f.holds(rand::random())) {
            continue;
        }
        let name = match &p.cluster {
            MirrorCluster::Named(c) => Some(c.as_str()),
            MirrorCluster::Header(h) => headers.get(h.as_str()).and_then(|v| v.to_str().ok()),
        };
        if let Some(cluster) = name.and_then(|n| clusters.get(n)) {
            out.push(Shadow {
                cluster: cluster.clone(),
                host_suffix: p.host_suffix,
                host_rewrite: p.host_rewrite.clone(),
                mutations: p.mutations.clone(),
                streamed: None,
            });
        }
    }
    out
}

/// Sends one shadow per entry of `shadows`: the request as it goes to the main upstream
/// (`parts`, `path`), with the `-shadow` Host suffix unless disabled, and the body: `whole` when
/// the request's was read whole (`Some(None)`: none), else the shadow's streamed copy; each
/// gives up after `timeout` (the route's).
pub(crate) fn send(
    shadows: Vec<Shadow>,
    parts: &Parts,
    path: &PathAndQuery,
    whole: Option<Option<&Bytes>>,
    lb: &LbContext,
    timeout: Option<Duration>,
) {
    for mut s in shadows {
        let body = match (whole, s.streamed.take()) {
            (Some(Some(b)), _) => local_reply::full(b.clone()),
            (Some(None), _) => local_reply::empty(),
            (None, Some(streamed)) => streamed,
            (None, None) => continue,
        };
        let Some(host) = s.cluster.choose_host(lb) else {
            continue;
        };
        let mut headers = parts.headers.clone();
        for m in s.mutations.iter() {
            m.apply(&mut headers);
        }
        if let Some(h) = s.host_rewrite {
            headers.insert(header::HOST, h);
        } else if s.host_suffix {
            let shadowed = headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .filter(|h| !h.is_empty())
                .and_then(|h| HeaderValue::from_str(&shadow_host(h)).ok());
            if let Some(v) = shadowed {
                headers.insert(header::HOST, v);
            }
        }
        // Envoy sends the shadow through its async HTTP client, which marks it internal and
        // appends the node's address to `x-forwarded-for` (`AsyncStreamImpl::sendHeaders`).
        headers.insert("x-envoy-internal", HeaderValue::from_static("true"));
        let local = crate::http::sanitize::local_address().to_string();
        let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(v) if !v.is_empty() => format!("{v},{local}"),
            _ => local,
        };
        if let Ok(v) = HeaderValue::from_str(&xff) {
            headers.insert("x-forwarded-for", v);
        }
        let mut req = Request::new(body);
        *req.method_mut() = parts.method.clone();
        *req.uri_mut() = super::origin_form(path);
        *req.headers_mut() = headers;
        crate::workers::spawn(shadow_one(s.cluster, host, req, timeout));
    }
}

/// Sends one shadow request and reads its response to the end (so an HTTP/1 connection goes
/// back to the pool), giving up after `timeout`.
async fn shadow_one(
    cluster: Arc<Cluster>,
    host: Arc<Host>,
    req: Request<Body>,
    timeout: Option<Duration>,
) {
    let send = async {
        // Envoy's shadow goes through its async client, whose routes have the DEFAULT
        // priority whatever the mirroring route's.
        let pool = host.pool(crate::config::RoutingPriority::Default);
        let Ok(resp) = pool
            .send(&cluster, host.addr, req, || None, None, &|_| {})
            .await
        else {
            return;
        };
        // Frame by frame: `BodyExt::collect` here trips rustc's higher-ranked `Send` check on
        // the body's error type in a spawned task (rust-lang/rust#102211).
        let mut body = std::pin::pin!(resp.into_body());
        while let Some(Ok(_)) =
            std::future::poll_fn(|cx| http_body::Body::poll_frame(body.as_mut(), cx)).await
        {
        }
    };
    match timeout {
        Some(t) => {
            let _ = tokio::time::timeout(t, send).await;
        }
        None => send.await,
    }
}
