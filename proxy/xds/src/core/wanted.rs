//! The RDS, EDS and SDS names a set of listeners or clusters asks for, remembered by the identity of
//! the resources they were read from. An EDS response leaves every listener and cluster the
//! same allocation, so the client's many questions about what it subscribes to (before and
//! after a response, while pruning, for the ACK's `resource_names`) cost a pointer comparison
//! per resource instead of collecting every cluster's name into a new set.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex, Weak},
};

use crate::{assemble::Resources, convert::ResourceType, resource::Resource};

/// Names, shared.
pub type Names = Arc<BTreeSet<String>>;

/// How many listener/cluster sets are remembered (the accepted one, the running one, and a
/// candidate's, which are usually the same).
const SLOTS: usize = 8;

/// One remembered answer: the resources it was read from (weak: the allocations stay, so an
/// address cannot be reused by another resource while it is remembered, but their JSON is freed
/// with the resource) and the names.
#[derive(Debug)]
struct Slot {
    /// What was asked (RDS, EDS, SDS) and of which resources (listeners, clusters).
    ty: ResourceType,
    source: ResourceType,
    from: Vec<Weak<Resource>>,
    names: Names,
}

/// The remembered answers, most recent first, and the EDS and SDS names every answer includes.
#[derive(Debug, Default)]
pub struct WantedMemo {
    slots: Mutex<Vec<Slot>>,
    /// The EDS names of the bootstrap file's own EDS clusters, wanted whatever else is.
    static_eds: BTreeSet<String>,
    /// The secrets the bootstrap file's own listeners and clusters ask for over ADS.
    static_secrets: BTreeSet<String>,
}

impl WantedMemo {
    /// A memo whose EDS answers always include `static_eds`, and SDS answers `static_secrets`.
    pub fn new(static_eds: BTreeSet<String>, static_secrets: BTreeSet<String>) -> Self {
        Self {
            slots: Mutex::default(),
            static_eds,
            static_secrets,
        }
    }

    /// The RDS names (`ty` Route) of the listeners in `resources`, the EDS names (`ty`
    /// Endpoint) of its clusters and the static EDS names, or the secrets (`ty` Secret) its
    /// listeners and clusters and the file's own ask for over ADS; empty for other types.
    pub fn names(&self, resources: &Resources, ty: ResourceType) -> Names {
        match ty {
            ResourceType::Route => self.of(resources, ty, ResourceType::Listener),
            ResourceType::Endpoint => self.of(resources, ty, ResourceType::Cluster),
            ResourceType::Secret => union(
                self.of(resources, ty, ResourceType::Listener),
                self.of(resources, ty, ResourceType::Cluster),
            ),
            _ => Names::default(),
        }
    }

    /// The `ty` names of `resources`' `source` resources (with the static ones of `ty`).
    fn of(&self, resources: &Resources, ty: ResourceType, source: ResourceType) -> Names {
        let map = resources.get(&source);
        let values = || map.into_iter().flat_map(|m| m.values());
        let len = map.map_or(0, |m| m.len());
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let hit = slots.iter().position(|s| {
            s.ty == ty
                && s.source == source
                && s.from.len() == len
                && s.from
                    .iter()
                    .zip(values())
                    .all(|(w, a)| std::ptr::eq(w.as_ptr(), Arc::as_ptr(a)))
        });
        if let Some(i) = hit {
            let slot = slots.remove(i);
            let names = slot.names.clone();
            slots.insert(0, slot);
            return names;
        }
        let names: Names = Arc::new(match ty {
            ResourceType::Route => values().flat_map(|v| v.route_names()).cloned().collect(),
            ResourceType::Secret => values()
                .flat_map(|v| v.secret_names())
                .chain(&self.static_secrets)
                .cloned()
                .collect(),
            _ => values()
                .filter_map(|v| v.eds_name())
                .chain(&self.static_eds)
                .cloned()
                .collect(),
        });
        slots.insert(
            0,
            Slot {
                ty,
                source,
                from: values().map(Arc::downgrade).collect(),
                names: names.clone(),
            },
        );
        slots.truncate(SLOTS);
        names
    }
}

/// `a ∪ b`, without a copy when they are the same set or one is empty.
pub fn union(a: Names, b: Names) -> Names {
    if Arc::ptr_eq(&a, &b) || b.is_empty() || a == b {
        return a;
    }
    if a.is_empty() {
        return b;
    }
    let mut out = BTreeSet::clone(&a);
    out.extend(b.iter().cloned());
    Arc::new(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn clusters(list: &[(&str, Arc<Resource>)]) -> Resources {
        let map: BTreeMap<String, Arc<Resource>> = list
            .iter()
            .map(|(n, v)| (n.to_string(), v.clone()))
            .collect();
        BTreeMap::from([(ResourceType::Cluster, Arc::new(map))])
    }

    fn eds(name: &str, service: &str) -> Arc<Resource> {
        let json = json!({"name": name, "type": "EDS",
            "eds_cluster_config": {"service_name": service}});
        Arc::new(Resource::new(ResourceType::Cluster, &json).unwrap())
    }

    #[test]
    fn the_same_resources_give_the_same_names_without_reading_them_again() {
        let memo = WantedMemo::default();
        let a = eds("a", "a-eds");
        let b = eds("b", "");
        let r = clusters(&[("a", a.clone()), ("b", b.clone())]);
        let first = memo.names(&r, ResourceType::Endpoint);
        assert_eq!(
            *first,
            BTreeSet::from(["a-eds".to_string(), "b".to_string()])
        );
        // Another map holding the same allocations: the remembered set itself.
        let again = memo.names(
            &clusters(&[("a", a.clone()), ("b", b)]),
            ResourceType::Endpoint,
        );
        assert!(Arc::ptr_eq(&first, &again));
        assert!(memo.names(&r, ResourceType::Route).is_empty());
        // Equal JSON in a new allocation is read again (and gives the same names).
        let c = clusters(&[("a", a), ("b", eds("b", "other"))]);
        let changed = memo.names(&c, ResourceType::Endpoint);
        assert!(!Arc::ptr_eq(&first, &changed));
        assert!(changed.contains("other"));
        assert_eq!(union(first.clone(), changed.clone()).len(), 3);
        assert!(Arc::ptr_eq(&union(first.clone(), first.clone()), &first));
    }

    #[test]
    fn a_freed_resource_cannot_alias_a_new_one() {
        let memo = WantedMemo::default();
        let r = clusters(&[("a", eds("a", "one"))]);
        assert!(memo.names(&r, ResourceType::Endpoint).contains("one"));
        drop(r);
        // The memo's weak reference keeps the old allocation: a new resource gets another
        // address, so the stale answer is never returned.
        for _ in 0..100 {
            let r = clusters(&[("a", eds("a", "two"))]);
            assert!(memo.names(&r, ResourceType::Endpoint).contains("two"));
        }
    }
}
