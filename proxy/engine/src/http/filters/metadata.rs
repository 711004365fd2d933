//! A request's dynamic metadata as the HTTP filters see it (Envoy's
//! `StreamInfo::dynamicMetadata`), and `type.matcher.v3.MetadataMatcher` over it.
//!
//! Only what a filter here writes is kept: the RBAC filter's shadow and enforced results
//! (`envoy.filters.http.rbac` namespace), which istiod's CUSTOM AuthorizationPolicy reads back
//! through ext_authz's `filter_enabled_metadata`. Values are strings, as those are.

use serde::Deserialize;
use smallvec::SmallVec;

use crate::{
    config::{raw_route::RawStringMatcher, ConfigError, FieldPath},
    route::{build_match::string_matcher, StringMatcher},
};

/// The namespace the RBAC filter writes under, whatever the filter's configured name.
pub const RBAC_NAMESPACE: &str = "envoy.filters.http.rbac";

/// One request's metadata: (namespace, key, value), the latest write of a key winning.
#[derive(Debug, Default)]
pub struct DynamicMetadata(SmallVec<[(&'static str, String, String); 2]>);

impl DynamicMetadata {
    /// Sets `key` under `namespace`.
    pub fn set(&mut self, namespace: &'static str, key: String, value: String) {
        match self
            .0
            .iter_mut()
            .find(|(n, k, _)| *n == namespace && *k == key)
        {
            Some(e) => e.2 = value,
            None => self.0.push((namespace, key, value)),
        }
    }

    /// The value of `key` under `namespace`.
    pub fn get(&self, namespace: &str, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, k, _)| *n == namespace && k == key)
            .map(|(_, _, v)| v.as_str())
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
    double_match: Option<serde_json::Value>,
    string_match: Option<RawStringMatcher>,
    bool_match: Option<bool>,
    present_match: Option<bool>,
    list_match: Option<serde_json::Value>,
    or_match: Option<serde_json::Value>,
}

/// What a matcher wants of the value.
#[derive(Debug)]
enum ValueMatch {
    String(StringMatcher),
    Present(bool),
}

/// A compiled `MetadataMatcher` over one key of one namespace.
#[derive(Debug)]
pub struct MetadataMatcher {
    namespace: String,
    key: String,
    value: ValueMatch,
    invert: bool,
}

impl MetadataMatcher {
    /// Whether the request's metadata matches (Envoy's `MetadataMatcher::match`).
    pub fn matches(&self, md: &DynamicMetadata) -> bool {
        let v = md.get(&self.namespace, &self.key);
        let hit = match &self.value {
            ValueMatch::String(m) => v.is_some_and(|v| m.matches(v)),
            ValueMatch::Present(want) => v.is_some() == *want,
        };
        hit != self.invert
    }
}

/// Compiles a `MetadataMatcher` at `p`: one key deep, a string or presence match (the values
/// the filters here write are strings).
pub(crate) fn build(
    raw: &RawMetadataMatcher,
    p: &FieldPath,
) -> Result<MetadataMatcher, ConfigError> {
    let namespace = raw
        .filter
        .clone()
        .filter(|f| !f.is_empty())
        .ok_or_else(|| p.field("filter").err("required"))?;
    let key = match raw.path.as_slice() {
        [] => return Err(p.field("path").err("required (at least one key)")),
        [one] => one
            .key
            .clone()
            .filter(|k| !k.is_empty())
            .ok_or_else(|| p.field("path").index(0).field("key").err("required"))?,
        _ => {
            return Err(p
                .field("path")
                .unsupported("more than one segment (the metadata kept here is one key deep)"))
        }
    };
    let vp = p.field("value");
    let v = raw.value.as_ref().ok_or_else(|| vp.err("required"))?;
    for (f, set) in [
        ("null_match", v.null_match.is_some()),
        ("double_match", v.double_match.is_some()),
        ("bool_match", v.bool_match.is_some()),
        ("list_match", v.list_match.is_some()),
        ("or_match", v.or_match.is_some()),
    ] {
        if set {
            return Err(vp.field(f).unsupported(
                "(the metadata kept here is strings: use string_match or present_match)",
            ));
        }
    }
    let value = match (&v.string_match, v.present_match) {
        (Some(s), None) => ValueMatch::String(string_matcher(s, &vp.field("string_match"))?),
        (None, Some(b)) => ValueMatch::Present(b),
        (None, None) => return Err(vp.err("one of string_match or present_match is required")),
        (Some(_), Some(_)) => {
            return Err(vp.err("only one of string_match and present_match may be set"))
        }
    };
    Ok(MetadataMatcher {
        namespace,
        key,
        value,
        invert: raw.invert == Some(true),
    })
}
