//! The detector on a real cluster: which results count, when a count is a detection, and the
//! `enforcing_*` percents.

use super::{record, HostResult};
use crate::upstream::{from_config::cluster_spec, Cluster};

/// A static cluster of 10 hosts with `outlier` as its `outlier_detection` (max 100% ejected).
fn cluster(outlier: &str) -> std::sync::Arc<Cluster> {
    let endpoints: String = (1..=10)
        .map(|i| format!("{{endpoint: {{address: {{socket_address: {{address: 10.0.0.{i}, port_value: 80}}}}}}}},"))
        .collect();
    let yaml = crate::testing::bootstrap_yaml(&[("/", "svc")], &[])
        + &format!(
            "  - name: svc\n    type: STATIC\n    outlier_detection: {{max_ejection_percent: 100, {outlier}}}\n    load_assignment:\n      cluster_name: svc\n      endpoints: [{{lb_endpoints: [{endpoints}]}}]\n"
        );
    let b = crate::config::from_yaml_str(&yaml).unwrap_or_else(|e| panic!("{e}"));
    let spec = cluster_spec(b.cluster("svc").expect("svc"));
    Cluster::build(spec, &crate::server::stats::StatsStore::default()).expect("cluster")
}

/// Feeds `results` to the first host; whether it ends ejected.
fn ejected_after(c: &Cluster, results: &[HostResult]) -> bool {
    let host = c.all_hosts()[0].clone();
    let spec = c.spec.outlier.expect("outlier detection");
    for r in results {
        record(c, &spec, &host, *r);
    }
    host.is_ejected(crate::upstream::now_ms())
}

const S500: HostResult = HostResult::Status(500);
const S503: HostResult = HostResult::Status(503);
const OK: HostResult = HostResult::Status(200);
const CONNECT: HostResult = HostResult::LocalOrigin { timeout: false };

#[tokio::test]
async fn consecutive_5xx_counts_5xx_and_local_origin_failures_until_a_success() {
    let c = cluster("consecutive_5xx: 3");
    assert!(!ejected_after(&c, &[S500, S500, OK, S500, S500]));
    assert!(ejected_after(&c, &[S500]), "3 in a row: 500, 500, 500");
    let c = cluster("consecutive_5xx: 3");
    assert!(ejected_after(
        &c,
        &[CONNECT, S503, HostResult::LocalOrigin { timeout: true }]
    ));
}

#[tokio::test]
async fn zero_thresholds_and_enforcing_zero_never_eject() {
    assert!(!ejected_after(&cluster("consecutive_5xx: 0"), &[S500; 20]));
    let c = cluster("consecutive_5xx: 2, enforcing_consecutive_5xx: 0");
    assert!(!ejected_after(&c, &[S500; 20]));
    // istiod's DestinationRule shape: 5xx enforced, success rate off.
    let c =
        cluster("consecutive_5xx: 2, enforcing_consecutive_5xx: 100, enforcing_success_rate: 0");
    assert!(ejected_after(&c, &[S500, S500]));
}

#[tokio::test]
async fn gateway_errors_are_enforced_only_when_asked() {
    // Default: gateway detection at 5, enforcing 0; 5xx at 5 ejects.
    let c = cluster("consecutive_5xx: 100");
    assert!(!ejected_after(&c, &[S503; 10]));
    let c = cluster("consecutive_5xx: 100, consecutive_gateway_failure: 2, enforcing_consecutive_gateway_failure: 100");
    assert!(
        !ejected_after(&c, &[S503, S500, S503]),
        "a 500 ends a gateway run"
    );
    assert!(ejected_after(&c, &[S503]));
}

#[tokio::test]
async fn split_local_origin_failures_count_apart() {
    let c = cluster("consecutive_5xx: 2, split_external_local_origin_errors: true, consecutive_local_origin_failure: 3");
    // Local-origin failures do not count as 5xx, and a response ends their run.
    assert!(!ejected_after(&c, &[CONNECT, CONNECT, OK, CONNECT, S500]));
    assert!(ejected_after(&c, &[CONNECT, CONNECT, CONNECT]));
    let c = cluster(
        "consecutive_5xx: 10, split_external_local_origin_errors: true, consecutive_local_origin_failure: 2, enforcing_consecutive_local_origin_failure: 0",
    );
    assert!(!ejected_after(&c, &[CONNECT; 6]));
}

