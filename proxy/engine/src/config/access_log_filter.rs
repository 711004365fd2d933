//! `AccessLog.filter` (`config.accesslog.v3.AccessLogFilter`): which requests an access log
//! writes. Supported: `status_code_filter` and `duration_filter` (a comparison with the
//! status sent downstream, 0 when none, or the request's duration in ms), `response_flag_filter`
//! (any of the flags, or any flag at all when none are listed), `header_filter` (a route
//! `HeaderMatcher` over the request headers as the HCM received them, kept for the log only when
//! a filter asks), `not_health_check_filter` (false for a request the health check filter took
//! as a health check), `and_filter` / `or_filter`.
//! A `RuntimeUInt32`'s `runtime_key` is a documented no-op (no runtime here): its
//! `default_value` is used. The other filters are refused, naming the field.

use std::{borrow::Cow, sync::Arc};

use serde::Deserialize;
use serde_norway::Value;

use super::{raw_route::RawHeaderMatcher, ConfigError, FieldPath};
use crate::route::HeaderMatcher;

/// One `AccessLogFilter`.
#[derive(Debug, Clone)]
pub enum AccessLogFilter {
    /// `status_code_filter`.
    StatusCode(Comparison),
    /// `duration_filter` (ms).
    Duration(Comparison),
    /// `not_health_check_filter`.
    NotHealthCheck,
    /// `response_flag_filter`: these flags (empty: any flag).
    ResponseFlags(Box<[String]>),
    /// `header_filter`.
    Header(Arc<HeaderMatcher>),
    /// `and_filter`.
    And(Box<[AccessLogFilter]>),
    /// `or_filter`.
    Or(Box<[AccessLogFilter]>),
}

/// `ComparisonFilter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Comparison {
    /// `op`.
    pub op: CmpOp,
    /// `value.default_value`.
    pub value: u64,
}

/// `ComparisonFilter.Op`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `EQ` (the default).
    Eq,
    /// `GE`.
    Ge,
    /// `LE`.
    Le,
    /// `NE`.
    Ne,
}

/// What a filter looks at, once the response is done.
#[derive(Debug, Clone, Copy)]
pub struct Logged<'a> {
    /// Status sent downstream (0: none).
    pub status: u16,
    /// Duration in ms.
    pub duration_ms: u64,
    /// Response flags, comma-separated (`-`: none).
    pub flags: &'a str,
    /// `:method`, `:path` and `:authority` as received.
    pub method: &'a str,
    /// See `method`.
    pub path: &'a str,
    /// See `method`.
    pub authority: Option<&'a str>,
    /// The request headers as received (kept only when a filter reads them).
    pub headers: Option<&'a http::HeaderMap>,
    /// A health check filter took the request as a health check.
    pub health_check: bool,
}

impl Comparison {
    fn holds(self, v: u64) -> bool {
        match self.op {
            CmpOp::Eq => v == self.value,
            CmpOp::Ge => v >= self.value,
            CmpOp::Le => v <= self.value,
            CmpOp::Ne => v != self.value,
        }
    }
}

impl AccessLogFilter {
    /// Whether the filter reads request headers (the log then keeps them).
    pub fn reads_headers(&self) -> bool {
        match self {
            Self::Header(_) => true,
            Self::And(fs) | Self::Or(fs) => fs.iter().any(Self::reads_headers),
            _ => false,
        }
    }

    /// Whether the request is logged.
    pub fn admits(&self, l: &Logged<'_>) -> bool {
        match self {
            Self::StatusCode(c) => c.holds(u64::from(l.status)),
            Self::Duration(c) => c.holds(l.duration_ms),
            Self::NotHealthCheck => !l.health_check,
            Self::ResponseFlags(want) => {
                let mut set = l.flags.split(',').filter(|f| !f.is_empty() && *f != "-");
                if want.is_empty() {
                    set.next().is_some()
                } else {
                    set.any(|f| want.iter().any(|w| w == f))
                }
            }
            Self::Header(m) => {
                let single = |v: Option<&str>| m.matches(v.map(Cow::Borrowed));
                match m.name.as_str() {
                    ":method" => single(Some(l.method)),
                    ":path" => single(Some(l.path)),
                    ":authority" | "host" => single(l.authority),
                    name => match l.headers {
                        Some(h) => m.matches_any(name, h),
                        None => single(None),
                    },
                }
            }
            Self::And(fs) => fs.iter().all(|f| f.admits(l)),
            Self::Or(fs) => fs.iter().any(|f| f.admits(l)),
        }
    }
}

