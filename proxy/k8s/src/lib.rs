//! sluice's pod watcher (issue 11): watches the pods of its node and their namespaces, decides
//! capture with Istio's vocabulary ([`decide`]), finds each running pod's netns from its UID
//! ([`pod_netns`]) and keeps the agent's enrolled pods equal to that decision ([`reconcile`]),
//! talking to the agent over its control socket like the CNI plugin. The Kubernetes client
//! stays in this crate ([`watch`]).

pub mod decide;
pub mod pod_netns;
pub mod reconcile;
pub mod store;
pub mod watch;
