//! The current xDS resources + the bootstrap file -> one bootstrap document (JSON), the input of
//! the engine's parser and `validate()`: dynamic clusters and listeners appended to
//! `static_resources`, RDS route configurations inlined into the HCMs that name them
//! (`rds.route_config_name`) and EDS `ClusterLoadAssignment`s placed as the clusters'
//! `load_assignment`. What is not there yet gets an empty stand-in and is reported as missing.
//! Errors of the engine, which name a path in that document, are mapped back to the resource
//! they came from ([`Origins::describe`]).

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    sync::Arc,
};

use serde_json::{json, Map, Value};

use crate::{convert::ResourceType, resource::Resource};

/// Type URL of the HTTP connection manager (the filter that may name an RDS route).
pub const HCM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

/// Accepted resources by type and name (JSON as converted; shared at both levels, so copying
/// the accepted state per response costs a pointer per type, and changing one type copies only
/// that type's map of pointers: `Arc::make_mut`).
pub type Resources = BTreeMap<ResourceType, Arc<BTreeMap<String, Arc<Resource>>>>;

/// One assembled document.
#[derive(Debug, Clone)]
pub struct Assembly {
    /// The bootstrap document.
    pub doc: Value,
    /// Names an HCM or an EDS cluster needs that have not arrived (stand-ins were used).
    pub missing: BTreeSet<(ResourceType, String)>,
    /// Where each part of `doc` came from.
    pub origins: Origins,
}

/// Which resource each assembled path came from.
#[derive(Debug, Clone, Default)]
pub struct Origins {
    /// (path prefix in the document, resource type, resource name), most specific first.
    prefixes: Vec<(String, ResourceType, String)>,
}

impl Origins {
    /// `Listener "x": filter_chains[0]...: message` for an engine error at `path`; paths in the
    /// bootstrap file's own resources are kept as they are.
    pub fn describe(&self, path: &str, message: &str) -> String {
        for (prefix, ty, name) in &self.prefixes {
            if let Some(rest) = path.strip_prefix(prefix.as_str()) {
                let rest = rest.trim_start_matches('.');
                return if rest.is_empty() {
                    format!("{} {name:?}: {message}", ty.kind())
                } else {
                    format!("{} {name:?}: {rest}: {message}", ty.kind())
                };
            }
        }
        if path.is_empty() {
            message.to_string()
        } else {
            format!("{path}: {message}")
        }
    }

    /// The xDS listener an engine error at `path` lies in (also when the error is in the RDS
    /// route configuration inlined into it).
    pub fn listener(&self, path: &str) -> Option<&str> {
        self.prefixes
            .iter()
            .filter(|(_, t, _)| *t == ResourceType::Listener)
            .find(|(p, _, _)| {
                path.strip_prefix(p.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
            })
            .map(|(_, _, n)| n.as_str())
    }

    /// The resource an engine error at `path` belongs to, if it came from xDS.
    pub fn resource(&self, path: &str) -> Option<(ResourceType, &str)> {
        self.prefixes
            .iter()
            .find(|(p, _, _)| path.starts_with(p.as_str()))
            .map(|(_, t, n)| (*t, n.as_str()))
    }
}

/// The RDS names a listener's HCMs name.
pub fn route_names(listener: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let default = listener.get("default_filter_chain").into_iter();
    for fc in array(listener, "filter_chains").chain(default) {
        for f in array(fc, "filters") {
            let tc = &f["typed_config"];
            if tc["@type"] == HCM_TYPE {
                if let Some(n) = tc["rds"]["route_config_name"].as_str() {
                    out.push(n.to_string());
                }
            }
        }
    }
    out
}

/// The EDS name of a cluster of type EDS (`eds_cluster_config.service_name`, else its name).
pub fn eds_name(cluster: &Value) -> Option<String> {
    if cluster["type"] != "EDS" {
        return None;
    }
    cluster["eds_cluster_config"]["service_name"]
        .as_str()
        .filter(|s| !s.is_empty())
        .or_else(|| cluster["name"].as_str())
        .map(str::to_string)
}

/// A secret a TLS context names with `sds_config`: its name and where it comes from (`None`:
/// the ADS stream; else the static cluster of its GRPC `api_config_source`).
pub type SecretRef = (String, Option<Arc<str>>);

/// Adds to `out` the secrets `v` asks for from a discovery service: every `SdsSecretConfig` (a
/// `name` beside an `sds_config` with `ads` or a GRPC `api_config_source`) anywhere in it, each
/// once, in document order.
pub fn secret_refs(v: &Value, out: &mut Vec<SecretRef>) {
    match v {
        Value::Object(m) => {
            if let (Some(Value::String(n)), Some(src)) = (m.get("name"), m.get("sds_config")) {
                let from = match src.get("ads") {
                    Some(_) => Some(None),
                    None => src["api_config_source"]["grpc_services"][0]["envoy_grpc"]
                        ["cluster_name"]
                        .as_str()
                        .map(|c| Some(Arc::from(c))),
                };
                if let Some(from) = from {
                    let r = (n.clone(), from);
                    if !out.contains(&r) {
                        out.push(r);
                    }
                }
            }
            m.values().for_each(|c| secret_refs(c, out));
        }
        Value::Array(a) => a.iter().for_each(|c| secret_refs(c, out)),
        _ => {}
    }
}

/// The `sds_config` of the first `SdsSecretConfig` in `v` naming secret `name`.
pub fn secret_source<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    match v {
        Value::Object(m) => {
            if m.get("name").and_then(Value::as_str) == Some(name) {
                if let Some(src) = m.get("sds_config") {
                    return Some(src);
                }
            }
            m.values().find_map(|c| secret_source(c, name))
        }
        Value::Array(a) => a.iter().find_map(|c| secret_source(c, name)),
        _ => None,
    }
}

