//! `/listeners`: Envoy's `name::address` text and `?format=json` (`ListenerStatuses`), in
//! config order.

use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::server::Runtime;

/// Envoy's text format.
pub fn text(rt: &Runtime) -> String {
    let mut out = String::new();
    for l in &rt.bootstrap.listeners {
        let _ = writeln!(out, "{}::{}", l.name, l.address);
    }
    out
}

/// `?format=json`.
pub fn json(rt: &Runtime) -> Value {
    let statuses: Vec<Value> = rt
        .bootstrap
        .listeners
        .iter()
        .map(|l| {
            json!({
                "name": l.name.as_str(),
                "local_address": {"socket_address": {
                    "address": l.address.ip().to_string(),
                    "port_value": l.address.port(),
                }},
            })
        })
        .collect();
    json!({ "listener_statuses": statuses })
}
