//! The host paths of the manifest, remapped into resources the test owns (the runner's one
//! declared substitution): the cgroup v2 mount -> a cgroup subtree, the bpffs mount -> a
//! directory inside bpffs, the CNI and sluice run directories -> temp directories. Named pod
//! netns (`/var/run/netns`) stay the host's (test pods are `ip netns` namespaces there).
//! Everything is removed on drop, also on panic.

use std::path::{Path, PathBuf};

use crate::{unique_name, Cgroup, PinDir};

/// One node's sandbox.
pub struct Sandbox {
    /// Stands for the host's cgroup v2 mount (`/sys/fs/cgroup`).
    pub cgroup: Cgroup,
    /// Stands for the host's bpffs (`/sys/fs/bpf`).
    pub bpffs: PinDir,
    /// Temp root holding `opt/cni/bin`, `etc/cni/net.d`, `run/sluice`.
    pub root: PathBuf,
}

impl Sandbox {
    pub fn new() -> Self {
        let root = std::env::temp_dir().join(unique_name("podrun"));
        std::fs::create_dir(&root).unwrap_or_else(|e| panic!("mkdir {}: {e}", root.display()));
        Self {
            cgroup: Cgroup::new("podrun"),
            bpffs: PinDir::new("podrun"),
            root,
        }
    }

    /// Where the manifest's host path `path` lives for this test; panics for a path the
    /// sandbox does not cover (nothing outside it is ever written).
    pub fn host_path(&self, path: &str) -> PathBuf {
        match path {
            "/sys/fs/cgroup" => self.cgroup.path().to_path_buf(),
            "/sys/fs/bpf" => self.bpffs.path().to_path_buf(),
            "/opt/cni/bin" | "/etc/cni/net.d" | "/run/sluice" => {
                self.root.join(path.trim_start_matches('/'))
            }
            "/var/run/netns" => PathBuf::from(path),
            other => panic!("host path {other}: not remapped into the test sandbox (tests/src/podrun/sandbox.rs)"),
        }
    }

    /// The sandbox cgroup as podman's `--cgroup-parent` (cgroupfs manager: a path from the
    /// hierarchy root). The pod's containers live under the remapped cgroup root, as every pod
    /// of a node lives under the real one: the agent's own sockets (the accepted 15001/15006
    /// connections whose `SO_ORIGINAL_DST` the cgroup/getsockopt program answers) must be in
    /// the cgroup the programs are attached to.
    pub fn cgroup_parent(&self) -> String {
        let root = sluice_node::bpf::default_cgroup_root().expect("cgroup v2 root");
        let rel = self
            .cgroup
            .path()
            .strip_prefix(&root)
            .expect("under the root");
        format!("/{}", rel.display())
    }

    /// The sandbox's CNI bin dir, conf dir and sluice run dir.
    pub fn cni_bin(&self) -> PathBuf {
        self.host_path("/opt/cni/bin")
    }
    pub fn cni_conf(&self) -> PathBuf {
        self.host_path("/etc/cni/net.d")
    }
    pub fn run_sluice(&self) -> PathBuf {
        self.host_path("/run/sluice")
    }

    /// A scratch directory inside the sandbox.
    pub fn scratch(&self, name: &str) -> PathBuf {
        let p = self.root.join(name);
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        p
    }

    /// Applies a hostPath `type` to the (remapped) path: DirectoryOrCreate creates it,
    /// Directory must exist, "" checks nothing.
    pub fn prepare(&self, path: &Path, kind: &str) {
        match kind {
            "DirectoryOrCreate" => std::fs::create_dir_all(path)
                .unwrap_or_else(|e| panic!("hostPath {}: {e}", path.display())),
            "Directory" => assert!(
                path.is_dir(),
                "hostPath {} (type Directory) does not exist",
                path.display()
            ),
            "" => {}
            other => panic!("hostPath type {other} is not applied by the runner"),
        }
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

/// Removes the directories of a cgroup tree, deepest first (cgroupfs has no files to unlink).
fn rmdir_tree(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                rmdir_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // What podman/runc left of the pod's cgroups: below the v2 subtree (its own directory
        // goes with `cgroup`) and the same path in every v1 hierarchy of a hybrid host.
        let parent = self.cgroup_parent();
        if let Ok(rd) = std::fs::read_dir(self.cgroup.path()) {
            for e in rd
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            {
                rmdir_tree(&e.path());
            }
        }
        if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
            for e in rd.flatten() {
                let p = e.path().join(parent.trim_start_matches('/'));
                if p != self.cgroup.path() && p.starts_with("/sys/fs/cgroup") && p.is_dir() {
                    rmdir_tree(&p);
                }
            }
        }
        // A temp dir may hold a mount point only inside the plugins' private mount namespaces.
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
