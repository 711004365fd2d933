//! Locally generated responses and Envoy's response flags.

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use super::Body;

/// Envoy response flags (the short form printed by `%RESPONSE_FLAGS%`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flag {
    /// No flag.
    None,
    /// NR: no route configured.
    NoRoute,
    /// NC: the route's cluster does not exist.
    NoCluster,
    /// UH: no healthy upstream host.
    NoHealthyUpstream,
    /// UF: upstream connection failure.
    ConnectFailure,
    /// UO: upstream overflow (circuit breaker).
    Overflow,
    /// UT: upstream request timeout.
    Timeout,
    /// UC: upstream connection termination.
    ConnectionTermination,
    /// UR: the upstream reset the stream (HTTP/2 RST_STREAM).
    UpstreamRemoteReset,
    /// UPE: the upstream's response did not parse.
    UpstreamProtocolError,
    /// URX: retry limit exceeded (upstream answered with a retriable error each time).
    RetryLimitExceeded,
    /// DC: downstream connection termination.
    DownstreamTermination,
    /// SI: the stream idle timeout fired.
    StreamIdleTimeout,
    /// DPE: the downstream request had an HTTP protocol error (e.g. malformed chunked body).
    DownstreamProtocolError,
    /// DT: the HCM's or the route's `max_stream_duration` passed before the response started.
    DurationTimeout,
    /// FI: the fault filter aborted the request.
    FaultInjected,
    /// DI: the fault filter delayed the request.
    DelayInjected,
    /// RL: the local rate limit filter refused the request.
    RateLimited,
    /// UAEX: the ext_authz service denied the request, or its check failed.
    UnauthorizedExternalService,
    /// URX,UF: the last retry, too, failed to connect.
    RetryLimitConnectFailure,
    /// URX,UC: the last retry, too, was reset.
    RetryLimitConnectionTermination,
    /// URX,UPE: the last retry's response, too, did not parse.
    RetryLimitProtocolError,
    /// URX,UT: the last retry, too, hit its per-try timeout.
    RetryLimitTimeout,
    /// URX,UR: the last retry's stream, too, was reset by the upstream.
    RetryLimitRemoteReset,
    /// The health check filter answered a health check with a failure (LH).
    FailedLocalHealthCheck,
}

impl Flag {
    /// Whether the upstream could not be reached at all (UF connect failure, UH no healthy
    /// host): what the capture side counts as a failed upstream, like a failed TCP connect.
    pub fn is_upstream_failure(self) -> bool {
        matches!(
            self,
            Flag::ConnectFailure | Flag::RetryLimitConnectFailure | Flag::NoHealthyUpstream
        )
    }

    /// This local failure's flag once retries ran out on it: Envoy adds URX (first, as it
    /// prints them) to a connect failure, a reset, a protocol error and a per-try timeout.
    pub fn after_retries(self) -> Flag {
        match self {
            Flag::ConnectFailure => Flag::RetryLimitConnectFailure,
            Flag::ConnectionTermination => Flag::RetryLimitConnectionTermination,
            Flag::UpstreamProtocolError => Flag::RetryLimitProtocolError,
            Flag::Timeout => Flag::RetryLimitTimeout,
            Flag::UpstreamRemoteReset => Flag::RetryLimitRemoteReset,
            other => other,
        }
    }

    /// The short flag text.
    pub fn as_str(self) -> &'static str {
        match self {
            Flag::None => "-",
            Flag::NoRoute => "NR",
            Flag::NoCluster => "NC",
            Flag::NoHealthyUpstream => "UH",
            Flag::ConnectFailure => "UF",
            Flag::Overflow => "UO",
            Flag::Timeout => "UT",
            Flag::ConnectionTermination => "UC",
            Flag::UpstreamRemoteReset => "UR",
            Flag::UpstreamProtocolError => "UPE",
            Flag::RetryLimitExceeded => "URX",
            Flag::DownstreamTermination => "DC",
            Flag::StreamIdleTimeout => "SI",
            Flag::DownstreamProtocolError => "DPE",
            Flag::DurationTimeout => "DT",
            Flag::FaultInjected => "FI",
            Flag::DelayInjected => "DI",
            Flag::RateLimited => "RL",
            Flag::UnauthorizedExternalService => "UAEX",
            Flag::RetryLimitConnectFailure => "URX,UF",
            Flag::RetryLimitConnectionTermination => "URX,UC",
            Flag::RetryLimitProtocolError => "URX,UPE",
            Flag::RetryLimitTimeout => "URX,UT",
            Flag::RetryLimitRemoteReset => "URX,UR",
            Flag::FailedLocalHealthCheck => "LH",
        }
    }
}

/// An empty body.
pub fn empty() -> Body {
    Full::new(Bytes::new()).map_err(|n| match n {}).boxed()
}

/// A body from bytes.
pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|n| match n {}).boxed()
}

/// Marks a response as made here (not by an upstream), with its text: a gRPC request's local
/// reply is turned into a trailers-only gRPC response ([`to_grpc`]).
#[derive(Debug, Clone)]
pub(crate) struct LocalReply {
    pub(crate) text: Bytes,
    /// The `grpc-status` to send instead of the one mapped from the HTTP status.
    pub(crate) grpc_status: Option<u32>,
}

/// A timeout's answer under `x-envoy-upstream-rq-timeout-alt-response`: 204, whose text
/// (`upstream request timeout`, what a local reply mapper and the access log see) has no body.
pub fn timeout_alt_response() -> Response<Body> {
    let mut r = reply(204, "");
    if let Some(l) = r.extensions_mut().get_mut::<LocalReply>() {
        l.text = Bytes::from_static(b"upstream request timeout");
    }
    r
}

