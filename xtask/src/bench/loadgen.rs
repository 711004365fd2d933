//! The bench's own HTTP/1.1 load generator (run inside the client pod): open loop at a fixed rate
//! with coordinated-omission correction, and connection churn (one request per connection).
//!
//! Open loop: request `i` is due at `t0 + i / rate`, spread round robin over the connections.
//! A request whose connection was still busy with the previous response at its due time is
//! timed from the due time (the wait it suffered is the system's fault: coordinated omission
//! corrected as wrk2 does); a request sent on an idle connection is timed from the moment it was
//! written (tokio's 1 ms timer slack is the generator's, not the system's, and is the same on
//! every path). Latencies go into a full HDR histogram (1 µs .. 60 s, 3 significant digits).

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Result of an open-loop run, latencies in microseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct OpenResult {
    /// Responses received (status 200, full body).
    pub requests: u64,
    /// Failed requests (connect/read/write errors, non-200).
    pub errors: u64,
    /// Requests per second actually achieved.
    pub achieved_rps: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

/// Result of a churn run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ChurnResult {
    /// Completed connections (connect, one request, full response, close).
    pub connections: u64,
    /// Failed connections.
    pub errors: u64,
    /// Connections per second.
    pub conns_per_sec: f64,
}

pub fn request(path: &str, host: &str, close: bool) -> Vec<u8> {
    let conn = if close { "Connection: close\r\n" } else { "" };
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: sluice-bench\r\n{conn}\r\n")
        .into_bytes()
}

/// Reads one response; returns Ok(true) for 200. `buf` is reused between calls.
async fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<bool> {
    buf.clear();
    let mut chunk = [0u8; 16384];
    let head_end = loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed before response headers");
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
    };
    let head = std::str::from_utf8(&buf[..head_end]).context("response head is not UTF-8")?;
    let ok = head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200");
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())
                .flatten()
        })
        .context("response without content-length")?;
    let mut have = buf.len() - head_end;
    while have < len {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed in the body");
        }
        have += n;
    }
    Ok(ok)
}

/// Writes one request and reads its response: Ok(true) for 200.
pub async fn exchange(s: &mut TcpStream, req: &[u8], buf: &mut Vec<u8>) -> Result<bool> {
    s.write_all(req).await?;
    read_response(s, buf).await
}

/// Open loop: `rate` requests/s over `conns` keep-alive connections for `duration`.
pub async fn open_loop(
    addr: SocketAddr,
    path: &str,
    rate: u64,
    conns: u64,
    duration: Duration,
) -> Result<OpenResult> {
    let mut streams = Vec::new();
    for _ in 0..conns {
        let s = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect {addr}"))?;
        streams.push(s);
    }
    open_loop_on(
        streams,
        &request(path, &addr.to_string(), false),
        rate,
        duration,
    )
    .await
}

/// Open loop over connections already made (the scale bench connects them from many pods):
/// one warm-up request each, then `rate` requests/s round robin over them for `duration`.
pub async fn open_loop_on(
    mut streams: Vec<TcpStream>,
    req: &[u8],
    rate: u64,
    duration: Duration,
) -> Result<OpenResult> {
    let conns = streams.len() as u64;
    let total = ((rate as f64 * duration.as_secs_f64()) as u64).max(conns);
    for s in &streams {
        s.set_nodelay(true)?;
    }
    // Warm every connection with one request (not recorded).
    let mut buf = Vec::with_capacity(80 * 1024);
    for s in &mut streams {
        s.write_all(req).await?;
        read_response(s, &mut buf).await?;
    }
    let t0 = Instant::now() + Duration::from_millis(5);
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut tasks = Vec::new();
    for (c, mut s) in streams.into_iter().enumerate() {
        let req = req.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
            let mut errors = 0u64;
            let mut buf = Vec::with_capacity(80 * 1024);
            let mut i = c as u64;
            while i < total {
                let due = t0 + interval.mul_f64(i as f64);
                let now = Instant::now();
                let start = if now < due {
                    tokio::time::sleep_until(due.into()).await;
                    Instant::now()
                } else {
                    due
                };
                let ok = match s.write_all(&req).await {
                    Ok(()) => read_response(&mut s, &mut buf).await.unwrap_or(false),
                    Err(_) => false,
                };
                if ok {
                    let us = start.elapsed().as_micros().max(1) as u64;
                    h.saturating_record(us);
                } else {
                    errors += 1;
                    // A broken connection cannot carry the rest of its schedule.
                    errors += (total - i) / conns;
                    break;
                }
                i += conns;
            }
            (h, errors)
        }));
    }
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut errors = 0;
    for t in tasks {
        let (h, e) = t.await?;
        all.add(&h)?;
        errors += e;
    }
    let secs = t0.elapsed().as_secs_f64();
    Ok(OpenResult {
        requests: all.len(),
        errors,
        achieved_rps: all.len() as f64 / secs,
        p50_us: all.value_at_quantile(0.5) as f64,
        p90_us: all.value_at_quantile(0.9) as f64,
        p99_us: all.value_at_quantile(0.99) as f64,
        p999_us: all.value_at_quantile(0.999) as f64,
        max_us: all.max() as f64,
        mean_us: all.mean(),
    })
}

