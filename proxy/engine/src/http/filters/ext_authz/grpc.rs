//! One check against a gRPC authorization service (`envoy.service.auth.v3.Authorization/Check`),
//! as Envoy's `GrpcClientImpl`: a `CheckRequest` with the request's attributes (source and
//! destination address and principal, method, path, host, scheme, protocol, `x-request-id`,
//! the headers `allowed_headers` lets through, or all of them, pseudo-headers included) and the
//! route's `context_extensions`, over HTTP/2 to the service's cluster. A `CheckResponse` whose
//! status is OK allows with its `ok_response` changes; another denies with its
//! `denied_response` (403 when it names no status); a failed call (a gRPC status other than
//! OK, no answer within the timeout, no such cluster) is an error.

use std::{collections::HashMap, sync::Arc, time::Duration};

use bytes::{BufMut, Bytes, BytesMut};
use envoy_types::pb::envoy::{
    config::core::v3::{address, socket_address, Address, HeaderValueOption, SocketAddress},
    service::auth::v3::{
        attribute_context::{HttpRequest, Peer, Request as AttrRequest},
        check_response::HttpResponse,
        AttributeContext, CheckRequest, CheckResponse,
    },
};
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Version};
use prost::Message;

use serde::Deserialize;

use super::{header_pairs, Checked, NameList, Verdict};
use crate::config::{duration::parse_duration, raw_route::RawHeaderValue, ConfigError, FieldPath};
use crate::upstream::Cluster;

/// The method's path.
const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

/// The answer's size limit when `max_receive_message_length` is unset or 0 (unlimited in
/// Envoy; a bound on memory here).
const DEFAULT_MAX_MESSAGE: usize = 4 << 20;

/// Where the check goes (`grpc_service.envoy_grpc`).
#[derive(Debug)]
pub(crate) struct GrpcService {
    /// `cluster_name`, looked up per check.
    pub cluster: String,
    /// `authority` (default: the cluster's name).
    pub authority: HeaderValue,
    /// `timeout` (unset: Envoy's 200 ms; None: `0s`, no limit).
    pub timeout: Option<Duration>,
    /// `initial_metadata`, sent as request headers.
    pub initial_metadata: Vec<(HeaderName, HeaderValue)>,
    /// `max_receive_message_length`.
    pub max_message: Option<usize>,
    /// Not `skip_envoy_headers`: the call carries `x-envoy-internal` and
    /// `x-envoy-expected-rq-timeout-ms`, as Envoy's async client adds them.
    pub envoy_headers: bool,
    /// `allowed_headers` (None: every request header goes in the check).
    pub allowed: Option<NameList>,
    /// `disallowed_headers`.
    pub disallowed: NameList,
}

/// `config.core.v3.GrpcService`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGrpcService {
    envoy_grpc: Option<RawEnvoyGrpc>,
    google_grpc: Option<serde_json::Value>,
    timeout: Option<String>,
    #[serde(default)]
    initial_metadata: Vec<RawHeaderValue>,
    retry_policy: Option<serde_json::Value>,
}

/// `GrpcService.EnvoyGrpc`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnvoyGrpc {
    cluster_name: Option<String>,
    authority: Option<String>,
    retry_policy: Option<serde_json::Value>,
    max_receive_message_length: Option<u32>,
    skip_envoy_headers: Option<bool>,
}

