//! Success-rate and failure-percentage outlier ejection, as Envoy's detector runs them at each
//! outlier sweep (`processSuccessRateEjections`): each host counts its requests and successes
//! (a response below 500; with `split_external_local_origin_errors` also a local-origin
//! monitor, where a response is a success and a connect failure, reset or timeout a failure);
//! at a sweep every host's counts of the interval just ended are taken, and among the hosts not
//! ejected with enough requests:
//! - success rate (at least `success_rate_minimum_hosts` of them with
//!   `success_rate_request_volume` requests): a host below mean - `stdev_factor` / 1000 x stdev
//!   (population stdev) is ejected with `enforcing_success_rate`'s chance;
//! - failure percentage (at least `failure_percentage_minimum_hosts` with
//!   `failure_percentage_request_volume`): a host failing at least `failure_percentage_threshold`
//!   percent is ejected with `enforcing_failure_percentage`'s chance;
//!
//! both within `max_ejection_percent`, with the ejection time of the consecutive detections.
//!
//! Sweeps are computed, not run (module `outlier`): the first host choice or result after a
//! sweep's time evaluates it, as of that time; counts recorded meanwhile belong to the next
//! interval anyway, since a result is counted only after the sweep it may trigger.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::{Cluster, Host, OutlierSpec};

/// A host's request and success counts since the last sweep, and the success rate the last
/// sweep computed (-1: none, as Envoy's `/clusters`).
#[derive(Debug)]
pub struct SuccessRate {
    total: AtomicU32,
    success: AtomicU32,
    last: AtomicU64,
}

impl Default for SuccessRate {
    fn default() -> Self {
        Self {
            total: AtomicU32::new(0),
            success: AtomicU32::new(0),
            last: AtomicU64::new(NONE),
        }
    }
}

/// -1.0 as bits: no value.
const NONE: u64 = 0xbff0_0000_0000_0000;

