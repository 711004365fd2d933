//! `/config_dump`: a config version ([`Runtime`]) in Envoy's `envoy.admin.v3.ConfigDump` shape —
//! `configs[]` of BootstrapConfigDump, ClustersConfigDump, (EndpointsConfigDump with
//! `include_eds`), ListenersConfigDump, ScopedRoutesConfigDump, RoutesConfigDump and
//! SecretsConfigDump, in Envoy's order. Resources from the file are static entries; those from
//! xDS (their [`ConfigOrigin`](super::ConfigOrigin) entries) are dynamic ones with
//! `version_info` and `last_updated`. A pure function of the runtime, so the node agent can
//! dump any pod's server the same way.

use std::{collections::BTreeSet, sync::OnceLock};

use serde_json::{json, Map, Value};

use super::{
    origin::{ConfigOrigin, DynamicEntry},
    redact::redact,
    time::rfc3339,
};
use crate::server::Runtime;

/// `@type` of each dump message and resource.
pub mod types {
    /// BootstrapConfigDump.
    pub const BOOTSTRAP: &str = "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump";
    /// ClustersConfigDump.
    pub const CLUSTERS: &str = "type.googleapis.com/envoy.admin.v3.ClustersConfigDump";
    /// EndpointsConfigDump.
    pub const ENDPOINTS: &str = "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump";
    /// ListenersConfigDump.
    pub const LISTENERS: &str = "type.googleapis.com/envoy.admin.v3.ListenersConfigDump";
    /// ScopedRoutesConfigDump.
    pub const SCOPED_ROUTES: &str = "type.googleapis.com/envoy.admin.v3.ScopedRoutesConfigDump";
    /// RoutesConfigDump.
    pub const ROUTES: &str = "type.googleapis.com/envoy.admin.v3.RoutesConfigDump";
    /// SecretsConfigDump.
    pub const SECRETS: &str = "type.googleapis.com/envoy.admin.v3.SecretsConfigDump";
    /// A TLS secret.
    pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
    /// Bootstrap.
    pub const BOOTSTRAP_MSG: &str = "type.googleapis.com/envoy.config.bootstrap.v3.Bootstrap";
    /// Listener.
    pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
    /// Cluster.
    pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    /// RouteConfiguration.
    pub const ROUTE_CONFIG: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
    /// ClusterLoadAssignment.
    pub const CLA: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
    /// The HTTP connection manager (holds inline route configurations).
    pub const HCM: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
}

/// Rewrites a resource's JSON into proto3 canonical JSON of its message (`type_url`): default
/// values dropped, durations and enums in their canonical form, as Envoy prints them. `None`
/// keeps the JSON as written. The engine has no protobuf descriptors; the binary installs one
/// (sluice-xds's) with [`set_canonicalizer`].
pub type Canonicalizer = fn(type_url: &str, json: &Value) -> Option<Value>;

static CANONICAL: OnceLock<Canonicalizer> = OnceLock::new();

/// Installs the process's [`Canonicalizer`] (first call wins).
pub fn set_canonicalizer(f: Canonicalizer) {
    let _ = CANONICAL.set(f);
}

/// `v` as an `Any` of `type_url` (`{"@type": ..., fields}`), canonical when possible.
fn any(type_url: &str, v: &Value) -> Value {
    let body = CANONICAL
        .get()
        .and_then(|f| f(type_url, v))
        .unwrap_or_else(|| v.clone());
    let mut m = Map::new();
    m.insert("@type".into(), json!(type_url));
    if let Value::Object(o) = body {
        m.extend(o.into_iter().filter(|(k, _)| k != "@type"));
    }
    Value::Object(m)
}

fn name_of(v: &Value) -> &str {
    v.get("name").and_then(Value::as_str).unwrap_or("")
}

fn list<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    v.get(key).and_then(Value::as_array).into_iter().flatten()
}

