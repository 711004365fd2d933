//! `deploy/sluice.yaml` parsed into what the runner applies: the DaemonSet's pod template (after
//! `fields::check` accepted every key) and the ConfigMaps its env refers to.

use std::{collections::HashMap, path::Path, time::Duration};

use serde::Deserialize as _;
use serde_json::Value;

use super::fields;

/// The manifest's documents the runner uses.
pub struct Manifest {
    /// The DaemonSet object.
    pub daemonset: Value,
    /// ConfigMap name -> data.
    pub config_maps: HashMap<String, HashMap<String, String>>,
    /// The DaemonSet's namespace (`metadata.namespace`).
    pub namespace: String,
    /// The DaemonSet's name.
    pub name: String,
    /// The pod template, typed.
    pub pod: PodSpec,
}

/// The pod template's spec, as the runner applies it.
#[derive(Clone, Debug)]
pub struct PodSpec {
    pub host_network: bool,
    pub host_pid: bool,
    pub service_account: Option<String>,
    pub grace: Duration,
    pub init_containers: Vec<Container>,
    pub containers: Vec<Container>,
    /// Volume name -> hostPath (path, type).
    pub volumes: HashMap<String, HostPath>,
    /// updateStrategy.rollingUpdate.maxSurge / maxUnavailable.
    pub max_surge: u32,
    pub max_unavailable: u32,
    pub min_ready: Duration,
}

#[derive(Clone, Debug)]
pub struct HostPath {
    pub path: String,
    /// `type` ("" when absent).
    pub kind: String,
}

#[derive(Clone, Debug)]
pub struct Container {
    pub name: String,
    pub image: String,
    pub pull_policy: Option<String>,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: Vec<(String, EnvSource)>,
    pub security: Security,
    pub mounts: Vec<Mount>,
    pub readiness: Option<Probe>,
    pub liveness: Option<Probe>,
}

#[derive(Clone, Debug)]
pub enum EnvSource {
    Value(String),
    Field(String),
    ConfigMap { name: String, key: String },
}

#[derive(Clone, Debug, Default)]
pub struct Security {
    pub privileged: bool,
    pub run_as_user: Option<u32>,
    pub run_as_non_root: bool,
    pub read_only_root: bool,
    pub no_new_privileges: bool,
    pub cap_drop: Vec<String>,
    pub cap_add: Vec<String>,
    pub seccomp: Option<String>,
    pub apparmor: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Mount {
    pub volume: String,
    pub path: String,
    pub read_only: bool,
    pub propagation: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Probe {
    pub path: String,
    pub port: u16,
    pub initial_delay: Duration,
    pub period: Duration,
    pub failure_threshold: u32,
}

/// `deploy/sluice.yaml` of this workspace.
pub fn default_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/sluice.yaml")
}

/// Loads the manifest; panics naming the first field the runner cannot apply.
pub fn load(path: &Path) -> Manifest {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let docs: Vec<Value> = serde_norway::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .collect();
    let mut config_maps = HashMap::new();
    let mut daemonset = None;
    for d in docs {
        match d["kind"].as_str() {
            Some("ConfigMap") => {
                let data = d["data"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                            .collect()
                    })
                    .unwrap_or_default();
                config_maps.insert(str_at(&d, "/metadata/name"), data);
            }
            Some("DaemonSet") => {
                assert!(daemonset.is_none(), "{}: two DaemonSets", path.display());
                daemonset = Some(d);
            }
            _ => {}
        }
    }
    let ds = daemonset.unwrap_or_else(|| panic!("{}: no DaemonSet", path.display()));
    fields::check(&ds);
    let pod = pod_spec(&ds);
    Manifest {
        namespace: str_at(&ds, "/metadata/namespace"),
        name: str_at(&ds, "/metadata/name"),
        daemonset: ds,
        config_maps,
        pod,
    }
}

fn str_at(v: &Value, ptr: &str) -> String {
    v.pointer(ptr)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("manifest: {ptr} must be a string"))
        .to_string()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().expect("a list of strings").to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn secs(v: &Value, default: u64) -> Duration {
    Duration::from_secs(v.as_u64().unwrap_or(default))
}

