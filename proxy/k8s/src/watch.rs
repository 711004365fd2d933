//! The thin Kubernetes plumbing: a client from the in-cluster config (or `KUBECONFIG`), a
//! watcher on the pods of this node (field selector `spec.nodeName=$NODE_NAME`) and one on
//! namespaces, both with kube's backoff, merged into the reconcile loop's inputs. Everything
//! else (decisions, netns, the agent) is in [`crate::reconcile`] and tested without an API
//! server.

use std::{path::PathBuf, sync::Arc, time::Duration};

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::{
    runtime::{watcher, WatchStreamExt as _},
    Api, Client,
};
use sluice_node::agent::health::ReadyGate;
use tracing::{error, info};

use crate::{
    decide::Settings,
    reconcile::{self, ControlAgent, LoopOptions, Reconciler},
    store::Input,
};

/// What `sluice agent --watch-pods` passes.
#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// This node (`NODE_NAME`, from the downward API).
    pub node_name: String,
    /// The agent's control socket.
    pub control: PathBuf,
    /// Own namespace and default mode.
    pub settings: Settings,
    /// Resync and readiness timing.
    pub loop_opts: LoopOptions,
    /// A kubeconfig file instead of the in-cluster config (off-cluster runs, tests).
    pub kubeconfig: Option<PathBuf>,
    /// Where the pods' labels and service accounts are published (for per-pod xDS streams).
    pub directory: Option<crate::directory::PodDirectory>,
}

/// A client from `kubeconfig`, else the in-cluster config (then `KUBECONFIG` / ~/.kube/config).
async fn client(kubeconfig: Option<&std::path::Path>) -> Result<Client, String> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?
        }
        None => kube::Config::infer().await.map_err(|e| e.to_string())?,
    };
    Client::try_from(config).map_err(|e| e.to_string())
}

/// How long to wait before trying to build the client again.
const CLIENT_RETRY: Duration = Duration::from_secs(10);

/// Watches and reconciles until the process ends; `ready` stays false while the API server
/// cannot be reached (never an exit: a crash loop would not make it reachable).
pub async fn run(opts: WatchOptions, ready: ReadyGate) {
    let client = loop {
        match client(opts.kubeconfig.as_deref()).await {
            Ok(c) => break c,
            Err(e) => {
                error!(error = %e, "pod watcher: no Kubernetes client (in-cluster config or KUBECONFIG); not ready, retrying");
                ready.set_not_ready(&format!("pod watcher: no Kubernetes client: {e}"));
                tokio::time::sleep(CLIENT_RETRY).await;
            }
        }
    };
    let node = opts.node_name.clone();
    info!(node = %node, "pod watcher: watching this node's pods and all namespaces");
    let pods_cfg = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let pods = watcher(Api::<Pod>::all(client.clone()), pods_cfg)
        .default_backoff()
        .map(move |r| match r {
            Ok(e) => Input::Pod(e),
            Err(e) => Input::WatchError(format!("watching pods of node {node}: {e}")),
        });
    let namespaces = watcher(Api::<Namespace>::all(client), watcher::Config::default())
        .default_backoff()
        .map(|r| match r {
            Ok(e) => Input::Namespace(e),
            Err(e) => Input::WatchError(format!("watching namespaces: {e}")),
        });
    let inputs = futures_util::stream::select(pods, namespaces);
    let agent = Arc::new(ControlAgent {
        path: opts.control,
        only_own_process: true,
    });
    let rec = Reconciler::new(opts.settings, PathBuf::from("/proc"));
    reconcile::run(
        inputs,
        rec,
        agent,
        opts.loop_opts,
        Some(ready),
        opts.directory,
    )
    .await;
    error!("pod watcher: watch streams ended");
}
