//! What a failed start attempt created, removed again: the agent's start either completes or
//! leaves the host as it found it (no half-installed pins, links or control socket directory).
//!
//! [`Snapshot::take`] lists the pin directory (recursively) and notes which of its ancestors and
//! the control socket's directory exist; [`Snapshot::remove_new`] removes every entry that was
//! not there, deepest first, and the directories the attempt created. Pins an earlier agent left
//! (adopted state) are never touched. Call it after the attempt's data path was dropped, so an
//! unpinned link detaches and its programs go.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
};

use tracing::{info, warn};

/// The host paths a start attempt may create, as they were before it.
#[derive(Debug)]
pub struct Snapshot {
    pin_dir: PathBuf,
    pins: HashSet<PathBuf>,
    /// The pin dir and its ancestors that did not exist, deepest first.
    missing_dirs: Vec<PathBuf>,
    /// The control socket's directory, if it did not exist.
    missing_control_dir: Option<PathBuf>,
}

impl Snapshot {
    /// Notes what exists now.
    pub fn take(pin_dir: &Path, control: &Path) -> Self {
        let missing_dirs = pin_dir
            .ancestors()
            .take_while(|p| !p.as_os_str().is_empty() && !p.exists())
            .map(Path::to_path_buf)
            .collect();
        Self {
            pin_dir: pin_dir.to_path_buf(),
            pins: walk(pin_dir).into_iter().collect(),
            missing_dirs,
            missing_control_dir: control
                .parent()
                .filter(|d| !d.exists())
                .map(Path::to_path_buf),
        }
    }

    /// Removes what appeared since [`Snapshot::take`]; returns how many paths were removed.
    pub fn remove_new(&self) -> usize {
        let mut new: Vec<PathBuf> = walk(&self.pin_dir)
            .into_iter()
            .filter(|p| !self.pins.contains(p))
            .collect();
        // Children before their directory.
        new.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        let dirs = self.missing_dirs.iter().chain(&self.missing_control_dir);
        let mut removed = 0;
        for p in new.iter().chain(dirs) {
            let r = match p.is_dir() {
                true => std::fs::remove_dir(p),
                false => std::fs::remove_file(p),
            };
            match r {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    warn!(path = %p.display(), error = %e, "cannot remove what the failed start created")
                }
            }
        }
        if removed > 0 {
            info!(removed, pin_dir = %self.pin_dir.display(), "removed what the failed start created");
        }
        removed
    }
}

/// Every path under `dir` (not `dir` itself); empty when it does not exist.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_only_what_appeared() {
        let root = std::env::temp_dir().join(format!("sl-leftovers-{}", std::process::id()));
        let pins = root.join("pins");
        std::fs::create_dir_all(pins.join("old")).unwrap();
        std::fs::write(pins.join("old/map"), b"").unwrap();
        let control = root.join("run/agent.sock");
        let snap = Snapshot::take(&pins.join("sluice"), &control);
        // The attempt: a pin dir with maps and links, the control socket's directory.
        std::fs::create_dir_all(pins.join("sluice/links")).unwrap();
        std::fs::write(pins.join("sluice/map"), b"").unwrap();
        std::fs::write(pins.join("sluice/links/l"), b"").unwrap();
        std::fs::create_dir_all(control.parent().unwrap()).unwrap();
        assert_eq!(snap.remove_new(), 5);
        assert!(!pins.join("sluice").exists());
        assert!(!root.join("run").exists());
        assert!(pins.join("old/map").exists(), "earlier state kept");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
