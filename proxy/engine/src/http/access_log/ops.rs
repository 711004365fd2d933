//! The access log's command operators beyond the header formatter's (Envoy's names): parsed
//! by [`crate::route::format`] in an access log format and rendered from the request's
//! [`Entry`].

use std::fmt::Write as _;

use http::HeaderName;

use super::Entry;
use crate::route::format::{push_addr, truncate};

/// The access log's own operators, for errors.
pub const LOG_OPERATORS: &str = "RESP(header), RESPONSE_CODE, RESPONSE_FLAGS, \
RESPONSE_CODE_DETAILS, CONNECTION_TERMINATION_DETAILS, UPSTREAM_TRANSPORT_FAILURE_REASON, \
BYTES_RECEIVED, BYTES_SENT, DURATION, REQUEST_DURATION, RESPONSE_DURATION, RESPONSE_TX_DURATION, \
UPSTREAM_REQUEST_ATTEMPT_COUNT, GRPC_STATUS(CAMEL_STRING|SNAKE_STRING|NUMBER), GRPC_STATUS_NUMBER, \
UPSTREAM_HOST, UPSTREAM_CLUSTER, UPSTREAM_CLUSTER_RAW, \
UPSTREAM_LOCAL_ADDRESS, UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT, DOWNSTREAM_DIRECT_REMOTE_ADDRESS, \
DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT, ROUTE_NAME, REQUESTED_SERVER_NAME";

/// One access log operator.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LogOp {
    /// `%RESP(name?alt)%` with the optional `:N` length limit: a response header's first value.
    Resp {
        name: HeaderName,
        alt: Option<HeaderName>,
        max_len: Option<usize>,
    },
    /// `%RESPONSE_FLAGS%` (`-` when none, as Envoy).
    ResponseFlags,
    /// `%RESPONSE_CODE_DETAILS%`.
    ResponseCodeDetails,
    /// `%CONNECTION_TERMINATION_DETAILS%`: set only by a network filter that closes the
    /// connection, which never happens to a request that reaches the log here.
    ConnectionTerminationDetails,
    /// `%UPSTREAM_TRANSPORT_FAILURE_REASON%`.
    UpstreamTransportFailureReason,
    /// `%BYTES_RECEIVED%` (request body bytes).
    BytesReceived,
    /// `%BYTES_SENT%` (response body bytes).
    BytesSent,
    /// `%DURATION%` (ms from the request's start to the response's end).
    Duration,
    /// `%REQUEST_DURATION%` (ms from the start to the request's last byte).
    RequestDuration,
    /// `%RESPONSE_DURATION%` (ms from the start to the upstream's response head).
    ResponseDuration,
    /// `%RESPONSE_TX_DURATION%` (ms from the upstream's response head to the response's end).
    ResponseTxDuration,
    /// `%UPSTREAM_REQUEST_ATTEMPT_COUNT%`.
    AttemptCount,
    /// `%GRPC_STATUS(...)%` / `%GRPC_STATUS_NUMBER%`: a gRPC request's status, from the
    /// response's trailers, else its headers, else its HTTP status (Envoy's
    /// `Grpc::Common::getGrpcStatus`).
    GrpcStatus(GrpcStatusFormat),
    /// `%UPSTREAM_HOST%`: the upstream host's address of the last attempt.
    UpstreamHost,
    /// `%UPSTREAM_CLUSTER%` (`raw: false`: the cluster's observability name, its
    /// `alt_stat_name` when set) / `%UPSTREAM_CLUSTER_RAW%` (`raw: true`: its name).
    UpstreamCluster { raw: bool },
    /// `%UPSTREAM_LOCAL_ADDRESS%` or `..._WITHOUT_PORT`: the local address of the connection
    /// the response came on.
    UpstreamLocal { with_port: bool },
    /// `%DOWNSTREAM_DIRECT_REMOTE_ADDRESS%` or `..._WITHOUT_PORT`: the directly connected
    /// peer (behind a PROXY header, the load balancer; else the peer, never an
    /// `x-forwarded-for` address).
    DownstreamDirect { with_port: bool },
    /// `%ROUTE_NAME%`.
    RouteName,
    /// `%REQUESTED_SERVER_NAME%`: the SNI of a TLS connection.
    RequestedServerName,
}

/// How `%GRPC_STATUS%` writes a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GrpcStatusFormat {
    /// `CAMEL_STRING` (the default): `OK`, `NotFound`, ... (a code without a name: the number).
    Camel,
    /// `SNAKE_STRING`: `OK`, `NOT_FOUND`, ...
    Snake,
    /// `NUMBER`.
    Number,
}