/// Envoy's response flag names (`ResponseFlagFilter.flags` must be among them).
const FLAGS: &[&str] = &[
    "LH", "UH", "UT", "LR", "UR", "UF", "UC", "UO", "NR", "DI", "FI", "RL", "UAEX", "RLSE", "DC",
    "URX", "SI", "IH", "DPE", "UMSDR", "RFCF", "NFCF", "DT", "UPE", "NC", "OM", "DF", "DO", "DR",
    "UDO",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAccessLogFilter {
    status_code_filter: Option<RawComparisonOf>,
    duration_filter: Option<RawComparisonOf>,
    not_health_check_filter: Option<Value>,
    and_filter: Option<RawFilters>,
    or_filter: Option<RawFilters>,
    response_flag_filter: Option<RawFlags>,
    traceable_filter: Option<Value>,
    runtime_filter: Option<Value>,
    header_filter: Option<RawHeaderFilter>,
    grpc_status_filter: Option<Value>,
    extension_filter: Option<Value>,
    metadata_filter: Option<Value>,
    log_type_filter: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawComparisonOf {
    comparison: Option<RawComparison>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawComparison {
    op: Option<String>,
    value: Option<RawRuntimeUInt32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRuntimeUInt32 {
    default_value: Option<u32>,
    /// A documented no-op: there is no runtime.
    #[allow(dead_code)]
    runtime_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFilters {
    #[serde(default)]
    filters: Vec<RawAccessLogFilter>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeaderFilter {
    header: Option<RawHeaderMatcher>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFlags {
    #[serde(default)]
    flags: Vec<String>,
}

/// Parses one filter at `p`: exactly one of the specifiers, as Envoy's oneof.
pub(crate) fn parse(
    raw: &RawAccessLogFilter,
    p: &FieldPath,
) -> Result<AccessLogFilter, ConfigError> {
    let unsupported = [
        ("traceable_filter", raw.traceable_filter.is_some()),
        ("runtime_filter", raw.runtime_filter.is_some()),
        ("grpc_status_filter", raw.grpc_status_filter.is_some()),
        ("extension_filter", raw.extension_filter.is_some()),
        ("metadata_filter", raw.metadata_filter.is_some()),
        ("log_type_filter", raw.log_type_filter.is_some()),
    ];
    if let Some((name, _)) = unsupported.iter().find(|(_, set)| *set) {
        return Err(p.field(name).unsupported(
            "access log filters other than status_code_filter, duration_filter, \
             response_flag_filter, header_filter, not_health_check_filter, and_filter and \
             or_filter",
        ));
    }
    let mut found: Vec<AccessLogFilter> = Vec::with_capacity(1);
    if let Some(c) = &raw.status_code_filter {
        found.push(AccessLogFilter::StatusCode(comparison(
            c,
            &p.field("status_code_filter"),
        )?));
    }
    if let Some(c) = &raw.duration_filter {
        found.push(AccessLogFilter::Duration(comparison(
            c,
            &p.field("duration_filter"),
        )?));
    }
    if let Some(h) = &raw.header_filter {
        let hp = p.field("header_filter").field("header");
        let m = h.header.as_ref().ok_or_else(|| hp.err("required"))?;
        found.push(AccessLogFilter::Header(Arc::new(
            crate::route::build_match::header_matcher(m, &hp)?,
        )));
    }
    if raw.not_health_check_filter.is_some() {
        found.push(AccessLogFilter::NotHealthCheck);
    }
    if let Some(f) = &raw.and_filter {
        found.push(AccessLogFilter::And(list(f, &p.field("and_filter"))?));
    }
    if let Some(f) = &raw.or_filter {
        found.push(AccessLogFilter::Or(list(f, &p.field("or_filter"))?));
    }
    if let Some(f) = &raw.response_flag_filter {
        let fp = p.field("response_flag_filter").field("flags");
        for (i, flag) in f.flags.iter().enumerate() {
            if !FLAGS.contains(&flag.as_str()) {
                return Err(fp.index(i).err(format!("unknown response flag {flag:?}")));
            }
        }
        found.push(AccessLogFilter::ResponseFlags(f.flags.clone().into()));
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(p.err("one filter is required")),
        _ => Err(p.err("only one filter may be set")),
    }
}

fn comparison(raw: &RawComparisonOf, p: &FieldPath) -> Result<Comparison, ConfigError> {
    let cp = p.field("comparison");
    let c = raw.comparison.as_ref().ok_or_else(|| cp.err("required"))?;
    let op = match c.op.as_deref() {
        None | Some("EQ") => CmpOp::Eq,
        Some("GE") => CmpOp::Ge,
        Some("LE") => CmpOp::Le,
        Some("NE") => CmpOp::Ne,
        Some(o) => return Err(cp.field("op").err(format!("unknown value {o:?}"))),
    };
    let value = c
        .value
        .as_ref()
        .ok_or_else(|| cp.field("value").err("required"))?;
    Ok(Comparison {
        op,
        value: u64::from(value.default_value.unwrap_or(0)),
    })
}

fn list(raw: &RawFilters, p: &FieldPath) -> Result<Box<[AccessLogFilter]>, ConfigError> {
    let fp = p.field("filters");
    if raw.filters.len() < 2 {
        return Err(fp.err("at least 2 filters are required"));
    }
    raw.filters
        .iter()
        .enumerate()
        .map(|(i, f)| parse(f, &fp.index(i)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logged(status: u16, duration_ms: u64, flags: &str) -> Logged<'_> {
        Logged {
            status,
            duration_ms,
            flags,
            method: "GET",
            path: "/",
            authority: None,
            headers: None,
            health_check: false,
        }
    }

    #[test]
    fn filters_compare_as_envoys() {
        let ge500 = AccessLogFilter::StatusCode(Comparison {
            op: CmpOp::Ge,
            value: 500,
        });
        assert!(ge500.admits(&logged(503, 0, "UH")));
        assert!(!ge500.admits(&logged(200, 0, "-")));
        let any_flag = AccessLogFilter::ResponseFlags(Box::new([]));
        assert!(any_flag.admits(&logged(503, 0, "URX,UT")));
        assert!(!any_flag.admits(&logged(200, 0, "-")));
        let ut = AccessLogFilter::ResponseFlags(Box::new(["UT".to_string()]));
        assert!(ut.admits(&logged(504, 0, "URX,UT")));
        assert!(!ut.admits(&logged(503, 0, "UH")));
        let slow_or_error = AccessLogFilter::Or(Box::new([
            ge500.clone(),
            AccessLogFilter::Duration(Comparison {
                op: CmpOp::Ge,
                value: 100,
            }),
        ]));
        assert!(slow_or_error.admits(&logged(200, 150, "-")));
        assert!(!slow_or_error.admits(&logged(200, 5, "-")));
        let both = AccessLogFilter::And(Box::new([ge500, AccessLogFilter::NotHealthCheck]));
        assert!(both.admits(&logged(500, 0, "-")));
    }

    fn err(yaml: &str) -> String {
        let raw: RawAccessLogFilter = serde_norway::from_str(yaml).expect("raw filter");
        parse(&raw, &FieldPath::root().field("filter"))
            .expect_err("refused")
            .to_string()
    }

    #[test]
    fn refusals_name_the_field() {
        let e = err("traceable_filter: {}");
        assert!(e.contains("filter.traceable_filter: not supported"), "{e}");
        let e = err("header_filter: {}");
        assert!(e.contains("filter.header_filter.header: required"), "{e}");
        let e = err("response_flag_filter: {flags: [UH, XX]}");
        assert!(
            e.contains("filter.response_flag_filter.flags[1]: unknown response flag"),
            "{e}"
        );
        let e = err("or_filter: {filters: [{not_health_check_filter: {}}]}");
        assert!(e.contains("filter.or_filter.filters: at least 2"), "{e}");
        let e = err("status_code_filter: {comparison: {op: GT, value: {default_value: 1}}}");
        assert!(e.contains("filter.status_code_filter.comparison.op"), "{e}");
        let e = err("duration_filter: {comparison: {op: GE}}");
        assert!(
            e.contains("filter.duration_filter.comparison.value: required"),
            "{e}"
        );
        let e = err("{}");
        assert!(e.contains("one filter is required"), "{e}");
    }
}
