//! `sluice install-cni`: puts sluice-cni on the node like istio-cni's installer does, and keeps
//! it there.
//!
//! 1. Copies the `sluice-cni` binary into the host's CNI bin dir (atomic, mode 0755).
//! 2. Finds the primary network configuration (first `.conf`/`.conflist`/`.json` in name order,
//!    the kubelet's rule), waiting for one to appear, and appends sluice-cni's entry to its
//!    plugin chain ([`conflist`]): a `.conf` becomes a `.conflist`, mode and owner are kept, the
//!    write is atomic and idempotent (never a second entry).
//! 3. Every [`POLL`] it checks again, so a primary CNI that rewrites its file gets the entry
//!    back within one poll, and a removed binary is copied again.
//! 4. On SIGTERM/SIGINT it applies [`OnExit`]. Every running installer holds a shared `flock` on
//!    the lock file (a host path shared by the DaemonSet's pods); `auto` uninstalls only when no
//!    other installer holds it, i.e. when the DaemonSet is deleted, not during a rolling update
//!    where the new pod runs beside the old one.
//!
//! A malformed primary configuration is reported naming the file and left untouched (the
//! installer keeps watching and retries when the file changes). Bad host input (a missing or
//! read-only CNI directory, an unusable lock file) is logged once naming the path and what to
//! do, makes `/healthz/ready` 503 with that reason (`--health-addr`), and is retried with the
//! agent's backoff (1 s doubling to 30 s), never an exit: a pass that fails leaves no temp file
//! and removes the binary it had just installed, so nothing is half-installed.

use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use nix::fcntl::{Flock, FlockArg};
use serde_json::{Map, Value};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

use crate::agent::{health::Health, start_retry::Backoff};

use super::{
    atomic_file::{self, Ownership},
    conflist::{self, Malformed, PLUGIN_TYPE},
    NetConf,
};

/// How often the conf dir and the binary are checked.
pub const POLL: Duration = Duration::from_millis(200);

/// What to do when the installer is told to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnExit {
    /// Remove the entry and the binary unless another installer is running (an upgrade).
    Auto,
    /// Leave everything installed.
    Keep,
    /// Always remove the entry and the binary.
    Uninstall,
}

/// What `sluice install-cni` needs.
#[derive(Clone, Debug)]
pub struct InstallOptions {
    /// The host's CNI bin dir (mounted into the container).
    pub bin_dir: PathBuf,
    /// The host's CNI conf dir.
    pub conf_dir: PathBuf,
    /// The `sluice-cni` binary to copy.
    pub plugin_binary: PathBuf,
    /// sluice-cni's entry in the chain (`type` is set to `sluice-cni`).
    pub entry: Map<String, Value>,
    /// Lock file every running installer holds shared.
    pub lock_file: PathBuf,
    /// Behaviour on SIGTERM/SIGINT.
    pub on_exit: OnExit,
    /// `/healthz/ready` (200 while the entry is installed, else 503 with the reason) and
    /// `/healthz/live` here (the DaemonSet: 15022).
    pub health: Option<SocketAddr>,
}

/// Errors of the installer; each names the file or option.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The primary configuration cannot be edited.
    #[error(transparent)]
    Malformed(#[from] Malformed),
    /// A file operation failed.
    #[error("{op} {path}: {source}{}", io_hint(source))]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// `--plugin-options` is not a valid sluice-cni configuration.
    #[error("--plugin-options: {0}")]
    Options(String),
}

fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> InstallError + 'a {
    move |source| InstallError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// What to do about a host directory that refuses an operation.
fn io_hint(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EROFS) => {
            " (the directory is on a read-only mount: mount the host's CNI directory writable, a \
             hostPath volume without readOnly, and make it writable on the host)"
        }
        Some(libc::ENOENT) => {
            " (the directory does not exist: create it on the host, or fix the hostPath / \
             SLUICE_CNI_BIN_DIR / SLUICE_CNI_CONF_DIR)"
        }
        Some(libc::EACCES | libc::EPERM) => {
            " (permission denied: install-cni must run as root and the host directory be \
             root-writable)"
        }
        _ => "",
    }
}

/// sluice-cni's entry from the options JSON object (the ConfigMap's `cni-plugin-options`),
/// checked the way the plugin will parse it.
pub fn entry_from_options(json: &str) -> Result<Map<String, Value>, InstallError> {
    let bad = |m: String| InstallError::Options(m);
    let mut entry: Map<String, Value> = match serde_json::from_str(json) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return Err(bad("not a JSON object".into())),
        Err(e) => return Err(bad(format!("not valid JSON: {e}"))),
    };
    match entry.get("type").and_then(Value::as_str) {
        None | Some(PLUGIN_TYPE) => {}
        Some(t) => return Err(bad(format!("type: must be {PLUGIN_TYPE}, not {t:?}"))),
    }
    entry.insert("type".into(), PLUGIN_TYPE.into());
    let mut probe = entry.clone();
    probe.insert("cniVersion".into(), "1.0.0".into());
    let bytes = serde_json::to_vec(&probe).expect("a JSON map serializes");
    NetConf::parse(&bytes).map_err(|e| bad(e.msg))?;
    Ok(entry)
}

