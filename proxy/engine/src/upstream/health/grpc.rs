//! The gRPC health check (`grpc_health_check`), as Envoy's `GrpcHealthCheckerImpl`: a
//! `grpc.health.v1.Health/Check` call over HTTP/2 (whatever the cluster speaks) on the host's
//! kept connection, passing when the answer is a 200 `application/grpc` response whose one
//! message says `SERVING` and whose trailers say `grpc-status: 0`. Any other answer fails the
//! host at once (Envoy's `ACTIVE` failure); no answer, a reset or a broken connection is a
//! network failure.

use bytes::{BufMut, Bytes, BytesMut};
use http::{header, HeaderValue, Method, Request, Version};
use hyper::client::conn::http2;
use prost::Message;

use super::{Conn, Verdict};
use crate::{
    config::RoutingPriority,
    upstream::{pool, Cluster, HealthCheckSpec, Host},
};

/// The call's path.
const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";
/// The most an answer may carry (one small message and its frame).
const MAX_ANSWER: usize = 64 * 1024;
/// `HealthCheckResponse.ServingStatus.SERVING`.
const SERVING: i32 = 1;

/// A kept HTTP/2 health check connection (a gRPC check's, or an HTTP check's over HTTP/2).
pub(super) type Sender = http2::SendRequest<crate::http::Body>;

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

/// `grpc.health.v1.HealthCheckResponse`.
#[derive(Clone, PartialEq, Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

/// One gRPC check of `host` within the spec's timeout; the connection to keep.
pub(super) async fn check(
    cluster: &Cluster,
    host: &Host,
    spec: &HealthCheckSpec,
    kept: Option<Conn>,
) -> (Verdict, Option<Conn>) {
    let Some((service, metadata)) = &spec.grpc else {
        return (Verdict::Network, None);
    };
    let deadline = tokio::time::Instant::now() + spec.timeout;
    let mut s = match tokio::time::timeout_at(deadline, sender(cluster, host, kept)).await {
        Ok(Some(s)) => s,
        Ok(None) => return (Verdict::Network, None),
        Err(_) => return (Verdict::Timeout, None),
    };
    // A timed-out or reset call ends its stream, not the connection (Envoy's gRPC checker
    // closes it only for `reuse_connection: false` or a GOAWAY): kept unless it closed.
    let keep = s.clone();
    let call = async {
        let req = request(cluster, host, spec, service, metadata)?;
        let resp = s.send_request(req).await.ok()?;
        answer(resp).await
    };
    let verdict = match tokio::time::timeout_at(deadline, call).await {
        Ok(Some(verdict)) => verdict,
        // No answer, or one that broke off (a reset): Envoy's network failure.
        Ok(None) => Verdict::Network,
        Err(_) => Verdict::Timeout,
    };
    let kept = Some(keep).filter(|k| !k.is_closed()).map(Conn::H2);
    (verdict, kept)
}

/// The host's kept HTTP/2 connection, else a new one (HTTP/2 whatever the cluster speaks, not
/// counted as the cluster's traffic); ready for a request.
pub(super) async fn sender(cluster: &Cluster, host: &Host, kept: Option<Conn>) -> Option<Sender> {
    let mut s = match kept {
        Some(Conn::H2(s)) if !s.is_closed() => s,
        _ => {
            let (purpose, prio) = (pool::Purpose::HealthCheckH2, RoutingPriority::Default);
            let to = (host.health_check_addr(), host.transport, None);
            match pool::connect::<crate::http::Body>(cluster, to, purpose, prio).await {
                Ok(pool::Sender::H2(s, _)) => s,
                _ => return None,
            }
        }
    };
    s.ready().await.ok()?;
    Some(s)
}

/// `http` or `https`, as the host's transport is.
pub(super) fn scheme(cluster: &Cluster, host: &Host) -> &'static str {
    if cluster.tls(host.transport).is_some() {
        "https"
    } else {
        "http"
    }
}

