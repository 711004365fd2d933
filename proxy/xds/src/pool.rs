//! The descriptor pool of Envoy's v3 API, compiled at build time from the `.proto` files the
//! `envoy-types` crate ships (see `build.rs`). Built once, on first use.

use std::sync::OnceLock;

use prost_reflect::DescriptorPool;

static DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/envoy_descriptors.bin"));

/// Envoy's v3 API (every message `envoy-types` ships) plus udpa/xds and the well-known types.
pub fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        let mut pool =
            DescriptorPool::decode(DESCRIPTORS).expect("descriptor set built by build.rs");
        for (package, message) in ISTIO_TELEMETRY {
            pool.add_file_descriptor_proto(empty_message_file(package, message))
                .expect("a one-message file");
        }
        pool
    })
}

/// Istio's own filter configs (package, message): istiod sends `istio.stats` and `istio.alpn`
/// as plain Anys of these types, not wrapped in a TypedStruct, on every connection manager
/// and TCP chain. Declared here without fields so such an Any decodes (its content skipped)
/// and prints as `{"@type": ...}`; the engine takes these filters as telemetry no-ops by
/// type (`sluice_engine` `config/istio_filters.rs`).
const ISTIO_TELEMETRY: &[(&str, &str)] = &[
    ("stats", "PluginConfig"),
    (
        "istio.envoy.config.filter.http.alpn.v2alpha1",
        "FilterConfig",
    ),
    ("io.istio.http.peer_metadata", "Config"),
    ("envoy.tcp.metadataexchange.config", "MetadataExchange"),
    ("io.istio.network.authn", "Config"),
];

/// A `.proto` file of `package` declaring the one field-less `message`.
fn empty_message_file(
    package: &str,
    message: &str,
) -> prost_reflect::prost_types::FileDescriptorProto {
    use prost_reflect::prost_types::{DescriptorProto, FileDescriptorProto};
    FileDescriptorProto {
        name: Some(format!("sluice/istio/{package}.proto")),
        package: Some(package.to_string()),
        syntax: Some("proto3".to_string()),
        message_type: vec![DescriptorProto {
            name: Some(message.to_string()),
            ..DescriptorProto::default()
        }],
        ..FileDescriptorProto::default()
    }
}
