//! `xtask soak clients` (hidden, run inside an enrolled pod and the soak's cgroup, so every
//! connection is captured by the agent): the well-behaved clients at a moderate, fixed rate —
//! HTTP/1.1 keep-alive (routed `svc.test/api/`, rewritten), HTTP/1.1 one request per connection
//! (passthrough), a WebSocket echo and a raw TCP echo — and, every [`ABUSE_EVERY`], one round of
//! the abusive clients ([`super::abuse`]). Prints the cumulative [`Counters`] as one JSON line
//! every [`PRINT_EVERY`] and at the end; stops by itself after `--seconds`.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use anyhow::{bail, Result};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    time::{sleep, timeout, Instant},
};

use super::{
    abuse,
    config::{SVC_HOST, TCP_ECHO_PORT, WS_PORT},
    tally::Shared,
    wire,
};
use crate::bench::{loadgen, topology::HTTP_PORT};

/// Keep-alive connections and the requests/s of each; one-request connections per second.
const KEEPALIVE_CONNS: u64 = 4;
const KEEPALIVE_RPS: u64 = 10;
const CLOSE_PER_SEC: u64 = 5;
/// WebSocket / TCP echo: one message every 200 ms on one connection, renewed every 30 s.
const ECHO_EVERY: Duration = Duration::from_millis(200);
const ECHO_CONN_LIFE: Duration = Duration::from_secs(30);
/// Deadline of one exchange of a well-behaved client.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);
pub const ABUSE_EVERY: Duration = Duration::from_secs(15);
const PRINT_EVERY: Duration = Duration::from_secs(5);

/// Arguments of `xtask soak clients`.
#[derive(Clone, Debug, clap::Args)]
pub struct ClientsArgs {
    /// The server's address (nginx on 80, the echo servers).
    #[arg(long)]
    pub server: IpAddr,
    /// Run time.
    #[arg(long)]
    pub seconds: u64,
}

/// Names an error for the tally: what failed, not the OS message.
fn kind_of(e: &anyhow::Error) -> String {
    if e.downcast_ref::<tokio::time::error::Elapsed>().is_some() {
        return "timeout".into();
    }
    match e.downcast_ref::<std::io::Error>() {
        Some(io) => format!("io {:?}", io.kind()),
        None => e.to_string(),
    }
}

async fn connect(addr: SocketAddr) -> Result<TcpStream> {
    let s = timeout(EXCHANGE_TIMEOUT, TcpStream::connect(addr)).await??;
    s.set_nodelay(true)?;
    Ok(s)
}

/// One keep-alive connection: `KEEPALIVE_RPS` requests/s; reconnects after an error.
async fn keepalive(addr: SocketAddr, end: Instant, t: Shared) {
    let req = loadgen::request("/api/1k", SVC_HOST, false);
    let mut buf = Vec::new();
    let mut conn: Option<TcpStream> = None;
    let every = Duration::from_millis(1000 / KEEPALIVE_RPS);
    while Instant::now() < end {
        let tick = Instant::now() + every;
        let r = async {
            if conn.is_none() {
                conn = Some(connect(addr).await?);
            }
            let s = conn.as_mut().expect("connected");
            let ok = timeout(EXCHANGE_TIMEOUT, loadgen::exchange(s, &req, &mut buf)).await??;
            if !ok {
                bail!("status not 200");
            }
            anyhow::Ok(())
        };
        match r.await {
            Ok(()) => t.ok("h1_keepalive"),
            Err(e) => {
                conn = None;
                t.error("h1_keepalive", &kind_of(&e));
            }
        }
        tokio::time::sleep_until(tick).await;
    }
}

