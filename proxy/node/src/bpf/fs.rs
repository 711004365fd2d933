//! Filesystem side of the data path: finding the cgroup v2 mount and mounting bpffs.

use std::path::{Path, PathBuf};

use nix::{
    mount::{mount, MsFlags},
    sys::statfs::{statfs, BPF_FS_MAGIC, CGROUP2_SUPER_MAGIC},
};

use super::BpfError;

/// Hybrid hosts mount cgroup v2 here (cgroup v1 controllers stay at /sys/fs/cgroup/<ctrl>).
pub const HYBRID_CGROUP2: &str = "/sys/fs/cgroup/unified";
/// Unified hosts mount cgroup v2 at the usual place.
pub const UNIFIED_CGROUP2: &str = "/sys/fs/cgroup";

fn is_fs(path: &Path, magic: nix::sys::statfs::FsType) -> bool {
    statfs(path)
        .map(|s| s.filesystem_type() == magic)
        .unwrap_or(false)
}

/// The cgroup v2 mount: `/sys/fs/cgroup/unified` on hybrid hosts, `/sys/fs/cgroup` on unified ones.
pub fn default_cgroup_root() -> Result<PathBuf, BpfError> {
    for candidate in [HYBRID_CGROUP2, UNIFIED_CGROUP2] {
        let p = Path::new(candidate);
        if is_fs(p, CGROUP2_SUPER_MAGIC) {
            return Ok(p.to_path_buf());
        }
    }
    Err(BpfError::NoCgroup2 {
        tried: format!("{HYBRID_CGROUP2}, {UNIFIED_CGROUP2}"),
    })
}

/// Checks that `path` is a directory of the cgroup v2 hierarchy (the only place cgroup programs
/// attach), so a wrong `--cgroup` is refused before anything is pinned or attached; the error
/// says what the path is instead (missing, cgroup v1, tmpfs, ...; see [`super::host_check`]).
pub fn check_cgroup2(path: &Path) -> Result<(), BpfError> {
    Ok(super::host_check::cgroup2(path)?)
}

/// Makes sure bpffs is mounted at `mount_point` (mounting it when it is not).
pub fn ensure_bpffs(mount_point: &Path) -> Result<(), BpfError> {
    if is_fs(mount_point, BPF_FS_MAGIC) {
        return Ok(());
    }
    std::fs::create_dir_all(mount_point).map_err(|e| BpfError::Bpffs {
        path: mount_point.to_path_buf(),
        reason: format!("mkdir: {e}"),
    })?;
    mount(
        Some("bpf"),
        mount_point,
        Some("bpf"),
        MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| BpfError::Bpffs {
        path: mount_point.to_path_buf(),
        reason: format!("mount -t bpf: {e}"),
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_cgroup2_directories_are_attach_targets() {
        let err = check_cgroup2(Path::new("/tmp")).unwrap_err().to_string();
        assert!(
            err.contains("/tmp") && err.contains("not a cgroup v2"),
            "{err}"
        );
        let root = default_cgroup_root().expect("this host has a cgroup v2 mount");
        check_cgroup2(&root).expect("the detected root is a cgroup v2 directory");
        let procs = root.join("cgroup.procs");
        assert!(check_cgroup2(&procs).is_err(), "a file is not a cgroup");
    }
}
