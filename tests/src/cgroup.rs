//! cgroup v2 subtrees for tests, and moving the test process in and out of one.
//!
//! cgroup programs only see sockets created by tasks inside the attached cgroup (accepted sockets
//! inherit the listener's cgroup). In cgroup v2 every thread of a process shares its cgroup, so a
//! test that plays the proxy moves the whole test process with [`Cgroup::enter_process`]; a
//! process-wide lock keeps two tests of one binary from doing that at the same time.

use std::{
    ffi::{CStr, CString},
    path::{Path, PathBuf},
    sync::{Mutex, MutexGuard},
    time::Duration,
};

use crate::unique_name;

static PROCESS_CGROUP_LOCK: Mutex<()> = Mutex::new(());

/// In a forked child before `exec` (a `pre_exec` closure): moves the calling process into the
/// cgroup whose `cgroup.procs` is `procs` (writing "0" moves the writer itself).
///
/// # Safety
/// Only async-signal-safe calls (open, write, close) on data prepared before the fork; it
/// allocates nothing, so it may run between fork and exec.
pub(crate) unsafe fn join_cgroup_in_child(procs: &CStr) -> std::io::Result<()> {
    // SAFETY: see the function's contract; `procs` is a valid NUL-terminated path.
    unsafe {
        let f = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if f < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let n = libc::write(f, b"0".as_ptr().cast(), 1);
        libc::close(f);
        if n != 1 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A cgroup v2 directory `sl-<tag>-<pid>-<n>` under the detected cgroup v2 root (never the root
/// itself). Removed on drop (after its processes have left).
pub struct Cgroup {
    path: PathBuf,
}

impl Cgroup {
    pub fn new(tag: &str) -> Self {
        let root = sluice_node::bpf::default_cgroup_root()
            .unwrap_or_else(|e| panic!("cgroup v2 root: {e}"));
        let path = root.join(unique_name(tag));
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A child cgroup `name` (e.g. named like a kubelet pod cgroup); removed on drop, so drop
    /// it (and its processes) before its parent.
    pub fn child(&self, name: &str) -> Self {
        let path = self.path.join(name);
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        Self { path }
    }

    /// Pids currently in the cgroup.
    pub fn pids(&self) -> Vec<u32> {
        std::fs::read_to_string(self.path.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// `<cgroup>/cgroup.procs` as a C string, prepared before a fork for
    /// [`join_cgroup_in_child`].
    pub(crate) fn procs_cstring(&self) -> CString {
        CString::new(
            self.path
                .join("cgroup.procs")
                .into_os_string()
                .into_encoded_bytes(),
        )
        .expect("cgroup path without NUL")
    }

    /// Moves the whole test process into this cgroup until the guard drops (then it goes back to
    /// the cgroup it came from). Serialised process-wide.
    pub fn enter_process(&self) -> ProcessInCgroup {
        let lock = PROCESS_CGROUP_LOCK
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let original = current_cgroup();
        move_self(&self.path);
        ProcessInCgroup {
            original,
            _lock: lock,
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // A child that just exited may linger for a moment: retry rmdir on EBUSY.
        for _ in 0..50 {
            match std::fs::remove_dir(&self.path) {
                Ok(()) => return,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        eprintln!("warning: could not remove cgroup {}", self.path.display());
    }
}

/// The test process is inside a [`Cgroup`]; dropping this moves it back.
pub struct ProcessInCgroup {
    original: PathBuf,
    _lock: MutexGuard<'static, ()>,
}

impl ProcessInCgroup {
    /// The cgroup the process came from.
    pub fn original(&self) -> &Path {
        &self.original
    }
}

impl Drop for ProcessInCgroup {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(self.original.join("cgroup.procs"), "0") {
            eprintln!(
                "warning: could not move back to {}: {e}",
                self.original.display()
            );
        }
    }
}

/// The calling process's cgroup v2 directory (from `/proc/self/cgroup`).
pub fn current_cgroup() -> PathBuf {
    let root =
        sluice_node::bpf::default_cgroup_root().unwrap_or_else(|e| panic!("cgroup v2 root: {e}"));
    let text = std::fs::read_to_string("/proc/self/cgroup").expect("read /proc/self/cgroup");
    let rel = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or_else(|| panic!("no cgroup v2 line in /proc/self/cgroup:\n{text}"));
    root.join(rel.trim_start_matches('/'))
}

fn move_self(path: &Path) {
    // "0" means the writing process (all of its threads).
    std::fs::write(path.join("cgroup.procs"), "0")
        .unwrap_or_else(|e| panic!("move test process into {}: {e}", path.display()));
}
