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
        for c in clusters {
            let name = c.name.as_str();
            let print = ClusterFingerprint::of(c);
            let (Some(running), Some(old)) = (rt.clusters.get(name), prints.get(name)) else {
                return Ok(false);
            };
            if old.shape != print.shape {
                return Ok(false);
            }
            todo.push((running.clone(), cluster_spec(c), print));
        }
        // Checked first, so a refusal leaves every cluster as it was.
        if todo.iter().any(|(running, spec, _)| {
            !matches!(
                (&running.spec.discovery, &spec.discovery),
                (
                    crate::upstream::Discovery::Static(_),
                    crate::upstream::Discovery::Static(_)
                )
            )
        }) {
            return Ok(false);
        }
        for (running, spec, print) in todo {
            running.replace_endpoints(&spec);
            prints.insert(spec.name.clone(), print);
        }
        tracing::debug!(clusters = clusters.len(), "endpoints updated in place");
        Ok(true)
    }
}
