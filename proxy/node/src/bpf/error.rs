//! Errors of the kernel side; each names the hook, map or path involved.

use std::path::PathBuf;

/// The hint every "kernel cannot do this" error carries.
pub const IPTABLES_HINT: &str =
    "this kernel may lack the hook; use the iptables fallback (`sluice iptables install`)";

/// Errors of the kernel side. Each names the operation and the hook, map or path involved.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    /// Generic "the data path cannot run here".
    #[error("eBPF data path not available: {0}")]
    Unavailable(String),
    /// No cgroup v2 mount found.
    #[error("no cgroup v2 mount found (tried {tried})")]
    NoCgroup2 { tried: String },
    /// A host path is unusable (missing cgroup, cgroup v1 or a plain directory as the attach
    /// target, pin directory off bpffs); checked before anything is created.
    #[error(transparent)]
    Host(#[from] super::host_check::HostError),
    /// bpffs could not be mounted or used.
    #[error(
        "bpffs at {path}: {reason}; mount bpffs on the host (`mount -t bpf bpf /sys/fs/bpf`, what \
         the DaemonSet's mount-bpffs init container does)"
    )]
    Bpffs { path: PathBuf, reason: String },
    /// The pin directory could not be created or cleaned.
    #[error("pin directory {path}: {source}")]
    PinDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The embedded object (or one of its maps) could not be loaded.
    #[error("loading the eBPF object (maps pinned under {pin_dir}): {source}")]
    Object {
        pin_dir: PathBuf,
        #[source]
        source: Box<aya::EbpfError>,
    },
    /// A program is missing from the object (build problem).
    #[error("program {program} (hook {hook}) missing from the eBPF object")]
    ProgramMissing {
        program: &'static str,
        hook: &'static str,
    },
    /// The kernel refused a program: verifier error or missing program type.
    #[error("loading program {program} (hook {hook}) failed: {detail}; {IPTABLES_HINT}")]
    ProgramLoad {
        program: &'static str,
        hook: &'static str,
        /// The error with its causes (errno, verifier log).
        detail: String,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// Attaching a program failed.
    #[error("attaching {hook} to {target}: {detail}; {IPTABLES_HINT}")]
    Attach {
        hook: &'static str,
        target: String,
        /// The error with its causes (errno).
        detail: String,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// Creating a cgroup link failed (`BPF_LINK_CREATE`).
    #[error("attaching {hook} to cgroup {target}: {source}; {IPTABLES_HINT}")]
    AttachLink {
        hook: &'static str,
        target: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Pinning or taking over pinned links failed.
    #[error("pinned links under {path}: {source}")]
    Links {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The cgroup directory could not be opened.
    #[error("opening cgroup {path}: {source}")]
    Cgroup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Attaching, adopting or detaching a pod's sk_lookup link failed.
    #[error("inbound capture (sk_lookup) of netns {netns_cookie:#x}: {op}: {source}")]
    Inbound {
        netns_cookie: u64,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A socket given as a pod's inbound listener was refused before it reached the map.
    #[error("inbound listener of netns {netns_cookie:#x}: {reason}")]
    InboundListener { netns_cookie: u64, reason: String },
    /// A map is missing from the object.
    #[error("map {map} missing from the eBPF object")]
    MapMissing { map: &'static str },
    /// A policy was rejected before it reached the kernel.
    #[error("invalid netns policy: field {field}: {reason}")]
    InvalidPolicy { field: &'static str, reason: String },
    /// A map operation failed.
    #[error("map {map}: {op}: {source}")]
    Map {
        map: &'static str,
        op: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },
}

impl BpfError {
    /// Maps an aya map error to [`BpfError::Map`] naming the map and operation.
    pub(crate) fn map(
        map: &'static str,
        op: &'static str,
    ) -> impl FnOnce(aya::maps::MapError) -> Self {
        move |source| Self::Map {
            map,
            op,
            source: Box::new(source),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_hook_names_the_hook_and_the_iptables_fallback() {
        let e = BpfError::ProgramLoad {
            program: "sluice_connect4",
            hook: "cgroup/connect4",
            detail: "the BPF_PROG_LOAD syscall returned Invalid argument (os error 22)".into(),
            source: Box::new(aya::programs::ProgramError::NotLoaded),
        };
        let msg = e.to_string();
        assert!(msg.contains("cgroup/connect4"), "{msg}");
        assert!(msg.contains("sluice iptables install"), "{msg}");
        assert!(msg.contains("os error 22"), "{msg}");
    }
}
