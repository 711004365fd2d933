//! Inbound capture: one sk_lookup link per pod netns, the inbound listener SockHash, and their
//! hand-over across an agent restart.
//!
//! sk_lookup cannot ask for the netns cookie, so [`Datapath::attach_inbound`] loads one instance
//! of the program per pod, with the pod's cookie as a load-time constant
//! (`sluice_common::SK_LOOKUP_NETNS_GLOBAL`), and links it to the pod's netns; the link keeps
//! that instance alive. The links are fds this process owns (closing one detaches it), like the cgroup links:
//! [`Datapath::persist`] pins them as `<pin_dir>/links/sk_lookup_<netns cookie>` and the next
//! [`Datapath::load`] adopts each pin with `BPF_LINK_UPDATE` (its own program replaces the old one
//! in place, so inbound capture never stops), then removes the pin. A netns link cannot be
//! re-created from a cookie, which is why adoption updates the link instead of re-attaching.

use std::{
    collections::BTreeMap,
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
    path::Path,
};

use aya::programs::SkLookup;
use nix::sched::{setns, CloneFlags};
use sluice_common::{ListenerKey, AF_INET, AF_INET6, MAP_INBOUND_LISTENERS};

use super::{
    collect_keys, gone, instance_loader::InstanceLoader, link, netns_cookie_of, BpfError, Datapath,
    LINKS_DIR,
};

/// Name of the sk_lookup program in the object.
pub(super) const SK_LOOKUP_PROGRAM: &str = "sluice_sk_lookup";
/// `BPF_SK_LOOKUP` (enum bpf_attach_type).
const BPF_SK_LOOKUP: u32 = 36;
/// Pin name prefix of a persisted sk_lookup link: `<pin_dir>/links/sk_lookup_<netns cookie>`.
pub const SK_LOOKUP_PIN_PREFIX: &str = "sk_lookup_";

/// The sk_lookup links this process owns, by netns cookie (dropping one detaches it).
pub(super) type InboundLinks = BTreeMap<u64, OwnedFd>;

