//! The soak's L7 config for the agent's `--config`: the config shape of the L7 tests
//! (tests/fixtures/l7-capture.yaml, read here too: `virtualInbound` and the passthrough
//! clusters) with the soak's `virtualOutbound` (host `svc.test` + prefix `/api/` -> a STATIC
//! cluster with a prefix rewrite and an added header, everything else through
//! `PassthroughCluster`, WebSocket upgrades, a tcp_proxy chain for the raw TCP echo port). Each reload writes a
//! new version (the added header and a route change with it); [`rejected`] is a file the agent
//! must refuse while the running version keeps serving.

use std::{fs, path::Path};

use anyhow::{Context as _, Result};

/// The server netns's raw TCP echo port (tcp_proxy), WebSocket echo port (HCM upgrade) and
/// server-speaks-first greeter port (no chain of its own: passthrough after detection).
pub const TCP_ECHO_PORT: u16 = 7000;
pub const WS_PORT: u16 = 7001;
pub const GREETER_PORT: u16 = 7002;
/// The virtual host whose `/api/` routes go to the STATIC cluster (prefix rewritten to `/`).
pub const SVC_HOST: &str = "svc.test";

/// The config the soak shares with the L7 tests (tests/fixtures/l7-capture.yaml: Istio's
/// virtualOutbound / virtualInbound, the passthrough clusters, the `svc` cluster).
const FIXTURE: &str = include_str!("../../../tests/fixtures/l7-capture.yaml");

/// Version `v` of the config for upstream `server_ip` (nginx on 80, the echo servers): the
/// fixture with the soak's parts at its marker lines (the tcp_proxy chain of the echo port,
/// WebSocket upgrades, the `/api/` route with `x-soak-version: v`, the echo cluster).
pub fn good(server_ip: &str, v: u64) -> String {
    // Odd versions add a second route, even ones drop it: each reload changes the route table.
    let extra = if v % 2 == 1 {
        "              - match: { prefix: \"/extra/\" }\n                route: { cluster: svc, prefix_rewrite: \"/\" }\n"
    } else {
        ""
    };
    let part = |name: &str| -> String {
        match name {
            "OUTBOUND_CHAINS" => format!(
                r#"    - filter_chain_match: {{ destination_port: {TCP_ECHO_PORT} }}
      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: echo
          cluster: echo
"#
            ),
            "OUTBOUND_HCM" => "          upgrade_configs:\n          - upgrade_type: websocket\n".into(),
            "SVC_ROUTES" => format!(
                r#"{extra}              - match: {{ prefix: "/api/" }}
                route: {{ cluster: svc, prefix_rewrite: "/" }}
                request_headers_to_add:
                - header: {{ key: x-soak-version, value: "{v}" }}
"#
            ),
            "CLUSTERS" => format!(
                "  - name: echo\n    type: STATIC\n    connect_timeout: 1s\n    load_assignment:\n      \
                 cluster_name: echo\n      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ \
                 socket_address: {{ address: {server_ip}, port_value: {TCP_ECHO_PORT} }} }} }} }}] }}]\n"
            ),
            _ => String::new(),
        }
    };
    let text = FIXTURE
        .replace("SVC_ADDRESS", server_ip)
        .replace("SVC_PORT", "80");
    let mut out = String::new();
    for line in text.lines() {
        match line
            .trim()
            .strip_prefix("# @")
            .and_then(|m| m.strip_suffix('@'))
        {
            Some(marker) => out.push_str(&part(marker)),
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
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
