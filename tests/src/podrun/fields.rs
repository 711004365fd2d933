//! Every key of the DaemonSet the runner knows: applied, or knowingly ignored with the reason.
//! Any other key (or a known key with a value the runner cannot apply) fails, naming its path,
//! so a manifest change the runner does not apply can never pass unnoticed.

use serde_json::Value;

/// Why a key is there: the runner applies it, or ignores it for the given reason.
#[derive(Clone, Copy, Debug)]
pub enum Verdict {
    Applied,
    Ignored(&'static str),
}

use Verdict::{Applied, Ignored};

const SCHEDULER: &str = "a scheduler/controller concern: one node, one pod at a time";
const LABELS: &str = "labels select pods; nothing runs differently";
const RESOURCES: &str = "requests are scheduler inputs; podman does not enforce them here";

/// Leaf paths (array indices as `[]`, `*` = any map key) and their verdicts.
pub const KEYS: &[(&str, Verdict)] = &[
    ("apiVersion", Applied),
    ("kind", Applied),
    ("metadata.name", Applied),
    ("metadata.namespace", Applied),
    ("metadata.labels.*", Ignored(LABELS)),
    ("spec.selector.matchLabels.*", Ignored(LABELS)),
    ("spec.updateStrategy.type", Applied),
    ("spec.updateStrategy.rollingUpdate.maxSurge", Applied),
    ("spec.updateStrategy.rollingUpdate.maxUnavailable", Applied),
    ("spec.minReadySeconds", Applied),
    ("spec.template.metadata.labels.*", Ignored(LABELS)),
    ("spec.template.spec.serviceAccountName", Applied),
    ("spec.template.spec.priorityClassName", Ignored(SCHEDULER)),
    ("spec.template.spec.tolerations[].operator", Ignored(SCHEDULER)),
    ("spec.template.spec.hostNetwork", Applied),
    (
        "spec.template.spec.dnsPolicy",
        Ignored("no cluster DNS here: with host network the container uses the host's resolv.conf; the agent resolves no names (the API server is an IP)"),
    ),
    ("spec.template.spec.hostPID", Applied),
    ("spec.template.spec.terminationGracePeriodSeconds", Applied),
    ("spec.template.spec.volumes[].name", Applied),
    ("spec.template.spec.volumes[].hostPath.path", Applied),
    ("spec.template.spec.volumes[].hostPath.type", Applied),
    ("C.name", Applied),
    ("C.image", Applied),
    ("C.imagePullPolicy", Applied),
    ("C.command[]", Applied),
    ("C.args[]", Applied),
    ("C.env[].name", Applied),
    ("C.env[].value", Applied),
    ("C.env[].valueFrom.fieldRef.fieldPath", Applied),
    ("C.env[].valueFrom.configMapKeyRef.name", Applied),
    ("C.env[].valueFrom.configMapKeyRef.key", Applied),
    ("C.securityContext.privileged", Applied),
    ("C.securityContext.runAsUser", Applied),
    ("C.securityContext.runAsNonRoot", Applied),
    ("C.securityContext.readOnlyRootFilesystem", Applied),
    ("C.securityContext.allowPrivilegeEscalation", Applied),
    ("C.securityContext.capabilities.drop[]", Applied),
    ("C.securityContext.capabilities.add[]", Applied),
    ("C.securityContext.seccompProfile.type", Applied),
    ("C.securityContext.appArmorProfile.type", Applied),
    ("C.volumeMounts[].name", Applied),
    ("C.volumeMounts[].mountPath", Applied),
    ("C.volumeMounts[].readOnly", Applied),
    ("C.volumeMounts[].mountPropagation", Applied),
    ("C.readinessProbe.httpGet.path", Applied),
    ("C.readinessProbe.httpGet.port", Applied),
    ("C.readinessProbe.initialDelaySeconds", Applied),
    ("C.readinessProbe.periodSeconds", Applied),
    ("C.readinessProbe.failureThreshold", Applied),
    ("C.livenessProbe.httpGet.path", Applied),
    ("C.livenessProbe.httpGet.port", Applied),
    ("C.livenessProbe.initialDelaySeconds", Applied),
    ("C.livenessProbe.periodSeconds", Applied),
    ("C.livenessProbe.failureThreshold", Applied),
    ("C.resources.requests.cpu", Ignored(RESOURCES)),
    ("C.resources.requests.memory", Ignored(RESOURCES)),
];

/// Values the runner applies for keys whose other values it cannot (path, accepted values).
const VALUES: &[(&str, &[&str])] = &[
    ("apiVersion", &["apps/v1"]),
    ("kind", &["DaemonSet"]),
    ("spec.updateStrategy.type", &["RollingUpdate"]),
    ("spec.template.spec.hostNetwork", &["true"]),
    (
        "spec.template.spec.volumes[].hostPath.type",
        &["", "Directory", "DirectoryOrCreate"],
    ),
    ("C.imagePullPolicy", &["IfNotPresent", "Never", "Always"]),
    (
        "C.volumeMounts[].mountPropagation",
        &["None", "HostToContainer", "Bidirectional"],
    ),
    (
        "C.securityContext.seccompProfile.type",
        &["Unconfined", "RuntimeDefault"],
    ),
    (
        "C.securityContext.appArmorProfile.type",
        &["Unconfined", "RuntimeDefault"],
    ),
];

const CONTAINER_PREFIXES: &[&str] = &[
    "spec.template.spec.containers[].",
    "spec.template.spec.initContainers[].",
];

/// Panics naming the first leaf of `ds` the runner neither applies nor knowingly ignores.
/// Returns the ignored leaves with their reasons (for the test log).
pub fn check(ds: &Value) -> Vec<(String, &'static str)> {
    let mut leaves = Vec::new();
    walk(ds, String::new(), String::new(), &mut leaves);
    let mut ignored = Vec::new();
    for (real, pattern, value) in leaves {
        let (key, verdict) = lookup(&pattern).unwrap_or_else(|| {
            panic!("deploy/sluice.yaml: the manifest runner cannot apply field {real} (= {value}); teach tests/src/podrun/fields.rs")
        });
        if let Some((_, ok)) = VALUES.iter().find(|(k, _)| *k == key) {
            let shown = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_string);
            assert!(
                ok.contains(&shown.as_str()),
                "deploy/sluice.yaml: field {real} = {shown}: the runner applies only {ok:?}"
            );
        }
        if let Ignored(why) = verdict {
            ignored.push((real, why));
        }
    }
    ignored
}

