//! `core.v3.Http1ProtocolOptions.header_key_format`: the case HTTP/1 header names are written
//! in. On the HTTP connection manager it shapes what goes to the client, on a cluster what goes
//! to the upstream; Envoy (and sluice) write lower case without it.

use serde::Deserialize;

use super::raw::{typed_config, Empty, RawTypedExtension};
use super::{ConfigError, FieldPath};

/// `envoy.extensions.http.header_formatters.preserve_case.v3.PreserveCaseFormatterConfig`.
const PRESERVE_CASE_TYPE: &str = "type.googleapis.com/envoy.extensions.http.header_formatters.preserve_case.v3.PreserveCaseFormatterConfig";

/// How HTTP/1 header names are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum HeaderKeyFormat {
    /// Lower case (no `header_key_format`).
    #[default]
    Lower,
    /// `proper_case_words`: the first letter and each letter after a `-` upper case
    /// (`x-request-id` -> `X-Request-Id`), unless the message keeps the case it came with.
    ProperCase,
    /// The `preserve_case` stateful formatter: a message's header names keep the case they
    /// were received in (those added here are written lower case). On the HTTP connection
    /// manager it records the request's, on a cluster the upstream response's.
    PreserveCase {
        /// `forward_reason_phrase` (a cluster's): the upstream's reason phrase goes to the
        /// client instead of the standard one.
        forward_reason_phrase: bool,
    },
}

impl HeaderKeyFormat {
    /// Header names are written in proper case when the message keeps no case of its own.
    pub fn proper_case(self) -> bool {
        self == Self::ProperCase
    }

    /// The case header names are received in is kept for writing them out.
    pub fn preserves_case(self) -> bool {
        matches!(self, Self::PreserveCase { .. })
    }

    /// A response's reason phrase is forwarded (a cluster's `forward_reason_phrase`).
    pub fn forwards_reason_phrase(self) -> bool {
        self == Self::PreserveCase {
            forward_reason_phrase: true,
        }
    }
}

/// `Http1ProtocolOptions.HeaderKeyFormat` (a oneof).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHeaderKeyFormat {
    pub proper_case_words: Option<Empty>,
    pub stateful_formatter: Option<RawTypedExtension>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPreserveCase {
    forward_reason_phrase: Option<bool>,
    formatter_type_on_envoy_headers: Option<String>,
}

/// Reads `header_key_format` at `p` (`None`: lower case).
pub(crate) fn parse(
    raw: Option<&RawHeaderKeyFormat>,
    p: &FieldPath,
) -> Result<HeaderKeyFormat, ConfigError> {
    let Some(raw) = raw else {
        return Ok(HeaderKeyFormat::Lower);
    };
    match (&raw.proper_case_words, &raw.stateful_formatter) {
        (Some(_), None) => Ok(HeaderKeyFormat::ProperCase),
        (None, Some(s)) => {
            let sp = p.field("stateful_formatter");
            let tp = sp.field("typed_config");
            let tc = s.typed_config.as_ref().ok_or_else(|| tp.err("missing"))?;
            let c: RawPreserveCase = typed_config(tc, &tp, PRESERVE_CASE_TYPE)?;
            match c.formatter_type_on_envoy_headers.as_deref() {
                None | Some("DEFAULT") => {}
                Some("PROPER_CASE") => {
                    return Err(tp.field("formatter_type_on_envoy_headers").unsupported(
                        "DEFAULT only (headers added here are written lower case; proper case \
                         for them alone is not implemented)",
                    ))
                }
                Some(other) => {
                    return Err(tp.field("formatter_type_on_envoy_headers").err(format!(
                        "unknown value {other:?} (expected DEFAULT or PROPER_CASE)"
                    )))
                }
            }
            Ok(HeaderKeyFormat::PreserveCase {
                forward_reason_phrase: c.forward_reason_phrase.unwrap_or(false),
            })
        }
        (None, None) => Err(p.err("one of proper_case_words or stateful_formatter is required")),
        (Some(_), Some(_)) => {
            Err(p.err("only one of proper_case_words and stateful_formatter may be set"))
        }
    }
}

#[cfg(test)]
#[path = "header_key_format_tests.rs"]
mod tests;
