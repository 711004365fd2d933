//! Memory comes back after a big config is reloaded away (issue 13, item 6): a real
//! `sluice proxy` starts small, hot-reloads to 100k routes, reloads back to the small config,
//! and its VmRSS must fall back near the small config's, also while a keep-alive connection
//! accepted under the big config stays open. Before the fix 100k routes left the process at
//! 683 MiB after reloading away from them (369 MiB in this test's debug build).

use std::time::{Duration, Instant};

use sluice_tests::{
    conformance::client::{send_on, Request},
    upstream::harness::{
        curl, free_port, http_bootstrap, route_to, static_cluster, ProxyProcess, TempDir,
    },
};

const BIG_ROUTES: usize = 100_000;

/// VmRSS of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

fn config(admin: u16, port: u16, backend: u16, routes: usize) -> String {
    let mut r = String::with_capacity(routes * 100);
    for i in 0..routes {
        r.push_str(&format!(
            "              - match: {{ prefix: \"/r{i}/\" }}\n                route: {{ cluster: backend }}\n"
        ));
    }
    r.push_str(&route_to("backend"));
    http_bootstrap(
        admin,
        port,
        &r,
        &static_cluster("backend", &[backend], ""),
        "",
    )
}

/// Writes `yaml`, sends SIGHUP and waits until the reload counter passes `reloads`.
fn reload(p: &ProxyProcess, yaml: &str, reloads: u64) {
    std::fs::write(&p.config, yaml).unwrap();
    p.sighup();
    let deadline = Instant::now() + Duration::from_secs(120);
    while p.stat("server.reloads") <= reloads {
        assert_eq!(p.stat("server.reload_failures"), 0, "{}", p.log());
        assert!(Instant::now() < deadline, "reload not applied in 120 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The lowest RSS seen over `over` (what is returned may take a moment).
fn settled_rss(pid: u32, over: Duration) -> u64 {
    let end = Instant::now() + over;
    let mut low = u64::MAX;
    while Instant::now() < end {
        low = low.min(rss_kib(pid));
        std::thread::sleep(Duration::from_millis(100));
    }
    low
}

#[test]
fn rss_returns_after_a_big_config_is_reloaded_away() {
    let (admin, port, backend) = (free_port(), free_port(), free_port());
    let small = config(admin, port, backend, 10);
    let big = config(admin, port, backend, BIG_ROUTES);
    let p = ProxyProcess::start_with(TempDir::new("reload-mem"), &small, admin, 0);
    let pid = p.pid();
    // Traffic on the small config first, so the baseline has its pools and buffers.
    let url = format!("http://127.0.0.1:{port}/r5/x");
    for _ in 0..20 {
        curl(&["-s", "-m", "2", &url]);
    }
    let baseline = settled_rss(pid, Duration::from_millis(500));

    reload(&p, &big, 0);
    let loaded = rss_kib(pid);
    // The big table serves: a route near its end answers (the backend is closed: 503).
    let (status, _, _) = curl(&[
        "-s",
        "-m",
        "5",
        &format!("http://127.0.0.1:{port}/r99999/x"),
    ]);
    assert_eq!(status, 503);
    // A keep-alive connection accepted under the big config, kept open to the end.
    let addr = ([127, 0, 0, 1], port).into();
    let req = Request {
        method: "GET",
        path: "/r99999/x",
        host: Some("svc"),
        headers: &[],
        body: None,
        http10: false,
        preamble: None,
    };
    let (r, conn) = send_on(None, addr, &req, Duration::from_secs(5)).unwrap();
    assert_eq!(r.status, 503);

    reload(&p, &small, 1);
    for _ in 0..20 {
        curl(&["-s", "-m", "2", &url]);
    }
    // The kept-alive connection routes with the small config now (the catch-all route; the
    // backend is closed, so 503 again) and stays open while RSS is measured.
    let (r, _conn) = send_on(Some(conn), addr, &req, Duration::from_secs(5)).unwrap();
    assert_eq!(r.status, 503);
    let after = settled_rss(pid, Duration::from_secs(2));
    eprintln!(
        "VmRSS: {} MiB with the small config, {} MiB with {BIG_ROUTES} routes, {} MiB after reloading back",
        baseline / 1024,
        loaded / 1024,
        after / 1024
    );
    assert!(
        loaded > baseline + 50 * 1024,
        "the big config should cost memory: {loaded} KiB vs {baseline} KiB"
    );
    let allowed = baseline + (baseline / 4).max(16 * 1024);
    assert!(
        after <= allowed,
        "VmRSS after reloading the big config away: {} MiB, baseline {} MiB (allowed {} MiB)",
        after / 1024,
        baseline / 1024,
        allowed / 1024
    );
}
