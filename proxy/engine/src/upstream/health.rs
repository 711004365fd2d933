//! Active health checking (HTTP and TCP), as Envoy's per-host sessions: one task per cluster
//! keeps a schedule per host, checks each host when its time comes (a new host at once), and
//! sets the time to its next check from the result (Envoy's intervals,
//! [`crate::config::HealthCheckIntervals`], the jitter drawn per check). A host's connection is
//! kept from check to check (`reuse_connection`, the default) until a check fails or times out.

use std::{
    collections::HashMap,
    sync::{atomic::Ordering, Arc, Weak},
};

use bytes::Bytes;
use futures_util::{stream::FuturesUnordered, StreamExt};
use http_body_util::Full;
use hyper::client::conn::http1;
use tokio::time::Instant;

use super::{pool, Cluster, HealthCheckSpec, Host};
use crate::config::RoutingPriority;

mod events;
mod grpc;
pub(crate) mod stats;

/// A host's kept health check connection: HTTP/1, HTTP/2 (a gRPC check, or an HTTP check with
/// `codec_client_type: HTTP2`), or TCP for a check with payloads.
enum Conn {
    Http(http1::SendRequest<Full<Bytes>>),
    H2(grpc::Sender),
    Tcp(tokio::net::TcpStream),
}

/// What one check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Pass,
    /// The host answered `status`, outside `expected_statuses`; `retriable` when it is in
    /// `retriable_statuses` (a gRPC check's failed call: 0).
    BadStatus {
        retriable: bool,
        status: u16,
    },
    /// No answer: the connect failed or the connection broke.
    Network,
    /// No answer within `timeout`.
    Timeout,
}

/// One host's schedule and streak (Envoy's `ActiveHealthCheckSession`).
struct Session {
    host: Arc<Host>,
    due: Instant,
    running: bool,
    conn: Option<Conn>,
    streak: Streak,
}

/// Results in a row, and whether the host had its first check.
#[derive(Debug, Default)]
struct Streak {
    ok: u32,
    fail: u32,
    seen: bool,
}

/// Runs until the cluster is dropped (config replaced).
pub async fn run(cluster: Weak<Cluster>, spec: HealthCheckSpec) {
    // Sessions by host (its `Arc`'s address: a host replaced by an update is a new host, and
    // two endpoints on one address are two hosts).
    let mut sessions: HashMap<usize, Session> = HashMap::new();
    let mut inflight = FuturesUnordered::new();
    let mut first_done = false;
    Cluster::dns_resolved(&cluster).await;
    let Some(mut changes) = cluster.upgrade().map(|c| c.host_changes()) else {
        return;
    };
    loop {
        let Some(c) = cluster.upgrade() else { return };
        // Marked seen before the hosts are read: a change after this wakes the loop again.
        changes.borrow_and_update();
        let now = Instant::now();
        // An endpoint with `disable_active_health_check` has no session (Envoy's `addHosts`
        // skips it): it is never checked and stays healthy.
        let mut hosts = c.all_hosts();
        hosts.retain(|h| !h.unchecked());
        // A removed host's session goes, and with it its kept connection (closed).
        let current: std::collections::HashSet<usize> = hosts.iter().map(key).collect();
        sessions.retain(|k, _| current.contains(k));
        for h in &hosts {
            let s = sessions
                .entry(key(h))
                .or_insert_with(|| Session::new(h.clone(), now + spec.jitter.initial_wait()));
            if !s.running && s.due <= now {
                s.running = true;
                c.stats.health_check_attempt.inc();
                let (c, h, kept, spec) = (c.clone(), h.clone(), s.conn.take(), &spec);
                inflight.push(async move {
                    let (verdict, conn) = check(&c, &h, spec, kept).await;
                    (h, verdict, conn)
                });
            }
        }
        // Every host has had its first check (at once for none; a host removed before its
        // first check no longer counts).
        if !first_done && sessions.values().all(|s| s.streak.seen) {
            first_done = true;
            c.health_round_done();
        }
        let next = sessions
            .values()
            .filter(|s| !s.running)
            .map(|s| s.due)
            .min();
        drop(c);
        tokio::select! {
            Some((h, verdict, conn)) = inflight.next() => {
                let Some(c) = cluster.upgrade() else { return };
                if let Some(s) = sessions.get_mut(&key(&h)).filter(|s| Arc::ptr_eq(&s.host, &h)) {
                    s.running = false;
                    s.conn = conn.filter(|_| spec.reuse_connection);
                    s.due = Instant::now() + done(&c, &h, s, verdict, &spec);
                }
                c.remove_failed_pending();
            }
            () = sleep_until(next) => {}
            // A new host is checked at once (Envoy's checker starts its session as it is added).
            r = changes.changed() => if r.is_err() { return },
        }
    }
}

