//! A case's access log file (`{{access_log}}` in its config: an HCM `FileAccessLog` path): the
//! lines a proxy appended during each request, observed as `log` with what varies run to run
//! masked (see [`normalize`]).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use super::{client, is_uuid, Kind};

/// How long to wait for a request's line.
const WAIT: Duration = Duration::from_secs(3);

/// How often the file is looked at while waiting.
const POLL: Duration = Duration::from_millis(20);

/// How long the lines of the connections made before the first request get to arrive.
const SETTLE: Duration = Duration::from_millis(200);

/// The part of the log file already observed.
pub struct LogTail {
    path: PathBuf,
    read: usize,
}

impl LogTail {
    /// Starts a run's log afresh: removes what an earlier run left at `path`.
    pub fn new(path: &Path) -> LogTail {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("removing {}: {e}", path.display()),
        }
        LogTail {
            path: path.to_path_buf(),
            read: 0,
        }
    }

    /// The complete lines appended since the last call, waiting up to [`WAIT`] for at least one
    /// (`none` if none came), and then until the file stops growing (several loggers of one
    /// request, or of one connection, each write their line). `flush` makes the proxy write
    /// out what it logged (a tcp_proxy logs when the connection has closed, a moment after the
    /// response); it is called before every look, a [`POLL`] ahead of it, because Envoy writes
    /// on its own flush thread: a flush can catch the first of two loggers' lines and leave the
    /// second in the buffer, so the file counts as settled only when a flush added nothing.
    pub fn take(&mut self, flush: impl Fn()) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        let mut seen = 0;
        loop {
            flush();
            std::thread::sleep(POLL);
            let text = std::fs::read(&self.path).unwrap_or_default();
            let new = text.get(self.read..).unwrap_or_default();
            match new.iter().rposition(|&b| b == b'\n') {
                Some(end) if end + 1 == seen => {
                    self.read += end + 1;
                    return String::from_utf8_lossy(&new[..end])
                        .lines()
                        .map(str::to_string)
                        .collect();
                }
                Some(end) => seen = end + 1,
                None if Instant::now() > deadline => return Vec::new(),
                None => {}
            }
        }
    }

    /// Skips what `kind` logs before the first request (the readiness probe's connection): the
    /// lines there are after [`SETTLE`], a flush, and [`SETTLE`] again.
    pub fn skip_settled(&mut self, kind: Kind, admin: SocketAddr) {
        std::thread::sleep(SETTLE);
        flush(kind, admin);
        std::thread::sleep(SETTLE);
        self.read = std::fs::read(&self.path).map_or(0, |t| t.len());
    }
}

/// Makes `kind` write out what it has logged: Envoy buffers file logs and writes them on a timer,
/// but flushes at once on its admin's `POST /reopen_logs`; sluice writes every line as it is
/// logged.
pub fn flush(kind: Kind, admin: SocketAddr) {
    if kind != Kind::Envoy {
        return;
    }
    let req = client::Request {
        method: "POST",
        path: "/reopen_logs",
        host: Some("127.0.0.1"),
        headers: &[],
        body: None,
        http10: false,
        preamble: None,
    };
    if let Err(e) = client::send(admin, &req, WAIT) {
        panic!("POST /reopen_logs to {admin}: {e}");
    }
}