fn pod_spec(ds: &Value) -> PodSpec {
    let spec = &ds["spec"]["template"]["spec"];
    let ru = &ds["spec"]["updateStrategy"]["rollingUpdate"];
    let int = |v: &Value, default: u32, what: &str| match v {
        Value::Null => default,
        Value::Number(n) => n.as_u64().expect("non-negative") as u32,
        other => panic!("{what}: only integer values are applied, not {other}"),
    };
    PodSpec {
        host_network: spec["hostNetwork"].as_bool().unwrap_or(false),
        host_pid: spec["hostPID"].as_bool().unwrap_or(false),
        service_account: spec["serviceAccountName"].as_str().map(str::to_string),
        grace: secs(&spec["terminationGracePeriodSeconds"], 30),
        init_containers: list(&spec["initContainers"]),
        containers: list(&spec["containers"]),
        volumes: spec["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| {
                let hp = &v["hostPath"];
                (
                    str_at(v, "/name"),
                    HostPath {
                        path: str_at(hp, "/path"),
                        kind: hp["type"].as_str().unwrap_or_default().to_string(),
                    },
                )
            })
            .collect(),
        max_surge: int(&ru["maxSurge"], 0, "updateStrategy.rollingUpdate.maxSurge"),
        max_unavailable: int(
            &ru["maxUnavailable"],
            1,
            "updateStrategy.rollingUpdate.maxUnavailable",
        ),
        min_ready: secs(&ds["spec"]["minReadySeconds"], 0),
    }
}

fn list(v: &Value) -> Vec<Container> {
    v.as_array().into_iter().flatten().map(container).collect()
}

fn container(c: &Value) -> Container {
    let sc = &c["securityContext"];
    let env = c["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let name = str_at(e, "/name");
            let from = &e["valueFrom"];
            let src = if let Some(v) = e["value"].as_str() {
                EnvSource::Value(v.to_string())
            } else if from["fieldRef"].is_object() {
                EnvSource::Field(str_at(from, "/fieldRef/fieldPath"))
            } else if from["configMapKeyRef"].is_object() {
                EnvSource::ConfigMap {
                    name: str_at(from, "/configMapKeyRef/name"),
                    key: str_at(from, "/configMapKeyRef/key"),
                }
            } else {
                panic!("env {name}: no value, fieldRef or configMapKeyRef")
            };
            (name, src)
        })
        .collect();
    let mounts = c["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| Mount {
            volume: str_at(m, "/name"),
            path: str_at(m, "/mountPath"),
            read_only: m["readOnly"].as_bool().unwrap_or(false),
            propagation: m["mountPropagation"].as_str().map(str::to_string),
        })
        .collect();
    Container {
        name: str_at(c, "/name"),
        image: str_at(c, "/image"),
        pull_policy: c["imagePullPolicy"].as_str().map(str::to_string),
        command: strings(&c["command"]),
        args: strings(&c["args"]),
        env,
        security: Security {
            privileged: sc["privileged"].as_bool().unwrap_or(false),
            run_as_user: sc["runAsUser"].as_u64().map(|u| u as u32),
            run_as_non_root: sc["runAsNonRoot"].as_bool().unwrap_or(false),
            read_only_root: sc["readOnlyRootFilesystem"].as_bool().unwrap_or(false),
            no_new_privileges: sc["allowPrivilegeEscalation"] == Value::Bool(false),
            cap_drop: strings(&sc["capabilities"]["drop"]),
            cap_add: strings(&sc["capabilities"]["add"]),
            seccomp: sc["seccompProfile"]["type"].as_str().map(str::to_string),
            apparmor: sc["appArmorProfile"]["type"].as_str().map(str::to_string),
        },
        mounts,
        readiness: probe(&c["readinessProbe"]),
        liveness: probe(&c["livenessProbe"]),
    }
}

fn probe(p: &Value) -> Option<Probe> {
    if p.is_null() {
        return None;
    }
    let port = p["httpGet"]["port"]
        .as_u64()
        .unwrap_or_else(|| panic!("probe httpGet.port must be a number: {p}"));
    Some(Probe {
        path: str_at(p, "/httpGet/path"),
        port: port as u16,
        initial_delay: secs(&p["initialDelaySeconds"], 0),
        period: secs(&p["periodSeconds"], 10),
        failure_threshold: p["failureThreshold"].as_u64().unwrap_or(3) as u32,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::podrun::expand::{expand, resolve_env};

    /// The shipped manifest loads (every field applied or knowingly ignored) and the agent's
    /// args expand completely from its env.
    #[test]
    fn the_shipped_manifest_is_applied_and_expands() {
        let m = load(&default_path());
        assert_eq!((m.pod.max_surge, m.pod.max_unavailable), (1, 0));
        let agent = m
            .pod
            .containers
            .iter()
            .find(|c| c.name == "agent")
            .expect("agent");
        let fields: HashMap<&str, String> = [
            ("spec.nodeName", "n1".to_string()),
            ("metadata.namespace", m.namespace.clone()),
        ]
        .into_iter()
        .collect();
        let env = resolve_env(agent, &fields, &m.config_maps);
        let args: Vec<String> = agent.args.iter().map(|a| expand(a, &env)).collect();
        assert!(args.iter().all(|a| !a.contains("$(")), "{args:?}");
        assert!(
            args.contains(&"--cgroup=/host/sys/fs/cgroup".to_string()),
            "{args:?}"
        );
        assert!(agent.readiness.is_some() && agent.liveness.is_some());
    }
}
