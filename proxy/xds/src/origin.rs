//! Per-resource metadata for the admin's `/config_dump`: for every accepted xDS resource, the
//! `version_info` it arrived with, when it last changed and its JSON as received (RDS not
//! inlined). Kept beside the accepted state and handed to the engine with each configuration
//! (`Server::apply_with_origin`), so a dump shows which resources are dynamic and since when.
//! Listeners and clusters are shown as they run ([`Meta::with_plan`]): a warming one at its
//! serving version (active) and its accepted one (warming).

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::SystemTime,
};

use sluice_engine::admin::{ConfigOrigin, DynamicEntry};

use crate::{assemble::Resources, convert::ResourceType, core::Plan, resource::Resource};

/// One accepted resource's dump metadata (the resource shared with the accepted state).
#[derive(Debug, Clone)]
struct Entry {
    version_info: Arc<str>,
    last_updated: SystemTime,
    resource: Arc<Resource>,
}

/// Entries by name; shared between versions while none of them changes (an EDS response
/// leaves the listener and cluster entries as they are, without a copy).
type Entries = Arc<BTreeMap<Arc<str>, Entry>>;

/// Whether `entries` are exactly the resources of `map` (the same allocations).
fn same_resources(entries: &Entries, map: &BTreeMap<String, Arc<Resource>>) -> bool {
    entries.len() == map.len()
        && entries
            .iter()
            .zip(map)
            .all(|((a, e), (b, json))| Arc::ptr_eq(&e.resource, json) && **a == **b)
}

/// The dump metadata of the accepted resources.
#[derive(Debug, Clone)]
pub struct Meta {
    entries: BTreeMap<ResourceType, Entries>,
    /// The listeners and clusters that run (a warming one's previous version).
    running: BTreeMap<ResourceType, Entries>,
    /// The listeners and clusters of `entries` that warm.
    warming: BTreeSet<(ResourceType, String)>,
    /// When the bootstrap file was loaded (its static resources' `last_updated`).
    static_loaded: SystemTime,
}

impl Default for Meta {
    fn default() -> Self {
        Self {
            entries: BTreeMap::new(),
            running: BTreeMap::new(),
            warming: BTreeSet::new(),
            static_loaded: SystemTime::now(),
        }
    }
}

impl Meta {
    /// The metadata once `resources` (a checked response of `ty` merged into the accepted
    /// state) are accepted: a resource whose JSON is unchanged keeps its entry (Envoy skips an
    /// identical update); a new or changed one is stamped with its Delta version, else the
    /// response's `version_info`, and `now`.
    pub fn next(
        &self,
        resources: &Resources,
        ty: ResourceType,
        version_info: &str,
        delta_versions: &BTreeMap<String, String>,
        now: SystemTime,
    ) -> Self {
        let mut entries = BTreeMap::new();
        for (t, map) in resources {
            let old = self.entries.get(t);
            if let Some(o) = old.filter(|o| same_resources(o, map)) {
                entries.insert(*t, o.clone());
                continue;
            }
            // One walk over the old entries and the new resources, both in name order, finds
            // what changed; the old map is copied (names and versions are shared, so that is
            // cheap) and only those entries are replaced or removed.
            let stamp: Arc<str> = version_info.into();
            let fresh = |name: &String, json: &Arc<Resource>| {
                let version_info = match delta_versions.get(name) {
                    Some(v) if *t == ty => v.as_str().into(),
                    _ if *t == ty => stamp.clone(),
                    _ => "".into(),
                };
                let entry = Entry {
                    version_info,
                    last_updated: now,
                    resource: json.clone(),
                };
                (Arc::<str>::from(name.as_str()), entry)
            };
            let mut out = old.cloned().unwrap_or_default();
            let mut olds = old.into_iter().flat_map(|o| o.iter()).peekable();
            let mut removed = Vec::new();
            let mut changed = Vec::new();
            for (name, json) in map.iter() {
                while let Some((o, _)) = olds.next_if(|(o, _)| o.as_ref() < name.as_str()) {
                    removed.push(o.clone());
                }
                match olds.next_if(|(o, _)| o.as_ref() == name.as_str()) {
                    // Kept with the new allocation: later versions then compare by pointer.
                    Some((_, e)) if Arc::ptr_eq(&e.resource, json) => {}
                    Some((k, e)) if e.resource == *json => changed.push((
                        k.clone(),
                        Entry {
                            resource: json.clone(),
                            ..e.clone()
                        },
                    )),
                    _ => changed.push(fresh(name, json)),
                }
            }
            removed.extend(olds.map(|(o, _)| o.clone()));
            let patch = Arc::make_mut(&mut out);
            for name in removed {
                patch.remove(&name);
            }
            patch.extend(changed);
            entries.insert(*t, out);
        }
        Self {
            entries,
            running: self.running.clone(),
            warming: self.warming.clone(),
            static_loaded: self.static_loaded,
        }
    }

