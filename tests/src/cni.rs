//! Driving CNI plugins the way a container runtime does: a conflist (the Debian reference
//! `bridge` + `host-local`, then `sluice-cni`), each plugin exec'd in order with the `CNI_*`
//! environment and the previous plugin's result as `prevResult` on ADD, in reverse order on DEL.

use std::{
    io::Write as _,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{json, Value};

use crate::{next_id, run_cmd_quiet, unique_name, Netns};

/// Directory of the Debian reference plugins.
pub const CNI_PLUGIN_DIR: &str = "/usr/lib/cni";

/// The `sluice-cni` binary: `$SLUICE_CNI_BIN`, else next to the `sluice` binary.
pub fn sluice_cni_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SLUICE_CNI_BIN") {
        return PathBuf::from(p);
    }
    let bin = crate::sluice_cli::sluice_bin().with_file_name("sluice-cni");
    assert!(
        bin.exists(),
        "sluice-cni not found at {}: run `cargo build -p sluice --bins` first or set SLUICE_CNI_BIN",
        bin.display()
    );
    bin
}

/// The reference `bridge` plugin's entry with `host-local` IPAM on `subnet`: pods get an
/// address and **no** routes (`isGateway: false`, no ipam routes).
pub fn bridge_plugin(bridge: &str, subnet: (Ipv4Addr, u8), data_dir: &Path) -> Value {
    json!({
        "type": "bridge",
        "bridge": bridge,
        "isGateway": false,
        "isDefaultGateway": false,
        "ipMasq": false,
        "hairpinMode": false,
        "ipam": {
            "type": "host-local",
            "ranges": [[{ "subnet": format!("{}/{}", subnet.0, subnet.1) }]],
            "dataDir": data_dir,
        }
    })
}

/// What one plugin exec produced.
#[derive(Debug)]
pub struct PluginRun {
    /// Exit status was 0.
    pub ok: bool,
    /// stdout parsed as JSON (`Value::Null` when empty).
    pub stdout: Value,
    /// stderr text.
    pub stderr: String,
    /// Wall time of the exec (spawn to exit).
    pub took: Duration,
}

/// Execs one plugin with the CNI protocol.
pub fn exec_plugin(
    program: &Path,
    command: &str,
    container_id: &str,
    netns: Option<&Path>,
    args: &str,
    conf: &Value,
) -> PluginRun {
    exec_plugin_via(&[], program, command, container_id, netns, args, conf)
}

/// [`exec_plugin`] through `wrapper` (a command line that execs its last argument, the
/// plugin, e.g. to run it in its own mount namespace); `CNI_PATH` has the plugin's directory
/// first.
pub fn exec_plugin_via(
    wrapper: &[&str],
    program: &Path,
    command: &str,
    container_id: &str,
    netns: Option<&Path>,
    args: &str,
    conf: &Value,
) -> PluginRun {
    let start = Instant::now();
    let dir = program.parent().unwrap_or(Path::new("/")).display();
    let path = if wrapper.is_empty() {
        format!("{CNI_PLUGIN_DIR}:{dir}")
    } else {
        format!("{dir}:{CNI_PLUGIN_DIR}")
    };
    let mut cmd = match wrapper.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(program);
            c
        }
        None => Command::new(program),
    };
    let mut child = cmd
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container_id)
        .env(
            "CNI_NETNS",
            netns.map(|p| p.display().to_string()).unwrap_or_default(),
        )
        .env("CNI_IFNAME", "eth0")
        .env("CNI_ARGS", args)
        .env("CNI_PATH", path)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("exec {}: {e}", program.display()));
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(conf.to_string().as_bytes())
        .expect("write the network configuration");
    let out = child.wait_with_output().expect("wait for the plugin");
    let text = String::from_utf8_lossy(&out.stdout);
    let stdout = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(text.trim()).unwrap_or_else(|e| {
            panic!(
                "{} {command} printed non-JSON {text:?}: {e}",
                program.display()
            )
        })
    };
    PluginRun {
        ok: out.status.success(),
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: start.elapsed(),
    }
}

/// A conflist `bridge`(+`host-local`) -> `sluice-cni` on a test bridge with its own /24 and
/// IPAM directory. The pods get an address and **no** routes (`isGateway: false`, no ipam
/// routes): they reach each other over the bridge only. The bridge and the IPAM directory are
/// removed on drop.
pub struct CniNetwork {
    /// Network name.
    pub name: String,
    /// Bridge interface (root netns).
    pub bridge: String,
    /// The pods' subnet.
    pub subnet: (Ipv4Addr, u8),
    data_dir: PathBuf,
    /// `sluice-cni` options merged into its conflist entry (`control`, `failOpen`, `mode`...).
    pub sluice_opts: Value,
}

/// Result of a chained ADD.
#[derive(Debug)]
pub struct AddResult {
    /// The final result (what the runtime gets), or the failing plugin's error object.
    pub result: Value,
    /// Every plugin succeeded.
    pub ok: bool,
    /// The `bridge` plugin's result (sluice-cni's prevResult).
    pub prev: Value,
    /// sluice-cni's exec (None when an earlier plugin failed).
    pub sluice: Option<PluginRun>,
}

