//! `cargo xtask demo`: two pods on a veth, the sluice agent capturing the client pod, curl through it.
//!
//! Everything it creates (cgroup subtree, two netns + veth, pin dir, temp dir, child processes)
//! is named `sl-demo-<pid>` and removed by the [`Demo`] guard, also on failure and on Ctrl-C.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

mod kubeflow;
mod metrics;

/// ClusterIP the demo's client calls; no route leads there, only the proxy knows it.
const VIP: &str = "10.96.0.10";
const POD_IP: &str = "10.251.0.1";
const SERVER_IP: &str = "10.251.0.2";

pub fn run(no_setup: bool) -> Result<()> {
    if !no_setup {
        crate::setup::run()?;
    }
    crate::setup::run_cmd("cargo", &["build", "-j2", "-p", "sluice"])?;
    let uid = String::from_utf8_lossy(&Command::new("id").arg("-u").output()?.stdout)
        .trim()
        .to_string();
    if uid != "0" {
        bail!("the demo creates network namespaces and attaches eBPF programs: run it as root");
    }
    let bin = sluice_bin()?;
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("installing the Ctrl-C handler")?;
    let mut demo = Demo::new()?;
    let result = demo.play(&bin, &interrupted);
    if interrupted.load(Ordering::SeqCst) {
        eprintln!("\ninterrupted: cleaning up");
    }
    drop(demo);
    result
}

fn sluice_bin() -> Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target.join("debug/sluice");
    if !bin.exists() {
        bail!("{} not found after the build", bin.display());
    }
    Ok(bin)
}

fn cgroup_root() -> Result<PathBuf> {
    for p in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"] {
        if Path::new(p).join("cgroup.procs").exists()
            && Path::new(p).join("cgroup.controllers").exists()
        {
            return Ok(PathBuf::from(p));
        }
    }
    bail!("no cgroup v2 mount at /sys/fs/cgroup/unified or /sys/fs/cgroup")
}

/// The demo's resources; dropping it removes all of them.
struct Demo {
    name: String,
    pod: String,
    server: String,
    veth: String,
    cgroup: PathBuf,
    pins: PathBuf,
    tmp: PathBuf,
    children: Vec<(String, Child)>,
}

impl Demo {
    fn new() -> Result<Self> {
        let pid = std::process::id();
        let name = format!("sl-demo-{pid}");
        let d = Demo {
            pod: format!("{name}-pod"),
            server: format!("{name}-srv"),
            veth: format!("sld{}", pid % 1_000_000),
            cgroup: cgroup_root()?.join(&name),
            pins: PathBuf::from("/sys/fs/bpf").join(&name),
            tmp: std::env::temp_dir().join(&name),
            name,
            children: Vec::new(),
        };
        Ok(d)
    }

