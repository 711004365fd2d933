//! The http_connection_manager's request and response shaping options (Envoy 1.40 semantics,
//! checked by the `hcm_*` conformance cases): the Host's port stripping, path normalisation,
//! the `server` response header, the request head limits and `x-request-id` generation. Parsed
//! here from the raw HCM; applied by `http::normalize`, `http::server_header`, `http::limits`
//! and `http::preroute`.

use std::time::Duration;

use http::HeaderValue;

use super::{path::FieldPath, raw::RawHcm, ConfigError};

/// Envoy's default `server_name`.
pub const DEFAULT_SERVER_NAME: &str = "envoy";
/// Envoy's default `max_request_headers_kb` (60).
pub const DEFAULT_MAX_REQUEST_HEADERS_KB: u32 = 60;
/// Envoy's largest `max_request_headers_kb` (8192, the proto's bound).
pub const MAX_REQUEST_HEADERS_KB: u32 = 8192;
/// Envoy's default `common_http_protocol_options.max_headers_count`.
pub const DEFAULT_MAX_HEADERS_COUNT: u32 = 100;

/// `common_http_protocol_options.headers_with_underscores_action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum UnderscoreAction {
    /// `ALLOW` (default).
    #[default]
    Allow,
    /// `REJECT_REQUEST`: 400 `Bad Request`, connection closed.
    Reject,
    /// `DROP_HEADER`: such headers are removed.
    Drop,
}

/// The HTTP/1 request head limits (`max_request_headers_kb`,
/// `common_http_protocol_options.{max_headers_count, headers_with_underscores_action}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HeadLimits {
    /// `max_request_headers_kb` * 1024: a longer head (request line, headers, CRLFs) gets 431.
    pub max_request_headers_bytes: usize,
    /// `max_headers_count`: a request with more header lines gets 431.
    pub max_headers_count: usize,
    /// `headers_with_underscores_action`.
    pub underscores: UnderscoreAction,
}

impl Default for HeadLimits {
    fn default() -> Self {
        Self {
            max_request_headers_bytes: DEFAULT_MAX_REQUEST_HEADERS_KB as usize * 1024,
            max_headers_count: DEFAULT_MAX_HEADERS_COUNT as usize,
            underscores: UnderscoreAction::Allow,
        }
    }
}

/// Envoy's default `common_http_protocol_options.idle_timeout` of the HCM (1 hour).
pub const DEFAULT_HCM_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// The HCM's connection timers (`common_http_protocol_options`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnTimeouts {
    /// `idle_timeout` (default [`DEFAULT_HCM_IDLE_TIMEOUT`]; `None`: `0s`, disabled): a
    /// connection without an active stream this long is closed.
    pub idle: Option<Duration>,
    /// `max_connection_duration` (default none): the connection is drained and closed this
    /// long after accept.
    pub max_duration: Option<Duration>,
    /// `max_requests_per_connection` (default none; `0` = none): the response to this
    /// request starts the connection's drain (HTTP/1 `connection: close`, HTTP/2 GOAWAY).
    pub max_requests: Option<u32>,
    /// The HCM's `drain_timeout` (default [`DEFAULT_DRAIN_TIMEOUT`]): how long a draining
    /// HTTP/1 connection may still carry a request (answered with `connection: close`).
    pub drain: Duration,
    /// The HCM's `delayed_close_timeout` (default [`DEFAULT_DELAYED_CLOSE_TIMEOUT`]; `None`:
    /// `0s`): how long a connection the proxy closes waits, its write side shut, for the
    /// client to close its own (`http::delayed_close`).
    pub delayed_close: Option<Duration>,
}

/// Envoy's default HCM `drain_timeout`.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Envoy's default HCM `delayed_close_timeout`.
pub const DEFAULT_DELAYED_CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

impl Default for ConnTimeouts {
    fn default() -> Self {
        Self {
            idle: Some(DEFAULT_HCM_IDLE_TIMEOUT),
            max_duration: None,
            max_requests: None,
            drain: DEFAULT_DRAIN_TIMEOUT,
            delayed_close: Some(DEFAULT_DELAYED_CLOSE_TIMEOUT),
        }
    }
}

