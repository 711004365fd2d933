//! Attachments as bpf_links sluice owns (cgroup hooks, per-netns sk_lookup): detached when
//! dropped, or pinned on bpffs so they outlive the agent (restart without a capture gap) until
//! the next agent takes over.
//!
//! Raw `bpf(2)` calls because aya 0.14 cannot turn a cgroup/getsockopt link into a pinnable
//! `FdLink` (no `TryFrom<CgroupSockoptLink> for FdLink`) and has no `BPF_LINK_UPDATE`.

use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::{Path, PathBuf},
};

const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_LINK_UPDATE: libc::c_long = 29;

/// `bpf_attr` is a union; 64 zeroed bytes cover the fields used here and the kernel accepts a
/// shorter attr than its own (missing tail = zero).
#[repr(C, align(8))]
struct Attr([u8; 64]);

impl Attr {
    fn new() -> Self {
        Self([0; 64])
    }
    fn put_u32(&mut self, off: usize, v: u32) {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
    }
    fn put_u64(&mut self, off: usize, v: u64) {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
    }
}

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid, initialised buffer of the size passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut Attr,
            std::mem::size_of::<Attr>(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn path_cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

/// One program attached to a cgroup through a bpf_link. Dropping it closes the link fd, which
/// detaches the program unless the link was pinned.
#[derive(Debug)]
pub struct CgroupLink {
    /// Program name in the object (also the pin file name).
    pub program: &'static str,
    fd: OwnedFd,
}

impl CgroupLink {
    /// `BPF_LINK_CREATE` of `prog` on `cgroup` for `attach_type` (no flags: cgroup links always
    /// coexist with other programs).
    pub fn create(
        program: &'static str,
        prog: BorrowedFd<'_>,
        cgroup: BorrowedFd<'_>,
        attach_type: u32,
    ) -> io::Result<Self> {
        Ok(Self {
            program,
            fd: link_create(prog, cgroup, attach_type)?,
        })
    }

    /// Pins the link at `path` (`BPF_OBJ_PIN`): it stays attached after the fd is closed.
    pub fn pin(&self, path: &Path) -> io::Result<()> {
        pin(self.fd.as_fd(), path)
    }
}

/// `BPF_LINK_CREATE` of `prog` on `target` (a cgroup or netns fd) for `attach_type`; the link is
/// detached when the returned fd (and every pin of it) is gone.
pub fn link_create(
    prog: BorrowedFd<'_>,
    target: BorrowedFd<'_>,
    attach_type: u32,
) -> io::Result<OwnedFd> {
    let mut attr = Attr::new();
    attr.put_u32(0, prog.as_raw_fd() as u32); // link_create.prog_fd
    attr.put_u32(4, target.as_raw_fd() as u32); // link_create.target_fd
    attr.put_u32(8, attach_type); // link_create.attach_type
    let fd = bpf(BPF_LINK_CREATE, &mut attr)?;
    // SAFETY: the kernel returned a new fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `BPF_LINK_UPDATE`: atomically replaces the program of an attached link (no gap). Fails with
/// `ENOLINK` when the link's target is gone (a netns link whose namespace was deleted).
pub fn link_update(link: BorrowedFd<'_>, new_prog: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = Attr::new();
    attr.put_u32(0, link.as_raw_fd() as u32); // link_update.link_fd
    attr.put_u32(4, new_prog.as_raw_fd() as u32); // link_update.new_prog_fd
    bpf(BPF_LINK_UPDATE, &mut attr).map(|_| ())
}

/// Pins a bpf object (here: a link) at `path` (`BPF_OBJ_PIN`).
pub fn pin(fd: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    let c = path_cstring(path)?;
    let mut attr = Attr::new();
    attr.put_u64(0, c.as_ptr() as u64); // pathname
    attr.put_u32(8, fd.as_raw_fd() as u32); // bpf_fd
    bpf(BPF_OBJ_PIN, &mut attr).map(|_| ())
}

/// Opens a pinned bpf object (`BPF_OBJ_GET`).
pub fn open_pinned(path: &Path) -> io::Result<OwnedFd> {
    let c = path_cstring(path)?;
    let mut attr = Attr::new();
    attr.put_u64(0, c.as_ptr() as u64);
    let fd = bpf(BPF_OBJ_GET, &mut attr)?;
    // SAFETY: the kernel returned a new fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Detaches every link pinned in `dir` (left by [`CgroupLink::pin`] of an earlier agent):
/// opens it, removes the pin, closes it. Returns the pins removed.
pub fn release_pinned(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut removed = Vec::new();
    for entry in entries {
        let path = entry?.path();
        let link = open_pinned(&path)?;
        std::fs::remove_file(&path)?;
        drop(link);
        removed.push(path);
    }
    Ok(removed)
}
