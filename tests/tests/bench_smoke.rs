//! CI smoke test of the bench harness: `cargo xtask bench --quick` runs every path (direct,
//! iptables and eBPF capture with sluice, the L7 `sluice proxy` and Envoy behind iptables, and the
//! two-hop variants with a server-side proxy too) and each one produced numbers.
//! It asserts nothing about the numbers themselves (the machine is shared; see xtask/src/bench.rs).

use std::{path::Path, process::Command};

/// Metrics every path must have; the proxy ones only where a proxy process exists.
const EVERY_PATH: &[&str] = &[
    "open.1000x16.p50_us",
    "open.1000x16.p99_us",
    "open.1000x16.p999_us",
    "open.1000x16.achieved_rps",
    "wrk.h1.rps",
    "h2.rps",
    "churn.cps",
    "churn.conntrack_per_conn",
    "iperf.gbps",
    "sweep./64.rps",
    "sweep./64k.rps",
];
const PROXY_PATHS: &[&str] = &["open.1000x16.cpu_ms_per_1k", "open.1000x16.rss_kib"];
/// Metrics of the two-hop paths (a reduced set: no h2load, iperf3, sweep or conntrack count).
const TWO_HOP: &[&str] = &[
    "open.1000x16.p50_us",
    "open.1000x16.p99_us",
    "open.1000x16.p999_us",
    "open.1000x16.achieved_rps",
    "open.1000x16.cpu_ms_per_1k",
    "open.1000x16.rss_kib",
    "wrk.h1.rps",
    "churn.cps",
];
const PATHS: &[&str] = &[
    "direct",
    "iptables+sluice",
    "iptables+sluice-l7",
    "ebpf+sluice-sidecar",
    "ebpf+sluice-node",
    "ebpf+sluice-node-l7",
    "ebpf+sluice-nofast",
    "iptables+envoy",
];
const TWO_HOP_PATHS: &[&str] = &[
    "2hop:iptables+sluice",
    "2hop:ebpf+sluice-sidecar",
    "2hop:iptables+envoy",
];

#[test]
fn bench_quick_every_path_produces_numbers() {
    sluice_tests::require_root();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = std::env::temp_dir().join(format!("sl-bench-smoke-{}", std::process::id()));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(&cargo)
        .current_dir(root)
        .args(["xtask", "bench", "--quick", "--profile", "dev", "--out"])
        .arg(&out)
        .status()
        .expect("running cargo xtask bench --quick");
    assert!(st.success(), "cargo xtask bench --quick failed ({st})");
    let text = std::fs::read_to_string(out.join("report.json")).expect("report.json");
    let report: serde_json::Value = serde_json::from_str(&text).expect("report.json is JSON");
    assert!(out.join("report.md").exists() && out.join("chart.svg").exists());
    let samples = report["samples"].as_array().expect("samples");
    let metric = |path: &str, metric: &str| {
        let v = samples
            .iter()
            .find(|s| s["path"] == path && s["metric"] == metric)
            .and_then(|s| s["value"].as_f64())
            .unwrap_or_else(|| panic!("path {path}: no {metric} in report.json"));
        assert!(v.is_finite() && v >= 0.0, "path {path}: {metric} = {v}");
        if metric.ends_with("rps") || metric.ends_with("cps") || metric.ends_with("gbps") {
            assert!(v > 0.0, "path {path}: {metric} = 0");
        }
    };
    for path in TWO_HOP_PATHS {
        for m in TWO_HOP {
            metric(path, m);
        }
    }
    assert!(
        report["two_hop"].as_str().is_some(),
        "report.json: no two_hop summary"
    );
    for path in PATHS {
        let proxy = if *path == "direct" {
            &[][..]
        } else {
            PROXY_PATHS
        };
        // iperf3 through the sk_msg fast path may end in ENOMEM (no backpressure in the kernel's
        // ingress redirect): that outcome is recorded as `iperf.enomem` instead of a rate.
        let has = |m: &str| {
            samples
                .iter()
                .any(|s| s["path"] == *path && s["metric"] == m && s["value"].as_f64().is_some())
        };
        assert!(
            has("iperf.gbps") || has("iperf.enomem"),
            "path {path}: neither iperf.gbps nor iperf.enomem"
        );
        for m in EVERY_PATH
            .iter()
            .filter(|m| **m != "iperf.gbps")
            .chain(proxy)
        {
            metric(path, m);
        }
    }
    let _ = std::fs::remove_dir_all(&out);
}
