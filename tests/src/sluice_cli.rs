//! Driving the real `sluice` binary from tests: locating it, running CLI commands, and RAII guards
//! for long-running `sluice agent` / `sluice sidecar` children and for small TCP servers in a netns.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::SocketAddr,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{Arc, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::{cgroup::join_cgroup_in_child, ns_server::NsServer, unique_name, Cgroup, Netns};

/// The `sluice` binary: `$SLUICE_BIN`, else `$CARGO_TARGET_DIR/debug/sluice`, else the workspace's
/// `target/debug/sluice`. `cargo xtask test` builds it before running the tests.
pub fn sluice_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SLUICE_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target.join("debug/sluice");
    assert!(
        bin.exists(),
        "sluice binary not found at {}: run `cargo build -p sluice` first or set SLUICE_BIN",
        bin.display()
    );
    bin
}

/// Runs `sluice <args>` to completion.
pub fn sluice(args: &[&str]) -> Output {
    Command::new(sluice_bin())
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap_or_else(|e| panic!("cannot run sluice {}: {e}", args.join(" ")))
}

/// Runs `sluice <args>` and panics with its stderr unless it succeeds; returns stdout.
pub fn sluice_ok(args: &[&str]) -> String {
    let out = sluice(args);
    assert!(
        out.status.success(),
        "`sluice {}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// stdout of a finished command, panicking with `what` and its stderr unless it succeeded.
pub fn stdout_ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `sluice <args>`, asserts it fails, and returns its stderr.
pub fn sluice_err(args: &[&str]) -> String {
    let out = sluice(args);
    assert!(
        !out.status.success(),
        "`sluice {}` should have failed but printed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A long-running sluice child (agent or sidecar). Its stderr is collected; on drop it gets
/// SIGTERM (by pid), then SIGKILL after 5 s, and is waited for.
pub struct SluiceProcess {
    child: Child,
    log: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
}

impl SluiceProcess {
    /// Spawns `cmd` (already carrying the program and arguments) with stderr captured.
    pub fn spawn(mut cmd: Command) -> Self {
        cmd.stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env("RUST_BACKTRACE", "0");
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap_or_else(|p| p.into_inner());
                l.push_str(&line);
                l.push('\n');
            }
        });
        Self {
            child,
            log,
            reader: Some(reader),
        }
    }

    /// `sluice agent` in `cgroup` (attaching there), pins in `pin_dir`, control socket in a fresh
    /// temporary directory. Waits until it is ready.
    pub fn agent(cgroup: &Cgroup, pin_dir: &Path, extra: &[&str]) -> (Self, ControlSocket) {
        let control = ControlSocket::new();
        let p = Self::agent_at(cgroup, pin_dir, &control.path(), extra);
        (p, control)
    }

    /// `sluice agent` with a given control socket path (e.g. a restart on the same one).
    pub fn agent_at(cgroup: &Cgroup, pin_dir: &Path, control: &Path, extra: &[&str]) -> Self {
        let mut cmd = Command::new(sluice_bin());
        cmd.arg("agent")
            .arg("--cgroup")
            .arg(cgroup.path())
            .arg("--pin-dir")
            .arg(pin_dir)
            .arg("--control")
            .arg(control)
            .args(extra);
        in_cgroup(&mut cmd, cgroup);
        let mut p = Self::spawn(cmd);
        p.wait_for_log("agent ready", Duration::from_secs(20));
        p
    }

    /// Sends SIGTERM (by pid) without waiting.
    pub fn sigterm(&self) {
        // SAFETY: kill(2) on the pid of our own child, which has not been reaped yet.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
    }

    /// Waits (at most `timeout`) for the child to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(st)) = self.child.try_wait() {
                if let Some(r) = self.reader.take() {
                    let _ = r.join();
                }
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// SIGKILL (by pid) and reap: a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }

    /// `sluice sidecar --netns <ns> --uid <uid>`; waits until it is ready.
    pub fn sidecar(ns: &Netns, uid: u32) -> Self {
        Self::sidecar_in(ns, uid, None)
    }

    /// Like [`SluiceProcess::sidecar`], started inside `cgroup` (the eBPF `sidecar` mode: its
    /// sockets must be under the attached cgroup for SO_ORIGINAL_DST to be answered).
    pub fn sidecar_in(ns: &Netns, uid: u32, cgroup: Option<&Cgroup>) -> Self {
        Self::sidecar_with(ns, uid, cgroup, &[])
    }

    /// Like [`SluiceProcess::sidecar_in`] with extra arguments (e.g. `--agent-control`).
    pub fn sidecar_with(ns: &Netns, uid: u32, cgroup: Option<&Cgroup>, extra: &[&str]) -> Self {
        Self::sidecar_env(ns, uid, cgroup, extra, &[])
    }

    /// Like [`SluiceProcess::sidecar_with`], with `env` set (e.g. the downward API's
    /// `POD_NAME` / `POD_NAMESPACE`).
    pub fn sidecar_env(
        ns: &Netns,
        uid: u32,
        cgroup: Option<&Cgroup>,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let mut cmd = Command::new(sluice_bin());
        cmd.args(["sidecar", "--netns", ns.name(), "--uid", &uid.to_string()])
            .args(extra)
            .envs(env.iter().copied());
        if let Some(cg) = cgroup {
            in_cgroup(&mut cmd, cg);
        }
        let mut p = Self::spawn(cmd);
        p.wait_for_log("sidecar ready", Duration::from_secs(10));
        p
    }

    /// The pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits until the log contains `needle`; panics with the log on timeout or early exit.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.log().contains(needle) {
                return;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                if let Some(r) = self.reader.take() {
                    let _ = r.join();
                }
                panic!(
                    "sluice exited ({st}) before logging {needle:?}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "no {needle:?} in the sluice log within {timeout:?}:\n{}",
            self.log()
        );
    }

    /// Sends SIGTERM and waits (at most `timeout`) for a clean exit; returns the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        self.sigterm();
        self.wait_exit(timeout)
    }
}

