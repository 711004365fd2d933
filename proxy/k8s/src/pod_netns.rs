//! Finding a running pod's network namespace from its UID, as istio-cni does: the kubelet names
//! each pod's cgroup after the pod UID, so a scan of `/proc/*/cgroup` finds a process of the pod,
//! and that process's `/proc/PID/ns/net` is the pod's netns.
//!
//! The kubelet's cgroup names: systemd driver
//! `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid with _>.slice/...`
//! (guaranteed pods: `kubepods-pod<uid>.slice`), cgroupfs driver
//! `/kubepods/burstable/pod<uid>/...` (guaranteed: `/kubepods/pod<uid>/`). Both are read from
//! the cgroup v2 line and from every v1 line, so hybrid hosts work too.
//!
//! The netns is named for enrollment by its `/run/netns` entry when the runtime pinned one
//! (containerd's `cni-...`: stable across container restarts, and what a restarted agent
//! adopts by), else by `/proc/PID/ns/net`.

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use sluice_node::netns::{Netns, NetnsError, NETNS_RUN_DIR};

/// Pids of every pod found on the host, by pod UID (lower case, with `-`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodPids {
    by_uid: HashMap<String, Vec<u32>>,
}

impl PodPids {
    /// Scans `<proc>/*/cgroup` (`/proc` in the agent: the DaemonSet runs with the host's PID
    /// namespace). Processes that exit during the scan are skipped.
    pub fn scan(proc: &Path) -> std::io::Result<Self> {
        let mut by_uid: HashMap<String, Vec<u32>> = HashMap::new();
        for entry in std::fs::read_dir(proc)?.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(text) = std::fs::read_to_string(entry.path().join("cgroup")) else {
                continue;
            };
            if let Some(uid) = text.lines().find_map(pod_uid_of_cgroup_line) {
                by_uid.entry(uid).or_default().push(pid);
            }
        }
        for pids in by_uid.values_mut() {
            pids.sort_unstable();
        }
        Ok(Self { by_uid })
    }

    /// The pids of pod `uid` (any case, `-` or `_`), lowest first.
    pub fn pids(&self, uid: &str) -> &[u32] {
        self.by_uid
            .get(&normalize(uid))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// How many pods were found.
    pub fn len(&self) -> usize {
        self.by_uid.len()
    }

    /// Whether no pod was found.
    pub fn is_empty(&self) -> bool {
        self.by_uid.is_empty()
    }
}

/// The pod UID in one `/proc/PID/cgroup` line (`ID:CONTROLLERS:PATH`), if the path is inside a
/// kubelet pod cgroup.
pub fn pod_uid_of_cgroup_line(line: &str) -> Option<String> {
    let path = line.splitn(3, ':').nth(2)?;
    path.split('/').find_map(|seg| {
        let seg = seg.strip_suffix(".slice").unwrap_or(seg);
        let at = seg.rfind("pod")?;
        // `pod<uid>` (cgroupfs) or `kubepods-<qos>-pod<uid>` (systemd).
        if at != 0 && !seg[..at].ends_with('-') {
            return None;
        }
        let uid = &seg[at + 3..];
        is_uid(uid).then(|| normalize(uid))
    })
}

/// A UUID as the kubelet writes it: 8-4-4-4-12 hex digits joined by `-` or `_`.
fn is_uid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-' || c == '_',
            _ => c.is_ascii_hexdigit(),
        })
}

fn normalize(uid: &str) -> String {
    uid.replace('_', "-").to_ascii_lowercase()
}

/// A pod's network namespace, found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodNetns {
    /// What to enroll: a name under /run/netns, or `/proc/PID/ns/net`.
    pub netns: String,
    /// Its cookie (the key of the agent's maps and of its status).
    pub cookie: u64,
    /// Its inode (what `ip netns identify` compares).
    pub inode: u64,
    /// The pod process it was found through.
    pub pid: u32,
}

/// Why a pod's netns was not found.
#[derive(Debug, thiserror::Error)]
pub enum FindError {
    /// No process of the pod runs (not started yet, or finished).
    #[error("pod {uid}: no process in a cgroup named after it under {proc}")]
    NoProcess { uid: String, proc: PathBuf },
    /// Its processes were found but their netns could not be opened.
    #[error("pod {uid}: {source}")]
    Netns { uid: String, source: NetnsError },
}