/// `CLOSE_PER_SEC` connections/s, each one request with `Connection: close` (passthrough).
async fn one_per_conn(addr: SocketAddr, end: Instant, t: Shared) {
    let req = loadgen::request("/64", &addr.ip().to_string(), true);
    let mut buf = Vec::new();
    let every = Duration::from_millis(1000 / CLOSE_PER_SEC);
    while Instant::now() < end {
        let tick = Instant::now() + every;
        let r = async {
            let mut s = connect(addr).await?;
            let ok = timeout(EXCHANGE_TIMEOUT, loadgen::exchange(&mut s, &req, &mut buf)).await??;
            if !ok {
                bail!("status not 200");
            }
            anyhow::Ok(())
        };
        match r.await {
            Ok(()) => t.ok("h1_close"),
            Err(e) => t.error("h1_close", &kind_of(&e)),
        }
        tokio::time::sleep_until(tick).await;
    }
}

/// One echo connection (WebSocket when `ws`, else raw TCP): a message every [`ECHO_EVERY`]
/// until [`ECHO_CONN_LIFE`] or `end`; each echoed message is one success.
async fn echo_conn(addr: SocketAddr, ws: bool, end: Instant, t: &Shared) -> Result<()> {
    let kind = if ws { "websocket" } else { "tcp" };
    let mut s = connect(addr).await?;
    if ws {
        let req = format!(
            "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n\r\n",
            addr,
            wire::WS_KEY
        );
        s.write_all(req.as_bytes()).await?;
        let (head, rest) = timeout(EXCHANGE_TIMEOUT, wire::read_head(&mut s)).await??;
        if wire::status(&head) != Some(101) || !rest.is_empty() {
            bail!("upgrade answered {:?}", head.lines().next());
        }
    }
    let stop = (Instant::now() + ECHO_CONN_LIFE).min(end);
    let mut i = 0u64;
    while Instant::now() < stop {
        let msg = format!("soak {kind} message {i}");
        let back = async {
            if ws {
                s.write_all(&wire::ws_frame(msg.as_bytes(), Some([1, 2, 3, 4])))
                    .await?;
                let (op, p) = wire::ws_read(&mut s).await?;
                anyhow::ensure!(op == 1, "opcode {op}");
                anyhow::Ok(p)
            } else {
                s.write_all(msg.as_bytes()).await?;
                let mut p = vec![0u8; msg.len()];
                s.read_exact(&mut p).await?;
                anyhow::Ok(p)
            }
        };
        let p = timeout(EXCHANGE_TIMEOUT, back).await??;
        if p != msg.as_bytes() {
            bail!("echo differs");
        }
        t.ok(kind);
        i += 1;
        sleep(ECHO_EVERY).await;
    }
    Ok(())
}

async fn echo(addr: SocketAddr, ws: bool, end: Instant, t: Shared) {
    let kind = if ws { "websocket" } else { "tcp" };
    while Instant::now() < end {
        if let Err(e) = echo_conn(addr, ws, end, &t).await {
            t.error(kind, &kind_of(&e));
            sleep(ECHO_EVERY).await;
        }
    }
}

/// Entry of `xtask soak clients`.
pub fn main(a: &ClientsArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let t = Shared::default();
        let end = Instant::now() + Duration::from_secs(a.seconds);
        let http = SocketAddr::new(a.server, HTTP_PORT);
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..KEEPALIVE_CONNS {
            tasks.spawn(keepalive(http, end, t.clone()));
        }
        tasks.spawn(one_per_conn(http, end, t.clone()));
        tasks.spawn(echo(
            SocketAddr::new(a.server, WS_PORT),
            true,
            end,
            t.clone(),
        ));
        tasks.spawn(echo(
            SocketAddr::new(a.server, TCP_ECHO_PORT),
            false,
            end,
            t.clone(),
        ));
        tasks.spawn(abuse::rounds(http, end, ABUSE_EVERY, t.clone()));
        let printer = {
            let t = t.clone();
            async move {
                loop {
                    sleep(PRINT_EVERY).await;
                    println!("{}", serde_json::to_string(&t.snapshot()).expect("json"));
                }
            }
        };
        tokio::select! {
            _ = async { while tasks.join_next().await.is_some() {} } => {}
            _ = printer => {}
        }
        println!("{}", serde_json::to_string(&t.snapshot())?);
        Ok(())
    })
}
