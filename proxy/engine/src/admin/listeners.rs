//! `/listeners`: Envoy's `name::address` text and `?format=json` (`ListenerStatuses`), in
//! config order.

use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::server::Runtime;

/// Envoy's text format.
pub fn text(rt: &Runtime) -> String {
    let mut out = String::new();
    // One line per address, as Envoy's.
    for l in &rt.bootstrap.listeners {
        for a in l.addresses() {
            let _ = writeln!(out, "{}::{a}", l.name);
        }
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
            let mut status = json!({
                "name": l.name.as_str(),
                "local_address": socket_address(l.address),
            });
            if !l.additional_addresses.is_empty() {
                status["additional_local_addresses"] = l
                    .additional_addresses
                    .iter()
                    .map(|&a| socket_address(a))
                    .collect();
            }
            status
        })
        .collect();
    json!({ "listener_statuses": statuses })
}

/// Envoy's `{"socket_address": {"address", "port_value"}}`.
fn socket_address(a: std::net::SocketAddr) -> Value {
    json!({"socket_address": {"address": a.ip().to_string(), "port_value": a.port()}})
}