/// Everything [`parse`] reads.
pub(crate) struct Options {
    pub(crate) strip_port: StripPort,
    pub(crate) path: PathNormalization,
    pub(crate) server_header: ServerHeader,
    pub(crate) head_limits: HeadLimits,
    pub(crate) generate_request_id: bool,
    pub(crate) always_set_request_id_in_response: bool,
    pub(crate) max_stream_duration: Option<Duration>,
    pub(crate) conn_timeouts: ConnTimeouts,
}

/// `strip_matching_host_port` / `strip_any_host_port` (at most one may be set, as Envoy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StripPort {
    /// Neither: the Host is routed and forwarded as sent.
    #[default]
    Keep,
    /// `strip_matching_host_port`: a port equal to the connection's local (original
    /// destination) port is removed.
    Matching,
    /// `strip_any_host_port`: any port is removed.
    Any,
}

/// `path_with_escaped_slashes_action` (`IMPLEMENTATION_SPECIFIC_DEFAULT` is Envoy's
/// `KEEP_UNCHANGED` without a runtime override).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum EscapedSlashes {
    /// `KEEP_UNCHANGED`.
    #[default]
    Keep,
    /// `REJECT_REQUEST`: a path with `%2F`, `%2f`, `%5C` or `%5c` gets 400.
    Reject,
    /// `UNESCAPE_AND_REDIRECT`: such a path gets a 307 to the unescaped (and normalised) path.
    Redirect,
    /// `UNESCAPE_AND_FORWARD`: the unescaped path is routed and forwarded.
    Forward,
}

/// The path options of the HCM, applied in Envoy's order: escaped slashes, `normalize_path`,
/// `merge_slashes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PathNormalization {
    /// `normalize_path` (default false): RFC 3986 dot segments, `\` -> `/`, unreserved
    /// characters decoded, characters outside the path set escaped; `%00` is rejected.
    pub normalize_path: bool,
    /// `merge_slashes` (default false): runs of `/` in the path become one.
    pub merge_slashes: bool,
    /// `path_with_escaped_slashes_action`.
    pub escaped_slashes: EscapedSlashes,
}

impl PathNormalization {
    /// Whether no option is set (the path is used as sent).
    pub fn is_noop(&self) -> bool {
        *self == Self::default()
    }
}

/// `server_header_transformation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ServerTransformation {
    /// `OVERWRITE` (default): every response carries `server: <server_name>`.
    #[default]
    Overwrite,
    /// `APPEND_IF_ABSENT`: set only when the response has no `server` header.
    AppendIfAbsent,
    /// `PASS_THROUGH`: never set; an upstream's header passes unchanged.
    PassThrough,
}

/// `server_name` + `server_header_transformation`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerHeader {
    /// `server_name` (default and when empty: `envoy`).
    pub name: HeaderValue,
    /// `server_header_transformation`.
    pub transformation: ServerTransformation,
}

impl Default for ServerHeader {
    fn default() -> Self {
        Self {
            name: HeaderValue::from_static(DEFAULT_SERVER_NAME),
            transformation: ServerTransformation::Overwrite,
        }
    }
}

