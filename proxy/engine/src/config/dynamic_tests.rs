//! `dynamic_resources`, the ADS cluster's `pipe`, EDS clusters and endpoint health/priority.

use std::time::Duration;

use super::{from_yaml_str, EndpointAddress, EndpointHealth};

fn ads(api_type: &str, lds_extra: &str, endpoint: &str) -> String {
    format!(
        r#"node: {{ id: n1, cluster: c1, metadata: {{ NAMESPACE: default, LABELS: {{ app: x }} }} }}
dynamic_resources:
  ads_config:
    api_type: {api_type}
    transport_api_version: V3
    grpc_services:
    - envoy_grpc: {{ cluster_name: xds }}
  lds_config: {{ ads: {{}}, resource_api_version: V3{lds_extra} }}
  cds_config: {{ ads: {{}} }}
static_resources:
  clusters:
  - name: xds
    type: STATIC
    load_assignment:
      cluster_name: xds
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
{endpoint}"#
    )
}

const TCP: &str = "              socket_address: { address: 127.0.0.1, port_value: 15010 }\n";
const PIPE: &str = "              pipe: { path: /run/xds.sock }\n";

#[test]
fn ads_bootstrap_is_accepted() {
    let b = from_yaml_str(&ads("GRPC", ", initial_fetch_timeout: 0s", TCP)).unwrap();
    let d = b.dynamic_resources.unwrap();
    assert!(!d.ads.delta && d.lds && d.cds);
    assert_eq!(d.ads.cluster_name, "xds");
    assert_eq!(d.lds_initial_fetch_timeout, None, "0s waits forever");
    assert_eq!(d.cds_initial_fetch_timeout, Some(Duration::from_secs(15)));
    assert_eq!(b.node.unwrap().metadata.unwrap()["LABELS"]["app"], "x");
    let d = from_yaml_str(&ads("DELTA_GRPC", "", TCP))
        .unwrap()
        .dynamic_resources
        .unwrap();
    assert!(d.ads.delta);
}

#[test]
fn ads_cluster_pipe_goes_to_the_client_not_the_engine() {
    let b = from_yaml_str(&ads("GRPC", "", PIPE)).unwrap();
    let d = b.dynamic_resources.as_ref().unwrap();
    assert_eq!(d.ads.pipes, [std::path::PathBuf::from("/run/xds.sock")]);
    assert!(b.cluster("xds").unwrap().endpoints.is_empty());
    // A pipe in another static cluster is a gRPC service for the xDS client too (Istio's
    // sds-grpc), never a data endpoint.
    let other = ads("GRPC", "", TCP).replace("static_resources:\n  clusters:\n", &format!(
        "static_resources:\n  clusters:\n  - name: sds-grpc\n    load_assignment:\n      endpoints:\n      - lb_endpoints:\n        - endpoint:\n            address:\n{PIPE}"
    ));
    let b = from_yaml_str(&other).unwrap();
    let d = b.dynamic_resources.as_ref().unwrap();
    assert_eq!(
        d.grpc_pipes["sds-grpc"],
        [std::path::PathBuf::from("/run/xds.sock")]
    );
    assert!(b.cluster("sds-grpc").unwrap().endpoints.is_empty());
    // Without an xDS client a pipe is refused.
    let e = from_yaml_str(&format!(
        "static_resources:\n  listeners: []\n  clusters:\n  - name: sds-grpc\n    load_assignment:\n      endpoints:\n      - lb_endpoints:\n        - endpoint:\n            address:\n{PIPE}"
    ))
    .unwrap_err();
    assert_eq!(
        e.path(),
        "static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.pipe"
    );
    assert!(e.message().starts_with("not supported"), "{e}");
}

#[test]
fn bad_ads_configs_name_the_field() {
    let e = from_yaml_str(&ads("REST", "", TCP)).unwrap_err();
    assert_eq!(e.path(), "dynamic_resources.ads_config.api_type");
    let e =
        from_yaml_str(&ads("GRPC", "", TCP).replace("cluster_name: xds }", "cluster_name: nope }"))
            .unwrap_err();
    assert_eq!(
        e.path(),
        "dynamic_resources.ads_config.grpc_services[0].envoy_grpc.cluster_name"
    );
    let e = from_yaml_str(
        &ads("GRPC", "", TCP).replace("cds_config: { ads: {} }", "cds_config: { path: /x }"),
    )
    .unwrap_err();
    assert_eq!(e.path(), "dynamic_resources.cds_config.path");
}

