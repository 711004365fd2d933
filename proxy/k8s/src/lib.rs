//! sluice's pod watcher (issue 11): watches the pods of its node and their namespaces, decides
//! capture with Istio's vocabulary ([`decide`]), finds each running pod's netns from its UID
//! ([`pod_netns`]) and keeps the agent's enrolled pods equal to that decision ([`reconcile`]),
//! talking to the agent over its control socket like the CNI plugin, and publishes each pod's
//! labels and service account for the per-pod xDS streams ([`directory`]). The Kubernetes
//! client stays in this crate ([`watch`]).

pub mod decide;
pub mod directory;
pub mod pod_netns;
pub mod reconcile;
pub mod store;
pub mod watch;

/// The API types the watcher takes (for tests that feed it objects).
pub use k8s_openapi::api::core::v1::{Namespace, Pod};
pub use kube::runtime::watcher::Event;
