//! The RBAC messages as they appear in YAML/JSON (`config.rbac.v3.*`), read strictly: an unknown
//! field is an error naming it; fields sluice does not implement are read and refused by
//! `build.rs`.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::http::filters::metadata::RawMetadataMatcher;

use crate::config::{
    raw::RawCidrRange,
    raw_route::{RawHeaderMatcher, RawStringMatcher},
};

/// Some value of a field that is refused whatever it holds.
type Refused = Option<serde_json::Value>;

/// `config.rbac.v3.RBAC`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRbac {
    pub action: Option<String>,
    #[serde(default)]
    pub policies: BTreeMap<String, RawPolicy>,
    pub audit_logging_options: Refused,
}

/// `config.rbac.v3.Policy`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPolicy {
    #[serde(default)]
    pub permissions: Vec<RawPermission>,
    #[serde(default)]
    pub principals: Vec<RawPrincipal>,
    pub condition: Refused,
    pub checked_condition: Refused,
    pub cel_config: Refused,
}

/// `config.rbac.v3.Permission.Set`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPermissionSet {
    #[serde(default)]
    pub rules: Vec<RawPermission>,
}

/// `config.rbac.v3.Principal.Set`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPrincipalSet {
    #[serde(default)]
    pub ids: Vec<RawPrincipal>,
}

/// `type.matcher.v3.PathMatcher`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPathMatcher {
    pub path: Option<RawStringMatcher>,
}

/// `type.v3.Int32Range`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawInt32Range {
    pub start: Option<i32>,
    pub end: Option<i32>,
}

/// `config.rbac.v3.Permission` (a oneof: exactly one field).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPermission {
    pub and_rules: Option<RawPermissionSet>,
    pub or_rules: Option<RawPermissionSet>,
    pub any: Option<bool>,
    pub header: Option<RawHeaderMatcher>,
    pub url_path: Option<RawPathMatcher>,
    pub destination_ip: Option<RawCidrRange>,
    pub destination_port: Option<u32>,
    pub destination_port_range: Option<RawInt32Range>,
    pub metadata: Option<RawMetadataMatcher>,
    pub not_rule: Option<Box<RawPermission>>,
    pub requested_server_name: Option<RawStringMatcher>,
    pub matcher: Refused,
    pub uri_template: Option<RawUriTemplate>,
    pub sourced_metadata: Refused,
}

/// `Permission.uri_template`: a `TypedExtensionConfig` of a `UriTemplateMatchConfig`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUriTemplate {
    #[allow(dead_code)]
    pub name: Option<String>,
    pub typed_config: Option<serde_norway::Value>,
}

/// `envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUriTemplateMatchConfig {
    pub path_template: Option<String>,
}

/// `config.rbac.v3.Principal.Authenticated`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAuthenticated {
    pub principal_name: Option<RawStringMatcher>,
}

/// `type.matcher.v3.FilterStateMatcher`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFilterStateMatcher {
    pub key: Option<String>,
    pub string_match: Option<RawStringMatcher>,
    pub address_match: Refused,
}

/// `config.rbac.v3.Principal` (a oneof: exactly one field).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPrincipal {
    pub and_ids: Option<RawPrincipalSet>,
    pub or_ids: Option<RawPrincipalSet>,
    pub any: Option<bool>,
    pub authenticated: Option<RawAuthenticated>,
    pub source_ip: Option<RawCidrRange>,
    pub direct_remote_ip: Option<RawCidrRange>,
    pub remote_ip: Option<RawCidrRange>,
    pub header: Option<RawHeaderMatcher>,
    pub url_path: Option<RawPathMatcher>,
    pub metadata: Option<RawMetadataMatcher>,
    pub filter_state: Option<RawFilterStateMatcher>,
    pub not_id: Option<Box<RawPrincipal>>,
    pub sourced_metadata: Refused,
    pub custom: Refused,
}
