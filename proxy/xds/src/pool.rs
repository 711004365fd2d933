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
        pool.add_file_descriptor_proto(istio_alpn_file())
            .expect("istio.alpn's config file");
        pool
    })
}

/// Istio's own telemetry filter configs (package, message): istiod sends `istio.stats` as a
/// plain Any of its type, not wrapped in a TypedStruct, on every connection manager and TCP
/// chain. Declared here without fields so such an Any decodes (its content skipped) and
/// prints as `{"@type": ...}`; the engine takes these filters as telemetry no-ops by type
/// (`sluice_engine` `config/istio_filters.rs`).
const ISTIO_TELEMETRY: &[(&str, &str)] = &[
    ("stats", "PluginConfig"),
    ("io.istio.http.peer_metadata", "Config"),
    ("envoy.tcp.metadataexchange.config", "MetadataExchange"),
    ("io.istio.network.authn", "Config"),
];

/// istio-proxy's `istio.alpn` config (`istio.envoy.config.filter.http.alpn.v2alpha1`), whose
/// content the engine reads (`http/filters/istio_alpn.rs`), with its fields:
/// `repeated AlpnOverride alpn_override = 1`, `AlpnOverride { Protocol upstream_protocol = 1;
/// repeated string alpn_override = 2; }`, `enum Protocol { HTTP10; HTTP11; HTTP2; }`.
fn istio_alpn_file() -> prost_reflect::prost_types::FileDescriptorProto {
    use prost_reflect::prost_types::{
        field_descriptor_proto::{Label, Type},
        DescriptorProto, EnumDescriptorProto, EnumValueDescriptorProto, FieldDescriptorProto,
        FileDescriptorProto,
    };
    const PACKAGE: &str = "istio.envoy.config.filter.http.alpn.v2alpha1";
    let field = |name: &str, number, label: Label, ty: Type, type_name: Option<String>| {
        FieldDescriptorProto {
            name: Some(name.to_string()),
            json_name: Some(camel(name)),
            number: Some(number),
            label: Some(label as i32),
            r#type: Some(ty as i32),
            type_name,
            ..FieldDescriptorProto::default()
        }
    };
    let protocol = EnumDescriptorProto {
        name: Some("Protocol".to_string()),
        value: ["HTTP10", "HTTP11", "HTTP2"]
            .iter()
            .zip(0..)
            .map(|(n, i)| EnumValueDescriptorProto {
                name: Some(n.to_string()),
                number: Some(i),
                ..EnumValueDescriptorProto::default()
            })
            .collect(),
        ..EnumDescriptorProto::default()
    };
    let entry = DescriptorProto {
        name: Some("AlpnOverride".to_string()),
        field: vec![
            field(
                "upstream_protocol",
                1,
                Label::Optional,
                Type::Enum,
                Some(format!(".{PACKAGE}.FilterConfig.Protocol")),
            ),
            field("alpn_override", 2, Label::Repeated, Type::String, None),
        ],
        ..DescriptorProto::default()
    };
    FileDescriptorProto {
        name: Some("sluice/istio/alpn.proto".to_string()),
        package: Some(PACKAGE.to_string()),
        syntax: Some("proto3".to_string()),
        message_type: vec![DescriptorProto {
            name: Some("FilterConfig".to_string()),
            field: vec![field(
                "alpn_override",
                1,
                Label::Repeated,
                Type::Message,
                Some(format!(".{PACKAGE}.FilterConfig.AlpnOverride")),
            )],
            nested_type: vec![entry],
            enum_type: vec![protocol],
            ..DescriptorProto::default()
        }],
        ..FileDescriptorProto::default()
    }
}

/// protoc's JSON name of a field: `alpn_override` -> `alpnOverride`.
fn camel(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut up = false;
    for c in name.chars() {
        match (c, up) {
            ('_', _) => up = true,
            (c, true) => {
                out.push(c.to_ascii_uppercase());
                up = false;
            }
            (c, false) => out.push(c),
        }
    }
    out
}

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
