//! `cargo xtask soak --minutes N`: mixed traffic through the node agent for N minutes (issue 13).
//! One server netns (nginx, the TCP and WebSocket echo servers of `soak/serve.rs`) on a bridge,
//! pod 0 enrolled in node mode on an agent running the L7 engine (`soak/config.rs`): from pod 0
//! the well-behaved clients (`soak/clients.rs`: HTTP/1.1 keep-alive and one request per
//! connection, WebSocket, raw TCP; h2load for HTTP/2) and the abusive ones (`soak/abuse.rs`);
//! meanwhile the driver hot-reloads the L7 config (SIGHUP, every 20 s, every fourth file one the
//! agent must refuse) and churns extra pods (a new netns enrolled, one curl, unenrolled, every
//! 15 s). The agent's RSS, fds and threads are sampled at the start and each minute; the report
//! (`<out>/soak.md`, `soak.json`, also printed) ends with the verdict, and a failed verdict
//! exits non-zero. Everything is removed on return, on error, on panic and after Ctrl-C.

mod abuse;
mod clients;
mod config;
mod ops;
mod report;
mod serve;
mod tally;
mod wire;

use std::{
    fs,
    io::BufRead as _,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::bench::{
    cargo_build,
    paths::start::{start_agent, AgentSpec},
    require_tools,
    scale::{pods::Pods, procstat},
    target_dir,
    topology::{check_interrupted, install_signal_handler, join_cgroup, run as run_cmd, Proc},
};
use config::{GREETER_PORT, TCP_ECHO_PORT, WS_PORT};
use ops::{OpCounts, Ops};
use report::Row;
use tally::Counters;

/// Options of `cargo xtask soak`.
#[derive(Clone, Debug, clap::Args)]
pub struct SoakArgs {
    /// Internal: the processes the soak runs inside its netns.
    #[command(subcommand)]
    pub internal: Option<Internal>,
    /// Run time in minutes (1 ..= 1440); RSS is compared between minute 1 and the end.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1440))]
    pub minutes: u64,
    /// Cargo profile of the sluice build: dev (default, reuses what `cargo xtask test` built)
    /// or release.
    #[arg(long, default_value = "dev")]
    pub profile: String,
    /// Output directory (default: <target dir>/soak).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Subcommands the soak runs itself.
#[derive(Clone, Debug, clap::Subcommand)]
pub enum Internal {
    /// The echo servers (server netns).
    #[command(hide = true)]
    Serve(serve::ServeArgs),
    /// The well-behaved and abusive clients (pod 0).
    #[command(hide = true)]
    Clients(clients::ClientsArgs),
}

/// `cargo xtask soak` (or one of its internal processes).
pub fn run(a: SoakArgs) -> Result<()> {
    match &a.internal {
        Some(Internal::Serve(s)) => serve::main(s),
        Some(Internal::Clients(c)) => clients::main(c),
        None => drive(&a),
    }
}

/// The sluice binary of `profile`, built.
fn sluice_bin(profile: &str) -> Result<PathBuf> {
    let dir = match profile {
        "release" => "release",
        "dev" => "debug",
        p => bail!("--profile {p}: expected dev or release"),
    };
    cargo_build("sluice", profile)?;
    Ok(target_dir().join(dir).join("sluice"))
}

/// The clients' latest printed counters, updated by a reader thread.
type Latest = Arc<Mutex<Counters>>;

fn read_counters(out: std::process::ChildStdout, latest: Latest) {
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if let Ok(c) = serde_json::from_str::<Counters>(&line) {
                *latest.lock().expect("counters") = c;
            }
        }
    });
}

