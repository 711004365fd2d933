//! Start-up on a bad host: instead of exiting (a DaemonSet's crash loop), keep the health
//! endpoint up (live, not ready with the reason), log each distinct error once, and retry with
//! a bounded backoff ([`Backoff`]: 1 s doubling to 30 s) so that fixing the host makes the
//! process ready without a restart. SIGTERM/SIGINT while retrying stops cleanly.

use std::{fmt::Display, time::Duration};

use tokio::signal::unix::Signal;
use tracing::{error, info};

use super::health::Health;

/// The first retry's delay.
pub const FIRST_DELAY: Duration = Duration::from_secs(1);
/// The longest delay between two attempts.
pub const MAX_DELAY: Duration = Duration::from_secs(30);

/// 1 s, 2 s, 4 s, ... capped at 30 s.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: FIRST_DELAY }
    }
}

impl Backoff {
    /// The delay before the next attempt (and doubles the one after).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (d * 2).min(MAX_DELAY);
        d
    }

    /// Back to [`FIRST_DELAY`] (after a success).
    pub fn reset(&mut self) {
        self.next = FIRST_DELAY;
    }
}

/// How the retry loop ended.
pub enum Outcome<T> {
    /// An attempt succeeded.
    Started(T),
    /// SIGTERM/SIGINT came first.
    Stopped,
}

/// Calls `attempt` until it succeeds or fails with an error that is not `retryable` (returned);
/// in between, `/healthz/ready` is 503 with the error, which is logged when it differs from the
/// previous one. `what` names the process in the log line ("agent").
pub async fn until_started<T, E: Display>(
    what: &str,
    health: &Health,
    (term, int): (&mut Signal, &mut Signal),
    retryable: impl Fn(&E) -> bool,
    mut attempt: impl FnMut() -> Result<T, E>,
) -> Result<Outcome<T>, E> {
    let mut backoff = Backoff::default();
    let mut last = String::new();
    loop {
        let err = match attempt() {
            Ok(v) => return Ok(Outcome::Started(v)),
            Err(e) if !retryable(&e) => return Err(e),
            Err(e) => e.to_string(),
        };
        let delay = backoff.next_delay();
        if err != last {
            error!(error = %err, retry_in = ?delay, "{what} cannot start on this host: not ready, retrying until the host is fixed (no restart needed)");
        }
        health.set_not_ready(&err);
        last = err;
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    info!("{what} stopped before it could start");
    Ok(Outcome::Stopped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut b = Backoff::default();
        let secs: Vec<u64> = (0..7).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30]);
        b.reset();
        assert_eq!(b.next_delay(), FIRST_DELAY);
    }
}
