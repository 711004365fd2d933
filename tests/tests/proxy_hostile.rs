//! `sluice proxy` against hostile clients (issue 13): connections that never send a byte, the
//! admin listener at the fd limit, hop-by-hop nominations of the proxy's own headers, upgrades
//! the HCM does not enable. Each test drives the real binary on loopback.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use sluice_tests::upstream::harness::{
    free_port, http_bootstrap, route_to, static_cluster, ProxyProcess,
};

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after_comm.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime) are 12 and 13 after the state field.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// Sets `pid`'s soft RLIMIT_NOFILE to `n` (the hard limit stays, so it can be raised again).
fn set_fd_limit(pid: u32, n: u64) {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit on another process with valid pointers.
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            std::ptr::null(),
            &mut old,
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    let lim = libc::rlimit {
        rlim_cur: n.min(old.rlim_max),
        rlim_max: old.rlim_max,
    };
    // SAFETY: as above.
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &lim,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

fn open_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as u64
}

#[test]
fn admin_accept_loop_backs_off_at_emfile() {
    let (admin, port) = (free_port(), free_port());
    let yaml = http_bootstrap(
        admin,
        port,
        &route_to("none"),
        &static_cluster("none", &[], ""),
        "",
    );
    let p = ProxyProcess::start(&yaml, admin);
    let pid = p.pid();
    // Room for no more accepted sockets: every admin accept now fails with EMFILE.
    set_fd_limit(pid, open_fds(pid));
    let held: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(p.admin).expect("the backlog takes the connection"))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let (t0, c0) = (Instant::now(), cpu_ticks(pid));
    std::thread::sleep(Duration::from_secs(2));
    let ticks = cpu_ticks(pid) - c0;
    let hz = 100.0; // USER_HZ
    let share = ticks as f64 / hz / t0.elapsed().as_secs_f64();
    assert!(
        share < 0.3,
        "proxy used {:.0}% CPU while at EMFILE",
        share * 100.0
    );
    // Once descriptors are available again the admin listener serves the waiting clients.
    set_fd_limit(pid, 4096);
    let mut c = held.into_iter().next().unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"GET /ready HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    assert!(
        out.starts_with("HTTP/1.1 200"),
        "admin after EMFILE: {out:?}"
    );
}
