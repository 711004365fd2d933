//! Access log in Envoy's default format or a logger's `log_format`, written by a background
//! task (stdout or a file).

pub mod details;
pub mod ops;

use std::{
    fmt::Write as _,
    io::Write as _,
    net::SocketAddr,
    sync::{Arc, Mutex},
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
use crate::{
    config,
    route::{
        body_format::BodyFormat,
        format::{FormatContext, RequestLine},
    },
};
pub use details::ResponseDetails;

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
    /// A health check filter took the request as a health check.
    pub health_check: bool,
    /// Envoy response flags (`-` when none).
    pub flags: &'static str,
    /// Request body bytes received.
    pub bytes_rx: u64,
    /// Counts the request body bytes as they are forwarded and times the body's end; read into
    /// `bytes_rx` and `request_duration` when the line is written.
    pub request_bytes: Option<Arc<super::request_body_tap::BodyTally>>,
    /// `%REQUEST_DURATION%`: from the start to the request's last byte; `None` when it never
    /// came whole (or went nowhere).
    pub request_duration: Option<Duration>,
    /// `%RESPONSE_DURATION%`: from the start to the upstream's response head; `None` for a
    /// reply made here.
    pub response_duration: Option<Duration>,
    /// `%UPSTREAM_REQUEST_ATTEMPT_COUNT%`: upstream attempts started (0: none).
    pub attempts: u32,
    /// The request is gRPC (`content-type: application/grpc[+...]`): `%GRPC_STATUS%` is
    /// written only then, as Envoy.
    pub grpc_request: bool,
    /// `grpc-status` of the response's trailers, else of its headers, when a number.
    pub grpc_status: Option<u32>,
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
    /// Upstream host address (of the last attempt).
    pub upstream_host: Option<SocketAddr>,
    /// The request headers as received, kept only when a `header_filter` or a `log_format`
    /// reads them.
    pub request_headers: Option<http::HeaderMap>,
    /// The response headers as sent, kept only when a `log_format` reads them.
    pub response_headers: Option<http::HeaderMap>,
    /// `:scheme`.
    pub scheme: &'static str,
    /// Envoy's downstream remote address: the peer, or the `x-forwarded-for` address (port 0)
    /// the connection manager trusts.
    pub downstream_remote: Option<SocketAddr>,
    /// The downstream connection's local address (the original destination when captured).
    pub downstream_local: Option<SocketAddr>,
    /// The directly connected downstream peer (the load balancer behind a PROXY header;
    /// else the peer).
    pub downstream_direct: Option<SocketAddr>,
    /// The local address of the upstream connection the response came on.
    pub upstream_local: Option<SocketAddr>,
    /// The route's `name`.
    pub route_name: Option<String>,
    /// The route's cluster (`%UPSTREAM_CLUSTER_RAW%`).
    pub cluster: Option<String>,
    /// The cluster's `alt_stat_name`, when it has one (`%UPSTREAM_CLUSTER%`, else `cluster`):
    /// shared with the cluster, as istiod sets one on every cluster (no copy per request).
    pub cluster_alt_name: Option<std::sync::Arc<str>>,
    /// The SNI of a TLS connection.
    pub sni: Option<String>,
    /// What made the response (`%RESPONSE_CODE_DETAILS%`, [`ResponseDetails::of_response`]).
    pub details: Option<ResponseDetails>,
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

/// `-` for a value a TCP connection's entry does not have (no request line, no protocol).
fn dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
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
            dash(&self.method),
            dash(&self.path),
            dash(self.protocol),
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
            self.upstream_host
                .map(|a| a.to_string())
                .unwrap_or_else(|| "-".into()),
        );
        s
    }

    /// Renders a logger's `log_format`.
    pub fn render_with(&self, f: &BodyFormat) -> String {
        let ctx = FormatContext {
            request: self.request_headers.as_ref(),
            // A TCP connection's entry has no request line.
            line: (!self.method.is_empty()).then_some(RequestLine {
                method: &self.method,
                path: &self.path,
                scheme: self.scheme,
                authority: self.authority.as_deref(),
            }),
            downstream_remote: self.downstream_remote,
            downstream_local: self.downstream_local,
            upstream_remote: self.upstream_host,
            protocol: Some(self.protocol).filter(|p| !p.is_empty()),
            start: self.start,
            response_code: Some(self.status),
            log: Some(self),
        };
        f.render(&ctx, None)
    }

    /// Appends `%RESPONSE_CODE_DETAILS%`; false when there are none.
    pub fn push_details(&self, out: &mut String) -> bool {
        self.details.as_ref().is_some_and(|d| d.push(out))
    }
}

