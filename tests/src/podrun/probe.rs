//! httpGet probes as the kubelet runs them for a host-network pod: GET on the node (loopback
//! here) at the probe's port and path; 200-399 is success.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use super::manifest::Probe;

/// One probe: Some(status) when the server answered, None when it did not.
pub fn get(probe: &Probe) -> Option<u16> {
    let addr = SocketAddr::from(([127, 0, 0, 1], probe.port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUser-Agent: kube-probe/1.31\r\nConnection: close\r\n\r\n",
        probe.path, probe.port
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut head = [0u8; 64];
    let n = s.read(&mut head).ok()?;
    let line = String::from_utf8_lossy(&head[..n]);
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Whether one probe succeeded.
pub fn passes(probe: &Probe) -> bool {
    matches!(get(probe), Some(200..=399))
}

/// Probes every `period` (after `initialDelaySeconds`) until one succeeds (ready) or `limit`
/// passes; returns how long readiness took, or the last status seen.
pub fn wait_ready(probe: &Probe, limit: Duration) -> Result<Duration, Option<u16>> {
    let start = Instant::now();
    std::thread::sleep(probe.initial_delay);
    let mut last = None;
    while start.elapsed() < limit {
        last = get(probe);
        if matches!(last, Some(200..=399)) {
            return Ok(start.elapsed());
        }
        // Polled faster than the period so readiness is seen promptly; a failure counts only
        // once per period, as the kubelet counts it.
        std::thread::sleep(probe.period.min(Duration::from_millis(250)));
    }
    Err(last)
}