/// Compiles `grpc_service` at `gp` (`envoy_grpc` only); `allowed` / `disallowed`: the filter's
/// header lists.
pub(crate) fn grpc_service(
    gs: RawGrpcService,
    gp: &FieldPath,
    allowed: Option<NameList>,
    disallowed: NameList,
) -> Result<GrpcService, ConfigError> {
    if gs.google_grpc.is_some() {
        return Err(gp
            .field("google_grpc")
            .unsupported("(Envoy's Google gRPC client is not implemented; use envoy_grpc)"));
    }
    if gs.retry_policy.is_some() {
        return Err(gp
            .field("retry_policy")
            .unsupported("(checks are not retried here)"));
    }
    let ep = gp.field("envoy_grpc");
    let eg = gs.envoy_grpc.ok_or_else(|| ep.err("required"))?;
    if eg.retry_policy.is_some() {
        return Err(ep
            .field("retry_policy")
            .unsupported("(checks are not retried here)"));
    }
    let cluster = eg
        .cluster_name
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ep.field("cluster_name").err("required"))?;
    let authority = eg
        .authority
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| cluster.clone());
    let authority = HeaderValue::from_str(&authority).map_err(|_| {
        ep.field("authority")
            .err(format!("{authority:?} is not a header value"))
    })?;
    // Envoy's ext_authz default for the gRPC call: 200 ms.
    let timeout = match gs.timeout.as_deref() {
        None => Some(Duration::from_millis(200)),
        Some(t) => {
            let d = parse_duration(t).map_err(|e| gp.field("timeout").err(e))?;
            (!d.is_zero()).then_some(d)
        }
    };
    let metadata = header_pairs(&gs.initial_metadata, &gp.field("initial_metadata"))?;
    Ok(GrpcService {
        cluster,
        authority,
        timeout,
        initial_metadata: metadata,
        max_message: eg
            .max_receive_message_length
            .filter(|&n| n > 0)
            .map(|n| n as usize),
        envoy_headers: eg.skip_envoy_headers != Some(true),
        allowed,
        disallowed,
    })
}

/// Asks `svc` about the request.
pub(crate) async fn check(
    svc: &GrpcService,
    attrs: &Checked<'_>,
    clusters: &HashMap<String, Arc<Cluster>>,
) -> Verdict {
    send(svc, check_request(svc, attrs), clusters).await
}

/// Asks `svc` about a connection (the network ext_authz filter): a `CheckRequest` with the
/// source and destination only, as Envoy's `createTcpCheck`.
pub(crate) async fn check_connection(
    svc: &GrpcService,
    peer: std::net::SocketAddr,
    local: std::net::SocketAddr,
    tls: Option<&crate::downstream_tls::TlsFacts>,
    clusters: &HashMap<String, Arc<Cluster>>,
) -> Verdict {
    let req = CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(peer_of(peer, principal(tls.and_then(|t| t.peer.as_ref())))),
            destination: Some(peer_of(
                local,
                tls.and_then(|t| t.local_uri_sans.first().cloned())
                    .unwrap_or_default(),
            )),
            ..Default::default()
        }),
    };
    send(svc, req, clusters).await
}

/// Sends one `CheckRequest` and reads the verdict.
async fn send(
    svc: &GrpcService,
    req: CheckRequest,
    clusters: &HashMap<String, Arc<Cluster>>,
) -> Verdict {
    let message = req.encode_to_vec();
    let limit = svc.max_message.unwrap_or(DEFAULT_MAX_MESSAGE);
    let answer = super::call::call(
        &svc.cluster,
        clusters,
        request(svc, &message),
        svc.timeout,
        |_| limit + 5,
    );
    let Some(a) = answer.await else {
        return Verdict::Error;
    };
    // A trailers-only answer carries its status in the head.
    let status = a
        .trailers
        .as_ref()
        .and_then(grpc_status)
        .or_else(|| grpc_status(&a.head.headers));
    if a.head.status != http::StatusCode::OK || a.cut || a.broken || status != Some(0) {
        return Verdict::Error;
    }
    match unframe(&a.body).and_then(|m| CheckResponse::decode(m).ok()) {
        Some(r) => verdict(r),
        None => Verdict::Error,
    }
}

