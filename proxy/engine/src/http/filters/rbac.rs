//! `envoy.filters.http.rbac` (extensions.filters.http.rbac.v3.RBAC): the request is checked
//! against the enforced `rules` (a denied one gets Envoy's 403 `RBAC: access denied`) and the
//! `shadow_rules` (counted only). A route's `RBACPerRoute` replaces both; one without rules turns
//! the filter off for that route, as Envoy's engine-less config. Counters
//! `http.<stat_prefix>.rbac[.<rules_stat_prefix>].{allowed,denied}` and
//! `...rbac[.<shadow_rules_stat_prefix>].{shadow_allowed,shadow_denied}`, resolved when the HCM
//! is built.

use std::{collections::HashMap, sync::Arc};

use serde::Deserialize;

use crate::{
    config::{ConfigError, FieldPath},
    rbac::{self, raw::RawRbac, Engine, Facts, Verdict},
    route::HeaderLookup,
    server::stats::{Counter, StatsStore},
};

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

/// One RBAC config: the filter's, or a route's replacement.
#[derive(Debug)]
pub struct Rbac {
    /// `rules` (None: nothing enforced).
    enforced: Option<Engine>,
    /// `shadow_rules` (None: nothing counted).
    shadow: Option<Engine>,
    /// `rules_stat_prefix`.
    rules_stat_prefix: String,
    /// `shadow_rules_stat_prefix`.
    shadow_rules_stat_prefix: String,
    /// `track_per_rule_stats`: count each matching policy too.
    per_rule: bool,
}

/// The filter's counters under its HCM's stat prefix.
#[derive(Debug)]
pub struct RbacStats {
    allowed: Arc<Counter>,
    denied: Arc<Counter>,
    shadow_allowed: Arc<Counter>,
    shadow_denied: Arc<Counter>,
    /// With `track_per_rule_stats` (the filter's or a route's): each policy's
    /// `[allowed, denied, shadow_allowed, shadow_denied]`, shown once counted, as Envoy creates
    /// them on first use.
    per_policy: HashMap<String, [Option<Arc<Counter>>; 4]>,
}

/// Index into a policy's counters.
const ALLOWED: usize = 0;
const DENIED: usize = 1;
const SHADOW_ALLOWED: usize = 2;
const SHADOW_DENIED: usize = 3;

/// What the filter decided.
pub struct Decision<'e> {
    /// Deny the request (with the first matching policy, Envoy's
    /// `rbac_access_denied_matched_policy[...]`).
    pub denied: Option<Option<&'e str>>,
}

/// Compiles the filter config at `p`.
pub(crate) fn build(raw: RawRbacFilter, p: &FieldPath) -> Result<Rbac, ConfigError> {
    for (field, set) in [
        ("matcher", &raw.matcher),
        ("shadow_matcher", &raw.shadow_matcher),
    ] {
        if set.is_some() {
            return Err(p
                .field(field)
                .unsupported("the matcher API for RBAC (use rules / shadow_rules)"));
        }
    }
    let engine = |r: &Option<RawRbac>, f: &str| {
        r.as_ref()
            .map(|r| rbac::build::engine(r, &p.field(f)))
            .transpose()
    };
    Ok(Rbac {
        enforced: engine(&raw.rules, "rules")?,
        shadow: engine(&raw.shadow_rules, "shadow_rules")?,
        rules_stat_prefix: raw.rules_stat_prefix.unwrap_or_default(),
        shadow_rules_stat_prefix: raw.shadow_rules_stat_prefix.unwrap_or_default(),
        per_rule: raw.track_per_rule_stats == Some(true),
    })
}

/// Compiles a route's `RBACPerRoute` at `p` (without `rbac`: the filter is off there).
pub(crate) fn build_per_route(raw: RawRbacPerRoute, p: &FieldPath) -> Result<Rbac, ConfigError> {
    match raw.rbac {
        Some(r) => build(r, &p.field("rbac")),
        None => Ok(Rbac {
            enforced: None,
            shadow: None,
            rules_stat_prefix: String::new(),
            shadow_rules_stat_prefix: String::new(),
            per_rule: false,
        }),
    }
}

