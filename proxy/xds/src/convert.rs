//! A pushed resource (`google.protobuf.Any`) -> proto3 JSON with Envoy's field names, exactly
//! the shape of the same resource written in a bootstrap YAML (`typed_config` Anys become
//! `{"@type": ..., ...}`). The JSON then goes through the engine's own parser and validation
//! (see `state.rs`); nothing here interprets Envoy semantics.

use prost_reflect::{DynamicMessage, SerializeOptions};
use serde_json::Value;

use crate::pool::pool;

/// `google.protobuf.Any` as envoy-types generates it.
pub type Any = envoy_types::pb::google::protobuf::Any;

/// The four resource types of ADS that sluice subscribes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceType {
    /// LDS: `envoy.config.listener.v3.Listener`.
    Listener,
    /// RDS: `envoy.config.route.v3.RouteConfiguration`.
    Route,
    /// CDS: `envoy.config.cluster.v3.Cluster`.
    Cluster,
    /// EDS: `envoy.config.endpoint.v3.ClusterLoadAssignment`.
    Endpoint,
    /// SDS over ADS: `envoy.extensions.transport_sockets.tls.v3.Secret` (the secrets TLS
    /// contexts name with `sds_config: {ads: {}}`).
    Secret,
}

impl ResourceType {
    /// Every type, in Envoy's ADS subscription order (CDS, EDS, LDS, RDS; SDS as secrets are
    /// needed).
    pub const ALL: [ResourceType; 5] = [
        ResourceType::Cluster,
        ResourceType::Endpoint,
        ResourceType::Listener,
        ResourceType::Route,
        ResourceType::Secret,
    ];

    /// The types whose names the listeners and clusters ask for (RDS, EDS, SDS).
    pub const NAMED: [ResourceType; 3] = [
        ResourceType::Route,
        ResourceType::Endpoint,
        ResourceType::Secret,
    ];

    /// The type URL (`type.googleapis.com/<message>`).
    pub fn type_url(self) -> &'static str {
        match self {
            ResourceType::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            ResourceType::Route => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
            ResourceType::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            ResourceType::Endpoint => {
                "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
            }
            ResourceType::Secret => {
                "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
            }
        }
    }

    /// The type of a type URL, if sluice subscribes to it.
    pub fn from_type_url(url: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.type_url() == url)
    }

    /// The message name used in NACK details (`Listener "x": ...`).
    pub fn kind(self) -> &'static str {
        match self {
            ResourceType::Listener => "Listener",
            ResourceType::Route => "RouteConfiguration",
            ResourceType::Cluster => "Cluster",
            ResourceType::Endpoint => "ClusterLoadAssignment",
            ResourceType::Secret => "Secret",
        }
    }

    /// The service's short name (`LDS`, `RDS`, `CDS`, `EDS`), as istioctl's columns say.
    pub fn short_name(self) -> &'static str {
        match self {
            ResourceType::Listener => "LDS",
            ResourceType::Route => "RDS",
            ResourceType::Cluster => "CDS",
            ResourceType::Endpoint => "EDS",
            ResourceType::Secret => "SDS",
        }
    }

    /// The field holding a resource's name (`cluster_name` for EDS).
    pub fn name_field(self) -> &'static str {
        match self {
            ResourceType::Endpoint => "cluster_name",
            _ => "name",
        }
    }
}

/// Decodes `value` as the message `type_url` names and prints it as JSON with Envoy's field
/// names (`use_proto_field_name`), 64-bit integers as numbers, default fields skipped, enums by
/// name and nested Anys as `{"@type": ...}`. Errors name what failed (unknown type, bad bytes,
/// a nested `typed_config` of a type the pool does not know).
pub fn any_to_json(type_url: &str, value: &[u8]) -> Result<Value, String> {
    let name = type_url.rsplit('/').next().unwrap_or(type_url);
    let desc = pool()
        .get_message_by_name(name)
        .ok_or_else(|| format!("unknown type {type_url:?}"))?;
    let msg = DynamicMessage::decode(desc, value)
        .map_err(|e| format!("cannot decode {type_url:?}: {e}"))?;
    let opts = SerializeOptions::new()
        .use_proto_field_name(true)
        .stringify_64_bit_integers(false)
        .skip_default_fields(true);
    msg.serialize_with_options(serde_json::value::Serializer, &opts)
        .map_err(|e| format!("cannot convert {type_url:?} to JSON: {e}"))
}

/// The inverse of [`any_to_json`]: proto3 JSON (Envoy field names, `@type` Anys) -> an `Any` of
/// `type_url`. Test management servers script their snapshots with it.
pub fn json_to_any(type_url: &str, json: &Value) -> Result<Any, String> {
    let name = type_url.rsplit('/').next().unwrap_or(type_url);
    let desc = pool()
        .get_message_by_name(name)
        .ok_or_else(|| format!("unknown type {type_url:?}"))?;
    let msg = DynamicMessage::deserialize(desc, json)
        .map_err(|e| format!("{type_url:?} from JSON: {e}"))?;
    Ok(Any {
        type_url: type_url.to_string(),
        value: prost::Message::encode_to_vec(&msg),
    })
}

/// `json` (a resource as written in YAML, `typed_config` as `{"@type": ...}`) re-printed as
/// Envoy prints it in `/config_dump`: proto3 canonical JSON of `type_url` with Envoy's field
/// names, default values left out, 64-bit integers as strings. `None` when it does not decode
/// (the dump then shows the JSON as written). Installed as the engine's dump canonicalizer.
pub fn canonical(type_url: &str, json: &Value) -> Option<Value> {
    let name = type_url.rsplit('/').next().unwrap_or(type_url);
    let desc = pool().get_message_by_name(name)?;
    let mut body = json.clone();
    if let Some(m) = body.as_object_mut() {
        m.remove("@type");
    }
    let msg = DynamicMessage::deserialize(desc, &body).ok()?;
    let opts = SerializeOptions::new()
        .use_proto_field_name(true)
        .stringify_64_bit_integers(true)
        .skip_default_fields(true);
    msg.serialize_with_options(serde_json::value::Serializer, &opts)
        .ok()
}

/// A decoded resource: its name and its JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The resource name (`name`, or `cluster_name` for a ClusterLoadAssignment).
    pub name: String,
    /// The resource as JSON.
    pub json: Value,
}

/// Decodes one resource of type `ty` from an Any; the error is a NACK detail.
pub fn decode_resource(ty: ResourceType, any: &Any) -> Result<Decoded, String> {
    if any.type_url != ty.type_url() {
        return Err(format!(
            "resource of type {:?} in a {} response",
            any.type_url,
            ty.kind()
        ));
    }
    let json = any_to_json(&any.type_url, &any.value)?;
    let name = json
        .get(ty.name_field())
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| format!("{}: {}: required", ty.kind(), ty.name_field()))?
        .to_string();
    Ok(Decoded { name, json })
}

#[cfg(test)]
mod tests;
