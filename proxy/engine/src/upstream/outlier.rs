//! Outlier detection as Envoy's `DetectorHostMonitorImpl`: per host, consecutive 5xx,
//! consecutive gateway errors (502, 503, 504) and, with `split_external_local_origin_errors`,
//! consecutive local-origin failures (connect failures, resets, timeouts; without the split
//! they count as a 503 / 504). A count that reaches its threshold exactly is a detection: unless
//! the host is already ejected, the count restarts, and the host is ejected with the
//! `enforcing_*` percent's chance, within `max_ejection_percent`. Ejection times follow
//! Envoy's backoff and cap: a host comes back only at an outlier sweep (every `interval` from
//! the cluster's creation) at least `base_ejection_time x backoff` (at most
//! `max_ejection_time`) after its ejection, and each sweep that finds it in service lowers its
//! backoff by one. The sweeps are computed, not run: no timer task per cluster.

use std::sync::atomic::{AtomicU32, Ordering};

use super::{now_ms, Cluster, Host, OutlierSpec};

/// What an attempt's end tells outlier detection about its host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostResult {
    /// A response with this status.
    Status(u16),
    /// The connection failed, was reset or timed out (a local-origin failure; Envoy counts a
    /// connect failure or reset as a 503 and a timeout as a 504 unless split).
    LocalOrigin {
        /// A timeout (504 when not split), not a connect failure or reset (503).
        timeout: bool,
    },
}

impl HostResult {
    /// A 5xx response or a local-origin failure (the host's `rq_error`).
    pub fn failed(self) -> bool {
        match self {
            Self::Status(s) => s >= 500,
            Self::LocalOrigin { .. } => true,
        }
    }
}

/// Which count reached its threshold.
#[derive(Debug, Clone, Copy)]
enum Detected {
    Consecutive5xx,
    Gateway,
    LocalOrigin,
}

/// Records one attempt's result on `host` and ejects it on a detection (module doc).
pub fn record(cluster: &Cluster, spec: &OutlierSpec, host: &Host, result: HostResult) {
    super::success_rate::sweep_if_due(cluster, spec, now_ms());
    count_success_rate(spec, host, result);
    let status = match result {
        HostResult::LocalOrigin { .. } if spec.split_local_origin => {
            if bump(&host.consecutive_local) == spec.consecutive_local_origin_failure {
                detected(cluster, spec, host, Detected::LocalOrigin);
            }
            return;
        }
        HostResult::LocalOrigin { timeout } => {
            if timeout {
                504
            } else {
                503
            }
        }
        HostResult::Status(s) => {
            // With the split, a response ends a run of local-origin failures.
            if spec.split_local_origin {
                host.consecutive_local.store(0, Ordering::Relaxed);
            }
            s
        }
    };
    if status < 500 {
        host.consecutive_5xx.store(0, Ordering::Relaxed);
        host.consecutive_gateway.store(0, Ordering::Relaxed);
        return;
    }
    if matches!(status, 502..=504) {
        if bump(&host.consecutive_gateway) == spec.consecutive_gateway_failure {
            detected(cluster, spec, host, Detected::Gateway);
        }
    } else {
        host.consecutive_gateway.store(0, Ordering::Relaxed);
    }
    if bump(&host.consecutive_5xx) == spec.consecutive_5xx {
        detected(cluster, spec, host, Detected::Consecutive5xx);
    }
}

/// Counts `result` in the host's success-rate monitors (Envoy's: a response below 500 is an
/// external success; with the split a response is a local-origin success and a local-origin
/// failure counts only there, without it the failure is a 503 / 504).
fn count_success_rate(spec: &OutlierSpec, host: &Host, result: HostResult) {
    match result {
        HostResult::Status(s) => {
            host.sr_external.count(s < 500);
            if spec.split_local_origin {
                host.sr_local.count(true);
            }
        }
        HostResult::LocalOrigin { .. } if spec.split_local_origin => host.sr_local.count(false),
        HostResult::LocalOrigin { .. } => host.sr_external.count(false),
    }
}

