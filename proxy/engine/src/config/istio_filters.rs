//! Istio's telemetry-only filters, accepted as documented no-ops: the stats plugin
//! (`istio.stats`, native or Wasm-hosted), peer metadata exchange (`istio.metadata_exchange`,
//! `envoy.filters.http.peer_metadata`, `envoy.filters.network.metadata_exchange`), the
//! peer-principal filter (`istio_authn`, which records
//! the mutual-TLS peer for Istio's RBAC as filter state: not recorded here, so RBAC's
//! `filter_state` principals never match; the peer certificate itself is what `authenticated`
//! reads) and
//! Envoy's gRPC statistics filter (`envoy.filters.http.grpc_stats`, which istiod puts in every
//! HTTP connection manager: it counts gRPC messages and sets filter state for the stats plugin,
//! and changes no byte of a request or response). They only feed Istio's metrics and peer
//! labels, which sluice computes itself (`server/istio.rs`); routing never depends on them. A filter is
//! recognised by its typed_config's type URL (the `type_url` inside a `udpa.type.v1` /
//! `xds.type.v3` TypedStruct), as Envoy picks factories, or by name when it has no typed_config.

use serde_norway::Value;

use super::raw::type_url;

/// TypedStruct wrappers (the type that matters is their `type_url`).
const TYPED_STRUCTS: &[&str] = &[
    "type.googleapis.com/udpa.type.v1.TypedStruct",
    "type.googleapis.com/xds.type.v3.TypedStruct",
];
const STATS: &str = "type.googleapis.com/stats.PluginConfig";
const PEER_METADATA: &str = "type.googleapis.com/io.istio.http.peer_metadata.Config";
const TCP_METADATA_EXCHANGE: &str =
    "type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange";
const ISTIO_AUTHN: &str = "type.googleapis.com/io.istio.network.authn.Config";
const GRPC_STATS: &str =
    "type.googleapis.com/envoy.extensions.filters.http.grpc_stats.v3.FilterConfig";
const HTTP_WASM: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
const NETWORK_WASM: &str = "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm";
/// Istio's Wasm plugins (null VM code names and root ids) that only do telemetry.
const WASM_TELEMETRY: &[&str] = &[
    "envoy.wasm.stats",
    "envoy.wasm.metadata_exchange",
    "stats_inbound",
    "stats_outbound",
];

/// Whether the HTTP filter `name` with `typed_config` is Istio's `istio.alpn` (by its type,
/// plain or in a TypedStruct, or by name without a typed_config), which is not a no-op:
/// `http/filters/istio_alpn.rs`.
pub(crate) fn is_istio_alpn(name: Option<&str>, typed_config: Option<&Value>) -> bool {
    let alpn = crate::http::filters::istio_alpn::TYPE;
    match typed_config.and_then(type_url) {
        None => typed_config.is_none() && name == Some("istio.alpn"),
        Some(t) if TYPED_STRUCTS.contains(&t) => {
            typed_config
                .and_then(|tc| tc.get("type_url"))
                .and_then(Value::as_str)
                == Some(alpn)
        }
        Some(t) => t == alpn,
    }
}

/// Where a filter sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// An http_connection_manager's `http_filters[]` (before the router).
    Http,
    /// A filter chain's `filters[]` (before the terminal filter), or a cluster's upstream
    /// `filters[]`.
    Network,
}

/// Whether the filter `name` with `typed_config` is one of Istio's telemetry-only filters at
/// `place` (then it is a no-op).
pub(crate) fn is_telemetry_noop(
    place: Place,
    name: Option<&str>,
    typed_config: Option<&Value>,
) -> bool {
    let Some(tc) = typed_config else {
        return match place {
            Place::Http => matches!(
                name,
                Some("istio.stats" | "istio.metadata_exchange")
                    | Some("envoy.filters.http.peer_metadata" | "envoy.filters.http.grpc_stats")
            ),
            Place::Network => matches!(
                name,
                Some("istio.stats" | "istio.metadata_exchange")
                    | Some("envoy.filters.network.metadata_exchange")
                    | Some("envoy.filters.network.upstream.metadata_exchange")
            ),
        };
    };
    let Some(mut ty) = type_url(tc) else {
        return false;
    };
    let mut body = tc;
    if TYPED_STRUCTS.contains(&ty) {
        let Some(inner) = tc.get("type_url").and_then(Value::as_str) else {
            return false;
        };
        ty = inner;
        body = tc.get("value").unwrap_or(&Value::Null);
    }
    match (place, ty) {
        (_, STATS) => true,
        (Place::Http, PEER_METADATA | GRPC_STATS) => true,
        (Place::Network, TCP_METADATA_EXCHANGE | ISTIO_AUTHN) => true,
        (Place::Http, HTTP_WASM) | (Place::Network, NETWORK_WASM) => wasm_is_telemetry(body),
        _ => false,
    }
}