/// A host's session key: its `Arc`'s address (stable while the session holds it).
fn key(h: &Arc<Host>) -> usize {
    Arc::as_ptr(h) as usize
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

impl Session {
    /// A session whose first check is `due` (Envoy's `onInitialInterval`: a random wait below
    /// `initial_jitter`, drawn per host, also for a host added later).
    fn new(host: Arc<Host>, due: Instant) -> Self {
        Self {
            host,
            due,
            running: false,
            conn: None,
            streak: Streak::default(),
        }
    }
}

/// Applies a check's verdict to host `h` and its session; returns the time to its next check.
fn done(
    c: &Cluster,
    h: &Host,
    s: &mut Session,
    verdict: Verdict,
    spec: &HealthCheckSpec,
) -> std::time::Duration {
    let passed = verdict == Verdict::Pass;
    if passed {
        c.stats.health_check_success.inc();
    } else {
        c.stats.health_check_failure.inc();
        if matches!(verdict, Verdict::Network | Verdict::Timeout) {
            c.stats.health_check_network_failure.inc();
        }
    }
    let (first, was_healthy) = (!s.streak.seen, h.hc_healthy.load(Ordering::Relaxed));
    let pending = apply(&mut s.streak, h, verdict, spec);
    let now_healthy = h.hc_healthy.load(Ordering::Relaxed);
    let change = events::Change {
        first,
        was_healthy,
        now_healthy,
    };
    events::log(c, &s.host, spec, verdict, change);
    // `successful_active_health_check_uneject_host`: a passing check of a host that passes its
    // health checks brings it back from an outlier ejection at once.
    if passed
        && h.hc_healthy.load(Ordering::Relaxed)
        && c.spec.outlier.is_some_and(|o| o.uneject_on_health_check)
    {
        super::outlier::uneject(c, h);
    }
    // Envoy's `no_traffic_interval` applies until the cluster has opened an upstream connection
    // of its own (the checker's are not counted).
    let traffic = c.stats.upstream_cx_total.get() > 0;
    spec.jitter
        .apply(spec.intervals.next(passed, pending, traffic))
}

/// Applies `verdict` to host `h` (its health flag, and when it becomes healthy the start of
/// its slow-start window); returns whether a change is pending ([`judge`]).
fn apply(s: &mut Streak, h: &Host, verdict: Verdict, spec: &HealthCheckSpec) -> bool {
    let healthy = h.hc_healthy.load(Ordering::Relaxed);
    let (now_healthy, pending) = judge(s, healthy, verdict, spec);
    // Envoy's ACTIVE_HC_TIMEOUT: set by a timed-out check of a failed host, cleared by any
    // other failure and by the pass that makes the host healthy again.
    if verdict != Verdict::Pass {
        let timed_out = !now_healthy && verdict == Verdict::Timeout;
        h.hc_timeout.store(timed_out, Ordering::Relaxed);
    } else if now_healthy {
        h.hc_timeout.store(false, Ordering::Relaxed);
    }
    if now_healthy != healthy {
        h.hc_healthy.store(now_healthy, Ordering::Relaxed);
        if now_healthy {
            h.healthy_since.store(super::now_ms(), Ordering::Relaxed);
            tracing::info!(host = %h.addr, "health check: host healthy");
        } else {
            tracing::info!(host = %h.addr, "health check: host unhealthy");
        }
    }
    pending
}

/// Counts `verdict` in the session's streak and judges a host that was `healthy` as Envoy's
/// session does: the first result decides at once, a status outside `expected_statuses` (and
/// `retriable_statuses`) makes a healthy host unhealthy at once, and otherwise it takes
/// `unhealthy_threshold` failures or `healthy_threshold` passes in a row. Returns the host's
/// health after it, and whether a change is pending (a result against its health, short of
/// the threshold).
fn judge(s: &mut Streak, healthy: bool, verdict: Verdict, spec: &HealthCheckSpec) -> (bool, bool) {
    let first = !s.seen;
    s.seen = true;
    if verdict == Verdict::Pass {
        s.ok += 1;
        s.fail = 0;
        if healthy || first || s.ok >= spec.healthy_threshold.max(1) {
            return (true, false);
        }
        return (false, true);
    }
    s.fail += 1;
    s.ok = 0;
    let at_once = matches!(
        verdict,
        Verdict::BadStatus {
            retriable: false,
            ..
        }
    );
    if !healthy || first || at_once || s.fail >= spec.unhealthy_threshold.max(1) {
        return (false, false);
    }
    (true, true)
}

/// One check of `host`: its verdict, and the connection to keep for the next one (HTTP checks
/// that got a response; a timed out or failed check drops it, which closes it).
async fn check(
    cluster: &Arc<Cluster>,
    host: &Host,
    spec: &HealthCheckSpec,
    kept: Option<Conn>,
) -> (Verdict, Option<Conn>) {
    if spec.tcp_only && spec.tcp_receive.is_empty() {
        // Connect only: nothing is written, so an upstream_proxy_protocol socket sends no
        // header either (Envoy's writes its header with the first bytes; a TCP check without
        // a payload has none: test proxy_protocol_interop).
        let verdict = match tokio::time::timeout(
            spec.timeout,
            cluster.connector.connect(host.health_check_addr()),
        )
        .await
        {
            Ok(Ok(_)) => Verdict::Pass,
            Ok(Err(_)) => Verdict::Network,
            Err(_) => Verdict::Timeout,
        };
        return (verdict, None);
    }
    if spec.tcp_only {
        return tcp_exchange((cluster, host, spec), kept).await;
    }
    if spec.grpc.is_some() {
        return grpc::check(cluster, host, spec, kept).await;
    }
    if spec.http2 {
        return http2_check((cluster, host, spec), kept).await;
    }
    let kept = match kept {
        Some(Conn::Http(s)) => Some(s),
        _ => None,
    };
    let fut = async {
        let mut s = match reusable(kept).await {
            Some(s) => s,
            None => {
                let (purpose, prio) = (pool::Purpose::HealthCheck, RoutingPriority::Default);
                let to = (host.health_check_addr(), host.transport, None);
                match pool::connect::<Full<Bytes>>(cluster, to, purpose, prio).await {
                    Ok(pool::Sender::H1(s, _)) => s,
                    _ => return None,
                }
            }
        };
        let host = Some(check_host(host, spec));
        let send = Full::new(Bytes::from(spec.http_body.send.clone()));
        let mut req = check_request(spec, spec.path.clone(), host, send)?;
        // As Envoy's HTTP/1 encoder: a POST / PUT / ... check says `content-length: 0`.
        pool::add_empty_content_length(&mut req);
        Some((
            answer(cluster, spec, s.send_request(req).await.ok()?).await?,
            s,
        ))
    };
    let fut = async { fut.await.map(|(verdict, s)| (verdict, Conn::Http(s))) };
    timed(spec, fut).await
}

/// The check's host name (Envoy's `getHostname`): the endpoint's `health_check_config.hostname`,
/// else the check's `host` (`authority` for gRPC), else the cluster's name.
fn check_host<'a>(host: &'a Host, spec: &'a HealthCheckSpec) -> &'a str {
    host.health_check
        .as_ref()
        .and_then(|h| h.hostname.as_deref())
        .unwrap_or(&spec.host)
}

/// What one check is of: the cluster, the host, the check.
type Probe<'a> = (&'a Arc<Cluster>, &'a Host, &'a HealthCheckSpec);

