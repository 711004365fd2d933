//! What the watcher knows: the node's pods (by UID) and the cluster's namespaces (by name),
//! kept from `kube::runtime::watcher` events. A re-list (`Init` .. `InitDone`) replaces a
//! whole kind at once; pods that left (deleted, or missing from a re-list) are remembered
//! until the next reconcile pass, so it can unenroll them.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::runtime::watcher::Event;

/// One input of the reconcile loop.
#[derive(Debug)]
// Moved once from the watch stream into the store: boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Input {
    /// A pod watch event (pods of this node).
    Pod(Event<Pod>),
    /// A namespace watch event.
    Namespace(Event<Namespace>),
    /// A watch stream failed (API server unreachable, RBAC, ...): the message, for the log
    /// and readiness.
    WatchError(String),
}

/// The pods and namespaces.
#[derive(Debug, Default)]
pub struct Store {
    pods: BTreeMap<String, Pod>,
    namespaces: HashMap<String, Namespace>,
    pod_buffer: Option<BTreeMap<String, Pod>>,
    ns_buffer: Option<HashMap<String, Namespace>>,
    pods_synced: bool,
    namespaces_synced: bool,
    /// Pods that left the store since the last pass (UID -> `NAMESPACE/NAME`).
    departed: HashMap<String, String>,
}

impl Store {
    /// Applies one event; returns whether anything may have changed.
    pub fn apply(&mut self, input: Input) -> bool {
        match input {
            Input::Pod(e) => self.apply_pod(e),
            Input::Namespace(e) => self.apply_namespace(e),
            Input::WatchError(_) => return false,
        }
        true
    }

    fn apply_pod(&mut self, e: Event<Pod>) {
        match e {
            Event::Apply(p) => {
                if let Some(uid) = uid(&p) {
                    self.departed.remove(&uid);
                    self.pods.insert(uid, p);
                }
            }
            Event::Delete(p) => {
                if let Some(uid) = uid(&p) {
                    self.pods.remove(&uid);
                    self.departed.insert(uid, crate::decide::pod_key(&p));
                }
            }
            Event::Init => self.pod_buffer = Some(BTreeMap::new()),
            Event::InitApply(p) => {
                if let (Some(buf), Some(uid)) = (self.pod_buffer.as_mut(), uid(&p)) {
                    buf.insert(uid, p);
                }
            }
            Event::InitDone => {
                let fresh = self.pod_buffer.take().unwrap_or_default();
                for (uid, p) in &self.pods {
                    if !fresh.contains_key(uid) {
                        self.departed.insert(uid.clone(), crate::decide::pod_key(p));
                    }
                }
                self.pods = fresh;
                self.pods_synced = true;
            }
        }
    }

    fn apply_namespace(&mut self, e: Event<Namespace>) {
        let name = |n: &Namespace| n.metadata.name.clone().unwrap_or_default();
        match e {
            Event::Apply(n) => {
                self.namespaces.insert(name(&n), n);
            }
            Event::Delete(n) => {
                self.namespaces.remove(&name(&n));
            }
            Event::Init => self.ns_buffer = Some(HashMap::new()),
            Event::InitApply(n) => {
                if let Some(buf) = self.ns_buffer.as_mut() {
                    buf.insert(name(&n), n);
                }
            }
            Event::InitDone => {
                self.namespaces = self.ns_buffer.take().unwrap_or_default();
                self.namespaces_synced = true;
            }
        }
    }

    /// Both initial lists are complete: only then may a pass unenroll anything.
    pub fn synced(&self) -> bool {
        self.pods_synced && self.namespaces_synced
    }

    /// The pods, by UID.
    pub fn pods(&self) -> &BTreeMap<String, Pod> {
        &self.pods
    }

    /// A namespace by name.
    pub fn namespace(&self, name: &str) -> Option<&Namespace> {
        self.namespaces.get(name)
    }

    /// The pod named `namespace/name`, if any.
    pub fn pod_named(&self, namespace: &str, name: &str) -> Option<(&String, &Pod)> {
        self.pods.iter().find(|(_, p)| {
            p.metadata.namespace.as_deref() == Some(namespace)
                && p.metadata.name.as_deref() == Some(name)
        })
    }

    /// Pods that left since the last call (UID -> `NAMESPACE/NAME`).
    pub fn take_departed(&mut self) -> HashMap<String, String> {
        std::mem::take(&mut self.departed)
    }
}

/// A pod's UID (lower case).
pub fn uid(p: &Pod) -> Option<String> {
    p.metadata.uid.as_ref().map(|u| u.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, name: &str) -> Pod {
        let mut p: Pod =
            serde_json::from_str(include_str!("../tests/fixtures/pod-running.json")).unwrap();
        p.metadata.uid = Some(uid.into());
        p.metadata.name = Some(name.into());
        p
    }

    #[test]
    fn relists_replace_and_remember_who_left() {
        let mut s = Store::default();
        assert!(!s.synced());
        s.apply(Input::Pod(Event::Init));
        s.apply(Input::Pod(Event::InitApply(pod("U1", "a"))));
        s.apply(Input::Pod(Event::InitApply(pod("u2", "b"))));
        s.apply(Input::Pod(Event::InitDone));
        assert!(!s.synced(), "namespaces not listed yet");
        s.apply(Input::Namespace(Event::Init));
        s.apply(Input::Namespace(Event::InitDone));
        assert!(s.synced());
        assert_eq!(s.pods().len(), 2);
        assert!(s.pods().contains_key("u1"), "UIDs are lower case");
        assert_eq!(
            s.pod_named("shop", "b").map(|(u, _)| u.as_str()),
            Some("u2")
        );
        // A re-list without b: b left.
        s.apply(Input::Pod(Event::Init));
        s.apply(Input::Pod(Event::InitApply(pod("u1", "a"))));
        assert_eq!(s.pods().len(), 2, "the old list stays until InitDone");
        s.apply(Input::Pod(Event::InitDone));
        assert_eq!(
            s.take_departed().into_iter().collect::<Vec<_>>(),
            [("u2".to_string(), "shop/b".to_string())]
        );
        // Deleted, then back (same UID): not departed.
        s.apply(Input::Pod(Event::Delete(pod("u1", "a"))));
        assert!(s.pods().is_empty());
        s.apply(Input::Pod(Event::Apply(pod("u1", "a"))));
        assert!(s.take_departed().is_empty());
        assert!(
            !s.apply(Input::WatchError("down".into())),
            "an error changes nothing"
        );
        assert_eq!(s.pods().len(), 1);
    }
}