/// The netns of pod `uid` from a scan: the first of its processes whose netns opens.
/// Blocking (it enters the netns briefly for its cookie).
pub fn find(pids: &PodPids, proc: &Path, uid: &str) -> Result<PodNetns, FindError> {
    let mut last = None;
    for pid in pids.pids(uid) {
        let path = proc.join(pid.to_string()).join("ns/net");
        let opened = Netns::open(&path.to_string_lossy()).and_then(|ns| {
            let inode = std::fs::metadata(&path)
                .map(|m| m.ino())
                .map_err(|source| NetnsError::Open {
                    path: path.clone(),
                    source,
                })?;
            Ok((ns.cookie()?, inode))
        });
        match opened {
            Ok((cookie, inode)) => {
                let netns = pinned_name(inode).unwrap_or_else(|| path.to_string_lossy().into());
                return Ok(PodNetns {
                    netns,
                    cookie,
                    inode,
                    pid: *pid,
                });
            }
            Err(source) => last = Some(source),
        }
    }
    Err(match last {
        Some(source) => FindError::Netns {
            uid: uid.to_string(),
            source,
        },
        None => FindError::NoProcess {
            uid: uid.to_string(),
            proc: proc.to_path_buf(),
        },
    })
}

/// The name under /run/netns whose inode is `inode` (an nsfs bind mount), if any.
fn pinned_name(inode: u64) -> Option<String> {
    std::fs::read_dir(NETNS_RUN_DIR)
        .ok()?
        .flatten()
        .find(|e| std::fs::metadata(e.path()).is_ok_and(|m| m.ino() == inode))
        .and_then(|e| e.file_name().into_string().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_cgroup_names() {
        let uid = "6f1c2a9e-3b7d-4e21-9c55-0a8f4d2b7e13";
        let cases = [
            // systemd driver, cgroup v2.
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6f1c2a9e_3b7d_4e21_9c55_0a8f4d2b7e13.slice/cri-containerd-9a8b7c.scope",
            "0::/kubepods.slice/kubepods-pod6f1c2a9e_3b7d_4e21_9c55_0a8f4d2b7e13.slice/crio-1f2e.scope",
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod6F1C2A9E_3B7D_4E21_9C55_0A8F4D2B7E13.slice",
            // cgroupfs driver (v2, and a v1 controller line).
            "0::/kubepods/burstable/pod6f1c2a9e-3b7d-4e21-9c55-0a8f4d2b7e13/9a8b7c6d5e4f",
            "0::/kubepods/pod6f1c2a9e-3b7d-4e21-9c55-0a8f4d2b7e13/9a8b7c6d5e4f",
            "4:memory:/kubepods/besteffort/pod6f1c2a9e-3b7d-4e21-9c55-0a8f4d2b7e13/9a8b",
        ];
        for line in cases {
            assert_eq!(pod_uid_of_cgroup_line(line).as_deref(), Some(uid), "{line}");
        }
        for line in [
            "0::/system.slice/containerd.service",
            "0::/user.slice/user-1000.slice/session-2.scope",
            "0::/kubepods.slice/kubepods-burstable.slice",
            "0::/kubepods/burstable/pod6f1c2a9e-3b7d-4e21-9c55",
            "0::/kubepods/burstable/xpod6f1c2a9e-3b7d-4e21-9c55-0a8f4d2b7e13",
            "0::/kubepods/burstable/pod6f1c2a9e-3b7d-4e21-9c55-0a8f4d2b7e1z",
            "garbage",
        ] {
            assert_eq!(pod_uid_of_cgroup_line(line), None, "{line}");
        }
    }

    #[test]
    fn scan_of_a_fake_proc() {
        let dir = std::env::temp_dir().join(format!("sluice-k8s-proc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let pods = [
            (
                "17",
                "0::/kubepods/pod11111111-2222-3333-4444-555555555555/c1\n",
            ),
            (
                "9",
                "0::/kubepods/pod11111111-2222-3333-4444-555555555555/c2\n",
            ),
            ("30", "0::/system.slice/sshd.service\n"),
            (
                "self",
                "0::/kubepods/pod99999999-2222-3333-4444-555555555555/c\n",
            ),
        ];
        for (pid, cg) in pods {
            std::fs::create_dir_all(dir.join(pid)).unwrap();
            std::fs::write(dir.join(pid).join("cgroup"), cg).unwrap();
        }
        let found = PodPids::scan(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        let found = found.unwrap();
        assert_eq!(found.len(), 1, "only numeric pid directories: {found:?}");
        assert_eq!(found.pids("11111111_2222_3333_4444_555555555555"), &[9, 17]);
        assert!(found
            .pids("99999999-2222-3333-4444-555555555555")
            .is_empty());
        let e = find(&found, &dir, "00000000-2222-3333-4444-555555555555").unwrap_err();
        assert!(e.to_string().contains("no process"), "{e}");
    }
}
