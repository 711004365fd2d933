//! A unique bpffs directory for a test's pinned maps, removed (with its pins) on drop.

use std::path::{Path, PathBuf};

use crate::unique_name;

/// `/sys/fs/bpf/sl-<tag>-<pid>-<n>`, created by [`PinDir::new`] (bpffs is mounted if needed).
pub struct PinDir {
    path: PathBuf,
}

impl PinDir {
    pub fn new(tag: &str) -> Self {
        let root = Path::new("/sys/fs/bpf");
        sluice_node::bpf::ensure_bpffs(root)
            .unwrap_or_else(|e| panic!("bpffs at {}: {e}", root.display()));
        let path = root.join(unique_name(tag));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Names of the pins currently in the directory.
    pub fn entries(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.path)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        // Unlinking a pin drops the reference it holds; bpffs supports rmdir of empty dirs.
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!(
                    "warning: could not remove pin dir {}: {e}",
                    self.path.display()
                );
            }
        }
    }
}