/// A Wasm filter config (`config.root_id`, `config.vm_config.code.local.inline_string`) that
/// runs one of Istio's telemetry plugins.
fn wasm_is_telemetry(body: &Value) -> bool {
    let config = body.get("config").unwrap_or(&Value::Null);
    let root_id = config.get("root_id").and_then(Value::as_str);
    let code = config
        .get("vm_config")
        .and_then(|v| v.get("code"))
        .and_then(|c| c.get("local"))
        .and_then(|l| l.get("inline_string"))
        .and_then(Value::as_str);
    let known = |s: Option<&str>| s.is_some_and(|s| WASM_TELEMETRY.contains(&s));
    known(code) || (code.is_none() && known(root_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(s: &str) -> Value {
        serde_norway::from_str(s).unwrap()
    }

    #[test]
    fn istio_telemetry_filters_are_recognised_and_others_are_not() {
        let table = [
            (Place::Http, "{'@type': type.googleapis.com/stats.PluginConfig}", true),
            (
                Place::Http,
                "{'@type': type.googleapis.com/udpa.type.v1.TypedStruct, type_url: type.googleapis.com/io.istio.http.peer_metadata.Config, value: {}}",
                true,
            ),
            (
                Place::Network,
                "{'@type': type.googleapis.com/xds.type.v3.TypedStruct, type_url: type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange, value: {protocol: istio-peer-exchange}}",
                true,
            ),
            (
                Place::Http,
                "{'@type': type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm, config: {root_id: stats_outbound, vm_config: {runtime: envoy.wasm.runtime.null, code: {local: {inline_string: envoy.wasm.stats}}}}}",
                true,
            ),
            (
                Place::Http,
                "{'@type': type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm, config: {root_id: stats_outbound, vm_config: {code: {local: {inline_string: my.plugin}}}}}",
                false,
            ),
            // As istiod sends them (listener_builder.go, authn): grpc_stats in every HCM,
            // istio_authn before the HCM of an inbound chain.
            (
                Place::Http,
                "{'@type': type.googleapis.com/envoy.extensions.filters.http.grpc_stats.v3.FilterConfig, emit_filter_state: true, stats_for_all_methods: false}",
                true,
            ),
            (
                Place::Network,
                "{'@type': type.googleapis.com/udpa.type.v1.TypedStruct, type_url: type.googleapis.com/io.istio.network.authn.Config}",
                true,
            ),
            (
                Place::Network,
                "{'@type': type.googleapis.com/envoy.extensions.filters.http.grpc_stats.v3.FilterConfig}",
                false,
            ),
            // The network metadata exchange is not an HTTP filter, nor the reverse.
            (
                Place::Http,
                "{'@type': type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange}",
                false,
            ),
            (
                Place::Network,
                "{'@type': type.googleapis.com/io.istio.http.peer_metadata.Config}",
                false,
            ),
            (
                Place::Http,
                "{'@type': type.googleapis.com/udpa.type.v1.TypedStruct, type_url: type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua}",
                false,
            ),
        ];
        for (place, tc, want) in table {
            assert_eq!(
                is_telemetry_noop(place, None, Some(&yaml(tc))),
                want,
                "{tc}"
            );
        }
        assert!(is_telemetry_noop(Place::Http, Some("istio.stats"), None));
        assert!(!is_telemetry_noop(Place::Http, Some("istio.alpn"), None));
        assert!(is_istio_alpn(Some("istio.alpn"), None));
        assert!(is_istio_alpn(
            Some("x"),
            Some(&yaml("{'@type': type.googleapis.com/udpa.type.v1.TypedStruct, type_url: type.googleapis.com/istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig}"))
        ));
        assert!(!is_istio_alpn(
            Some("istio.alpn"),
            Some(&yaml("{'@type': type.googleapis.com/stats.PluginConfig}"))
        ));
        assert!(!is_telemetry_noop(
            Place::Http,
            Some("envoy.filters.http.lua"),
            None
        ));
    }
}
