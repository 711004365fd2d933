//! `header_key_format` on the HTTP connection manager and on a cluster: the format read, and
//! errors naming the field.

use super::super::tests::{expect_err, with_routes, ROUTES_OK};
use super::HeaderKeyFormat;
use crate::config::{dynamic_tests::cluster, from_yaml_str, NetworkFilter};

const HCM: &str = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_protocol_options.header_key_format";
const PRESERVE: &str = "type.googleapis.com/envoy.extensions.http.header_formatters.preserve_case.v3.PreserveCaseFormatterConfig";

fn with_format(format: &str) -> String {
    with_routes(ROUTES_OK).replace(
        "stat_prefix: ingress",
        &format!("stat_prefix: ingress\n          http_protocol_options: {{header_key_format: {format}}}"),
    )
}

fn hcm_format(format: &str) -> HeaderKeyFormat {
    let b = from_yaml_str(&with_format(format)).unwrap_or_else(|e| panic!("{e}"));
    let NetworkFilter::Http(h) = &b.listeners[0].filter_chains[0].filter else {
        panic!("not an HCM")
    };
    h.header_key_format
}

fn preserve(fields: &str) -> String {
    format!("{{stateful_formatter: {{name: preserve_case, typed_config: {{'@type': {PRESERVE}{fields}}}}}}}")
}

#[test]
fn the_hcm_reads_each_format() {
    let none = from_yaml_str(&with_routes(ROUTES_OK)).expect("valid");
    let NetworkFilter::Http(h) = &none.listeners[0].filter_chains[0].filter else {
        panic!("not an HCM")
    };
    assert_eq!(h.header_key_format, HeaderKeyFormat::Lower);
    let proper = hcm_format("{proper_case_words: {}}");
    assert!(proper.proper_case() && !proper.preserves_case());
    let kept = hcm_format(&preserve(""));
    assert!(kept.preserves_case() && !kept.proper_case() && !kept.forwards_reason_phrase());
    let reason = hcm_format(&preserve(
        ", forward_reason_phrase: true, formatter_type_on_envoy_headers: DEFAULT",
    ));
    assert!(reason.forwards_reason_phrase());
}

#[test]
fn a_cluster_reads_it_under_either_protocol_config() {
    for config in ["explicit_http_config", "use_downstream_protocol_config"] {
        let yaml = cluster(&format!(
            "    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        {config}: {{http_protocol_options: {{header_key_format: {}}}}}\n",
            preserve(", forward_reason_phrase: true")
        ));
        let b = from_yaml_str(&yaml).unwrap_or_else(|e| panic!("{config}: {e}"));
        let o = &b.cluster("svc").expect("cluster svc").options;
        assert_eq!(
            o.header_key_format,
            HeaderKeyFormat::PreserveCase {
                forward_reason_phrase: true
            },
            "{config}"
        );
    }
}

#[test]
fn errors_name_the_field() {
    expect_err(
        &with_format("{}"),
        HCM,
        "one of proper_case_words or stateful_formatter is required",
    );
    expect_err(
        &with_format(&format!(
            "{{proper_case_words: {{}}, stateful_formatter: {{name: p, typed_config: {{'@type': {PRESERVE}}}}}}}"
        )),
        HCM,
        "only one of",
    );
    expect_err(
        &with_format("{stateful_formatter: {name: p}}"),
        &format!("{HCM}.stateful_formatter.typed_config"),
        "missing",
    );
    expect_err(
        &with_format("{stateful_formatter: {name: p, typed_config: {'@type': type.googleapis.com/google.protobuf.Empty}}}"),
        &format!("{HCM}.stateful_formatter.typed_config.@type"),
        "unsupported type",
    );
    expect_err(
        &with_format(&preserve(", formatter_type_on_envoy_headers: PROPER_CASE")),
        &format!("{HCM}.stateful_formatter.typed_config.formatter_type_on_envoy_headers"),
        "not supported",
    );
    expect_err(
        &with_format(&preserve(", formatter_type_on_envoy_headers: UPPER")),
        &format!("{HCM}.stateful_formatter.typed_config.formatter_type_on_envoy_headers"),
        "unknown value",
    );
    expect_err(
        &with_format("{proper_case_words: {x: 1}}"),
        &format!("{HCM}.proper_case_words.x"),
        "unknown field",
    );
}