/// The known key a leaf pattern matches (container keys under the `C.` shorthand).
fn lookup(pattern: &str) -> Option<(&'static str, Verdict)> {
    let short = CONTAINER_PREFIXES
        .iter()
        .find_map(|p| pattern.strip_prefix(p).map(|rest| format!("C.{rest}")));
    let p = short.as_deref().unwrap_or(pattern);
    KEYS.iter().copied().find(|(k, _)| matches(k, p))
}

fn matches(key: &str, path: &str) -> bool {
    let (ks, ps): (Vec<&str>, Vec<&str>) = (key.split('.').collect(), path.split('.').collect());
    ks.len() == ps.len() && ks.iter().zip(&ps).all(|(k, p)| *k == "*" || k == p)
}

/// Collects (real path, pattern path, value) for every scalar leaf.
fn walk(v: &Value, real: String, pattern: String, out: &mut Vec<(String, String, Value)>) {
    let join = |base: &str, k: &str| {
        if base.is_empty() {
            k.to_string()
        } else {
            format!("{base}.{k}")
        }
    };
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                // A key with dots (a label name) stays one segment of the pattern.
                walk(
                    child,
                    join(&real, k),
                    join(&pattern, &k.replace('.', "/")),
                    out,
                );
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                walk(child, format!("{real}[{i}]"), format!("{pattern}[]"), out);
            }
        }
        scalar => out.push((real, pattern, scalar.clone())),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_unknown_field_fails_naming_its_path() {
        let ds = json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
            "spec": {"template": {"spec": {"containers": [{"name": "a", "stdin": true}]}}}});
        let err = std::panic::catch_unwind(|| check(&ds)).expect_err("must fail");
        let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(
            msg.contains("spec.template.spec.containers[0].stdin"),
            "{msg}"
        );
    }

    #[test]
    fn a_value_the_runner_cannot_apply_fails() {
        let ds = json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
            "spec": {"template": {"spec": {"volumes": [{"name": "x", "hostPath": {"path": "/x", "type": "Socket"}}]}}}});
        assert!(std::panic::catch_unwind(|| check(&ds)).is_err());
    }
}
