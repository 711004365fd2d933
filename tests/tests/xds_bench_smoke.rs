//! CI smoke test of the xDS scale bench driver (`cargo xtask bench --xds` runs it at full size):
//! a small push to sluice and to Envoy on one management server, both ADS flavours, a few
//! EDS-only changes, and a report with every row filled.

use sluice_tests::{sluice_cli::sluice_bin, upstream::harness::TempDir};

#[test]
fn xds_bench_small_run_reports_both_proxies() {
    let out = TempDir::new("xds-bench-smoke");
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_xds-bench"))
        .args([
            "--reps",
            "1",
            "--vhosts",
            "20",
            "--clusters",
            "40",
            "--eds-changes",
            "4",
            "--sluice",
        ])
        .arg(sluice_bin())
        .arg("--out")
        .arg(&out.0)
        .status()
        .expect("running xds-bench");
    assert!(st.success(), "xds-bench failed ({st})");
    let report = std::fs::read_to_string(out.path("xds.md")).unwrap();
    for needle in [
        "## State-of-the-world ADS",
        "## Delta ADS",
        "| full push: sent -> probe served by the new config (ms) |",
        "| RSS after the push (MiB) |",
        "| EDS-only changes, all 5 pooled: server send -> ACK p50 / p90 / max (ms) |",
        "Types pushed for the EDS-only change: sluice EDS, Envoy EDS",
    ] {
        assert!(report.contains(needle), "no {needle:?} in:\n{report}");
    }
    let raw: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path("xds.json")).unwrap()).unwrap();
    assert_eq!(raw.as_array().map(Vec::len), Some(4), "{raw}");
    for s in raw.as_array().unwrap() {
        let rss = s["sample"]["rss_after_kib"].as_u64().unwrap();
        assert!(rss > 1024, "an RSS was measured: {s}");
        assert!(
            s["sample"]["full_serving_ms"].as_f64().unwrap() > 0.0,
            "{s}"
        );
        let more = s["sample"]["eds_more_send_to_ack_ms"].as_array().unwrap();
        assert_eq!(
            more.len(),
            4,
            "every further EDS-only change was ACKed: {s}"
        );
    }
}