/// One line with what varies run to run masked. A UUID (a generated `x-request-id`) between
/// quotes -> `<uuid>`; an upstream server's `127.0.0.1:PORT` -> `127.0.0.1:{{upstream.NAME}}`
/// (`upstreams`: name and port) and any other loopback port (a proxy's listener, an ephemeral
/// port) -> `127.0.0.1:<port>`. Envoy's default format (`mask` empty): `[%START_TIME%]` ->
/// `[<time>]`, `%DURATION%` and `%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%` -> `<ms>` (when a
/// number). A custom format (`mask` or `ms` given): the space-separated tokens at `mask`'s
/// indexes -> `<x>`, those at `ms`'s -> `<ms>` when a number (so `-` is still compared).
pub fn normalize(line: &str, upstreams: &[(&str, u16)], mask: &[usize], ms: &[usize]) -> String {
    let line = if mask.is_empty() && ms.is_empty() {
        default_format_masked(line)
    } else {
        line.split(' ')
            .enumerate()
            .map(|(i, t)| {
                if mask.contains(&i) {
                    "<x>"
                } else if ms.contains(&i) && t.parse::<u64>().is_ok() {
                    "<ms>"
                } else {
                    t
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let line = line
        .split('"')
        .map(|part| if is_uuid(part) { "<uuid>" } else { part })
        .collect::<Vec<_>>()
        .join("\"");
    mask_loopback_ports(&line, upstreams)
}

/// Envoy's default format: the time and the two durations masked.
fn default_format_masked(line: &str) -> String {
    let mut line = line.to_string();
    if line.starts_with('[') {
        if let Some(end) = line.find("] ") {
            line.replace_range(..end + 1, "[<time>]");
        }
    }
    // The tokens after the quoted request line: status, flags, bytes in, bytes out, duration,
    // upstream service time.
    if let Some(q) = line
        .find('"')
        .and_then(|a| line[a + 1..].find('"').map(|b| a + b + 2))
    {
        let rest: Vec<String> = line[q..]
            .splitn(8, ' ')
            .enumerate()
            .map(|(i, t)| match i {
                5 | 6 if t.parse::<u64>().is_ok() => "<ms>".to_string(),
                _ => t.to_string(),
            })
            .collect();
        line = format!("{}{}", &line[..q], rest.join(" "));
    }
    line
}

/// `127.0.0.1:PORT` -> `127.0.0.1:{{upstream.NAME}}` for an upstream's port, else
/// `127.0.0.1:<port>`.
fn mask_loopback_ports(line: &str, upstreams: &[(&str, u16)]) -> String {
    const LOOPBACK: &str = "127.0.0.1:";
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(i) = rest.find(LOOPBACK) {
        out.push_str(&rest[..i + LOOPBACK.len()]);
        rest = &rest[i + LOOPBACK.len()..];
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        match rest[..digits].parse::<u16>() {
            Ok(port) => match upstreams.iter().find(|(_, p)| *p == port) {
                Some((name, _)) => out.push_str(&format!("{{{{upstream.{name}}}}}")),
                None => out.push_str("<port>"),
            },
            Err(_) => out.push_str(&rest[..digits]),
        }
        rest = &rest[digits..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_masks_time_durations_ids_and_ports() {
        let line = "[2026-12-05T01:40:00.123Z] \"GET /x HTTP/1.1\" 200 - 0 1 13 2 \"-\" \
                    \"curl/8\" \"0b7c9a52-3f3e-4d2a-9c1e-6a1b2c3d4e5f\" \"example.com\" \
                    \"127.0.0.1:40001\"";
        assert_eq!(
            normalize(line, &[("a", 40001)], &[], &[]),
            "[<time>] \"GET /x HTTP/1.1\" 200 - 0 1 <ms> <ms> \"-\" \"curl/8\" \"<uuid>\" \
             \"example.com\" \"127.0.0.1:{{upstream.a}}\""
        );
        let local = "[t] \"GET /n HTTP/1.1\" 404 NR 0 0 0 - \"-\" \"-\" \"id\" \"h\" \"-\"";
        assert_eq!(
            normalize(local, &[], &[], &[]),
            "[<time>] \"GET /n HTTP/1.1\" 404 NR 0 0 <ms> - \"-\" \"-\" \"id\" \"h\" \"-\""
        );
        let custom = "t1 200 7 127.0.0.1:40001 127.0.0.1:51234 127.0.0.1";
        assert_eq!(
            normalize(custom, &[("a", 40001)], &[0, 2], &[]),
            "<x> 200 <x> 127.0.0.1:{{upstream.a}} 127.0.0.1:<port> 127.0.0.1"
        );
    }
}
