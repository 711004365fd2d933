//! Resource builders for the xDS tests: an ADS bootstrap for `sluice proxy` (or Envoy) and
//! listeners, route configurations, clusters and load assignments as Envoy JSON, ready for
//! [`crate::xds_server::Snapshot::from_json`].

use serde_json::{json, Value};

use crate::xds_server::{CDS, EDS, LDS, RDS};

/// Type URL of the HTTP connection manager.
pub const HCM: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

/// An ADS bootstrap (`api_type` GRPC or DELTA_GRPC) with admin on `admin` and the ADS server at
/// `ads` (an HTTP/2 static cluster, as Envoy needs), LDS/CDS initial fetch timeout 5 s.
pub fn bootstrap(admin: u16, ads: std::net::SocketAddr, api_type: &str) -> String {
    let addr = format!(
        "socket_address: {{ address: {}, port_value: {} }}",
        ads.ip(),
        ads.port()
    );
    bootstrap_to(admin, &addr, api_type)
}

/// The bootstrap with the ADS cluster's endpoint `address` (a socket_address or a pipe).
pub fn bootstrap_to(admin: u16, address: &str, api_type: &str) -> String {
    format!(
        r#"node: {{ id: sidecar~127.0.0.1~test.default~default.svc.cluster.local, cluster: test, metadata: {{ NAMESPACE: default }} }}
admin:
  address:
    socket_address: {{ address: 127.0.0.1, port_value: {admin} }}
dynamic_resources:
  ads_config:
    api_type: {api_type}
    transport_api_version: V3
    grpc_services:
    - envoy_grpc: {{ cluster_name: xds-grpc }}
  lds_config: {{ ads: {{}}, resource_api_version: V3, initial_fetch_timeout: 5s }}
  cds_config: {{ ads: {{}}, resource_api_version: V3, initial_fetch_timeout: 5s }}
static_resources:
  clusters:
{}"#,
        grpc_cluster("xds-grpc", address)
    )
}

/// A static HTTP/2 cluster `name` (a gRPC service) with one endpoint at `address` (a
/// socket_address or a pipe), as a `static_resources.clusters` list entry.
pub fn grpc_cluster(name: &str, address: &str) -> String {
    format!(
        r#"  - name: {name}
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http2_protocol_options: {{}} }}
    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              {address}
"#
    )
}

/// `http_filters: [router]`.
pub fn router() -> Value {
    json!([{"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}])
}

/// A listener on 127.0.0.1:`port` with one HCM whose other fields are `hcm`.
pub fn listener(name: &str, port: u16, hcm: Value) -> (&'static str, Value) {
    let mut tc = hcm;
    tc["@type"] = json!(HCM);
    tc["stat_prefix"] = json!(name);
    tc["http_filters"] = router();
    (
        LDS,
        json!({"name": name,
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                "typed_config": tc}]}]}),
    )
}

