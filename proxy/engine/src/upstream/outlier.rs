//! Outlier detection: consecutive 5xx ejection with Envoy's growing ejection time and cap.

use std::sync::atomic::Ordering;

use super::{now_ms, Cluster, Host, OutlierSpec};

/// Records one request outcome; ejects the host when it reaches `consecutive_5xx` failures in a row
/// and the cluster's ejection budget allows it. Ejection ends by itself (checked lazily by the
/// balancer against the stored deadline), so a host returns without a timer task.
pub fn record(cluster: &Cluster, spec: &OutlierSpec, host: &Host, failed: bool) {
    if !failed {
        host.consecutive_5xx.store(0, Ordering::Relaxed);
        return;
    }
    let n = host.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1;
    if n < spec.consecutive_5xx.max(1) {
        return;
    }
    let now = now_ms();
    if host.is_ejected(now) {
        return;
    }
    let hosts = cluster.all_hosts();
    let ejected = hosts.iter().filter(|h| h.is_ejected(now)).count();
    // Envoy ejects only while the ejected share, this host included, stays within
    // max_ejection_percent (without always_eject_one_host, which is rejected): two hosts and
    // the default 10% eject none.
    if (ejected + 1) * 100 > hosts.len() * spec.max_ejection_percent as usize {
        return;
    }
    let times = host.ejections.fetch_add(1, Ordering::Relaxed) + 1;
    // Saturating: a long base_ejection_time times many ejections must not overflow.
    let dur = (spec.base_ejection_time.saturating_mul(times))
        .min(spec.max_ejection_time.max(spec.base_ejection_time));
    host.ejected_until.store(
        now.saturating_add(u64::try_from(dur.as_millis()).unwrap_or(u64::MAX)),
        Ordering::Relaxed,
    );
    host.consecutive_5xx.store(0, Ordering::Relaxed);
    cluster.stats.outlier_ejections.inc();
    tracing::info!(cluster = %cluster.spec.name, host = %host.addr, ms = dur.as_millis() as u64, "outlier ejected host");
}
