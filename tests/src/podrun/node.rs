//! One sandboxed node ready for the DaemonSet pod: the manifest, its image built from the
//! workspace, the sandbox, the primary CNI network and the in-cluster API server serving the
//! test's pods. Drop order (fields in order): API server, network, sandbox, image.

use serde_json::{json, Value};

use super::{
    apiserver::InClusterApi,
    chain::PrimaryNetwork,
    image::TestImage,
    manifest::{self, Manifest},
    pod::{NodeContext, RunningPod},
    sandbox::Sandbox,
};
use crate::unique_name;

/// The namespace of the test's application pods (not excluded by the manifest).
pub const APP_NAMESPACE: &str = "shop";

pub struct TestNode {
    pub api: InClusterApi,
    pub primary: PrimaryNetwork,
    pub sandbox: Sandbox,
    pub manifest: Manifest,
    pub node_name: String,
    _image: TestImage,
}

impl TestNode {
    /// Builds the image and the sandbox; the API server lists `app_pods` (names in
    /// [`APP_NAMESPACE`] on this node) so the agent's pod watcher keeps their CNI enrollments.
    pub fn new(app_pods: &[&str]) -> Self {
        let manifest = manifest::load(&manifest::default_path());
        let images: Vec<&str> = manifest
            .pod
            .init_containers
            .iter()
            .chain(&manifest.pod.containers)
            .map(|c| c.image.as_str())
            .collect();
        let image = TestImage::build(images[0]);
        let sandbox = Sandbox::new();
        let primary = PrimaryNetwork::install(&sandbox.cni_conf());
        let node_name = unique_name("node");
        let pods = app_pods
            .iter()
            .enumerate()
            .map(|(i, name)| api_pod(name, i, &node_name))
            .collect();
        let ns = json!({"kind": "Namespace", "apiVersion": "v1",
            "metadata": {"name": APP_NAMESPACE, "uid": "e4a9c2d7-1b6f-4f38-a0c5-9d2e7b4f1a63",
                "labels": {"kubernetes.io/metadata.name": APP_NAMESPACE}},
            "status": {"phase": "Active"}});
        let api = InClusterApi::start(pods, vec![ns], &manifest.namespace, &sandbox.root);
        Self {
            api,
            primary,
            sandbox,
            manifest,
            node_name,
            _image: image,
        }
    }

    /// Starts one DaemonSet pod.
    pub fn start_pod(&self) -> RunningPod {
        RunningPod::start(&NodeContext {
            manifest: &self.manifest,
            sandbox: &self.sandbox,
            api: &self.api,
            node_name: self.node_name.clone(),
        })
    }

    /// The agent's control socket as the host sees it (the remapped /run/sluice).
    pub fn control(&self) -> String {
        self.sandbox
            .run_sluice()
            .join("agent.sock")
            .display()
            .to_string()
    }
}

/// A running Pod object as the API server returns it.
fn api_pod(name: &str, i: usize, node: &str) -> Value {
    json!({"kind": "Pod", "apiVersion": "v1",
        "metadata": {"name": name, "namespace": APP_NAMESPACE,
            "uid": format!("{:08x}-0d5e-4a11-8c3b-{:012x}", std::process::id(), i)},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "app:1"}]},
        "status": {"phase": "Running"}})
}

/// CNI_ARGS the kubelet passes for app pod `name` (in [`APP_NAMESPACE`]).
pub fn cni_args(name: &str) -> String {
    cni_args_in(APP_NAMESPACE, name)
}

/// CNI_ARGS for pod `namespace/name`.
pub fn cni_args_in(namespace: &str, name: &str) -> String {
    format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name};K8S_POD_INFRA_CONTAINER_ID=ctr-{name}")
}
