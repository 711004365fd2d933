//! Cross-reference check of a typed [`Bootstrap`] that did not come from [`super::from_yaml_str`]
//! (a config source that builds or edits one, e.g. xDS): names unique, every cluster a listener
//! names exists. Errors name the Envoy field path, as validation does.

use std::collections::HashSet;

use super::{Bootstrap, ConfigError, FieldPath, NetworkFilter};
use crate::route::{ClusterSpecifier, RouteAction, WeightedClusters};

impl Bootstrap {
    /// Checks what validation guarantees about names: unique listener and cluster names, and
    /// every route cluster reference resolving (with `validate_clusters`; a tcp_proxy's
    /// cluster is looked up per connection, as Envoy).
    pub fn check_references(&self) -> Result<(), ConfigError> {
        let sr = FieldPath::root().field("static_resources");
        let mut clusters = HashSet::new();
        for (i, c) in self.clusters.iter().enumerate() {
            if !clusters.insert(c.name.as_str()) {
                return Err(sr
                    .field("clusters")
                    .index(i)
                    .field("name")
                    .err(format!("duplicate cluster name {:?}", c.name.as_str())));
            }
        }
        let known = |p: FieldPath, name: &str| {
            if clusters.contains(name) {
                Ok(())
            } else {
                Err(p.err(format!("unknown cluster {name:?}")))
            }
        };
        let weighted = |p: FieldPath, w: &WeightedClusters| {
            let p = p.field("weighted_clusters").field("clusters");
            w.clusters
                .iter()
                .enumerate()
                .filter(|(_, wc)| wc.cluster_header.is_none())
                .try_for_each(|(k, wc)| known(p.index(k).field("name"), wc.name.as_str()))
        };
        let mut listeners = HashSet::new();
        for (i, l) in self.listeners.iter().enumerate() {
            let lp = sr.field("listeners").index(i);
            if !listeners.insert(l.name.as_str()) {
                return Err(lp
                    .field("name")
                    .err(format!("duplicate listener name {:?}", l.name.as_str())));
            }
            for (j, fc) in l.filter_chains.iter().enumerate() {
                let cp = match fc.is_default {
                    true => lp.field("default_filter_chain"),
                    false => lp.field("filter_chains").index(j),
                };
                let tp = cp
                    .field("filters")
                    .index(fc.terminal_index)
                    .field("typed_config");
                match &fc.filter {
                    // tcp_proxy clusters are looked up per connection (as Envoy): not checked.
                    NetworkFilter::Tcp(_) => {}
                    NetworkFilter::Http(h) if h.route_table.validate_clusters => {
                        let rp = tp.field("route_config");
                        for (v, vh) in h.route_table.virtual_hosts.iter().enumerate() {
                            for (r, route) in vh.routes.iter().enumerate() {
                                let RouteAction::Forward(f) = &route.action else {
                                    continue;
                                };
                                let ap = rp
                                    .field("virtual_hosts")
                                    .index(v)
                                    .field("routes")
                                    .index(r)
                                    .field("route");
                                match &f.cluster {
                                    ClusterSpecifier::Cluster(c) => {
                                        known(ap.field("cluster"), c.as_str())?
                                    }
                                    ClusterSpecifier::Weighted(w) => weighted(ap, w)?,
                                    ClusterSpecifier::Header(_) => {}
                                }
                            }
                        }
                    }
                    NetworkFilter::Http(_) => {}
                }
            }
        }
        Ok(())
    }
}