/// A tcp_proxy listener `name` on 127.0.0.1:`port` to `cluster`.
pub fn tcp_listener(
    name: &str,
    port: u16,
    cluster: &str,
    stat_prefix: &str,
) -> (&'static str, Value) {
    (
        LDS,
        json!({"name": name,
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.tcp_proxy",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                    "stat_prefix": stat_prefix, "cluster": cluster}}]}]}),
    )
}

/// HCM fields naming the RDS route configuration `route` over ADS.
pub fn rds(route: &str) -> Value {
    json!({"rds": {"route_config_name": route, "config_source": {"ads": {}, "resource_api_version": "V3"}}})
}

/// A route configuration `name` with one virtual host `*`: `(prefix, cluster)` rules in order.
pub fn routes(name: &str, rules: &[(&str, &str)]) -> (&'static str, Value) {
    let routes: Vec<Value> = rules
        .iter()
        .map(
            |(prefix, cluster)| json!({"match": {"prefix": prefix}, "route": {"cluster": cluster}}),
        )
        .collect();
    (
        RDS,
        json!({"name": name, "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]}),
    )
}

/// A cluster of type EDS whose assignment (named after it) comes over ADS.
pub fn eds_cluster(name: &str) -> (&'static str, Value) {
    (
        CDS,
        json!({"name": name, "type": "EDS", "connect_timeout": "1s",
            "eds_cluster_config": {"eds_config": {"ads": {}, "resource_api_version": "V3"}}}),
    )
}

/// A STATIC cluster with one endpoint 127.0.0.1:`port`.
pub fn static_cluster(name: &str, port: u16) -> (&'static str, Value) {
    (
        CDS,
        json!({"name": name, "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}}),
    )
}

/// A ClusterLoadAssignment `name` with one locality and an endpoint per port.
pub fn cla(name: &str, ports: &[u16]) -> (&'static str, Value) {
    let eps: Vec<Value> = ports
        .iter()
        .map(|p| json!({"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}}))
        .collect();
    (
        EDS,
        json!({"cluster_name": name, "endpoints": [{"locality": {"zone": "z1"}, "lb_endpoints": eps}]}),
    )
}

/// The base the xDS tests start from: listener `web` on `port` (HCM with RDS `routes`), route
/// configuration `routes` sending `/` to the EDS cluster `backend`, `backend`'s endpoint on
/// `upstream`; then `extra`.
pub fn web_backend(
    port: u16,
    upstream: u16,
    extra: Vec<(&'static str, Value)>,
) -> Vec<(&'static str, Value)> {
    let mut items = vec![
        listener("web", port, rds("routes")),
        routes("routes", &[("/", "backend")]),
        eds_cluster("backend"),
        cla("backend", &[upstream]),
    ];
    items.extend(extra);
    items
}

/// The EDS cluster of [`pod_snapshot`]'s `svc.test` route.
pub const SVC_CLUSTER: &str = "outbound|80||svc.test";

/// One pod's snapshot: `virtualOutbound` -> RDS `out` -> `svc.test` `/api` rewritten to
/// `rewrite`, to the EDS cluster whose one endpoint is `backend`. The resources carry what
/// istiod sets by default on every sidecar (an audit of its generators): the listener's
/// `max_connections_to_accept_per_socket_event: 1`, `istio.stats` and `istio.alpn` as plain
/// Anys of Istio's own types before the router, the default retry policy on the route, and on
/// the cluster `alt_stat_name` with the `;` delimiter and HttpProtocolOptions with
/// `use_downstream_protocol_config` and an `idle_timeout`.
pub fn pod_snapshot(
    version: &str,
    backend: std::net::SocketAddr,
    rewrite: &str,
) -> crate::xds_server::Snapshot {
    let mut tc = rds("out");
    tc["@type"] = json!(HCM);
    tc["stat_prefix"] = json!("outbound");
    let mut filters = vec![
        json!({"name": "istio.alpn", "typed_config": {"@type":
            "type.googleapis.com/istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig",
            "alpn_override": [
                {"upstream_protocol": "HTTP10", "alpn_override": ["istio-http/1.0", "istio", "http/1.0"]},
                {"upstream_protocol": "HTTP11", "alpn_override": ["istio-http/1.1", "istio", "http/1.1"]},
                {"upstream_protocol": "HTTP2", "alpn_override": ["istio-h2", "istio", "h2"]}]}}),
        json!({"name": "istio.stats", "typed_config": {"@type": "type.googleapis.com/stats.PluginConfig"}}),
    ];
    filters.extend(router().as_array().cloned().unwrap_or_default());
    tc["http_filters"] = json!(filters);
    let listener = json!({"name": "virtualOutbound", "use_original_dst": true,
        "max_connections_to_accept_per_socket_event": 1,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 15001}},
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
            "typed_config": tc}]}]});
    let retry = json!({"retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
        "num_retries": 2, "retriable_status_codes": [503], "host_selection_retry_max_attempts": 5,
        "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}}]});
    let route = json!({"name": "out", "virtual_hosts": [{"name": "svc", "domains": ["svc.test"],
        "routes": [{"match": {"prefix": "/api"},
            "route": {"cluster": SVC_CLUSTER, "prefix_rewrite": rewrite, "retry_policy": retry}}]}]});
    let (cds, mut cluster) = eds_cluster(SVC_CLUSTER);
    cluster["alt_stat_name"] = json!(format!("{SVC_CLUSTER};"));
    cluster["typed_extension_protocol_options"] = json!({
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "common_http_protocol_options": {"idle_timeout": "3600s"},
            "use_downstream_protocol_config": {"http_protocol_options": {}, "http2_protocol_options": {}}}});
    let cla = json!({"cluster_name": SVC_CLUSTER, "endpoints": [{"lb_endpoints": [{"endpoint":
        {"address": {"socket_address": {"address": backend.ip().to_string(),
            "port_value": backend.port()}}}}]}]});
    crate::xds_server::Snapshot::from_json(
        version,
        &[(LDS, listener), (RDS, route), (cds, cluster), (EDS, cla)],
    )
}
