//! A request's dynamic metadata as the HTTP filters see it (Envoy's
//! `StreamInfo::dynamicMetadata`), and `type.matcher.v3.MetadataMatcher` over it.
//!
//! Only what a filter here writes is kept: the RBAC filter's shadow and enforced results
//! (`envoy.filters.http.rbac`), which istiod's CUSTOM AuthorizationPolicy reads back through
//! ext_authz's `filter_enabled_metadata`, and the jwt_authn filter's verified payloads
//! (`envoy.filters.http.jwt_authn`), which istiod's `requestPrincipals` / `request.auth.claims`
//! read through RBAC `metadata` principals. Values are JSON values (Envoy's `Struct`).

use serde::Deserialize;
use serde_json::Value;
use smallvec::SmallVec;

use crate::{
    config::{raw_route::RawStringMatcher, ConfigError, FieldPath},
    route::{build_match::string_matcher, StringMatcher},
};

/// The namespace the RBAC filter writes under, whatever the filter's configured name.
pub const RBAC_NAMESPACE: &str = "envoy.filters.http.rbac";

/// The namespace the jwt_authn filter writes its payloads under.
pub const JWT_NAMESPACE: &str = "envoy.filters.http.jwt_authn";

/// One request's metadata: (namespace, key, value), the latest write of a key winning.
#[derive(Debug, Default, Clone)]
pub struct DynamicMetadata(SmallVec<[(&'static str, String, Value); 2]>);

impl DynamicMetadata {
    /// Sets `key` under `namespace` to a string.
    pub fn set(&mut self, namespace: &'static str, key: String, value: String) {
        self.set_value(namespace, key, Value::String(value));
    }

    /// Sets `key` under `namespace`.
    pub fn set_value(&mut self, namespace: &'static str, key: String, value: Value) {
        match self
            .0
            .iter_mut()
            .find(|(n, k, _)| *n == namespace && *k == key)
        {
            Some(e) => e.2 = value,
            None => self.0.push((namespace, key, value)),
        }
    }

    /// The string value of `key` under `namespace`.
    pub fn get(&self, namespace: &str, key: &str) -> Option<&str> {
        self.value(namespace, &[key]).and_then(Value::as_str)
    }

    /// Envoy's `Metadata::metadataValue`: the value at `path` (keys into nested structs) under
    /// `namespace`; None when a key is missing or a step is not a struct.
    pub fn value<S: AsRef<str>>(&self, namespace: &str, path: &[S]) -> Option<&Value> {
        let (first, rest) = path.split_first()?;
        let mut v = self
            .0
            .iter()
            .find(|(n, k, _)| *n == namespace && k == first.as_ref())
            .map(|(_, _, v)| v)?;
        for k in rest {
            v = v.as_object()?.get(k.as_ref())?;
        }
        Some(v)
    }
}

/// `type.matcher.v3.MetadataMatcher`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMetadataMatcher {
    filter: Option<String>,
    #[serde(default)]
    path: Vec<RawPathSegment>,
    value: Option<RawValueMatcher>,
    invert: Option<bool>,
}

/// `MetadataMatcher.PathSegment`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPathSegment {
    key: Option<String>,
}

/// `type.matcher.v3.ValueMatcher`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawValueMatcher {
    null_match: Option<serde_json::Value>,
    double_match: Option<RawDoubleMatcher>,
    string_match: Option<RawStringMatcher>,
    bool_match: Option<bool>,
    present_match: Option<bool>,
    list_match: Option<RawListMatcher>,
    or_match: Option<RawOrMatcher>,
}

/// `type.matcher.v3.DoubleMatcher`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDoubleMatcher {
    range: Option<RawDoubleRange>,
    exact: Option<f64>,
}

/// `type.v3.DoubleRange`: `[start, end)`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDoubleRange {
    start: Option<f64>,
    end: Option<f64>,
}

/// `type.matcher.v3.ListMatcher`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListMatcher {
    one_of: Option<Box<RawValueMatcher>>,
}

/// `type.matcher.v3.OrMatcher`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOrMatcher {
    #[serde(default)]
    value_matchers: Vec<RawValueMatcher>,
}

/// A compiled `ValueMatcher` (Envoy's `ValueMatcher::create`).
#[derive(Debug, Clone)]
enum ValueMatch {
    Null,
    Double {
        start: f64,
        end: f64,
    },
    DoubleExact(f64),
    String(StringMatcher),
    Bool(bool),
    Present(bool),
    /// `list_match.one_of`: a list with an element that matches.
    ListOneOf(Box<ValueMatch>),
    Or(Vec<ValueMatch>),
}

