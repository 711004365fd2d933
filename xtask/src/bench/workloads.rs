//! The workloads, each run from inside the client pod (and the bench cgroup) against the server
//! pod's address: open loop (own generator), closed-loop max throughput (wrk, h2load), connection
//! churn with conntrack counting, bulk TCP (iperf3), and the proxy's CPU and RSS from /proc.

use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};

use super::{
    loadgen::{ChurnResult, OpenResult},
    topology::{Topology, H2_PORT, HTTP_PORT, IPERF_PORT, PEER_PATH},
};

/// Runs a command to completion inside the client pod and the bench cgroup; returns stdout.
fn client_run(topo: &Topology, prog: &str, args: &[&str], timeout: Duration) -> Result<String> {
    let mut c: Command = topo.client.command(prog, Some(&topo.cgroup));
    c.args(args);
    run_bounded(
        c,
        &format!("`{prog} {}` in the client pod", args.join(" ")),
        timeout,
    )
}

/// Runs `c` to completion with [`wait_bounded`].
pub fn run_bounded(mut c: Command, what: &str, timeout: Duration) -> Result<String> {
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = c.spawn().with_context(|| format!("starting {what}"))?;
    wait_bounded(child, what, timeout)
}

/// Waits for `child` (stdout and stderr piped), killed (SIGKILL) after `timeout`; returns
/// stdout, fails with its stderr and stdout when it exits non-zero.
pub fn wait_bounded(child: std::process::Child, what: &str, timeout: Duration) -> Result<String> {
    let pid = child.id();
    // A watchdog bounds every client run in time.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let dog = std::thread::spawn(move || {
        if rx.recv_timeout(timeout).is_err() {
            // SAFETY: our own child, not yet reaped (the main thread is in wait_with_output).
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    });
    let out = child.wait_with_output()?;
    let _ = tx.send(());
    let _ = dog.join();
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn bound(secs: f64) -> Duration {
    Duration::from_secs_f64(secs * 3.0 + 20.0)
}

/// Runs our load generator in the client pod against nginx's `/1k` and parses its JSON line.
fn loadgen<T: serde::de::DeserializeOwned>(
    topo: &Topology,
    loadgen: &Path,
    mode: &str,
    secs: f64,
    extra: &[&str],
) -> Result<T> {
    let addr = format!("{}:{HTTP_PORT}", topo.server_ip);
    let secs_arg = secs.to_string();
    let mut args = vec![
        "bench",
        "loadgen",
        "--mode",
        mode,
        "--addr",
        &addr,
        "--path",
        "/1k",
        "--seconds",
        &secs_arg,
    ];
    args.extend_from_slice(extra);
    let out = client_run(topo, &loadgen.to_string_lossy(), &args, bound(secs))?;
    serde_json::from_str(out.trim()).with_context(|| format!("loadgen printed {out:?}"))
}

/// Open loop through our generator.
pub fn open_loop(
    topo: &Topology,
    gen: &Path,
    rate: u64,
    conns: u64,
    secs: f64,
) -> Result<OpenResult> {
    let (rate_s, conns_s) = (rate.to_string(), conns.to_string());
    let r: OpenResult = loadgen(
        topo,
        gen,
        "open",
        secs,
        &["--rate", &rate_s, "--conns", &conns_s],
    )?;
    if r.requests == 0 {
        bail!(
            "open loop {rate} rps / {conns} conns: no successful request ({} errors)",
            r.errors
        );
    }
    Ok(r)
}

fn churn_run(
    topo: &Topology,
    gen: &Path,
    conc: u64,
    secs: f64,
    max_conns: u64,
) -> Result<ChurnResult> {
    let (conc_s, max_s) = (conc.to_string(), max_conns.to_string());
    let r: ChurnResult = loadgen(
        topo,
        gen,
        "churn",
        secs,
        &["--conns", &conc_s, "--max-conns", &max_s],
    )?;
    if r.connections == 0 {
        bail!("churn: no connection completed ({} errors)", r.errors);
    }
    Ok(r)
}

/// New connections per second (one request each) with `conc` concurrent clients.
pub fn churn(topo: &Topology, loadgen: &Path, conc: u64, secs: f64) -> Result<ChurnResult> {
    churn_run(topo, loadgen, conc, secs, u64::MAX)
}

/// Conntrack entries the client pod's table gains per connection: `n` sequential connections
/// (one request each) after a flush, counted with `conntrack -C` before and after. Short and
/// sequential so no entry expires and no 4-tuple is reused meanwhile.
pub fn conntrack_per_conn(topo: &Topology, loadgen: &Path, n: u64) -> Result<f64> {
    topo.conntrack_flush()?;
    let before = topo.conntrack_count()?;
    let r = churn_run(topo, loadgen, 1, 10.0, n)?;
    let after = topo.conntrack_count()?;
    Ok(after.saturating_sub(before) as f64 / (r.connections + r.errors) as f64)
}

