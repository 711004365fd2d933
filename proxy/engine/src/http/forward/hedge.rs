//! `hedge_policy.hedge_on_per_try_timeout`: Envoy's router hedging. A per-try timeout leaves
//! its attempt running and starts another one (when the retry policy has a retry left); the
//! first answer that is not retried wins and the attempts still running are reset (dropped).
//! Only routes with hedging and a `per_try_timeout` or `per_try_idle_timeout` come here: the plain path keeps its single
//! attempt at a time and allocates nothing of this.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use futures_util::{stream::FuturesUnordered, StreamExt};
use http::{request::Parts, HeaderMap};
use tokio::time::Instant;

use super::{
    attempt, attempts::ended, classify, mirror, retry, send_shadows, AttemptError, Attempts, Body,
    Cluster, Final, Flag, Host, Outcome, ReqBody, Upstream,
};
use crate::upstream::outlier::HostResult;
use crate::{
    route::{format::FormatContext, RetryOn, RetryPolicy},
    upstream::resources::Slot as RetrySlot,
};

/// The soft timeouts of every attempt of the race.
pub(super) struct Timers {
    /// `per_try_timeout`.
    pub(super) per_try: Option<Duration>,
    /// `per_try_idle_timeout`: before the response head nothing resets it, so it is a second
    /// soft timeout from the attempt's start; after the head it does nothing (Envoy's
    /// `onSoftPerTryTimeout` once the response has started).
    pub(super) idle: Option<Duration>,
}

/// One attempt of the race.
struct Slot {
    host: Arc<Host>,
    /// When its per-try timeout fires; `None` once it fired or the attempt answered.
    per_try_at: Option<Instant>,
    /// When its per-try idle timeout fires, likewise (each one hedges once, as Envoy's two
    /// timers).
    idle_at: Option<Instant>,
    /// Its per-try timeout fired (Envoy's `retried()`): its own answer is never retried.
    retried: bool,
}

/// What to do with an attempt's answer (Envoy's `onUpstreamHeaders` / `onUpstreamReset` with
/// several upstream requests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Retry it: the attempt is dropped and a retry is scheduled.
    Retry,
    /// A bad answer while other attempts (or a scheduled retry) may still answer: drop it.
    Wait,
    /// It answers the request; the others are reset.
    Answer,
}

/// `retried`: the attempt already hit its per-try timeout; `response`: it answered with
/// headers (not a reset); `would_retry`: the retry policy retries this answer; `can_retry`:
/// a retry may be scheduled (`num_retries` and the retry circuit breaker allow one — only
/// asked when the others hold); `others`: attempts still awaiting headers or a retry waiting.
fn verdict(
    retried: bool,
    response: bool,
    would_retry: bool,
    can_retry: impl FnOnce() -> bool,
    others: bool,
) -> Verdict {
    if !retried && would_retry && can_retry() {
        return Verdict::Retry;
    }
    // A response that would have been retried, or any reset, waits for the others; a good
    // response wins at once.
    if others && (would_retry || !response) {
        Verdict::Wait
    } else {
        Verdict::Answer
    }
}

/// The attempts in flight and the retry budget.
struct Race<'a, 'b> {
    ctx: &'a Attempts<'b>,
    policy: Option<&'a RetryPolicy>,
    /// Retries may be scheduled at all: a retry policy with conditions (Envoy creates no retry
    /// state without) and a body that can be sent again.
    can_retry: bool,
    /// `num_retries` minus the retries scheduled so far (Envoy's `retries_remaining_`).
    retries_left: u32,
    scheduled: u32,
    /// A scheduled retry: when it starts and whether it follows a per-try timeout.
    pending: Option<(Instant, bool)>,
    /// The retry circuit breaker's slot of the last retry decided: held until the next
    /// outcome or per-try timeout after the retry started (Envoy's `RetryStateImpl` gives it
    /// back in `resetRetry`, at its next `shouldRetry*`).
    held: Option<RetrySlot<'a>>,
    limit_exceeded: bool,
    overflowed: bool,
}

