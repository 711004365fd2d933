//! The HCM's `request_timeout`, as Envoy: the whole request must arrive within it. The timer
//! starts with the request and is disarmed when the downstream body has ended (read to its last
//! byte on its way upstream) or when the response starts. If it fires first, the request gets
//! `408 request timeout` and, its body unread, an HTTP/1 connection is closed. A request that
//! came without a body never starts the timer, so it costs nothing there.

use std::{
    future::Future,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

/// One request's timer: its deadline and the flag its body sets at its end.
pub(crate) struct RequestTimer {
    deadline: Instant,
    end: Arc<AtomicBool>,
}

impl RequestTimer {
    /// The timer of a request that started at `start`, when the HCM sets `timeout` and the
    /// request has a body still to come (`None` otherwise).
    pub(crate) fn start(
        timeout: Option<Duration>,
        body_pending: bool,
        start: Instant,
    ) -> Option<Self> {
        let t = timeout.filter(|_| body_pending)?;
        Some(Self {
            deadline: start + t,
            end: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The flag the body sets when it has been read to its end (given to the forward path).
    pub(crate) fn end_flag(&self) -> Arc<AtomicBool> {
        self.end.clone()
    }

    /// Runs `run` (the request until its response starts): `None` when the deadline passed
    /// before the body ended and before `run` finished (it is dropped, so the upstream request
    /// is cancelled).
    pub(crate) async fn bound<F: Future>(&self, run: F) -> Option<F::Output> {
        let expired = async {
            tokio::time::sleep_until(self.deadline.into()).await;
            if self.end.load(Ordering::Acquire) {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            o = run => Some(o),
            () = expired => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};

    use super::*;
    use crate::http::request_body_tap::Tapped;

    #[test]
    fn no_timeout_or_no_body_starts_no_timer() {
        let now = Instant::now();
        assert!(RequestTimer::start(None, true, now).is_none());
        assert!(RequestTimer::start(Some(Duration::from_secs(1)), false, now).is_none());
        assert!(RequestTimer::start(Some(Duration::from_secs(1)), true, now).is_some());
    }

    #[tokio::test]
    async fn fires_while_the_body_is_pending_and_not_after_it_ended() {
        let t = RequestTimer::start(Some(Duration::from_millis(30)), true, Instant::now())
            .expect("timer");
        assert_eq!(t.bound(std::future::pending::<()>()).await, None);

        let t = RequestTimer::start(Some(Duration::from_millis(30)), true, Instant::now())
            .expect("timer");
        let mut body = Tapped::new(
            Full::new(Bytes::from_static(b"abc")),
            Some(t.end_flag()),
            None,
        );
        assert_eq!(
            body.frame().await.unwrap().unwrap().into_data().unwrap(),
            "abc"
        );
        assert!(t.end.load(Ordering::Acquire), "the body ended");
        // The response comes after the deadline: the timer was disarmed by the body's end.
        let late = async {
            tokio::time::sleep(Duration::from_millis(90)).await;
            7
        };
        assert_eq!(t.bound(late).await, Some(7));
    }
}
