//! Access log in Envoy's default format, written by a background task (stdout or a file).

use std::{
    fmt::Write as _,
    io::Write as _,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::mpsc;

use super::Body;
use crate::config;

/// Lines buffered before the logger drops (and counts) new ones.
const QUEUE: usize = 8192;

/// Fields of one access log line.
#[derive(Debug, Default)]
pub struct Entry {
    /// When the request started.
    pub start: Option<SystemTime>,
    /// `:method`.
    pub method: String,
    /// Original path (before rewrites).
    pub path: String,
    /// `HTTP/1.1`, `HTTP/2`.
    pub protocol: &'static str,
    /// Response status sent downstream (0: none).
    pub status: u16,
    /// Envoy response flags (`-` when none).
    pub flags: &'static str,
    /// Request body bytes received (when known).
    pub bytes_rx: u64,
    /// Response body bytes sent.
    pub bytes_tx: u64,
    /// Time from the start of the request to the end of the response.
    pub duration: Duration,
    /// Upstream service time in ms, when an upstream answered.
    pub upstream_ms: Option<u64>,
    /// `x-forwarded-for`.
    pub xff: Option<String>,
    /// `user-agent`.
    pub user_agent: Option<String>,
    /// `x-request-id`.
    pub request_id: Option<String>,
    /// `:authority`.
    pub authority: Option<String>,
    /// Upstream host address.
    pub upstream_host: Option<String>,
    /// The request headers as received, kept only when a `header_filter` reads them.
    pub request_headers: Option<http::HeaderMap>,
}

/// Formats `t` like Envoy's `%START_TIME%`: `2024-01-31T12:34:56.789Z`.
pub fn format_time(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

fn opt(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("-")
}

impl Entry {
    /// Renders [`config::ENVOY_DEFAULT_ACCESS_LOG_FORMAT`].
    pub fn render(&self) -> String {
        let mut s = String::with_capacity(256);
        let status = if self.status == 0 {
            "0".to_string()
        } else {
            self.status.to_string()
        };
        let _ = writeln!(
            s,
            "[{}] \"{} {} {}\" {} {} {} {} {} {} \"{}\" \"{}\" \"{}\" \"{}\" \"{}\"",
            format_time(self.start.unwrap_or_else(SystemTime::now)),
            self.method,
            self.path,
            self.protocol,
            status,
            self.flags,
            self.bytes_rx,
            self.bytes_tx,
            self.duration.as_millis(),
            self.upstream_ms
                .map(|m| m.to_string())
                .unwrap_or_else(|| "-".into()),
            opt(&self.xff),
            opt(&self.user_agent),
            opt(&self.request_id),
            opt(&self.authority),
            opt(&self.upstream_host),
        );
        s
    }
}

/// Where one HCM's access log lines go: each sink with its filter.
#[derive(Debug, Clone, Default)]
pub struct AccessLogger {
    sinks: Vec<(mpsc::Sender<String>, Option<config::AccessLogFilter>)>,
    /// A filter reads request headers: entries keep them ([`Entry::request_headers`]).
    keeps_headers: bool,
}

impl AccessLogger {
    /// Starts one writer task per configured sink.
    pub fn start(logs: &[config::AccessLog]) -> Self {
        let sinks = logs
            .iter()
            .map(|l| {
                let (tx, mut rx) = mpsc::channel::<String>(QUEUE);
                let target = l.sink.clone();
                tokio::task::spawn_blocking(move || {
                    let mut out: Box<dyn std::io::Write> = match &target {
                        config::LogSink::Stdout => Box::new(std::io::stdout()),
                        config::LogSink::File { path } => match std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(path)
                        {
                            Ok(f) => Box::new(f),
                            Err(e) => {
                                tracing::error!(path = %path.display(), error = %e, "cannot open access log");
                                return;
                            }
                        },
                    };
                    while let Some(line) = rx.blocking_recv() {
                        let _ = out.write_all(line.as_bytes());
                        if rx.is_empty() {
                            let _ = out.flush();
                        }
                    }
                });
                (tx, l.filter.clone())
            })
            .collect();
        let keeps_headers = logs.iter().any(|l| {
            l.filter
                .as_ref()
                .is_some_and(config::AccessLogFilter::reads_headers)
        });
        Self {
            sinks,
            keeps_headers,
        }
    }

    /// The request headers an entry keeps: a copy only when a filter reads them.
    pub fn headers_to_keep(&self, h: &http::HeaderMap) -> Option<http::HeaderMap> {
        self.keeps_headers.then(|| h.clone())
    }

    /// Whether any sink is configured (skip building entries otherwise).
    pub fn enabled(&self) -> bool {
        !self.sinks.is_empty()
    }

    /// Queues one line to every sink whose filter admits it (dropped if a sink is backed up).
    pub fn log(&self, e: &Entry) {
        let logged = config::Logged {
            status: e.status,
            duration_ms: e.duration.as_millis() as u64,
            flags: e.flags,
            method: &e.method,
            path: &e.path,
            authority: e.authority.as_deref(),
            headers: e.request_headers.as_ref(),
        };
        let mut line: Option<String> = None;
        for (s, filter) in &self.sinks {
            if filter.as_ref().is_some_and(|f| !f.admits(&logged)) {
                continue;
            }
            let line = line.get_or_insert_with(|| e.render());
            let _ = s.try_send(line.clone());
        }
    }
}

/// A response body that counts the bytes sent and writes the access log line when the stream
/// ends (or is dropped, e.g. the client went away).
pub struct LoggedBody {
    inner: Body,
    pending: Option<(Box<Entry>, AccessLogger, Instant)>,
}

impl LoggedBody {
    /// Wraps `inner`; `entry` is completed with duration and bytes sent at the end.
    pub fn wrap(inner: Body, entry: Entry, logger: AccessLogger, start: Instant) -> Body {
        Self {
            inner,
            pending: Some((Box::new(entry), logger, start)),
        }
        .boxed()
    }

    fn finish(&mut self) {
        if let Some((mut e, logger, start)) = self.pending.take() {
            e.duration = start.elapsed();
            logger.log(&e);
        }
    }
}

impl HttpBody for LoggedBody {
    type Data = Bytes;
    type Error = super::BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, super::BodyError>>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let (Some(d), Some((e, _, _))) = (f.data_ref(), this.pending.as_mut()) {
                    e.bytes_tx += d.len() as u64;
                }
                if this.inner.is_end_stream() {
                    this.finish();
                }
            }
            Poll::Ready(Some(Err(err))) => {
                // Envoy's per-try idle timeout after the response head resets the stream as an
                // upstream request timeout (UT).
                if let Some((e, _, _)) = this.pending.as_mut() {
                    if err.is::<super::idle::PerTryIdleTimeout>() && e.flags == "-" {
                        e.flags = "UT";
                    }
                }
                this.finish();
            }
            Poll::Ready(None) => this.finish(),
            Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_format() {
        let t = UNIX_EPOCH + Duration::from_millis(1_460_751_420_310);
        assert_eq!(format_time(t), "2016-04-15T20:17:00.310Z");
    }
}
