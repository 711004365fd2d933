//! One DaemonSet pod on the sandboxed node: init containers to completion, then the containers
//! (detached), each with the manifest's image, command, args, env, security context, host
//! namespaces and (remapped) host-path mounts, plus what a kubelet adds: the downward-API
//! values, `KUBERNETES_SERVICE_*` and the service-account mount. Containers are removed on drop.

use std::{collections::HashMap, time::Duration};

use super::{
    apiserver::{InClusterApi, SA_MOUNT},
    expand::{expand, resolve_env},
    manifest::{Container, Manifest},
    podman::{podman, run_args, Bind, ContainerGuard},
    probe,
    sandbox::Sandbox,
};
use crate::unique_name;

/// The node the pod runs on.
pub struct NodeContext<'a> {
    pub manifest: &'a Manifest,
    pub sandbox: &'a Sandbox,
    pub api: &'a InClusterApi,
    /// `spec.nodeName`.
    pub node_name: String,
}

/// A running pod: its containers by name.
pub struct RunningPod {
    pub name: String,
    pub containers: Vec<(String, ContainerGuard)>,
}

impl RunningPod {
    /// Starts the pod; panics (with the logs) when an init container fails.
    pub fn start(node: &NodeContext) -> Self {
        let m = node.manifest;
        let name = unique_name(&m.name);
        let fields: HashMap<&str, String> = [
            ("spec.nodeName", node.node_name.clone()),
            ("metadata.namespace", m.namespace.clone()),
            ("metadata.name", name.clone()),
            (
                "spec.serviceAccountName",
                m.pod.service_account.clone().unwrap_or_default(),
            ),
            ("status.hostIP", "127.0.0.1".to_string()),
            ("status.podIP", "127.0.0.1".to_string()),
        ]
        .into_iter()
        .collect();
        let mut pod = Self {
            name: name.clone(),
            containers: Vec::new(),
        };
        for c in &m.pod.init_containers {
            let g = pod.run(node, &fields, c, false);
            let code = podman(&["wait", &g.name]);
            let code = String::from_utf8_lossy(&code.stdout).trim().to_string();
            assert_eq!(
                code,
                "0",
                "init container {} exited {code}: {}",
                c.name,
                g.logs()
            );
        }
        for c in &m.pod.containers {
            let g = pod.run(node, &fields, c, true);
            pod.containers.push((c.name.clone(), g));
        }
        pod
    }

    fn run(
        &self,
        node: &NodeContext,
        fields: &HashMap<&str, String>,
        c: &Container,
        detach: bool,
    ) -> ContainerGuard {
        let m = node.manifest;
        let mut env = resolve_env(c, fields, &m.config_maps);
        env.extend(node.api.env());
        let command: Vec<String> = c.command.iter().map(|s| expand(s, &env)).collect();
        let args: Vec<String> = c.args.iter().map(|s| expand(s, &env)).collect();
        let mut binds: Vec<Bind> = c
            .mounts
            .iter()
            .map(|mnt| {
                let vol = m.pod.volumes.get(&mnt.volume).unwrap_or_else(|| {
                    panic!(
                        "container {}: volumeMount {}: no such volume",
                        c.name, mnt.volume
                    )
                });
                let host = node.sandbox.host_path(&vol.path);
                node.sandbox.prepare(&host, &vol.kind);
                Bind {
                    source: host.display().to_string(),
                    target: mnt.path.clone(),
                    read_only: mnt.read_only,
                    propagation: mnt.propagation.clone(),
                }
            })
            .collect();
        if m.pod.service_account.is_some() {
            binds.push(Bind {
                source: node.api.sa_dir.display().to_string(),
                target: SA_MOUNT.into(),
                read_only: true,
                propagation: None,
            });
        }
        let cname = format!("{}-{}", self.name, c.name);
        let mut a = vec!["run".to_string()];
        if detach {
            a.push("--detach".into());
        }
        a.extend(run_args(
            &m.pod,
            c,
            &cname,
            &node.sandbox.cgroup_parent(),
            &env,
            &command,
            &args,
            &binds,
        ));
        let guard = ContainerGuard { name: cname };
        let argv: Vec<&str> = a.iter().map(String::as_str).collect();
        let out = podman(&argv);
        assert!(
            out.status.success() || !detach,
            "podman {}: {}",
            a.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        guard
    }

    /// The container `name`.
    pub fn container(&self, name: &str) -> &ContainerGuard {
        &self
            .containers
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("pod {} has no container {name}", self.name))
            .1
    }

    /// Every container's log, for failure messages.
    pub fn logs(&self) -> String {
        self.containers
            .iter()
            .map(|(n, g)| format!("--- {n}:\n{}", g.logs()))
            .collect()
    }

    /// Waits until every container's readinessProbe passes (at most `limit`); returns the time.
    pub fn wait_ready(&self, manifest: &Manifest, limit: Duration) -> Duration {
        let start = std::time::Instant::now();
        for c in &manifest.pod.containers {
            if let Some(p) = &c.readiness {
                if let Err(last) = probe::wait_ready(p, limit) {
                    panic!(
                        "pod {}: container {} not ready after {limit:?} (GET :{}{} -> {last:?})\n{}",
                        self.name,
                        c.name,
                        p.port,
                        p.path,
                        self.logs()
                    );
                }
            }
        }
        start.elapsed()
    }

    /// Stops every container as the kubelet does (SIGTERM, SIGKILL after the pod's grace
    /// period), in parallel; returns (container, exit code).
    pub fn stop(&self, grace: Duration) -> Vec<(String, i64)> {
        std::thread::scope(|s| {
            let hs: Vec<_> = self
                .containers
                .iter()
                .map(|(n, g)| s.spawn(move || (n.clone(), g.stop(grace))))
                .collect();
            hs.into_iter()
                .map(|h| h.join().expect("stop thread"))
                .collect()
        })
    }
}