fn drive(a: &SoakArgs) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("cargo xtask soak needs root (network namespaces, eBPF)");
    }
    install_signal_handler();
    require_tools(&["nginx", "h2load", "curl"])?;
    let sluice = sluice_bin(&a.profile)?;
    let me = std::env::current_exe().context("own path")?;
    let secs = a.minutes * 60;
    eprintln!("soak: {} min through the node agent", a.minutes);
    // Drop order (reverse of declaration): clients, agent, echo servers, pods.
    let pods = Pods::new(1)?;
    let ip = pods.server_ip.clone();
    let serve_log = fs::File::create(pods.dir.path.join("serve.log"))?;
    let _serve = Proc {
        name: "soak echo servers".into(),
        child: pods
            .server
            .command(&me.to_string_lossy(), None)
            .args(["soak", "serve", "--addr", &ip])
            .stdout(serve_log.try_clone()?)
            .stderr(serve_log)
            .spawn()
            .context("starting the echo servers")?,
    };
    for port in [TCP_ECHO_PORT, WS_PORT, GREETER_PORT] {
        pods.server.wait_listen(port, Duration::from_secs(10))?;
    }
    let cfg = pods.dir.path.join("soak-l7.yaml");
    config::write(&cfg, &config::good(&ip, 0))?;
    let mut agent = start_agent(&AgentSpec {
        sluice: &sluice,
        cgroup: &pods.cgroup,
        dir: &pods.dir.path,
        n: 1,
        config: Some(&cfg),
        workers: 2,
        extra: &[],
        log: pods.dir.path.join("agent.log"),
    })?;
    let control = agent.control.clone();
    let mut ops = Ops {
        pods: &pods,
        sluice: &sluice,
        control: &control,
        agent_pid: agent.run.pid(),
        config: cfg.clone(),
        version: 0,
        churned: 0,
    };
    run_cmd(
        &sluice.to_string_lossy(),
        &[
            "enroll",
            "--netns",
            &pods.pods[0].ns.name,
            "--mode",
            "node",
            "--control",
            &control.to_string_lossy(),
        ],
    )?;
    pods.pods[0]
        .ns
        .wait_listen(15001, Duration::from_secs(10))?;
    std::thread::sleep(Duration::from_millis(500));
    let pid = agent.run.pid();
    let mut c = OpCounts::default();
    let latest: Latest = Arc::default();
    let mut rows = vec![Row {
        minute: 0,
        snap: procstat::snap(pid)?,
        clients: Counters::default(),
        ops: c.clone(),
    }];
    let mut cmd = pods.pods[0].ns.command(&me.to_string_lossy(), None);
    join_cgroup(&mut cmd, pods.cgroup.procs_file());
    let clients_log = fs::File::create(pods.dir.path.join("clients.log"))?;
    let mut child = cmd
        .args([
            "soak",
            "clients",
            "--server",
            &ip,
            "--seconds",
            &secs.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(clients_log)
        .spawn()
        .context("starting the clients")?;
    read_counters(child.stdout.take().context("stdout")?, latest.clone());
    let mut clients = Proc {
        name: "soak clients".into(),
        child,
    };
    let t0 = Instant::now();
    let mut h2 = None;
    let result = (|| {
        for s in 0..secs {
            let due = t0 + Duration::from_secs(s);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            check_interrupted()?;
            agent.run.check_alive()?;
            if s > 0 && s % 60 == 0 {
                sample(&mut rows, s / 60, pid, &latest, &c)?;
            }
            if let Some(mut child) = h2.take() {
                match std::process::Child::try_wait(&mut child)? {
                    Some(_) => ops::h2load_done(child, &mut c),
                    None => h2 = Some(child),
                }
            }
            match s % 60 {
                2 if h2.is_none() => h2 = Some(ops.h2load_start()?),
                x if x % 20 == 10 => ops.reload(&mut c),
                x if x % 15 == 7 => ops.churn(&mut c),
                _ => {}
            }
        }
        std::thread::sleep(
            (t0 + Duration::from_secs(secs)).saturating_duration_since(Instant::now()),
        );
        agent.run.check_alive()?;
        sample(&mut rows, a.minutes, pid, &latest, &c)?;
        anyhow::Ok(())
    })();
    // Let the clients finish and print their totals (bounded; not after an error or Ctrl-C),
    // then the quiet sample.
    let t = Instant::now();
    while result.is_ok()
        && clients.child.try_wait()?.is_none()
        && t.elapsed() < Duration::from_secs(30)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    if let Some(child) = h2.take() {
        ops::h2load_done(child, &mut c);
    }
    drop(clients);
    std::thread::sleep(Duration::from_secs(3));
    let alive = agent.run.check_alive().is_ok();
    let quiet = procstat::snap(pid).unwrap_or_default();
    if let Err(e) = result {
        return Err(e.context(format!(
            "soak stopped; agent log:\n{}",
            crate::bench::topology::log_tail(&agent.run.log, 20)
        )));
    }
    // The totals: the clients' final counters and every action.
    let last = rows.last_mut().expect("rows");
    last.clients = latest.lock().expect("counters").clone();
    last.ops = c.clone();
    let (md, fails) = report::render(&rows, &quiet, a.minutes, alive);
    let out = a.out.clone().unwrap_or_else(|| target_dir().join("soak"));
    write_report(&out, &md, &rows, &quiet, &fails)?;
    println!("{md}");
    if !fails.is_empty() {
        let _ = fs::copy(&agent.run.log, out.join("agent.log"));
        bail!("soak failed: {}", fails.join("; "));
    }
    Ok(())
}

/// Samples the agent and the counts at the end of `minute`.
fn sample(rows: &mut Vec<Row>, minute: u64, pid: u32, latest: &Latest, c: &OpCounts) -> Result<()> {
    let row = Row {
        minute,
        snap: procstat::snap(pid)?,
        clients: latest.lock().expect("counters").clone(),
        ops: c.clone(),
    };
    eprintln!(
        "soak: minute {minute}: RSS {:.1} MiB, {} fds, {} threads, {} ok, {} errors",
        row.snap.rss_kib as f64 / 1024.0,
        row.snap.fds,
        row.snap.threads,
        row.clients.good_ok(),
        row.clients.good_errors() + c.h2_errors + c.churn_errors + c.reload_errors
    );
    rows.push(row);
    Ok(())
}

fn write_report(
    out: &Path,
    md: &str,
    rows: &[Row],
    quiet: &procstat::Snap,
    fails: &[String],
) -> Result<()> {
    fs::create_dir_all(out)?;
    fs::write(out.join("soak.md"), md)?;
    let json = serde_json::json!({
        "verdict": if fails.is_empty() { "pass" } else { "fail" },
        "failures": fails,
        "rows": rows,
        "quiet": quiet,
    });
    fs::write(out.join("soak.json"), serde_json::to_string_pretty(&json)?)?;
    eprintln!("soak: wrote {}/soak.md, soak.json", out.display());
    Ok(())
}
