//! The HTTP health check filter (`envoy.filters.http.health_check`) and the admin's
//! `/healthcheck/fail` / `/healthcheck/ok` against a real Envoy 1.40 on the same YAML: a
//! front proxy answering `/healthz` itself, by the health of its clusters
//! (`cluster_min_healthy_percentages`: enough, too few, a missing cluster), in pass-through mode
//! with a `cache_time`; then the server failing its health checks and back. Status, body, the
//! filter's headers, `/ready`, the access log (a `not_health_check_filter` logger and one of
//! everything), the filter's counters and the names of the cluster's health checker stats must
//! be Envoy's.

use std::time::Duration;

use sluice_tests::{
    admin_run::{get, hcm_listener, start_text, TempLog},
    conformance::{
        client::{send, Request},
        proxy::free_ports,
    },
    upstream::TestUpstream,
};

/// The response headers compared.
const HEADERS: &[&str] = &[
    "connection",
    "content-length",
    "content-type",
    "x-envoy-upstream-healthchecked-cluster",
    "x-envoy-immediate-health-check-fail",
    "x-envoy-degraded",
];

fn listener(name: &str, port: u16, filter: &str, log: &str) -> String {
    let fields = format!(
        r#"          access_log:
          - {{name: all, typed_config: {{"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: {log}, log_format: {{text_format_source: {{inline_string: "all {name} %REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS%\n"}}}}}}}}
          - {{name: app, filter: {{not_health_check_filter: {{}}}}, typed_config: {{"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: {log}, log_format: {{text_format_source: {{inline_string: "app {name} %REQ(:PATH)% %RESPONSE_CODE%\n"}}}}}}}}
          http_filters:
          - {{name: envoy.filters.http.health_check, typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck, {filter}}}}}
          - {{name: envoy.filters.http.router, typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}}}
          route_config: {{virtual_hosts: [{{name: v, domains: ["*"], routes: [{{match: {{prefix: /healthz}}, direct_response: {{status: 200, body: {{inline_string: passed-on}}}}}}, {{match: {{prefix: /}}, route: {{cluster: pool}}}}]}}]}}
"#
    );
    hcm_listener(name, port, &fields)
}

fn config(ports: [u16; 5], good: u16, bad: u16, log: &str) -> String {
    let hz = r#"headers: [{name: ":path", string_match: {exact: /healthz}}]"#;
    let listeners = [
        listener("plain", ports[0], &format!("pass_through_mode: false, {hz}"), log),
        listener(
            "enough",
            ports[1],
            &format!("pass_through_mode: false, {hz}, cluster_min_healthy_percentages: {{pool: {{value: 40}}}}"),
            log,
        ),
        listener(
            "too_few",
            ports[2],
            &format!("pass_through_mode: false, {hz}, cluster_min_healthy_percentages: {{pool: {{value: 60.5}}}}"),
            log,
        ),
        listener(
            "missing",
            ports[3],
            &format!("pass_through_mode: false, {hz}, cluster_min_healthy_percentages: {{nowhere: {{value: 1}}}}"),
            log,
        ),
        listener(
            "cached",
            ports[4],
            &format!("pass_through_mode: true, cache_time: 30s, {hz}"),
            log,
        ),
    ]
    .concat();
    format!(
        "admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: ADMIN_PORT}}}}}}
node: {{id: front-1, cluster: front-proxy}}
static_resources:
  listeners:
{listeners}  clusters:
  - name: pool
    type: STATIC
    connect_timeout: 1s
    health_checks:
    - {{timeout: 1s, interval: 0.2s, no_traffic_interval: 0.2s, unhealthy_threshold: 1, healthy_threshold: 1, http_health_check: {{path: /hc}}}}
    load_assignment:
      cluster_name: pool
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {good}}}}}}}}}, {{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {bad}}}}}}}}}]}}]
"
    )
}

