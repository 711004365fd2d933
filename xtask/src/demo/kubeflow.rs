//! The demo's L7 part: the seed's Kubeflow notebook route (`/notebook/default/sample-service/`
//! rewritten to `/`) served by the node agent's L7 engine (`sluice agent --config`), then
//! `sluice proxy-config route` and `sluice explain` for the same request, and the metrics line
//! that counted it.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result};

use super::{out, read, step, wait_until, SERVER_IP, VIP};

/// The seed's notebook path (the VirtualService's `uri.prefix`).
const NOTEBOOK: &str = "/notebook/default/sample-service/";

/// The Envoy bootstrap of the L7 part: `virtualOutbound` (15001) routes the notebook path of
/// `sample-service` (the ClusterIP `vip`) to `server` with the prefix rewritten to `/`;
/// `admin` adds an admin block (for `sluice proxy`, whose `/config_dump` proxy-config reads).
pub fn config(vip: &str, server: &str, admin: bool) -> String {
    let admin = if admin {
        "admin:\n  address: {socket_address: {address: 127.0.0.1, port_value: 15000}}\n"
    } else {
        ""
    };
    format!(
        r#"{admin}static_resources:
  listeners:
  - name: virtualOutbound
    address: {{socket_address: {{address: 127.0.0.1, port_value: 15001}}}}
    use_original_dst: true
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: outbound_0.0.0.0_80
          route_config:
            name: "80"
            virtual_hosts:
            - name: sample-service.default.svc.cluster.local:80
              domains: [sample-service.default.svc.cluster.local, sample-service, sample-service.default, "{vip}"]
              routes:
              - match: {{path: /healthz}}
                direct_response: {{status: 200, body: {{inline_string: ok}}}}
              - match: {{prefix: /notebook/default/sample-service/}}
                metadata:
                  filter_metadata:
                    istio: {{config: /apis/networking.istio.io/v1alpha3/namespaces/default/virtual-service/sample-virtualservice}}
                route:
                  cluster: "outbound|80||sample-service.default.svc.cluster.local"
                  prefix_rewrite: /
                  timeout: 0s
                request_headers_to_add:
                - header: {{key: x-kubeflow-userid, value: user@example.com}}
                  append_action: OVERWRITE_IF_EXISTS_OR_ADD
            - name: allow_any
              domains: ["*"]
              routes:
              - match: {{prefix: /}}
                route: {{cluster: PassthroughCluster}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
  - name: virtualInbound
    address: {{socket_address: {{address: 0.0.0.0, port_value: 15006}}}}
    use_original_dst: true
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: InboundPassthroughCluster
          cluster: InboundPassthroughCluster
  clusters:
  - name: "outbound|80||sample-service.default.svc.cluster.local"
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: "outbound|80||sample-service.default.svc.cluster.local"
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: {server}, port_value: 80}}}}}}
  - name: PassthroughCluster
    type: ORIGINAL_DST
    lb_policy: CLUSTER_PROVIDED
    connect_timeout: 1s
  - name: InboundPassthroughCluster
    type: ORIGINAL_DST
    lb_policy: CLUSTER_PROVIDED
    connect_timeout: 1s
"#
    )
}

impl super::Demo {
    /// The L7 part: agent with `--config`, the notebook request, proxy-config, explain.
    pub(super) fn kubeflow(&mut self, bin: &Path, check: &dyn Fn() -> Result<()>) -> Result<()> {
        let cfg = self.tmp.join("kubeflow.yaml");
        std::fs::write(&cfg, config(VIP, SERVER_IP, false))?;
        let control = self.tmp.join("agent-l7.sock");
        let log = self.tmp.join("agent-l7.log");
        step(&format!(
            "L7: sluice agent --config kubeflow.yaml (node mode: 15001 -> virtualOutbound; \
             {NOTEBOOK} on {VIP} -> {SERVER_IP}:80, rewritten to /)"
        ));
        let cfg_s = cfg.to_string_lossy().into_owned();
        let metrics = super::metrics::free_addr()?;
        let extra = ["--config", &cfg_s, "--metrics-addr", &metrics];
        self.start_agent(bin, &control, &log, &extra, check)?;
        let ctl = control.to_string_lossy().into_owned();
        step(&format!(
            "enroll the client pod: sluice enroll --netns {}",
            self.pod
        ));
        print!(
            "{}",
            out(bin, &["enroll", "--netns", &self.pod, "--control", &ctl])?
        );

        let url = format!("http://{VIP}{NOTEBOOK}");
        step(&format!("curl {url} inside the client pod"));
        let seen = read(&self.tmp.join("server.log")).len();
        let o = Command::new("sh")
            .args(["-c", "echo $$ > \"$0\" && exec \"$@\""])
            .arg(self.cgroup.join("cgroup.procs"))
            .args(["ip", "netns", "exec", &self.pod, "curl", "-sS", "-m", "5"])
            .args(["-w", "  [HTTP %{http_code}]\n", &url])
            .output()?;
        print!("{}", String::from_utf8_lossy(&o.stdout));
        eprint!("{}", String::from_utf8_lossy(&o.stderr));
        check()?;
        step("what the notebook service saw (path rewritten to /)");
        print!("{}", &read(&self.tmp.join("server.log"))[seen..]);

        step(
            "sluice proxy-config route -f dump.json (node mode has no per-pod admin yet: the dump \
             is the same config's /config_dump from `sluice proxy`, run in the server netns)",
        );
        let dump = self.dump(bin)?;
        print!(
            "{}",
            out(
                bin,
                &["proxy-config", "route", "-f", &dump.to_string_lossy()]
            )?
        );
        step(&format!("sluice explain -c kubeflow.yaml {url}"));
        print!("{}", out(bin, &["explain", "-c", &cfg_s, &url])?);
        super::metrics::show(&metrics)?;

        step(&format!("unenroll: sluice unenroll --netns {}", self.pod));
        print!(
            "{}",
            out(bin, &["unenroll", "--netns", &self.pod, "--control", &ctl])?
        );
        self.stop_child("agent");
        Ok(())
    }

    /// `/config_dump` of the L7 config (with an admin block) from `sluice proxy` in the
    /// server netns, saved to a file; the proxy is stopped again.
    fn dump(&mut self, bin: &Path) -> Result<PathBuf> {
        let cfg = self.tmp.join("kubeflow-admin.yaml");
        std::fs::write(&cfg, config(VIP, SERVER_IP, true))?;
        let proxy = Command::new("ip")
            .args(["netns", "exec", &self.server])
            .arg(bin)
            .args(["proxy", "-c"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.tmp.join("proxy.log"))?)
            .spawn()
            .context("starting sluice proxy")?;
        self.children.push(("proxy".into(), proxy));
        let dump = self.tmp.join("config_dump.json");
        let fetch = || {
            Command::new("ip")
                .args(["netns", "exec", &self.server, "curl", "-sf", "-o"])
                .arg(&dump)
                .arg("http://127.0.0.1:15000/config_dump")
                .status()
                .is_ok_and(|s| s.success())
        };
        let got = wait_until(fetch, "sluice proxy's admin");
        self.stop_child("proxy");
        got.map_err(|e| anyhow::anyhow!("{e}\n{}", read(&self.tmp.join("proxy.log"))))?;
        Ok(dump)
    }
}
