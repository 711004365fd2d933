//! The sk_msg fast path's budget (real kernel, as root): a writer that outruns its reader is
//! demoted to the TCP stack and gets backpressure instead of ENOMEM, bytes stay in order, and
//! request/response traffic never runs out of budget.
//!
//! The test plays both the app and the proxy inside one enrolled pod, like datapath.rs:
//! `cargo test -p sluice-tests --test fast_path_budget`.

use std::{
    io::{ErrorKind, Read, Write},
    net::{Shutdown, TcpStream},
    time::{Duration, Instant},
};

use sluice_common::{Counter, FAST_PATH_TURN_BUDGET};
use sluice_tests::datapath::Fixture;

/// The byte at offset `i` of the bulk stream: no period divides a message size, so a reordered
/// or repeated chunk shows.
fn pattern_byte(i: usize) -> u8 {
    (i % 251) as u8
}

/// `read` that retries the spurious EAGAIN a blocking read can get on a SockHash socket.
fn read_retry(s: &mut TcpStream, buf: &mut [u8]) -> usize {
    loop {
        match s.read(buf) {
            Ok(n) => return n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("read: {e}"),
        }
    }
}

#[test]
fn writer_ahead_of_its_reader_is_demoted_and_throttled() {
    // 64 MiB with nobody reading: without the budget every byte would queue on the proxy socket
    // (the kernel never checks its receive buffer) and the writer would never block.
    const LIMIT: usize = 64 << 20;
    const CHUNK: usize = 256 << 10;
    let mut f = Fixture::new("kfb");
    let pod = f.enroll_pod(Fixture::node_policy());
    let (l, app, mut proxy) = pod.captured_pair();
    let before = f.dp().counters().unwrap();
    let mut w = app.try_clone().unwrap();
    w.set_nonblocking(true).unwrap();
    let mut sent = 0usize;
    let mut blocked = false;
    let mut chunk = vec![0u8; CHUNK];
    while sent < LIMIT {
        for (k, b) in chunk.iter_mut().enumerate() {
            *b = pattern_byte(sent + k);
        }
        match w.write(&chunk) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                blocked = true;
                break;
            }
            Err(e) => panic!("write after {sent} bytes: {e}"),
        }
    }
    let mid = f.dp().counters().unwrap();
    let fast = mid.get(Counter::FastPathBytes) - before.get(Counter::FastPathBytes);
    eprintln!(
        "writer stopped after {} KiB ({} KiB over the fast path, demoted {}x)",
        sent >> 10,
        fast >> 10,
        mid.get(Counter::FastPathDemoted) - before.get(Counter::FastPathDemoted)
    );
    assert!(
        blocked,
        "the writer never blocked: {sent} bytes queued on a socket nobody reads"
    );
    assert!(
        sent < 32 << 20,
        "{} MiB queued before the writer blocked (budget {} MiB + TCP buffers)",
        sent >> 20,
        FAST_PATH_TURN_BUDGET >> 20
    );
    assert_eq!(
        mid.get(Counter::FastPathDemoted) - before.get(Counter::FastPathDemoted),
        1,
        "the socket was not demoted exactly once"
    );
    assert!(
        fast > 0 && fast <= (FAST_PATH_TURN_BUDGET as u64),
        "{fast} bytes took the fast path (budget {FAST_PATH_TURN_BUDGET})"
    );

    // Now read it all while the writer finishes (blocking): every byte, in order.
    let total = sent + (8 << 20);
    w.set_nonblocking(false).unwrap();
    let writer = std::thread::spawn(move || {
        let mut chunk = vec![0u8; CHUNK];
        while sent < total {
            let n = CHUNK.min(total - sent);
            for (k, b) in chunk[..n].iter_mut().enumerate() {
                *b = pattern_byte(sent + k);
            }
            w.write_all(&chunk[..n]).unwrap();
            sent += n;
        }
        w.shutdown(Shutdown::Write).unwrap();
    });
    let mut got = 0usize;
    let mut buf = vec![0u8; 64 << 10];
    let t = Instant::now();
    loop {
        assert!(t.elapsed() < Duration::from_secs(30), "reader stalled");
        let n = read_retry(&mut proxy, &mut buf);
        if n == 0 {
            break;
        }
        if let Some(k) = (0..n).find(|&k| buf[k] != pattern_byte(got + k)) {
            panic!("byte {} out of order", got + k);
        }
        got += n;
    }
    writer.join().unwrap();
    assert_eq!(got, total, "bytes lost");
    drop((l, app, proxy));
    f.wait_entries(pod.cookie(), 1);
}

#[test]
fn request_response_keeps_the_fast_path_past_the_budget() {
    // 200 requests of 64 KiB = 12.5 MiB from the app, far past one turn's budget: each answer
    // starts the app's turn over, so nothing is demoted.
    const REQ: usize = 64 << 10;
    const ROUNDS: usize = 200;
    let mut f = Fixture::new("kfr");
    let pod = f.enroll_pod(Fixture::node_policy());
    let (l, mut app, mut proxy) = pod.captured_pair();
    assert!((REQ * ROUNDS) as u64 > 2 * FAST_PATH_TURN_BUDGET as u64);
    let before = f.dp().counters().unwrap();
    let server = std::thread::spawn(move || {
        let mut buf = vec![0u8; REQ];
        for _ in 0..ROUNDS {
            let mut off = 0;
            while off < REQ {
                let n = read_retry(&mut proxy, &mut buf[off..]);
                assert!(n > 0, "EOF mid-request");
                off += n;
            }
            proxy.write_all(b"ok").unwrap();
        }
        proxy
    });
    let req = vec![7u8; REQ];
    let mut ok = [0u8; 2];
    for _ in 0..ROUNDS {
        app.write_all(&req).unwrap();
        let mut off = 0;
        while off < 2 {
            off += read_retry(&mut app, &mut ok[off..]);
        }
        assert_eq!(&ok, b"ok");
    }
    let proxy = server.join().unwrap();
    let after = f.dp().counters().unwrap();
    let fast = after.get(Counter::FastPathBytes) - before.get(Counter::FastPathBytes);
    eprintln!("{} KiB over the fast path", fast >> 10);
    assert_eq!(
        after.get(Counter::FastPathDemoted),
        before.get(Counter::FastPathDemoted)
    );
    assert_eq!(
        after.get(Counter::FastPathMiss),
        before.get(Counter::FastPathMiss)
    );
    assert_eq!(fast, (ROUNDS * (REQ + 2)) as u64);
    drop((l, app, proxy));
    f.wait_entries(pod.cookie(), 1);
}
