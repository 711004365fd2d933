//! The HCM's `local_reply_config` (Envoy's `LocalReplyConfig`): how the replies the proxy makes
//! itself (no route, no healthy upstream, timeouts, refusals, direct responses, redirects, fault
//! aborts, rate limits) are rewritten. The first mapper whose `filter` admits the reply may set
//! its `status_code`, its `body` (`inline_string`), add `headers_to_add`, and choose its
//! `body_format_override`; then the chosen body format (else `body_format`, else the body as it
//! is) renders the body, `%LOCAL_REPLY_BODY%` being the reply's text (`http/local_reply_map.rs`).

use std::sync::Arc;

use serde::Deserialize;

use super::{
    access_log_filter::{self, AccessLogFilter, RawAccessLogFilter},
    raw_route::{RawDataSource, RawHeaderValueOption},
    ConfigError, FieldPath,
};
use crate::route::{
    body_format::{BodyFormat, RawBodyFormat},
    HeaderMutations,
};

/// `local_reply_config`, compiled.
#[derive(Debug, Clone)]
pub struct LocalReplyConfig {
    /// `mappers[]`, in order: the first whose filter admits a reply applies.
    pub mappers: Box<[Mapper]>,
    /// `body_format` (none: the reply's text as it is, `text/plain`).
    pub body_format: Option<BodyFormat>,
    /// A mapper filter reads request headers: the request keeps a copy for it.
    pub reads_headers: bool,
}

/// One `ResponseMapper`.
#[derive(Debug, Clone)]
pub struct Mapper {
    /// `filter` (required).
    pub filter: AccessLogFilter,
    /// `status_code`.
    pub status_code: Option<u16>,
    /// `body.inline_string`.
    pub body: Option<Arc<str>>,
    /// `body_format_override`.
    pub body_format: Option<BodyFormat>,
    /// `headers_to_add`, rendered against the request.
    pub headers: HeaderMutations,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLocalReplyConfig {
    #[serde(default)]
    mappers: Vec<RawMapper>,
    body_format: Option<RawBodyFormat>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMapper {
    filter: Option<RawAccessLogFilter>,
    status_code: Option<u32>,
    body: Option<RawDataSource>,
    body_format_override: Option<RawBodyFormat>,
    #[serde(default)]
    headers_to_add: Vec<RawHeaderValueOption>,
}

/// Parses `local_reply_config` at `p`.
pub(crate) fn parse(
    raw: &RawLocalReplyConfig,
    p: &FieldPath,
) -> Result<LocalReplyConfig, ConfigError> {
    let mut mappers = Vec::with_capacity(raw.mappers.len());
    for (i, m) in raw.mappers.iter().enumerate() {
        mappers.push(mapper(m, &p.field("mappers").index(i))?);
    }
    let body_format = match &raw.body_format {
        Some(f) => Some(BodyFormat::build(f, &p.field("body_format"))?),
        None => None,
    };
    let reads_headers = mappers.iter().any(|m| m.filter.reads_headers());
    Ok(LocalReplyConfig {
        mappers: mappers.into(),
        body_format,
        reads_headers,
    })
}

fn mapper(raw: &RawMapper, p: &FieldPath) -> Result<Mapper, ConfigError> {
    let fp = p.field("filter");
    let filter =
        access_log_filter::parse(raw.filter.as_ref().ok_or_else(|| fp.err("required"))?, &fp)?;
    let status_code = match raw.status_code {
        None => None,
        Some(c) if (200..600).contains(&c) => Some(c as u16),
        Some(c) => {
            return Err(p
                .field("status_code")
                .err(format!("{c} is not in [200, 600)")))
        }
    };
    let body = match &raw.body {
        None => None,
        Some(b) => {
            let bp = p.field("body");
            if b.filename.is_some() {
                return Err(bp.field("filename").unsupported("use inline_string"));
            }
            Some(Arc::from(
                b.inline_string
                    .as_deref()
                    .ok_or_else(|| bp.field("inline_string").err("required"))?,
            ))
        }
    };
    let body_format = match &raw.body_format_override {
        Some(f) => Some(BodyFormat::build(f, &p.field("body_format_override"))?),
        None => None,
    };
    let ap = p.field("headers_to_add");
    let headers = crate::route::build_headers::mutations_at(&raw.headers_to_add, &[], &ap, &ap)?;
    Ok(Mapper {
        filter,
        status_code,
        body,
        body_format,
        headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(yaml: &str) -> String {
        let raw: RawLocalReplyConfig = serde_norway::from_str(yaml).expect("raw config");
        parse(&raw, &FieldPath::root().field("local_reply_config"))
            .expect_err("refused")
            .to_string()
    }

    #[test]
    fn refusals_name_the_field() {
        let e = err("mappers: [{status_code: 502}]");
        assert!(
            e.contains("local_reply_config.mappers[0].filter: required"),
            "{e}"
        );
        let e = err("mappers: [{filter: {not_health_check_filter: {}}, status_code: 99}]");
        assert!(
            e.contains("mappers[0].status_code: 99 is not in [200, 600)"),
            "{e}"
        );
        let e = err("mappers: [{filter: {not_health_check_filter: {}}, body: {filename: /x}}]");
        assert!(e.contains("mappers[0].body.filename: not supported"), "{e}");
        let e = err("body_format: {text_format: '%NOPE%'}");
        assert!(e.contains("local_reply_config.body_format"), "{e}");
    }
}
