//! `envoy.filters.network.rbac` (extensions.filters.network.rbac.v3.RBAC): a filter chain's
//! connection-level RBAC before its terminal filter (tcp_proxy or the HTTP connection manager).
//! As in Envoy, the check runs on the connection's first read from the client (a server that
//! speaks first is reached and its greeting delivered), and with `CONTINUOUS` on every read (the
//! answer cannot change without dynamic metadata, but each check counts); a denied connection is
//! closed, after `delay_deny` when set. Without a request `url_path` never matches; `header` rules are refused,
//! as Envoy refuses them. Counters `<stat_prefix>.rbac.{allowed,denied}` and
//! `<stat_prefix>.rbac[.<shadow_rules_stat_prefix>].{shadow_allowed,shadow_denied}`.

use std::{sync::Arc, time::Duration};

use serde::Deserialize;

use super::{
    raw::{RawPermission, RawPrincipal, RawRbac},
    rules::{Rules, RulesStats},
};
use crate::{
    config::{duration::PbDuration, ConfigError, FieldPath},
    server::stats::StatsStore,
};

/// `@type` of the filter's config.
pub const TYPE: &str = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC";

/// `extensions.filters.network.rbac.v3.RBAC`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNetworkRbac {
    rules: Option<RawRbac>,
    matcher: Option<serde_json::Value>,
    shadow_rules: Option<RawRbac>,
    shadow_matcher: Option<serde_json::Value>,
    shadow_rules_stat_prefix: Option<String>,
    stat_prefix: Option<String>,
    enforcement_type: Option<String>,
    delay_deny: Option<PbDuration>,
}

/// One network RBAC filter of a chain.
#[derive(Debug)]
pub struct NetworkRbac {
    /// `rules` and `shadow_rules`.
    pub rules: Rules,
    /// `stat_prefix` (required).
    pub stat_prefix: String,
    /// `delay_deny`: how long a denied connection stays open (reads stopped) before it closes.
    pub delay_deny: Option<Duration>,
    /// `enforcement_type: CONTINUOUS`: checked (and counted) on every read, not only the first.
    pub continuous: bool,
}

/// A chain's network RBAC filter with its counters resolved.
#[derive(Debug)]
pub struct NetworkRbacRt {
    /// The config.
    pub cfg: Arc<NetworkRbac>,
    /// Its counters.
    pub stats: RulesStats,
}

/// Compiles the filter config at `p`.
pub(crate) fn build(raw: RawNetworkRbac, p: &FieldPath) -> Result<NetworkRbac, ConfigError> {
    let (enforced, shadow) = super::build::engines(
        raw.rules.as_ref(),
        raw.shadow_rules.as_ref(),
        [raw.matcher.as_ref(), raw.shadow_matcher.as_ref()],
        p,
        no_header_rules,
    )?;
    let stat_prefix = raw
        .stat_prefix
        .filter(|s| !s.is_empty())
        .ok_or_else(|| p.field("stat_prefix").err("required"))?;
    let continuous = match raw.enforcement_type.as_deref() {
        None | Some("ONE_TIME_ON_FIRST_BYTE") => false,
        Some("CONTINUOUS") => true,
        Some(other) => {
            return Err(p.field("enforcement_type").err(format!(
                "unknown value {other:?} (expected ONE_TIME_ON_FIRST_BYTE or CONTINUOUS)"
            )))
        }
    };
    Ok(NetworkRbac {
        rules: Rules {
            enforced,
            shadow,
            rules_stat_prefix: String::new(),
            shadow_rules_stat_prefix: raw.shadow_rules_stat_prefix.unwrap_or_default(),
            per_rule: false,
        },
        stat_prefix,
        delay_deny: raw.delay_deny.map(|d| d.0).filter(|d| !d.is_zero()),
        continuous,
    })
}

/// Envoy refuses `header` permissions and principals in the network filter (there is no request
/// to read them from), at any depth.
fn no_header_rules(raw: &RawRbac, p: &FieldPath) -> Result<(), ConfigError> {
    fn permission(r: &RawPermission, p: &FieldPath) -> Result<(), ConfigError> {
        if r.header.is_some() {
            return Err(p.field("header").err(HEADER_REFUSED));
        }
        for (f, set) in [("and_rules", &r.and_rules), ("or_rules", &r.or_rules)] {
            for (i, x) in set.iter().flat_map(|s| &s.rules).enumerate() {
                permission(x, &p.field(f).field("rules").index(i))?;
            }
        }
        r.not_rule
            .as_deref()
            .map_or(Ok(()), |x| permission(x, &p.field("not_rule")))
    }
    fn principal(r: &RawPrincipal, p: &FieldPath) -> Result<(), ConfigError> {
        if r.header.is_some() {
            return Err(p.field("header").err(HEADER_REFUSED));
        }
        for (f, set) in [("and_ids", &r.and_ids), ("or_ids", &r.or_ids)] {
            for (i, x) in set.iter().flat_map(|s| &s.ids).enumerate() {
                principal(x, &p.field(f).field("ids").index(i))?;
            }
        }
        r.not_id
            .as_deref()
            .map_or(Ok(()), |x| principal(x, &p.field("not_id")))
    }
    for (name, policy) in &raw.policies {
        let pp = p.field("policies").field(name);
        for (i, x) in policy.permissions.iter().enumerate() {
            permission(x, &pp.field("permissions").index(i))?;
        }
        for (i, x) in policy.principals.iter().enumerate() {
            principal(x, &pp.field("principals").index(i))?;
        }
    }
    Ok(())
}

/// Envoy's refusal of a header rule in the network filter.
const HEADER_REFUSED: &str = "header rules are not supported by the RBAC network filter (Envoy)";

impl NetworkRbac {
    /// The filter with its counters in `store`.
    pub fn runtime(self: &Arc<Self>, store: &StatsStore) -> NetworkRbacRt {
        // Envoy joins with one dot: Istio's `tcp.` gives `tcp.rbac.allowed`.
        let prefix = self
            .stat_prefix
            .strip_suffix('.')
            .unwrap_or(&self.stat_prefix);
        let counter =
            |name: &str, lazy: bool| store.named_counter(&format!("{prefix}.{name}"), lazy);
        NetworkRbacRt {
            cfg: self.clone(),
            stats: self.rules.stats(std::iter::empty(), &counter),
        }
    }
}
