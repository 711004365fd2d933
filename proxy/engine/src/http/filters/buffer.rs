//! `envoy.filters.http.buffer` (extensions.filters.http.buffer.v3.Buffer): the whole request
//! body is read before the request goes on, as Envoy's `BufferFilter`: past
//! `max_request_bytes` the connection manager's 413 `Payload Too Large`; a body that came
//! without a length goes upstream with its `content-length`. A route's `BufferPerRoute`
//! disables it there or gives it another limit.

use serde::Deserialize;

use super::ext_authz::body::BodySettings;
use crate::config::{ConfigError, FieldPath};

/// The filter's `@type`.
pub const TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer";

/// The per-route config's `@type`.
pub const PER_ROUTE_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute";

/// `Buffer`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBuffer {
    max_request_bytes: Option<u32>,
}

/// `BufferPerRoute`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBufferPerRoute {
    disabled: Option<bool>,
    buffer: Option<RawBuffer>,
}

/// A buffer filter's settings (the filter's, or a route's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffer {
    /// `BufferPerRoute.disabled`.
    pub disabled: bool,
    /// `max_request_bytes`.
    pub max: usize,
}

impl Buffer {
    /// How the body slot reads for it: the whole body, and too large past the limit.
    pub(crate) fn body(&self) -> BodySettings {
        BodySettings {
            max: self.max,
            partial: false,
            pack_as_bytes: false,
        }
    }
}

/// `Buffer` at `p`.
pub(crate) fn build(raw: RawBuffer, p: &FieldPath) -> Result<Buffer, ConfigError> {
    match raw.max_request_bytes {
        Some(n) if n > 0 => Ok(Buffer {
            disabled: false,
            max: n as usize,
        }),
        _ => Err(p.field("max_request_bytes").err("required, greater than 0")),
    }
}

/// `BufferPerRoute` at `p`: exactly one of `disabled: true` and `buffer`.
pub(crate) fn build_per_route(
    raw: RawBufferPerRoute,
    p: &FieldPath,
) -> Result<Buffer, ConfigError> {
    match (raw.disabled, raw.buffer) {
        (Some(true), None) => Ok(Buffer {
            disabled: true,
            max: 0,
        }),
        (None, Some(b)) => build(b, &p.field("buffer")),
        (Some(false), _) => Err(p.field("disabled").err("must be true when set")),
        _ => Err(p.err("exactly one of disabled and buffer")),
    }
}