impl Drop for SluiceProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            if self.terminate(Duration::from_secs(5)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

/// Makes the child join `cgroup` before exec.
fn in_cgroup(cmd: &mut Command, cgroup: &Cgroup) {
    let procs = cgroup.procs_cstring();
    // SAFETY: join_cgroup_in_child is async-signal-safe and `procs` was prepared before fork.
    unsafe {
        cmd.pre_exec(move || join_cgroup_in_child(&procs));
    }
}

/// A temporary directory holding an agent's control socket; removed on drop.
pub struct ControlSocket {
    dir: PathBuf,
}

impl ControlSocket {
    /// A fresh directory with no agent behind its socket path (for "agent unreachable").
    pub fn new_for_tests() -> Self {
        Self::new()
    }

    /// A fresh `sl-ctl-<pid>-<n>` directory under the temp dir.
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(unique_name("ctl"));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        Self { dir }
    }

    /// The socket path.
    pub fn path(&self) -> PathBuf {
        self.dir.join("agent.sock")
    }

    /// The path as `&str` for CLI arguments.
    pub fn arg(&self) -> String {
        self.path().display().to_string()
    }
}

impl Default for ControlSocket {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP server on a thread inside a netns. For each connection it reads until EOF (so the
/// client's half-close is exercised), then answers `peer=<client addr> bytes=<n>` and closes.
/// Stopped and joined on drop.
pub struct EchoPeerServer {
    /// Bound address.
    pub addr: SocketAddr,
    _server: NsServer,
}

impl EchoPeerServer {
    /// Binds `addr` (port 0 picks one) inside `ns`.
    pub fn start(ns: &Netns, addr: SocketAddr) -> Self {
        let server = NsServer::start(ns, addr, |mut s, peer| {
            s.set_read_timeout(Some(Duration::from_secs(5))).ok();
            let mut buf = Vec::new();
            let n = s.read_to_end(&mut buf).unwrap_or(0);
            let _ = write!(s, "peer={peer} bytes={n}");
        });
        Self {
            addr: server.addr,
            _server: server,
        }
    }
}

/// What a client saw from an [`EchoPeerServer`] exchange.
#[derive(Debug)]
pub struct Exchange {
    /// `getpeername()` of the client socket.
    pub peer: SocketAddr,
    /// `getsockname()` of the client socket.
    pub local: SocketAddr,
    /// The server's answer (`peer=<addr> bytes=<n>`).
    pub answer: String,
}

/// Inside `ns` (on a thread, optionally as `uid`): connects to `dst`, sends `payload`, half-closes,
/// reads the answer. Panics on any failure.
pub fn exchange(ns: &Netns, dst: SocketAddr, payload: usize, uid: Option<u32>) -> Exchange {
    ns.run(move || {
        if let Some(uid) = uid {
            // Only this thread changes identity (raw syscall; glibc would change every thread).
            // SAFETY: setresuid on the calling thread only, no memory involved.
            let rc = unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) };
            assert_eq!(
                rc,
                0,
                "setresuid({uid}): {}",
                std::io::Error::last_os_error()
            );
        }
        let mut s = std::net::TcpStream::connect_timeout(&dst, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect {dst}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        let peer = s.peer_addr().expect("getpeername");
        let local = s.local_addr().expect("getsockname");
        let data = vec![b'x'; payload];
        s.write_all(&data).expect("send");
        s.shutdown(std::net::Shutdown::Write).expect("half-close");
        let answer = read_answer(&mut s).expect("read answer");
        Exchange {
            peer,
            local,
            answer,
        }
    })
}

/// Inside `ns`: connects to `dst` (expected to be captured by a proxy whose upstream fails) and
/// returns how the connection ended (`Ok(0)`: closed, `Err`: e.g. reset, which can already show
/// at connect when the proxy is that fast) and how long it took.
pub fn failed_upstream(ns: &Netns, dst: SocketAddr) -> (std::io::Result<usize>, Duration) {
    ns.run(move || {
        let start = Instant::now();
        let r =
            std::net::TcpStream::connect_timeout(&dst, Duration::from_secs(5)).and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(10)))?;
                read_answer(&mut s).map(|a| a.len())
            });
        (r, start.elapsed())
    })
}

/// Reads until EOF (at most 10 s), retrying `EAGAIN`. A blocking read on a socket whose bytes
/// arrive over the sk_msg fast path can return `EAGAIN` after a spurious wakeup (tcp_bpf's
/// `tcp_msg_wait_data` returns 0 when woken without data, e.g. by write-space wakeups); event-driven
/// apps (curl, nginx) poll again, so the test clients do the same.
pub fn read_answer(s: &mut std::net::TcpStream) -> std::io::Result<String> {
    let start = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    && start.elapsed() < Duration::from_secs(10) =>
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}
