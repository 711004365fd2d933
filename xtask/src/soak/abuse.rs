//! The abusive clients of issue 13, small and in-process, one round of each kind at a time:
//! connections that never send a byte (to the server-first greeter: a captured connection silent
//! through protocol detection must reach the app as opaque TCP, so the greeting arrives just
//! after the 100 ms detection timeout, as with Envoy's `listener_filters_timeout` and
//! `continue_on_listener_filters_timeout`), slowloris (a header byte every 2 s), a malformed chunked
//! body, `Connection:` nominating the headers the proxy adds, an `Upgrade: h2c` request, an
//! HTTP/2 rapid reset (HEADERS + RST_STREAM pairs) and an HTTP/2 PING flood. Their outcomes are
//! counted, never as errors: a proxy that cuts one off handled it. Every connection is held at
//! most [`HOLD`] and closed by us after that, so a round never outlives its bound.

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::AsyncReadExt as _,
    net::TcpStream,
    time::{sleep, timeout, Instant},
};

use super::{
    config::{GREETER_PORT, SVC_HOST},
    serve::GREETING,
    tally::Shared,
    wire,
};

/// How long an idle or slowloris connection is held before we close it ourselves.
pub const HOLD: Duration = Duration::from_secs(12);
/// Connections per round that never send a byte, and slowloris ones.
const IDLE_CONNS: usize = 4;
const SLOW_CONNS: usize = 2;
/// HEADERS + RST_STREAM pairs of one rapid reset; PINGs of one flood.
const RESETS: u32 = 1000;
const PINGS: u32 = 5000;
/// Wait for a request's answer or for the proxy's reaction to a flood.
const ANSWER: Duration = Duration::from_secs(5);

/// The outcome a silent connection must have.
pub const SILENT_OK: &str =
    "greeted by the app after the detection timeout (passed as TCP), held open until we closed it";

/// A connection to the server-first greeter that never sends a byte, held for [`HOLD`]. The
/// outcome says whether the app's greeting came through (after the proxy's 100 ms detection
/// timeout, as opaque TCP) and who closed the connection.
async fn silent(addr: SocketAddr) -> &'static str {
    let Ok(Ok(mut s)) = timeout(ANSWER, TcpStream::connect(addr)).await else {
        return "connect failed";
    };
    let end = Instant::now() + HOLD;
    let mut got = Vec::new();
    let mut b = [0u8; 512];
    while got.len() < GREETING.len() {
        match timeout(end - Instant::now(), s.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return "closed before the app's greeting (proxy held it)",
            Ok(Ok(n)) => got.extend_from_slice(&b[..n]),
            Err(_) => return "no greeting from the app: held by the proxy until we closed it",
        }
    }
    if got != GREETING {
        return "wrong greeting";
    }
    match timeout(end - Instant::now(), s.read(&mut b)).await {
        Ok(Ok(0)) | Ok(Err(_)) => "greeted by the app, then closed by the proxy",
        Ok(Ok(_)) => "greeted by the app, then unexpected bytes",
        Err(_) => SILENT_OK,
    }
}

/// Holds a slowloris connection for [`HOLD`]: one byte of a never-ending header every 2 s.
/// The outcome says whether the proxy closed it first.
async fn hold(addr: SocketAddr) -> &'static str {
    let Ok(Ok(mut s)) = timeout(ANSWER, TcpStream::connect(addr)).await else {
        return "connect failed";
    };
    let end = Instant::now() + HOLD;
    let head = format!("GET /api/64 HTTP/1.1\r\nHost: {SVC_HOST}\r\nx-slow: ");
    if wire::send(&mut s, head.as_bytes(), ANSWER).await.is_err() {
        return "closed by proxy";
    }
    let mut b = [0u8; 512];
    while Instant::now() < end {
        match timeout(Duration::from_secs(2), s.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return "closed by proxy",
            // The proxy answered (a 408 or 400) and will close.
            Ok(Ok(_)) => return "answered by proxy",
            Err(_) => {}
        }
        if wire::send(&mut s, b"a", ANSWER).await.is_err() {
            return "closed by proxy";
        }
    }
    "held open until we closed it"
}

