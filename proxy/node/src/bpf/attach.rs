//! The program table: which program goes to which hook, and loading/attaching them.

use std::{fs::File, os::fd::AsFd, path::Path};

use aya::{
    maps::sock::SockMapFd,
    programs::{sk_msg::SkMsgLinkId, Program},
    Ebpf,
};

use super::{link::CgroupLink, BpfError};

/// Where a program attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The cgroup given in `LoadOptions::cgroup`, with this `bpf_attach_type`.
    Cgroup(u32),
    /// The SockHash of captured connections.
    SockHash,
    /// A pod's network namespace, one link per netns ([`super::Datapath::attach_inbound`]);
    /// `load` only loads the program.
    Netns,
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

// enum bpf_attach_type values (uapi/linux/bpf.h).
const BPF_CGROUP_SOCK_OPS: u32 = 3;
const BPF_CGROUP_INET4_CONNECT: u32 = 10;
const BPF_CGROUP_INET6_CONNECT: u32 = 11;
const BPF_CGROUP_GETSOCKOPT: u32 = 21;
const BPF_CGROUP_INET4_GETPEERNAME: u32 = 29;
const BPF_CGROUP_INET6_GETPEERNAME: u32 = 30;

/// Every program sluice attaches, in attach order (sockops before connect, so no captured
/// connection can establish without being tracked). sk_lookup is only loaded here, so a kernel
/// or verifier problem shows at `load`; the instances linked to pods are loaded per netns by
/// `Datapath::attach_inbound` (each with its netns cookie baked in).
pub const HOOKS: [Hook; 8] = [
    Hook {
        program: "sluice_getsockopt",
        hook: "cgroup/getsockopt",
        target: Target::Cgroup(BPF_CGROUP_GETSOCKOPT),
    },
    Hook {
        program: "sluice_getpeername4",
        hook: "cgroup/getpeername4",
        target: Target::Cgroup(BPF_CGROUP_INET4_GETPEERNAME),
    },
    Hook {
        program: "sluice_getpeername6",
        hook: "cgroup/getpeername6",
        target: Target::Cgroup(BPF_CGROUP_INET6_GETPEERNAME),
    },
    Hook {
        program: "sluice_sk_msg",
        hook: "sk_msg",
        target: Target::SockHash,
    },
    Hook {
        program: "sluice_sockops",
        hook: "sockops",
        target: Target::Cgroup(BPF_CGROUP_SOCK_OPS),
    },
    Hook {
        program: "sluice_connect4",
        hook: "cgroup/connect4",
        target: Target::Cgroup(BPF_CGROUP_INET4_CONNECT),
    },
    Hook {
        program: "sluice_connect6",
        hook: "cgroup/connect6",
        target: Target::Cgroup(BPF_CGROUP_INET6_CONNECT),
    },
    Hook {
        program: super::inbound::SK_LOOKUP_PROGRAM,
        hook: "sk_lookup",
        target: Target::Netns,
    },
];

/// What [`load_and_attach`] attached.
pub struct Attached {
    /// The cgroup links (dropping one detaches it).
    pub links: Vec<CgroupLink>,
    /// The sk_msg attachment, owned by the program inside `Ebpf` (detached when it drops).
    pub sk_msg: SkMsgLinkId,
}

/// Loads every program and attaches it: cgroup hooks through links we own, sk_msg through aya.
pub fn load_and_attach(
    ebpf: &mut Ebpf,
    cgroup: &Path,
    sockhash: &SockMapFd,
) -> Result<Attached, BpfError> {
    let cgroup_fd = File::open(cgroup).map_err(|source| BpfError::Cgroup {
        path: cgroup.to_path_buf(),
        source,
    })?;
    let mut links = Vec::new();
    let mut sk_msg = None;
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
        match (prog, h.target) {
            (Program::CgroupSockAddr(p), Target::Cgroup(_)) => load(|| p.load(), load_err)?,
            (Program::SockOps(p), Target::Cgroup(_)) => load(|| p.load(), load_err)?,
            (Program::CgroupSockopt(p), Target::Cgroup(_)) => load(|| p.load(), load_err)?,
            (Program::SkLookup(p), Target::Netns) => {
                load(|| p.load(), load_err)?;
                continue;
            }
            (Program::SkMsg(p), Target::SockHash) => {
                load(|| p.load(), load_err)?;
                let id = p.attach(sockhash).map_err(|e| BpfError::Attach {
                    hook: h.hook,
                    target: sluice_common::MAP_SOCKS.to_string(),
                    detail: chain(&e),
                    source: Box::new(e),
                })?;
                sk_msg = Some(id);
                continue;
            }
            (other, _) => {
                return Err(BpfError::Unavailable(format!(
                    "program {} has unexpected type {:?} (hook {})",
                    h.program,
                    other.prog_type(),
                    h.hook
                )))
            }
        }
        let Target::Cgroup(attach_type) = h.target else {
            unreachable!("sk_msg and sk_lookup continued above")
        };
        let prog = ebpf.program(h.program).ok_or(BpfError::ProgramMissing {
            program: h.program,
            hook: h.hook,
        })?;
        let prog_fd = prog.fd().map_err(load_err_of(h))?;
        let link = CgroupLink::create(h.program, prog_fd.as_fd(), cgroup_fd.as_fd(), attach_type)
            .map_err(|source| BpfError::AttachLink {
            hook: h.hook,
            target: cgroup.to_path_buf(),
            source,
        })?;
        links.push(link);
    }
    let sk_msg = sk_msg.ok_or(BpfError::ProgramMissing {
        program: "sluice_sk_msg",
        hook: "sk_msg",
    })?;
    Ok(Attached { links, sk_msg })
}

fn load_err_of(h: Hook) -> impl FnOnce(aya::programs::ProgramError) -> BpfError {
    move |e| BpfError::ProgramLoad {
        program: h.program,
        hook: h.hook,
        detail: chain(&e),
        source: Box::new(e),
    }
}

fn load(
    load: impl FnMut() -> Result<(), aya::programs::ProgramError>,
    err: impl FnOnce(aya::programs::ProgramError) -> BpfError,
) -> Result<(), BpfError> {
    match super::prog_load::load_retrying(load) {
        // A pinned program reused by a second load is already loaded.
        Err(aya::programs::ProgramError::AlreadyLoaded) => Ok(()),
        r => r.map_err(err),
    }
}

/// `err: cause: cause...`, so a syscall's errno is not lost behind "`bpf_link_create` failed".
pub(super) fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}
