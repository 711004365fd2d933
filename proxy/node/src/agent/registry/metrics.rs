//! What the agent's scrape endpoint (`--metrics-addr`) reads: every node-mode pod served by the
//! L7 engine, its servers' Istio metrics labelled `pod` and `namespace`.

use std::sync::Arc;

use sluice_engine::server::istio::encode::Target;

use super::Registry;

/// Label sets per pod and family; more are summed into one `overflow` series.
pub const MAX_SERIES_PER_POD: usize = 500;

impl Registry {
    /// One scrape target per pod whose listeners the L7 engine serves: `pod` is the Kubernetes
    /// pod name from the enrollment, else the netns name; `namespace` the pod's namespace, else
    /// `unknown`.
    pub fn metrics_targets(&self) -> Vec<Target> {
        let mut targets: Vec<Target> = self
            .pods
            .values()
            .filter_map(|p| {
                let servers = p.listeners.as_ref()?.engine.as_ref()?;
                let id = p.identity.as_ref();
                let namespace = id.and_then(|i| i.pod_namespace.clone());
                let pod = id.and_then(|i| i.pod_name.clone()).unwrap_or_else(|| {
                    let n = p.netns_arg.rsplit('/').next().unwrap_or(&p.netns_arg);
                    n.to_string()
                });
                Some(Target {
                    labels: vec![
                        ("pod", pod),
                        (
                            "namespace",
                            namespace.clone().unwrap_or_else(|| "unknown".into()),
                        ),
                    ],
                    workload_namespace: namespace,
                    metrics: [&servers.outbound, &servers.inbound]
                        .into_iter()
                        .flatten()
                        .map(|s| Arc::clone(&s.stats.istio))
                        .collect(),
                    max_series: MAX_SERIES_PER_POD,
                })
            })
            .collect();
        targets.sort_by(|a, b| a.labels.cmp(&b.labels));
        targets
    }
}
