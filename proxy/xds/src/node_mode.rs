//! Node mode (`sluice agent --xds-address`): one ADS stream per enrolled pod, each with the
//! pod's own Istio node identity. [`pod_bootstrap`] makes the pod's bootstrap document from the
//! agent's `--config` (the base static resources, may be empty), the node and an ADS cluster
//! synthesized from the address; the `sluice` binary runs [`crate::client::run_all`] on it
//! against the pod's outbound and inbound servers.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr, ToSocketAddrs as _},
};

use serde_json::{json, Value};

/// `ISTIO_VERSION` sent in every pod's node metadata: the Istio release sluice's Istio shapes
/// are modelled on (the istio-init rules, the sidecar walkthrough: 1.23); istiod gates features
/// on it.
pub const ISTIO_VERSION: &str = "1.23.0";
/// `CLUSTER_ID` sent when the agent is not told one (Istio's default cluster name).
pub const DEFAULT_CLUSTER_ID: &str = "Kubernetes";
/// Name of the synthesized static cluster that reaches the management server.
pub const XDS_CLUSTER: &str = "xds-grpc";

/// Where the management server is (`--xds-address`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XdsAddress {
    /// `http://HOST:PORT` (plaintext gRPC) or `https://HOST:PORT` (TLS); HOST resolved once
    /// when parsed, and kept as the name the server's certificate must carry.
    Tcp {
        /// The resolved address.
        addr: SocketAddr,
        /// HOST as given (brackets of an IPv6 literal removed).
        host: String,
        /// `https://`.
        tls: bool,
    },
    /// `unix:PATH`.
    Unix(std::path::PathBuf),
}

impl XdsAddress {
    /// Parses `http://HOST:PORT`, `https://HOST:PORT` or `unix:PATH` (the error names the value).
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(format!("--xds-address {s:?}: empty unix socket path"));
            }
            return Ok(Self::Unix(path.into()));
        }
        let (hostport, tls) = match (s.strip_prefix("http://"), s.strip_prefix("https://")) {
            (Some(h), _) => (h, false),
            (_, Some(h)) => (h, true),
            _ => {
                return Err(format!(
                    "--xds-address {s:?}: expected http://HOST:PORT, https://HOST:PORT or unix:PATH"
                ))
            }
        };
        let hostport = hostport.trim_end_matches('/');
        let host = hostport
            .rsplit_once(':')
            .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']').to_string())
            .ok_or_else(|| format!("--xds-address {s:?}: no port"))?;
        let addr = hostport
            .to_socket_addrs()
            .map_err(|e| format!("--xds-address {s:?}: {e}"))?
            .next()
            .ok_or_else(|| format!("--xds-address {s:?}: the host has no address"))?;
        Ok(Self::Tcp { addr, host, tls })
    }

    fn endpoint(&self) -> Value {
        match self {
            Self::Tcp { addr: a, .. } => {
                json!({"socket_address": {"address": a.ip().to_string(), "port_value": a.port()}})
            }
            Self::Unix(p) => json!({"pipe": {"path": p.display().to_string()}}),
        }
    }
}

/// A pod as the control plane should see it.
#[derive(Debug, Clone)]
pub struct PodNode {
    /// Kubernetes pod name.
    pub name: String,
    /// Kubernetes namespace.
    pub namespace: String,
    /// The pod's addresses, IPv4 first.
    pub ips: Vec<IpAddr>,
    /// `CLUSTER_ID`.
    pub cluster_id: String,
    /// The pod's labels (`LABELS`), as the API server has them (empty when unknown).
    pub labels: BTreeMap<String, String>,
    /// `SERVICE_ACCOUNT` (spec.serviceAccountName), when known.
    pub service_account: Option<String>,
    /// `WORKLOAD_NAME`: the owning Deployment, CronJob, ..., when known.
    pub workload_name: Option<String>,
    /// `OWNER`: `kubernetes://apis/apps/v1/namespaces/NS/deployments/NAME`, when known.
    pub owner: Option<String>,
}

