//! Endpoint-only updates (EDS): [`Server::update_endpoints`] swaps the hosts of running clusters
//! in place, with no new config version, no route table rebuilt and no listener touched. Only a
//! change confined to endpoints qualifies; anything else is the caller's whole [`Server::apply`].

use std::sync::Arc;

use super::{ClusterFingerprint, Server, ServerError};
use crate::{config, upstream::from_config::cluster_spec};

impl Server {
    /// Gives each running cluster named in `clusters` the endpoints of its new config, when
    /// every one of them exists and differs from its running config in endpoints only.
    /// `Ok(false)`: nothing changed, some cluster needs a whole apply. Serialised with
    /// apply/reload; a later whole apply keeps these clusters only if their config equals the
    /// updated one.
    pub async fn update_endpoints(
        self: &Arc<Self>,
        clusters: &[config::Cluster],
    ) -> Result<bool, ServerError> {
        let _guard = self.reload_lock.lock().await;
        let rt = self.runtime();
        let mut prints = rt.fingerprints.lock().unwrap_or_else(|e| e.into_inner());
        let mut todo = Vec::with_capacity(clusters.len());
        // Everything is checked before anything changes, so a refusal leaves every cluster as
        // it was. Equal shapes mean the same discovery type.
        for c in clusters {
            let name = c.name.as_str();
            let print = ClusterFingerprint::of(c);
            let (Some(running), Some(old)) = (rt.clusters.get(name), prints.get(name)) else {
                return Ok(false);
            };
            if old.shape != print.shape || !running.takes_endpoint_updates() {
                return Ok(false);
            }
            todo.push((running.clone(), print));
        }
        for ((running, print), c) in todo.into_iter().zip(clusters) {
            running.replace_endpoints(&cluster_spec(c));
            prints.insert(c.name.as_str().to_string(), print);
        }
        tracing::debug!(clusters = clusters.len(), "endpoints updated in place");
        Ok(true)
    }
}
