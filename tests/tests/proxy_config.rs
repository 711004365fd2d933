//! `sluice proxy-config` golden tests: the seed's Kubeflow gateway and a sidecar-shaped config,
//! each view in each output format, read from sluice's admin and from Envoy 1.40's on the same
//! YAML. Tables must equal the golden files and be the same for both proxies (the `all` view
//! differs only in its `Envoy Version:` line). `UPDATE_GOLDEN=1` rewrites the golden files.

use std::process::Command;

use sluice_tests::{
    admin_run::{fixtures, start},
    sluice_cli::sluice_bin,
};

fn run(args: &[&str]) -> String {
    let out = Command::new(sluice_bin())
        .arg("proxy-config")
        .args(args)
        .output()
        .expect("run sluice proxy-config");
    assert!(
        out.status.success(),
        "sluice proxy-config {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The table's lines without the `Envoy Version:` line, sorted: Envoy lists its static route
/// configurations in hash-map order (it changes run to run), which istioctl keeps for
/// non-numeric names.
fn lines(s: &str) -> Vec<&str> {
    let mut v: Vec<&str> = s
        .lines()
        .filter(|l| !l.starts_with("Envoy Version:"))
        .collect();
    v.sort_unstable();
    v
}

fn golden(name: &str, got: &str) {
    let path = fixtures().join("golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().expect("dir")).expect("golden dir");
        std::fs::write(&path, got).expect("write golden");
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert_eq!(got, want, "{name} differs from {}", path.display());
}

#[test]
fn views_match_goldens_and_envoy() {
    for fixture in ["kubeflow_gateway", "sidecar"] {
        let envoy = start(&format!("{fixture}.yaml"), true);
        let sluice = start(&format!("{fixture}.yaml"), false);
        for view in ["listener", "route", "cluster", "endpoint", "all"] {
            for fmt in ["short", "json", "yaml"] {
                if view == "all" && fmt != "short" {
                    continue; // the whole dump: compared by tests/tests/admin.rs
                }
                let s = run(&[view, &sluice.admin, "-o", fmt]);
                let e = run(&[view, &envoy.admin, "-o", fmt]);
                golden(&format!("{fixture}.{view}.{fmt}"), &s);
                if fmt == "short" {
                    assert_eq!(lines(&s), lines(&e), "{fixture} {view}: sluice vs envoy");
                } else if view != "endpoint" {
                    // Resources as the dumps hold them: equal as documents.
                    let parse = |t: &str| -> serde_json::Value {
                        if fmt == "json" {
                            serde_json::from_str(t).expect("json")
                        } else {
                            serde_norway::from_str(t).expect("yaml")
                        }
                    };
                    let sorted = |t: &str| -> Vec<String> {
                        let mut v: Vec<String> = parse(t)
                            .as_array()
                            .expect("list")
                            .iter()
                            .map(|r| r.to_string())
                            .collect();
                        v.sort();
                        v
                    };
                    assert_eq!(
                        sorted(&s),
                        sorted(&e),
                        "{fixture} {view} -o {fmt}: sluice vs envoy"
                    );
                }
            }
        }
        // A saved dump (-f) gives the same tables as the live admin, also Envoy's dump.
        let dir = std::env::temp_dir().join(format!("sluice-pc-{}-{fixture}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let (_, body) =
            sluice_tests::admin_run::get(&envoy.admin, "GET", "/config_dump?include_eds");
        let file = dir.join("envoy_dump.json");
        std::fs::write(&file, body).expect("write dump");
        for view in ["listener", "route", "cluster"] {
            let from_file = run(&[view, "-f", file.to_str().expect("path")]);
            let live = run(&[view, &sluice.admin]);
            assert_eq!(
                lines(&from_file),
                lines(&live),
                "{fixture} {view} -f envoy dump"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
        // Filters.
        if fixture == "sidecar" {
            let t = run(&[
                "cluster",
                &sluice.admin,
                "--direction",
                "outbound",
                "--port",
                "80",
                "--subset",
                "v1",
            ]);
            assert_eq!(t.lines().count(), 2, "{t}");
            assert!(
                t.contains("sample-service.default.svc.cluster.local     80       v1"),
                "{t}"
            );
            let t = run(&[
                "listener",
                &sluice.admin,
                "--port",
                "15006",
                "--address",
                "0.0.0.0",
            ]);
            assert_eq!(t.lines().count(), 3, "{t}");
            let t = run(&["route", &sluice.admin, "--name", "80"]);
            assert!(t.lines().skip(1).all(|l| l.starts_with("80 ")), "{t}");
            let t = run(&["endpoint", &sluice.admin, "--cluster", "inbound|8080||"]);
            assert_eq!(t.lines().count(), 2, "{t}");
        }
    }
}
