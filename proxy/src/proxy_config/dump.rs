//! Reading a config dump (sluice's or Envoy's `/config_dump` JSON): the resources of each kind,
//! dynamic ones first then static ones, as istioctl collects them.

use serde_json::Value;

/// The dump message of `suffix` (`ListenersConfigDump`, ...), if present.
pub fn message<'a>(dump: &'a Value, suffix: &str) -> Option<&'a Value> {
    dump.get("configs")?.as_array()?.iter().find(|c| {
        c["@type"]
            .as_str()
            .is_some_and(|t| t.ends_with(&format!(".{suffix}")))
    })
}

fn list<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    v.get(key).and_then(Value::as_array).into_iter().flatten()
}

/// A resource without its `@type` (istioctl prints the message itself).
fn bare(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("@type");
    }
    v
}

/// Listeners: `dynamic_listeners[].active_state.listener`, then `static_listeners[].listener`.
pub fn listeners(dump: &Value) -> Vec<Value> {
    let Some(m) = message(dump, "ListenersConfigDump") else {
        return Vec::new();
    };
    list(m, "dynamic_listeners")
        .filter_map(|l| l.get("active_state")?.get("listener"))
        .chain(list(m, "static_listeners").filter_map(|l| l.get("listener")))
        .map(bare)
        .collect()
}

/// Clusters: `dynamic_active_clusters[].cluster`, then `static_clusters[].cluster`.
pub fn clusters(dump: &Value) -> Vec<Value> {
    let Some(m) = message(dump, "ClustersConfigDump") else {
        return Vec::new();
    };
    list(m, "dynamic_active_clusters")
        .chain(list(m, "static_clusters"))
        .filter_map(|c| c.get("cluster"))
        .map(bare)
        .collect()
}

/// Route configurations: dynamic, then static.
pub fn routes(dump: &Value) -> Vec<Value> {
    let Some(m) = message(dump, "RoutesConfigDump") else {
        return Vec::new();
    };
    list(m, "dynamic_route_configs")
        .chain(list(m, "static_route_configs"))
        .filter_map(|r| r.get("route_config"))
        .map(bare)
        .collect()
}

/// ClusterLoadAssignments (`include_eds`): dynamic, then static.
pub fn endpoints(dump: &Value) -> Vec<Value> {
    let Some(m) = message(dump, "EndpointsConfigDump") else {
        return Vec::new();
    };
    list(m, "dynamic_endpoint_configs")
        .chain(list(m, "static_endpoint_configs"))
        .filter_map(|r| r.get("endpoint_config"))
        .map(bare)
        .collect()
}

/// `ParseSubsetKey`: `direction|port|subset|fqdn` -> (direction, subset, fqdn, port); a name
/// with fewer than 4 parts is (``, ``, name, 0).
pub fn subset_key(name: &str) -> (String, String, String, u32) {
    let parts: Vec<&str> = name.splitn(4, '|').collect();
    if name.split('|').count() <= 3 || parts.len() < 4 {
        return (String::new(), String::new(), name.to_string(), 0);
    }
    (
        parts[0].to_string(),
        parts[2].to_string(),
        parts[3].to_string(),
        parts[1].parse().unwrap_or(0),
    )
}

/// istioctl's `describeManagement`: `filter_metadata.istio.config` of a route or cluster,
/// `/apis/networking.istio.io/<v>/namespaces/<ns>/<kind>/<name>` -> `name.ns`.
pub fn management(v: &Value) -> String {
    let Some(path) = v["metadata"]["filter_metadata"]["istio"]["config"].as_str() else {
        return String::new();
    };
    if !path.starts_with("/apis/networking.istio.io/") {
        return "<unknown>".into();
    }
    let pieces: Vec<&str> = path.split('/').collect();
    if pieces.len() != 8 {
        return String::new();
    }
    format!("{}.{}", pieces[7], pieces[5])
}