/// Istio's canonical service labels, which its injector adds to a pod that lacks them.
const CANONICAL_NAME: &str = "service.istio.io/canonical-name";
const CANONICAL_REVISION: &str = "service.istio.io/canonical-revision";

impl PodNode {
    /// Istio's sidecar node id: `sidecar~POD_IP~NAME.NS~NS.svc.cluster.local` (POD_IP the first
    /// IPv4 address, else the first address, else 0.0.0.0).
    pub fn id(&self) -> String {
        let ip = self
            .ips
            .iter()
            .find(|i| i.is_ipv4())
            .or(self.ips.first())
            .map_or_else(|| "0.0.0.0".to_string(), ToString::to_string);
        format!(
            "sidecar~{ip}~{}.{}~{}.svc.cluster.local",
            self.name, self.namespace, self.namespace
        )
    }

    /// Istio's canonical service name: the `service.istio.io/canonical-name`,
    /// `app.kubernetes.io/name` or `app` label, else the workload name, else the pod name.
    pub fn canonical_name(&self) -> &str {
        [CANONICAL_NAME, "app.kubernetes.io/name", "app"]
            .iter()
            .find_map(|k| self.labels.get(*k).filter(|v| !v.is_empty()))
            .or(self.workload_name.as_ref())
            .unwrap_or(&self.name)
    }

    /// Istio's default service cluster (`tracingServiceName: APP_LABEL_AND_NAMESPACE`):
    /// `APP.NS` from the `app` label, else `WORKLOAD_NAME.NS`, else `istio-proxy.NS`.
    pub fn service_cluster(&self) -> String {
        let name = self
            .labels
            .get("app")
            .filter(|v| !v.is_empty())
            .or(self.workload_name.as_ref())
            .map_or("istio-proxy", String::as_str);
        format!("{name}.{}", self.namespace)
    }

    /// Istio's canonical revision: the `service.istio.io/canonical-revision`,
    /// `app.kubernetes.io/version` or `version` label, else `latest`.
    pub fn canonical_revision(&self) -> &str {
        [CANONICAL_REVISION, "app.kubernetes.io/version", "version"]
            .iter()
            .find_map(|k| self.labels.get(*k).filter(|v| !v.is_empty()))
            .map_or("latest", String::as_str)
    }

    /// The bootstrap's `node`: id, cluster ([`Self::service_cluster`]), and the metadata istiod
    /// reads: `LABELS` (with the canonical service labels
    /// added when missing, as injection adds them), `SERVICE_ACCOUNT`, `WORKLOAD_NAME` and
    /// `OWNER` when known.
    pub fn node(&self) -> Value {
        let ips: Vec<String> = self.ips.iter().map(ToString::to_string).collect();
        let mut labels = self.labels.clone();
        labels
            .entry(CANONICAL_NAME.into())
            .or_insert_with(|| self.canonical_name().to_string());
        labels
            .entry(CANONICAL_REVISION.into())
            .or_insert_with(|| self.canonical_revision().to_string());
        let mut meta = json!({
            "NAME": self.name,
            "NAMESPACE": self.namespace,
            "INSTANCE_IPS": ips.join(","),
            "ISTIO_VERSION": ISTIO_VERSION,
            "CLUSTER_ID": self.cluster_id,
            "INTERCEPTION_MODE": "REDIRECT",
            "LABELS": labels,
        });
        for (key, value) in [
            ("SERVICE_ACCOUNT", &self.service_account),
            ("WORKLOAD_NAME", &self.workload_name),
            ("OWNER", &self.owner),
        ] {
            if let Some(v) = value {
                meta[key] = v.as_str().into();
            }
        }
        json!({
            "id": self.id(),
            "cluster": self.service_cluster(),
            "metadata": meta,
        })
    }
}