impl Datapath {
    /// Starts inbound capture in a pod's network namespace: links the sk_lookup program to
    /// `netns` (an open `/proc/<pid>/ns/net` or `/run/netns/<name>`). Idempotent per cookie.
    /// Fails when `netns` is not the namespace `netns_cookie` names. Capture only happens once a
    /// listener is registered ([`Datapath::set_inbound_listener`]); until then the policy's
    /// `FAIL_OPEN` flag decides between "to the app" and "reset".
    pub fn attach_inbound(&mut self, netns_cookie: u64, netns: impl AsFd) -> Result<(), BpfError> {
        if self.inbound_links.contains_key(&netns_cookie) {
            return Ok(());
        }
        let err = |op, source| BpfError::Inbound {
            netns_cookie,
            op,
            source,
        };
        let actual = cookie_of_netns(netns.as_fd()).map_err(|e| err("read the netns cookie", e))?;
        if actual != netns_cookie {
            return Err(err(
                "check the netns fd",
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("the fd is netns {actual:#x}"),
                ),
            ));
        }
        let prog = load_instance(&mut self.instance_loader, &self.pin_dir, netns_cookie)?;
        let fd = link::link_create(prog.as_fd(), netns.as_fd(), BPF_SK_LOOKUP)
            .map_err(|e| err("BPF_LINK_CREATE", e))?;
        if self.pin_eagerly {
            std::fs::create_dir_all(self.pin_dir.join(LINKS_DIR))
                .map_err(|e| err("create the links directory", e))?;
            link::pin(fd.as_fd(), &inbound_pin(&self.pin_dir, netns_cookie))
                .map_err(|e| err("pin the link", e))?;
        }
        self.inbound_links.insert(netns_cookie, fd);
        Ok(())
    }

    /// Stops inbound capture in a netns (detaches its sk_lookup link, and removes a pin of it if
    /// one is left). The listener entries stay; [`Datapath::remove_netns`] removes both. Returns
    /// whether a link was attached.
    pub fn detach_inbound(&mut self, netns_cookie: u64) -> Result<bool, BpfError> {
        let had = self.inbound_links.remove(&netns_cookie).is_some();
        let pin = inbound_pin(&self.pin_dir, netns_cookie);
        match std::fs::remove_file(&pin) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(had),
            Err(source) => Err(BpfError::Inbound {
                netns_cookie,
                op: "remove the pinned link",
                source,
            }),
        }
    }

    /// Netns cookies with an sk_lookup link owned by this data path.
    pub fn inbound_netns(&self) -> Vec<u64> {
        self.inbound_links.keys().copied().collect()
    }

    /// Registers the pod's inbound listening socket (bound to `0.0.0.0:inbound_port` or
    /// `[::]:inbound_port` inside the pod netns, `listen()` already called). One per family: an
    /// `AF_INET` socket takes IPv4 connections, an `AF_INET6` one takes IPv6 connections and,
    /// unless it is `IPV6_V6ONLY` or an `AF_INET` one is registered too, IPv4 ones. Registering
    /// again replaces the socket of that family. The entry leaves the map by itself when the
    /// socket closes (then the policy's `FAIL_OPEN` flag decides).
    pub fn set_inbound_listener(
        &mut self,
        netns_cookie: u64,
        listener: impl AsFd,
    ) -> Result<(), BpfError> {
        let fd = listener.as_fd();
        let bad = |reason: String| BpfError::InboundListener {
            netns_cookie,
            reason,
        };
        let io_bad = |what: &str, e: io::Error| bad(format!("{what}: {e}"));
        let actual = netns_cookie_of(fd).map_err(|e| io_bad("SO_NETNS_COOKIE", e))?;
        if actual != netns_cookie {
            return Err(bad(format!(
                "the socket belongs to netns {actual:#x}; bind it inside the pod netns"
            )));
        }
        let protocol = sockopt_int(fd, libc::SO_PROTOCOL).map_err(|e| io_bad("SO_PROTOCOL", e))?;
        if protocol != libc::IPPROTO_TCP {
            return Err(bad(format!("protocol {protocol} is not TCP")));
        }
        if sockopt_int(fd, libc::SO_ACCEPTCONN).map_err(|e| io_bad("SO_ACCEPTCONN", e))? != 1 {
            return Err(bad(
                "the socket is not listening (call listen() first)".into()
            ));
        }
        let (family, port) = local_family_port(fd).map_err(|e| io_bad("getsockname", e))?;
        if let Some(p) = self.policy(netns_cookie)? {
            if p.inbound_port != 0 && port != p.inbound_port {
                return Err(bad(format!(
                    "bound to port {port}, but the policy's inbound_port is {}",
                    p.inbound_port
                )));
            }
        }
        self.inbound_listeners
            .insert(ListenerKey::new(netns_cookie, family), fd.as_raw_fd(), 0)
            .map_err(BpfError::map(MAP_INBOUND_LISTENERS, "insert"))
    }

    /// Unregisters the pod's inbound listeners (both families); returns how many were removed.
    pub fn remove_inbound_listener(&mut self, netns_cookie: u64) -> Result<usize, BpfError> {
        let mut removed = 0;
        for family in [AF_INET, AF_INET6] {
            removed += gone(
                self.inbound_listeners
                    .remove(&ListenerKey::new(netns_cookie, family)),
                MAP_INBOUND_LISTENERS,
            )?;
        }
        Ok(removed)
    }

    /// Registered inbound listener keys of one netns (a closed socket is gone already).
    pub(super) fn inbound_listener_keys(&self, netns: u64) -> Result<Vec<ListenerKey>, BpfError> {
        collect_keys(self.inbound_listeners.keys(), MAP_INBOUND_LISTENERS, |k| {
            k.netns_cookie == netns
        })
    }

    /// Pins every owned sk_lookup link under `<pin_dir>/links` (for [`Datapath::persist`]).
    pub(super) fn pin_inbound_links(links: &InboundLinks, pin_dir: &Path) -> Result<(), BpfError> {
        for (&netns_cookie, fd) in links {
            let path = inbound_pin(pin_dir, netns_cookie);
            // Already pinned (eager pinning): pin again instead of failing with EEXIST.
            let _ = std::fs::remove_file(&path);
            link::pin(fd.as_fd(), &path).map_err(|source| BpfError::Inbound {
                netns_cookie,
                op: "pin the link",
                source,
            })?;
        }
        Ok(())
    }
}