/// Envoy-style local reply: `text/plain` body (none when empty).
pub fn reply(status: u16, body: &str) -> Response<Body> {
    reply_bytes(status, Bytes::copy_from_slice(body.as_bytes()))
}

/// [`reply`] with a body of bytes (another service's answer, relayed).
pub fn reply_bytes(status: u16, text: Bytes) -> Response<Body> {
    let len = text.len();
    let mut r = Response::new(if len == 0 {
        empty()
    } else {
        full(text.clone())
    });
    r.extensions_mut().insert(LocalReply {
        text,
        grpc_status: None,
    });
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if len > 0 {
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(len as u64));
    r
}

/// Envoy's `sendLocalReply` for a gRPC request: a local reply becomes a trailers-only response
/// (200, `content-type: application/grpc`, no body) whose `grpc-status` is mapped from the HTTP
/// status (Envoy's `httpToGrpcStatus`) and whose `grpc-message` is the reply's text,
/// percent-encoded. Responses from an upstream, and replies that already carry a `grpc-status`
/// (a fault's gRPC abort), are left alone.
pub(crate) fn to_grpc(r: &mut Response<Body>) {
    let Some(l) = r.extensions_mut().remove::<LocalReply>() else {
        return;
    };
    if r.headers().contains_key("grpc-status") {
        return;
    }
    let status = l
        .grpc_status
        .unwrap_or_else(|| grpc_status_of(r.status().as_u16()));
    *r.status_mut() = StatusCode::OK;
    *r.body_mut() = empty();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    h.insert("grpc-status", HeaderValue::from(status));
    if !l.text.is_empty() {
        if let Ok(v) = HeaderValue::from_bytes(&grpc_message(&l.text)) {
            h.insert("grpc-message", v);
        }
    }
}

/// The `grpc-status` of `h` (response headers or trailers), when a number.
pub fn grpc_status(h: &HeaderMap) -> Option<u32> {
    h.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// Envoy's `Grpc::Utility::httpToGrpcStatus`.
pub fn grpc_status_of(http: u16) -> u32 {
    match http {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 | 504 => 14,
        _ => 2,
    }
}

/// Envoy's percent-encoding of `grpc-message` (`PercentEncoding::encode`): bytes outside
/// printable ASCII, `~` (Envoy's range stops before it) and `%`, as `%XX`.
pub(crate) fn grpc_message(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for &b in text {
        if (0x20..0x7e).contains(&b) && b != b'%' {
            out.push(b);
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
    out
}

/// Envoy's prefix of a reset local reply body.
const RESET_PREFIX: &str = "upstream connect error or disconnect/reset before headers. ";

/// Envoy's reset reason for a connect that `connect_timeout` ended (still flag UF).
pub const CONNECT_TIMEOUT: &str = "connection timeout";

/// The local reply for an upstream attempt that failed with Envoy's reset `reason` (503), in
/// Envoy's `... retried and the latest reset reason: ...` form when the request was retried.
pub fn for_reset(reason: &str, retried: bool) -> Response<Body> {
    for_reset_with(503, reason, retried)
}

/// [`for_reset`] with another status (Envoy's 502 for a protocol error).
pub fn for_reset_with(status: u16, reason: &str, retried: bool) -> Response<Body> {
    let how = if retried {
        "retried and the latest reset reason: "
    } else {
        "reset reason: "
    };
    reply(status, &format!("{RESET_PREFIX}{how}{reason}"))
}

/// The status and body Envoy sends for a local failure flag.
pub fn for_flag(flag: Flag) -> Response<Body> {
    match flag {
        Flag::StreamIdleTimeout => reply(504, "stream timeout"),
        Flag::DurationTimeout => reply(504, "downstream duration timeout"),
        Flag::DownstreamProtocolError => {
            // Envoy's codec error reply: 400, and the connection is not reused.
            let mut r = reply(400, "Bad Request");
            r.headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            r
        }
        Flag::NoRoute => reply(404, ""),
        Flag::NoCluster => reply(503, ""),
        Flag::NoHealthyUpstream => reply(503, "no healthy upstream"),
        Flag::ConnectFailure | Flag::RetryLimitConnectFailure => reply(
            503,
            "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure",
        ),
        Flag::Overflow => {
            let mut r = reply(
                503,
                "upstream connect error or disconnect/reset before headers. reset reason: overflow",
            );
            r.headers_mut()
                .insert("x-envoy-overloaded", HeaderValue::from_static("true"));
            r
        }
        Flag::Timeout | Flag::RetryLimitTimeout => reply(504, "upstream request timeout"),
        Flag::UpstreamProtocolError => for_reset_with(502, "protocol error", false),
        Flag::RetryLimitProtocolError => for_reset_with(502, "protocol error", true),
        Flag::UpstreamRemoteReset => for_reset("remote reset", false),
        Flag::RetryLimitRemoteReset => for_reset("remote reset", true),
        Flag::ConnectionTermination
        | Flag::RetryLimitConnectionTermination
        | Flag::RetryLimitExceeded => reply(
            503,
            "upstream connect error or disconnect/reset before headers. reset reason: connection termination",
        ),
        Flag::FailedLocalHealthCheck => reply(503, ""),
        Flag::DownstreamTermination
        | Flag::None
        | Flag::FaultInjected
        | Flag::DelayInjected
        | Flag::RateLimited => reply(503, ""),
        Flag::UnauthorizedExternalService => reply(403, ""),
    }
}
