//! Named network namespaces (`ip netns add`), running code inside them, and their counters.

use std::{
    fs::File,
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::PathBuf,
    process::Command,
    thread::JoinHandle,
};

use nix::sched::{setns, CloneFlags};

use crate::{
    cgroup::join_cgroup_in_child, run_cmd, run_cmd_quiet, unique_name, Cgroup, SO_NETNS_COOKIE,
};

/// A named network namespace with `lo` up and no other route (so a connect that escapes capture
/// ends in `ENETUNREACH` rather than leaving the machine). Deleted on drop.
pub struct Netns {
    name: String,
}

/// Byte and packet counters of one interface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
}

impl Netns {
    /// Creates `sl-<tag>-<pid>-<n>` and brings `lo` up.
    pub fn new(tag: &str) -> Self {
        let name = unique_name(tag);
        run_cmd("ip", &["netns", "add", &name]);
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// The namespace name (as in `ip netns list`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`, the bind mount that keeps the namespace alive.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Runs `ip -n <name> <args>`, panicking on failure; returns stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run_cmd("ip", &full)
    }

    fn open(&self) -> File {
        File::open(self.path()).unwrap_or_else(|e| panic!("open {}: {e}", self.path().display()))
    }

    /// An open fd of the namespace (what `Datapath::attach_inbound` takes).
    pub fn file(&self) -> File {
        self.open()
    }

    /// The namespace's inode number (`netns_ino` in `bpftool link show`).
    pub fn inode(&self) -> u64 {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(self.path())
            .unwrap_or_else(|e| panic!("stat {}: {e}", self.path().display()))
            .ino()
    }

    /// Spawns a thread that enters the namespace (setns is per thread) and runs `f` there.
    pub fn spawn<F, R>(&self, f: F) -> JoinHandle<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let fd = self.open();
        let name = self.name.clone();
        std::thread::Builder::new()
            .name(format!("in-{name}"))
            .spawn(move || {
                setns(&fd, CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("setns into netns {name}: {e}"));
                drop(fd);
                f()
            })
            .expect("spawn netns thread")
    }

    /// Runs `f` inside the namespace on a fresh thread and returns its result (a panic inside is
    /// re-raised here).
    pub fn run<F, R>(&self, f: F) -> R
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        match self.spawn(f).join() {
            Ok(r) => r,
            Err(p) => std::panic::resume_unwind(p),
        }
    }

    /// Runs an async block inside the namespace, on a thread with its own current-thread tokio
    /// runtime (every socket it creates belongs to the namespace).
    pub fn run_async<F, Fut, R>(&self, f: F) -> R
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = R>,
        R: Send + 'static,
    {
        self.run(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime")
                .block_on(f())
        })
    }

    /// The namespace cookie (`SO_NETNS_COOKIE`), the key of sluice's per-netns policy map.
    pub fn cookie(&self) -> u64 {
        self.run(current_netns_cookie)
    }

    /// A `Command` whose child enters this namespace and, when given, `cgroup` before `exec`.
    pub fn command(&self, program: &str, cgroup: Option<&Cgroup>) -> Command {
        self.command_as(program, cgroup, None)
    }

    /// Like [`Netns::command`], and the child then drops to `(uid, gid)` (no supplementary
    /// groups). Use this instead of `CommandExt::uid`: std switches ids *before* `pre_exec`
    /// runs, and an unprivileged child can no longer `setns`.
    pub fn command_as(
        &self,
        program: &str,
        cgroup: Option<&Cgroup>,
        ids: Option<(u32, u32)>,
    ) -> Command {
        let fd = self.open();
        let procs = cgroup.map(Cgroup::procs_cstring);
        let mut cmd = Command::new(program);
        // SAFETY: the closure only calls async-signal-safe syscalls (setns, open, write, close,
        // setgroups, setgid, setuid)
        // on data prepared before fork; it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(procs) = &procs {
                    join_cgroup_in_child(procs)?;
                }
                if let Some((uid, gid)) = ids {
                    if libc::setgroups(0, std::ptr::null()) != 0
                        || libc::setgid(gid) != 0
                        || libc::setuid(uid) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        cmd
    }

    /// Counters of `ifname` as seen inside the namespace (`/proc/thread-self/net/dev`).
    pub fn link_stats(&self, ifname: &str) -> LinkStats {
        let ifname = ifname.to_string();
        self.run(move || {
            let dev = std::fs::read_to_string("/proc/thread-self/net/dev")
                .expect("read /proc/thread-self/net/dev");
            parse_net_dev(&dev, &ifname)
                .unwrap_or_else(|| panic!("interface {ifname} not in /proc/net/dev:\n{dev}"))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !run_cmd_quiet("ip", &["netns", "del", &self.name]) {
            eprintln!("warning: could not delete netns {}", self.name);
        }
    }
}

/// The `SO_NETNS_COOKIE` of the calling thread's network namespace.
pub fn current_netns_cookie() -> u64 {
    // SAFETY: plain socket syscalls on a fd we own and close.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let mut cookie: u64 = 0;
        let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
        let rc = libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        );
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        assert!(rc == 0, "getsockopt(SO_NETNS_COOKIE): {err}");
        cookie
    }
}

fn parse_net_dev(dev: &str, ifname: &str) -> Option<LinkStats> {
    dev.lines().skip(2).find_map(|line| {
        let (name, rest) = line.split_once(':')?;
        if name.trim() != ifname {
            return None;
        }
        let v: Vec<u64> = rest
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        Some(LinkStats {
            rx_bytes: v[0],
            rx_packets: v[1],
            tx_bytes: v[8],
            tx_packets: v[9],
        })
    })
}
