//! Node mode (`sluice agent --xds-address`): one ADS stream per enrolled pod, each with the
//! pod's own Istio node identity. [`pod_bootstrap`] makes the pod's bootstrap document from the
//! agent's `--config` (the base static resources, may be empty), the node and an ADS cluster
//! synthesized from the address; the `sluice` binary runs [`crate::client::run_all`] on it
//! against the pod's outbound and inbound servers.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs as _};

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
}

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

    /// The bootstrap's `node`: id, cluster `NAME.NS`, and the metadata istiod reads.
    pub fn node(&self) -> Value {
        let ips: Vec<String> = self.ips.iter().map(ToString::to_string).collect();
        json!({
            "id": self.id(),
            "cluster": format!("{}.{}", self.name, self.namespace),
            "metadata": {
                "NAME": self.name,
                "NAMESPACE": self.namespace,
                "INSTANCE_IPS": ips.join(","),
                "ISTIO_VERSION": ISTIO_VERSION,
                "CLUSTER_ID": self.cluster_id,
                "INTERCEPTION_MODE": "REDIRECT",
            }
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
        }
    }

    #[test]
    fn node_id_and_metadata_are_istio_shaped() {
        let p = pod();
        assert_eq!(p.id(), "sidecar~10.1.2.3~web-1.shop~shop.svc.cluster.local");
        let n = p.node();
        assert_eq!(n["cluster"], "web-1.shop");
        assert_eq!(n["metadata"]["NAMESPACE"], "shop");
        assert_eq!(n["metadata"]["NAME"], "web-1");
        assert_eq!(n["metadata"]["INSTANCE_IPS"], "fd00::5,10.1.2.3");
        assert_eq!(n["metadata"]["ISTIO_VERSION"], ISTIO_VERSION);
        assert_eq!(n["metadata"]["CLUSTER_ID"], "Kubernetes");
        let none = PodNode { ips: vec![], ..p };
        assert!(none.id().starts_with("sidecar~0.0.0.0~"));
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