/// The call's HTTP/2 request: the framed message and gRPC's headers.
fn request(svc: &GrpcService, message: &[u8]) -> Request<crate::http::Body> {
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(0);
    framed.put_u32(message.len() as u32);
    framed.extend_from_slice(message);
    let mut h = HeaderMap::new();
    h.insert(header::HOST, svc.authority.clone());
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert(header::TE, HeaderValue::from_static("trailers"));
    if let Some(t) = svc.timeout {
        // gRPC allows 8 digits: hours beyond that.
        let ms = match t.as_millis() {
            ms if ms < 100_000_000 => format!("{ms}m"),
            ms => format!("{}H", (ms / 3_600_000).min(99_999_999)),
        };
        h.insert("grpc-timeout", HeaderValue::from_str(&ms).expect("digits"));
    }
    if svc.envoy_headers {
        // As Envoy's async client stamps a call: internal, from this node.
        h.insert("x-envoy-internal", HeaderValue::from_static("true"));
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_str(&crate::http::sanitize::local_address().to_string())
                .expect("an address is a header value"),
        );
        if let Some(t) = svc.timeout {
            h.insert(
                "x-envoy-expected-rq-timeout-ms",
                HeaderValue::from(t.as_millis() as u64),
            );
        }
    }
    for (n, v) in &svc.initial_metadata {
        h.insert(n.clone(), v.clone());
    }
    // A body of unknown length, as Envoy's gRPC client sends it: no content-length.
    let frame = framed.freeze();
    let body = http_body_util::StreamBody::new(futures_util::stream::once(async move {
        Ok::<_, std::convert::Infallible>(http_body::Frame::data(frame))
    }));
    let mut r = Request::new(http_body_util::BodyExt::boxed(
        http_body_util::BodyExt::map_err(body, |n| match n {}),
    ));
    *r.method_mut() = Method::POST;
    *r.uri_mut() = http::Uri::from_static(CHECK_PATH);
    *r.headers_mut() = h;
    r
}

/// A gRPC message's bytes from its length-prefixed frame (uncompressed).
fn unframe(buf: &[u8]) -> Option<&[u8]> {
    let (&[0, a, b, c, d], rest) = buf.split_first_chunk::<5>()? else {
        return None;
    };
    let len = u32::from_be_bytes([a, b, c, d]) as usize;
    rest.get(..len)
}

fn grpc_status(h: &HeaderMap) -> Option<u32> {
    h.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// Envoy's `getPrincipal`: the first URI SAN, else the first DNS SAN, else the subject.
fn principal(cert: Option<&crate::downstream_tls::PeerCert>) -> String {
    let Some(c) = cert else {
        return String::new();
    };
    c.uri_sans
        .first()
        .or(c.dns_sans.first())
        .cloned()
        .unwrap_or_else(|| c.subject.clone())
}

fn peer_of(addr: std::net::SocketAddr, principal: String) -> Peer {
    Peer {
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: addr.ip().to_string(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(
                    addr.port(),
                ))),
                ..Default::default()
            })),
        }),
        principal,
        ..Default::default()
    }
}

/// The `CheckRequest`, as Envoy's `CheckRequestUtils::createHttpCheck` fills it.
fn check_request(svc: &GrpcService, a: &Checked<'_>) -> CheckRequest {
    let mut headers = HashMap::new();
    let mut keep = |name: &str, value: &str| {
        let allowed = svc.allowed.as_ref().is_none_or(|l| l.matches(name));
        if allowed && !svc.disallowed.matches(name) {
            headers
                .entry(name.to_string())
                .and_modify(|v: &mut String| {
                    v.push(',');
                    v.push_str(value);
                })
                .or_insert_with(|| value.to_string());
        }
    };
    let authority = a.authority.unwrap_or_default();
    keep(":authority", authority);
    keep(":path", a.path);
    keep(":method", a.method.as_str());
    keep(":scheme", a.scheme);
    for (n, v) in a.headers {
        // The client's own partial-body header never reaches the service.
        if n == header::HOST || n == super::body::PARTIAL_HEADER {
            continue;
        }
        if let Ok(v) = v.to_str() {
            keep(n.as_str(), v);
        }
    }
    // Envoy's size is the buffered body's (checked: 0 with a Content-Length and no buffering).
    let size = a.received as i64;
    let (mut body, mut raw_body) = (String::new(), Vec::new());
    if let Some(b) = &a.body {
        // A protobuf string is UTF-8: each byte that breaks it becomes `!`, as Envoy sanitizes
        // it (pack_as_bytes sends it exactly).
        if b.pack_as_bytes {
            raw_body = b.data.to_vec();
        } else {
            body = super::body::sanitize_utf8(b.data);
        }
        headers.insert(
            super::body::PARTIAL_HEADER.to_string(),
            if b.partial { "true" } else { "false" }.to_string(),
        );
    }
    let protocol = match a.version {
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        _ => "HTTP/1.1",
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let tls = a.tls;
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(peer_of(
                a.peer,
                principal(tls.and_then(|t| t.peer.as_ref())),
            )),
            destination: Some(peer_of(
                a.local,
                tls.and_then(|t| t.local_uri_sans.first().cloned())
                    .unwrap_or_default(),
            )),
            request: Some(AttrRequest {
                time: Some(envoy_types::pb::google::protobuf::Timestamp {
                    seconds: now.as_secs() as i64,
                    nanos: now.subsec_nanos() as i32,
                }),
                http: Some(HttpRequest {
                    id: stream_id(a.headers).to_string(),
                    method: a.method.to_string(),
                    headers,
                    path: a.path.to_string(),
                    host: authority.to_string(),
                    scheme: a.scheme.to_string(),
                    size,
                    protocol: protocol.to_string(),
                    body,
                    raw_body,
                    ..Default::default()
                }),
            }),
            context_extensions: a.context_extensions.iter().cloned().collect(),
            ..Default::default()
        }),
    }
}