impl<'a> Race<'a, '_> {
    /// The flag of the answer: Envoy sets one whenever a retry is refused (UO for the retry
    /// circuit breaker, URX for `num_retries`), whatever answers in the end.
    fn flag(&self) -> Flag {
        match () {
            () if self.overflowed => Flag::Overflow,
            () if self.limit_exceeded => Flag::RetryLimitExceeded,
            () => Flag::None,
        }
    }

    /// Envoy's `RetryStateImpl::shouldRetry` once the answer is retriable: `num_retries` (else
    /// URX), then the retry circuit breaker (else UO), then the back-off; whether a retry was
    /// scheduled.
    fn schedule(&mut self, timed_out: bool, headers: Option<&HeaderMap>) -> bool {
        let Some(policy) = self.policy.filter(|_| self.can_retry) else {
            return false;
        };
        if self.retries_left == 0 {
            self.limit_exceeded = true;
            self.ctx.plan.count_route(|r| r.retry_limit_exceeded.inc());
            return false;
        }
        self.retries_left -= 1;
        let cluster: &'a Cluster = self.ctx.cluster;
        let Some(slot) = cluster.resources[self.ctx.plan.priority].retry() else {
            cluster.stats.upstream_rq_retry_overflow.inc();
            self.ctx.plan.count_route(|r| r.retry_overflow.inc());
            self.overflowed = true;
            return false;
        };
        cluster.stats.upstream_rq_retry.inc();
        self.ctx.plan.count_route(|r| r.retry.inc());
        let wait = retry::backoff_after(policy, self.scheduled, headers);
        self.scheduled += 1;
        // A retry scheduled while another waits replaces it (Envoy's `resetRetry`).
        self.pending = Some((Instant::now() + wait, timed_out));
        self.held = Some(slot);
        true
    }
}

/// Runs the request's attempts with hedging on per-try timeout, to the outcome of the one
/// that answers (or of no healthy host, an overflow, a bad client body, the route timeout).
pub(super) async fn race(
    ctx: &Attempts<'_>,
    parts: &mut Parts,
    body: &mut ReqBody,
    shadows: &mut Option<Vec<mirror::Shadow>>,
    timers: Timers,
    fmt: FormatContext<'_>,
) -> Outcome {
    let plan = ctx.plan;
    let cluster = ctx.cluster;
    let policy = plan.retry.as_ref();
    let mut race = Race {
        ctx,
        policy,
        // Hedged attempts run side by side: only a body read whole is given to several.
        can_retry: policy.is_some_and(|p| p.retry_on != RetryOn::default()) && body.read_whole(),
        retries_left: policy.map_or(0, |p| p.num_retries),
        scheduled: 0,
        pending: None,
        held: None,
        limit_exceeded: false,
        overflowed: false,
    };
    let Some(first) = body.take() else {
        return Outcome::local(Flag::ConnectionTermination);
    };
    let body: &ReqBody = body;
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut slots: Vec<Slot> = Vec::new();
    let mut running = FuturesUnordered::new();
    let mut next_body = Some(first);
    let mut timed_out = false;
    loop {
        // Start an attempt: the first, or a retry whose back-off is over.
        if let Some(b) = next_body.take() {
            let retries = slots.len() as u32;
            let Some(host) = ctx.prepare(&mut tried, parts, retries, timed_out) else {
                cluster.stats.upstream_cx_none_healthy.inc();
                return Outcome::local(Flag::NoHealthyUpstream);
            };
            if retries > 0 {
                ctx.retry_timeout_headers(parts);
            }
            if let Some(s) = shadows.take() {
                send_shadows(s, parts, ctx.path, body, ctx.lb, plan.timeout);
            }
            running.push(one(ctx, slots.len(), host.clone(), parts.clone(), b, body));
            let now = Instant::now();
            slots.push(Slot {
                host,
                per_try_at: timers.per_try.map(|t| now + t),
                idle_at: timers.idle.map(|t| now + t),
                retried: false,
            });
        }
        let soft = slots
            .iter()
            .flat_map(|s| [s.per_try_at, s.idle_at])
            .flatten()
            .min();
        let retry_at = race.pending.as_ref().map(|p| p.0);
        tokio::select! {
            Some((id, result, upstream_ms)) = running.next() => {
                let slot = &mut slots[id];
                slot.per_try_at = None;
                slot.idle_at = None;
                let (retried, host) = (slot.retried, slot.host.clone());
                let (outcome, host_result) = match classify(cluster, &result) {
                    Ok(c) => c,
                    Err(flag) => return ended(flag, host.addr, slots.len() as u32),
                };
                cluster.record_outcome(&host, host_result);
                if race.pending.is_none() {
                    race.held = None;
                }
                let headers = result.as_ref().ok().map(|r| r.headers());
                // `retriable_request_headers` that do not match leave no retry condition
                // (only the per-try timeout's hedge ignores the conditions).
                let would_retry = race.can_retry
                    && plan.retry_allowed
                    && policy.is_some_and(|p| retry::should_retry(p, outcome, headers));
                let others = !running.is_empty() || race.pending.is_some();
                let v = verdict(
                    retried,
                    result.is_ok(),
                    would_retry,
                    || race.schedule(false, headers),
                    others,
                );
                match v {
                    Verdict::Retry | Verdict::Wait => {}
                    Verdict::Answer => {
                        if race.scheduled > 0 && !would_retry {
                            ctx.plan.count_route(|r| r.retry_success.inc());
                        }
                        let fin = Final {
                            result,
                            host,
                            upstream_ms,
                            attempts: slots.len() as u32,
                            flag: race.flag(),
                        };
                        return ctx.respond(fin, parts, body, fmt);
                    }
                }
            }
            () = super::until(soft) => {
                let now = Instant::now();
                if race.pending.is_none() {
                    race.held = None;
                }
                for slot in &mut slots {
                    for timer in [&mut slot.per_try_at, &mut slot.idle_at] {
                        if timer.is_none_or(|t| t > now) {
                            continue;
                        }
                        *timer = None;
                        slot.retried = true;
                        // Counted as a timeout for outlier detection though it may still
                        // answer.
                        cluster.record_outcome(&slot.host, HostResult::LocalOrigin { timeout: true });
                        // Envoy's `shouldHedgeRetryPerTryTimeout`: retried whatever
                        // `retry_on` says, while retries are left.
                        race.schedule(true, None);
                    }
                }
            }
            () = super::until(ctx.deadline) => {
                // Envoy's `onResponseTimeout`: every attempt still running is reset.
                let last = slots.last().map(|s| s.host.addr);
                return ctx.route_timeout(last, running.len(), slots.len() as u32);
            }
            () = super::until(retry_at) => {
                timed_out = race.pending.take().is_some_and(|p| p.1);
                next_body = body.copy();
            }
        }
    }
}

