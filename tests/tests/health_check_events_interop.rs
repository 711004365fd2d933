//! The health check event log (`event_log_path`, `always_log_health_check_failures` and
//! `_success`) against a
//! real Envoy 1.40 on the same YAML: three hosts, one passing, one answering 503 and one that
//! refuses connections; then the passing one answers 503 for a while and comes back. The
//! distinct events each proxy wrote (the time masked, the hosts named) must be the same JSON.

use std::{collections::BTreeSet, sync::atomic::Ordering, time::Duration};

use sluice_tests::{
    admin_run::{one_cluster_bootstrap, start_text},
    conformance::proxy::free_ports,
    upstream::TestUpstream,
};

fn config(port: u16, hosts: &[u16], log: &str) -> String {
    let fields = format!(
        "    health_checks:
    - {{timeout: 0.5s, interval: 0.1s, no_traffic_interval: 0.1s, unhealthy_threshold: 1, healthy_threshold: 1,
       always_log_health_check_failures: true, always_log_health_check_success: true, event_log_path: {log}, http_health_check: {{path: /hc}}}}
"
    );
    one_cluster_bootstrap(port, "pool", &fields, hosts)
}

#[test]
fn health_check_events_are_envoys() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut logs = Vec::new();
    for envoy in [true, false] {
        let good = rt.block_on(TestUpstream::start("good"));
        let bad = rt.block_on(TestUpstream::start("bad"));
        bad.state.status.store(503, Ordering::SeqCst);
        let [port, closed] = free_ports::<2>();
        let log = std::env::temp_dir().join(format!(
            "sluice-hc-events-{}-{envoy}.log",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&log);
        let hosts = [good.port(), bad.port(), closed];
        let p = start_text(
            "hc-events",
            &config(port, &hosts, &log.display().to_string()),
            envoy,
        );
        std::thread::sleep(Duration::from_millis(800));
        good.state.status.store(503, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(500));
        good.state.status.store(200, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(500));
        drop(p);
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_file(&log);
        let names = [(hosts[0], "good"), (hosts[1], "bad"), (hosts[2], "closed")];
        let events: BTreeSet<String> = text
            .lines()
            .map(|l| {
                let mut l = l.to_string();
                if let Some(at) = l.find("\"timestamp\":\"") {
                    let end = l[at + 13..].find('"').map_or(l.len(), |e| at + 13 + e);
                    l.replace_range(at + 13..end, "<time>");
                }
                for (port, name) in names {
                    l = l.replace(
                        &format!("\"port_value\":{port},"),
                        &format!("\"port_value\":\"{name}\","),
                    );
                }
                l
            })
            .collect();
        let who = if envoy { "envoy" } else { "sluice" };
        eprintln!(
            "{who}: {} lines, {} distinct",
            text.lines().count(),
            events.len()
        );
        for e in &events {
            eprintln!("  {e}");
        }
        logs.push(events);
    }
    let envoy = &logs[0];
    assert!(
        envoy.iter().any(|e| e.contains("eject_unhealthy_event")),
        "{envoy:?}"
    );
    assert!(
        envoy.iter().any(|e| e.contains("\"first_check\":false}")),
        "{envoy:?}"
    );
    assert_eq!(&logs[1], envoy, "sluice vs Envoy");
}