/// An HTTP check over HTTP/2 (`codec_client_type: HTTP2`): the same request, `:authority` the
/// check's host, on the host's kept HTTP/2 connection.
async fn http2_check(
    (cluster, host, spec): Probe<'_>,
    kept: Option<Conn>,
) -> (Verdict, Option<Conn>) {
    let fut = async {
        let mut s = grpc::sender(cluster, host, kept).await?;
        let scheme = grpc::scheme(cluster, host);
        let uri = format!("{scheme}://{}{}", check_host(host, spec), spec.path);
        let body = match spec.http_body.send.is_empty() {
            true => http_body_util::BodyExt::boxed(Bodiless),
            false => crate::http::local_reply::full(spec.http_body.send.clone()),
        };
        let mut req = check_request(spec, uri, None, body)?;
        *req.version_mut() = http::Version::HTTP_2;
        Some((
            answer(cluster, spec, s.send_request(req).await.ok()?).await?,
            s,
        ))
    };
    let fut = async { fut.await.map(|(verdict, s)| (verdict, Conn::H2(s))) };
    timed(spec, fut).await
}

/// An HTTP check's request to `uri`: `host` (HTTP/1), Envoy's `user-agent: Envoy/HC`, then
/// the configured header changes.
fn check_request<B>(
    spec: &HealthCheckSpec,
    uri: String,
    host: Option<&str>,
    body: B,
) -> Option<http::Request<B>> {
    let mut b = http::Request::builder()
        .method(spec.method.clone())
        .uri(uri);
    if let Some(h) = host {
        b = b.header(http::header::HOST, h);
    }
    let mut req = b
        .header(http::header::USER_AGENT, "Envoy/HC")
        .body(body)
        .ok()?;
    spec.headers.apply(req.headers_mut());
    // A `send` payload goes with its length, as Envoy's.
    if !spec.http_body.send.is_empty() {
        req.headers_mut().insert(
            http::header::CONTENT_LENGTH,
            http::HeaderValue::from(spec.http_body.send.len()),
        );
    }
    Some(req)
}