impl LogOp {
    /// The operator `name` with its `(arg)` and `:N`; `None` when it is no access log operator.
    pub fn parse(
        name: &str,
        arg: Option<&str>,
        max_len: Option<usize>,
    ) -> Option<Result<Self, String>> {
        let op = match name {
            "RESP" => return Some(resp(arg, max_len)),
            "GRPC_STATUS" => {
                if max_len.is_some() {
                    return Some(Err(
                        "command operator %GRPC_STATUS% takes no length".to_string()
                    ));
                }
                return Some(match arg {
                    None | Some("CAMEL_STRING") => Ok(LogOp::GrpcStatus(GrpcStatusFormat::Camel)),
                    Some("SNAKE_STRING") => Ok(LogOp::GrpcStatus(GrpcStatusFormat::Snake)),
                    Some("NUMBER") => Ok(LogOp::GrpcStatus(GrpcStatusFormat::Number)),
                    Some(other) => Err(format!(
                        "command operator %GRPC_STATUS({other})%: the format is one of CAMEL_STRING, SNAKE_STRING, NUMBER"
                    )),
                });
            }
            "GRPC_STATUS_NUMBER" => LogOp::GrpcStatus(GrpcStatusFormat::Number),
            "REQUEST_DURATION" => LogOp::RequestDuration,
            "RESPONSE_DURATION" => LogOp::ResponseDuration,
            "RESPONSE_TX_DURATION" => LogOp::ResponseTxDuration,
            "UPSTREAM_REQUEST_ATTEMPT_COUNT" => LogOp::AttemptCount,
            "RESPONSE_FLAGS" => LogOp::ResponseFlags,
            "RESPONSE_CODE_DETAILS" => LogOp::ResponseCodeDetails,
            "CONNECTION_TERMINATION_DETAILS" => LogOp::ConnectionTerminationDetails,
            "UPSTREAM_TRANSPORT_FAILURE_REASON" => LogOp::UpstreamTransportFailureReason,
            "BYTES_RECEIVED" => LogOp::BytesReceived,
            "BYTES_SENT" => LogOp::BytesSent,
            "DURATION" => LogOp::Duration,
            "UPSTREAM_HOST" => LogOp::UpstreamHost,
            "UPSTREAM_CLUSTER" => LogOp::UpstreamCluster { raw: false },
            "UPSTREAM_CLUSTER_RAW" => LogOp::UpstreamCluster { raw: true },
            "UPSTREAM_LOCAL_ADDRESS" => LogOp::UpstreamLocal { with_port: true },
            "UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT" => LogOp::UpstreamLocal { with_port: false },
            "DOWNSTREAM_DIRECT_REMOTE_ADDRESS" => LogOp::DownstreamDirect { with_port: true },
            "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT" => {
                LogOp::DownstreamDirect { with_port: false }
            }
            "ROUTE_NAME" => LogOp::RouteName,
            "REQUESTED_SERVER_NAME" => LogOp::RequestedServerName,
            _ => return None,
        };
        if arg.is_some() || max_len.is_some() {
            return Some(Err(format!(
                "command operator %{name}% takes no argument or length"
            )));
        }
        Some(Ok(op))
    }

    /// Whether its value is a number (a JSON format writes it unquoted).
    pub fn is_numeric(&self) -> bool {
        matches!(
            self,
            LogOp::BytesReceived
                | LogOp::BytesSent
                | LogOp::Duration
                | LogOp::RequestDuration
                | LogOp::ResponseDuration
                | LogOp::ResponseTxDuration
                | LogOp::AttemptCount
                | LogOp::GrpcStatus(GrpcStatusFormat::Number)
        )
    }

    /// Whether it reads the response headers.
    pub fn reads_response_headers(&self) -> bool {
        matches!(self, LogOp::Resp { .. })
    }