/// One sink of an [`AccessLogger`]: where its lines go, its filter and its format.
#[derive(Debug, Clone)]
struct Sink {
    tx: mpsc::Sender<String>,
    filter: Option<config::AccessLogFilter>,
    /// `None`: Envoy's default format.
    format: Option<Arc<BodyFormat>>,
}

/// Where one HCM's access log lines go: each sink with its filter and format.
#[derive(Debug, Clone, Default)]
pub struct AccessLogger {
    sinks: Vec<Sink>,
    /// A filter or a format reads request headers: entries keep them
    /// ([`Entry::request_headers`]).
    keeps_headers: bool,
    /// A format reads response headers ([`Entry::response_headers`]).
    keeps_response_headers: bool,
}

impl AccessLogger {
    /// Starts the loggers of `logs`: every logger of one file (or stdout), in this process,
    /// shares one writer task, so lines keep the order they were logged in (Envoy's one file
    /// per path: a listener's, a tcp_proxy's and an HCM's loggers, also across reloads).
    pub fn start(logs: &[config::AccessLog]) -> Self {
        let sinks = logs
            .iter()
            .map(|l| {
                let tx = shared_writer(&l.sink);
                Sink {
                    tx,
                    filter: l.filter.clone(),
                    format: l.format.clone(),
                }
            })
            .collect();
        let keeps_headers = logs.iter().any(|l| {
            l.filter
                .as_ref()
                .is_some_and(config::AccessLogFilter::reads_headers)
                || l.format.as_ref().is_some_and(|f| f.reads_request_headers())
        });
        let keeps_response_headers = logs.iter().any(|l| {
            l.format
                .as_ref()
                .is_some_and(|f| f.reads_response_headers())
        });
        Self {
            sinks,
            keeps_headers,
            keeps_response_headers,
        }
    }

    /// The request headers an entry keeps: a copy only when a filter or format reads them.
    pub fn headers_to_keep(&self, h: &http::HeaderMap) -> Option<http::HeaderMap> {
        self.keeps_headers.then(|| h.clone())
    }

    /// The response headers an entry keeps: a copy only when a format reads them.
    pub fn response_headers_to_keep(&self, h: &http::HeaderMap) -> Option<http::HeaderMap> {
        self.keeps_response_headers.then(|| h.clone())
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
            health_check: e.health_check,
        };
        let mut default_line: Option<String> = None;
        for s in &self.sinks {
            if s.filter.as_ref().is_some_and(|f| !f.admits(&logged)) {
                continue;
            }
            let line = match &s.format {
                None => default_line.get_or_insert_with(|| e.render()).clone(),
                Some(f) => e.render_with(f),
            };
            let _ = s.tx.try_send(line);
        }
    }
}

/// The writer of `target`: the running one, else a new one.
fn shared_writer(target: &config::LogSink) -> mpsc::Sender<String> {
    static WRITERS: Mutex<Vec<(config::LogSink, mpsc::WeakSender<String>)>> =
        Mutex::new(Vec::new());
    let mut writers = WRITERS.lock().unwrap_or_else(|p| p.into_inner());
    writers.retain(|(_, w)| w.strong_count() > 0);
    if let Some(tx) = writers
        .iter()
        .find(|(t, _)| t == target)
        .and_then(|(_, w)| w.upgrade())
    {
        return tx;
    }
    let tx = writer(target.clone());
    writers.push((target.clone(), tx.downgrade()));
    tx
}