/// Adopts the sk_lookup links a persisted agent pinned under `<pin_dir>/links`: swaps this
/// object's program into each with `BPF_LINK_UPDATE` (no capture gap), removes the pin and
/// returns the links. A link whose netns is gone (`ENOLINK`) is just unpinned.
pub(super) fn adopt_pinned(
    pin_dir: &Path,
    loader: &mut InstanceLoader,
) -> Result<InboundLinks, BpfError> {
    let dir = pin_dir.join(LINKS_DIR);
    let mut adopted = InboundLinks::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(adopted),
        Err(source) => return Err(BpfError::Links { path: dir, source }),
    };
    for entry in entries {
        let entry = entry.map_err(|source| BpfError::Links {
            path: dir.clone(),
            source,
        })?;
        let name = entry.file_name();
        let Some(netns_cookie) = name
            .to_str()
            .and_then(|n| n.strip_prefix(SK_LOOKUP_PIN_PREFIX))
            .and_then(|c| c.parse::<u64>().ok())
        else {
            continue;
        };
        let err = |op, source| BpfError::Inbound {
            netns_cookie,
            op,
            source,
        };
        let path = entry.path();
        let fd = link::open_pinned(&path).map_err(|e| err("open the pinned link", e))?;
        let prog = load_instance(loader, pin_dir, netns_cookie)?;
        let live = match link::link_update(fd.as_fd(), prog.as_fd()) {
            Ok(()) => true,
            Err(e) if e.raw_os_error() == Some(libc::ENOLINK) => false,
            Err(e) => return Err(err("BPF_LINK_UPDATE of the pinned link", e)),
        };
        std::fs::remove_file(&path).map_err(|e| err("remove the pinned link", e))?;
        if live {
            adopted.insert(netns_cookie, fd);
        }
    }
    Ok(adopted)
}

fn inbound_pin(pin_dir: &Path, netns_cookie: u64) -> std::path::PathBuf {
    pin_dir
        .join(LINKS_DIR)
        .join(format!("{SK_LOOKUP_PIN_PREFIX}{netns_cookie}"))
}

/// Loads the sk_lookup program for one netns (its cookie baked in) against the pinned maps and
/// returns the program fd; the rest of that object copy is dropped (the maps are pinned, the
/// link keeps the program).
fn load_instance(
    loader: &mut InstanceLoader,
    pin_dir: &Path,
    netns_cookie: u64,
) -> Result<OwnedFd, BpfError> {
    let mut ebpf = loader.load(netns_cookie).map_err(|e| BpfError::Object {
        pin_dir: pin_dir.to_path_buf(),
        source: Box::new(e),
    })?;
    let missing = BpfError::ProgramMissing {
        program: SK_LOOKUP_PROGRAM,
        hook: "sk_lookup",
    };
    let prog: &mut SkLookup = ebpf
        .program_mut(SK_LOOKUP_PROGRAM)
        .ok_or(missing)?
        .try_into()
        .map_err(|e| BpfError::Unavailable(format!("program {SK_LOOKUP_PROGRAM}: {e}")))?;
    let load_err = |e: aya::programs::ProgramError| BpfError::ProgramLoad {
        program: SK_LOOKUP_PROGRAM,
        hook: "sk_lookup",
        detail: super::attach::chain(&e),
        source: Box::new(e),
    };
    super::prog_load::load_retrying(|| prog.load()).map_err(load_err)?;
    let fd = prog.fd().map_err(load_err)?;
    let owned = fd
        .as_fd()
        .try_clone_to_owned()
        .map_err(|source| BpfError::Inbound {
            netns_cookie,
            op: "dup the program fd",
            source,
        });
    drop(ebpf);
    super::release_loader_memory();
    owned
}

/// The cookie of the netns behind a namespace fd: a helper thread enters it (setns is per
/// thread) and asks a fresh socket.
fn cookie_of_netns(netns: BorrowedFd<'_>) -> io::Result<u64> {
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(netns, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            // SAFETY: plain socket(2); the fd is owned at once.
            let sock = unsafe {
                let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd)
            };
            netns_cookie_of(sock.as_fd())
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("netns cookie thread panicked")))
    })
}

fn sockopt_int(fd: BorrowedFd<'_>, opt: libc::c_int) -> io::Result<i32> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `v`.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(v)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Address family ([`AF_INET`] / [`AF_INET6`]) and bound port of a socket.
fn local_family_port(fd: BorrowedFd<'_>) -> io::Result<(u16, u16)> {
    // SAFETY: a zeroed sockaddr_storage is valid; getsockname writes at most `len` bytes.
    let ss = unsafe {
        let mut ss: libc::sockaddr_storage = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        if libc::getsockname(
            fd.as_raw_fd(),
            (&mut ss as *mut libc::sockaddr_storage).cast(),
            &mut len,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        ss
    };
    match ss.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin: libc::sockaddr_in = unsafe { std::mem::transmute_copy(&ss) };
            Ok((AF_INET, u16::from_be(sin.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6: libc::sockaddr_in6 = unsafe { std::mem::transmute_copy(&ss) };
            Ok((AF_INET6, u16::from_be(sin6.sin6_port)))
        }
        other => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("address family {other} is not AF_INET or AF_INET6"),
        )),
    }
}
