//! HTTP/1.1 Upgrade (WebSocket) passthrough for the types `upgrade_configs` enables
//! (`upgrade_policy`): forward the upgrade request, body included, on a fresh upstream
//! connection; on `101` splice the two upgraded connections together until either side closes
//! or the tunnel is idle for the route's idle timeout (the stream idle timeout by default), or
//! the drain time of its listener ends (the connection's `DrainWatch`, in the request's
//! extensions).

use std::time::{Duration, Instant};

use http::{request::Parts, Request, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::{
    local_reply::{self, Flag},
    Outcome,
};
use crate::upstream::outlier::HostResult;
use crate::{
    config::RoutingPriority,
    upstream::{
        pool::{self, Sender},
        Cluster, Host,
    },
};

/// Forwards an upgrade request (on a connection made with the request's transport `options`)
/// and, when the upstream switches protocols, copies bytes both ways
/// in a background task for as long as either side keeps the connection open.
pub(crate) async fn run(
    cluster: &Cluster,
    host: &Host,
    mut parts: Parts,
    body: Incoming,
    idle: Option<Duration>,
    priority: RoutingPriority,
    options: Option<crate::upstream::transport_options::KeyedTransport>,
) -> Outcome {
    cluster.stats.upstream_rq_total.inc();
    let Some(down_upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
        return Outcome::local(Flag::DownstreamTermination);
    };
    let drain = parts
        .extensions
        .remove::<crate::server::drain::DrainWatch>();
    let websocket = parts
        .headers
        .get(http::header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let t0 = Instant::now();
    let purpose = pool::Purpose::Upgrade;
    let to = (host.addr, host.transport, options.as_ref());
    let sender = match pool::connect::<super::Body>(cluster, to, purpose, priority).await {
        Ok(Sender::H1(s, _)) => s,
        Ok(Sender::H2(..)) | Err(_) => {
            cluster.record_outcome(host, HostResult::LocalOrigin { timeout: false });
            let mut o = Outcome::local(Flag::ConnectFailure);
            o.upstream_host = Some(host.addr);
            return o;
        }
    };
    let mut s = sender;
    use http_body_util::BodyExt;
    let mut up_req = Request::from_parts(parts, body.map_err(Into::into).boxed());
    *up_req.version_mut() = Version::HTTP_11;
    let mut resp = match s.send_request(up_req).await {
        Ok(r) => r,
        Err(_) => {
            cluster.record_outcome(host, HostResult::Status(503));
            let mut o = Outcome::local(Flag::ConnectionTermination);
            o.upstream_host = Some(host.addr);
            return o;
        }
    };
    let upstream_ms = t0.elapsed().as_millis() as u64;
    cluster.record_outcome(host, HostResult::Status(resp.status().as_u16()));
    super::reason_phrase::from_upstream(&mut resp, cluster);
    let relayed = |resp| Outcome {
        resp,
        flag: Flag::None,
        upstream_host: Some(host.addr),
        upstream_ms: Some(upstream_ms),
        upstream_local: None,
        attempts: 1,
        redirect: None,
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let up_upgrade = hyper::upgrade::on(&mut resp);
        crate::workers::spawn(async move {
            let (Ok(d), Ok(u)) = tokio::join!(down_upgrade, up_upgrade) else {
                return;
            };
            let stop = async move {
                match drain {
                    Some(d) => d.ended().await,
                    None => std::future::pending().await,
                }
            };
            let (d, u) = (TokioIo::new(d), TokioIo::new(u));
            let _ = crate::tcp_proxy::copy_streams_idle(d, u, idle, stop).await;
        });
        let (parts, _) = resp.into_parts();
        return relayed(http::Response::from_parts(parts, local_reply::empty()));
    }
    // Refused by the upstream: the connection cannot go on (bytes after the request may be the
    // new protocol's), so Envoy closes it.
    resp.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    // A WebSocket handshake answered below 400 but not 101 failed as a handshake: Envoy 1.40
    // relays the head alone (`content-length: 0`, the body dropped) and ends the stream; an
    // error status (400 and up) comes with its body (route_upgrade_configs).
    if websocket && resp.status().as_u16() < 400 {
        let (mut head, _) = resp.into_parts();
        head.headers.remove(http::header::TRANSFER_ENCODING);
        head.headers
            .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(0u64));
        return relayed(http::Response::from_parts(head, local_reply::empty()));
    }
    relayed(resp.map(|b| b.map_err(Into::into).boxed()))
}
