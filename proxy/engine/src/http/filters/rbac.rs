//! `envoy.filters.http.rbac` (extensions.filters.http.rbac.v3.RBAC): the request is checked
//! against the enforced `rules` (a denied one gets Envoy's 403 `RBAC: access denied`) and the
//! `shadow_rules` (counted only). A route's `RBACPerRoute` replaces both; one without rules turns
//! the filter off for that route, as Envoy's engine-less config. Counters
//! `http.<stat_prefix>.rbac[.<rules_stat_prefix>].{allowed,denied}` and
//! `...rbac[.<shadow_rules_stat_prefix>].{shadow_allowed,shadow_denied}`, resolved when the HCM
//! is built.

use serde::Deserialize;

use crate::{
    config::{ConfigError, FieldPath},
    rbac::{self, raw::RawRbac, rules::Rules},
};

/// The filter's config, or a route's replacement.
pub type Rbac = Rules;

/// `@type` of the filter's config.
pub const TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC";

/// `@type` of its per-route config.
pub const PER_ROUTE_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute";

/// The body of Envoy's denial.
pub const DENIED_BODY: &str = "RBAC: access denied";

/// `extensions.filters.http.rbac.v3.RBAC`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRbacFilter {
    rules: Option<RawRbac>,
    rules_stat_prefix: Option<String>,
    matcher: Option<serde_json::Value>,
    shadow_rules: Option<RawRbac>,
    shadow_matcher: Option<serde_json::Value>,
    shadow_rules_stat_prefix: Option<String>,
    track_per_rule_stats: Option<bool>,
}

/// `extensions.filters.http.rbac.v3.RBACPerRoute`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRbacPerRoute {
    rbac: Option<RawRbacFilter>,
}

/// Compiles the filter config at `p`.
pub(crate) fn build(raw: RawRbacFilter, p: &FieldPath) -> Result<Rbac, ConfigError> {
    let (enforced, shadow) = rbac::build::engines(
        raw.rules.as_ref(),
        raw.shadow_rules.as_ref(),
        [raw.matcher.as_ref(), raw.shadow_matcher.as_ref()],
        p,
        |_, _| Ok(()),
    )?;
    Ok(Rules {
        enforced,
        shadow,
        rules_stat_prefix: raw.rules_stat_prefix.unwrap_or_default(),
        shadow_rules_stat_prefix: raw.shadow_rules_stat_prefix.unwrap_or_default(),
        per_rule: raw.track_per_rule_stats == Some(true),
    })
}

/// Compiles a route's `RBACPerRoute` at `p` (without `rbac`: the filter is off there).
pub(crate) fn build_per_route(raw: RawRbacPerRoute, p: &FieldPath) -> Result<Rbac, ConfigError> {
    match raw.rbac {
        Some(r) => build(r, &p.field("rbac")),
        None => Ok(Rules::default()),
    }
}