/// The secrets the bootstrap file's own listeners and clusters ask for.
pub fn static_secrets(base: &Value) -> Vec<SecretRef> {
    let mut out = Vec::new();
    let sr = &base["static_resources"];
    for v in array(sr, "listeners").chain(array(sr, "clusters")) {
        secret_refs(v, &mut out);
    }
    out
}

/// The bootstrap file's own EDS clusters (`static_resources.clusters` of `type: EDS`, whose
/// `eds_config` is ADS): `(index, cluster JSON, EDS name)`. Envoy subscribes their assignments
/// on the ADS stream too.
pub fn static_eds(base: &Value) -> impl Iterator<Item = (usize, &Value, String)> {
    array(&base["static_resources"], "clusters")
        .enumerate()
        .filter_map(|(i, c)| eds_name(c).map(|e| (i, c, e)))
}

fn array<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    v.get(key).and_then(Value::as_array).into_iter().flatten()
}

/// EDS cluster `cluster` (named `name`) with its assignment `cla` as `load_assignment` (an
/// empty stand-in while it has not arrived), as the engine reads it.
pub fn with_assignment(cluster: Value, name: &str, cla: Option<Value>) -> Value {
    let mut c = cluster;
    let mut la = cla.unwrap_or_else(|| json!({}));
    la["cluster_name"] = json!(name);
    c["load_assignment"] = la;
    c
}

