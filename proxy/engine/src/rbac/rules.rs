//! One RBAC filter's rules: the enforced engine and the shadow one (counted only), their
//! counters named as Envoy 1.40 names them, and the per-request (or per-connection) decision.
//! Shared by the HTTP filter (`http/filters/rbac.rs`) and the network filter (`rbac/network.rs`).

use std::{collections::HashMap, sync::Arc};

use super::{Engine, Facts, Verdict};
use crate::{route::HeaderLookup, server::stats::Counter};

/// What the rules decided.
pub struct Decision<'e> {
    /// Deny (with the first matching policy, Envoy's `rbac_access_denied_matched_policy[...]`).
    pub denied: Option<Option<&'e str>>,
    /// The shadow rules' verdict, if there are shadow rules.
    pub shadow: Option<Verdict<'e>>,
    /// The enforced rules' verdict, if there are enforced rules.
    pub enforced: Option<Verdict<'e>>,
}

impl Decision<'_> {
    /// Writes the HTTP filter's dynamic metadata as Envoy's RBAC filter does:
    /// `<shadow_rules_stat_prefix>shadow_effective_policy_id` (the matching policy, if any) and
    /// `...shadow_engine_result` (`allowed` / `denied`), and the same of the enforced rules under
    /// `<rules_stat_prefix>enforced_...`. istiod's CUSTOM policy turns ext_authz on by the
    /// shadow policy id.
    pub fn write_metadata(&self, rules: &Rules, mut set: impl FnMut(String, String)) {
        let engines = [
            (&self.shadow, &rules.shadow_rules_stat_prefix, "shadow"),
            (&self.enforced, &rules.rules_stat_prefix, "enforced"),
        ];
        for (v, prefix, which) in engines {
            let Some(v) = v else { continue };
            if let Some(p) = v.policy {
                set(
                    format!("{prefix}{which}_effective_policy_id"),
                    p.to_string(),
                );
            }
            let result = if v.allowed { "allowed" } else { "denied" };
            set(format!("{prefix}{which}_engine_result"), result.to_string());
        }
    }
}

/// Index into a policy's counters.
const ALLOWED: usize = 0;
const DENIED: usize = 1;
const SHADOW_ALLOWED: usize = 2;
const SHADOW_DENIED: usize = 3;

/// One RBAC config's rules: an HTTP filter's (or a route's replacement), or a network
/// filter's.
#[derive(Debug, Default)]
pub struct Rules {
    /// `rules` (None: nothing enforced).
    pub(crate) enforced: Option<Engine>,
    /// `shadow_rules` (None: nothing counted).
    pub(crate) shadow: Option<Engine>,
    /// `rules_stat_prefix` (HTTP only).
    pub(crate) rules_stat_prefix: String,
    /// `shadow_rules_stat_prefix`.
    pub(crate) shadow_rules_stat_prefix: String,
    /// `track_per_rule_stats`: count each matching policy too (HTTP only).
    pub(crate) per_rule: bool,
}

/// A filter's counters.
#[derive(Debug)]
pub struct RulesStats {
    allowed: Arc<Counter>,
    denied: Arc<Counter>,
    shadow_allowed: Arc<Counter>,
    shadow_denied: Arc<Counter>,
    /// With `track_per_rule_stats` (the filter's or a route's): each policy's
    /// `[allowed, denied, shadow_allowed, shadow_denied]`, shown once counted, as Envoy creates
    /// them on first use.
    per_policy: HashMap<String, [Option<Arc<Counter>>; 4]>,
}

impl Rules {
    /// Whether a check reads the client address after `x-forwarded-for` processing.
    pub fn needs_remote(&self) -> bool {
        [&self.enforced, &self.shadow]
            .into_iter()
            .flatten()
            .any(|e| e.needs_remote)
    }

    /// The filter's counters, each made by `counter(name, lazy)` (`name` below the filter's
    /// scope, starting `rbac`; a lazy one is shown once it counted). Envoy names them by the
    /// filter's own prefixes, also when a route's config decides; `routes`: the routes'
    /// replacements, whose policies are counted there too.
    pub fn stats<'a>(
        &'a self,
        routes: impl Iterator<Item = &'a Rules>,
        counter: &dyn Fn(&str, bool) -> Arc<Counter>,
    ) -> RulesStats {
        let rules = stat_prefix_join("rbac", &self.rules_stat_prefix);
        let shadow = stat_prefix_join("rbac", &self.shadow_rules_stat_prefix);
        let c = |scope: &str, name: &str| counter(&stat_prefix_join(scope, name), false);
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
                        slots[i] = Some(counter(&format!("{scope}.policy.{name}.{what}"), true));
                    }
                }
            }
        }
        RulesStats {
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
        stats: Option<&RulesStats>,
    ) -> Decision<'e> {
        let shadow = self.shadow.as_ref().map(|e| e.check(facts));
        if let (Some(v), Some(s)) = (shadow, stats) {
            self.record(s, v, true);
        }
        let Some(engine) = &self.enforced else {
            return Decision {
                denied: None,
                shadow,
                enforced: None,
            };
        };
        let v = engine.check(facts);
        if let Some(s) = stats {
            self.record(s, v, false);
        }
        Decision {
            denied: (!v.allowed).then_some(v.policy),
            shadow,
            enforced: Some(v),
        }
    }

    /// Counts a verdict of the shadow or the enforced rules, and with `track_per_rule_stats`
    /// its matching policy's counter.
    fn record(&self, s: &RulesStats, v: Verdict<'_>, shadow: bool) {
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
    fn count_policy(&self, s: &RulesStats, policy: Option<&str>, i: usize) {
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

/// What one filter's rules say of a request, for `sluice explain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explained {
    /// The enforced rules' verdict in words (None: no enforced rules).
    pub enforced: Option<String>,
    /// The shadow rules' verdict in words (None: no shadow rules).
    pub shadow: Option<String>,
    /// Whether the request (or connection) is denied.
    pub denied: bool,
}

impl Rules {
    /// The verdicts of the enforced and shadow rules, without counting.
    pub fn explain<H: HeaderLookup + ?Sized>(&self, facts: &Facts<'_, H>) -> Explained {
        let say = |e: &Engine| {
            let v = e.check(facts);
            let action = match e.action {
                super::Action::Allow => "ALLOW",
                super::Action::Deny => "DENY",
                super::Action::Log => "LOG",
            };
            let matched = match v.policy {
                Some(p) => format!("policy {p:?} matches"),
                None => "no policy matches".to_string(),
            };
            let verdict = if v.allowed { "allowed" } else { "denied" };
            (format!("{action}: {matched}: {verdict}"), v.allowed)
        };
        let enforced = self.enforced.as_ref().map(say);
        Explained {
            denied: enforced.as_ref().is_some_and(|(_, allowed)| !allowed),
            enforced: enforced.map(|(s, _)| s),
            shadow: self.shadow.as_ref().map(|e| say(e).0),
        }
    }
}