/// The `Check` call: Envoy's headers (`te: trailers`, `user-agent: Envoy/HC`, the timeout as
/// `grpc-timeout`, then `initial_metadata`) and the framed request, sent without a
/// content-length as Envoy's codec sends it.
fn request(
    cluster: &Cluster,
    host: &Host,
    spec: &HealthCheckSpec,
    service: &str,
    metadata: &crate::route::HeaderMutations,
) -> Option<Request<crate::http::Body>> {
    // Envoy's `getHostname`: the endpoint's health check host name, else the check's
    // authority, else the cluster's name.
    let authority = super::check_host(host, spec);
    let scheme = scheme(cluster, host);
    let message = HealthCheckRequest {
        service: service.to_string(),
    }
    .encode_to_vec();
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(0);
    framed.put_u32(message.len() as u32);
    framed.extend_from_slice(&message);
    let frame = framed.freeze();
    let body = http_body_util::StreamBody::new(futures_util::stream::once(async move {
        Ok::<_, std::convert::Infallible>(http_body::Frame::data(frame))
    }));
    let mut req = Request::new(http_body_util::BodyExt::boxed(
        http_body_util::BodyExt::map_err(body, |n| match n {}),
    ));
    *req.method_mut() = Method::POST;
    *req.version_mut() = Version::HTTP_2;
    *req.uri_mut() = format!("{scheme}://{authority}{CHECK_PATH}").parse().ok()?;
    let h = req.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert(header::TE, HeaderValue::from_static("trailers"));
    h.insert(header::USER_AGENT, HeaderValue::from_static("Envoy/HC"));
    let ms = spec.timeout.as_millis().min(99_999_999);
    h.insert(
        "grpc-timeout",
        HeaderValue::from_str(&format!("{ms}m")).ok()?,
    );
    metadata.apply(h);
    Some(req)
}

/// The verdict on an answer; `None` when it broke off before its end.
async fn answer(resp: http::Response<hyper::body::Incoming>) -> Option<Verdict> {
    let fail = Verdict::BadStatus {
        retriable: false,
        status: 0,
    };
    let grpc = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "application/grpc" || v.starts_with("application/grpc+"));
    if resp.status() != http::StatusCode::OK || !grpc {
        return Some(fail);
    }
    let mut body = std::pin::pin!(resp.into_body());
    let (mut buf, mut trailers) = (BytesMut::new(), None);
    while let Some(frame) =
        std::future::poll_fn(|cx| http_body::Body::poll_frame(body.as_mut(), cx)).await
    {
        match frame.ok()?.into_data() {
            Ok(d) if buf.len() + d.len() > MAX_ANSWER => return Some(fail),
            Ok(d) => buf.extend_from_slice(&d),
            Err(f) => trailers = f.into_trailers().ok(),
        }
    }
    let ok = trailers
        .as_ref()
        .and_then(|t| t.get("grpc-status"))
        .and_then(|s| s.to_str().ok()?.trim_start_matches('+').parse::<u32>().ok())
        == Some(0);
    let serving = one_message(&buf.freeze())
        .and_then(|m| HealthCheckResponse::decode(m).ok())
        .is_some_and(|r| r.status == SERVING);
    Some(if ok && serving { Verdict::Pass } else { fail })
}

/// The one uncompressed message of a gRPC body: Envoy's decoder skips empty frames and fails
/// a check answered with a second message or a compressed one.
fn one_message(buf: &Bytes) -> Option<Bytes> {
    let mut at = 0;
    let mut message = None;
    while at < buf.len() {
        let (&[flag, a, b, c, d], _) = buf[at..].split_first_chunk::<5>()?;
        let len = u32::from_be_bytes([a, b, c, d]) as usize;
        let end = at.checked_add(5 + len).filter(|e| *e <= buf.len())?;
        if flag != 0 {
            return None;
        }
        if len > 0 {
            if message.is_some() {
                return None;
            }
            message = Some(buf.slice(at + 5..end));
        }
        at = end;
    }
    // No message at all: an empty one (status UNKNOWN).
    Some(message.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_message_takes_exactly_one_frame() {
        let serving = Bytes::from_static(&[0, 0, 0, 0, 2, 0x08, 0x01]);
        let m = one_message(&serving).expect("one message");
        assert_eq!(HealthCheckResponse::decode(m).unwrap().status, SERVING);
        assert!(one_message(&Bytes::from_static(&[0, 0, 0, 0, 2, 0x08])).is_none());
        // Two empty frames: no message, which is not SERVING.
        let none = one_message(&Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0])).unwrap();
        assert_ne!(HealthCheckResponse::decode(none).unwrap().status, SERVING);
        assert!(one_message(&Bytes::from_static(&[1, 0, 0, 0, 2, 0x08, 0x01])).is_none());
        let two = Bytes::from_static(&[0, 0, 0, 0, 2, 0x08, 0x01, 0, 0, 0, 0, 0]);
        assert!(
            one_message(&two).is_some(),
            "an empty frame after the message is skipped"
        );
        let twice = Bytes::from_static(&[0, 0, 0, 0, 2, 0x08, 0x01, 0, 0, 0, 0, 2, 0x08, 0x01]);
        assert!(
            one_message(&twice).is_none(),
            "a second message fails the check"
        );
        let empty = one_message(&Bytes::from_static(&[0, 0, 0, 0, 0])).expect("empty message");
        // An empty message is status UNKNOWN (0): not serving.
        assert_eq!(HealthCheckResponse::decode(empty).unwrap().status, 0);
    }
}