/// The installed binary's path.
pub fn installed_binary(bin_dir: &Path) -> PathBuf {
    bin_dir.join(PLUGIN_TYPE)
}

/// Copies the plugin binary into the bin dir unless an identical one is there.
fn install_binary(opts: &InstallOptions) -> Result<bool, InstallError> {
    let src = &opts.plugin_binary;
    let bytes = fs::read(src).map_err(io_err("reading the plugin binary", src))?;
    let dst = installed_binary(&opts.bin_dir);
    if fs::read(&dst).is_ok_and(|old| old == bytes) {
        return Ok(false);
    }
    atomic_file::replace(&dst, &bytes, Ownership::new(0o755))
        .map_err(io_err("installing the plugin binary", &dst))?;
    Ok(true)
}

/// The primary configuration's path, if the conf dir has one.
fn primary_conf(conf_dir: &Path) -> Result<Option<PathBuf>, InstallError> {
    let names: Vec<String> = fs::read_dir(conf_dir)
        .map_err(io_err("listing", conf_dir))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    Ok(conflist::primary(names.iter().map(String::as_str)).map(|n| conf_dir.join(n)))
}

/// Writes `edit` (atomic, keeping `from`'s mode and owner) and removes the old `.conf`.
fn apply(edit: &conflist::Edit, from: &Path) -> Result<(), InstallError> {
    let own = Ownership::of(from).map_err(io_err("reading the mode of", from))?;
    let mut bytes = serde_json::to_vec_pretty(&edit.conf).expect("JSON values serialize");
    bytes.push(b'\n');
    atomic_file::replace(&edit.path, &bytes, own).map_err(io_err("writing", &edit.path))?;
    if let Some(old) = &edit.remove {
        atomic_file::remove_if_present(old).map_err(io_err("removing", old))?;
    }
    Ok(())
}

/// What one pass found.
#[derive(Debug, PartialEq, Eq)]
pub enum Pass {
    /// No configuration in the conf dir yet.
    NoPrimary,
    /// The primary already has exactly our entry.
    Unchanged(PathBuf),
    /// The entry was (re)inserted into this file.
    Inserted(PathBuf),
}

/// One pass: binary present (with `refresh_binary`: identical to ours, the first pass; later
/// passes only put it back if it is gone), primary configuration carrying exactly one sluice
/// entry.
pub fn reconcile(opts: &InstallOptions, refresh_binary: bool) -> Result<Pass, InstallError> {
    let bin = installed_binary(&opts.bin_dir);
    let missing = !bin.exists();
    if (refresh_binary || missing) && install_binary(opts)? {
        info!(path = %bin.display(), "sluice-cni binary installed");
    }
    let pass = ensure_entry(opts);
    if pass.is_err() && missing {
        // Not half-installed: a binary no configuration refers to goes again.
        let _ = atomic_file::remove_if_present(&bin);
    }
    pass
}

/// The entry part of [`reconcile`].
fn ensure_entry(opts: &InstallOptions) -> Result<Pass, InstallError> {
    let Some(path) = primary_conf(&opts.conf_dir)? else {
        return Ok(Pass::NoPrimary);
    };
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        // Renamed away between the listing and the read (a .conf we or the CNI replaced).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Pass::NoPrimary),
        Err(e) => return Err(io_err("reading", &path)(e)),
    };
    let conf = conflist::parse(&path, &bytes)?;
    match conflist::with_entry(&path, &conf, &opts.entry) {
        None => Ok(Pass::Unchanged(path)),
        Some(edit) => {
            apply(&edit, &path)?;
            Ok(Pass::Inserted(edit.path))
        }
    }
}

/// Removes sluice's entry from every configuration in the conf dir and the binary. Files that
/// do not parse are not ours to touch and are skipped with a warning.
pub fn uninstall(bin_dir: &Path, conf_dir: &Path) -> Result<(), InstallError> {
    let mut entries: Vec<PathBuf> = fs::read_dir(conf_dir)
        .map_err(io_err("listing", conf_dir))?
        .filter_map(|e| e.ok())
        .filter(|e| conflist::is_conf_name(&e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        let Ok(bytes) = fs::read(&path) else { continue };
        let conf = match conflist::parse(&path, &bytes) {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "skipped during uninstall");
                continue;
            }
        };
        if let Some(edit) = conflist::without_entry(&path, &conf) {
            apply(&edit, &path)?;
            info!(path = %path.display(), "sluice-cni entry removed");
        }
    }
    let bin = installed_binary(bin_dir);
    atomic_file::remove_if_present(&bin).map_err(io_err("removing", &bin))?;
    info!(path = %bin.display(), "sluice-cni binary removed");
    Ok(())
}

