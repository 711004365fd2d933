//! A health check's intervals by result against a real Envoy 1.40 on the same YAML: two hosts,
//! one passing its checks and one answering 503. Until the cluster has traffic the passing
//! host is checked every `no_traffic_healthy_interval` and the failing one every
//! `no_traffic_interval`; once a request went through, every `interval` and
//! `unhealthy_interval`. The checks each host got in each phase are counted (both proxies run
//! at once on their own upstreams).

use std::{sync::atomic::Ordering, time::Duration};

use sluice_tests::{
    admin_run::{get, one_cluster_bootstrap, start_text},
    conformance::proxy::free_ports,
    upstream::TestUpstream,
};

const PHASE: Duration = Duration::from_millis(2_500);

fn config(port: u16, good: u16, bad: u16) -> String {
    let fields = "    health_checks:
    - timeout: 1s
      interval: 1s
      unhealthy_interval: 0.2s
      no_traffic_interval: 0.25s
      no_traffic_healthy_interval: 1.25s
      unhealthy_threshold: 3
      healthy_threshold: 1
      http_health_check: {path: /hc}
";
    one_cluster_bootstrap(port, "pool", fields, &[good, bad])
}

fn checks(u: &TestUpstream) -> usize {
    let r = u.state.requests.lock().unwrap();
    r.iter().filter(|r| r.path == "/hc").count()
}

#[test]
fn checks_come_at_envoys_intervals_by_result_and_traffic() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut counts = Vec::new();
    let mut proxies = Vec::new();
    let mut ports = Vec::new();
    let mut ups = Vec::new();
    for envoy in [true, false] {
        let good = rt.block_on(TestUpstream::start("good"));
        let bad = rt.block_on(TestUpstream::start("bad"));
        bad.state.status.store(503, Ordering::SeqCst);
        let [port] = free_ports::<1>();
        let cfg = config(port, good.port(), bad.port());
        proxies.push(start_text("hc-intervals", &cfg, envoy));
        ports.push(port);
        ups.push((good, bad));
    }
    // Both proxies start together; their first checks come at once.
    let at = |i: usize| (checks(&ups[i].0), checks(&ups[i].1));
    let start = [at(0), at(1)];
    std::thread::sleep(PHASE);
    let quiet = [at(0), at(1)];
    for port in &ports {
        let (status, body) = get(&format!("127.0.0.1:{port}"), "GET", "/x");
        assert_eq!((status, body.as_str()), (200, "good"));
    }
    std::thread::sleep(PHASE);
    let busy = [at(0), at(1)];
    for (i, who) in ["envoy", "sluice"].iter().enumerate() {
        let no_traffic = (quiet[i].0 - start[i].0, quiet[i].1 - start[i].1);
        let traffic = (busy[i].0 - quiet[i].0, busy[i].1 - quiet[i].1);
        eprintln!(
            "{who}: checks without traffic (good, bad) {no_traffic:?}, with traffic {traffic:?}"
        );
        counts.push((no_traffic, traffic));
    }
    drop(proxies);
    // 2.5 s phases: the passing host every 1.25 s then 1 s (2-3 checks), the failing one every
    // 0.25 s then 0.2 s (10-13 checks). Each proxy within them, and within 2 of the other.
    for (i, (quiet, busy)) in counts.iter().enumerate() {
        assert!(
            (1..=3).contains(&quiet.0) && (8..=11).contains(&quiet.1),
            "{i}: {quiet:?}"
        );
        assert!(
            (2..=4).contains(&busy.0) && (10..=14).contains(&busy.1),
            "{i}: {busy:?}"
        );
    }
    let close = |a: usize, b: usize| a.abs_diff(b) <= 2;
    let (e, s) = (counts[0], counts[1]);
    assert!(
        close(e.0 .0, s.0 .0)
            && close(e.0 .1, s.0 .1)
            && close(e.1 .0, s.1 .0)
            && close(e.1 .1, s.1 .1),
        "envoy {e:?} sluice {s:?}"
    );
}