    /// Appends the value for `e`; false when it has none.
    pub fn push(&self, e: &Entry, out: &mut String) -> bool {
        match self {
            LogOp::Resp { name, alt, max_len } => {
                let Some(h) = e.response_headers.as_ref() else {
                    return false;
                };
                let v = h
                    .get(name)
                    .or_else(|| alt.as_ref().and_then(|a| h.get(a)))
                    .and_then(|v| v.to_str().ok());
                let Some(v) = v else { return false };
                out.push_str(match max_len {
                    Some(n) => truncate(v, *n),
                    None => v,
                });
                true
            }
            LogOp::ResponseFlags => {
                out.push_str(e.flags);
                true
            }
            LogOp::ResponseCodeDetails => e.push_details(out),
            LogOp::ConnectionTerminationDetails => false,
            LogOp::UpstreamTransportFailureReason => {
                match e.details.as_ref().and_then(|d| d.transport_failure()) {
                    Some(t) => {
                        super::details::push_underscored(t, out);
                        true
                    }
                    None => false,
                }
            }
            LogOp::BytesReceived => {
                let _ = write!(out, "{}", e.bytes_rx);
                true
            }
            LogOp::BytesSent => {
                let _ = write!(out, "{}", e.bytes_tx);
                true
            }
            LogOp::Duration => push_ms(Some(e.duration), out),
            LogOp::RequestDuration => push_ms(e.request_duration, out),
            LogOp::ResponseDuration => push_ms(e.response_duration, out),
            LogOp::ResponseTxDuration => push_ms(
                e.response_duration
                    .map(|head| e.duration.saturating_sub(head)),
                out,
            ),
            LogOp::AttemptCount => {
                let _ = write!(out, "{}", e.attempts);
                true
            }
            LogOp::GrpcStatus(f) => {
                if !e.grpc_request {
                    return false;
                }
                // No response at all: no status to infer.
                let code = match (e.grpc_status, e.status) {
                    (Some(c), _) => c,
                    (None, 0) => return false,
                    (None, http) => crate::http::local_reply::grpc_status_of(http),
                };
                push_grpc_status(code, *f, out);
                true
            }
            LogOp::UpstreamHost => push_addr(out, e.upstream_host, true),
            LogOp::UpstreamLocal { with_port } => push_addr(out, e.upstream_local, *with_port),
            LogOp::DownstreamDirect { with_port } => {
                push_addr(out, e.downstream_direct, *with_port)
            }
            LogOp::UpstreamCluster { raw } => {
                let alt = if *raw {
                    None
                } else {
                    e.cluster_alt_name.as_deref()
                };
                push_opt(alt.or(e.cluster.as_deref()), out)
            }
            LogOp::RouteName => push_opt(e.route_name.as_deref(), out),
            LogOp::RequestedServerName => push_opt(e.sni.as_deref(), out),
        }
    }
}

/// `%RESP(name?alt)%`: response header names, lower-cased.
fn resp(arg: Option<&str>, max_len: Option<usize>) -> Result<LogOp, String> {
    let arg = arg.ok_or_else(|| "command operator %RESP% needs (header)".to_string())?;
    let header = |h: &str| {
        HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes())
            .map_err(|_| format!("command operator %RESP({h})%: not a valid header name"))
    };
    let (name, alt) = match arg.split_once('?') {
        Some((m, a)) => (header(m)?, Some(header(a)?)),
        None => (header(arg)?, None),
    };
    Ok(LogOp::Resp { name, alt, max_len })
}

/// A duration in whole ms (Envoy truncates); false when there is none.
fn push_ms(d: Option<std::time::Duration>, out: &mut String) -> bool {
    match d {
        Some(d) => {
            let _ = write!(out, "{}", d.as_millis());
            true
        }
        None => false,
    }
}

/// gRPC's status names: Envoy's `grpcStatusToString` (camel) and absl's `StatusCodeToString`
/// (snake), by code.
const GRPC_NAMES: [(&str, &str); 17] = [
    ("OK", "OK"),
    ("Canceled", "CANCELLED"),
    ("Unknown", "UNKNOWN"),
    ("InvalidArgument", "INVALID_ARGUMENT"),
    ("DeadlineExceeded", "DEADLINE_EXCEEDED"),
    ("NotFound", "NOT_FOUND"),
    ("AlreadyExists", "ALREADY_EXISTS"),
    ("PermissionDenied", "PERMISSION_DENIED"),
    ("ResourceExhausted", "RESOURCE_EXHAUSTED"),
    ("FailedPrecondition", "FAILED_PRECONDITION"),
    ("Aborted", "ABORTED"),
    ("OutOfRange", "OUT_OF_RANGE"),
    ("Unimplemented", "UNIMPLEMENTED"),
    ("Internal", "INTERNAL"),
    ("Unavailable", "UNAVAILABLE"),
    ("DataLoss", "DATA_LOSS"),
    ("Unauthenticated", "UNAUTHENTICATED"),
];

fn push_grpc_status(code: u32, f: GrpcStatusFormat, out: &mut String) {
    let named = usize::try_from(code).ok().and_then(|i| GRPC_NAMES.get(i));
    match (f, named) {
        (GrpcStatusFormat::Camel, Some((camel, _))) => out.push_str(camel),
        (GrpcStatusFormat::Snake, Some((_, snake))) => out.push_str(snake),
        _ => {
            let _ = write!(out, "{code}");
        }
    }
}

fn push_opt(v: Option<&str>, out: &mut String) -> bool {
    v.filter(|v| !v.is_empty())
        .map(|v| out.push_str(v))
        .is_some()
}