/// The request/response shaping options of `raw`, whose path is `p`.
pub(crate) fn parse(raw: &RawHcm, p: &FieldPath) -> Result<Options, ConfigError> {
    let strip_port = match (
        raw.strip_matching_host_port.unwrap_or(false),
        raw.strip_any_host_port.unwrap_or(false),
    ) {
        (true, true) => {
            return Err(p
                .field("strip_any_host_port")
                .err("only one of `strip_matching_host_port` or `strip_any_host_port` can be set"))
        }
        (true, false) => StripPort::Matching,
        (false, true) => StripPort::Any,
        (false, false) => StripPort::Keep,
    };
    let escaped_slashes = match raw.path_with_escaped_slashes_action.as_deref() {
        None | Some("IMPLEMENTATION_SPECIFIC_DEFAULT") | Some("KEEP_UNCHANGED") => {
            EscapedSlashes::Keep
        }
        Some("REJECT_REQUEST") => EscapedSlashes::Reject,
        Some("UNESCAPE_AND_REDIRECT") => EscapedSlashes::Redirect,
        Some("UNESCAPE_AND_FORWARD") => EscapedSlashes::Forward,
        Some(other) => {
            return Err(p.field("path_with_escaped_slashes_action").err(format!(
                "unknown value {other:?} (expected IMPLEMENTATION_SPECIFIC_DEFAULT, \
                 KEEP_UNCHANGED, REJECT_REQUEST, UNESCAPE_AND_REDIRECT or UNESCAPE_AND_FORWARD)"
            )))
        }
    };
    let path = PathNormalization {
        normalize_path: raw.normalize_path.unwrap_or(false),
        merge_slashes: raw.merge_slashes.unwrap_or(false),
        escaped_slashes,
    };
    let transformation = match raw.server_header_transformation.as_deref() {
        None | Some("OVERWRITE") => ServerTransformation::Overwrite,
        Some("APPEND_IF_ABSENT") => ServerTransformation::AppendIfAbsent,
        Some("PASS_THROUGH") => ServerTransformation::PassThrough,
        Some(other) => {
            return Err(p.field("server_header_transformation").err(format!(
                "unknown value {other:?} (expected OVERWRITE, APPEND_IF_ABSENT or PASS_THROUGH)"
            )))
        }
    };
    let name = match raw.server_name.as_deref() {
        None | Some("") => HeaderValue::from_static(DEFAULT_SERVER_NAME),
        Some(n) => HeaderValue::from_str(n).map_err(|_| {
            p.field("server_name")
                .err(format!("{n:?} is not a valid header value"))
        })?,
    };
    let opts = raw.common_http_protocol_options.as_ref();
    Ok(Options {
        strip_port,
        path,
        server_header: ServerHeader {
            name,
            transformation,
        },
        head_limits: head_limits(raw, p)?,
        generate_request_id: raw.generate_request_id.unwrap_or(true),
        always_set_request_id_in_response: raw.always_set_request_id_in_response.unwrap_or(false),
        // `0s` (or unset): the stream duration is not limited.
        max_stream_duration: opts
            .and_then(|o| o.max_stream_duration.as_ref())
            .map(|d| d.0)
            .filter(|d| !d.is_zero()),
        conn_timeouts: ConnTimeouts {
            idle: match opts.and_then(|o| o.idle_timeout.as_ref()) {
                None => Some(DEFAULT_HCM_IDLE_TIMEOUT),
                Some(d) if d.0.is_zero() => None,
                Some(d) => Some(d.0),
            },
            max_duration: opts
                .and_then(|o| o.max_connection_duration.as_ref())
                .map(|d| d.0)
                .filter(|d| !d.is_zero()),
            max_requests: opts
                .and_then(|o| o.max_requests_per_connection)
                .filter(|n| *n > 0),
            drain: raw
                .drain_timeout
                .as_ref()
                .map_or(DEFAULT_DRAIN_TIMEOUT, |d| d.0),
            delayed_close: match raw.delayed_close_timeout.as_ref() {
                None => Some(DEFAULT_DELAYED_CLOSE_TIMEOUT),
                Some(d) if d.0.is_zero() => None,
                Some(d) => Some(d.0),
            },
        },
    })
}

