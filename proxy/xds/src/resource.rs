//! One accepted xDS resource at rest: its JSON as compact text, parsed again when a bootstrap
//! document is assembled (or a `/config_dump` is made), and the RDS or EDS names it needs, read
//! once when it arrives. A mesh-sized configuration (thousands of routes, clusters and
//! endpoints) then costs its text while it serves, not serde_json's tree of maps, which is
//! several times larger; the typed configuration the engine runs is built from the parsed
//! document and kept, the document is not.

use std::sync::Arc;

use serde_json::Value;

use crate::{
    assemble::{eds_name, route_names, secret_refs, SecretRef},
    convert::ResourceType,
};

/// An accepted resource (immutable; shared by the accepted state, the running plan and the
/// dump metadata).
#[derive(Debug)]
pub struct Resource {
    /// Compact JSON (Envoy field names, as converted from the protobuf).
    text: Arc<str>,
    /// A listener's RDS route configuration names, or a cluster's EDS name (0 or 1).
    needs: Box<[String]>,
    /// The secrets a listener's or cluster's TLS contexts ask for, and where from.
    secrets: Box<[SecretRef]>,
}

impl Resource {
    /// `json` of a resource of type `ty`. `Err` (the NACK detail) when its text would not parse
    /// back: nested deeper than the JSON and YAML parsers go (128 levels; a protobuf `Any`
    /// restarts the decoder's own depth count, so a pushed resource can be deeper).
    pub fn new(ty: ResourceType, json: &Value) -> Result<Self, String> {
        let needs = match ty {
            ResourceType::Listener => route_names(json).into(),
            ResourceType::Cluster => eds_name(json).into_iter().collect(),
            _ => Box::default(),
        };
        let secrets = match ty {
            ResourceType::Listener | ResourceType::Cluster => {
                let mut refs = Vec::new();
                secret_refs(json, &mut refs);
                refs.into()
            }
            _ => Box::default(),
        };
        if depth(json) > MAX_DEPTH {
            return Err(format!(
                "nested deeper than {MAX_DEPTH} levels (the JSON and YAML parsers' limit)"
            ));
        }
        let text = serde_json::to_string(json).map_err(|e| e.to_string())?;
        Ok(Self {
            text: text.into(),
            needs,
            secrets,
        })
    }

    /// Its JSON, parsed now (checked to parse when it was made).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).expect("checked by Resource::new")
    }

    /// Its JSON text (shared).
    pub fn text(&self) -> &Arc<str> {
        &self.text
    }

    /// A listener's RDS route configuration names (HCMs with `rds`).
    pub fn route_names(&self) -> &[String] {
        &self.needs
    }

    /// A cluster's EDS name (`eds_cluster_config.service_name`, else its name), if it is EDS.
    pub fn eds_name(&self) -> Option<&String> {
        self.needs.first()
    }

    /// The names of the secrets a listener's or cluster's TLS contexts ask for.
    pub fn secret_names(&self) -> impl Iterator<Item = &String> {
        self.secrets.iter().map(|(n, _)| n)
    }

    /// Those secrets with where they come from.
    pub fn secret_refs(&self) -> &[SecretRef] {
        &self.secrets
    }
}

/// serde_json's and serde_norway's recursion limit is 128 nested arrays or objects.
const MAX_DEPTH: usize = 127;

/// How many arrays and objects `v` nests (without recursion: `v` may be very deep).
fn depth(v: &Value) -> usize {
    let mut max = 0;
    let mut todo = vec![(v, 0usize)];
    while let Some((v, d)) = todo.pop() {
        match v {
            Value::Array(a) => todo.extend(a.iter().map(|c| (c, d + 1))),
            Value::Object(o) => todo.extend(o.values().map(|c| (c, d + 1))),
            _ => continue,
        }
        max = max.max(d + 1);
    }
    max
}

impl PartialEq for Resource {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for Resource {}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_round_trips_and_needs_are_read_once() {
        let c = json!({"name": "c", "type": "EDS", "connect_timeout": "0.25s",
            "eds_cluster_config": {"service_name": "svc"}, "weight": 1.5, "n": 18446744073709551615u64});
        let r = Resource::new(ResourceType::Cluster, &c).unwrap();
        assert_eq!(r.json(), c);
        assert_eq!(r.eds_name().map(String::as_str), Some("svc"));
        let s = Resource::new(
            ResourceType::Cluster,
            &json!({"name": "s", "type": "STATIC"}),
        )
        .unwrap();
        assert_eq!(s.eds_name(), None);
        assert_eq!(r, Resource::new(ResourceType::Cluster, &c).unwrap());
        assert_ne!(r, s);
    }

    #[test]
    fn too_deep_to_read_back_is_an_error_not_a_panic() {
        let mut v = json!("leaf");
        for _ in 0..200 {
            v = json!({ "and_rules": { "rules": [v] } });
        }
        let e = Resource::new(ResourceType::Listener, &v).unwrap_err();
        assert!(e.contains("nested deeper than 127"), "{e}");
        assert_eq!(depth(&json!({"a": [1, {"b": []}]})), 4);
        assert_eq!(depth(&json!("x")), 0);
    }
}