impl ValueMatch {
    /// `None`: the path names nothing (`KIND_NOT_SET`).
    fn matches(&self, v: Option<&Value>) -> bool {
        match self {
            // Envoy's PresentMatcher: `present_match: false` never matches (use `invert`).
            ValueMatch::Present(want) => *want && v.is_some(),
            ValueMatch::Or(all) => all.iter().any(|m| m.matches(v)),
            ValueMatch::Null => matches!(v, Some(Value::Null)),
            ValueMatch::Double { start, end } => v
                .and_then(Value::as_f64)
                .is_some_and(|d| *start <= d && d < *end),
            ValueMatch::DoubleExact(x) => v.and_then(Value::as_f64) == Some(*x),
            ValueMatch::String(m) => v.and_then(Value::as_str).is_some_and(|s| m.matches(s)),
            ValueMatch::Bool(b) => v.and_then(Value::as_bool) == Some(*b),
            ValueMatch::ListOneOf(m) => v
                .and_then(Value::as_array)
                .is_some_and(|l| l.iter().any(|e| m.matches(Some(e)))),
        }
    }
}

/// A compiled `MetadataMatcher`.
#[derive(Debug, Clone)]
pub struct MetadataMatcher {
    namespace: String,
    path: Vec<String>,
    value: ValueMatch,
    invert: bool,
}

impl MetadataMatcher {
    /// Whether the request's metadata matches (Envoy's `MetadataMatcher::match`).
    pub fn matches(&self, md: &DynamicMetadata) -> bool {
        self.value.matches(md.value(&self.namespace, &self.path)) != self.invert
    }

    /// The namespace the matcher reads.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }
}

/// Compiles a `MetadataMatcher` at `p`.
pub(crate) fn build(
    raw: &RawMetadataMatcher,
    p: &FieldPath,
) -> Result<MetadataMatcher, ConfigError> {
    let namespace = raw
        .filter
        .clone()
        .filter(|f| !f.is_empty())
        .ok_or_else(|| p.field("filter").err("required"))?;
    if raw.path.is_empty() {
        return Err(p.field("path").err("required (at least one key)"));
    }
    let path = raw
        .path
        .iter()
        .enumerate()
        .map(|(i, seg)| {
            seg.key
                .clone()
                .filter(|k| !k.is_empty())
                .ok_or_else(|| p.field("path").index(i).field("key").err("required"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let vp = p.field("value");
    let v = raw.value.as_ref().ok_or_else(|| vp.err("required"))?;
    Ok(MetadataMatcher {
        namespace,
        path,
        value: value_matcher(v, &vp)?,
        invert: raw.invert == Some(true),
    })
}

/// Compiles a `ValueMatcher` at `p`: exactly one of its fields.
fn value_matcher(v: &RawValueMatcher, p: &FieldPath) -> Result<ValueMatch, ConfigError> {
    let set = [
        v.null_match.is_some(),
        v.double_match.is_some(),
        v.string_match.is_some(),
        v.bool_match.is_some(),
        v.present_match.is_some(),
        v.list_match.is_some(),
        v.or_match.is_some(),
    ];
    match set.iter().filter(|s| **s).count() {
        0 => return Err(p.err("one of null_match, double_match, string_match, bool_match, present_match, list_match or or_match is required")),
        1 => {}
        _ => return Err(p.err("only one of null_match, double_match, string_match, bool_match, present_match, list_match and or_match may be set")),
    }
    if v.null_match.is_some() {
        return Ok(ValueMatch::Null);
    }
    if let Some(d) = &v.double_match {
        let dp = p.field("double_match");
        return match (&d.range, d.exact) {
            (Some(r), None) => Ok(ValueMatch::Double {
                start: r.start.unwrap_or(0.0),
                end: r.end.unwrap_or(0.0),
            }),
            (None, Some(x)) => Ok(ValueMatch::DoubleExact(x)),
            _ => Err(dp.err("exactly one of range and exact is required")),
        };
    }
    if let Some(s) = &v.string_match {
        return Ok(ValueMatch::String(string_matcher(
            s,
            &p.field("string_match"),
        )?));
    }
    if let Some(b) = v.bool_match {
        return Ok(ValueMatch::Bool(b));
    }
    if let Some(b) = v.present_match {
        return Ok(ValueMatch::Present(b));
    }
    if let Some(l) = &v.list_match {
        let lp = p.field("list_match");
        let one = l
            .one_of
            .as_ref()
            .ok_or_else(|| lp.field("one_of").err("required"))?;
        return Ok(ValueMatch::ListOneOf(Box::new(value_matcher(
            one,
            &lp.field("one_of"),
        )?)));
    }
    let o = v.or_match.as_ref().expect("counted");
    let op = p.field("or_match").field("value_matchers");
    if o.value_matchers.len() < 2 {
        return Err(op.err("at least two value matchers are required"));
    }
    o.value_matchers
        .iter()
        .enumerate()
        .map(|(i, m)| value_matcher(m, &op.index(i)))
        .collect::<Result<Vec<_>, _>>()
        .map(ValueMatch::Or)
}
