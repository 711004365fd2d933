//! Every manifest in `deploy/` validated offline against the Kubernetes OpenAPI schemas of
//! several minor versions in strict mode (`kubernetes-validate`, installed by `cargo xtask
//! setup`), plus the DaemonSet properties the design depends on. A missing tool fails the test.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde::Deserialize as _;
use serde_json::Value;

/// Kubernetes minor versions validated against (the tool bundles 1.25-1.37).
const VERSIONS: &[&str] = &["1.30.0", "1.33.0", "1.37.0"];

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy_dir())
        .expect("deploy/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no manifests in {}",
        deploy_dir().display()
    );
    files
}

/// `kubernetes-validate --strict -k <version> <file>`: (success, output).
fn validate(version: &str, file: &Path) -> (bool, String) {
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "--quiet", "-k", version])
        .arg(file)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "kubernetes-validate cannot run ({e}){}: install it with `cargo xtask setup` \
                 (pip package kubernetes-validate)",
                if std::env::var("CI").as_deref() == Ok("true") {
                    " under CI=true"
                } else {
                    ""
                }
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn every_manifest_is_valid_for_three_kubernetes_versions_in_strict_mode() {
    for file in manifests() {
        for v in VERSIONS {
            let (ok, out) = validate(v, &file);
            assert!(
                ok,
                "{} is not valid for Kubernetes {v}:\n{out}",
                file.display()
            );
            eprintln!("{}: valid for {v} (strict)", file.display());
        }
    }
}

#[test]
fn strict_mode_rejects_an_unknown_field() {
    // The check above means something only if a typo fails it.
    let dir = std::env::temp_dir().join(sluice_tests::unique_name("manifest"));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: x\n  namespaec: y\n",
    )
    .unwrap();
    let (ok, out) = validate(VERSIONS[0], &bad);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(!ok, "an unknown field passed strict validation:\n{out}");
}

fn documents(file: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(file).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", file.display())))
        .collect()
}

#[test]
fn daemonset_upgrades_hitlessly_and_runs_no_privileged_long_lived_container() {
    let docs = documents(&deploy_dir().join("sluice.yaml"));
    let ds = docs
        .iter()
        .find(|d| d["kind"] == "DaemonSet")
        .expect("a DaemonSet");
    let ru = &ds["spec"]["updateStrategy"]["rollingUpdate"];
    assert_eq!(
        (ru["maxSurge"].as_u64(), ru["maxUnavailable"].as_u64()),
        (Some(1), Some(0))
    );
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(
        pod["tolerations"],
        serde_json::json!([{"operator": "Exists"}])
    );
    for c in pod["containers"].as_array().unwrap() {
        assert_ne!(
            c["securityContext"]["privileged"], true,
            "{} is privileged",
            c["name"]
        );
        assert_eq!(
            c["securityContext"]["capabilities"]["drop"],
            serde_json::json!(["ALL"])
        );
    }
    let agent = &pod["containers"][0];
    let args: Vec<&str> = agent["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        args.contains(&"--upgrade-from-if-present=/run/sluice/agent.sock"),
        "{args:?}"
    );
    assert!(args.contains(&"--idle-after-handover"), "{args:?}");
    // The old agent drains past its pod's SIGTERM, so the grace period must cover the drain.
    let cm = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap")
        .expect("a ConfigMap");
    let drain = cm["data"]["drain-timeout"].as_str().expect("drain-timeout");
    let drain_secs: u64 = match drain.strip_suffix('m') {
        Some(m) => m.parse::<u64>().expect("minutes") * 60,
        None => drain.trim_end_matches('s').parse().expect("seconds"),
    };
    assert!(
        pod["terminationGracePeriodSeconds"].as_u64() > Some(drain_secs),
        "terminationGracePeriodSeconds covers the old agent's drain ({drain})"
    );
    assert!(
        args.contains(&"--on-exit=$(SLUICE_AGENT_ON_EXIT)"),
        "{args:?}"
    );
    assert_eq!(agent["readinessProbe"]["httpGet"]["path"], "/healthz/ready");
    assert_eq!(agent["readinessProbe"]["httpGet"]["port"], 15021);
    let role = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRole")
        .expect("a ClusterRole");
    assert_eq!(
        role["rules"],
        serde_json::json!([{"apiGroups": [""], "resources": ["pods", "namespaces"],
                            "verbs": ["get", "list", "watch"]}])
    );
}