/// A dump message: `@type` plus its non-empty fields (proto3 JSON omits empty lists).
fn message(type_url: &str, fields: Vec<(&str, Value)>) -> Value {
    let mut m = Map::new();
    m.insert("@type".into(), json!(type_url));
    for (k, v) in fields {
        let empty = match &v {
            Value::Array(a) => a.is_empty(),
            Value::Null => true,
            _ => false,
        };
        if !empty {
            m.insert(k.into(), v);
        }
    }
    Value::Object(m)
}

fn dynamic(entry: &DynamicEntry, field: &str, type_url: &str) -> Value {
    let mut m = Map::new();
    m.insert("version_info".into(), json!(entry.version_info));
    m.insert(field.into(), any(type_url, &entry.json()));
    m.insert("last_updated".into(), json!(rfc3339(entry.last_updated)));
    Value::Object(m)
}

/// Every `configs[]` entry of the full dump of `rt`, secrets redacted.
pub fn configs(rt: &Runtime, include_eds: bool) -> Vec<Value> {
    let o = &rt.origin;
    let loaded = json!(rfc3339(o.static_loaded));
    let sr = &rt.source["static_resources"];
    let static_listeners: Vec<&Value> = list(sr, "listeners")
        .filter(|l| !o.listeners.contains_key(name_of(l)))
        .collect();
    let mut static_clusters: Vec<&Value> = list(sr, "clusters")
        .filter(|c| !o.clusters.contains_key(name_of(c)))
        .collect();
    static_clusters.sort_by(|a, b| name_of(a).cmp(name_of(b)));

    let mut out = vec![bootstrap(rt, &static_listeners, &static_clusters, &loaded)];
    out.push(message(
        types::CLUSTERS,
        vec![
            (
                "version_info",
                o.cds_version.clone().map_or(Value::Null, Value::from),
            ),
            (
                "static_clusters",
                static_clusters
                    .iter()
                    .map(|c| json!({"cluster": any(types::CLUSTER, c), "last_updated": loaded}))
                    .collect(),
            ),
            (
                "dynamic_active_clusters",
                o.clusters
                    .values()
                    .map(|e| dynamic(e, "cluster", types::CLUSTER))
                    .collect(),
            ),
            (
                "dynamic_warming_clusters",
                o.warming_clusters
                    .values()
                    .map(|e| dynamic(e, "cluster", types::CLUSTER))
                    .collect(),
            ),
        ],
    ));
    if include_eds {
        out.push(endpoints(rt));
    }
    out.push(message(
        types::LISTENERS,
        vec![
            (
                "version_info",
                o.lds_version.clone().map_or(Value::Null, Value::from),
            ),
            (
                "static_listeners",
                static_listeners
                    .iter()
                    .map(|l| json!({"listener": any(types::LISTENER, l), "last_updated": loaded}))
                    .collect(),
            ),
            ("dynamic_listeners", Value::Array(dynamic_listeners(o))),
        ],
    ));
    out.push(message(types::SCOPED_ROUTES, vec![]));
    let dynamic_listeners: Vec<Value> = o.listeners.values().map(DynamicEntry::json).collect();
    let inline = static_listeners
        .iter()
        .copied()
        .chain(dynamic_listeners.iter())
        .flat_map(inline_route_configs)
        .map(|rc| json!({"route_config": any(types::ROUTE_CONFIG, rc), "last_updated": loaded}))
        .collect();
    out.push(message(
        types::ROUTES,
        vec![
            ("static_route_configs", inline),
            (
                "dynamic_route_configs",
                o.routes
                    .values()
                    .map(|e| dynamic(e, "route_config", types::ROUTE_CONFIG))
                    .collect(),
            ),
        ],
    ));
    // Static secrets as Envoy dumps them (name and secret, no time); ADS ones with their
    // version. Private keys are redacted below.
    let secret = |s: &Value| any(types::SECRET, s);
    out.push(message(
        types::SECRETS,
        vec![
            (
                "static_secrets",
                list(sr, "secrets")
                    .map(|s| json!({"name": name_of(s), "secret": secret(s)}))
                    .collect(),
            ),
            (
                "dynamic_active_secrets",
                o.secrets
                    .iter()
                    .map(|(name, e)| {
                        let mut d = dynamic(e, "secret", types::SECRET);
                        d["name"] = json!(name);
                        d
                    })
                    .collect(),
            ),
        ],
    ));
    for c in &mut out {
        redact(c);
    }
    out
}

