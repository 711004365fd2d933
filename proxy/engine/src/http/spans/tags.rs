//! The tags Envoy 1.40 sets on the connection manager's span when a request ends
//! (`HttpTracerUtility::finalizeDownstreamSpan`, `setCommonTags`) and on an upstream attempt's
//! span (`finalizeUpstreamSpan`), read from the request as the router left it.

use std::net::IpAddr;

use http::{HeaderMap, Method, Version};

use super::Span;
use crate::{
    config::{CustomTag, TagValue},
    http::filters::metadata::DynamicMetadata,
};

/// The request as the tags read it: its headers (the router's changes in) and path.
#[derive(Debug)]
pub(crate) struct Seen<'a> {
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// Its path (with the query), as it went upstream.
    pub path: &'a str,
    /// Its Host, when the headers have none (an HTTP/2 `:authority`).
    pub authority: &'a str,
}

impl Seen<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn host(&self) -> &str {
        self.header("host").unwrap_or(self.authority)
    }
}

/// `HTTP/1.0` … as the `http.protocol` tag (and the access log) name them.
pub(crate) fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "-",
    }
}

/// A gRPC request: its content type is `application/grpc` or one of its subtypes.
pub(crate) fn is_grpc(h: &HeaderMap) -> bool {
    h.get(http::header::CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes();
        v.starts_with(b"application/grpc") && matches!(v.get(16), None | Some(b'+' | b';'))
    })
}

/// The request's tags on the connection manager's span.
pub(crate) fn downstream_request(
    span: &mut Span,
    seen: &Seen<'_>,
    method: &Method,
    version: Version,
    peer: IpAddr,
    max_path: usize,
) {
    if let Some(id) = seen.header("x-request-id") {
        span.tag("guid:x-request-id", id);
    }
    // The path as the client sent it (the router keeps it in x-envoy-original-path when it
    // rewrites), cut to `max_path_tag_length` bytes.
    let path = seen.header("x-envoy-original-path").unwrap_or(seen.path);
    let mut cut = path.len().min(max_path);
    while !path.is_char_boundary(cut) {
        cut -= 1;
    }
    let proto = seen.header("x-forwarded-proto").unwrap_or("");
    span.tag(
        "http.url",
        format!("{proto}://{}{}", seen.host(), &path[..cut]),
    );
    span.tag("http.method", method.as_str());
    span.tag(
        "downstream_cluster",
        seen.header("x-envoy-downstream-service-cluster")
            .unwrap_or("-"),
    );
    span.tag("user_agent", seen.header("user-agent").unwrap_or("-"));
    span.tag("http.protocol", protocol(version));
    span.tag("peer.address", peer.to_string());
    if let Some(id) = seen.header("x-client-trace-id") {
        span.tag("guid:x-client-trace-id", id);
    }
    if is_grpc(seen.headers) {
        span.tag("grpc.path", seen.path);
        span.tag("grpc.authority", seen.host());
        if let Some(t) = seen.header("content-type") {
            span.tag("grpc.content_type", t);
        }
        if let Some(t) = seen.header("grpc-timeout") {
            span.tag("grpc.timeout", t);
        }
    }
}

/// What the response left for the tags.
#[derive(Debug, Default, Clone)]
pub(crate) struct Answered {
    /// The status sent (None: none was).
    pub status: Option<u16>,
    /// The response flags, `-` for none.
    pub flags: &'static str,
    /// The cluster the route chose: its name and observability name.
    pub cluster: Option<(String, String)>,
}

/// `setCommonTags`: component, the cluster, status, flags, error, then the custom tags.
pub(crate) fn common(
    span: &mut Span,
    a: &Answered,
    custom: &[&[CustomTag]],
    seen: &Seen<'_>,
    metadata: Option<&DynamicMetadata>,
) {
    span.tag("component", "proxy");
    if let Some((name, alt)) = &a.cluster {
        span.tag("upstream_cluster", name.as_str());
        span.tag("upstream_cluster.name", alt.as_str());
    }
    span.tag(
        "http.status_code",
        a.status.map_or_else(|| "0".to_string(), |s| s.to_string()),
    );
    span.tag("response_flags", a.flags);
    if a.status.is_none_or(|s| s >= 500) {
        span.tag("error", "true");
    }
    for t in custom.iter().flat_map(|c| c.iter()) {
        let v = match &t.value {
            TagValue::Fixed(v) => v.clone(),
            TagValue::RequestHeader { name, default } => seen
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map_or_else(|| default.clone(), str::to_string),
            TagValue::Metadata {
                namespace,
                path,
                default,
            } => match metadata.and_then(|m| m.value(namespace, path)) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(serde_json::Value::Null) | None => default.clone(),
                Some(v) => v.to_string(),
            },
        };
        if !v.is_empty() {
            span.custom.push((t.tag.clone(), v));
        }
    }
}

/// The gRPC status tags of a gRPC request's response (its headers, else its trailers).
pub(crate) fn grpc_response(span: &mut Span, h: &HeaderMap) {
    let Some(status) = h.get("grpc-status").and_then(|v| v.to_str().ok()) else {
        return;
    };
    span.tag("grpc.status_code", status);
    if let Some(m) = h.get("grpc-message").and_then(|v| v.to_str().ok()) {
        span.tag("grpc.message", m);
    }
    // Unknown, DeadlineExceeded, ResourceExhausted, Unimplemented, Internal, Unavailable,
    // DataLoss.
    if matches!(status, "2" | "4" | "8" | "12" | "13" | "14" | "15") {
        span.tag("error", "true");
    }
}