/// The stream's id as Envoy gives it (`StreamIdProvider::toInteger`, a number from the
/// `x-request-id` UUID): the first 16 hex digits of the id as an unsigned number (0: none).
fn stream_id(h: &HeaderMap) -> u64 {
    let Some(id) = h.get("x-request-id").and_then(|v| v.to_str().ok()) else {
        return 0;
    };
    let hex: String = id
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(16)
        .collect();
    u64::from_str_radix(&hex, 16).unwrap_or(0)
}

/// Envoy's `GrpcClientImpl::toResponse`.
fn verdict(r: CheckResponse) -> Verdict {
    let ok = r.status.as_ref().is_none_or(|s| s.code == 0);
    match (ok, r.http_response) {
        (true, ok_response) => {
            let mut set = Vec::new();
            let mut append = Vec::new();
            let mut remove = Vec::new();
            let mut response = Vec::new();
            if let Some(HttpResponse::OkResponse(o)) = ok_response {
                for h in &o.headers {
                    if let Some((n, v, add)) = header_option(h) {
                        if add {
                            append.push((n, v));
                        } else {
                            set.push((n, v));
                        }
                    }
                }
                remove.extend(
                    o.headers_to_remove
                        .iter()
                        .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
                        .filter(|n| n != header::HOST && !n.as_str().starts_with(':')),
                );
                response.extend(
                    o.response_headers_to_add
                        .iter()
                        .filter_map(header_option)
                        .map(|(n, v, _)| (n, v)),
                );
            }
            Verdict::Ok {
                remove,
                set,
                append,
                response,
            }
        }
        (false, denied) => {
            let (status, headers, body) = match denied {
                Some(HttpResponse::DeniedResponse(d)) => {
                    let status = d
                        .status
                        .map(|s| s.code)
                        .filter(|c| (100..=599).contains(c))
                        .unwrap_or(403) as u16;
                    let headers = d
                        .headers
                        .iter()
                        .filter_map(header_option)
                        .map(|(n, v, _)| (n, v))
                        .collect();
                    (status, headers, Bytes::from(d.body))
                }
                _ => (403, Vec::new(), Bytes::new()),
            };
            Verdict::Denied {
                status,
                headers,
                body,
            }
        }
    }
}

/// A `HeaderValueOption` as (name, value, append): `append` true adds, else (unset too) the
/// value replaces the header, as Envoy's gRPC client reads an OK response (checked against
/// Envoy 1.40; `append_action` is not read there).
fn header_option(o: &HeaderValueOption) -> Option<(HeaderName, HeaderValue, bool)> {
    let h = o.header.as_ref()?;
    let name = HeaderName::from_bytes(h.key.as_bytes()).ok()?;
    let value = match h.raw_value.is_empty() {
        true => HeaderValue::from_str(&h.value).ok()?,
        false => HeaderValue::from_bytes(&h.raw_value).ok()?,
    };
    #[allow(deprecated)]
    let add = o.append.as_ref().is_some_and(|b| b.value);
    Some((name, value, add))
}