/// ListenersConfigDump.DynamicListener per name: the serving version (`active_state`) and the
/// one warming to replace it (`warming_state`).
fn dynamic_listeners(o: &ConfigOrigin) -> Vec<Value> {
    let names: BTreeSet<&String> = o
        .listeners
        .keys()
        .chain(o.warming_listeners.keys())
        .collect();
    names
        .into_iter()
        .map(|name| {
            let mut m = Map::new();
            m.insert("name".into(), json!(name));
            for (key, map) in [
                ("active_state", &o.listeners),
                ("warming_state", &o.warming_listeners),
            ] {
                if let Some(e) = map.get(name) {
                    m.insert(key.into(), dynamic(e, "listener", types::LISTENER));
                }
            }
            Value::Object(m)
        })
        .collect()
}

/// The route configurations written inline in a listener's HTTP connection managers.
fn inline_route_configs(listener: &Value) -> Vec<&Value> {
    list(listener, "filter_chains")
        .flat_map(|fc| list(fc, "filters"))
        .filter_map(|f| {
            let tc = f.get("typed_config")?;
            let is_hcm = tc.get("@type").and_then(Value::as_str) == Some(types::HCM)
                || f.get("name").and_then(Value::as_str)
                    == Some("envoy.filters.network.http_connection_manager");
            is_hcm.then(|| tc.get("route_config")).flatten()
        })
        .collect()
}

/// BootstrapConfigDump: the file's bootstrap (without the xDS resources), with the node's
/// user agent as Envoy fills it in.
fn bootstrap(rt: &Runtime, listeners: &[&Value], clusters: &[&Value], loaded: &Value) -> Value {
    let mut b = match &*rt.source {
        Value::Object(m) => Value::Object(m.clone()),
        _ => json!({}),
    };
    if b.get("static_resources").is_some_and(Value::is_object) {
        let sr = &mut b["static_resources"];
        for (key, keep) in [("listeners", listeners), ("clusters", clusters)] {
            if sr.get(key).is_some() {
                let names: BTreeSet<&str> = keep.iter().map(|v| name_of(v)).collect();
                if let Some(a) = sr[key].as_array_mut() {
                    a.retain(|v| names.contains(name_of(v)));
                }
            }
        }
    }
    if !b.get("node").is_some_and(Value::is_object) {
        b["node"] = json!({});
    }
    b["node"]["user_agent_name"] = json!("sluice");
    b["node"]["user_agent_build_version"] = json!({"version": version()});
    // `bootstrap` is a Bootstrap message, not an Any: no `@type` of its own.
    let mut b = any(types::BOOTSTRAP_MSG, &b);
    if let Some(m) = b.as_object_mut() {
        m.remove("@type");
    }
    json!({
        "@type": types::BOOTSTRAP,
        "bootstrap": b,
        "last_updated": loaded,
    })
}

/// This build's version as Envoy's `SemanticVersion`.
fn version() -> Value {
    let mut parts = env!("CARGO_PKG_VERSION")
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let mut v = Map::new();
    for key in ["major_number", "minor_number", "patch"] {
        let n = parts.next().unwrap_or(0);
        if n != 0 {
            v.insert(key.into(), json!(n));
        }
    }
    Value::Object(v)
}

