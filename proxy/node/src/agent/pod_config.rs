//! The per-pod configuration hook of node mode: when the agent starts a pod's L7 engine servers
//! it asks a [`PodConfigSource`] (given by the binary, e.g. one ADS stream per pod with
//! `--xds-address`) to keep them configured, and holds the returned guard as long as the pod is
//! served; dropping the guard (unenroll, agent shutdown) stops the source for that pod. This
//! crate knows nothing of gRPC: the source lives in the `sluice` binary on top of sluice-xds.

use std::{collections::BTreeMap, net::IpAddr};

use crate::{l7capture::PodServers, netns::Netns, policy::PodIdentity};

/// Namespace given to a pod enrolled without a Kubernetes identity.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Who a pod is, as far as the agent knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    /// The netns argument it was enrolled with.
    pub netns: String,
    /// Kubernetes pod name (the netns name when the enrollment carried none).
    pub name: String,
    /// Kubernetes namespace ([`DEFAULT_NAMESPACE`] when the enrollment carried none).
    pub namespace: String,
    /// The pod's addresses found in its netns (IPv4 first; loopback and link-local left out).
    pub ips: Vec<IpAddr>,
    /// What Kubernetes says of the pod beyond its name, when known (sidecar mode: the
    /// downward-API environment; node mode: filled from the pod watcher by the config source).
    pub meta: Option<PodMeta>,
}

/// A pod's Kubernetes metadata a control plane keys on (istiod: Sidecar and EnvoyFilter
/// workload selectors, telemetry labels, the node's cluster name).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodMeta {
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `spec.serviceAccountName`.
    pub service_account: Option<String>,
    /// The name of the workload that owns the pod (a ReplicaSet's Deployment, a Job's
    /// CronJob, else the controller, else the pod).
    pub workload_name: Option<String>,
    /// That workload as Istio's `OWNER`:
    /// `kubernetes://apis/apps/v1/namespaces/NS/deployments/NAME`.
    pub owner: Option<String>,
}

impl PodInfo {
    /// From the enrollment's identity (if any) and the addresses found in `netns`.
    pub fn new(netns_arg: &str, netns: &Netns, identity: Option<&PodIdentity>) -> Self {
        let ips = match netns.run(addresses) {
            Ok(ips) => ips,
            Err(e) => {
                tracing::warn!(netns = netns_arg, error = %e, "cannot list the pod's addresses");
                Vec::new()
            }
        };
        Self::with_ips(netns_arg, identity, ips)
    }

    fn with_ips(netns_arg: &str, identity: Option<&PodIdentity>, ips: Vec<IpAddr>) -> Self {
        let fallback = std::path::Path::new(netns_arg)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| netns_arg.to_string());
        let name = identity
            .and_then(|i| i.pod_name.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or(fallback);
        let namespace = identity
            .and_then(|i| i.pod_namespace.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
        Self {
            netns: netns_arg.to_string(),
            name,
            namespace,
            ips,
            meta: None,
        }
    }
}

impl PodInfo {
    /// Sidecar mode (`sluice sidecar`, called inside the pod netns): name and namespace from
    /// `POD_NAME` / `POD_NAMESPACE` (the downward API names Istio's injector sets), else the
    /// netns name and [`DEFAULT_NAMESPACE`]; the addresses of the current netns.
    pub fn sidecar_here(netns_arg: &str) -> Self {
        let env = |k: &str| std::env::var(k).ok().filter(|v: &String| !v.is_empty());
        let identity = PodIdentity {
            pod_name: env("POD_NAME"),
            pod_namespace: env("POD_NAMESPACE"),
            ..PodIdentity::default()
        };
        let mut pod = Self::with_ips(netns_arg, Some(&identity), addresses());
        pod.meta = PodMeta::from_sidecar_env(&env);
        // Istio's injector mounts the pod's labels as a downward-API file.
        if let Ok(text) = std::fs::read_to_string(ISTIO_POD_LABELS) {
            let labels = PodMeta::labels_from_downward_api(&text);
            let meta = pod.meta.get_or_insert_with(PodMeta::default);
            if meta.labels.is_empty() {
                meta.labels = labels;
            }
        }
        pod
    }
}

/// Where Istio's injector mounts the pod's labels (downward API, `metadata.labels`).
pub const ISTIO_POD_LABELS: &str = "/etc/istio/pod/labels";

impl PodMeta {
    /// A downward-API labels file: one `key="value"` per line (the value Go-quoted).
    pub fn labels_from_downward_api(text: &str) -> BTreeMap<String, String> {
        text.lines()
            .filter_map(|line| {
                let (k, v) = line.split_once('=')?;
                let v = v.trim().strip_prefix('"')?.strip_suffix('"')?;
                let mut out = String::with_capacity(v.len());
                let mut chars = v.chars();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => match chars.next() {
                            Some('n') => out.push('\n'),
                            Some('t') => out.push('\t'),
                            Some(o) => out.push(o),
                            None => {}
                        },
                        c => out.push(c),
                    }
                }
                Some((k.trim().to_string(), out))
            })
            .filter(|(k, _)| !k.is_empty())
            .collect()
    }

    /// Sidecar mode's metadata from the environment Istio's injector gives the proxy container:
    /// `SERVICE_ACCOUNT` (spec.serviceAccountName), `ISTIO_METAJSON_LABELS` (the pod's labels as
    /// a JSON object), `ISTIO_META_WORKLOAD_NAME` and `ISTIO_META_OWNER`; None when none is set. Labels that are not
    /// a JSON object of strings are ignored with a warning (the stream still starts).
    pub fn from_sidecar_env(env: &dyn Fn(&str) -> Option<String>) -> Option<Self> {
        let service_account = env("SERVICE_ACCOUNT");
        let workload_name = env("ISTIO_META_WORKLOAD_NAME");
        let owner = env("ISTIO_META_OWNER");
        let labels = env("ISTIO_METAJSON_LABELS");
        if service_account.is_none()
            && workload_name.is_none()
            && owner.is_none()
            && labels.is_none()
        {
            return None;
        }
        let labels = labels
            .and_then(|text| match serde_json::from_str(&text) {
                Ok(l) => Some(l),
                Err(e) => {
                    tracing::warn!(error = %e, "ISTIO_METAJSON_LABELS is not a JSON object of strings; no labels sent");
                    None
                }
            })
            .unwrap_or_default();
        Some(Self {
            labels,
            service_account,
            workload_name,
            owner,
        })
    }
}

