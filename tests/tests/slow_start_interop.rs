//! Slow start (`round_robin_lb_config.slow_start_config`, a DestinationRule's
//! `loadBalancer.warmup`) against a real Envoy 1.40 on the same YAML: a host that comes back
//! healthy takes a small share of the traffic at first and its full share once the window has
//! passed. Three upstreams, one failing its health checks until the proxies have run past the
//! window they start in (every host is new then); requests are counted by the upstream that
//! answered.

use std::{
    collections::BTreeMap,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use sluice_tests::{
    admin_run::{get, one_cluster_bootstrap, start_text},
    conformance::proxy::free_ports,
    upstream::TestUpstream,
};

const WINDOW_MS: u64 = 3_000;

fn config(port: u16, ups: &[u16; 3]) -> String {
    let fields = format!(
        r#"    round_robin_lb_config:
      slow_start_config:
        slow_start_window: {window}s
        aggression: {{default_value: 1.0, runtime_key: "("}}
        min_weight_percent: {{value: 10}}
    health_checks: [{{timeout: 1s, interval: 0.1s, no_traffic_interval: 0.1s, unhealthy_threshold: 1, healthy_threshold: 1, http_health_check: {{path: /healthz}}}}]
"#,
        window = WINDOW_MS as f64 / 1000.0
    );
    one_cluster_bootstrap(port, "warm", &fields, ups)
}

/// `n` requests, counted by the upstream that answered (its name is the body).
fn burst(port: u16, n: usize) -> BTreeMap<String, usize> {
    let mut by = BTreeMap::new();
    for _ in 0..n {
        let (status, body) = get(&format!("127.0.0.1:{port}"), "GET", "/x");
        assert_eq!(status, 200, "{body}");
        *by.entry(body).or_insert(0) += 1;
    }
    by
}

fn share(by: &BTreeMap<String, usize>, name: &str) -> f64 {
    let total: usize = by.values().sum();
    by.get(name).copied().unwrap_or(0) as f64 / total as f64
}

#[test]
fn a_host_back_from_failing_health_checks_warms_up_as_under_envoy() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    for envoy in [true, false] {
        let who = if envoy { "envoy" } else { "sluice" };
        let ups = ["a1", "a2", "b"].map(|n| rt.block_on(TestUpstream::start(n)));
        let b = &ups[2];
        b.state.status.store(503, Ordering::SeqCst);
        let [port] = free_ports::<1>();
        let p = start_text(
            "slow-start",
            &config(port, &ups.each_ref().map(|u| u.port())),
            envoy,
        );
        // Every host starts its window with the proxy: let it pass with b failing.
        std::thread::sleep(Duration::from_millis(WINDOW_MS + 500));
        let before = burst(port, 60);
        assert_eq!(
            share(&before, "b"),
            0.0,
            "{who}: b is unhealthy: {before:?}"
        );
        // b passes its next check (every 0.1 s) and starts its window.
        b.state.status.store(200, Ordering::SeqCst);
        let back = Instant::now();
        std::thread::sleep(Duration::from_millis(300));
        let warming = burst(port, 300);
        let took = back.elapsed();
        assert!(
            took < Duration::from_millis(WINDOW_MS / 2),
            "{who}: the burst must stay early in the window ({took:?})"
        );
        // Weight x max(t / window, 0.1) with t under half the window: b's share of three
        // hosts is at most 0.5 / 2.5 = 20 %, against a third without slow start.
        let s = share(&warming, "b");
        assert!(
            s > 0.0 && s < 0.2,
            "{who}: b's share while warming: {s} ({warming:?})"
        );
        std::thread::sleep(Duration::from_millis(WINDOW_MS + 300).saturating_sub(back.elapsed()));
        let warm = burst(port, 300);
        eprintln!(
            "{who}: b's share {:.3} while warming, {:.3} past its window",
            share(&warming, "b"),
            share(&warm, "b")
        );
        let s = share(&warm, "b");
        assert!(
            (0.23..0.43).contains(&s),
            "{who}: b's share past its window: {s} ({warm:?})"
        );
        drop(p);
    }
}
