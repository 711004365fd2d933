//! The load generator's `multi` mode: one process drives many pods. It enters each pod's netns
//! in turn (setns on its only thread), connects `--conns` keep-alive connections from there (a
//! socket stays in the netns it was created in), returns to its own netns and runs the open loop
//! of [`loadgen::open_loop_on`] over all of them: `--rate` is the total over every pod. A
//! connection whose first request fails counts as an error and is left out.
//! It must run in the bench cgroup, as every pod process does, so connect4 captures it.

use std::{fs::File, os::fd::AsRawFd as _, time::Duration};

use anyhow::{bail, Context as _, Result};

use super::super::loadgen::{self, LoadgenArgs, OpenResult};

fn enter(ns: &File, what: &str) -> Result<()> {
    // SAFETY: setns on a valid netns fd; the process is single-threaded at this point.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns {what}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Connections from every pod of `args.netns`, `args.conns` each.
fn connect_all(args: &LoadgenArgs) -> Result<Vec<std::net::TcpStream>> {
    let home = File::open("/proc/self/ns/net").context("open own netns")?;
    let mut out = Vec::new();
    let result = (|| {
        for name in &args.netns {
            let f = File::open(format!("/run/netns/{name}"))
                .with_context(|| format!("open netns {name}"))?;
            enter(&f, name)?;
            for _ in 0..args.conns {
                let s = std::net::TcpStream::connect_timeout(&args.addr, Duration::from_secs(5))
                    .with_context(|| format!("connect {} from {name}", args.addr))?;
                s.set_nonblocking(true)?;
                out.push(s);
            }
        }
        anyhow::Ok(())
    })();
    enter(&home, "back home")?;
    result.map(|()| out)
}

/// Entry of `xtask bench loadgen --mode multi --netns a,b,..`.
pub fn run(args: &LoadgenArgs, rt: &tokio::runtime::Runtime) -> Result<OpenResult> {
    if args.netns.is_empty() {
        bail!("--mode multi needs --netns");
    }
    let streams = connect_all(args)?;
    let req = loadgen::request(&args.path, &args.addr.to_string(), false);
    rt.block_on(async {
        // First request on every connection: one that fails is counted as an error and its
        // connection left out of the open loop (the rest of the pods still carry traffic).
        let mut ok = Vec::new();
        let mut failed = 0;
        let mut buf = Vec::with_capacity(80 * 1024);
        for s in streams {
            let mut s = tokio::net::TcpStream::from_std(s)?;
            match loadgen::exchange(&mut s, &req, &mut buf).await {
                Ok(true) => ok.push(s),
                _ => failed += 1,
            }
        }
        if ok.is_empty() {
            bail!("no connection answered its first request ({failed} failed)");
        }
        let mut r =
            loadgen::open_loop_on(ok, &req, args.rate, Duration::from_secs_f64(args.seconds))
                .await?;
        r.errors += failed;
        Ok(r)
    })
}