fn call(port: u16, path: &str) -> String {
    let req = Request {
        method: "GET",
        path,
        host: Some("front.example"),
        headers: &[],
        body: None,
        http10: false,
        preamble: None,
    };
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let r = send(addr, &req, Duration::from_secs(3)).expect("an answer");
    let kept = r.kept(HEADERS);
    format!(
        "{path} {} {kept:?} {:?}",
        r.status,
        String::from_utf8_lossy(&r.body)
    )
}

#[test]
fn the_health_check_filter_answers_as_envoys() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut runs = Vec::new();
    for envoy in [true, false] {
        let who = if envoy { "envoy" } else { "sluice" };
        let good = rt.block_on(TestUpstream::start("good"));
        let bad = rt.block_on(TestUpstream::start("bad"));
        bad.state
            .status
            .store(503, std::sync::atomic::Ordering::SeqCst);
        let log = TempLog::new("hcf", envoy);
        let ports = free_ports::<5>();
        let p = start_text(
            "hc-filter",
            &config(ports, good.port(), bad.port(), log.path()),
            envoy,
        );
        // The pool's first checks: one host passes, one fails (50 % healthy).
        std::thread::sleep(Duration::from_millis(800));
        let mut lines = Vec::new();
        for (i, name) in ["plain", "enough", "too_few", "missing", "cached"]
            .iter()
            .enumerate()
        {
            lines.push(format!("{name}: {}", call(ports[i], "/healthz")));
        }
        // Within the cache window: the cached answer, not the route's.
        lines.push(format!("cached again: {}", call(ports[4], "/healthz")));
        lines.push(format!("plain app: {}", call(ports[0], "/app")));
        let post = |path: &str| get(&p.admin, "POST", path);
        lines.push(format!(
            "fail: {:?} ready {:?}",
            post("/healthcheck/fail"),
            get(&p.admin, "GET", "/ready")
        ));
        lines.push(format!("plain failed: {}", call(ports[0], "/healthz")));
        lines.push(format!("plain app failed: {}", call(ports[0], "/app")));
        lines.push(format!(
            "ok: {:?} ready {:?}",
            post("/healthcheck/ok"),
            get(&p.admin, "GET", "/ready")
        ));
        lines.push(format!("plain again: {}", call(ports[0], "/healthz")));
        lines.push(format!(
            "GET fail: {}",
            get(&p.admin, "GET", "/healthcheck/fail").0
        ));
        let (_, stats) = get(&p.admin, "GET", "/stats");
        let mut counters: Vec<&str> = stats
            .lines()
            .filter(|l| {
                l.starts_with("http.")
                    && !l.starts_with("http.admin.")
                    && (l.contains(".health_check.")
                        || l.contains(".downstream_rq_total:")
                        || l.contains("xx:"))
                    && !l.ends_with(": 0")
            })
            .collect();
        counters.sort_unstable();
        lines.push(format!("counters: {counters:?}"));
        // The cluster's health checker stats: Envoy's names, zeros shown, one host healthy
        // (the counts themselves depend on timing).
        let checker: Vec<String> = stats
            .lines()
            .filter(|l| l.starts_with("cluster.pool.health_check."))
            .map(|l| match l.split_once(": ") {
                Some((k, v)) if k.ends_with(".healthy") || v == "0" => l.to_string(),
                Some((k, _)) => format!("{k}: <n>"),
                None => l.to_string(),
            })
            .collect();
        lines.push(format!("checker: {checker:?}"));
        std::thread::sleep(Duration::from_millis(300));
        drop(p);
        lines.push(format!("log: {:?}", log.sorted_lines()));
        for l in &lines {
            eprintln!("{who}: {l}");
        }
        runs.push(lines);
    }
    for (e, s) in runs[0].iter().zip(&runs[1]) {
        assert_eq!(e, s, "sluice differs from Envoy");
    }
    assert_eq!(runs[0].len(), runs[1].len());
}
