//! The demo's L7 part: the seed's Kubeflow notebook route (`/notebook/default/sample-service/`
//! rewritten to `/`) served by the node agent's L7 engine (`sluice agent --config`), then
//! `sluice proxy-config route` on that pod (its admin, which the agent serves per pod) and
//! `sluice explain` for the same request, and the metrics line that counted it.

use std::{path::Path, process::Command};

use anyhow::Result;

use super::{out, read, step, SERVER_IP, VIP};

/// The seed's notebook path (the VirtualService's `uri.prefix`).
const NOTEBOOK: &str = "/notebook/default/sample-service/";

/// The Envoy bootstrap of the L7 part: `virtualOutbound` (15001) routes the notebook path of
/// `sample-service` (the ClusterIP `vip`) to `server` with the prefix rewritten to `/`.
pub fn config(vip: &str, server: &str) -> String {
    format!(
        r#"static_resources:
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
        std::fs::write(&cfg, config(VIP, SERVER_IP))?;
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

        step(&format!(
            "sluice proxy-config route {} (the pod's own admin, served by the agent; \
             SLUICE_CONTROL=<agent socket>)",
            self.pod
        ));
        print!(
            "{}",
            pod_admin_view(bin, &control, &["proxy-config", "route", &self.pod])?
        );
        step(&format!(
            "sluice explain {} {url} (the same pod's live config, through its admin)",
            self.pod
        ));
        print!(
            "{}",
            pod_admin_view(bin, &control, &["explain", &self.pod, &url])?
        );
        super::metrics::show(&metrics)?;

        step(&format!("unenroll: sluice unenroll --netns {}", self.pod));
        print!(
            "{}",
            out(bin, &["unenroll", "--netns", &self.pod, "--control", &ctl])?
        );
        self.stop_child("agent");
        Ok(())
    }
}

/// `sluice <args>` (proxy-config, explain) asking the agent at `control` for a node-mode pod's
/// admin.
fn pod_admin_view(bin: &Path, control: &Path, args: &[&str]) -> Result<String> {
    super::out_env(bin, args, &[("SLUICE_CONTROL", control)])
}
