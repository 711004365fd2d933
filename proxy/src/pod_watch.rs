//! `sluice agent --watch-pods`: the pod watcher (sluice-k8s) started beside the agent, on its
//! runtime, talking to its control socket; its readiness ("the API server answers") gates the
//! agent's `/healthz/ready`.

use std::path::Path;

use anyhow::{bail, Context as _};
use sluice_k8s::{
    decide::Settings, directory::PodDirectory, reconcile::LoopOptions, watch::WatchOptions,
};
use sluice_node::{agent::health::ReadyGate, policy::Mode};

/// The watcher's flags.
#[derive(Clone, Debug, clap::Args)]
pub struct WatchArgs {
    /// Watch this node's pods and their namespaces and enroll the pods Istio's labels and
    /// annotations select (istio-injection=enabled, sidecar.istio.io/inject, sluice.io/mode,
    /// traffic.sidecar.istio.io/*); see ARCHITECTURE.md "The pod watcher".
    #[arg(long)]
    watch_pods: bool,
    /// This node's name (the DaemonSet sets NODE_NAME from spec.nodeName).
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
    /// The agent's own namespace, never captured (the DaemonSet sets POD_NAMESPACE).
    #[arg(long, env = "POD_NAMESPACE")]
    pod_namespace: Option<String>,
    /// Mode of a selected pod without sluice.io/mode or a namespace sluice.io/dataplane-mode.
    #[arg(long, default_value = "node")]
    watch_default_mode: String,
    /// Reach the API server through this kubeconfig instead of the in-cluster config
    /// (off-cluster runs and tests).
    #[arg(long)]
    kubeconfig: Option<std::path::PathBuf>,
}

/// With `--watch-pods`: the directory the watcher will publish the pods' metadata to.
pub fn directory(args: &WatchArgs) -> Option<PodDirectory> {
    args.watch_pods.then(PodDirectory::new)
}

/// With `--watch-pods`: spawns the watcher on `rt` (publishing to `directory`) and returns the
/// readiness gate it keeps.
pub fn start(
    args: &WatchArgs,
    control: &Path,
    rt: &tokio::runtime::Runtime,
    directory: Option<PodDirectory>,
) -> anyhow::Result<Option<ReadyGate>> {
    if !args.watch_pods {
        return Ok(None);
    }
    let Some(node_name) = args.node_name.clone().filter(|n| !n.is_empty()) else {
        bail!("--watch-pods needs the node name: --node-name or NODE_NAME");
    };
    let default_mode: Mode = args
        .watch_default_mode
        .parse()
        .with_context(|| "--watch-default-mode".to_string())?;
    let opts = WatchOptions {
        node_name,
        control: control.to_path_buf(),
        settings: Settings {
            own_namespace: args.pod_namespace.clone(),
            default_mode,
        },
        loop_opts: LoopOptions::default(),
        kubeconfig: args.kubeconfig.clone(),
        directory,
    };
    let ready = ReadyGate::not_ready(sluice_k8s::reconcile::NOT_SYNCED);
    rt.spawn(sluice_k8s::watch::run(opts, ready.clone()));
    Ok(Some(ready))
}