impl SuccessRate {
    /// Counts a request.
    pub fn count(&self, success: bool) {
        self.total.fetch_add(1, Ordering::Relaxed);
        if success {
            self.success.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The success rate the last sweep computed for this host (-1: none).
    pub fn last(&self) -> f64 {
        f64::from_bits(self.last.load(Ordering::Relaxed))
    }

    /// Takes the interval's counts (total, successes).
    fn take(&self) -> (u32, u32) {
        (
            self.total.swap(0, Ordering::Relaxed),
            self.success.swap(0, Ordering::Relaxed),
        )
    }
}

/// A cluster's sweeps: the last one evaluated and what it found (Envoy's `/clusters`
/// `outlier::` lines).
#[derive(Debug)]
pub struct Sweeps {
    /// Sweeps evaluated so far (sweep k is at epoch + k x interval).
    done: AtomicU64,
    /// Success rate average and ejection threshold, external then local origin (-1: none).
    found: [AtomicU64; 4],
}

impl Default for Sweeps {
    fn default() -> Self {
        Self {
            done: AtomicU64::new(0),
            found: std::array::from_fn(|_| AtomicU64::new(NONE)),
        }
    }
}

impl Sweeps {
    /// (average, ejection threshold) of the last sweep: external origin, or local origin.
    pub fn success_rate(&self, local: bool) -> (f64, f64) {
        let i = if local { 2 } else { 0 };
        let get = |j: usize| f64::from_bits(self.found[j].load(Ordering::Relaxed));
        (get(i), get(i + 1))
    }
}

/// Which monitor a sweep evaluates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    External,
    Local,
}

/// Evaluates the sweeps due by `now` (at most one: later ones found empty counts).
pub fn sweep_if_due(cluster: &Cluster, spec: &OutlierSpec, now: u64) {
    let iv = super::outlier::interval_ms(spec);
    let due = now.saturating_sub(cluster.outlier_epoch_ms) / iv;
    let sweeps = &cluster.outlier_sweeps;
    let done = sweeps.done.load(Ordering::Acquire);
    if due <= done
        || sweeps
            .done
            .compare_exchange(done, due, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
    {
        return;
    }
    let at = cluster.outlier_epoch_ms + (done + 1) * iv;
    let hosts = cluster.all_hosts();
    evaluate(cluster, spec, &hosts, Origin::External, at);
    if spec.split_local_origin {
        evaluate(cluster, spec, &hosts, Origin::Local, at);
    }
    if due > done + 1 {
        // The sweeps after it found no requests: nothing computed.
        for h in &hosts {
            h.sr_external.last.store(NONE, Ordering::Relaxed);
            h.sr_local.last.store(NONE, Ordering::Relaxed);
        }
        for f in &sweeps.found {
            f.store(NONE, Ordering::Relaxed);
        }
    }
}

/// One monitor's evaluation at the sweep at `at`.
fn evaluate(
    cluster: &Cluster,
    spec: &OutlierSpec,
    hosts: &[std::sync::Arc<Host>],
    o: Origin,
    at: u64,
) {
    let (sr, fp) = (&spec.success_rate, &spec.failure_percentage);
    let mut rated: Vec<(&Host, f64)> = Vec::new();
    let mut failing: Vec<(&Host, f64)> = Vec::new();
    for h in hosts {
        let m = match o {
            Origin::External => &h.sr_external,
            Origin::Local => &h.sr_local,
        };
        let (total, success) = m.take();
        m.last.store(NONE, Ordering::Relaxed);
        if total == 0 || h.is_ejected(at) {
            continue;
        }
        let rate = f64::from(success) * 100.0 / f64::from(total);
        if total >= sr.request_volume.max(1) {
            m.last.store(rate.to_bits(), Ordering::Relaxed);
            rated.push((h, rate));
        }
        if total >= fp.request_volume.max(1) {
            failing.push((h, rate));
        }
    }
    let slot = if o == Origin::Local { 2 } else { 0 };
    let found = &cluster.outlier_sweeps.found;
    found[slot].store(NONE, Ordering::Relaxed);
    found[slot + 1].store(NONE, Ordering::Relaxed);
    if !rated.is_empty() && rated.len() >= sr.minimum_hosts as usize {
        let (mean, threshold) = threshold(&rated, sr.stdev_factor);
        found[slot].store(mean.to_bits(), Ordering::Relaxed);
        found[slot + 1].store(threshold.to_bits(), Ordering::Relaxed);
        let enforcing = match o {
            Origin::External => sr.enforcing,
            Origin::Local => sr.enforcing_local_origin,
        };
        for (h, rate) in &rated {
            if *rate < threshold {
                super::outlier::try_eject(cluster, spec, h, at, enforcing);
            }
        }
    }
    if !failing.is_empty() && failing.len() >= fp.minimum_hosts as usize {
        let enforcing = match o {
            Origin::External => fp.enforcing,
            Origin::Local => fp.enforcing_local_origin,
        };
        for (h, rate) in &failing {
            if 100.0 - rate >= f64::from(fp.threshold) {
                super::outlier::try_eject(cluster, spec, h, at, enforcing);
            }
        }
    }
}

/// Envoy's `successRateEjectionThreshold`: (mean, mean - factor / 1000 x population stdev).
fn threshold(rated: &[(&Host, f64)], stdev_factor: u32) -> (f64, f64) {
    let n = rated.len() as f64;
    let mean = rated.iter().map(|(_, r)| r).sum::<f64>() / n;
    let variance = rated.iter().map(|(_, r)| (r - mean).powi(2)).sum::<f64>() / n;
    (
        mean,
        mean - f64::from(stdev_factor) / 1000.0 * variance.sqrt(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_is_mean_less_factor_stdevs() {
        let h = Host::new("127.0.0.1:1".parse().unwrap(), 1);
        let rated: Vec<(&Host, f64)> = [0.0, 100.0, 100.0, 100.0]
            .iter()
            .map(|r| (&*h, *r))
            .collect();
        // mean 75, population stdev sqrt((75^2 + 3 x 25^2) / 4) = 43.30...
        let (mean, t) = threshold(&rated, 1000);
        assert_eq!(mean, 75.0);
        assert!((t - (75.0 - 43.301_270_189)).abs() < 1e-6, "{t}");
        let (_, t) = threshold(&rated, 1900);
        assert!(t < 0.0, "the default factor ejects nobody here: {t}");
    }
}