/// Starts the task that writes the lines sent to the returned channel to `target`.
fn writer(target: config::LogSink) -> mpsc::Sender<String> {
    let (tx, mut rx) = mpsc::channel::<String>(QUEUE);
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
    tx
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
            if let Some(t) = &e.request_bytes {
                e.bytes_rx = t.bytes();
                e.request_duration = t.ended_after();
            }
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
                if let (Some(t), Some((e, _, _))) = (f.trailers_ref(), this.pending.as_mut()) {
                    if let Some(s) = super::local_reply::grpc_status(t) {
                        e.grpc_status = Some(s);
                    }
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

    fn log_format(yaml: &str) -> Result<BodyFormat, String> {
        let raw: crate::route::body_format::RawBodyFormat =
            crate::config::raw::parse_document(yaml).expect("parses");
        let p = crate::config::FieldPath::root().field("log_format");
        BodyFormat::build_log(&raw, &p).map_err(|e| e.to_string())
    }

    #[test]
    fn log_format_renders_the_entry() {
        let mut h = http::HeaderMap::new();
        h.insert("x-a", "alpha".parse().unwrap());
        let mut resp = http::HeaderMap::new();
        resp.insert("x-up", "abcdef".parse().unwrap());
        let e = Entry {
            method: "GET".into(),
            path: "/p?q".into(),
            protocol: "HTTP/2",
            status: 503,
            flags: "UF",
            bytes_rx: 5,
            bytes_tx: 7,
            duration: Duration::from_millis(12),
            authority: Some("h.example".into()),
            upstream_host: Some("10.0.0.2:80".parse().unwrap()),
            upstream_local: Some("10.0.0.1:40000".parse().unwrap()),
            downstream_remote: Some("192.0.2.9:0".parse().unwrap()),
            request_headers: Some(h),
            response_headers: Some(resp),
            scheme: "http",
            route_name: Some("r".into()),
            cluster: Some("c".into()),
            details: Some(ResponseDetails::connect_failed(
                "remote connection failure",
                &std::io::Error::from_raw_os_error(libc::ECONNREFUSED),
            )),
            ..Entry::default()
        };
        let f = log_format(
            "text_format: '%REQ(:METHOD)% %REQ(:PATH)% %REQ(:AUTHORITY)% %REQ(X-A):3% %PROTOCOL% \
             %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% \
             %RESP(X-UP)% %UPSTREAM_HOST% %UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT% \
             %DOWNSTREAM_REMOTE_ADDRESS% %ROUTE_NAME% %UPSTREAM_CLUSTER_RAW% \
             %REQUESTED_SERVER_NAME% %UPSTREAM_TRANSPORT_FAILURE_REASON%'",
        )
        .expect("valid");
        assert_eq!(
            e.render_with(&f),
            "GET /p?q h.example alp HTTP/2 503 UF 5 7 12 abcdef 10.0.0.2:80 10.0.0.1 \
             192.0.2.9:0 r c - delayed_connect_error:_Connection_refused"
        );
        let j = log_format("json_format: {code: '%RESPONSE_CODE%', d: '%DURATION%', n: '%ROUTE_NAME%', s: '%REQUESTED_SERVER_NAME%'}")
            .expect("valid");
        assert_eq!(
            e.render_with(&j),
            "{\"code\":503,\"d\":12,\"n\":\"r\",\"s\":null}\n"
        );
        assert!(f.reads_request_headers() && f.reads_response_headers());
        assert!(!j.reads_request_headers() && !j.reads_response_headers());
    }

    #[test]
    fn durations_attempts_and_grpc_status() {
        let f = log_format(
            "text_format: '%REQUEST_DURATION% %RESPONSE_DURATION% %RESPONSE_TX_DURATION% \
             %UPSTREAM_REQUEST_ATTEMPT_COUNT% %GRPC_STATUS% %GRPC_STATUS(SNAKE_STRING)% \
             %GRPC_STATUS_NUMBER%'",
        )
        .expect("valid");
        let forwarded = Entry {
            status: 200,
            duration: Duration::from_millis(250),
            request_duration: Some(Duration::from_micros(3_900)),
            response_duration: Some(Duration::from_millis(180)),
            attempts: 2,
            grpc_request: true,
            grpc_status: Some(4),
            ..Entry::default()
        };
        // The body's time after the head: 250 - 180; ms truncated, as Envoy.
        assert_eq!(
            forwarded.render_with(&f),
            "3 180 70 2 DeadlineExceeded DEADLINE_EXCEEDED 4"
        );
        let local = Entry {
            status: 429,
            grpc_request: true,
            ..Entry::default()
        };
        // No upstream head: no response durations; the status inferred from 429.
        assert_eq!(local.render_with(&f), "- - - 0 Unavailable UNAVAILABLE 14");
        let plain = Entry {
            status: 200,
            grpc_status: Some(0),
            ..Entry::default()
        };
        assert!(
            plain.render_with(&f).ends_with(" - - -"),
            "not a gRPC request"
        );
        let e = log_format("text_format: '%GRPC_STATUS(LOUD)%'").expect_err("bad format");
        assert!(e.contains("CAMEL_STRING, SNAKE_STRING, NUMBER"), "{e}");
    }

    #[test]
    fn log_format_refusals_name_the_field() {
        for (yaml, want) in [
            (
                "text_format: '%LOCAL_REPLY_BODY%'",
                "log_format.text_format: not supported (command operator %LOCAL_REPLY_BODY%",
            ),
            (
                "json_format: {a: '%DYNAMIC_METADATA(x)%'}",
                "log_format.json_format.a: not supported (command operator %DYNAMIC_METADATA%",
            ),
            (
                "text_format: '%BYTES_SENT(x)%'",
                "log_format.text_format: command operator %BYTES_SENT% takes no argument",
            ),
            (
                "text_format: '%RESP%'",
                "log_format.text_format: command operator %RESP% needs (header)",
            ),
        ] {
            let e = log_format(yaml).expect_err(yaml);
            assert!(e.contains(want), "{yaml}: {e}");
        }
    }

    #[test]
    fn start_time_format() {
        let t = UNIX_EPOCH + Duration::from_millis(1_460_751_420_310);
        assert_eq!(format_time(t), "2016-04-15T20:17:00.310Z");
    }
}