#[test]
fn initial_metadata_is_kept_and_bad_entries_are_named() {
    let with = |md: &str| {
        ads("GRPC", "", TCP).replace(
            "    - envoy_grpc: { cluster_name: xds }\n",
            &format!("    - envoy_grpc: {{ cluster_name: xds }}\n      initial_metadata: {md}\n"),
        )
    };
    let b = from_yaml_str(&with(
        "[{ key: X-Tenant, value: blue }, { key: x-b, value: '' }]",
    ))
    .unwrap();
    assert_eq!(
        b.dynamic_resources.unwrap().ads.initial_metadata,
        [
            ("x-tenant".into(), "blue".into()),
            ("x-b".into(), String::new())
        ],
        "keys are sent lower-cased, as Envoy's gRPC client does"
    );
    let md = "dynamic_resources.ads_config.grpc_services[0].initial_metadata";
    for (bad, path) in [
        ("[{ key: 'x tenant', value: a }]", format!("{md}[0].key")),
        (
            "[{ key: ok, value: a }, { value: a }]",
            format!("{md}[1].key"),
        ),
        ("[{ key: x-token-bin, value: a }]", format!("{md}[0].key")),
        ("[{ key: ':path', value: a }]", format!("{md}[0].key")),
        ("[{ key: x, value: \"a\\nb\" }]", format!("{md}[0].value")),
    ] {
        let e = from_yaml_str(&with(bad)).unwrap_err();
        assert_eq!(e.path(), path, "{bad}: {e}");
    }
}

/// A bootstrap with one tcp_proxy listener to the cluster `svc` whose fields are `body`.
pub(super) fn cluster(body: &str) -> String {
    format!(
        r#"static_resources:
  listeners:
  - name: l
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 1 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: t
          cluster: svc
  clusters:
  - name: svc
{body}"#
    )
}

#[test]
fn eds_cluster_needs_eds_cluster_config() {
    let e = from_yaml_str(&cluster("    type: EDS\n")).unwrap_err();
    assert_eq!(e.path(), "static_resources.clusters[0].eds_cluster_config");
    let e = from_yaml_str(&cluster(
        "    type: STATIC\n    eds_cluster_config: { eds_config: { ads: {} } }\n",
    ))
    .unwrap_err();
    assert_eq!(e.message(), "only for type EDS");
    from_yaml_str(&cluster(
        "    type: EDS\n    eds_cluster_config: { eds_config: { ads: {}, initial_fetch_timeout: 1s }, service_name: s }\n",
    ))
    .unwrap();
}

#[test]
fn every_endpoint_is_kept_with_its_priority_and_health_status() {
    let ep = |port: u16, extra: &str| {
        format!("        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }}\n{extra}")
    };
    let body = format!(
        "    type: EDS\n    eds_cluster_config: {{ eds_config: {{ ads: {{}} }} }}\n    load_assignment:\n      endpoints:\n      - locality: {{ zone: a }}\n        load_balancing_weight: 5\n        lb_endpoints:\n{}{}      - priority: 1\n        lb_endpoints:\n{}",
        ep(1001, "          health_status: UNHEALTHY\n"),
        ep(1002, "          health_status: DRAINING\n"),
        ep(1003, "          health_status: HEALTHY\n"),
    );
    let b = from_yaml_str(&cluster(&body)).unwrap();
    let eps: Vec<_> = b.clusters[0]
        .endpoints
        .iter()
        .map(|e| (e.address.clone(), e.priority, e.health))
        .collect();
    let ip = |port: u16| EndpointAddress::Ip(format!("127.0.0.1:{port}").parse().unwrap());
    assert_eq!(
        eps,
        [
            (ip(1001), 0, EndpointHealth::Unhealthy),
            (ip(1002), 0, EndpointHealth::Draining),
            (ip(1003), 1, EndpointHealth::Healthy)
        ],
        "the balancer, not the loader, decides which serve"
    );
    let e = from_yaml_str(&cluster(&body.replace("DRAINING", "SICK"))).unwrap_err();
    assert_eq!(
        e.path(),
        "static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[1].health_status"
    );
}