/// Sends `req` and classifies the answer by status (or close / timeout).
async fn request(addr: SocketAddr, req: &str) -> String {
    let r = async {
        let mut s = TcpStream::connect(addr).await?;
        wire::send(&mut s, req.as_bytes(), ANSWER).await?;
        let (head, _) = wire::read_head(&mut s).await?;
        anyhow::Ok(head)
    };
    match timeout(ANSWER, r).await {
        Ok(Ok(head)) => match wire::status(&head) {
            Some(code) => format!("status {code}"),
            None => "unparsable answer".into(),
        },
        Ok(Err(_)) => "closed by proxy".into(),
        Err(_) => "no answer in 5 s".into(),
    }
}

/// An HTTP/2 connection (prior knowledge) that floods: rapid reset or PINGs.
async fn h2_flood(addr: SocketAddr, reset: bool) -> &'static str {
    let Ok(Ok(mut s)) = timeout(ANSWER, TcpStream::connect(addr)).await else {
        return "connect failed";
    };
    let mut out = wire::H2_PREFACE.to_vec();
    out.extend(wire::h2_frame(wire::H2_SETTINGS, 0, 0, &[]));
    if reset {
        let block = wire::h2_get_block(SVC_HOST);
        for i in 0..RESETS {
            let id = 1 + 2 * i;
            out.extend(wire::h2_frame(
                wire::H2_HEADERS,
                wire::H2_END_STREAM_HEADERS,
                id,
                &block,
            ));
            out.extend(wire::h2_frame(
                wire::H2_RST_STREAM,
                0,
                id,
                &8u32.to_be_bytes(),
            ));
        }
    } else {
        for i in 0..PINGS {
            out.extend(wire::h2_frame(
                wire::H2_PING,
                0,
                0,
                &u64::from(i).to_be_bytes(),
            ));
        }
    }
    // A proxy that stops reading (or resets) mid-flood handled it too.
    if wire::send(&mut s, &out, ANSWER).await.is_err() {
        return "cut off while sending";
    }
    wire::h2_outcome(&mut s, Duration::from_secs(2)).await
}

/// One round: every kind at once; returns when all are done (at most [`HOLD`] + a little).
async fn round(addr: SocketAddr, t: &Shared) {
    let host = SVC_HOST;
    let chunked = format!(
        "POST /api/64 HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n\
         zz\r\nhello\r\n0\r\n\r\n"
    );
    let nominating = format!(
        "GET /api/64 HTTP/1.1\r\nHost: {host}\r\n\
         Connection: x-forwarded-for, x-request-id, x-soak-version, x-forwarded-proto\r\n\r\n"
    );
    let h2c = format!(
        "GET /api/64 HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade, HTTP2-Settings\r\n\
         Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n"
    );
    let greeter = SocketAddr::new(addr.ip(), GREETER_PORT);
    let idle = futures_join(
        (0..IDLE_CONNS)
            .map(|_| tokio::spawn(silent(greeter)))
            .chain((0..SLOW_CONNS).map(|_| tokio::spawn(hold(addr)))),
    );
    let (held, chunked, nominating, h2c, reset, ping) = tokio::join!(
        idle,
        request(addr, &chunked),
        request(addr, &nominating),
        request(addr, &h2c),
        h2_flood(addr, true),
        h2_flood(addr, false),
    );
    for (i, o) in held.into_iter().enumerate() {
        let kind = if i < IDLE_CONNS {
            "never_sends"
        } else {
            "slowloris"
        };
        t.abuse(kind, o);
    }
    t.abuse("bad_chunked_body", &chunked);
    t.abuse("connection_nominates", &nominating);
    t.abuse("upgrade_h2c", &h2c);
    t.abuse("h2_rapid_reset", reset);
    t.abuse("h2_ping_flood", ping);
}

/// Collects the outputs of the spawned tasks in order.
async fn futures_join(
    handles: impl Iterator<Item = tokio::task::JoinHandle<&'static str>>,
) -> Vec<&'static str> {
    let handles: Vec<_> = handles.collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap_or("client task failed"));
    }
    out
}

/// A round every `every` until `end` (none started that could outlive it).
pub async fn rounds(addr: SocketAddr, end: Instant, every: Duration, t: Shared) {
    // Let the well-behaved clients start first.
    sleep(Duration::from_secs(3)).await;
    while Instant::now() + HOLD + ANSWER < end {
        let next = Instant::now() + every;
        round(addr, &t).await;
        tokio::time::sleep_until(next).await;
    }
}