/// One attempt, without its own per-try timeout (the race keeps it); `id` names its slot.
async fn one(
    ctx: &Attempts<'_>,
    id: usize,
    host: Arc<Host>,
    parts: Parts,
    body: Body,
    again: &ReqBody,
) -> (usize, Result<Upstream, AttemptError>, u64) {
    let t0 = std::time::Instant::now();
    let result = attempt(ctx, &host, &parts, body, again, None, None).await;
    (id, result, t0.elapsed().as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_follow_envoys_router() {
        use Verdict::*;
        // (retried, response, would_retry, can_retry, others) -> verdict
        let table = [
            // A good response wins, whatever else runs.
            (false, true, false, true, true, Answer),
            (true, true, false, true, true, Answer),
            // A retriable answer of a fresh attempt is retried when a retry is left.
            (false, true, true, true, true, Retry),
            (false, false, true, true, false, Retry),
            // No retry left: wait for the others, else it answers.
            (false, true, true, false, true, Wait),
            (false, true, true, false, false, Answer),
            // An attempt that hit its per-try timeout is never retried itself.
            (true, true, true, true, true, Wait),
            (true, true, true, true, false, Answer),
            // A reset waits for the others even when not retriable.
            (false, false, false, true, true, Wait),
            (true, false, false, true, false, Answer),
        ];
        for (retried, response, would, can, others, want) in table {
            let mut asked = false;
            let got = verdict(
                retried,
                response,
                would,
                || {
                    asked = true;
                    can
                },
                others,
            );
            assert_eq!(got, want, "{retried} {response} {would} {can} {others}");
            // The retry budget is only spent on an answer that would be retried.
            assert!(!asked || (would && !retried));
        }
    }
}
