//! `/config_dump`'s query parameters as Envoy has them: `resource=` (one repeated field of the
//! dump messages, its elements listed with their own `@type`), `mask=` (a FieldMask: applied to
//! each dump message, or with `resource` to each element), `name_regex=` (only resources whose
//! name matches) and `include_eds`.

use crate::http::query_decode::decode;
use serde_json::{json, Map, Value};

use super::config_dump::types;

/// The parsed query.
#[derive(Debug, Default)]
pub struct DumpQuery {
    /// `resource=`.
    pub resource: Option<String>,
    /// `mask=` paths.
    pub mask: Vec<String>,
    /// `name_regex=`.
    pub name_regex: Option<regex::Regex>,
    /// `include_eds` (any value).
    pub include_eds: bool,
}

/// A refused query: HTTP status and Envoy's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError {
    /// 400 or 404.
    pub status: u16,
    /// The body.
    pub message: String,
}

fn err(status: u16, message: String) -> QueryError {
    QueryError { status, message }
}

/// Each repeated field of the dump messages: (dump type, field, element type suffix).
const RESOURCES: &[(&str, &str, &str)] = &[
    (
        types::CLUSTERS,
        "static_clusters",
        "ClustersConfigDump.StaticCluster",
    ),
    (
        types::CLUSTERS,
        "dynamic_active_clusters",
        "ClustersConfigDump.DynamicCluster",
    ),
    (
        types::CLUSTERS,
        "dynamic_warming_clusters",
        "ClustersConfigDump.DynamicCluster",
    ),
    (
        types::ENDPOINTS,
        "static_endpoint_configs",
        "EndpointsConfigDump.StaticEndpointConfig",
    ),
    (
        types::ENDPOINTS,
        "dynamic_endpoint_configs",
        "EndpointsConfigDump.DynamicEndpointConfig",
    ),
    (
        types::LISTENERS,
        "static_listeners",
        "ListenersConfigDump.StaticListener",
    ),
    (
        types::LISTENERS,
        "dynamic_listeners",
        "ListenersConfigDump.DynamicListener",
    ),
    (
        types::SCOPED_ROUTES,
        "inline_scoped_route_configs",
        "ScopedRoutesConfigDump.InlineScopedRouteConfigs",
    ),
    (
        types::SCOPED_ROUTES,
        "dynamic_scoped_route_configs",
        "ScopedRoutesConfigDump.DynamicScopedRouteConfigs",
    ),
    (
        types::ROUTES,
        "static_route_configs",
        "RoutesConfigDump.StaticRouteConfig",
    ),
    (
        types::ROUTES,
        "dynamic_route_configs",
        "RoutesConfigDump.DynamicRouteConfig",
    ),
    (
        types::SECRETS,
        "static_secrets",
        "SecretsConfigDump.StaticSecret",
    ),
    (
        types::SECRETS,
        "dynamic_active_secrets",
        "SecretsConfigDump.DynamicSecret",
    ),
    (
        types::SECRETS,
        "dynamic_warming_secrets",
        "SecretsConfigDump.DynamicSecret",
    ),
];

/// The fields of each dump message (a mask path must start with one of them).
fn message_fields(type_url: &str) -> &'static [&'static str] {
    match type_url {
        types::BOOTSTRAP => &["bootstrap", "last_updated"],
        types::CLUSTERS => &[
            "version_info",
            "static_clusters",
            "dynamic_active_clusters",
            "dynamic_warming_clusters",
        ],
        types::ENDPOINTS => &["static_endpoint_configs", "dynamic_endpoint_configs"],
        types::LISTENERS => &["version_info", "static_listeners", "dynamic_listeners"],
        types::SCOPED_ROUTES => &[
            "inline_scoped_route_configs",
            "dynamic_scoped_route_configs",
        ],
        types::ROUTES => &["static_route_configs", "dynamic_route_configs"],
        types::SECRETS => &[
            "version_info",
            "static_secrets",
            "dynamic_active_secrets",
            "dynamic_warming_secrets",
        ],
        _ => &[],
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters (a query value).
pub fn escape(s: &str) -> String {
    s.bytes()
        .fold(String::with_capacity(s.len()), |mut out, b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                out.push(char::from(b));
            } else {
                out.push('%');
                out.push(char::from(b"0123456789ABCDEF"[usize::from(b >> 4)]));
                out.push(char::from(b"0123456789ABCDEF"[usize::from(b & 15)]));
            }
            out
        })
}

/// `(name, value)` pairs of a query string.
pub fn params(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        (decode(k), decode(v))
    })
}

impl DumpQuery {
    /// Parses `/config_dump`'s query string; a bad `name_regex` is a 400 naming it.
    pub fn parse(query: &str) -> Result<Self, QueryError> {
        let mut q = DumpQuery::default();
        for (k, v) in params(query) {
            match k.as_str() {
                "resource" if !v.is_empty() => q.resource = Some(v),
                "mask" if !v.is_empty() => {
                    q.mask = v
                        .split(',')
                        .map(str::trim)
                        .filter(|p| !p.is_empty())
                        .map(String::from)
                        .collect();
                }
                "name_regex" if !v.is_empty() => {
                    let re = regex::Regex::new(&format!("^(?:{v})$")).map_err(|e| {
                        err(
                            400,
                            format!("Error while parsing name_regex from /config_dump: {e}"),
                        )
                    })?;
                    q.name_regex = Some(re);
                }
                "include_eds" => q.include_eds = true,
                _ => {}
            }
        }
        Ok(q)
    }