/// An HTTP check's verdict once the answer's body has been read to its end (`None` when the
/// body broke off: a reset or a closed connection, Envoy's network failure), as Envoy's
/// `healthCheckResult`: the `receive` payloads in the first `response_buffer_size` bytes of
/// the body (missing: a failure whatever the status), then the status, then the
/// `service_name_matcher` against `x-envoy-upstream-healthchecked-cluster`.
async fn answer(
    c: &Cluster,
    spec: &HealthCheckSpec,
    resp: http::Response<hyper::body::Incoming>,
) -> Option<Verdict> {
    let b = &spec.http_body;
    let status = resp.status().as_u16();
    let cluster = resp
        .headers()
        .get("x-envoy-upstream-healthchecked-cluster")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    // The body is read to its end; only what `receive` is looked for in is kept.
    let limit = match (b.receive.is_empty(), b.response_buffer_size) {
        (true, _) => 0,
        (false, 0) => usize::MAX,
        (false, n) => usize::try_from(n).unwrap_or(usize::MAX),
    };
    let (kept, _) = crate::http::body_prefix::read(resp.into_body(), limit)
        .await
        .ok()?;
    let bad = |retriable| Verdict::BadStatus { retriable, status };
    if !b.receive.is_empty() && !payloads_found(&b.receive, &kept) {
        return Some(bad(false));
    }
    let verdict = status_verdict(spec, status);
    if verdict != Verdict::Pass {
        return Some(verdict);
    }
    match &b.service_name {
        Some(m) => {
            c.stats.health_check_verify_cluster.inc();
            Some(if m.matcher.matches(&cluster) {
                Verdict::Pass
            } else {
                bad(false)
            })
        }
        None => Some(Verdict::Pass),
    }
}

