//! Slow start (`slow_start_config`, a DestinationRule's `loadBalancer.warmup`), as Envoy's
//! `EdfLoadBalancerBase::applySlowStartFactor`: a host healthy for less than the window gets
//! its weight times `max(time_factor ^ (1 / aggression), min_weight_percent)`, where
//! `time_factor` is the time since it became healthy (at least 1 ms) over the window. While
//! any usable host is in its window the ROUND_ROBIN and LEAST_REQUEST balancers pick by these
//! weights (LEAST_REQUEST's divided by the host's requests in flight + 1, Envoy's
//! `active_request_bias` 1.0), as Envoy switches to its weighted EDF scheduler then; here the
//! pick is a weighted draw, the same shares without a scheduler to rebuild as weights move.
//! Past every window the balancers pick as without slow start.

use std::sync::{atomic::Ordering, Arc};

use rand::Rng;

use super::Host;
use crate::config::SlowStart;

/// The factor applied to a host's weight `elapsed_ms` after it became healthy, `None` past the
/// window.
pub fn factor(s: &SlowStart, elapsed_ms: u64) -> Option<f64> {
    let window = s.window.as_millis() as u64;
    if elapsed_ms >= window {
        return None;
    }
    let t = elapsed_ms.max(1) as f64 / window as f64;
    let scaled = if s.aggression == 1.0 {
        t
    } else {
        t.powf(1.0 / s.aggression)
    };
    Some(scaled.max(s.min_weight))
}

/// A usable host by slow-start weights, or `None` when no usable host is in its window (the
/// balancer's ordinary pick then). Two passes over the hosts, no allocation.
pub fn pick(
    s: &SlowStart,
    hosts: &[Arc<Host>],
    usable: &dyn Fn(usize) -> bool,
    now_ms: u64,
    least_request: bool,
) -> Option<usize> {
    let weight = |i: usize| {
        let h = &hosts[i];
        let elapsed = now_ms.saturating_sub(h.healthy_since.load(Ordering::Relaxed));
        let f = factor(s, elapsed);
        let mut w = f64::from(h.weight) * f.unwrap_or(1.0);
        if least_request {
            w /= (h.active_rq.load(Ordering::Relaxed) + 1) as f64;
        }
        (w, f.is_some())
    };
    let mut total = 0.0;
    let mut warming = false;
    for i in (0..hosts.len()).filter(|i| usable(*i)) {
        let (w, in_window) = weight(i);
        total += w;
        warming |= in_window;
    }
    if !warming || total <= 0.0 {
        return None;
    }
    let mut at = rand::thread_rng().gen_range(0.0..total);
    let mut last = None;
    for i in (0..hosts.len()).filter(|i| usable(*i)) {
        let (w, _) = weight(i);
        if at < w {
            return Some(i);
        }
        at -= w;
        last = Some(i);
    }
    // Rounding (or a host's requests changing between the passes): the last usable host.
    last
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn slow(window_ms: u64, aggression: f64, min_weight: f64) -> SlowStart {
        SlowStart {
            window: Duration::from_millis(window_ms),
            aggression,
            min_weight,
        }
    }

    #[test]
    fn the_factor_grows_with_time_as_envoys() {
        let s = slow(10_000, 1.0, 0.1);
        assert_eq!(factor(&s, 0), Some(0.1), "the minimum weight, at 1 ms");
        assert_eq!(factor(&s, 5_000), Some(0.5));
        assert_eq!(factor(&s, 10_000), None, "past the window");
        // aggression 2: time_factor ^ 0.5.
        let s = slow(10_000, 2.0, 0.0);
        assert!((factor(&s, 2_500).unwrap() - 0.5).abs() < 1e-9);
        // A minimum above the curve holds it up.
        let s = slow(10_000, 1.0, 0.6);
        assert_eq!(factor(&s, 5_000), Some(0.6));
    }

    #[test]
    fn a_host_in_its_window_takes_its_share_of_the_weights() {
        let hosts: Vec<Arc<Host>> = (1..=2)
            .map(|i| Host::new(format!("10.0.0.{i}:80").parse().unwrap(), 1))
            .collect();
        let s = slow(10_000, 1.0, 0.1);
        // Host 0 healthy for ages, host 1 for a quarter of the window: 1 : 0.25.
        let now = 1_000_000;
        hosts[0].healthy_since.store(1, Ordering::Relaxed);
        hosts[1].healthy_since.store(now - 2_500, Ordering::Relaxed);
        let all = |_: usize| true;
        let n = 20_000;
        let new = (0..n)
            .filter(|_| pick(&s, &hosts, &all, now, false) == Some(1))
            .count();
        let share = new as f64 / n as f64;
        assert!((share - 0.2).abs() < 0.02, "share {share}");
        // Past the window: no slow-start pick (the balancer's own).
        assert_eq!(pick(&s, &hosts, &all, now + 10_000, false), None);
        // Not usable: never picked.
        let only0 = |i: usize| i == 0;
        assert_eq!(
            pick(&s, &hosts, &only0, now, false),
            None,
            "host 0 is past its window"
        );
        // LEAST_REQUEST divides by the requests in flight + 1: 1/4 : 0.25 -> even.
        hosts[0].active_rq.store(3, Ordering::Relaxed);
        let new = (0..n)
            .filter(|_| pick(&s, &hosts, &all, now, true) == Some(1))
            .count();
        let share = new as f64 / n as f64;
        assert!((share - 0.5).abs() < 0.03, "share {share}");
    }
}