/// EndpointsConfigDump from the clusters' current hosts (as Envoy builds it from its host
/// sets): EDS clusters from xDS are dynamic entries, every other cluster a static one.
fn endpoints(rt: &Runtime) -> Value {
    let o = &rt.origin;
    let mut names: Vec<&String> = rt.clusters.keys().collect();
    names.sort();
    let (mut statics, mut dynamics) = (Vec::new(), Vec::new());
    for name in names {
        let cla = any(types::CLA, &assignment(rt, name));
        let cluster = o.clusters.get(name.as_str()).map(DynamicEntry::json);
        let eds = cluster.as_ref().and_then(|c| {
            (c["type"] == "EDS").then(|| {
                c["eds_cluster_config"]["service_name"]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .unwrap_or(name)
            })
        });
        match eds.and_then(|e| o.endpoints.get(e)) {
            Some(e) => dynamics.push(json!({
                "version_info": e.version_info,
                "endpoint_config": cla,
                "last_updated": rfc3339(e.last_updated),
            })),
            None if eds.is_some() => dynamics.push(json!({"endpoint_config": cla})),
            None => statics.push(json!({"endpoint_config": cla})),
        }
    }
    message(
        types::ENDPOINTS,
        vec![
            ("static_endpoint_configs", Value::Array(statics)),
            ("dynamic_endpoint_configs", Value::Array(dynamics)),
        ],
    )
}

/// A cluster's current hosts as a ClusterLoadAssignment: one entry per priority and locality,
/// by priority, then in Envoy's locality order (as Envoy's per-locality host lists).
fn assignment(rt: &Runtime, name: &str) -> Value {
    let Some(c) = rt.clusters.get(name) else {
        return json!({"cluster_name": name});
    };
    let now = crate::upstream::now_ms();
    let (hosts, localities) = c.hosts_view();
    // (priority, locality rank) -> the locality's weight and its lb_endpoints.
    let mut groups: std::collections::BTreeMap<(u32, u32), (u32, Vec<Value>)> = Default::default();
    for (h, meta) in hosts {
        let mut ep = json!({
            "address": {"socket_address": {"address": h.addr.ip().to_string(), "port_value": h.addr.port()}},
            "health_check_config": {},
        });
        if let Some(n) = &h.hostname {
            ep["hostname"] = json!(n.as_ref());
        }
        // Envoy's: the health check host name, and the port when checks go elsewhere.
        if let Some(hc) = &h.health_check {
            if let Some(n) = &hc.hostname {
                ep["health_check_config"]["hostname"] = json!(n);
            }
            let target = h.health_check_addr();
            if target != h.addr {
                ep["health_check_config"]["port_value"] = json!(target.port());
            }
        }
        // Envoy dumps the coarse health: a DRAINING host is UNHEALTHY there.
        let status = match meta.health {
            _ if !h.is_healthy(now) => "UNHEALTHY",
            crate::upstream::EndpointHealth::Draining => "UNHEALTHY",
            other => other.as_str(),
        };
        let lbe = json!({
            "endpoint": ep,
            "health_status": status,
            "load_balancing_weight": h.weight,
        });
        let group = groups
            .entry((meta.priority, meta.locality))
            .or_insert_with(|| (meta.locality_weight, Vec::new()));
        group.1.push(lbe);
    }
    let overprovisioning = c.spec.options.overprovisioning_factor;
    let mut cla =
        json!({"cluster_name": name, "policy": {"overprovisioning_factor": overprovisioning}});
    if !groups.is_empty() {
        let eps: Vec<Value> = groups
            .into_iter()
            .map(|((p, rank), (weight, lb))| {
                let locality = localities
                    .get(rank as usize)
                    .map_or_else(|| json!({}), locality_json);
                let mut l = json!({"locality": locality, "lb_endpoints": lb, "load_balancing_weight": weight});
                if p != 0 {
                    l["priority"] = json!(p);
                }
                l
            })
            .collect();
        cla["endpoints"] = json!(eps);
    }
    cla
}

/// `core.v3.Locality` as proto JSON (empty fields left out).
pub(super) fn locality_json(l: &crate::config::Locality) -> Value {
    let mut v = json!({});
    for (k, s) in [
        ("region", &l.region),
        ("zone", &l.zone),
        ("sub_zone", &l.sub_zone),
    ] {
        if !s.is_empty() {
            v[k] = json!(s);
        }
    }
    v
}
