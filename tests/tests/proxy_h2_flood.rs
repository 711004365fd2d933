//! HTTP/2 control-frame floods on one downstream connection (issue 13, item 11): a raw-frame
//! client floods PING or SETTINGS frames (reading the ACKs or not), empty DATA, PRIORITY or
//! WINDOW_UPDATE frames, beside well-behaved HTTP/2 clients (hyper, timing each request, and
//! h2load). The flooder must be cut off and the others' latency must stay near its unflooded
//! value. Before the limits
//! (`proxy/engine/src/http/h2_flood.rs`) a PING/SETTINGS flood took the others' p50 from 1.3 ms
//! to ~30 ms and went on for as long as the client liked.
//!
//! The same floods run against Envoy 1.40 with the same bootstrap, and what it does is asserted
//! too: it closes a PING or SETTINGS flooder once more than 1000 ACKs are queued (nghttp2's
//! "Too many frames in the outbound queue"; no GOAWAY, the socket closes after the 1 s delayed
//! close, so the client sees a reset), an empty-frame flooder after the second empty frame
//! (`http2.inbound_empty_frames_flood`), and PRIORITY and WINDOW_UPDATE flooders past their
//! limits, each the same way.

use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream},
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use sluice_tests::{
    conformance::proxy::{self, Kind},
    upstream::harness::{http_bootstrap, static_cluster, TempDir},
};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let l = (payload.len() as u32).to_be_bytes();
    let mut f = vec![l[1], l[2], l[3], kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// What a flooding client sends.
#[derive(Debug, Clone, Copy)]
enum Flood {
    Ping,
    Settings,
    /// A request's HEADERS (no END_STREAM) then empty DATA frames.
    EmptyData,
    /// PRIORITY frames for an idle stream.
    Priority,
    /// Connection-level WINDOW_UPDATE frames (increment 1).
    WindowUpdate,
}

impl Flood {
    /// One write's worth of flood frames (and the frame count).
    fn batch(self) -> (Vec<u8>, u64) {
        let one = match self {
            Self::Ping => frame(0x6, 0, 0, &[7; 8]),
            Self::Settings => frame(0x4, 0, 0, &[]),
            Self::EmptyData => frame(0x0, 0, 1, &[]),
            Self::Priority => frame(0x2, 0, 3, &[0, 0, 0, 0, 15]),
            Self::WindowUpdate => frame(0x8, 0, 0, &[0, 0, 0, 1]),
        };
        (one.repeat(1000), 1000)
    }

    /// What goes before the flood.
    fn opening(self) -> Vec<u8> {
        let mut b = PREFACE.to_vec();
        b.extend(frame(0x4, 0, 0, &[]));
        if let Self::EmptyData = self {
            // :method GET, :scheme http, :path /, :authority flood.test; END_HEADERS only.
            let mut block = vec![0x82, 0x86, 0x84, 0x41, 10];
            block.extend_from_slice(b"flood.test");
            b.extend(frame(0x1, 0x4, 1, &block));
        }
        b
    }
}

/// How one flooding connection ended.
#[derive(Debug)]
struct Cut {
    frames_sent: u64,
    after: Duration,
}

/// Floods `addr` on one connection until the server ends it (`Some`) or `limit` passes (`None`).
fn flood_once(addr: SocketAddr, kind: Flood, read_acks: bool, limit: Duration) -> Option<Cut> {
    let mut s = TcpStream::connect(addr).expect("connect the flooder");
    s.set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    s.set_nonblocking(false).unwrap();
    let start = Instant::now();
    s.write_all(&kind.opening()).expect("write the preface");
    let (batch, per_batch) = kind.batch();
    let mut sent = 0;
    let mut sink = vec![0u8; 1 << 16];
    while start.elapsed() < limit {
        match s.write(&batch) {
            Ok(n) => sent += n as u64 * per_batch / batch.len() as u64,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => {
                return Some(Cut {
                    frames_sent: sent,
                    after: start.elapsed(),
                })
            }
        }
        if read_acks {
            s.set_nonblocking(true).unwrap();
            let r = s.read(&mut sink);
            s.set_nonblocking(false).unwrap();
            match r {
                Ok(0) => {
                    return Some(Cut {
                        frames_sent: sent,
                        after: start.elapsed(),
                    })
                }
                Err(e) if e.kind() != ErrorKind::WouldBlock => {
                    return Some(Cut {
                        frames_sent: sent,
                        after: start.elapsed(),
                    })
                }
                _ => {}
            }
        }
    }
    None
}

/// Floods `addr` over and over (a new connection each time one is cut) until `until`; panics
/// when a connection outlives `cut_within`. Returns the cuts.
fn flood_until(
    addr: SocketAddr,
    kind: Flood,
    read_acks: bool,
    cut_within: Duration,
    until: Instant,
) -> Vec<Cut> {
    let mut cuts = Vec::new();
    while Instant::now() < until {
        match flood_once(addr, kind, read_acks, cut_within) {
            Some(c) => cuts.push(c),
            None => panic!(
                "{kind:?} flood (reading ACKs: {read_acks}) on {addr} not cut off within {cut_within:?}"
            ),
        }
    }
    cuts
}

/// Sequential HTTP/2 requests on one hyper connection for `dur`; each request's latency.
async fn timed_requests(addr: SocketAddr, dur: Duration) -> Vec<Duration> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let mut out = Vec::new();
    let end = Instant::now() + dur;
    while Instant::now() < end {
        let req = http::Request::get(format!("http://{addr}/"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let t = Instant::now();
        let resp = send.send_request(req).await.expect("well-behaved request");
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap();
        out.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    out
}

fn pct(v: &mut [Duration], p: usize) -> Duration {
    v.sort();
    v[(v.len() * p / 100).min(v.len() - 1)]
}

fn bootstrap(port: u16, admin: u16) -> String {
    let ok = "              - match: { prefix: \"/\" }\n                direct_response: { status: 200, body: { inline_string: ok } }\n";
    http_bootstrap(admin, port, ok, &static_cluster("none", &[], ""), "")
}

/// What one proxy did under the floods.
struct Measured {
    base_p50: Duration,
    flood_p50: Duration,
    flood_p99: Duration,
    cuts: Vec<(Flood, bool, Cut)>,
    h2load: String,
}

fn measure(kind: Kind, dir: &Path, cut_within: Duration) -> Measured {
    let [port, admin] = proxy::free_ports::<2>();
    let config = dir.join(format!("{kind}.yaml"));
    std::fs::write(&config, bootstrap(port, admin)).unwrap();
    let _running = proxy::start(kind, &config, port, admin, dir).unwrap_or_else(|e| panic!("{e}"));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let mut base = rt.block_on(timed_requests(addr, Duration::from_millis(1500)));
    let flood_for = Duration::from_secs(3);
    let until = Instant::now() + flood_for;
    let floods = [(Flood::Ping, true), (Flood::Settings, false)];
    let flooders: Vec<_> = floods
        .iter()
        .map(|&(f, read)| {
            (
                f,
                read,
                thread::spawn(move || flood_until(addr, f, read, cut_within, until)),
            )
        })
        .collect();
    let url = format!("http://{addr}/");
    let h2load = thread::spawn(move || {
        Command::new("h2load")
            .args(["-n", "2000", "-c", "2", "-m", "1", &url])
            .output()
            .expect("run h2load")
    });
    let mut during = rt.block_on(timed_requests(addr, flood_for - Duration::from_millis(200)));
    let mut cuts = Vec::new();
    for (f, read, t) in flooders {
        cuts.extend(t.join().unwrap().into_iter().map(|c| (f, read, c)));
    }
    // Empty-frame, PRIORITY and WINDOW_UPDATE floods are cut at once.
    for f in [Flood::EmptyData, Flood::Priority, Flood::WindowUpdate] {
        let c = flood_once(addr, f, true, cut_within)
            .unwrap_or_else(|| panic!("{kind}: {f:?} flood not cut off within {cut_within:?}"));
        cuts.push((f, true, c));
    }
    let h2load = String::from_utf8_lossy(&h2load.join().unwrap().stdout).into_owned();
    Measured {
        base_p50: pct(&mut base, 50),
        flood_p50: pct(&mut during, 50),
        flood_p99: pct(&mut during, 99),
        cuts,
        h2load,
    }
}

/// Measures `kind` under the floods, prints what happened and checks what both proxies must do:
/// h2load beside the floods has no failure and every flooding connection is cut.
fn run(kind: Kind) -> Measured {
    let dir = TempDir::new("h2flood");
    // Both close 1 s after finding the flood (Envoy's delayed-close timeout).
    let m = measure(kind, &dir.0, Duration::from_secs(3));
    eprintln!(
        "{kind}: p50 {:?} unflooded, p50 {:?} / p99 {:?} flooded",
        m.base_p50, m.flood_p50, m.flood_p99
    );
    for flood in [
        Flood::Ping,
        Flood::Settings,
        Flood::EmptyData,
        Flood::Priority,
        Flood::WindowUpdate,
    ] {
        let c: Vec<&Cut> = m
            .cuts
            .iter()
            .filter(|(f, _, _)| std::mem::discriminant(f) == std::mem::discriminant(&flood))
            .map(|(_, _, c)| c)
            .collect();
        let max_after = c.iter().map(|c| c.after).max().unwrap_or_default();
        let max_frames = c.iter().map(|c| c.frames_sent).max().unwrap_or_default();
        eprintln!(
            "{kind}: {flood:?} flood: {} connections cut, each within {max_after:?} and {max_frames} frames written into its socket",
            c.len()
        );
    }
    assert!(
        m.h2load.contains("2000 succeeded, 0 failed"),
        "{kind}: h2load beside the floods:\n{}",
        m.h2load
    );
    assert!(
        m.cuts
            .iter()
            .all(|(_, _, c)| c.after < Duration::from_millis(1500)),
        "{kind}: every flooding connection is cut within 1.5 s (found at once, closed 1 s later)"
    );
    m
}

#[test]
fn h2_control_frame_floods_are_cut_off_and_do_not_slow_others() {
    let m = run(Kind::Sluice);
    let bound = (m.base_p50 * 3).max(m.base_p50 + Duration::from_millis(5));
    assert!(
        m.flood_p50 <= bound,
        "p50 under flood {:?} > {bound:?} (unflooded p50 {:?})",
        m.flood_p50,
        m.base_p50
    );
    // Held 1 s before the close, a flooder that reconnects at once gets about one
    // connection a second (3 s of flood: at most 4 each), as under Envoy.
    assert!(m.cuts.len() <= 11, "{} flooding connections", m.cuts.len());
}

/// The reference: Envoy 1.40 with the same bootstrap and the same floods (see the module doc).
#[test]
fn envoy_cuts_off_the_same_floods() {
    let m = run(Kind::Envoy);
    assert!(m.cuts.len() >= 5);
}