fn head_limits(raw: &RawHcm, p: &FieldPath) -> Result<HeadLimits, ConfigError> {
    let kb = raw
        .max_request_headers_kb
        .unwrap_or(DEFAULT_MAX_REQUEST_HEADERS_KB);
    if kb == 0 || kb > MAX_REQUEST_HEADERS_KB {
        return Err(p.field("max_request_headers_kb").err(format!(
            "{kb} is out of range (1..={MAX_REQUEST_HEADERS_KB})"
        )));
    }
    let cp = p.field("common_http_protocol_options");
    let opts = raw.common_http_protocol_options.as_ref();
    let count = opts
        .and_then(|o| o.max_headers_count)
        .unwrap_or(DEFAULT_MAX_HEADERS_COUNT);
    if count == 0 {
        return Err(cp.field("max_headers_count").err("must be at least 1"));
    }
    let underscores = match opts.and_then(|o| o.headers_with_underscores_action.as_deref()) {
        None | Some("ALLOW") => UnderscoreAction::Allow,
        Some("REJECT_REQUEST") => UnderscoreAction::Reject,
        Some("DROP_HEADER") => UnderscoreAction::Drop,
        Some(other) => {
            return Err(cp.field("headers_with_underscores_action").err(format!(
                "unknown value {other:?} (expected ALLOW, REJECT_REQUEST or DROP_HEADER)"
            )))
        }
    };
    Ok(HeadLimits {
        max_request_headers_bytes: kb as usize * 1024,
        max_headers_count: count as usize,
        underscores,
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{expect_err, with_routes, ROUTES_OK};
    use crate::config::{from_yaml_str, NetworkFilter};

    fn with_hcm(fields: &str) -> String {
        with_routes(ROUTES_OK).replace(
            "stat_prefix: ingress",
            &format!("stat_prefix: ingress\n          {fields}"),
        )
    }

    #[test]
    fn parses_the_options() {
        let b = from_yaml_str(&with_hcm(
            "strip_any_host_port: true\n          normalize_path: true\n          \
             path_with_escaped_slashes_action: UNESCAPE_AND_REDIRECT\n          \
             server_name: edge\n          server_header_transformation: PASS_THROUGH",
        ))
        .expect("valid");
        let NetworkFilter::Http(h) = &b.listeners[0].filter_chains[0].filter else {
            panic!("not an HCM")
        };
        assert_eq!(h.strip_port, super::StripPort::Any);
        assert!(h.path_normalization.normalize_path && !h.path_normalization.merge_slashes);
        assert_eq!(
            h.path_normalization.escaped_slashes,
            super::EscapedSlashes::Redirect
        );
        assert_eq!(h.server_header.name, "edge");
        assert_eq!(h.max_stream_duration, None);
        assert_eq!(
            h.server_header.transformation,
            super::ServerTransformation::PassThrough
        );
    }

    #[test]
    fn max_stream_duration_zero_is_unlimited() {
        let hcm = |d: &str| {
            let b = from_yaml_str(&with_hcm(&format!(
                "common_http_protocol_options: {{ max_stream_duration: {d} }}"
            )))
            .expect("valid");
            let NetworkFilter::Http(h) = &b.listeners[0].filter_chains[0].filter else {
                panic!("not an HCM")
            };
            h.max_stream_duration
        };
        assert_eq!(hcm("0s"), None);
        assert_eq!(hcm("1.5s"), Some(std::time::Duration::from_millis(1500)));
    }

    #[test]
    fn errors_name_the_field() {
        let hcm = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config";
        expect_err(
            &with_hcm("strip_any_host_port: true\n          strip_matching_host_port: true"),
            &format!("{hcm}.strip_any_host_port"),
            "only one of",
        );
        expect_err(
            &with_hcm("path_with_escaped_slashes_action: DROP"),
            &format!("{hcm}.path_with_escaped_slashes_action"),
            "unknown value",
        );
        expect_err(
            &with_hcm("server_header_transformation: HIDE"),
            &format!("{hcm}.server_header_transformation"),
            "unknown value",
        );
        expect_err(
            &with_hcm("max_request_headers_kb: 8193"),
            &format!("{hcm}.max_request_headers_kb"),
            "out of range",
        );
        let cp = format!("{hcm}.common_http_protocol_options");
        expect_err(
            &with_hcm("common_http_protocol_options: { max_headers_count: 0 }"),
            &format!("{cp}.max_headers_count"),
            "at least 1",
        );
        expect_err(
            &with_hcm("common_http_protocol_options: { headers_with_underscores_action: X }"),
            &format!("{cp}.headers_with_underscores_action"),
            "unknown value",
        );
        expect_err(
            &with_hcm("common_http_protocol_options: { max_response_headers_kb: 1 }"),
            &format!("{cp}.max_response_headers_kb"),
            "not supported",
        );
        expect_err(
            &with_hcm("server_name: \"a\\nb\""),
            &format!("{hcm}.server_name"),
            "not a valid header value",
        );
    }
}
