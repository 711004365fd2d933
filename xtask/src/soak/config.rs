//! The soak's L7 config for the agent's `--config`: the `virtualOutbound` / `virtualInbound`
//! listeners of tests/tests/l7_capture.rs (host `svc.test` + prefix `/api/` -> a STATIC cluster
//! with a prefix rewrite and an added header, everything else through `PassthroughCluster`),
//! plus WebSocket upgrades and a tcp_proxy chain for the raw TCP echo port. Each reload writes a
//! new version (the added header and a route change with it); [`rejected`] is a file the agent
//! must refuse while the running version keeps serving.

use std::{fs, path::Path};

use anyhow::{Context as _, Result};

/// The server netns's raw TCP echo port (tcp_proxy) and WebSocket echo port (HCM upgrade).
pub const TCP_ECHO_PORT: u16 = 7000;
pub const WS_PORT: u16 = 7001;
/// The virtual host whose `/api/` routes go to the STATIC cluster (prefix rewritten to `/`).
pub const SVC_HOST: &str = "svc.test";

/// Version `v` of the config for upstream `server_ip` (nginx on 80, the echo servers).
pub fn good(server_ip: &str, v: u64) -> String {
    // Odd versions add a second route, even ones drop it: each reload changes the route table.
    let extra = if v % 2 == 1 {
        "              - match: { prefix: \"/extra/\" }\n                route: { cluster: svc, prefix_rewrite: \"/\" }\n"
    } else {
        ""
    };
    format!(
        r#"static_resources:
  listeners:
  - name: virtualOutbound
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 15001 }} }}
    use_original_dst: true
    filter_chains:
    - filter_chain_match: {{ destination_port: {TCP_ECHO_PORT} }}
      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: echo
          cluster: echo
    - filters:
{hcm}
          stat_prefix: outbound
          upgrade_configs:
          - upgrade_type: websocket
          route_config:
            virtual_hosts:
            - name: svc
              domains: ["{SVC_HOST}"]
              routes:
{extra}              - match: {{ prefix: "/api/" }}
                route: {{ cluster: svc, prefix_rewrite: "/" }}
                request_headers_to_add:
                - header: {{ key: x-soak-version, value: "{v}" }}
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: PassthroughCluster }}
{router}
  - name: virtualInbound
    address: {{ socket_address: {{ address: 0.0.0.0, port_value: 15006 }} }}
    use_original_dst: true
    filter_chains:
    - filters:
{hcm}
          stat_prefix: inbound
          route_config:
            virtual_hosts:
            - name: inbound
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: InboundPassthroughCluster }}
{router}
  clusters:
  - name: InboundPassthroughCluster
    type: ORIGINAL_DST
    lb_policy: CLUSTER_PROVIDED
    connect_timeout: 1s
  - name: PassthroughCluster
    type: ORIGINAL_DST
    lb_policy: CLUSTER_PROVIDED
    connect_timeout: 1s
{svc}
{echo}
"#,
        router = ROUTER.trim_end(),
        hcm = HCM.trim_end(),
        svc = static_cluster("svc", server_ip, 80),
        echo = static_cluster("echo", server_ip, TCP_ECHO_PORT),
    )
}

/// The head of an HTTP connection manager entry in a `filters:` list.
const HCM: &str = r#"      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
"#;

/// The HCM's router filter.
const ROUTER: &str = r#"          http_filters:
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
"#;

/// A STATIC cluster entry with one endpoint.
fn static_cluster(name: &str, ip: &str, port: u16) -> String {
    format!(
        "  - name: {name}\n    type: STATIC\n    connect_timeout: 1s\n    load_assignment:\n      \
         cluster_name: {name}\n      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ \
         socket_address: {{ address: {ip}, port_value: {port} }} }} }} }}] }}]"
    )
}

/// A config the agent must refuse: a route to a cluster that does not exist.
pub fn rejected(server_ip: &str) -> String {
    good(server_ip, 0).replace(
        "cluster: svc, prefix_rewrite",
        "cluster: nope, prefix_rewrite",
    )
}

/// Writes `text` to `path` atomically (a temp file renamed over it).
pub fn write(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, text).with_context(|| format!("write {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))
}