/// `fut`'s verdict and connection within the check's timeout: no answer is a network failure,
/// none in time a timeout.
async fn timed(
    spec: &HealthCheckSpec,
    fut: impl std::future::Future<Output = Option<(Verdict, Conn)>>,
) -> (Verdict, Option<Conn>) {
    match tokio::time::timeout(spec.timeout, fut).await {
        Ok(Some((verdict, conn))) => (verdict, Some(conn)),
        Ok(None) => (Verdict::Network, None),
        Err(_) => (Verdict::Timeout, None),
    }
}

/// No body, and no length said for it: hyper's HTTP/2 client then ends the stream with the
/// headers and writes no `content-length: 0` (Envoy's codec writes none).
struct Bodiless;

impl http_body::Body for Bodiless {
    type Data = Bytes;
    type Error = crate::http::BodyError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        true
    }
}

/// A check's verdict on an answer's status.
fn status_verdict(spec: &HealthCheckSpec, status: u16) -> Verdict {
    let within = |r: &[(u16, u16)]| r.iter().any(|(lo, hi)| (*lo..*hi).contains(&status));
    if within(&spec.expected) {
        Verdict::Pass
    } else {
        Verdict::BadStatus {
            retriable: within(&spec.retriable),
            status,
        }
    }
}

/// A TCP check with payloads, as Envoy's: `send` written on the host's connection (kept from
/// the last check, else a new one, which starts with the transport's PROXY header if it has
/// one), and a pass once every `receive` block has come back in order, not necessarily
/// contiguous. A connection that closes or a check that times out fails (a network failure).
async fn tcp_exchange(
    (cluster, host, spec): Probe<'_>,
    kept: Option<Conn>,
) -> (Verdict, Option<Conn>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fut = async {
        let mut tcp = match kept {
            Some(Conn::Tcp(t)) => t,
            _ => {
                let t = cluster.connect_transport(host.health_check_addr(), host.transport, None);
                t.await.ok()?
            }
        };
        let _ = tcp.set_nodelay(true);
        if !spec.tcp_send.is_empty() {
            tcp.write_all(&spec.tcp_send).await.ok()?;
        }
        let mut got = Vec::new();
        while !payloads_found(&spec.tcp_receive, &got) {
            if got.len() >= TCP_ANSWER_LIMIT {
                // Envoy stops reading at its buffer limit; the check then times out.
                std::future::pending::<()>().await;
            }
            if tcp.read_buf(&mut got).await.ok()? == 0 {
                return None;
            }
        }
        Some(tcp)
    };
    timed(spec, async {
        fut.await.map(|t| (Verdict::Pass, Conn::Tcp(t)))
    })
    .await
}

/// The most a TCP check reads while looking for its `receive` blocks.
const TCP_ANSWER_LIMIT: usize = 64 * 1024;

/// Every block of `want` in `got`, in order (Envoy's `PayloadMatcher`).
fn payloads_found(want: &[Vec<u8>], got: &[u8]) -> bool {
    let mut from = 0;
    for block in want {
        match got[from..]
            .windows(block.len())
            .position(|w| w == block.as_slice())
        {
            Some(at) => from += at + block.len(),
            None => return false,
        }
    }
    true
}

/// The kept connection, unless the host closed it (or answered `connection: close`) since.
async fn reusable(
    kept: Option<http1::SendRequest<Full<Bytes>>>,
) -> Option<http1::SendRequest<Full<Bytes>>> {
    let mut s = kept?;
    s.ready().await.ok()?;
    Some(s)
}

#[cfg(test)]
mod tests;
