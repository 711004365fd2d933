//! The xDS resource decoder: pushed `Any`s -> proto3 JSON -> the engine's serde + validation,
//! through `core::Core::check` as the ADS client runs it (a fresh client state per input).
//!
//! Input: up to 8 records, each `[type][mode][len: u16 LE][payload]`, every record one
//! State-of-the-world response of one resource, committed when accepted so later records
//! (RDS, EDS) are wanted. Type: byte % 4 over CDS, EDS, LDS, RDS. Mode bit 0: the payload is
//! proto3 JSON converted with `convert::json_to_any` (reaches deep validation fast), else the
//! Any's protobuf bytes as a management server sends them; bit 1: a wrong type URL.
#![no_main]

use std::{sync::OnceLock, time::Instant};

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use sluice_engine::config::{self, DynamicResources};
use sluice_xds::{
    convert::{json_to_any, Any, ResourceType},
    core::{Core, Update},
};

/// A bootstrap (JSON is YAML too) with ADS for listeners and clusters and one static cluster.
const BASE_JSON: &str = r#"{
  "node": {"id": "fuzz", "cluster": "fuzz"},
  "dynamic_resources": {
    "ads_config": {"api_type": "GRPC", "transport_api_version": "V3",
                   "grpc_services": [{"envoy_grpc": {"cluster_name": "xds"}}]},
    "lds_config": {"ads": {}, "resource_api_version": "V3"},
    "cds_config": {"ads": {}, "resource_api_version": "V3"}},
  "static_resources": {"clusters": [{"name": "xds", "type": "STATIC", "load_assignment": {
    "cluster_name": "xds", "endpoints": [{"lb_endpoints": [{"endpoint": {"address":
      {"socket_address": {"address": "127.0.0.1", "port_value": 18000}}}}]}]}}]}}"#;

fn base() -> &'static (Value, DynamicResources) {
    static BASE: OnceLock<(Value, DynamicResources)> = OnceLock::new();
    BASE.get_or_init(|| {
        let doc: Value = serde_json::from_str(BASE_JSON).expect("base JSON");
        let b = config::from_yaml_str(&doc.to_string()).expect("base bootstrap");
        (doc, b.dynamic_resources.expect("dynamic_resources"))
    })
}

fn any(ty: ResourceType, mode: u8, payload: &[u8]) -> Option<Any> {
    let mut any = if mode & 1 != 0 {
        let json: Value = serde_json::from_slice(payload).ok()?;
        json_to_any(ty.type_url(), &json).ok()?
    } else {
        Any {
            type_url: ty.type_url().to_string(),
            value: payload.to_vec(),
        }
    };
    if mode & 2 != 0 {
        any.type_url = "type.googleapis.com/google.protobuf.Struct".to_string();
    }
    Some(any)
}

fuzz_target!(|data: &[u8]| {
    let (doc, dynamic) = base();
    let now = Instant::now();
    let mut core = Core::new(doc.clone(), dynamic.clone(), now);
    let mut rest = data;
    for _ in 0..8 {
        let [t, mode, lo, hi, tail @ ..] = rest else {
            return;
        };
        let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(tail.len());
        let (payload, next) = tail.split_at(len);
        rest = next;
        let ty = ResourceType::ALL[usize::from(*t % 4)];
        let Some(any) = any(ty, *mode, payload) else {
            continue;
        };
        match core.check(ty, Update::Sotw(vec![any]), now) {
            Ok(cand) => {
                core.commit(cand, now);
                let _ = core.tick(now);
            }
            // A NACK detail names what failed.
            Err(detail) => assert!(!detail.is_empty()),
        }
    }
});