/// The non-loopback addresses of the current netns, IPv4 first, each once.
fn addresses() -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = match nix::ifaddrs::getifaddrs() {
        Ok(it) => it
            // Not the loopback interface's (the agent adds ::6 there for the inbound passthrough).
            .filter(|a| {
                !a.flags
                    .contains(nix::net::if_::InterfaceFlags::IFF_LOOPBACK)
            })
            .filter_map(|a| {
                let s = a.address?;
                if let Some(v4) = s.as_sockaddr_in() {
                    Some(IpAddr::V4(v4.ip()))
                } else {
                    s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
                }
            })
            .filter(|ip| !ip.is_loopback() && !is_link_local(ip))
            .collect(),
        Err(_) => Vec::new(),
    };
    out.sort_by_key(|ip| ip.is_ipv6());
    out.dedup();
    out
}

fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// Keeps the engine servers of each node-mode pod configured (one instance for the agent).
pub trait PodConfigSource: Send + Sync {
    /// Starts configuring `servers` for `pod`; called when the pod's servers start (enroll,
    /// adoption after a restart or an upgrade). Stopped when the returned guard is dropped.
    fn start(&self, pod: &PodInfo, servers: &PodServers) -> Box<dyn Send + Sync>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn downward_api_labels_are_unquoted() {
        let l = PodMeta::labels_from_downward_api(
            "app=\"web\"\nsecurity.istio.io/tlsMode=\"istio\"\nnote=\"a \\\"b\\\"\"\nbroken\n",
        );
        assert_eq!(l.len(), 3, "{l:?}");
        assert_eq!(l["app"], "web");
        assert_eq!(l["security.istio.io/tlsMode"], "istio");
        assert_eq!(l["note"], "a \"b\"");
    }

    #[test]
    fn sidecar_metadata_comes_from_the_injectors_environment() {
        assert_eq!(PodMeta::from_sidecar_env(&env(&[])), None);
        let m = PodMeta::from_sidecar_env(&env(&[
            ("SERVICE_ACCOUNT", "web-sa"),
            ("ISTIO_METAJSON_LABELS", r#"{"app":"web","version":"v2"}"#),
            ("ISTIO_META_WORKLOAD_NAME", "web-v2"),
            (
                "ISTIO_META_OWNER",
                "kubernetes://apis/apps/v1/namespaces/shop/deployments/web-v2",
            ),
        ]))
        .expect("metadata");
        assert_eq!(m.service_account.as_deref(), Some("web-sa"));
        assert_eq!(m.labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(m.workload_name.as_deref(), Some("web-v2"));
        assert!(m.owner.unwrap().ends_with("/deployments/web-v2"));
        // Labels that are not an object of strings are dropped, the rest kept.
        let m = PodMeta::from_sidecar_env(&env(&[
            ("SERVICE_ACCOUNT", "s"),
            ("ISTIO_METAJSON_LABELS", r#"{"app": 1}"#),
        ]))
        .expect("metadata");
        assert!(m.labels.is_empty());
        assert_eq!(m.service_account.as_deref(), Some("s"));
    }
}