/// The peer address nginx saw for one request (curl) from the client pod through the path:
/// 127.0.0.6 when a server-side proxy delivered it, the client pod's address otherwise.
pub fn server_peer(topo: &Topology) -> Result<String> {
    let url = format!("http://{}:{HTTP_PORT}{PEER_PATH}", topo.server_ip);
    let args = ["-sS", "--noproxy", "*", "--max-time", "5", &url];
    let out = client_run(topo, "curl", &args, Duration::from_secs(10))?;
    Ok(out.trim().to_string())
}

/// Closed-loop HTTP/1.1 throughput with wrk (one thread): requests/s.
pub fn wrk(topo: &Topology, path: &str, conns: u64, secs: f64) -> Result<f64> {
    let d = format!("{}s", secs.ceil() as u64);
    let url = format!("http://{}:{HTTP_PORT}{path}", topo.server_ip);
    let c = conns.to_string();
    let out = client_run(topo, "wrk", &["-t1", "-c", &c, "-d", &d, &url], bound(secs))?;
    wrk_rps(&url, &out)
}

/// Requests/s from wrk's output; fails when it counted errors.
pub fn wrk_rps(url: &str, out: &str) -> Result<f64> {
    if out.contains("Non-2xx")
        || out.contains("Socket errors")
            && !out.contains("Socket errors: connect 0, read 0, write 0, timeout 0")
    {
        bail!("wrk {url}: errors:\n{out}");
    }
    out.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("wrk printed no Requests/sec:\n{out}"))
}

/// Closed-loop HTTP/2 (h2c prior knowledge) throughput with h2load (one thread): requests/s.
pub fn h2load(topo: &Topology, secs: f64) -> Result<f64> {
    let url = format!("http://{}:{H2_PORT}/1k", topo.server_ip);
    let d = (secs.ceil() as u64).to_string();
    let out = client_run(
        topo,
        "h2load",
        &["-t1", "-c16", "-m10", "-D", &d, &url],
        bound(secs),
    )?;
    let line = out
        .lines()
        .find(|l| l.starts_with("requests:"))
        .with_context(|| format!("h2load printed no requests line:\n{out}"))?;
    if !line.contains(" 0 failed") || !line.contains(" 0 errored") {
        bail!("h2load {url}: {line}");
    }
    out.lines()
        .find_map(|l| {
            let rest = l.strip_prefix("finished in ")?;
            let (_, r) = rest.split_once(", ")?;
            r.split(' ').next()?.parse().ok()
        })
        .with_context(|| format!("h2load printed no req/s:\n{out}"))
}

/// Bulk TCP with iperf3: received Gbit/s.
///
/// A past data-path finding stays watched: the kernel's sk_msg ingress redirect has no
/// backpressure, and before sk_msg got its per-socket budget (sluice_common::
/// FAST_PATH_TURN_BUDGET) a bulk writer through the fast path queued until tcp_mem refused and
/// saw `write: Cannot allocate memory`. Should it ever come back, the run is retried at most
/// twice and every occurrence is printed as a FINDING line and recorded, so it is never hidden.
pub fn iperf(topo: &Topology, secs: f64) -> Result<f64> {
    let mut attempt = 0;
    loop {
        match iperf_once(topo, secs) {
            Err(e) if attempt < 2 && is_enomem(&e) => {
                attempt += 1;
                println!("FINDING: iperf3 hit ENOMEM (sk_msg ingress redirect); retry {attempt}/2: {e:#}");
            }
            r => return r,
        }
    }
}

/// True when iperf3 failed because a write returned ENOMEM.
pub fn is_enomem(e: &anyhow::Error) -> bool {
    format!("{e:#}").contains("Cannot allocate memory")
}

fn iperf_once(topo: &Topology, secs: f64) -> Result<f64> {
    let t = (secs.ceil() as u64).to_string();
    let out = client_run(
        topo,
        "iperf3",
        &[
            "-c",
            &topo.server_ip,
            "-p",
            &IPERF_PORT.to_string(),
            "-t",
            &t,
            "-J",
        ],
        bound(secs),
    )?;
    let v: serde_json::Value = serde_json::from_str(&out).context("iperf3 -J output")?;
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e9)
        .with_context(|| {
            format!(
                "iperf3: no end.sum_received.bits_per_second: {}",
                v["error"]
            )
        })
}

/// CPU time (ns) of every live thread of `pid` (`/proc/<pid>/task/*/schedstat`, first field).
pub fn cpu_ns(pid: u32) -> Result<u64> {
    let mut total = 0;
    let dir = format!("/proc/{pid}/task");
    for e in fs::read_dir(&dir).with_context(|| format!("read {dir}"))? {
        let p = e?.path().join("schedstat");
        if let Ok(s) = fs::read_to_string(&p) {
            total += s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Ok(total)
}

/// (VmRSS, VmHWM) of `pid` in KiB.
pub fn rss_kib(pid: u32) -> Result<(u64, u64)> {
    let p = format!("/proc/{pid}/status");
    let s = fs::read_to_string(&p).with_context(|| format!("read {p}"))?;
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("{p}: no {name}"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}
