//! The bench's own pods: a client and a server network namespace joined by a veth (no default
//! routes), a cgroup v2 subtree for the eBPF paths, nginx + iperf3 in the server pod, and the
//! RAII guards that remove all of it on return, on error and after Ctrl-C.

use std::{
    fs,
    io::Write as _,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

/// Set by the SIGINT/SIGTERM handler; checked between steps.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Installs the Ctrl-C handler: the current step's children get the signal too, the bench sees
/// the flag, returns an error and every guard cleans up.
pub fn install_signal_handler() {
    // SAFETY: the handler only stores to an atomic (async-signal-safe).
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

/// Fails when Ctrl-C was pressed.
pub fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// Runs a command to completion; the error carries its stderr.
pub fn run(prog: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {prog}"))?;
    if !out.status.success() {
        bail!(
            "`{prog} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A child process we started, stopped by its pid (SIGTERM, then SIGKILL after 3 s) on drop.
pub struct Proc {
    pub name: String,
    pub child: Child,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails (with the log file's tail) when the process already exited.
    pub fn check_alive(&mut self, log: &Path) -> Result<()> {
        if let Some(st) = self.child.try_wait()? {
            bail!("{} exited ({st}):\n{}", self.name, log_tail(log, 15));
        }
        Ok(())
    }
}

/// The last `n` lines of a log file.
pub fn log_tail(log: &Path, n: usize) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(n).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    tail.join("\n")
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        // SAFETY: signalling a child we started and have not reaped (its pid is still ours).
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(3) {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A network namespace (`ip netns add`), deleted on drop (with its veth end and iptables rules).
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: String) -> Result<Self> {
        run("ip", &["netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip -n <ns> ...`
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut a = vec!["-n", self.name.as_str()];
        a.extend_from_slice(args);
        run("ip", &a)
    }

    /// Runs a command inside the netns to completion.
    pub fn exec(&self, prog: &str, args: &[&str]) -> Result<String> {
        let mut a = vec!["netns", "exec", self.name.as_str(), prog];
        a.extend_from_slice(args);
        run("ip", &a)
    }

    /// A command that runs `prog` inside the netns and, when `cgroup` is given, inside that cgroup.
    pub fn command(&self, prog: &str, cgroup: Option<&Cgroup>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, prog]);
        c.stdin(Stdio::null());
        if let Some(cg) = cgroup {
            join_cgroup(&mut c, cg.procs_file());
        }
        c
    }

    /// Waits until something listens on TCP `port` in the netns.
    pub fn wait_listen(&self, port: u16, timeout: Duration) -> Result<()> {
        let t = Instant::now();
        let want = format!(":{port} ");
        loop {
            let ss = self.exec("ss", &["-Htln"])?;
            if ss.lines().any(|l| l.contains(&want)) {
                return Ok(());
            }
            if t.elapsed() > timeout {
                bail!(
                    "netns {}: nothing listens on port {port} after {timeout:?}",
                    self.name
                );
            }
            check_interrupted()?;
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}

/// Makes the child join a cgroup (write "0" to cgroup.procs) before exec.
pub fn join_cgroup(c: &mut Command, procs: PathBuf) {
    // SAFETY: the closure only opens and writes a file (no allocation after fork besides the
    // path, which was built before).
    let path = std::ffi::CString::new(procs.as_os_str().as_encoded_bytes()).expect("path");
    unsafe {
        c.pre_exec(move || {
            let fd = libc::open(path.as_ptr(), libc::O_WRONLY);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let r = libc::write(fd, b"0".as_ptr().cast(), 1);
            libc::close(fd);
            if r != 1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A cgroup v2 directory under the v2 mount (never the root itself), removed on drop.
pub struct Cgroup {
    pub path: PathBuf,
}

impl Cgroup {
    pub fn new(name: &str) -> Result<Self> {
        let root = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.join("cgroup.procs").exists() && p.join("cgroup.controllers").exists())
            .context("no cgroup v2 mount (/sys/fs/cgroup/unified or /sys/fs/cgroup)")?;
        let path = root.join(name);
        fs::create_dir(&path).with_context(|| format!("mkdir {}", path.display()))?;
        Ok(Cgroup { path })
    }

    pub fn procs_file(&self) -> PathBuf {
        self.path.join("cgroup.procs")
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if fs::remove_dir(&self.path).is_ok() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
        eprintln!("bench: could not remove cgroup {}", self.path.display());
    }
}

/// A directory removed (recursively) on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    /// Mode 0755: uid 1337 (the proxies) reads the configs in it.
    pub fn new(path: PathBuf) -> Result<Self> {
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).with_context(|| format!("mkdir {}", path.display()))?;
        fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        Ok(TempDir { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Sizes of the files nginx serves (`/64`, `/1k`, `/16k`, `/64k`).
pub const PAYLOADS: &[(&str, usize)] =
    &[("/64", 64), ("/1k", 1024), ("/16k", 16384), ("/64k", 65536)];
/// nginx HTTP/1.1 port and h2c (prior knowledge) port; iperf3 port.
pub const HTTP_PORT: u16 = 80;
pub const H2_PORT: u16 = 8080;
pub const IPERF_PORT: u16 = 5201;
/// nginx answers this path (port 80) with the peer address it sees: the probe that tells whether
/// a server-side proxy (source 127.0.0.6) carried the request.
pub const PEER_PATH: &str = "/peer";

/// nginx (1 worker) in `server`, serving the payloads from `dir`/www on `sip` (HTTP/1.1 on
/// [`HTTP_PORT`], h2c on [`H2_PORT`], the [`PEER_PATH`] probe); its pid file and logs go to `dir`.
pub fn start_nginx(server: &Netns, dir: &Path, sip: &str) -> Result<Proc> {
    start_nginx_on(server, dir, sip, HTTP_PORT, H2_PORT, 0)
}

/// [`start_nginx`] on other ports, at scheduling priority `nice` (the scale bench's noisy
/// neighbour's own server).
pub fn start_nginx_on(
    server: &Netns,
    dir: &Path,
    sip: &str,
    http_port: u16,
    h2_port: u16,
    nice: i32,
) -> Result<Proc> {
    let www = dir.join("www");
    fs::create_dir_all(&www)?;
    for (name, size) in PAYLOADS {
        fs::write(www.join(&name[1..]), vec![b'x'; *size])?;
    }
    let conf = dir.join("nginx.conf");
    let mut f = fs::File::create(&conf)?;
    write!(
        f,
        "daemon off;\nmaster_process on;\nuser root;\nworker_processes 1;\npid {d}/nginx.pid;\n\
         error_log {d}/nginx-error.log warn;\nevents {{ worker_connections 16384; }}\n\
         http {{\n  access_log off;\n  sendfile on;\n  tcp_nodelay on;\n  keepalive_timeout 300s;\n  \
         keepalive_requests 10000000;\n  default_type application/octet-stream;\n  \
         client_body_temp_path {d}/tmp;\n  \
         server {{ listen {sip}:{http_port} backlog=4096; root {w}; \
         location = {PEER_PATH} {{ return 200 \"$remote_addr\\n\"; }} }}\n  \
         server {{ listen {sip}:{h2_port} http2 backlog=4096; root {w}; http2_max_requests 10000000; }}\n}}\n",
        d = dir.display(),
        w = www.display(),
    )?;
    let log = fs::File::create(dir.join("nginx.out"))?;
    Ok(Proc {
        name: "nginx".into(),
        child: server
            .command("nice", None)
            .args(["-n", &nice.to_string(), "nginx"])
            .args(["-c", &conf.to_string_lossy(), "-p", &dir.to_string_lossy()])
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting nginx")?,
    })
}

/// The whole topology. Field order is drop order: servers first, then namespaces, cgroup, files.
pub struct Topology {
    _nginx: Proc,
    _iperf: Proc,
    pub client: Netns,
    pub server: Netns,
    pub cgroup: Cgroup,
    pub dir: TempDir,
    pub server_ip: String,
    /// The client pod's address: the peer nginx sees when no server-side proxy is in the way.
    pub client_ip: String,
}

impl Topology {
    pub fn new() -> Result<Self> {
        let pid = std::process::id();
        let tag = format!("slb{pid}");
        let dir = TempDir::new(PathBuf::from(format!("/tmp/sl-bench-{pid}")))?;
        let cgroup = Cgroup::new(&format!("sl-bench-{pid}"))?;
        let client = Netns::new(format!("sl-bench-c-{pid}"))?;
        let server = Netns::new(format!("sl-bench-s-{pid}"))?;
        let octet = pid % 250 + 1;
        let (cip, sip) = (format!("10.253.{octet}.1"), format!("10.253.{octet}.2"));
        let (vc, vs) = (format!("{tag}c"), format!("{tag}s"));
        run(
            "ip",
            &[
                "link",
                "add",
                &vc,
                "netns",
                &client.name,
                "type",
                "veth",
                "peer",
                "name",
                &vs,
                "netns",
                &server.name,
            ],
        )?;
        client.ip(&["addr", "add", &format!("{cip}/24"), "dev", &vc])?;
        server.ip(&["addr", "add", &format!("{sip}/24"), "dev", &vs])?;
        client.ip(&["link", "set", &vc, "up"])?;
        server.ip(&["link", "set", &vs, "up"])?;
        for ns in [&client, &server] {
            ns.exec(
                "sysctl",
                &["-qw", "net.ipv4.ip_local_port_range=20000 65000"],
            )?;
            ns.exec("sysctl", &["-qw", "net.ipv4.tcp_tw_reuse=1"])?;
            ns.exec("sysctl", &["-qw", "net.core.somaxconn=4096"])?;
        }
        let nginx = start_nginx(&server, &dir.path, &sip)?;
        let ilog = fs::File::create(dir.path.join("iperf3.out"))?;
        let iperf = Proc {
            name: "iperf3 server".into(),
            child: server
                .command("iperf3", None)
                .args(["-s", "-B", &sip, "-p", &IPERF_PORT.to_string()])
                .stdout(ilog.try_clone()?)
                .stderr(ilog)
                .spawn()
                .context("starting iperf3 -s")?,
        };
        let topo = Topology {
            _nginx: nginx,
            _iperf: iperf,
            client,
            server,
            cgroup,
            dir,
            server_ip: sip,
            client_ip: cip,
        };
        topo.server.wait_listen(HTTP_PORT, Duration::from_secs(5))?;
        topo.server.wait_listen(H2_PORT, Duration::from_secs(5))?;
        topo.server
            .wait_listen(IPERF_PORT, Duration::from_secs(5))?;
        Ok(topo)
    }

    /// Number of conntrack entries in the client pod's table.
    pub fn conntrack_count(&self) -> Result<u64> {
        let out = self.client.exec("conntrack", &["-C"])?;
        out.trim()
            .parse()
            .with_context(|| format!("conntrack -C printed {out:?}"))
    }

    /// Flushes the client pod's conntrack table (only that netns).
    pub fn conntrack_flush(&self) -> Result<()> {
        // conntrack -F fails when the table has never been used in this netns; that is "empty".
        let _ = self.client.exec("conntrack", &["-F"]);
        Ok(())
    }
}
