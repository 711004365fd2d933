//! The http_connection_manager's request and response shaping options (Envoy 1.40 semantics,
//! checked by the `hcm_*` conformance cases): the Host's port stripping, path normalisation and
//! the `server` response header. Parsed here from the raw HCM; applied by `http::normalize` and
//! `http::server_header`.

use http::HeaderValue;

use super::{path::FieldPath, raw::RawHcm, ConfigError};

/// Envoy's default `server_name`.
pub const DEFAULT_SERVER_NAME: &str = "envoy";

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
pub(crate) fn parse(
    raw: &RawHcm,
    p: &FieldPath,
) -> Result<(StripPort, PathNormalization, ServerHeader), ConfigError> {
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
    Ok((
        strip_port,
        path,
        ServerHeader {
            name,
            transformation,
        },
    ))
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
        assert_eq!(
            h.server_header.transformation,
            super::ServerTransformation::PassThrough
        );
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
            &with_hcm("server_name: \"a\\nb\""),
            &format!("{hcm}.server_name"),
            "not a valid header value",
        );
    }
}
