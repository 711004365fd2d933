//! A listener's `access_log` (Envoy's listener access log): one line per downstream connection
//! when it closes, with the connection's bytes each way, the HTTP protocol it spoke, and what a
//! tcp_proxy learned of its upstream; and one line, flag `NR`, for a connection no filter chain
//! takes. It is the connection's [`ConnObserver`], so the bytes are counted by [`Metered`]
//! (plain additions on the connection's task) and nothing is kept per request.
//!
//! [`Metered`]: super::observer::Metered

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU8, Ordering},
        Arc, Mutex,
    },
    time::{Instant, SystemTime},
};

use super::observer::ConnObserver;
use crate::http::access_log::{AccessLogger, Entry, ResponseDetails};

/// What Envoy's connection-level details say of a connection no filter chain takes.
const NO_CHAIN: &str = "filter_chain_not_found";

/// One connection's listener access log.
#[derive(Debug)]
pub struct ConnLog {
    logger: Arc<AccessLogger>,
    start: Instant,
    start_wall: SystemTime,
    peer: SocketAddr,
    /// The directly connected peer (the load balancer behind a PROXY header; else `peer`).
    direct: SocketAddr,
    local: SocketAddr,
    sni: Option<Arc<str>>,
    /// The HTTP version of its last request: 0 none, else [`version_code`].
    protocol: AtomicU8,
    /// A tcp_proxy's entry of the connection (what it learned of the upstream) and the
    /// tcp_proxy's own access log, written after the listener's line.
    tcp: Mutex<Option<(Entry, Option<Arc<AccessLogger>>)>>,
}

impl ConnLog {
    /// The log of a connection from `peer` (directly connected: `direct`) to `local` (its
    /// original destination) that started at `started`.
    pub fn new(
        logger: Arc<AccessLogger>,
        (peer, direct): (SocketAddr, SocketAddr),
        local: SocketAddr,
        sni: Option<Arc<str>>,
        started: (Instant, SystemTime),
    ) -> Self {
        Self {
            logger,
            start: started.0,
            start_wall: started.1,
            peer,
            direct,
            local,
            sni,
            protocol: AtomicU8::new(0),
            tcp: Mutex::new(None),
        }
    }

    /// Logs a connection no filter chain takes (closed at once): flag `NR`.
    pub fn no_chain(self) {
        let mut e = self.entry_with(None, 0, 0);
        e.flags = "NR";
        e.details = Some(ResponseDetails::Named(NO_CHAIN));
        self.logger.log(&e);
    }

    /// Records the HTTP version of a request on the connection.
    pub fn saw_request(&self, v: http::Version) {
        self.protocol.store(version_code(v), Ordering::Relaxed);
    }

    /// Takes a tcp_proxy's entry of the connection: the listener's line carries what it says
    /// of the upstream (Envoy's connection and tcp_proxy share their stream info), and `own`,
    /// the tcp_proxy's access log, gets it after the listener's line, in Envoy's order.
    pub fn adopt(&self, tcp: Entry, own: Option<Arc<AccessLogger>>) {
        *self.tcp.lock().unwrap_or_else(|p| p.into_inner()) = Some((tcp, own));
    }

    /// The listener's entry, with what `tcp` (a tcp_proxy's entry) says of the upstream.
    fn entry_with(&self, tcp: Option<&Entry>, rx: u64, tx: u64) -> Entry {
        let none = || Entry {
            flags: "-",
            ..Entry::default()
        };
        let mut e = tcp.map_or_else(none, |t| Entry {
            flags: t.flags,
            cluster: t.cluster.clone(),
            cluster_alt_name: t.cluster_alt_name.clone(),
            upstream_host: t.upstream_host,
            upstream_local: t.upstream_local,
            details: t.details.clone(),
            ..Entry::default()
        });
        e.start = Some(self.start_wall);
        e.duration = self.start.elapsed();
        e.bytes_rx = rx;
        e.bytes_tx = tx;
        e.protocol = protocol_str(self.protocol.load(Ordering::Relaxed));
        e.downstream_remote = Some(self.peer);
        e.downstream_direct = Some(self.direct);
        e.downstream_local = Some(self.local);
        e.sni = self.sni.as_deref().map(str::to_string);
        e
    }
}

impl ConnObserver for ConnLog {
    fn closed(&self, from_downstream: u64, to_downstream: u64) {
        let tcp = self.tcp.lock().unwrap_or_else(|p| p.into_inner()).take();
        let e = self.entry_with(tcp.as_ref().map(|t| &t.0), from_downstream, to_downstream);
        self.logger.log(&e);
        if let Some((t, Some(own))) = tcp {
            own.log(&t);
        }
    }

    fn upstream_failed(&self) {}
}

/// Two observers of one connection (the capture side's counters and the listener's log).
pub struct Both(pub Arc<dyn ConnObserver>, pub Arc<dyn ConnObserver>);

impl ConnObserver for Both {
    fn closed(&self, from_downstream: u64, to_downstream: u64) {
        self.0.closed(from_downstream, to_downstream);
        self.1.closed(from_downstream, to_downstream);
    }

    fn upstream_failed(&self) {
        self.0.upstream_failed();
        self.1.upstream_failed();
    }
}

fn version_code(v: http::Version) -> u8 {
    match v {
        http::Version::HTTP_10 => 1,
        http::Version::HTTP_2 => 3,
        _ => 2,
    }
}

/// `%PROTOCOL%` of the connection: its last request's, or none (`-`).
fn protocol_str(code: u8) -> &'static str {
    match code {
        1 => "HTTP/1.0",
        2 => "HTTP/1.1",
        3 => "HTTP/2",
        _ => "",
    }
}