impl CniNetwork {
    /// A network on a fresh bridge `slc<pid%1000>x<n>` and subnet `10.253.<k>.0/24`.
    pub fn new(sluice_opts: Value) -> Self {
        let n = next_id();
        let pid = std::process::id();
        let bridge = format!("slc{}x{n}", pid % 100_000);
        let third = ((pid as usize * 7 + n as usize) % 250) as u8;
        let data_dir = std::env::temp_dir().join(unique_name("cni-ipam"));
        Self {
            name: unique_name("cninet"),
            bridge,
            subnet: (Ipv4Addr::new(10, 253, third, 0), 24),
            data_dir,
            sluice_opts,
        }
    }

    fn plugins(&self) -> Vec<Value> {
        let bridge = bridge_plugin(&self.bridge, self.subnet, &self.data_dir);
        let mut sluice = json!({ "type": "sluice-cni" });
        if let (Some(m), Some(o)) = (sluice.as_object_mut(), self.sluice_opts.as_object()) {
            m.extend(o.clone());
        }
        vec![bridge, sluice]
    }

    fn conf(&self, plugin: &Value, prev: Option<&Value>) -> Value {
        let mut c = plugin.clone();
        let m = c.as_object_mut().expect("plugin conf is an object");
        m.insert("cniVersion".into(), json!("1.0.0"));
        m.insert("name".into(), json!(self.name));
        if let Some(p) = prev {
            m.insert("prevResult".into(), p.clone());
        }
        c
    }

    fn program(plugin: &Value) -> PathBuf {
        match plugin["type"].as_str().expect("plugin type") {
            "sluice-cni" => sluice_cni_bin(),
            other => Path::new(CNI_PLUGIN_DIR).join(other),
        }
    }

    /// ADD through the chain, as a runtime does: `loopback` for `lo`, then each plugin with the
    /// previous result. `args` is CNI_ARGS (`K8S_POD_NAME=..;K8S_POD_NAMESPACE=..`).
    pub fn add(&self, pod: &Netns, container_id: &str, args: &str) -> AddResult {
        let lo = json!({"cniVersion": "1.0.0", "name": "lo", "type": "loopback"});
        let r = exec_plugin(
            &Path::new(CNI_PLUGIN_DIR).join("loopback"),
            "ADD",
            container_id,
            Some(&pod.path()),
            args,
            &lo,
        );
        assert!(r.ok, "loopback ADD failed: {:?} {}", r.stdout, r.stderr);
        let mut prev: Option<Value> = None;
        let mut bridge_result = Value::Null;
        let mut sluice = None;
        for plugin in self.plugins() {
            let prog = Self::program(&plugin);
            let conf = self.conf(&plugin, prev.as_ref());
            let run = exec_plugin(&prog, "ADD", container_id, Some(&pod.path()), args, &conf);
            let is_sluice = plugin["type"] == "sluice-cni";
            if !is_sluice {
                assert!(
                    run.ok,
                    "{} ADD failed: {:?} {}",
                    prog.display(),
                    run.stdout,
                    run.stderr
                );
                bridge_result = run.stdout.clone();
                prev = Some(run.stdout);
                continue;
            }
            let ok = run.ok;
            let result = run.stdout.clone();
            sluice = Some(run);
            return AddResult {
                result,
                ok,
                prev: bridge_result,
                sluice,
            };
        }
        AddResult {
            result: prev.unwrap_or(Value::Null),
            ok: true,
            prev: bridge_result,
            sluice,
        }
    }

    /// DEL through the chain in reverse order (every plugin must succeed). `netns` may be
    /// `None` (the runtime lost it). Returns sluice-cni's run.
    pub fn del(&self, pod: Option<&Netns>, container_id: &str, args: &str) -> PluginRun {
        let mut sluice_run = None;
        for plugin in self.plugins().iter().rev() {
            let prog = Self::program(plugin);
            let conf = self.conf(plugin, None);
            let path = pod.map(|p| p.path());
            let run = exec_plugin(&prog, "DEL", container_id, path.as_deref(), args, &conf);
            assert!(
                run.ok,
                "{} DEL failed: {:?} {}",
                prog.display(),
                run.stdout,
                run.stderr
            );
            if plugin["type"] == "sluice-cni" {
                sluice_run = Some(run);
            }
        }
        sluice_run.expect("sluice-cni is in the chain")
    }

    /// CHECK of sluice-cni alone (with the given prevResult).
    pub fn check(&self, pod: &Netns, container_id: &str, args: &str, prev: &Value) -> PluginRun {
        let plugin = self.plugins().pop().expect("sluice-cni");
        let conf = self.conf(&plugin, Some(prev));
        exec_plugin(
            &sluice_cni_bin(),
            "CHECK",
            container_id,
            Some(&pod.path()),
            args,
            &conf,
        )
    }

    /// The IPv4 address host-local gave a pod (from an ADD result).
    pub fn pod_ip(result: &Value) -> Ipv4Addr {
        let addr = result["ips"][0]["address"]
            .as_str()
            .unwrap_or_else(|| panic!("no ips[0].address in {result}"));
        addr.split('/')
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("bad address {addr}"))
    }
}

impl Drop for CniNetwork {
    fn drop(&mut self) {
        run_cmd_quiet("ip", &["link", "del", &self.bridge]);
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}
