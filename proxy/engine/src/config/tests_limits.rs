//! Regression tests for hostile or careless configs (issue 13): every one must be a clear
//! rejection naming its field, found without unbounded work.

use std::time::{Duration, Instant};

use super::tests::{expect_err, with_routes, ROUTES_OK};
use super::*;

/// `with_routes(ROUTES_OK)` with `extra` appended to cluster `a` (indented under it).
fn with_cluster_a(extra: &str) -> String {
    let indented: String = extra.lines().map(|l| format!("    {l}\n")).collect();
    with_routes(ROUTES_OK).replacen("  - name: b\n", &format!("{indented}  - name: b\n"), 1)
}

/// Runs `f` and fails when it takes more than `limit` (an unbounded loop would hang the test).
#[track_caller]
fn within<T>(limit: Duration, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let out = f();
    assert!(t.elapsed() < limit, "took {:?}", t.elapsed());
    out
}

#[test]
fn maglev_table_size_near_u64_max_is_rejected_at_once() {
    for size in [
        u64::MAX,
        u64::MAX - 1,
        18446744073709551557,
        5_000_012,
        4_294_967_311,
    ] {
        let yaml = with_cluster_a(&format!(
            "lb_policy: MAGLEV\nmaglev_lb_config: {{ table_size: {size} }}"
        ));
        within(Duration::from_millis(500), || {
            expect_err(
                &yaml,
                "static_resources.clusters[0].maglev_lb_config.table_size",
                "prime number <= 5000011",
            )
        });
    }
    let ok = with_cluster_a("lb_policy: MAGLEV\nmaglev_lb_config: { table_size: 5000011 }");
    within(Duration::from_millis(500), || from_yaml_str(&ok)).expect("Envoy's largest table");
}

#[test]
fn ring_hash_sizes_are_bounded_like_envoy() {
    let yaml = with_cluster_a(
        "lb_policy: RING_HASH\nring_hash_lb_config: { minimum_ring_size: 1024, maximum_ring_size: 18446744073709551615 }",
    );
    expect_err(
        &yaml,
        "static_resources.clusters[0].ring_hash_lb_config.maximum_ring_size",
        "at most 8388608",
    );
}
