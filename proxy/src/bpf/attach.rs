//! The program table: which program goes to which hook, and loading/attaching them.

use std::{fs::File, path::Path};

use aya::{
    maps::sock::SockMapFd,
    programs::{CgroupAttachMode, Program},
    Ebpf,
};

use super::BpfError;

/// Where a program attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The cgroup given in `LoadOptions::cgroup`.
    Cgroup,
    /// The SockHash of captured connections.
    SockHash,
}

/// A program of the object and its hook.
#[derive(Clone, Copy, Debug)]
pub struct Hook {
    /// Function name in the eBPF object.
    pub program: &'static str,
    /// Kernel hook (section name), used in errors and `bpftool` output.
    pub hook: &'static str,
    pub target: Target,
}

/// Every program sluice attaches, in attach order (sockops before connect, so no captured
/// connection can establish without being tracked).
pub const HOOKS: [Hook; 7] = [
    Hook {
        program: "sluice_getsockopt",
        hook: "cgroup/getsockopt",
        target: Target::Cgroup,
    },
    Hook {
        program: "sluice_getpeername4",
        hook: "cgroup/getpeername4",
        target: Target::Cgroup,
    },
    Hook {
        program: "sluice_getpeername6",
        hook: "cgroup/getpeername6",
        target: Target::Cgroup,
    },
    Hook {
        program: "sluice_sk_msg",
        hook: "sk_msg",
        target: Target::SockHash,
    },
    Hook {
        program: "sluice_sockops",
        hook: "sockops",
        target: Target::Cgroup,
    },
    Hook {
        program: "sluice_connect4",
        hook: "cgroup/connect4",
        target: Target::Cgroup,
    },
    Hook {
        program: "sluice_connect6",
        hook: "cgroup/connect6",
        target: Target::Cgroup,
    },
];

/// Loads every program and attaches it. The links live inside `ebpf`: dropping it detaches.
pub fn load_and_attach(
    ebpf: &mut Ebpf,
    cgroup: &Path,
    sockhash: &SockMapFd,
) -> Result<(), BpfError> {
    let cgroup_fd = File::open(cgroup).map_err(|source| BpfError::Cgroup {
        path: cgroup.to_path_buf(),
        source,
    })?;
    for h in HOOKS {
        let prog = ebpf
            .program_mut(h.program)
            .ok_or(BpfError::ProgramMissing {
                program: h.program,
                hook: h.hook,
            })?;
        let load_err = |e: aya::programs::ProgramError| BpfError::ProgramLoad {
            program: h.program,
            hook: h.hook,
            detail: chain(&e),
            source: Box::new(e),
        };
        let target = match h.target {
            Target::Cgroup => cgroup.display().to_string(),
            Target::SockHash => sluice_common::MAP_SOCKS.to_string(),
        };
        let attach_err = |e: aya::programs::ProgramError| BpfError::Attach {
            hook: h.hook,
            target: target.clone(),
            detail: chain(&e),
            source: Box::new(e),
        };
        // aya attaches through bpf_link on kernels >= 5.7, and the kernel refuses any flag there
        // (cgroup links always coexist with other programs): `Single` means flags = 0.
        let mode = CgroupAttachMode::Single;
        match prog {
            Program::CgroupSockAddr(p) => {
                load(p.load(), load_err)?;
                p.attach(&cgroup_fd, mode).map_err(attach_err)?;
            }
            Program::SockOps(p) => {
                load(p.load(), load_err)?;
                p.attach(&cgroup_fd, mode).map_err(attach_err)?;
            }
            Program::CgroupSockopt(p) => {
                load(p.load(), load_err)?;
                p.attach(&cgroup_fd, mode).map_err(attach_err)?;
            }
            Program::SkMsg(p) => {
                load(p.load(), load_err)?;
                p.attach(sockhash).map_err(attach_err)?;
            }
            other => {
                return Err(BpfError::Unavailable(format!(
                    "program {} has unexpected type {:?} (hook {})",
                    h.program,
                    other.prog_type(),
                    h.hook
                )))
            }
        }
    }
    Ok(())
}

fn load(
    r: Result<(), aya::programs::ProgramError>,
    err: impl FnOnce(aya::programs::ProgramError) -> BpfError,
) -> Result<(), BpfError> {
    match r {
        // A pinned program reused by a second load is already loaded.
        Err(aya::programs::ProgramError::AlreadyLoaded) => Ok(()),
        r => r.map_err(err),
    }
}

/// `err: cause: cause...`, so a syscall's errno is not lost behind "`bpf_link_create` failed".
fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}