/// Connection churn: `concurrency` workers each connect, send one request with
/// `Connection: close`, read the whole response and close, for `duration`.
pub async fn churn(
    addr: SocketAddr,
    path: &str,
    concurrency: u64,
    duration: Duration,
    max_conns: u64,
) -> Result<ChurnResult> {
    let started = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let req = request(path, &addr.to_string(), true);
    let t0 = Instant::now();
    let end = t0 + duration;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let req = req.clone();
        let started = started.clone();
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut err) = (0u64, 0u64);
            let mut buf = Vec::with_capacity(8192);
            while Instant::now() < end
                && started.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < max_conns
            {
                let one = async {
                    let mut s = TcpStream::connect(addr).await?;
                    s.set_nodelay(true)?;
                    s.write_all(&req).await?;
                    let good = read_response(&mut s, &mut buf).await?;
                    anyhow::Ok(good)
                };
                match one.await {
                    Ok(true) => ok += 1,
                    _ => err += 1,
                }
            }
            (ok, err)
        }));
    }
    let (mut ok, mut err) = (0, 0);
    for t in tasks {
        let (o, e) = t.await?;
        ok += o;
        err += e;
    }
    Ok(ChurnResult {
        connections: ok,
        errors: err,
        conns_per_sec: ok as f64 / t0.elapsed().as_secs_f64(),
    })
}

/// Entry point of `xtask bench loadgen`: prints one JSON object on stdout.
pub fn main(args: &LoadgenArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let dur = Duration::from_secs_f64(args.seconds);
    let json = match args.mode.as_str() {
        "open" => serde_json::to_string(
            &rt.block_on(open_loop(args.addr, &args.path, args.rate, args.conns, dur))?,
        )?,
        "churn" => serde_json::to_string(&rt.block_on(churn(
            args.addr,
            &args.path,
            args.conns,
            dur,
            args.max_conns,
        ))?)?,
        "multi" => serde_json::to_string(&super::scale::multigen::run(args, &rt)?)?,
        m => bail!("bench loadgen: unknown mode {m:?} (open | churn | multi)"),
    };
    println!("{json}");
    Ok(())
}

/// Arguments of the hidden `xtask bench loadgen` subcommand.
#[derive(Clone, Debug, clap::Args)]
pub struct LoadgenArgs {
    /// open | churn | multi (connections from every netns of --netns, --rate in total)
    #[arg(long)]
    pub mode: String,
    /// multi: the pods' netns names (under /run/netns), comma separated.
    #[arg(long, value_delimiter = ',')]
    pub netns: Vec<String>,
    /// Server address (ip:port).
    #[arg(long)]
    pub addr: SocketAddr,
    /// Request path.
    #[arg(long, default_value = "/1k")]
    pub path: String,
    /// Requests per second (open loop).
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Connections (open loop) or concurrent workers (churn).
    #[arg(long, default_value_t = 16)]
    pub conns: u64,
    /// Churn: stop after this many connections.
    #[arg(long, default_value_t = u64::MAX)]
    pub max_conns: u64,
    /// Duration in seconds.
    #[arg(long, default_value_t = 1.0)]
    pub seconds: f64,
}