    /// Applies the query to the full dump's `configs` (from [`super::config_dump::configs`]).
    pub fn apply(&self, configs: Vec<Value>) -> Result<Value, QueryError> {
        let configs = match &self.name_regex {
            Some(re) => configs.into_iter().map(|c| filter_names(c, re)).collect(),
            None => configs,
        };
        match &self.resource {
            Some(r) => self.resource(configs, r),
            None if self.mask.is_empty() => Ok(json!({ "configs": configs })),
            None => {
                let masked: Vec<Value> = configs
                    .into_iter()
                    .filter_map(|c| {
                        let ty = c["@type"].as_str().unwrap_or("").to_string();
                        let fields = message_fields(&ty);
                        self.mask
                            .iter()
                            .all(|p| top_level_path_ok(p, fields))
                            .then(|| {
                                trim(&c, &self.mask).map(|mut t| {
                                    t["@type"] = json!(ty);
                                    t
                                })
                            })
                            .flatten()
                    })
                    .collect();
                if masked.is_empty() {
                    return Err(err(
                        400,
                        format!(
                            "FieldMask {} could not be successfully applied to any configs.",
                            self.mask.join(",")
                        ),
                    ));
                }
                Ok(json!({ "configs": masked }))
            }
        }
    }

    fn resource(&self, configs: Vec<Value>, r: &str) -> Result<Value, QueryError> {
        let Some((dump, field, element)) = RESOURCES
            .iter()
            .find(|(d, f, _)| *f == r && configs.iter().any(|c| c["@type"] == *d))
        else {
            return Err(err(404, format!("{r} not found in config dump")));
        };
        let element_type = format!("type.googleapis.com/envoy.admin.v3.{element}");
        let mut out = Vec::new();
        for c in configs.iter().filter(|c| c["@type"] == *dump) {
            for e in c
                .get(*field)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let e = if self.mask.is_empty() {
                    e.clone()
                } else {
                    trim(e, &self.mask).ok_or_else(|| {
                        err(
                            400,
                            format!(
                                "FieldMask {} could not be successfully used.",
                                self.mask.join(",")
                            ),
                        )
                    })?
                };
                let mut m = Map::new();
                m.insert("@type".into(), json!(element_type));
                if let Value::Object(o) = e {
                    m.extend(o);
                }
                out.push(Value::Object(m));
            }
        }
        if out.is_empty() {
            return Ok(json!({}));
        }
        Ok(json!({ "configs": out }))
    }
}

/// Without `resource`, a path names a field of the dump message and goes deeper only inside
/// the bootstrap (the other fields are repeated, and a FieldMask cannot cross a list).
fn top_level_path_ok(path: &str, fields: &[&str]) -> bool {
    let mut segs = path.split('.');
    let first = segs.next().unwrap_or("");
    fields.contains(&first) && (first == "bootstrap" || segs.next().is_none())
}

/// Keeps only `paths` of `v` (`@type` of every Any on the way is kept). `None` when a path
/// crosses a list (Envoy refuses such a FieldMask).
fn trim(v: &Value, paths: &[String]) -> Option<Value> {
    let mut out = json!({});
    for p in paths {
        let segs: Vec<&str> = p.split('.').collect();
        copy_path(v, &mut out, &segs)?;
    }
    Some(out)
}

fn copy_path(src: &Value, dst: &mut Value, segs: &[&str]) -> Option<()> {
    let (first, rest) = segs.split_first()?;
    if let Some(t) = src.get("@type") {
        dst["@type"] = t.clone();
    }
    let Some(child) = src.get(*first) else {
        return Some(());
    };
    if rest.is_empty() {
        dst[*first] = child.clone();
        return Some(());
    }
    if !child.is_object() {
        return None;
    }
    if !dst.get(*first).is_some_and(Value::is_object) {
        dst[*first] = json!({});
    }
    copy_path(child, &mut dst[*first], rest)
}

/// Drops the resources of one dump message whose name does not match `re`.
fn filter_names(mut c: Value, re: &regex::Regex) -> Value {
    let Value::Object(m) = &mut c else { return c };
    for (k, v) in m.iter_mut() {
        if k == "bootstrap" {
            continue;
        }
        if let Value::Array(a) = v {
            a.retain(|e| re.is_match(&element_name(e)));
        }
    }
    m.retain(|_, v| !matches!(v, Value::Array(a) if a.is_empty()));
    c
}

/// The name of a dump element (`name`, or the resource's `name` / `cluster_name`).
fn element_name(e: &Value) -> String {
    if let Some(n) = e.get("name").and_then(Value::as_str) {
        return n.to_string();
    }
    let inner = [
        "cluster",
        "listener",
        "route_config",
        "endpoint_config",
        "secret",
    ]
    .iter()
    .find_map(|k| e.get(*k));
    inner
        .and_then(|r| r.get("name").or_else(|| r.get("cluster_name")))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}