    /// The metadata once `plan` runs: each listener and cluster it runs keeps the entry of the
    /// version it runs (the accepted one, or the one running before while the accepted one
    /// warms).
    pub fn with_plan(mut self, plan: &Plan) -> Self {
        for ty in [ResourceType::Listener, ResourceType::Cluster] {
            let planned = plan.resources.get(&ty);
            let unchanged = |m: &BTreeMap<ResourceType, Entries>| {
                m.get(&ty)
                    .filter(|e| planned.is_some_and(|p| same_resources(e, p)))
                    .cloned()
            };
            if let Some(e) = unchanged(&self.running).or_else(|| unchanged(&self.entries)) {
                self.running.insert(ty, e);
                continue;
            }
            let mut out = BTreeMap::new();
            for (name, json) in planned.into_iter().flat_map(|m| m.iter()) {
                let of = |m: &BTreeMap<ResourceType, Entries>| {
                    m.get(&ty)
                        .and_then(|m| m.get(name.as_str()))
                        .filter(|e| Arc::ptr_eq(&e.resource, json) || e.resource == *json)
                        .map(|e| Entry {
                            resource: json.clone(),
                            ..e.clone()
                        })
                };
                let entry = of(&self.entries).or_else(|| of(&self.running));
                out.insert(
                    name.as_str().into(),
                    entry.unwrap_or_else(|| Entry {
                        version_info: "".into(),
                        last_updated: SystemTime::now(),
                        resource: json.clone(),
                    }),
                );
            }
            self.running.insert(ty, Arc::new(out));
        }
        self.warming = plan.warming.clone();
        self
    }

    /// The engine's view: dynamic entries by type, plus the last LDS/CDS `version_info`s.
    pub fn origin(&self, versions: &BTreeMap<ResourceType, String>) -> ConfigOrigin {
        let dump = |m: &BTreeMap<ResourceType, Entries>, t, warming: bool| {
            m.get(&t)
                .into_iter()
                .flat_map(|e| e.iter())
                .filter(|(name, _)| !warming || self.warming.contains(&(t, name.to_string())))
                .map(|(name, e)| {
                    let entry = DynamicEntry {
                        version_info: e.version_info.to_string(),
                        last_updated: e.last_updated,
                        resource: e.resource.text().clone(),
                    };
                    (name.to_string(), entry)
                })
                .collect()
        };
        let (running, accepted) = (&self.running, &self.entries);
        let mut o = ConfigOrigin::file(self.static_loaded);
        o.listeners = dump(running, ResourceType::Listener, false);
        o.routes = dump(accepted, ResourceType::Route, false);
        o.clusters = dump(running, ResourceType::Cluster, false);
        o.endpoints = dump(accepted, ResourceType::Endpoint, false);
        o.warming_listeners = dump(accepted, ResourceType::Listener, true);
        o.warming_clusters = dump(accepted, ResourceType::Cluster, true);
        o.secrets = dump(accepted, ResourceType::Secret, false);
        o.lds_version = versions.get(&ResourceType::Listener).cloned();
        o.cds_version = versions.get(&ResourceType::Cluster).cloned();
        o
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::BTreeMap,
        time::{Duration, UNIX_EPOCH},
    };

    use serde_json::json;

    use super::Meta;
    use crate::{assemble::Resources, convert::ResourceType, core::Plan};

    /// Everything accepted runs.
    fn all(res: &Resources) -> Plan {
        Plan {
            resources: res.clone(),
            ..Plan::default()
        }
    }

    fn res_of(v: serde_json::Value) -> std::sync::Arc<crate::resource::Resource> {
        std::sync::Arc::new(crate::resource::Resource::new(ResourceType::Cluster, &v).unwrap())
    }

    #[test]
    fn unchanged_resources_keep_their_version_and_time() {
        let t1 = UNIX_EPOCH + Duration::from_secs(1);
        let t2 = UNIX_EPOCH + Duration::from_secs(2);
        let mut res = Resources::new();
        let clusters = std::sync::Arc::make_mut(res.entry(ResourceType::Cluster).or_default());
        clusters.insert("a".into(), res_of(json!({"name": "a"})));
        clusters.insert("b".into(), res_of(json!({"name": "b"})));
        let m1 = Meta::default()
            .next(&res, ResourceType::Cluster, "1", &BTreeMap::new(), t1)
            .with_plan(&all(&res));
        std::sync::Arc::make_mut(res.get_mut(&ResourceType::Cluster).expect("cds"))
            .insert("b".into(), res_of(json!({"name": "b", "type": "STATIC"})));
        let m2 = m1
            .next(&res, ResourceType::Cluster, "2", &BTreeMap::new(), t2)
            .with_plan(&all(&res));
        let mut versions = BTreeMap::new();
        versions.insert(ResourceType::Cluster, "2".to_string());
        let o = m2.origin(&versions);
        assert_eq!(
            (
                o.clusters["a"].version_info.as_str(),
                o.clusters["a"].last_updated
            ),
            ("1", t1)
        );
        assert_eq!(
            (
                o.clusters["b"].version_info.as_str(),
                o.clusters["b"].last_updated
            ),
            ("2", t2)
        );
        assert_eq!(o.cds_version.as_deref(), Some("2"));
        let delta: BTreeMap<String, String> = [("b".to_string(), "b-v9".to_string())].into();
        std::sync::Arc::make_mut(res.get_mut(&ResourceType::Cluster).expect("cds"))
            .insert("b".into(), res_of(json!({"name": "b", "type": "EDS"})));
        let m3 = m2.next(&res, ResourceType::Cluster, "", &delta, t2);
        assert_eq!(
            m3.clone()
                .with_plan(&all(&res))
                .origin(&BTreeMap::new())
                .clusters["b"]
                .version_info,
            "b-v9"
        );

        // While the new b warms, the running b stays active and the new one is warming.
        let mut warming = all(&res);
        std::sync::Arc::make_mut(
            warming
                .resources
                .get_mut(&ResourceType::Cluster)
                .expect("cds"),
        )
        .insert("b".into(), res_of(json!({"name": "b", "type": "STATIC"})));
        warming.warming.insert((ResourceType::Cluster, "b".into()));
        let o = m3.with_plan(&warming).origin(&BTreeMap::new());
        assert_eq!(o.clusters["b"].version_info, "2");
        assert_eq!(o.warming_clusters["b"].version_info, "b-v9");
        assert_eq!(o.warming_clusters.len(), 1);
    }
}
