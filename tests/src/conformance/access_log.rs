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
    /// (`none` if none came).
    pub fn take(&mut self) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        loop {
            let text = std::fs::read(&self.path).unwrap_or_default();
            let new = text.get(self.read..).unwrap_or_default();
            if let Some(end) = new.iter().rposition(|&b| b == b'\n') {
                self.read += end + 1;
                return String::from_utf8_lossy(&new[..end])
                    .lines()
                    .map(str::to_string)
                    .collect();
            }
            if Instant::now() > deadline {
                return Vec::new();
            }
            std::thread::sleep(POLL);
        }
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
    };
    if let Err(e) = client::send(admin, &req, WAIT) {
        panic!("POST /reopen_logs to {admin}: {e}");
    }
}

/// One line of Envoy's default format with its varying parts masked: `[%START_TIME%]` ->
/// `[<time>]`, `%DURATION%` and `%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%` -> `<ms>` (when a
/// number), a UUID (a generated `x-request-id`) -> `<uuid>`, and an upstream server's
/// `127.0.0.1:PORT` -> `127.0.0.1:{{upstream.NAME}}` (`upstreams`: name and port).
pub fn normalize(line: &str, upstreams: &[(&str, u16)]) -> String {
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
    let line = line
        .split('"')
        .map(|part| if is_uuid(part) { "<uuid>" } else { part })
        .collect::<Vec<_>>()
        .join("\"");
    upstreams.iter().fold(line, |l, (name, port)| {
        l.replace(
            &format!("127.0.0.1:{port}\""),
            &format!("127.0.0.1:{{{{upstream.{name}}}}}\""),
        )
    })
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
            normalize(line, &[("a", 40001)]),
            "[<time>] \"GET /x HTTP/1.1\" 200 - 0 1 <ms> <ms> \"-\" \"curl/8\" \"<uuid>\" \
             \"example.com\" \"127.0.0.1:{{upstream.a}}\""
        );
        let local = "[t] \"GET /n HTTP/1.1\" 404 NR 0 0 0 - \"-\" \"-\" \"id\" \"h\" \"-\"";
        assert_eq!(
            normalize(local, &[]),
            "[<time>] \"GET /n HTTP/1.1\" 404 NR 0 0 <ms> - \"-\" \"-\" \"id\" \"h\" \"-\""
        );
    }
}
