//! The node's CNI side: the primary network the test installs before the DaemonSet pod starts
//! (Debian's `bridge` + `host-local` as a conflist in the sandboxed conf dir, pods get an
//! address and no route), and pods wired through whatever the node's primary config is now
//! (the first `.conf`/`.conflist` by name, as the kubelet picks it: the one install-cni
//! patched), libcni-style: each plugin exec'd with the `CNI_*` env and the previous result.
//!
//! Plugins run as the runtime runs them on a node, except that each runs in its own mount
//! namespace whose `/run/sluice` is the sandbox's (the conflist names `/run/sluice/agent.sock`,
//! a host path the runner remaps), with `/run/netns` still the host's.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use serde_json::{json, Value};

use super::sandbox::Sandbox;
use crate::{
    cni::{bridge_plugin, exec_plugin_via, PluginRun, CNI_PLUGIN_DIR},
    next_id, run_cmd_quiet, unique_name, Netns,
};

/// The primary network's conflist, written by the test as the primary CNI would; its bridge
/// and IPAM directory are removed on drop.
pub struct PrimaryNetwork {
    pub bridge: String,
    pub file: PathBuf,
    data_dir: PathBuf,
}

impl PrimaryNetwork {
    /// Writes `<conf_dir>/10-<name>.conflist` (bridge + host-local on a fresh /24).
    pub fn install(conf_dir: &Path) -> Self {
        let n = next_id();
        let pid = std::process::id();
        let bridge = format!("slp{}x{n}", pid % 100_000);
        let third = ((pid as usize * 11 + n as usize) % 250) as u8;
        let data_dir = std::env::temp_dir().join(unique_name("podrun-ipam"));
        let name = unique_name("primary");
        let conflist = json!({
            "cniVersion": "1.0.0",
            "name": name,
            "plugins": [bridge_plugin(&bridge, (Ipv4Addr::new(10, 252, third, 0), 24), &data_dir)]
        });
        std::fs::create_dir_all(conf_dir).expect("mkdir conf dir");
        let file = conf_dir.join("10-primary.conflist");
        std::fs::write(&file, serde_json::to_vec_pretty(&conflist).expect("json"))
            .unwrap_or_else(|e| panic!("write {}: {e}", file.display()));
        Self {
            bridge,
            file,
            data_dir,
        }
    }
}

impl Drop for PrimaryNetwork {
    fn drop(&mut self) {
        run_cmd_quiet("ip", &["link", "del", &self.bridge]);
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// The node's primary CNI config: the first `.conf`/`.conflist` in name order, as a conflist.
pub fn primary(conf_dir: &Path) -> (PathBuf, Value) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(conf_dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", conf_dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("conf" | "conflist")
            )
        })
        .collect();
    files.sort();
    let file = files
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no CNI config in {}", conf_dir.display()));
    let text = std::fs::read_to_string(&file).expect("read primary config");
    let mut v: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    if v.get("plugins").is_none() {
        v = json!({"cniVersion": v["cniVersion"], "name": v["name"], "plugins": [v]});
    }
    (file, v)
}

/// Result of a chained ADD.
#[derive(Debug)]
pub struct ChainAdd {
    pub ok: bool,
    /// The last plugin's result, or the failing plugin's error object.
    pub result: Value,
    /// (plugin type, stderr) of every exec.
    pub stderr: Vec<(String, String)>,
}

/// Execs plugins of the node's chain with the sandbox's `/run/sluice`.
pub struct NodeCni<'a> {
    pub sandbox: &'a Sandbox,
}

impl NodeCni<'_> {
    fn exec(
        &self,
        plugin: &Value,
        command: &str,
        id: &str,
        ns: Option<&Netns>,
        args: &str,
        conf: &Value,
    ) -> PluginRun {
        let kind = plugin["type"].as_str().expect("plugin type");
        let in_bin = self.sandbox.cni_bin().join(kind);
        let program = if in_bin.exists() {
            in_bin
        } else {
            Path::new(CNI_PLUGIN_DIR).join(kind)
        };
        let view = self.sandbox.scratch("netns-view");
        let script = format!(
            "set -e; mount --rbind /run/netns '{v}'; mount -t tmpfs podrun /run; \
             mkdir -p /run/netns /run/sluice; mount --rbind '{v}' /run/netns; \
             mount --bind '{s}' /run/sluice; exec \"$1\"",
            v = view.display(),
            s = self.sandbox.run_sluice().display()
        );
        let wrapper = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "/bin/sh",
            "-c",
            &script,
            "sh",
        ];
        let path = ns.map(|n| n.path());
        exec_plugin_via(&wrapper, &program, command, id, path.as_deref(), args, conf)
    }

    /// `lo` up (the runtime's loopback), then ADD through the primary chain.
    pub fn add(&self, pod: &Netns, id: &str, args: &str) -> ChainAdd {
        let (_, list) = primary(&self.sandbox.cni_conf());
        let lo = json!({"cniVersion": "1.0.0", "name": "lo", "type": "loopback"});
        let r = self.exec(&lo, "ADD", id, Some(pod), args, &lo);
        assert!(r.ok, "loopback ADD: {} {}", r.stdout, r.stderr);
        let mut prev: Option<Value> = None;
        let mut stderr = Vec::new();
        for plugin in list["plugins"].as_array().expect("plugins") {
            let conf = conf_of(&list, plugin, prev.as_ref());
            let run = self.exec(plugin, "ADD", id, Some(pod), args, &conf);
            stderr.push((plugin["type"].to_string(), run.stderr.clone()));
            if !run.ok {
                return ChainAdd {
                    ok: false,
                    result: run.stdout,
                    stderr,
                };
            }
            prev = Some(run.stdout);
        }
        ChainAdd {
            ok: true,
            result: prev.unwrap_or(Value::Null),
            stderr,
        }
    }

    /// DEL through the chain in reverse; returns (plugin type, ok) per plugin.
    pub fn del(&self, pod: Option<&Netns>, id: &str, args: &str) -> Vec<(String, bool)> {
        let (_, list) = primary(&self.sandbox.cni_conf());
        let mut out = Vec::new();
        for plugin in list["plugins"].as_array().expect("plugins").iter().rev() {
            let conf = conf_of(&list, plugin, None);
            let run = self.exec(plugin, "DEL", id, pod, args, &conf);
            out.push((plugin["type"].to_string(), run.ok));
        }
        out
    }
}

fn conf_of(list: &Value, plugin: &Value, prev: Option<&Value>) -> Value {
    let mut c = plugin.clone();
    let m = c.as_object_mut().expect("plugin conf is an object");
    m.insert("cniVersion".into(), list["cniVersion"].clone());
    m.insert("name".into(), list["name"].clone());
    if let Some(p) = prev {
        m.insert("prevResult".into(), p.clone());
    }
    c
}

/// The pod's IPv4 address from an ADD result.
pub fn pod_ip(result: &Value) -> Ipv4Addr {
    crate::cni::CniNetwork::pod_ip(result)
}
