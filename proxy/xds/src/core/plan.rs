//! The configuration the server runs while resources warm ([`Plan`]): which accepted listeners
//! and clusters are ready, which run at their previous version or are left out, and the
//! engine's verdict on the result.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Instant;

use sluice_engine::config::Bootstrap;

use super::{same, validate_raw, Core};
use crate::{
    assemble::{assemble, Resources},
    convert::ResourceType,
};

/// The configuration to run: the accepted state with each warming listener and cluster at its
/// previously applied version, or left out if new.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Listeners and clusters as they run; RDS/EDS resources as accepted.
    pub resources: Resources,
    /// The listeners and clusters of the accepted state that are still warming.
    pub warming: BTreeSet<(ResourceType, String)>,
}

impl Core {
    /// The plan for `res`: each listener and cluster whose RDS/EDS resources and secrets have
    /// all arrived (or timed out) as accepted, the others at their running version or left out.
    pub(super) fn select(&self, res: &Resources, now: Instant) -> Plan {
        let mut plan = Plan {
            resources: res.clone(),
            warming: BTreeSet::new(),
        };
        let has = |ty: ResourceType, name: &str| {
            res.get(&ty).is_some_and(|m| m.contains_key(name)) || self.timed_out(ty, name, now)
        };
        // Whether every secret asked for is there: then secrets hold nothing back.
        let secrets = self.names.names(res, ResourceType::Secret);
        let secrets_in = secrets.iter().all(|n| has(ResourceType::Secret, n));
        let secrets_of = |v: &crate::resource::Resource| {
            secrets_in || v.secret_names().all(|n| has(ResourceType::Secret, n))
        };
        for ty in [ResourceType::Listener, ResourceType::Cluster] {
            let Some(map) = plan.resources.get_mut(&ty) else {
                continue;
            };
            // Copied only when something in it warms (the names it needs are remembered by
            // resource identity: no JSON is read when nothing changed).
            let needs = if ty == ResourceType::Listener {
                ResourceType::Route
            } else {
                ResourceType::Endpoint
            };
            let names = self.names.names(res, needs);
            let arrived = res
                .get(&needs)
                .is_some_and(|m| super::sorted_subset(names.iter(), m.keys()));
            if secrets_in && (arrived || names.iter().all(|n| has(needs, n))) {
                continue;
            }
            let map = Arc::make_mut(map);
            let running = self.serving.resources.get(&ty);
            map.retain(|name, v| {
                let ready = secrets_of(v)
                    && match ty {
                        ResourceType::Listener => {
                            v.route_names().iter().all(|r| has(ResourceType::Route, r))
                        }
                        _ => v.eds_name().is_none_or(|e| has(ResourceType::Endpoint, e)),
                    };
                if ready {
                    return true;
                }
                plan.warming.insert((ty, name.clone()));
                match running.and_then(|m| m.get(name)) {
                    Some(old) => {
                        *v = old.clone();
                        true
                    }
                    None => false,
                }
            });
        }
        plan
    }

    /// Validates a plan (the accepted state passed the full check). Its route configurations
    /// do not check their clusters (unless they set `validate_clusters`): Envoy counts a warming
    /// cluster as known, and a route to it answers `503 NC` until it is active; a tcp_proxy
    /// looks its cluster up per connection (NC until active). A listener the engine still
    /// refuses (a route configuration with `validate_clusters: true` naming a cluster that is
    /// not running) runs at its previous version, else is left out, and warms until its
    /// clusters are there; `Err` only for what cannot be put on a listener.
    pub(super) fn settle(&self, mut plan: Plan) -> Result<(Plan, Bootstrap), String> {
        loop {
            let asm = assemble(&self.base, &plan.resources, &HashSet::new());
            let err = match validate_raw(&asm) {
                Ok(b) => return Ok((plan, b)),
                Err(e) => e,
            };
            let describe = || asm.origins.describe(err.path(), err.message());
            let name = asm.origins.listener(err.path()).ok_or_else(describe)?;
            let listeners =
                Arc::make_mut(plan.resources.entry(ResourceType::Listener).or_default());
            let old = self
                .serving
                .resources
                .get(&ResourceType::Listener)
                .and_then(|m| m.get(name))
                .filter(|old| listeners.get(name).is_some_and(|cur| !same(cur, old)));
            match old {
                Some(old) => listeners.insert(name.to_string(), old.clone()),
                None => listeners.remove(name),
            };
            plan.warming
                .insert((ResourceType::Listener, name.to_string()));
        }
    }
}