/// Runs the installer until SIGTERM/SIGINT, then applies `on_exit`. With `once`, one pass and
/// return (an error if it could not insert the entry).
pub async fn run(opts: InstallOptions, once: bool) -> Result<(), InstallError> {
    if once {
        return match reconcile(&opts, true)? {
            Pass::NoPrimary => Err(InstallError::Io {
                op: "finding the primary CNI config in",
                path: opts.conf_dir.clone(),
                source: std::io::ErrorKind::NotFound.into(),
            }),
            Pass::Unchanged(p) | Pass::Inserted(p) => {
                info!(path = %p.display(), "sluice-cni entry present");
                Ok(())
            }
        };
    }
    let sig = |k| {
        signal(k).map_err(io_err(
            "installing a signal handler for",
            Path::new("install-cni"),
        ))
    };
    let (mut term, mut int) = (sig(SignalKind::terminate())?, sig(SignalKind::interrupt())?);
    let health = match opts.health {
        Some(addr) => Some(Health::bind(addr).map_err(io_err(
            "binding the health endpoint",
            Path::new(&addr.to_string()),
        ))?),
        None => None,
    };
    info!(conf_dir = %opts.conf_dir.display(), bin_dir = %opts.bin_dir.display(), "install-cni watching");
    let mut presence = None;
    let mut last_report = String::new();
    let mut backoff = Backoff::default();
    // The first pass replaces a binary left by an older version; later ones only restore it.
    let mut first = true;
    loop {
        // "An installer runs here" (see `alone`), taken first; retried like any host problem.
        let pass = match presence.is_some() {
            true => reconcile(&opts, first),
            false => hold_shared(&opts.lock_file).and_then(|lock| {
                presence = Some(lock);
                reconcile(&opts, first)
            }),
        };
        first &= pass.is_err();
        // A host problem (a directory or the lock file) is retried with a backoff; a malformed
        // primary config is polled like a healthy one (the primary CNI may be rewriting it).
        let (report, failed, host_problem) = match pass {
            Ok(Pass::Inserted(p)) => {
                info!(path = %p.display(), "sluice-cni entry inserted");
                (String::new(), false, false)
            }
            Ok(Pass::Unchanged(_)) => (String::new(), false, false),
            Ok(Pass::NoPrimary) => (
                format!("waiting for a CNI config in {}", opts.conf_dir.display()),
                false,
                false,
            ),
            Err(e) => {
                let host = matches!(e, InstallError::Io { .. });
                (e.to_string(), true, host)
            }
        };
        if let Some(h) = &health {
            match report.is_empty() {
                true => h.set_ready(true),
                false => h.set_not_ready(&report),
            }
        }
        // Each distinct problem is logged once, not every poll.
        if !report.is_empty() && report != last_report {
            match failed {
                false => info!("{report}"),
                true => error!("{report}; not ready, retrying"),
            }
        }
        last_report = report;
        let delay = match host_problem {
            true => backoff.next_delay(),
            false => {
                backoff.reset();
                POLL
            }
        };
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    drop(health);
    let held = presence.is_some();
    drop(presence);
    let uninstall_now = match opts.on_exit {
        OnExit::Keep => false,
        OnExit::Uninstall => true,
        // Never installed (the lock was never taken): nothing of ours to remove.
        OnExit::Auto => held && alone(&opts.lock_file)?,
    };
    if !uninstall_now {
        info!(on_exit = ?opts.on_exit, "install-cni stopping: leaving sluice-cni installed (another installer runs, or on-exit keep)");
        return Ok(());
    }
    info!("install-cni stopping: uninstalling");
    match uninstall(&opts.bin_dir, &opts.conf_dir) {
        Ok(()) => Ok(()),
        // The host problem the loop reported: the stop itself is clean (no restart helps).
        Err(e) if !last_report.is_empty() => {
            error!(error = %e, "install-cni stopping: cannot uninstall");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

fn open_lock(path: &Path) -> Result<fs::File, InstallError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
    }
    fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_err("opening", path))
}

/// Holds a shared lock on `path` for as long as the value lives: "an installer runs here".
fn hold_shared(path: &Path) -> Result<Flock<fs::File>, InstallError> {
    Flock::lock(open_lock(path)?, FlockArg::LockShared)
        .map_err(|(_, e)| io_err("locking", path)(e.into()))
}

/// Whether no other installer holds the lock (ours released before asking).
fn alone(path: &Path) -> Result<bool, InstallError> {
    Ok(Flock::lock(open_lock(path)?, FlockArg::LockExclusiveNonblock).is_ok())
}