#[tokio::test]
async fn a_detection_restarts_its_count() {
    // Envoy's onConsecutiveErrorWorker: a detection on a host in service restarts its count.
    // (An ejection long enough to be seen: a 1 ms one could end before the check on a loaded
    // machine.)
    let c = cluster("consecutive_5xx: 2, base_ejection_time: 30s, interval: 10s");
    let host = c.all_hosts()[0].clone();
    assert!(ejected_after(&c, &[S500, S500]));
    assert_eq!(
        host.consecutive_5xx
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[test]
fn percents_above_100_are_refused_naming_the_field() {
    for (field, value) in [
        ("enforcing_success_rate", 101),
        ("enforcing_local_origin_success_rate", 200),
        ("enforcing_consecutive_5xx", 101),
        ("failure_percentage_threshold", 101),
        ("enforcing_failure_percentage", 101),
    ] {
        let yaml = crate::testing::bootstrap_yaml(&[("/", "svc")], &[])
            + &format!(
                "  - name: svc\n    type: STATIC\n    outlier_detection: {{{field}: {value}}}\n"
            );
        let e = crate::config::from_yaml_str(&yaml).expect_err(field);
        assert!(
            e.to_string()
                .contains(&format!("outlier_detection.{field}")),
            "{e}"
        );
    }
}

/// Feeds each host `n` results (host 0 failing them all), then evaluates the sweep one
/// interval (1 s) after the cluster's start; which hosts end ejected.
fn swept(c: &Cluster, n: usize, hosts_fed: usize) -> Vec<bool> {
    let spec = c.spec.outlier.expect("outlier detection");
    let hosts = c.all_hosts();
    for (i, h) in hosts.iter().enumerate().take(hosts_fed) {
        for _ in 0..n {
            record(c, &spec, h, if i == 0 { S503 } else { OK });
        }
    }
    let at = c.outlier_epoch_ms + 1000;
    crate::upstream::success_rate::sweep_if_due(c, &spec, at);
    hosts.iter().map(|h| h.is_ejected(at)).collect()
}

#[tokio::test]
async fn a_sweep_ejects_below_the_success_rate_threshold() {
    let c = cluster("interval: 1s, consecutive_5xx: 1000, success_rate_request_volume: 10");
    let ejected = swept(&c, 10, 10);
    assert_eq!(ejected.iter().filter(|e| **e).count(), 1);
    assert!(ejected[0]);
    // Rates 0 and nine 100: mean 90, stdev 30, threshold 90 - 1.9 x 30 = 33.
    let (mean, threshold) = c.outlier_sweeps.success_rate(false);
    assert_eq!(mean, 90.0);
    assert!((threshold - 33.0).abs() < 1e-9, "{threshold}");
    assert_eq!(c.all_hosts()[1].sr_external.last(), 100.0);
}

#[tokio::test]
async fn too_few_hosts_or_requests_eject_nobody() {
    // Four hosts with traffic, five needed.
    let c = cluster("interval: 1s, consecutive_5xx: 1000, success_rate_request_volume: 10");
    assert!(swept(&c, 10, 4).iter().all(|e| !e));
    assert_eq!(c.outlier_sweeps.success_rate(false), (-1.0, -1.0));
    // Nine requests each, ten needed.
    let c = cluster("interval: 1s, consecutive_5xx: 1000, success_rate_request_volume: 10");
    assert!(swept(&c, 9, 10).iter().all(|e| !e));
}

#[tokio::test]
async fn failure_percentage_ejects_only_when_enforced() {
    let fp = "interval: 1s, consecutive_5xx: 1000, enforcing_success_rate: 0, \
              failure_percentage_request_volume: 10";
    let c = cluster(fp);
    assert!(
        swept(&c, 10, 10).iter().all(|e| !e),
        "enforcing 0 by default"
    );
    let c = cluster(&format!("{fp}, enforcing_failure_percentage: 100"));
    let ejected = swept(&c, 10, 10);
    assert!(ejected[0] && ejected.iter().filter(|e| **e).count() == 1);
}
