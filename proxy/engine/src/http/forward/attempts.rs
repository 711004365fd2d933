//! What the attempts of one request share: picking each attempt's host and headers, sorting
//! an attempt's end for retrying, the route timeout, and the outcome of the final attempt.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use futures_util::{future::Either, FutureExt};
use http::{header, request::Parts, uri::PathAndQuery, HeaderValue};

use super::{
    choose_retry_host, finish_response, internal_redirect, local_reply, mirror, AttemptError, Flag,
    Hosting, Outcome, Plan, ReqBody, Try, Upstream,
};
use crate::{
    route::format::{FormatContext, RequestLine},
    upstream::{outlier::HostResult, pool::ConnectError, Cluster, Host, LbContext},
};

/// What every attempt of a request shares.
pub(super) struct Attempts<'a> {
    pub(super) cluster: &'a Arc<Cluster>,
    pub(super) lb: &'a LbContext,
    pub(super) plan: &'a Plan,
    pub(super) hosting: &'a Hosting,
    pub(super) path: &'a PathAndQuery,
    /// When the route timeout passes.
    pub(super) deadline: Option<tokio::time::Instant>,
    /// The local address of the connection the latest attempt went out on (what the route
    /// timeout's answer reports as `%UPSTREAM_LOCAL_ADDRESS%`); kept only for an access log.
    pub(super) local: Option<std::sync::Mutex<Option<SocketAddr>>>,
    /// The host `auto_sni` / `auto_san_validation` use (`transport::auto_host`).
    pub(super) auto_host: Option<&'a str>,
}

/// The attempt that answers the request, or the failure that does.
pub(super) struct Final {
    pub(super) result: Result<Upstream, AttemptError>,
    pub(super) host: Arc<Host>,
    pub(super) upstream_ms: u64,
    /// Attempts started (Envoy's attempt count, `x-envoy-attempt-count`).
    pub(super) attempts: u32,
    /// The response flag of an answer from the upstream: a retry it called for was past
    /// `num_retries` (URX) or refused by the retry circuit breaker (UO).
    pub(super) flag: Flag,
}

