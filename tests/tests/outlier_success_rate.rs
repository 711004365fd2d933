//! Success-rate and failure-percentage outlier ejection under Envoy 1.40 and under sluice, on
//! the same config: two round-robin endpoints, one answering 503 (or, for the local-origin
//! monitors, refusing connections); after the sweep that sees the interval's requests the
//! failing one is ejected (`/clusters` health flags and success rates) and traffic goes to the
//! other. The conformance suite cannot run this: its requests go to a
//! random first endpoint under round robin, and its expectations are per request.

use std::time::Duration;

use sluice_tests::{
    admin_run::start_text,
    conformance::proxy::free_ports,
    upstream::{
        harness::{curl, http_bootstrap, route_to, static_cluster},
        TestUpstream,
    },
};

/// Sweeps every second.
const INTERVAL: Duration = Duration::from_secs(1);

/// What a proxy did: the statuses of 20 requests (sorted), whether each endpoint was ejected
/// after the sweep, each endpoint's `success_rate` line, and the statuses after the sweep.
type Outcome = (Vec<u16>, [bool; 2], Vec<u16>);

fn run(outlier: &str, refused: bool, envoy: bool) -> (Outcome, String) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let flaky = rt.block_on(TestUpstream::start("flaky"));
    let good = rt.block_on(TestUpstream::start("good"));
    flaky
        .state
        .status
        .store(503, std::sync::atomic::Ordering::Relaxed);
    let [port, closed] = free_ports::<2>();
    // A refusing endpoint: a free loopback port nothing listens on.
    let flaky_port = if refused { closed } else { flaky.port() };
    let extra = format!("    outlier_detection: {outlier}\n");
    let cluster = static_cluster("pool", &[flaky_port, good.port()], &extra);
    let text = http_bootstrap(0, port, &route_to("pool"), &cluster, "").replacen(
        "port_value: 0 }",
        "port_value: ADMIN_PORT }",
        1,
    );
    let proxy = start_text("outlier_success_rate", &text, envoy);
    let url = format!("http://127.0.0.1:{port}/");
    let statuses = |n: usize| -> Vec<u16> {
        let mut v: Vec<u16> = (0..n).map(|_| curl(&["-s", &url]).0).collect();
        v.sort_unstable();
        v
    };
    // 20 requests, ten to each: the interval that holds most of them sees both endpoints.
    let before = statuses(20);
    std::thread::sleep(INTERVAL + Duration::from_millis(300));
    let clusters = curl(&["-s", &format!("http://{}/clusters", proxy.admin)]).2;
    let ejected = [flaky_port, good.port()].map(|p| {
        clusters.contains(&format!(
            "pool::127.0.0.1:{p}::health_flags::/failed_outlier_check"
        ))
    });
    let after = statuses(6);
    drop(proxy);
    let lines = clusters
        .lines()
        .filter(|l| l.contains("success_rate"))
        .map(|l| {
            l.replace(&flaky_port.to_string(), "FLAKY")
                .replace(&good.port().to_string(), "GOOD")
        })
        .collect::<Vec<_>>()
        .join("\n");
    ((before, ejected, after), lines)
}

#[test]
fn success_rate_and_failure_percentage_eject_as_under_envoy() {
    let want: Outcome = (
        [vec![200; 10], vec![503; 10]].concat(),
        [true, false],
        vec![200; 6],
    );
    for (outlier, refused) in [
        // Success rate: mean 50, stdev 50, threshold 50 - 0.5 x 50 = 25; the failing one (0)
        // is below it.
        (
            "{interval: 1s, success_rate_minimum_hosts: 2, success_rate_request_volume: 2, \
             success_rate_stdev_factor: 500, max_ejection_percent: 100, consecutive_5xx: 1000, \
             base_ejection_time: 30s}",
            false,
        ),
        // Failure percentage alone: 100 % failing >= 85 %.
        (
            "{interval: 1s, enforcing_success_rate: 0, enforcing_failure_percentage: 100, \
             failure_percentage_minimum_hosts: 1, failure_percentage_request_volume: 2, \
             max_ejection_percent: 100, consecutive_5xx: 1000, base_ejection_time: 30s}",
            false,
        ),
        // Split: refused connections fail the local-origin monitor, responses pass it.
        (
            "{interval: 1s, split_external_local_origin_errors: true, \
             consecutive_local_origin_failure: 1000, enforcing_local_origin_success_rate: 100, \
             success_rate_minimum_hosts: 2, success_rate_request_volume: 2, \
             success_rate_stdev_factor: 500, max_ejection_percent: 100, consecutive_5xx: 1000, \
             base_ejection_time: 30s}",
            true,
        ),
        (
            "{interval: 1s, split_external_local_origin_errors: true, \
             consecutive_local_origin_failure: 1000, enforcing_local_origin_success_rate: 0, \
             enforcing_failure_percentage_local_origin: 100, failure_percentage_minimum_hosts: 1, \
             failure_percentage_request_volume: 2, max_ejection_percent: 100, \
             consecutive_5xx: 1000, base_ejection_time: 30s}",
            true,
        ),
    ] {
        let (envoy, envoy_lines) = run(outlier, refused, true);
        assert_eq!(envoy, want, "Envoy 1.40's outcome ({outlier})");
        let (sluice, sluice_lines) = run(outlier, refused, false);
        assert_eq!(sluice, want, "sluice ({outlier})");
        // Both show the success rates of the sweep they saw last; the requests may straddle a
        // sweep in one run and not in the other, so the lines are only compared when both
        // proxies' last sweep saw both endpoints (average 50).
        if envoy_lines.contains("success_rate_average::50")
            && sluice_lines.contains("success_rate_average::50")
        {
            assert_eq!(sluice_lines, envoy_lines, "{outlier}");
        }
    }
}
