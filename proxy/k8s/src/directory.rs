//! The pod directory: each pod's labels, service account and owning workload as the watcher
//! last saw them, published for the agent's per-pod xDS streams (`sluice agent --watch-pods
//! --xds-address`), which send them in the node metadata istiod keys on. A snapshot is
//! replaced whole after each batch of watch events (only when something changed); a stream
//! waits, bounded, for its pod to appear instead of polling.

use std::{collections::HashMap, sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::Pod;
use sluice_node::agent::pod_config::PodMeta;
use tokio::sync::watch;

use crate::store::Store;

/// `(namespace, name)` -> metadata.
type Snapshot = HashMap<(String, String), PodMeta>;

/// Shared between the watcher (writer) and the xDS config source (readers).
#[derive(Clone, Debug)]
pub struct PodDirectory {
    tx: Arc<watch::Sender<Arc<Snapshot>>>,
}

impl Default for PodDirectory {
    fn default() -> Self {
        Self::new()
    }
}

impl PodDirectory {
    /// An empty directory.
    pub fn new() -> Self {
        Self {
            tx: Arc::new(watch::Sender::new(Arc::new(Snapshot::new()))),
        }
    }

    /// Publishes the store's pods (readers are woken only when the snapshot changed).
    pub fn publish(&self, store: &Store) {
        let fresh: Snapshot = store
            .pods()
            .values()
            .filter_map(|p| {
                let m = &p.metadata;
                Some(((m.namespace.clone()?, m.name.clone()?), pod_meta(p)))
            })
            .collect();
        self.tx.send_if_modified(|cur| {
            if **cur == fresh {
                return false;
            }
            *cur = Arc::new(fresh);
            true
        });
    }

    /// The pod's metadata now, if the watcher knows it.
    pub fn get(&self, namespace: &str, name: &str) -> Option<PodMeta> {
        self.tx
            .borrow()
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// The pod's metadata, waiting up to `bound` for the watcher to see it (a CNI ADD can come
    /// before the pod's watch event); None after that.
    pub async fn wait_for(&self, namespace: &str, name: &str, bound: Duration) -> Option<PodMeta> {
        tokio::time::timeout(bound, self.known(namespace, name))
            .await
            .ok()
    }

    /// The pod's metadata once the watcher knows the pod (pending forever if it never does).
    pub async fn known(&self, namespace: &str, name: &str) -> PodMeta {
        let key = (namespace.to_string(), name.to_string());
        let mut rx = self.tx.subscribe();
        let found = match rx.wait_for(|s| s.contains_key(&key)).await {
            Ok(s) => s.get(&key).cloned(),
            // The sender lives in `self`: never closed while this borrow lasts.
            Err(_) => None,
        };
        match found {
            Some(m) => m,
            None => std::future::pending().await,
        }
    }
}

/// What Istio's node metadata takes from a pod.
pub fn pod_meta(p: &Pod) -> PodMeta {
    let m = &p.metadata;
    let labels = m.labels.clone().unwrap_or_default();
    let namespace = m.namespace.clone().unwrap_or_default();
    let (api_version, kind, name) = workload(p);
    PodMeta {
        owner: Some(format!(
            "kubernetes://apis/{api_version}/namespaces/{namespace}/{}s/{name}",
            kind.to_ascii_lowercase()
        )),
        workload_name: Some(name),
        service_account: p
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .filter(|s| !s.is_empty()),
        labels,
    }
}

/// The pod's workload `(apiVersion, Kind, name)` the way Istio derives it: the controller
/// owner; a ReplicaSet named `DEPLOYMENT-<pod-template-hash>` is its Deployment; a Job named
/// `CRONJOB-<8 to 10 digits>` is its CronJob; no controller: the pod itself.
fn workload(p: &Pod) -> (String, String, String) {
    let m = &p.metadata;
    let pod_name = m.name.clone().unwrap_or_default();
    let owner = m
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true));
    let Some(o) = owner else {
        return ("v1".into(), "Pod".into(), pod_name);
    };
    let hash = m
        .labels
        .as_ref()
        .and_then(|l| l.get("pod-template-hash"))
        .filter(|h| !h.is_empty());
    match (o.kind.as_str(), hash) {
        ("ReplicaSet", Some(h)) => {
            if let Some(d) = o.name.strip_suffix(&format!("-{h}")) {
                return ("apps/v1".into(), "Deployment".into(), d.to_string());
            }
        }
        ("Job", _) => {
            if let Some((cron, stamp)) = o.name.rsplit_once('-') {
                let digits =
                    (8..=10).contains(&stamp.len()) && stamp.bytes().all(|b| b.is_ascii_digit());
                if digits && !cron.is_empty() {
                    return ("batch/v1".into(), "CronJob".into(), cron.to_string());
                }
            }
        }
        _ => {}
    }
    (o.api_version.clone(), o.kind.clone(), o.name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use kube::runtime::watcher::Event;

    fn fixture() -> Pod {
        serde_json::from_str(include_str!("../tests/fixtures/pod-running.json")).unwrap()
    }

    fn owned_by(kind: &str, api: &str, name: &str) -> Pod {
        let mut p = fixture();
        p.metadata.owner_references = Some(vec![OwnerReference {
            api_version: api.into(),
            kind: kind.into(),
            name: name.into(),
            controller: Some(true),
            ..Default::default()
        }]);
        p
    }

    #[test]
    fn a_replica_set_pod_belongs_to_its_deployment() {
        let m = pod_meta(&fixture());
        assert_eq!(m.workload_name.as_deref(), Some("reviews-v1"));
        assert_eq!(
            m.owner.as_deref(),
            Some("kubernetes://apis/apps/v1/namespaces/shop/deployments/reviews-v1")
        );
        assert_eq!(m.service_account.as_deref(), Some("bookinfo-reviews"));
        assert_eq!(m.labels["app"], "reviews");
        assert_eq!(m.labels["version"], "v1");
    }

    #[test]
    fn jobs_cronjobs_statefulsets_and_bare_pods() {
        let p = owned_by("Job", "batch/v1", "backup-28901234");
        assert_eq!(
            pod_meta(&p).owner.as_deref(),
            Some("kubernetes://apis/batch/v1/namespaces/shop/cronjobs/backup")
        );
        let p = owned_by("Job", "batch/v1", "migrate");
        assert_eq!(pod_meta(&p).workload_name.as_deref(), Some("migrate"));
        assert_eq!(
            pod_meta(&p).owner.as_deref(),
            Some("kubernetes://apis/batch/v1/namespaces/shop/jobs/migrate")
        );
        let p = owned_by("StatefulSet", "apps/v1", "db");
        assert_eq!(
            pod_meta(&p).owner.as_deref(),
            Some("kubernetes://apis/apps/v1/namespaces/shop/statefulsets/db")
        );
        // A ReplicaSet whose name does not end in the hash is itself the workload.
        let p = owned_by("ReplicaSet", "apps/v1", "hand-made");
        assert_eq!(pod_meta(&p).workload_name.as_deref(), Some("hand-made"));
        let mut p = fixture();
        p.metadata.owner_references = None;
        let m = pod_meta(&p);
        assert_eq!(
            m.owner.as_deref(),
            Some("kubernetes://apis/v1/namespaces/shop/pods/reviews-v1-5b4c8d7f9c-x2k8q")
        );
    }

    #[tokio::test]
    async fn a_stream_waits_for_its_pod_bounded() {
        let dir = PodDirectory::new();
        let mut store = Store::default();
        let name = fixture().metadata.name.unwrap();
        let short = Duration::from_millis(20);
        assert_eq!(dir.wait_for("shop", &name, short).await, None, "bounded");
        let waiter = {
            let d = dir.clone();
            let n = name.clone();
            tokio::spawn(async move { d.wait_for("shop", &n, Duration::from_secs(10)).await })
        };
        tokio::task::yield_now().await;
        store.apply(crate::store::Input::Pod(Event::Apply(fixture())));
        dir.publish(&store);
        let got = waiter.await.unwrap().expect("woken by the publish");
        assert_eq!(got.service_account.as_deref(), Some("bookinfo-reviews"));
        assert_eq!(dir.get("shop", &name), Some(got));
        assert_eq!(dir.get("other", &name), None);
    }
}