/// Adds one to a count, returning the new value.
fn bump(count: &AtomicU32) -> u32 {
    count.fetch_add(1, Ordering::Relaxed).saturating_add(1)
}

/// A detection (Envoy's `onConsecutiveErrorWorker` and `ejectHost`).
fn detected(cluster: &Cluster, spec: &OutlierSpec, host: &Host, kind: Detected) {
    let now = now_ms();
    if host.is_ejected(now) {
        return;
    }
    let (count, enforcing) = match kind {
        Detected::Consecutive5xx => (&host.consecutive_5xx, spec.enforcing_consecutive_5xx),
        Detected::Gateway => (
            &host.consecutive_gateway,
            spec.enforcing_consecutive_gateway_failure,
        ),
        Detected::LocalOrigin => (
            &host.consecutive_local,
            spec.enforcing_consecutive_local_origin_failure,
        ),
    };
    count.store(0, Ordering::Relaxed);
    try_eject(cluster, spec, host, now, enforcing);
}

/// Envoy's `ejectHost`: ejects `host` (unless already ejected) within `max_ejection_percent`,
/// with the `enforcing_*` percent's chance.
pub(super) fn try_eject(
    cluster: &Cluster,
    spec: &OutlierSpec,
    host: &Host,
    now: u64,
    enforcing: u32,
) {
    if host.is_ejected(now) {
        return;
    }
    let hosts = cluster.all_hosts();
    let ejected = hosts.iter().filter(|h| h.is_ejected(now)).count();
    // Envoy ejects only while the ejected share, this host included, stays within
    // max_ejection_percent (two hosts and the default 10% eject none), unless
    // always_eject_one_host lets the first one go.
    let first_allowed = spec.always_eject_one_host && ejected == 0;
    if (ejected + 1) * 100 > hosts.len() * spec.max_ejection_percent as usize && !first_allowed {
        return;
    }
    // The `enforcing_*` percent: Envoy's `featureEnabled` draw.
    if enforcing < 100 && (enforcing == 0 || rand::random::<u32>() % 100 >= enforcing) {
        return;
    }
    eject(cluster, spec, host, now);
}

/// Ejects `host` for its backoff's ejection time.
fn eject(cluster: &Cluster, spec: &OutlierSpec, host: &Host, now: u64) {
    let max = spec.max_ejection_time.max(spec.base_ejection_time);
    let backoff = next_backoff(
        host.eject_backoff.load(Ordering::Relaxed),
        host.ejected_until.load(Ordering::Relaxed),
        now,
        cluster.outlier_epoch_ms,
        spec,
    );
    host.eject_backoff.store(backoff, Ordering::Relaxed);
    // Saturating: a long base_ejection_time times many ejections must not overflow.
    // `max_ejection_time_jitter`: Envoy's random share on top, drawn per ejection (up to and
    // including the maximum).
    let jitter_ms = u64::try_from(spec.max_ejection_time_jitter.as_millis()).unwrap_or(u64::MAX);
    let jitter = match jitter_ms {
        0 => std::time::Duration::ZERO,
        j => std::time::Duration::from_millis(rand::random::<u64>() % j.saturating_add(1)),
    };
    let dur = spec.base_ejection_time.saturating_mul(backoff).min(max) + jitter;
    let until = back_at(
        now,
        u64::try_from(dur.as_millis()).unwrap_or(u64::MAX),
        cluster.outlier_epoch_ms,
        interval_ms(spec),
    );
    host.ejected_until.store(until, Ordering::Relaxed);
    cluster.stats.outlier_ejections.inc();
    tracing::info!(cluster = %cluster.spec.name, host = %host.addr, ms = until - now, "outlier ejected host");
}