#[test]
fn google_grpc_target_tls_and_call_credentials_follow_envoys_factories() {
    let with =
        |svc: &str| ads("GRPC", "", TCP).replace("    - envoy_grpc: { cluster_name: xds }\n", svc);
    let google = |extra: &str| {
        with(&format!(
            "    - google_grpc:\n        target_uri: istiod.istio-system.svc:15012\n        stat_prefix: xds\n{extra}"
        ))
    };
    let file_plugin = "        - from_plugin:\n            name: envoy.grpc_credentials.file_based_metadata\n            typed_config:\n              \"@type\": type.googleapis.com/envoy.config.grpc_credential.v3.FileBasedMetadataConfig\n              secret_data: { filename: /var/run/secrets/tokens/istio-token }\n              header_prefix: 'Bearer '\n";
    let tls = "        channel_credentials: { ssl_credentials: { root_certs: { filename: /etc/ca.pem } } }\n";
    // The file-based factory: its plugin is honoured, access_token skipped (as Envoy).
    let b = from_yaml_str(&google(&format!(
        "{tls}        credentials_factory_name: envoy.grpc_credentials.file_based_metadata\n        call_credentials:\n{file_plugin}        - access_token: skipped\n"
    )))
    .unwrap();
    let g = b.dynamic_resources.unwrap().ads.google.unwrap();
    assert_eq!(g.target_uri, "istiod.istio-system.svc:15012");
    assert_eq!(g.root_certs, Some("/etc/ca.pem".into()));
    assert_eq!(
        g.call_metadata,
        [super::CallMetadata::File {
            key: "authorization".into(),
            prefix: "Bearer ".into(),
            path: "/var/run/secrets/tokens/istio-token".into(),
        }]
    );
    // The default factory: access_token honoured, the plugin skipped.
    let b = from_yaml_str(&google(&format!(
        "{tls}        call_credentials:\n{file_plugin}        - access_token: abc\n"
    )))
    .unwrap();
    let g = b.dynamic_resources.unwrap().ads.google.unwrap();
    assert_eq!(g.root_certs, Some("/etc/ca.pem".into()));
    assert_eq!(
        g.call_metadata,
        [super::CallMetadata::Static {
            key: "authorization".into(),
            value: "Bearer abc".into()
        }]
    );
    let gp = "dynamic_resources.ads_config.grpc_services[0]";
    for (bad, path) in [
        (
            with("    - google_grpc: { stat_prefix: xds }\n"),
            format!("{gp}.google_grpc.target_uri"),
        ),
        (
            with("    - google_grpc: { target_uri: 'a:1' }\n"),
            format!("{gp}.google_grpc.stat_prefix"),
        ),
        (
            with("    - envoy_grpc: { cluster_name: xds }\n      google_grpc: { target_uri: 'a:1', stat_prefix: x }\n"),
            gp.to_string(),
        ),
        (
            google("        channel_credentials: { ssl_credentials: { root_certs: { filename: /ca }, private_key: { filename: /k } } }\n"),
            format!("{gp}.google_grpc.channel_credentials.ssl_credentials.private_key"),
        ),
        (
            google("        channel_credentials: { google_default: {} }\n"),
            format!("{gp}.google_grpc.channel_credentials.google_default"),
        ),
        (
            google("        credentials_factory_name: envoy.grpc_credentials.aws_iam\n"),
            format!("{gp}.google_grpc.credentials_factory_name"),
        ),
        (
            google("        call_credentials: [{ google_compute_engine: {} }]\n"),
            format!("{gp}.google_grpc.call_credentials[0].google_compute_engine"),
        ),
        // Call credentials are never sent in plaintext over TCP.
        (
            google("        call_credentials: [{ access_token: abc }]\n"),
            format!("{gp}.google_grpc.channel_credentials"),
        ),
        (
            google(&format!(
                "        credentials_factory_name: envoy.grpc_credentials.file_based_metadata\n        call_credentials:\n{file_plugin}"
            )),
            format!("{gp}.google_grpc.channel_credentials"),
        ),
        (
            google(&format!("{tls}        call_credentials: [{{ access_token: \"a\\nb\" }}]\n")),
            format!("{gp}.google_grpc.call_credentials[0].access_token"),
        ),
        (
            with("    - google_grpc:\n        target_uri: unix:/run/xds.sock\n        stat_prefix: xds\n        channel_credentials: { ssl_credentials: { root_certs: { filename: /ca } } }\n"),
            format!("{gp}.google_grpc.channel_credentials.ssl_credentials"),
        ),
    ] {
        let e = from_yaml_str(&bad).unwrap_err();
        assert_eq!(e.path(), path, "{bad}: {e}");
    }
}