impl Attempts<'_> {
    /// `fut`'s output, or `None` when the route timeout passes first.
    ///
    /// Not an `async fn`: one would keep `fut` both as its argument and inside the timeout,
    /// twice the attempt's state in every request's future.
    pub(super) fn within<F: std::future::Future>(
        &self,
        fut: F,
    ) -> impl std::future::Future<Output = Option<F::Output>> {
        match self.deadline {
            Some(d) => Either::Left(tokio::time::timeout_at(d, fut).map(Result::ok)),
            None => Either::Right(fut.map(Some)),
        }
    }

    /// The route timeout's answer: 504 `upstream request timeout` (UT) naming the host of the
    /// last attempt; each of the `running` attempts it resets counts as an upstream timeout
    /// (Envoy's `onResponseTimeout`); `attempts`: how many were started.
    pub(super) fn route_timeout(
        &self,
        host: Option<SocketAddr>,
        running: usize,
        attempts: u32,
    ) -> Outcome {
        for _ in 0..running {
            self.cluster.stats.upstream_rq_timeout.inc();
        }
        self.plan.count_route(|r| r.timeout.inc());
        let mut o = Outcome {
            resp: flag_reply(self.plan, Flag::Timeout),
            flag: Flag::Timeout,
            upstream_host: host,
            upstream_ms: None,
            upstream_local: self
                .local
                .as_ref()
                .and_then(|m| *m.lock().unwrap_or_else(|p| p.into_inner())),
            attempts,
            redirect: None,
        };
        if self.plan.attempt_count.1 {
            o.resp
                .headers_mut()
                .insert("x-envoy-attempt-count", HeaderValue::from(attempts));
        }
        o
    }

    /// Picks the host of the attempt after `retries` retries and sets its request headers
    /// (Host, `x-envoy-attempt-count`, `x-envoy-is-timeout-retry`: `timed_out` says whether the
    /// retry follows a per-try timeout).
    pub(super) fn prepare(
        &self,
        tried: &mut Vec<SocketAddr>,
        parts: &mut Parts,
        retries: u32,
        timed_out: bool,
    ) -> Option<Arc<Host>> {
        let plan = self.plan;
        let host = choose_retry_host(self.cluster, self.lb, plan.retry.as_ref(), tried)?;
        if plan.retry.as_ref().is_some_and(|r| r.previous_hosts) {
            tried.push(host.addr);
        }
        self.hosting.apply(parts, &host);
        if plan.attempt_count.0 {
            parts
                .headers
                .insert("x-envoy-attempt-count", HeaderValue::from(retries + 1));
        }
        if plan.timeout_retry_header && retries > 0 {
            let v = if timed_out { "true" } else { "false" };
            parts
                .headers
                .insert("x-envoy-is-timeout-retry", HeaderValue::from_static(v));
        }
        Some(host)
    }

    /// Envoy's `setTimeoutHeaders` before a retry: the expected timeout within the route
    /// timeout left.
    pub(super) fn retry_timeout_headers(&self, parts: &mut Parts) {
        let left = self
            .deadline
            .map(|d| d.saturating_duration_since(tokio::time::Instant::now()));
        super::timeouts::set_headers(self.plan, &mut parts.headers, left);
    }

    /// The request's outcome from its final attempt; `parts` carries the last attempt's
    /// request headers (what the response's header formatters read).
    pub(super) fn respond(
        &self,
        fin: Final,
        parts: &Parts,
        body: &ReqBody,
        fmt: FormatContext<'_>,
    ) -> Outcome {
        let (plan, cluster) = (self.plan, self.cluster);
        let count = HeaderValue::from(fin.attempts);
        match fin.result {
            Ok(resp) => {
                let flag = fin.flag;
                let upstream_local = resp.body().local();
                // A redirect the route's policy may follow: only for a request whose body was
                // read whole (Envoy: no redirect for a streamed request).
                let redirect = plan
                    .redirect
                    .as_ref()
                    .filter(|p| p.follows(resp.status().as_u16()))
                    .and_then(|p| {
                        let body = match body {
                            // Read to its end and still retained (Envoy: the request
                            // complete and its buffer not overflowed).
                            ReqBody::Retained(r) => Some(r.whole()?),
                            b => b.whole()?.cloned(),
                        };
                        internal_redirect::candidate(
                            p,
                            resp.status().as_u16(),
                            resp.headers(),
                            parts,
                            self.path,
                            body,
                        )
                    });
                let mut resp = resp;
                // Only a hashing balancer asks for the hash, and so for the cookie (Envoy);
                // before the route's response mutations, which may remove it.
                if let Some(c) = plan
                    .set_cookie
                    .as_ref()
                    .filter(|_| cluster.spec.lb.hashes())
                {
                    resp.headers_mut().append(header::SET_COOKIE, c.clone());
                }
                let mut resp = finish_response(
                    resp,
                    fin.upstream_ms,
                    plan,
                    &FormatContext {
                        request: Some(&parts.headers),
                        upstream_remote: Some(fin.host.addr),
                        // Response mutations see the request as it went upstream.
                        line: fmt.line.map(|l| RequestLine {
                            path: self.path.as_str(),
                            scheme: match (
                                plan.scheme_match_upstream,
                                cluster.tls(fin.host.transport).is_some(),
                            ) {
                                (true, true) => "https",
                                (true, false) => "http",
                                (false, _) => l.scheme,
                            },
                            ..l
                        }),
                        ..fmt
                    },
                    body_per_try_idle(plan),
                );
                if plan.attempt_count.1 {
                    resp.headers_mut().insert("x-envoy-attempt-count", count);
                }
                Outcome {
                    resp,
                    flag,
                    upstream_host: Some(fin.host.addr),
                    upstream_ms: Some(fin.upstream_ms),
                    upstream_local,
                    attempts: fin.attempts,
                    redirect,
                }
            }
            Err(e) => {
                let flag = match fin.flag {
                    Flag::RetryLimitExceeded => e.flag().after_retries(),
                    _ => e.flag(),
                };
                let mut o = Outcome::local(flag);
                o.resp = match e.reset_reason() {
                    // Envoy's router answers a protocol error 502, every other reset 503.
                    Some(reason) if matches!(e, AttemptError::Protocol) => {
                        local_reply::for_reset_with(502, reason, fin.attempts > 1)
                    }
                    Some(reason) => local_reply::for_reset(reason, fin.attempts > 1),
                    None => flag_reply(plan, flag),
                };
                if plan.attempt_count.1 {
                    o.resp.headers_mut().insert("x-envoy-attempt-count", count);
                }
                if let Some(d) = e.details() {
                    o.resp.extensions_mut().insert(d);
                }
                o.upstream_host = Some(fin.host.addr);
                o.attempts = fin.attempts;
                o
            }
        }
    }
}

