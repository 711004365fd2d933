//! Network namespaces: opening a pod's netns, reading its cookie, and making sockets inside it.
//!
//! A socket's netns is fixed when `socket()` runs, so "a socket in the pod" means: switch the
//! calling thread into the pod netns with `setns`, call `socket()`, switch back. [`EnterGuard`]
//! does the switch back on drop (also on panic). Listeners are bound on a short-lived helper thread
//! so no runtime thread ever sits in a foreign netns across an `.await`.

use std::{
    io,
    net::{SocketAddr, TcpListener},
    os::{
        fd::{AsFd, AsRawFd, OwnedFd},
        unix::fs::OpenOptionsExt as _,
    },
    path::{Path, PathBuf},
};

use nix::sched::{setns, CloneFlags};

/// Directory `ip netns add NAME` creates its bind mounts in.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// Errors opening or using a network namespace; each names the netns path.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The netns path does not exist or cannot be opened.
    #[error("network namespace {path}: cannot open: {source}")]
    Open { path: PathBuf, source: io::Error },
    /// `setns` into the netns failed.
    #[error("network namespace {path}: setns failed: {source}")]
    Enter { path: PathBuf, source: io::Error },
    /// A socket operation inside the netns failed.
    #[error("network namespace {path}: {op}: {source}")]
    Socket {
        path: PathBuf,
        op: String,
        source: io::Error,
    },
}

/// Turns `NAME` into `/run/netns/NAME`; anything containing a `/` is taken as a path.
pub fn resolve(name_or_path: &str) -> PathBuf {
    if name_or_path.contains('/') {
        PathBuf::from(name_or_path)
    } else {
        Path::new(NETNS_RUN_DIR).join(name_or_path)
    }
}

/// An open network namespace (the fd keeps it alive even if its bind mount is removed).
#[derive(Debug)]
pub struct Netns {
    fd: OwnedFd,
    path: PathBuf,
}

impl Netns {
    /// Opens a netns by name (`/run/netns/NAME`) or path and checks that it is one.
    pub fn open(name_or_path: &str) -> Result<Self, NetnsError> {
        let path = resolve(name_or_path);
        // O_NONBLOCK: opening a FIFO (or another special file) named by mistake or malice must
        // not wait for a writer while the caller holds the agent's registry; the file type is
        // checked right after.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|source| NetnsError::Open {
                path: path.clone(),
                source,
            })?;
        // NS_GET_NSTYPE would be exact; a netns file is an nsfs inode, which st_dev/statfs shows.
        let st = nix::sys::statfs::fstatfs(&file).map_err(|e| NetnsError::Open {
            path: path.clone(),
            source: e.into(),
        })?;
        if st.filesystem_type() != nix::sys::statfs::NSFS_MAGIC {
            return Err(NetnsError::Open {
                path,
                source: io::Error::new(io::ErrorKind::InvalidInput, "not a namespace file"),
            });
        }
        Ok(Self {
            fd: file.into(),
            path,
        })
    }

    /// The netns of the calling thread.
    pub fn current() -> Result<Self, NetnsError> {
        Self::open("/proc/thread-self/ns/net")
    }

    /// Path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Switches the calling thread into this netns until the guard drops. Do not `.await` while
    /// holding it: the task could move to another thread.
    pub fn enter(&self) -> Result<EnterGuard, NetnsError> {
        let back = Self::current()?;
        setns(self.fd.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| NetnsError::Enter {
            path: self.path.clone(),
            source: e.into(),
        })?;
        Ok(EnterGuard { back })
    }

    /// Runs `f` on a fresh helper thread that has entered this netns, and returns its result.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
        std::thread::scope(|s| {
            s.spawn(|| {
                setns(self.fd.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| {
                    NetnsError::Enter {
                        path: self.path.clone(),
                        source: e.into(),
                    }
                })?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// The netns cookie (`SO_NETNS_COOKIE` of a socket created inside it): the key of the
    /// kernel's per-netns maps.
    pub fn cookie(&self) -> Result<u64, NetnsError> {
        let sock_err = |op: &str, source: io::Error| NetnsError::Socket {
            path: self.path.clone(),
            op: op.to_string(),
            source,
        };
        let sock = {
            let _in = self.enter()?;
            // SAFETY: plain socket(2); the fd is owned right away.
            let fd =
                unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
            if fd < 0 {
                return Err(sock_err("socket", io::Error::last_os_error()));
            }
            // SAFETY: fd is a fresh, valid descriptor nobody else owns.
            unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) }
        };
        crate::bpf::netns_cookie_of(sock.as_fd())
            .map_err(|e| sock_err("getsockopt(SO_NETNS_COOKIE)", e))
    }

    /// Binds a TCP listener at `addr` inside this netns (on a helper thread). IPv6 listeners are
    /// v6-only so the IPv4 and IPv6 listeners of a pod can share a port.
    pub fn bind_tcp(&self, addr: SocketAddr) -> Result<TcpListener, NetnsError> {
        self.run(|| bind_tcp_here(addr))?
            .map_err(|source| NetnsError::Socket {
                path: self.path.clone(),
                op: format!("bind {addr}"),
                source,
            })
    }
}

impl AsFd for Netns {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Binds a listening TCP socket in the calling thread's netns (SO_REUSEADDR; v6-only for IPv6),
/// non-blocking so tokio can adopt it. Needs no runtime.
pub fn bind_tcp_here(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.cloexec(),
        Some(Protocol::TCP),
    )?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.set_reuse_address(true)?;
    sock.bind(&addr.into())?;
    sock.listen(1024)?;
    sock.set_nonblocking(true)?;
    Ok(sock.into())
}

/// `setsockopt(fd, level, name, &value, 4)`.
pub fn set_int_opt(sock: &impl AsRawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: value is a live c_int and the length matches.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Puts the thread back into the netns it came from when dropped.
pub struct EnterGuard {
    back: Netns,
}

impl Drop for EnterGuard {
    fn drop(&mut self) {
        if let Err(e) = setns(self.back.fd.as_fd(), CloneFlags::CLONE_NEWNET) {
            // A thread stuck in a pod netns would open later sockets in the wrong place: stop.
            panic!("cannot return to netns {}: {e}", self.back.path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_names_and_paths() {
        assert_eq!(resolve("pod1"), PathBuf::from("/run/netns/pod1"));
        assert_eq!(resolve("/proc/1/ns/net"), PathBuf::from("/proc/1/ns/net"));
    }

    #[test]
    fn a_fifo_is_refused_at_once_not_waited_on() {
        let dir = std::env::temp_dir().join(format!("sluice-fifo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("pod");
        let _ = std::fs::remove_file(&fifo);
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let path = fifo.to_str().unwrap().to_string();
        // A blocking open of a FIFO with no writer never returns: run it on a thread and bound it.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(Netns::open(&path).map(|_| ()).map_err(|e| e.to_string()));
        });
        let got = rx.recv_timeout(std::time::Duration::from_secs(2));
        std::fs::remove_dir_all(&dir).unwrap();
        let err = got.expect("open returned within 2 s").unwrap_err();
        assert!(err.contains("not a namespace file"), "{err}");
    }

    #[test]
    fn missing_netns_is_named() {
        let err = Netns::open("sluice-no-such-netns-xyz")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/run/netns/sluice-no-such-netns-xyz"), "{err}");
    }
}