/// Assembles `base` (the bootstrap file as JSON) with `res`. Listeners in `strict` keep the
/// route validation of their inline route configs (default `validate_clusters: true`, as Envoy
/// checks a listener when it is loaded); the others, and every RDS route configuration
/// (Envoy's default for RDS), get `validate_clusters: false` unless they set it, so a cluster
/// leaving later gives `503 NC` at run time instead of failing an unrelated update.
pub fn assemble(base: &Value, res: &Resources, strict: &HashSet<String>) -> Assembly {
    let mut doc = base.clone();
    if !doc.is_object() {
        doc = json!({});
    }
    let sr = doc
        .as_object_mut()
        .expect("object")
        .entry("static_resources")
        .or_insert_with(|| json!({}));
    if !sr.is_object() {
        *sr = json!({});
    }
    let sr = sr.as_object_mut().expect("object");
    let mut missing = BTreeSet::new();
    let mut origins = Origins::default();
    let empty = BTreeMap::new();
    let get = |t| res.get(&t).map_or(&empty, |m| &**m);

    let clusters = list(sr, "clusters");
    let endpoints = get(ResourceType::Endpoint);
    // Places EDS name `eds`'s assignment in cluster `c` (`name`) at `prefix`.
    let mut place = |c: Value, name: &str, eds: &String, prefix: &str| {
        let cla = endpoints.get(eds).map(|v| v.json());
        if cla.is_none() {
            missing.insert((ResourceType::Endpoint, eds.clone()));
        }
        origins.prefixes.push((
            format!("{prefix}.load_assignment"),
            ResourceType::Endpoint,
            eds.clone(),
        ));
        with_assignment(c, name, cla)
    };
    // The bootstrap file's own EDS clusters take their assignments from EDS too.
    let mut cluster_origins = Vec::new();
    for (i, c) in clusters.iter_mut().enumerate() {
        let (Some(eds), Some(name)) = (eds_name(c), c["name"].as_str().map(str::to_string)) else {
            continue;
        };
        *c = place(
            c.take(),
            &name,
            &eds,
            &format!("static_resources.clusters[{i}]"),
        );
    }
    for (name, c) in get(ResourceType::Cluster) {
        let i = clusters.len();
        let prefix = format!("static_resources.clusters[{i}]");
        let c = match c.eds_name() {
            None => c.json(),
            Some(eds) => place(c.json(), name, eds, &prefix),
        };
        cluster_origins.push((prefix, ResourceType::Cluster, name.clone()));
        clusters.push(c);
    }
    origins.prefixes.extend(cluster_origins);

    // Secrets over ADS join the file's static secrets (one namespace, as the engine reads
    // them); a secret asked for that has not arrived gets a pending stand-in, which leaves the
    // TLS context that names it not ready.
    let mut wanted_secrets: Vec<String> = Vec::new();
    let statics = static_secrets(base);
    let dynamic = [ResourceType::Listener, ResourceType::Cluster]
        .into_iter()
        .flat_map(|t| get(t).values())
        .flat_map(|r| r.secret_names());
    for n in statics.iter().map(|(n, _)| n).chain(dynamic) {
        if !wanted_secrets.contains(n) {
            wanted_secrets.push(n.clone());
        }
    }
    let arrived = get(ResourceType::Secret);
    let pending: Vec<String> = wanted_secrets
        .into_iter()
        .filter(|n| !arrived.contains_key(n))
        .collect();
    let secrets = match arrived.is_empty() && pending.is_empty() {
        true => &mut Vec::new(),
        false => list(sr, "secrets"),
    };
    for (name, s) in arrived {
        let prefix = format!("static_resources.secrets[{}]", secrets.len());
        origins
            .prefixes
            .push((prefix, ResourceType::Secret, name.clone()));
        secrets.push(s.json());
    }
    for name in pending {
        missing.insert((ResourceType::Secret, name.clone()));
        secrets.push(json!({ "name": name, "@pending": {} }));
    }

    let listeners = list(sr, "listeners");
    for (name, l) in get(ResourceType::Listener) {
        let mut l = l.json();
        let i = listeners.len();
        let prefix = format!("static_resources.listeners[{i}]");
        let lax = !strict.contains(name);
        // The filter chains and the default chain, each with its path in error messages.
        let mut chains: Vec<(String, &mut Value)> = Vec::new();
        for (key, v) in l.as_object_mut().into_iter().flat_map(|o| o.iter_mut()) {
            match (key.as_str(), v) {
                ("filter_chains", Value::Array(a)) => chains.extend(
                    a.iter_mut()
                        .enumerate()
                        .map(|(k, fc)| (format!("filter_chains[{k}]"), fc)),
                ),
                ("default_filter_chain", fc) => chains.push(("default_filter_chain".into(), fc)),
                _ => {}
            }
        }
        for (chain_path, fc) in chains {
            let filters = fc.get_mut("filters").and_then(Value::as_array_mut);
            for (m, f) in filters.into_iter().flatten().enumerate() {
                let Some(tc) = f.get_mut("typed_config").and_then(Value::as_object_mut) else {
                    continue;
                };
                if tc.get("@type").and_then(Value::as_str) != Some(HCM_TYPE) {
                    continue;
                }
                let rds = tc
                    .get("rds")
                    .and_then(|r| r.get("route_config_name"))
                    .and_then(Value::as_str)
                    .map(str::to_string);
                if let Some(rn) = rds {
                    tc.remove("rds");
                    let mut rc = match get(ResourceType::Route).get(&rn) {
                        Some(rc) => rc.json(),
                        None => {
                            missing.insert((ResourceType::Route, rn.clone()));
                            json!({ "name": rn })
                        }
                    };
                    default_lax(&mut rc);
                    tc.insert("route_config".into(), rc);
                    origins.prefixes.push((
                        format!("{prefix}.{chain_path}.filters[{m}].typed_config.route_config"),
                        ResourceType::Route,
                        rn,
                    ));
                } else if lax {
                    if let Some(rc) = tc.get_mut("route_config") {
                        default_lax(rc);
                    }
                }
            }
        }
        origins
            .prefixes
            .push((prefix, ResourceType::Listener, name.clone()));
        listeners.push(l);
    }
    // Most specific first: a route inside a listener before the listener.
    origins
        .prefixes
        .sort_by_key(|p| std::cmp::Reverse(p.0.len()));
    Assembly {
        doc,
        missing,
        origins,
    }
}

fn default_lax(rc: &mut Value) {
    if let Some(o) = rc.as_object_mut() {
        o.entry("validate_clusters").or_insert(json!(false));
    }
}

fn list<'a>(sr: &'a mut Map<String, Value>, key: &str) -> &'a mut Vec<Value> {
    let v = sr.entry(key).or_insert_with(|| json!([]));
    if !v.is_array() {
        *v = json!([]);
    }
    v.as_array_mut().expect("array")
}