/// Brings `host` back if it is ejected (a passing active health check, Envoy's `unejectHost`):
/// its backoff stays, and it lowers at the sweeps that find the host in service.
pub(super) fn uneject(cluster: &Cluster, host: &Host) {
    let now = now_ms();
    if host.is_ejected(now) {
        // Back from now: the backoff counts the sweeps in service from here.
        host.ejected_until.store(now, Ordering::Relaxed);
        tracing::info!(cluster = %cluster.spec.name, host = %host.addr, "health check passed: outlier ejection ended");
    }
}

pub(super) fn interval_ms(spec: &OutlierSpec) -> u64 {
    u64::try_from(spec.interval.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// The backoff of a host ejected at `now`: the last one, less one per sweep since the sweep that
/// returned the host (at `returned`, 0 if never ejected), plus one while `base x backoff` stays
/// below `max_ejection_time + base` (Envoy's `ejectHost`).
fn next_backoff(last: u32, returned: u64, now: u64, epoch: u64, spec: &OutlierSpec) -> u32 {
    let iv = interval_ms(spec);
    let sweeps = |t: u64| t.saturating_sub(epoch) / iv;
    let mut backoff = last;
    if backoff > 0 && returned > 0 {
        let in_service = sweeps(now).saturating_sub(sweeps(returned));
        backoff = backoff.saturating_sub(u32::try_from(in_service).unwrap_or(u32::MAX));
    }
    let max = spec.max_ejection_time.max(spec.base_ejection_time);
    if spec.base_ejection_time.saturating_mul(backoff) < max.saturating_add(spec.base_ejection_time)
    {
        backoff += 1;
    }
    backoff
}

/// The first sweep (`epoch + k x interval`) at least `dur_ms` after `now`.
fn back_at(now: u64, dur_ms: u64, epoch: u64, iv: u64) -> u64 {
    let due = now.saturating_add(dur_ms).saturating_sub(epoch);
    epoch.saturating_add(due.div_ceil(iv).saturating_mul(iv))
}

#[cfg(test)]
#[path = "outlier_tests.rs"]
mod detector_tests;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn spec(interval: u64, base: u64, max: u64) -> OutlierSpec {
        OutlierSpec {
            consecutive_5xx: 1,
            interval: Duration::from_millis(interval),
            base_ejection_time: Duration::from_millis(base),
            max_ejection_percent: 100,
            max_ejection_time: Duration::from_millis(max),
            ..OutlierSpec::default()
        }
    }

    #[test]
    fn a_host_returns_at_the_first_sweep_after_its_ejection_time() {
        // Sweeps every 500 ms from 1000: ejected at 1300 for 200 ms -> back at the 1500 sweep;
        // for 300 ms -> 1600 is no sweep, back at 2000.
        assert_eq!(back_at(1300, 200, 1000, 500), 1500);
        assert_eq!(back_at(1300, 300, 1000, 500), 2000);
        assert_eq!(back_at(1300, 700, 1000, 500), 2000);
        // The default 10 s interval keeps a 200 ms ejection for up to 10 s.
        assert_eq!(back_at(1300, 200, 1000, 10_000), 11_000);
    }

    #[test]
    fn the_backoff_grows_per_ejection_and_shrinks_per_sweep_in_service() {
        let s = spec(1000, 100, 300);
        assert_eq!(next_backoff(0, 0, 5_000, 0, &s), 1);
        // Ejected again right at the sweep that returned it: 1 -> 2.
        assert_eq!(next_backoff(1, 5_000, 5_500, 0, &s), 2);
        // Two sweeps in service (6000, 7000) after returning at 5000: 2 -> 0 -> 1.
        assert_eq!(next_backoff(2, 5_000, 7_100, 0, &s), 1);
        // Growth stops once base x backoff reaches max + base (100 x 4 = 400 = 300 + 100).
        assert_eq!(next_backoff(3, 5_000, 5_100, 0, &s), 4);
        assert_eq!(next_backoff(4, 5_000, 5_100, 0, &s), 4);
    }
}