/// The pod's bootstrap document: `base` (the agent's `--config` as JSON, or `Null`) with the
/// pod's `node`, ADS `dynamic_resources` (`api_type` GRPC or DELTA_GRPC, LDS and CDS over ADS)
/// and the [`XDS_CLUSTER`] static cluster (HTTP/2) at `address`. A `node` or
/// `dynamic_resources` in the base is replaced; a base cluster named [`XDS_CLUSTER`] is an error.
pub fn pod_bootstrap(
    base: &Value,
    node: Value,
    address: &XdsAddress,
    delta: bool,
) -> Result<Value, String> {
    let mut doc = match base {
        Value::Null => json!({}),
        Value::Object(_) => base.clone(),
        _ => return Err("the --config document is not a mapping".into()),
    };
    doc["node"] = node;
    let ads = json!({"ads": {}, "resource_api_version": "V3"});
    doc["dynamic_resources"] = json!({
        "ads_config": {
            "api_type": if delta { "DELTA_GRPC" } else { "GRPC" },
            "transport_api_version": "V3",
            "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}],
        },
        "lds_config": ads,
        "cds_config": ads,
    });
    if !doc["static_resources"].is_object() {
        doc["static_resources"] = json!({});
    }
    let clusters = doc["static_resources"]
        .as_object_mut()
        .expect("made an object above")
        .entry("clusters")
        .or_insert_with(|| json!([]));
    let list = clusters
        .as_array_mut()
        .ok_or("static_resources.clusters of --config is not a list")?;
    if list.iter().any(|c| c["name"] == XDS_CLUSTER) {
        return Err(format!(
            "static_resources.clusters: --config already has a cluster named {XDS_CLUSTER:?}, which --xds-address makes"
        ));
    }
    list.push(json!({
        "name": XDS_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {"cluster_name": XDS_CLUSTER, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": address.endpoint()}}]}]},
    }));
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> PodNode {
        PodNode {
            name: "web-1".into(),
            namespace: "shop".into(),
            ips: vec!["fd00::5".parse().unwrap(), "10.1.2.3".parse().unwrap()],
            cluster_id: DEFAULT_CLUSTER_ID.into(),
            labels: BTreeMap::new(),
            service_account: None,
            workload_name: None,
            owner: None,
        }
    }

    #[test]
    fn node_id_and_metadata_are_istio_shaped() {
        let p = pod();
        assert_eq!(p.id(), "sidecar~10.1.2.3~web-1.shop~shop.svc.cluster.local");
        let n = p.node();
        assert_eq!(
            n["cluster"], "istio-proxy.shop",
            "no app label, no workload: Istio's istio-proxy.NS"
        );
        assert_eq!(
            n["metadata"]["LABELS"],
            json!({CANONICAL_NAME: "web-1", CANONICAL_REVISION: "latest"})
        );
        assert!(n["metadata"].get("SERVICE_ACCOUNT").is_none());
        assert_eq!(n["metadata"]["NAMESPACE"], "shop");
        assert_eq!(n["metadata"]["NAME"], "web-1");
        assert_eq!(n["metadata"]["INSTANCE_IPS"], "fd00::5,10.1.2.3");
        assert_eq!(n["metadata"]["ISTIO_VERSION"], ISTIO_VERSION);
        assert_eq!(n["metadata"]["CLUSTER_ID"], "Kubernetes");
        let none = PodNode { ips: vec![], ..p };
        assert!(none.id().starts_with("sidecar~0.0.0.0~"));
    }

    #[test]
    fn kubernetes_metadata_names_the_service_cluster_and_labels() {
        let labels = [("app", "web"), ("version", "v2"), ("tier", "front")];
        let p = PodNode {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            service_account: Some("web-sa".into()),
            workload_name: Some("web-v2".into()),
            owner: Some("kubernetes://apis/apps/v1/namespaces/shop/deployments/web-v2".into()),
            ..pod()
        };
        let n = p.node();
        assert_eq!(n["cluster"], "web.shop", "the app label");
        let m = &n["metadata"];
        assert_eq!(m["SERVICE_ACCOUNT"], "web-sa");
        assert_eq!(m["WORKLOAD_NAME"], "web-v2");
        assert_eq!(
            m["OWNER"],
            "kubernetes://apis/apps/v1/namespaces/shop/deployments/web-v2"
        );
        assert_eq!(
            m["LABELS"],
            json!({"app": "web", "version": "v2", "tier": "front",
                CANONICAL_NAME: "web", CANONICAL_REVISION: "v2"})
        );
        // The service cluster follows the app label only (as Istio's default); the canonical
        // name label wins over app in LABELS.
        let mut q = p.clone();
        q.labels.insert(CANONICAL_NAME.into(), "storefront".into());
        assert_eq!(q.node()["cluster"], "web.shop");
        assert_eq!(q.node()["metadata"]["LABELS"][CANONICAL_NAME], "storefront");
        q.labels.clear();
        assert_eq!(
            q.node()["cluster"],
            "web-v2.shop",
            "without app: the workload"
        );
        assert_eq!(q.canonical_name(), "web-v2");
        assert_eq!(q.canonical_revision(), "latest");
    }

    #[test]
    fn addresses_parse_or_name_the_value() {
        assert_eq!(
            XdsAddress::parse("http://127.0.0.1:15010").unwrap(),
            XdsAddress::Tcp {
                addr: "127.0.0.1:15010".parse().unwrap(),
                host: "127.0.0.1".into(),
                tls: false
            }
        );
        assert_eq!(
            XdsAddress::parse("https://[::1]:15012/").unwrap(),
            XdsAddress::Tcp {
                addr: "[::1]:15012".parse().unwrap(),
                host: "::1".into(),
                tls: true
            }
        );
        assert_eq!(
            XdsAddress::parse("unix:/run/xds.sock").unwrap(),
            XdsAddress::Unix("/run/xds.sock".into())
        );
        let e = XdsAddress::parse("grpc://istiod:15012").unwrap_err();
        assert!(e.contains("\"grpc://istiod:15012\""), "{e}");
        let e = XdsAddress::parse("http://127.0.0.1").unwrap_err();
        assert!(e.contains("\"http://127.0.0.1\""), "{e}");
    }

    #[test]
    fn the_pod_bootstrap_is_a_valid_ads_bootstrap() {
        let addr = XdsAddress::parse("http://127.0.0.1:15010").unwrap();
        let doc = pod_bootstrap(&Value::Null, pod().node(), &addr, true).unwrap();
        let text = serde_json::to_string(&doc).unwrap();
        let b = sluice_engine::config::from_yaml_str(&text).expect("valid bootstrap");
        let d = b.dynamic_resources.as_ref().expect("dynamic_resources");
        assert!(d.ads.delta);
        let cfg = crate::client::ClientConfig::from_bootstrap(&b).unwrap();
        assert_eq!(
            cfg.target,
            crate::transport::Target::Tcp("127.0.0.1:15010".parse().unwrap())
        );
        assert_eq!(cfg.node.id, pod().id());
        let unix = XdsAddress::parse("unix:/run/xds.sock").unwrap();
        let doc = pod_bootstrap(&Value::Null, pod().node(), &unix, false).unwrap();
        let b = sluice_engine::config::from_yaml_str(&doc.to_string()).expect("valid bootstrap");
        assert_eq!(
            crate::client::ClientConfig::from_bootstrap(&b)
                .unwrap()
                .target,
            crate::transport::Target::Pipe("/run/xds.sock".into())
        );
        let base = json!({"static_resources": {"clusters": [{"name": XDS_CLUSTER}]}});
        let e = pod_bootstrap(&base, pod().node(), &addr, false).unwrap_err();
        assert!(e.contains("xds-grpc"), "{e}");
    }
}
