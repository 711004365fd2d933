//! An endpoint's `health_check_config` against a real Envoy 1.40 on the same YAML: one endpoint
//! checked on another port (`port_value`) with its own host name (`hostname`, which wins over
//! the health check's `host`), one checked at another address (`address`) that fails, and one
//! with `disable_active_health_check` whose address serves traffic but would fail a check. The
//! `/clusters` flags, where the checks went and the Host they carried must be the same.

use std::{sync::atomic::Ordering, time::Duration};

use sluice_tests::{
    admin_run::{hcm_bootstrap, host_health_flags, start_text},
    conformance::proxy::free_ports,
    upstream::TestUpstream,
};

/// The servers of one run: each endpoint's own, and where its checks go.
struct Servers {
    /// Endpoint 1's address, and its checks' port.
    one: TestUpstream,
    one_checks: TestUpstream,
    /// Endpoint 2's address, and its checks' address (answers 503).
    two: TestUpstream,
    two_checks: TestUpstream,
    /// Endpoint 3's address: answers 503, so a check of it would fail.
    three: TestUpstream,
}

async fn servers() -> Servers {
    let s = Servers {
        one: TestUpstream::start("one").await,
        one_checks: TestUpstream::start("one-checks").await,
        two: TestUpstream::start("two").await,
        two_checks: TestUpstream::start("two-checks").await,
        three: TestUpstream::start("three").await,
    };
    s.two_checks.state.status.store(503, Ordering::SeqCst);
    s.three.state.status.store(503, Ordering::SeqCst);
    s
}

fn config(port: u16, s: &Servers) -> String {
    let ep = |p: u16, hc: &str| {
        format!(
            "{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {p}}}}}, health_check_config: {hc}}}}}"
        )
    };
    let eps = [
        ep(
            s.one.port(),
            &format!(
                "{{port_value: {}, hostname: checks.one.example}}",
                s.one_checks.port()
            ),
        ),
        ep(
            s.two.port(),
            &format!(
                "{{address: {{socket_address: {{address: 127.0.0.1, port_value: {}}}}}}}",
                s.two_checks.port()
            ),
        ),
        ep(s.three.port(), "{disable_active_health_check: true}"),
    ]
    .join(", ");
    let cluster = format!(
        "  - name: pool
    type: STATIC
    connect_timeout: 1s
    health_checks:
    - {{timeout: 1s, interval: 0.2s, no_traffic_interval: 0.2s, unhealthy_threshold: 1, healthy_threshold: 1,
       http_health_check: {{path: /hc, host: check.example}}}}
    load_assignment:
      cluster_name: pool
      endpoints: [{{lb_endpoints: [{eps}]}}]
"
    );
    let routes = r#"route_config: {virtual_hosts: [{name: v, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: pool}}]}]}"#;
    hcm_bootstrap(port, routes, "", &cluster)
}

/// The Host headers of the checks `u` got (deduplicated), or `none`.
fn check_hosts(u: &TestUpstream) -> String {
    let r = u.state.requests.lock().unwrap();
    let mut hosts: Vec<String> = r
        .iter()
        .filter(|r| r.path == "/hc")
        .map(|r| {
            r.headers
                .get("host")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_string()
        })
        .collect();
    hosts.dedup();
    if hosts.is_empty() {
        "none".into()
    } else {
        hosts.join(",")
    }
}

#[test]
fn endpoint_health_check_config_is_envoys() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut rows = Vec::new();
    for envoy in [true, false] {
        let s = rt.block_on(servers());
        let [port] = free_ports::<1>();
        let p = start_text("ep-hc-config", &config(port, &s), envoy);
        std::thread::sleep(Duration::from_millis(1_000));
        let flags = |u: &TestUpstream| host_health_flags(&p.admin, "pool", u.port());
        let row = format!(
            "flags one={} two={} three={}; checks at one={} one-checks={} two={} two-checks={} three={}",
            flags(&s.one),
            flags(&s.two),
            flags(&s.three),
            check_hosts(&s.one),
            check_hosts(&s.one_checks),
            check_hosts(&s.two),
            check_hosts(&s.two_checks),
            check_hosts(&s.three),
        );
        // `/config_dump?include_eds`: each endpoint's `health_check_config`, ports named.
        let (_, dump) = sluice_tests::admin_run::get(&p.admin, "GET", "/config_dump?include_eds");
        let v: serde_json::Value = serde_json::from_str(&dump).expect("config dump JSON");
        let mut found: Vec<String> = Vec::new();
        collect_endpoints(&v, &mut found);
        let mut hc: Vec<String> = found
            .into_iter()
            .map(|mut e| {
                for (u, label) in [
                    (&s.one, "<one>"),
                    (&s.one_checks, "<one-checks>"),
                    (&s.two, "<two>"),
                    (&s.two_checks, "<two-checks>"),
                    (&s.three, "<three>"),
                ] {
                    e = e.replace(&u.port().to_string(), label);
                }
                e
            })
            .collect();
        hc.sort();
        let row = format!("{row}; dump {hc:?}");
        eprintln!("{}: {row}", if envoy { "envoy" } else { "sluice" });
        rows.push(row);
        drop(p);
    }
    assert_eq!(rows[0], rows[1], "sluice differs from Envoy");
    let flags_part = rows[0].split("; dump").next().unwrap().to_string();
    assert_eq!(
        flags_part,
        "flags one=healthy two=/failed_active_hc three=healthy; checks at one=none \
         one-checks=checks.one.example two=none two-checks=check.example three=none"
    );
}

/// Every `lb_endpoints[].endpoint` under `v` as `address-port health_check_config`.
fn collect_endpoints(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            if let (Some(addr), Some(hc)) = (
                m.get("address")
                    .and_then(|a| a.pointer("/socket_address/port_value")),
                m.get("health_check_config"),
            ) {
                out.push(format!("{addr} {hc}"));
            }
            for x in m.values() {
                collect_endpoints(x, out);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_endpoints(x, out)),
        _ => {}
    }
}
