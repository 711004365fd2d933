//! Is this host's input usable? Classifies the cgroup and pin paths by their filesystem
//! (`statfs` magic: `CGROUP2_SUPER_MAGIC`, `BPF_FS_MAGIC`, ...) before anything is created, so
//! a wrong host path is reported as what it is and what to do, not as the raw errno of a later
//! attach or pin.

use std::path::{Path, PathBuf};

use nix::{
    errno::Errno,
    sys::statfs::{self, statfs, FsType},
};

/// What the ConfigMap's `cgroup:` should say on hybrid hosts.
const HYBRID_HINT: &str = "on hybrid hosts set cgroup: /host/sys/fs/cgroup/unified in the \
     sluice-config ConfigMap (--cgroup)";

/// A host path sluice cannot use; each names the path and what to do.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// `--cgroup` does not exist.
    #[error(
        "cgroup {path} does not exist: point --cgroup (the sluice-config ConfigMap's cgroup:) at \
         the host's cgroup v2 mount or a directory in it"
    )]
    CgroupMissing { path: PathBuf },
    /// `--cgroup` is on another filesystem than cgroup v2.
    #[error("cgroup {path} is not a cgroup v2 directory: {found}")]
    NotCgroup2 { path: PathBuf, found: String },
    /// The pin directory would not be on bpffs.
    #[error(
        "pin directory {path} is not on a bpffs mount ({on} is {fs}): mount bpffs there \
         (`mount -t bpf bpf /sys/fs/bpf`, what the DaemonSet's mount-bpffs init container does) \
         or put --pin-dir under a bpffs mount"
    )]
    NotBpffs {
        path: PathBuf,
        on: PathBuf,
        fs: String,
    },
    /// `statfs` failed for another reason than a missing path.
    #[error("{path}: statfs: {errno}")]
    Statfs { path: PathBuf, errno: Errno },
}

/// A filesystem's usual name, or its magic number.
fn fs_name(t: FsType) -> String {
    let known = [
        (statfs::BPF_FS_MAGIC, "bpffs"),
        (statfs::CGROUP2_SUPER_MAGIC, "cgroup2"),
        (statfs::CGROUP_SUPER_MAGIC, "cgroup (v1)"),
        (statfs::TMPFS_MAGIC, "tmpfs"),
        (statfs::EXT4_SUPER_MAGIC, "ext4"),
        (statfs::XFS_SUPER_MAGIC, "xfs"),
        (statfs::BTRFS_SUPER_MAGIC, "btrfs"),
        (statfs::OVERLAYFS_SUPER_MAGIC, "overlayfs"),
        (statfs::PROC_SUPER_MAGIC, "proc"),
        (statfs::SYSFS_MAGIC, "sysfs"),
    ];
    match known.iter().find(|(m, _)| *m == t) {
        Some((_, name)) => (*name).to_string(),
        None => format!("a filesystem with magic {:#x}", t.0),
    }
}

/// `path` must be a directory of the cgroup v2 hierarchy (the only place cgroup programs
/// attach).
pub fn cgroup2(path: &Path) -> Result<(), HostError> {
    let fs = match statfs(path) {
        Ok(s) => s.filesystem_type(),
        Err(Errno::ENOENT | Errno::ENOTDIR) => {
            return Err(HostError::CgroupMissing {
                path: path.to_path_buf(),
            })
        }
        Err(errno) => {
            return Err(HostError::Statfs {
                path: path.to_path_buf(),
                errno,
            })
        }
    };
    let not = |found: String| HostError::NotCgroup2 {
        path: path.to_path_buf(),
        found,
    };
    match fs {
        statfs::CGROUP2_SUPER_MAGIC if path.is_dir() => Ok(()),
        statfs::CGROUP2_SUPER_MAGIC => Err(not("a file, not a cgroup directory".into())),
        statfs::CGROUP_SUPER_MAGIC => Err(not(format!(
            "it is a cgroup v1 hierarchy (cgroup v1 only host?): sluice needs the unified \
             hierarchy (cgroup v2; boot with systemd.unified_cgroup_hierarchy=1); {HYBRID_HINT}"
        ))),
        statfs::TMPFS_MAGIC => Err(not(format!(
            "it is a tmpfs, the parent of cgroup v1 controllers (hybrid or cgroup v1 only \
             host): sluice needs the cgroup v2 mount; {HYBRID_HINT}"
        ))),
        other => Err(not(format!(
            "it is on {}: point --cgroup at the cgroup v2 mount; {HYBRID_HINT}",
            fs_name(other)
        ))),
    }
}

/// `pin_dir` (or, while it does not exist, the nearest ancestor that does) must be on bpffs:
/// maps and links can only be pinned there.
pub fn pin_dir_on_bpffs(pin_dir: &Path) -> Result<(), HostError> {
    let mut on = pin_dir;
    loop {
        match statfs(on) {
            Ok(s) if s.filesystem_type() == statfs::BPF_FS_MAGIC => return Ok(()),
            Ok(s) => {
                return Err(HostError::NotBpffs {
                    path: pin_dir.to_path_buf(),
                    on: on.to_path_buf(),
                    fs: fs_name(s.filesystem_type()),
                })
            }
            Err(Errno::ENOENT) => match on.parent() {
                Some(p) if !p.as_os_str().is_empty() => on = p,
                _ => return Ok(()),
            },
            Err(errno) => {
                return Err(HostError::Statfs {
                    path: on.to_path_buf(),
                    errno,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_directories_are_named_with_their_filesystem() {
        let tmp = std::env::temp_dir();
        let e = cgroup2(&tmp).unwrap_err().to_string();
        assert!(
            e.contains(&format!("{} is not a cgroup v2 directory", tmp.display())),
            "{e}"
        );
        assert!(e.contains("/host/sys/fs/cgroup/unified"), "{e}");
        let missing = tmp.join("sluice-no-such-cgroup-xyz");
        let e = cgroup2(&missing).unwrap_err().to_string();
        assert!(e.contains("does not exist"), "{e}");
        let pins = tmp.join("sluice-no-such-dir-xyz/pins");
        let e = pin_dir_on_bpffs(&pins).unwrap_err().to_string();
        assert!(
            e.contains(&format!("({} is ", tmp.display())) && e.contains("mount -t bpf"),
            "{e}"
        );
    }

    #[test]
    fn magic_numbers_have_names() {
        assert_eq!(fs_name(statfs::CGROUP_SUPER_MAGIC), "cgroup (v1)");
        assert!(fs_name(FsType(0x1234)).contains("0x1234"));
    }
}
