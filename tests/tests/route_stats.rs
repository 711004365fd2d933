//! A route's `stat_prefix` (Istio's VirtualService `statPrefix`): the per-route counters under
//! `vhost.<virtual host>.route.<stat_prefix>.` against a real Envoy 1.40 on the same YAML and the
//! same requests: upstream requests and their codes, retries (a success, the limit exceeded),
//! a route timeout, a direct response (counted nowhere), a route without a prefix (no stats).

use std::sync::atomic::Ordering;

use sluice_tests::{
    admin_run::{get, hcm_bootstrap, start_text},
    conformance::proxy::free_ports,
    upstream::{harness::curl, TestUpstream},
};

fn config(port: u16, upstream: u16) -> String {
    let routes = r#"route_config:
            virtual_hosts:
            - name: vh
              domains: ["*"]
              routes:
              - {match: {prefix: /direct}, direct_response: {status: 200}, stat_prefix: direct}
              - {match: {prefix: /retry}, route: {cluster: c, retry_policy: {retry_on: 5xx, num_retries: 1}}, stat_prefix: retried}
              - {match: {prefix: /slow}, route: {cluster: c, timeout: 0.2s}, stat_prefix: slow}
              - {match: {prefix: /plain}, route: {cluster: c}}
              - {match: {prefix: /}, route: {cluster: c}, stat_prefix: main}"#;
    let cluster = format!(
        "  - {{name: c, type: STATIC, connect_timeout: 1s, load_assignment: {{cluster_name: c, endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {upstream}}}}}}}}}]}}]}}}}\n"
    );
    hcm_bootstrap(port, routes, "", &cluster)
}

/// The route counter lines of `/stats` and of `/stats/prometheus`, each sorted (the
/// `upstream_rq_time` histogram left out: sluice keeps no histograms).
fn vhost_stats(admin: &str) -> Vec<String> {
    let (status, body) = get(admin, "GET", "/stats");
    assert_eq!(status, 200);
    let mut lines: Vec<String> = body
        .lines()
        .filter(|l| l.starts_with("vhost.") && !l.contains(".upstream_rq_time:"))
        .map(str::to_string)
        .collect();
    lines.sort();
    let (status, body) = get(admin, "GET", "/stats/prometheus");
    assert_eq!(status, 200);
    let mut prom: Vec<String> = body
        .lines()
        .filter(|l| l.starts_with("envoy_vhost_route_") && !l.contains("upstream_rq_time"))
        .map(str::to_string)
        .collect();
    prom.sort();
    lines.extend(prom);
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_stat_prefix_counters_are_envoys() {
    let up = TestUpstream::start("c").await;
    let [e_port, s_port] = free_ports::<2>();
    let upstream = up.addr.port();
    let mut seen = Vec::new();
    for (who, port, envoy) in [("envoy", e_port, true), ("sluice", s_port, false)] {
        let proxy = start_text("route-stats", &config(port, upstream), envoy);
        let before = vhost_stats(&proxy.admin);
        let st = up.state.clone();
        let ask = move |path: &'static str| {
            let url = format!("http://127.0.0.1:{port}{path}");
            tokio::task::spawn_blocking(move || curl(&["-s", url.as_str()]).0)
        };
        assert_eq!(ask("/main").await.unwrap(), 200, "{who}");
        st.status.store(404, Ordering::SeqCst);
        assert_eq!(ask("/main").await.unwrap(), 404, "{who}");
        st.status.store(200, Ordering::SeqCst);
        st.fail_next.store(1, Ordering::SeqCst);
        assert_eq!(ask("/retry").await.unwrap(), 200, "{who}: retried once");
        st.fail_next.store(2, Ordering::SeqCst);
        assert_eq!(
            ask("/retry").await.unwrap(),
            503,
            "{who}: retries exhausted"
        );
        st.delay_ms.store(600, Ordering::SeqCst);
        assert_eq!(ask("/slow").await.unwrap(), 504, "{who}: route timeout");
        st.delay_ms.store(0, Ordering::SeqCst);
        assert_eq!(ask("/direct").await.unwrap(), 200, "{who}");
        assert_eq!(ask("/plain").await.unwrap(), 200, "{who}");
        // The timed-out request's late answer lands before the stats are read.
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
        let after = vhost_stats(&proxy.admin);
        if std::env::var("ROUTE_STATS_DUMP").is_ok() {
            eprintln!(
                "{who} before:\n{}\n{who} after:\n{}",
                before.join("\n"),
                after.join("\n")
            );
        }
        seen.push((who, before, after));
    }
    let (_, e_before, e_after) = &seen[0];
    let (_, s_before, s_after) = &seen[1];
    assert_eq!(s_before, e_before, "counters before any request");
    assert_eq!(s_after, e_after, "counters after the requests");
}
