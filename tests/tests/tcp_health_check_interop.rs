//! A TCP health check with payloads (`tcp_health_check` `send` / `receive`, a Redis-style
//! `PING` / `+PONG`) against a real Envoy 1.40 on the same YAML: the host that answers
//! `+PONG` passes and is checked on one kept connection, the one that answers `-ERR` fails
//! (the check times out) and is marked `failed_active_hc` and `active_hc_timeout` in
//! `/clusters`.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use sluice_tests::{
    admin_run::{host_health_flags, one_cluster_bootstrap, start_text},
    conformance::proxy::free_ports,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// A line server answering each `PING` with `answer`; counts connections and pings.
struct LineServer {
    port: u16,
    conns: Arc<AtomicUsize>,
    pings: Arc<AtomicUsize>,
}

async fn line_server(answer: &'static str) -> LineServer {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let (conns, pings) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (c, p) = (conns.clone(), pings.clone());
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            let p = p.clone();
            tokio::spawn(async move {
                let (r, mut w) = s.into_split();
                let mut lines = BufReader::new(r).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if line == "PING" {
                        p.fetch_add(1, Ordering::SeqCst);
                        if w.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    LineServer { port, conns, pings }
}

fn config(port: u16, good: u16, bad: u16) -> String {
    // `PING\r\n` out, `+PONG` back (hex).
    let fields = "    health_checks:
    - {timeout: 0.5s, interval: 0.2s, no_traffic_interval: 0.2s, unhealthy_threshold: 1, healthy_threshold: 1,
       tcp_health_check: {send: {text: 50494e470d0a}, receive: [{text: 2b504f4e47}]}}
";
    one_cluster_bootstrap(port, "pool", fields, &[good, bad])
}

#[test]
fn a_tcp_payload_check_passes_on_its_answer_over_one_kept_connection() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut seen = Vec::new();
    for envoy in [true, false] {
        let good = rt.block_on(line_server("+PONG\r\n"));
        let bad = rt.block_on(line_server("-ERR\r\n"));
        let [port] = free_ports::<1>();
        let p = start_text("tcp-hc", &config(port, good.port, bad.port), envoy);
        std::thread::sleep(Duration::from_millis(1_600));
        let flags = |port: u16| host_health_flags(&p.admin, "pool", port);
        let who = if envoy { "envoy" } else { "sluice" };
        let row = (
            flags(good.port),
            flags(bad.port),
            good.conns.load(Ordering::SeqCst),
            good.pings.load(Ordering::SeqCst),
        );
        eprintln!(
            "{who}: good {} bad {}, good's connections {} and pings {}",
            row.0, row.1, row.2, row.3
        );
        drop(p);
        seen.push(row);
    }
    for (flags_good, flags_bad, conns, pings) in &seen {
        assert_eq!(flags_good, "healthy");
        // The failing host's check timed out waiting for `+PONG`.
        assert_eq!(flags_bad, "/failed_active_hc/active_hc_timeout");
        assert_eq!(*conns, 1, "one kept connection");
        assert!(
            (6..=14).contains(pings),
            "{pings} checks in about 1.6 s at 0.2 s"
        );
    }
    assert!(seen[0].3.abs_diff(seen[1].3) <= 2, "{seen:?}");
}