    fn play(&mut self, bin: &Path, interrupted: &AtomicBool) -> Result<()> {
        let check = || {
            if interrupted.load(Ordering::SeqCst) {
                bail!("interrupted");
            }
            Ok(())
        };
        step(&format!("cgroup subtree {}", self.cgroup.display()));
        std::fs::create_dir(&self.cgroup).context("creating the cgroup")?;
        std::fs::create_dir_all(&self.tmp)?;
        step(&format!(
            "pods: netns {} ({POD_IP}) and {} ({SERVER_IP}) joined by a veth, no default route",
            self.pod, self.server
        ));
        for ns in [&self.pod, &self.server] {
            sh("ip", &["netns", "add", ns])?;
            sh("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        }
        let (a, b) = (format!("{}a", self.veth), format!("{}b", self.veth));
        sh(
            "ip",
            &[
                "link",
                "add",
                &a,
                "netns",
                &self.pod,
                "type",
                "veth",
                "peer",
                "name",
                &b,
                "netns",
                &self.server,
            ],
        )?;
        sh(
            "ip",
            &[
                "-n",
                &self.pod,
                "addr",
                "add",
                &format!("{POD_IP}/24"),
                "dev",
                &a,
            ],
        )?;
        sh(
            "ip",
            &[
                "-n",
                &self.server,
                "addr",
                "add",
                &format!("{SERVER_IP}/24"),
                "dev",
                &b,
            ],
        )?;
        sh("ip", &["-n", &self.pod, "link", "set", &a, "up"])?;
        sh("ip", &["-n", &self.server, "link", "set", &b, "up"])?;

        step("server pod: python3 -m http.server on :80");
        let www = self.tmp.join("www");
        std::fs::create_dir_all(&www)?;
        std::fs::write(www.join("index.html"), "hello from the server pod\n")?;
        let server = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.server,
                "python3",
                "-m",
                "http.server",
                "80",
                "--bind",
                SERVER_IP,
            ])
            .current_dir(&www)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.tmp.join("server.log"))?)
            .spawn()
            .context("starting the server")?;
        self.children.push(("server".into(), server));

        let services = self.tmp.join("services.yaml");
        std::fs::write(
            &services,
            format!("services:\n  - vip: {VIP}:80\n    endpoints: [{SERVER_IP}:80]\n"),
        )?;
        let control = self.tmp.join("agent.sock");
        let agent_log = self.tmp.join("agent.log");
        step(&format!(
            "agent: sluice agent --cgroup {} (service table: {VIP}:80 -> {SERVER_IP}:80)",
            self.cgroup.display()
        ));
        self.start_agent(
            bin,
            &control,
            &agent_log,
            &["--services", &services.to_string_lossy()],
            &check,
        )?;
        let ctl = control.to_string_lossy().into_owned();
        wait_until(|| server_up(&self.server), "the server pod's http.server")?;

        step(&format!(
            "enroll the client pod: sluice enroll --netns {} --fast-path on",
            self.pod
        ));
        print!(
            "{}",
            out(
                bin,
                &[
                    "enroll",
                    "--netns",
                    &self.pod,
                    "--fast-path",
                    "on",
                    "--control",
                    &ctl
                ]
            )?
        );

        for url in [format!("http://{SERVER_IP}/"), format!("http://{VIP}/")] {
            check()?;
            step(&format!(
                "curl {url} inside the client pod (netns + cgroup)"
            ));
            let o = Command::new("sh")
                .args(["-c", "echo $$ > \"$0\" && exec \"$@\""])
                .arg(self.cgroup.join("cgroup.procs"))
                .args([
                    "ip",
                    "netns",
                    "exec",
                    &self.pod,
                    "curl",
                    "-sS",
                    "-m",
                    "5",
                    "-w",
                    "  [HTTP %{http_code}, peer %{remote_ip}:%{remote_port}]\n",
                    &url,
                ])
                .output()?;
            print!("{}", String::from_utf8_lossy(&o.stdout));
            eprint!("{}", String::from_utf8_lossy(&o.stderr));
        }
        check()?;
        step("what the server saw (source address = the client pod's IP)");
        print!("{}", read(&self.tmp.join("server.log")));
        step("what the agent saw (one span per connection: conn, listener, orig_dst, netns)");
        for l in read(&agent_log)
            .lines()
            .filter(|l| l.contains("accepted") || l.contains("closed ") || l.contains("failed"))
        {
            println!("{l}");
        }
        step("sluice status (pods, recent original destinations, eBPF counters incl. fast-path bytes)");
        print!("{}", out(bin, &["status", "--control", &ctl])?);
        step(&format!("unenroll: sluice unenroll --netns {}", self.pod));
        print!(
            "{}",
            out(bin, &["unenroll", "--netns", &self.pod, "--control", &ctl])?
        );
        self.stop_child("agent");
        self.kubeflow(bin, &check)?;
        println!("\ndemo done; cleaning up {}", self.name);
        Ok(())
    }

    /// Starts `sluice agent` in the demo's cgroup with `extra` arguments; waits for its socket.
    fn start_agent(
        &mut self,
        bin: &Path,
        control: &Path,
        log: &Path,
        extra: &[&str],
        check: &dyn Fn() -> Result<()>,
    ) -> Result<()> {
        let agent = Command::new("sh")
            .args(["-c", "echo $$ > \"$0\" && exec \"$@\""])
            .arg(self.cgroup.join("cgroup.procs"))
            .arg(bin)
            .args(["agent", "--cgroup"])
            .arg(&self.cgroup)
            .arg("--pin-dir")
            .arg(&self.pins)
            .arg("--control")
            .arg(control)
            .args(extra)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log)?)
            .spawn()
            .context("starting the agent")?;
        self.children.push(("agent".into(), agent));
        let start = Instant::now();
        while !control.exists() {
            check()?;
            if start.elapsed() > Duration::from_secs(20) || self.exited("agent") {
                bail!("the agent did not start:\n{}", read(log));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// SIGTERM to the child named `which` (one we started), then wait for it (5 s, then SIGKILL).
    fn stop_child(&mut self, which: &str) {
        if let Some(i) = self.children.iter().position(|(n, _)| n == which) {
            let (name, child) = self.children.remove(i);
            stop(&name, child);
        }
    }

    fn exited(&mut self, which: &str) -> bool {
        self.children
            .iter_mut()
            .find(|(n, _)| n == which)
            .is_some_and(|(_, c)| matches!(c.try_wait(), Ok(Some(_))))
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        // The agent first (SIGTERM: it detaches its programs), then the server.
        for (name, child) in self.children.drain(..).rev() {
            stop(&name, child);
        }
        for ns in [&self.pod, &self.server] {
            quiet("ip", &["netns", "del", ns]);
        }
        let _ = std::fs::remove_dir_all(&self.pins);
        for _ in 0..50 {
            if std::fs::remove_dir(&self.cgroup).is_ok() || !self.cgroup.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}

/// SIGTERM to `child` (a process the demo started, by its pid), SIGKILL after 5 s.
fn stop(name: &str, mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let start = Instant::now();
    while !matches!(child.try_wait(), Ok(Some(_))) {
        if start.elapsed() > Duration::from_secs(5) {
            eprintln!(
                "cleanup: {name} ignored SIGTERM, killing pid {}",
                child.id()
            );
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn step(what: &str) {
    println!("\n== {what}");
}

fn sh(prog: &str, args: &[&str]) -> Result<()> {
    let o = Command::new(prog)
        .args(args)
        .output()
        .with_context(|| format!("running {prog}"))?;
    if !o.status.success() {
        bail!(
            "`{prog} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(())
}

fn quiet(prog: &str, args: &[&str]) {
    let _ = Command::new(prog)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn out(bin: &Path, args: &[&str]) -> Result<String> {
    out_env(bin, args, &[])
}

/// `sluice <args>` with extra environment variables; its stdout, or an error with its stderr.
fn out_env(bin: &Path, args: &[&str], env: &[(&str, &Path)]) -> Result<String> {
    let o = Command::new(bin)
        .args(args)
        .envs(env.iter().copied())
        .env("RUST_BACKTRACE", "0")
        .output()?;
    if !o.status.success() {
        bail!(
            "`sluice {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

fn server_up(ns: &str) -> bool {
    Command::new("ip")
        .args(["netns", "exec", ns, "ss", "-tlnH", "sport", "= :80"])
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false)
}

fn wait_until(mut f: impl FnMut() -> bool, what: &str) -> Result<()> {
    let start = Instant::now();
    while !f() {
        if start.elapsed() > Duration::from_secs(10) {
            bail!("{what} did not come up within 10 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