/// The local reply for `flag`, with an internal request's
/// `x-envoy-upstream-rq-timeout-alt-response` turning a timeout's 504 into 204.
fn flag_reply(plan: &Plan, flag: Flag) -> http::Response<super::Body> {
    match flag {
        Flag::Timeout | Flag::RetryLimitTimeout if plan.timeout_alt_response => {
            local_reply::timeout_alt_response()
        }
        _ => local_reply::for_flag(flag),
    }
}

/// How an attempt ended as far as retrying is concerned, and what it tells outlier detection
/// about its host; `Err`: the request ends here with this outcome's flag (a circuit breaker's
/// overflow, or the client's malformed body: its fault, never counted against the host and
/// never retried; Envoy answers 400 and closes), see [`ended`].
pub(super) fn classify(
    cluster: &Cluster,
    result: &Result<Upstream, AttemptError>,
) -> Result<(Try, HostResult), Flag> {
    Ok(match result {
        Ok(r) => (
            Try::Status(r.status().as_u16()),
            HostResult::Status(r.status().as_u16()),
        ),
        Err(AttemptError::Connect(ConnectError::Overflow)) => {
            cluster.stats.upstream_rq_pending_overflow.inc();
            return Err(Flag::Overflow);
        }
        // Envoy's outlier results: every failure without a response is local-origin (its
        // `onUpstreamReset` reports `LocalOriginConnectFailed` for a reset from the wire too),
        // which outside `split_external_local_origin_errors` counts as a 503 (a timeout: 504).
        Err(AttemptError::Connect(e)) => (
            Try::ConnectFailure,
            HostResult::LocalOrigin {
                timeout: matches!(e, ConnectError::Timeout),
            },
        ),
        // A protocol error is a reset to the retry policy (`reset`, `5xx`), as Envoy's
        // `wouldRetryFromReset`.
        Err(AttemptError::Reset | AttemptError::Protocol) => (
            Try::Reset(crate::http::retry::Reset::SENT),
            HostResult::LocalOrigin { timeout: false },
        ),
        Err(AttemptError::NotSent) => (
            Try::Reset(crate::http::retry::Reset::NOT_SENT),
            HostResult::LocalOrigin { timeout: false },
        ),
        Err(AttemptError::StreamReset { refused }) => (
            Try::Reset(crate::http::retry::Reset {
                sent: true,
                refused: *refused,
            }),
            HostResult::LocalOrigin { timeout: false },
        ),
        Err(AttemptError::Timeout) => (
            Try::PerTryTimeout,
            HostResult::LocalOrigin { timeout: true },
        ),
        Err(AttemptError::Downstream) => return Err(Flag::DownstreamProtocolError),
    })
}

/// The per-try idle timeout on the response body: Envoy resets that timer on every upstream
/// data frame and resets the stream when it fires; a hedged request's fires into
/// `onSoftPerTryTimeout`, which does nothing once the response has started.
fn body_per_try_idle(plan: &Plan) -> Option<Duration> {
    plan.retry
        .as_ref()
        .and_then(|r| r.per_try_idle_timeout)
        .filter(|_| !plan.hedge)
}

/// The outcome of a request [`classify`] ended with `flag` on an attempt to `host`, after
/// `attempts` attempts.
pub(super) fn ended(flag: Flag, host: SocketAddr, attempts: u32) -> Outcome {
    let mut o = Outcome::local(flag);
    o.attempts = attempts;
    if flag == Flag::DownstreamProtocolError {
        o.upstream_host = Some(host);
    }
    o
}

/// Sends the request's shadows (with the first attempt's headers): with the body read whole,
/// or each with its streamed copy.
pub(super) fn send_shadows(
    shadows: Vec<mirror::Shadow>,
    parts: &Parts,
    path: &PathAndQuery,
    body: &ReqBody,
    lb: &LbContext,
    timeout: Option<Duration>,
) {
    mirror::send(shadows, parts, path, body.whole(), lb, timeout);
}