impl Rbac {
    /// The filter's counters in `store` for an HCM with `stat_prefix` (Envoy names them by the
    /// filter's own prefixes, also when a route's config decides); `routes`: the routes'
    /// replacements, whose policies are counted there too.
    pub fn stats<'a>(
        &'a self,
        routes: impl Iterator<Item = &'a Rbac>,
        store: &StatsStore,
        stat_prefix: &str,
    ) -> RbacStats {
        let rules = stat_prefix_join("rbac", &self.rules_stat_prefix);
        let shadow = stat_prefix_join("rbac", &self.shadow_rules_stat_prefix);
        let c = |scope: &str, name: &str| {
            store.http_filter_counter(stat_prefix, &stat_prefix_join(scope, name), false)
        };
        let mut per_policy: HashMap<String, [Option<Arc<Counter>>; 4]> = HashMap::new();
        for cfg in std::iter::once(self).chain(routes).filter(|c| c.per_rule) {
            let engines = [
                (&cfg.enforced, &rules, ALLOWED),
                (&cfg.shadow, &shadow, SHADOW_ALLOWED),
            ];
            for (engine, scope, first) in engines {
                for (name, _) in engine.iter().flat_map(|e| &e.policies) {
                    let slots = per_policy.entry(name.clone()).or_default();
                    for (i, what) in [(first, "allowed"), (first + 1, "denied")] {
                        let what = if first == SHADOW_ALLOWED {
                            format!("shadow_{what}")
                        } else {
                            what.to_string()
                        };
                        slots[i] = Some(store.http_filter_counter(
                            stat_prefix,
                            &format!("{scope}.policy.{name}.{what}"),
                            true,
                        ));
                    }
                }
            }
        }
        RbacStats {
            allowed: c(&rules, "allowed"),
            denied: c(&rules, "denied"),
            shadow_allowed: c(&shadow, "shadow_allowed"),
            shadow_denied: c(&shadow, "shadow_denied"),
            per_policy,
        }
    }

    /// Checks a request: shadow rules first (counted), then the enforced ones.
    pub fn decide<'e, H: HeaderLookup + ?Sized>(
        &'e self,
        facts: &Facts<'_, H>,
        stats: Option<&RbacStats>,
    ) -> Decision<'e> {
        if let Some(shadow) = &self.shadow {
            let v = shadow.check(facts);
            if let Some(s) = stats {
                self.record(s, v, true);
            }
        }
        let Some(engine) = &self.enforced else {
            return Decision { denied: None };
        };
        let v = engine.check(facts);
        if let Some(s) = stats {
            self.record(s, v, false);
        }
        Decision {
            denied: (!v.allowed).then_some(v.policy),
        }
    }

    /// Counts a verdict of the shadow or the enforced rules, and with `track_per_rule_stats`
    /// its matching policy's counter.
    fn record(&self, s: &RbacStats, v: Verdict<'_>, shadow: bool) {
        let (total, i) = match (shadow, v.allowed) {
            (true, true) => (&s.shadow_allowed, SHADOW_ALLOWED),
            (true, false) => (&s.shadow_denied, SHADOW_DENIED),
            (false, true) => (&s.allowed, ALLOWED),
            (false, false) => (&s.denied, DENIED),
        };
        total.inc();
        self.count_policy(s, v.policy, i);
    }

    /// `track_per_rule_stats`: the matching policy's counter `i`.
    fn count_policy(&self, s: &RbacStats, policy: Option<&str>, i: usize) {
        if !self.per_rule {
            return;
        }
        if let Some(c) = policy
            .and_then(|p| s.per_policy.get(p))
            .and_then(|c| c[i].as_ref())
        {
            c.inc();
        }
    }
}

/// `prefix.token` with one `.` between them (none when `token` is empty), as Envoy 1.40 names
/// the counters: `rules_stat_prefix: foo` gives `rbac.foo.allowed`, and
/// `shadow_rules_stat_prefix: bar_` gives `rbac.bar_.shadow_allowed` (checked against Envoy).
fn stat_prefix_join(prefix: &str, token: &str) -> String {
    let token = token.strip_suffix('.').unwrap_or(token);
    if token.is_empty() {
        return prefix.to_string();
    }
    format!("{prefix}.{token}")
}
