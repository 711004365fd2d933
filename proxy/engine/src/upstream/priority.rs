//! Envoy's priority levels: which level (and which of its host sources) serves a request.
//!
//! A level's health is its healthy share of hosts (or of host weight, with
//! `weighted_priority_health`) times the overprovisioning factor (140 % by default), capped at
//! 100; the same for its degraded hosts. Levels take load in priority order, as much as their
//! health allows of what the higher levels left (scaled up when the sum of every level's health
//! is under 100); degraded hosts take what healthy ones could not. A level is in panic (every host
//! a candidate) when the levels together are below 100 and its own healthy plus degraded share is
//! below `healthy_panic_threshold`; when every level is in panic, load follows host counts. A draw
//! in [1, 100] walks the cumulative healthy loads, then the degraded ones.
//! `DRAINING` hosts are excluded: they count in no level's health or panic share.

use smallvec::SmallVec;

/// What one level holds right now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LevelCounts {
    /// Hosts, excluded ones too.
    pub hosts: u64,
    /// Hosts that are not excluded.
    pub counted: u64,
    /// Healthy hosts.
    pub healthy: u64,
    /// Degraded hosts.
    pub degraded: u64,
    /// Weights of the counted, healthy and degraded hosts (for `weighted_priority_health`).
    pub counted_weight: u64,
    /// See `counted_weight`.
    pub healthy_weight: u64,
    /// See `counted_weight`.
    pub degraded_weight: u64,
}

/// Which hosts of the chosen level may take the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Healthy hosts.
    Healthy,
    /// Degraded hosts.
    Degraded,
    /// Every host of the level (panic).
    All,
}

/// The level chosen for a request and its host source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick {
    /// Index into the levels (in priority order).
    pub level: usize,
    /// Hosts to pick from.
    pub source: Source,
}

/// The knobs of the computation.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Percent (Envoy's default 140).
    pub overprovisioning_factor: u64,
    /// Health by weight instead of by host count.
    pub weighted: bool,
    /// `healthy_panic_threshold`, whole percent (0 disables panic).
    pub panic_threshold: u64,
}

/// Envoy's per-level load: healthy load, degraded load, panic.
type Loads = SmallVec<[(u32, u32, bool); 4]>;

/// Chooses a level for `draw` (a hash or a random number).
pub fn pick(levels: &[LevelCounts], params: Params, draw: u64) -> Pick {
    if let [only] = levels {
        if only.degraded == 0 {
            // The common case: one level takes all the load; only its panic is in question.
            return pick_at(0, Source::Healthy, single_panic(only, params));
        }
    }
    let loads = loads(levels, params);
    let d = (draw % 100 + 1) as u32;
    let mut acc = 0u32;
    for (i, (healthy, _, panic)) in loads.iter().enumerate() {
        acc += healthy;
        if d <= acc {
            return pick_at(i, Source::Healthy, *panic);
        }
    }
    for (i, (_, degraded, panic)) in loads.iter().enumerate() {
        acc += degraded;
        if d <= acc {
            return pick_at(i, Source::Degraded, *panic);
        }
    }
    pick_at(0, Source::Healthy, loads.first().is_some_and(|l| l.2))
}

fn pick_at(level: usize, source: Source, panic: bool) -> Pick {
    Pick {
        level,
        source: if panic { Source::All } else { source },
    }
}

/// [`loads`]' panic verdict for a lone level without degraded hosts.
fn single_panic(l: &LevelCounts, p: Params) -> bool {
    let (healthy, whole) = if p.weighted {
        (l.healthy_weight, l.counted_weight)
    } else {
        (l.healthy, l.counted)
    };
    health(healthy, whole, p.overprovisioning_factor) != 100
        && share(l.healthy, l.counted) < p.panic_threshold as f64
}

/// `n` of `counted` hosts, in percent (0 without hosts).
fn share(n: u64, counted: u64) -> f64 {
    if counted == 0 {
        0.0
    } else {
        100.0 * n as f64 / counted as f64
    }
}

fn health(part: u64, whole: u64, factor: u64) -> u32 {
    factor
        .saturating_mul(part)
        .checked_div(whole)
        .map_or(0, |h| h.min(100) as u32)
}

/// Every level's (healthy load, degraded load, in panic); loads add up to 100.
fn loads(levels: &[LevelCounts], p: Params) -> Loads {
    let f = p.overprovisioning_factor;
    let avail: SmallVec<[(u32, u32); 4]> = levels
        .iter()
        .map(|l| {
            if p.weighted {
                (
                    health(l.healthy_weight, l.counted_weight, f),
                    health(l.degraded_weight, l.counted_weight, f),
                )
            } else {
                (
                    health(l.healthy, l.counted, f),
                    health(l.degraded, l.counted, f),
                )
            }
        })
        .collect();
    let total: u32 = avail.iter().map(|(h, d)| h + d).sum::<u32>().min(100);
    let mut out: Loads = levels.iter().map(|_| (0, 0, false)).collect();
    if out.is_empty() {
        return out;
    }
    if p.panic_threshold == 0 && total == 0 {
        out[0].0 = 100;
        return out;
    }
    let mut all_panic = true;
    for (o, l) in out.iter_mut().zip(levels) {
        o.2 = total != 100
            && share(l.healthy, l.counted) + share(l.degraded, l.counted)
                < p.panic_threshold as f64;
        all_panic &= o.2;
    }
    if all_panic {
        let hosts: u64 = levels.iter().map(|l| l.hosts).sum();
        if hosts == 0 {
            out[0].0 = 100;
            return out;
        }
        let mut left = 100u32;
        for (o, l) in out.iter_mut().zip(levels) {
            o.0 = (100 * l.hosts / hosts) as u32;
            left -= o.0;
        }
        if let Some(first) = levels.iter().position(|l| l.hosts > 0) {
            out[first].0 += left;
        }
        return out;
    }
    if total == 0 {
        // No level has health, yet none is in panic (a share at the threshold whose health
        // rounds down to 0): Envoy computes no load and falls back to the first level.
        out[0].0 = 100;
        return out;
    }
    let mut left = 100u32;
    for (o, (h, _)) in out.iter_mut().zip(&avail) {
        o.0 = left.min(h * 100 / total);
        left -= o.0;
    }
    for (o, (_, d)) in out.iter_mut().zip(&avail) {
        o.1 = left.min(d * 100 / total);
        left -= o.1;
    }
    if left > 0 {
        if let Some(i) = avail.iter().position(|(h, _)| *h > 0) {
            out[i].0 += left;
        } else if let Some(i) = avail.iter().position(|(_, d)| *d > 0) {
            out[i].1 += left;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Params = Params {
        overprovisioning_factor: 140,
        weighted: false,
        panic_threshold: 50,
    };

    fn level(total: u64, healthy: u64, degraded: u64) -> LevelCounts {
        LevelCounts {
            hosts: total,
            counted: total,
            healthy,
            degraded,
            counted_weight: total,
            healthy_weight: healthy,
            degraded_weight: degraded,
        }
    }

    fn shares(levels: &[LevelCounts], p: Params) -> Vec<(usize, Source, u32)> {
        let mut v: Vec<(usize, Source, u32)> = Vec::new();
        for d in 0..100 {
            let k = pick(levels, p, d);
            match v.last_mut() {
                Some(last) if last.0 == k.level && last.1 == k.source => last.2 += 1,
                _ => v.push((k.level, k.source, 1)),
            }
        }
        v
    }

    #[test]
    fn a_lone_level_gets_the_general_verdict() {
        for total in 0..12 {
            for healthy in 0..=total {
                for threshold in [0, 50, 80, 100] {
                    let l = level(total, healthy, 0);
                    let p = Params {
                        panic_threshold: threshold,
                        ..P
                    };
                    let panic = loads(&[l], p)[0].2;
                    assert_eq!(
                        single_panic(&l, p),
                        panic,
                        "{healthy}/{total} at {threshold}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_healthy_first_level_takes_everything() {
        let l = [level(4, 3, 0), level(2, 2, 0)];
        // 3/4 x 1.4 = 105 % -> 100.
        assert_eq!(shares(&l, P), vec![(0, Source::Healthy, 100)]);
    }

    #[test]
    fn load_spills_over_as_the_first_level_loses_health() {
        // 1 of 2 healthy: 70 % stays, 30 % spills to P1.
        let l = [level(2, 1, 0), level(1, 1, 0)];
        assert_eq!(
            shares(&l, P),
            vec![(0, Source::Healthy, 70), (1, Source::Healthy, 30)]
        );
        // 1 of 3: 46 %, the rest (54 %) goes to P1.
        let l = [level(3, 1, 0), level(1, 1, 0)];
        assert_eq!(
            shares(&l, P),
            vec![(0, Source::Healthy, 46), (1, Source::Healthy, 54)]
        );
    }

    #[test]
    fn short_levels_are_scaled_up_and_panic_below_the_threshold() {
        // P0 1/3 -> 46, P1 1/4 -> 35: total 81, scaled 56 / 43, +1 to P0. P0 (33 %) and P1
        // (25 %) are both under 50 %: total panic, load by host count 3/7 = 42, 4/7 = 57 (+1).
        let l = [level(3, 1, 0), level(4, 1, 0)];
        assert_eq!(
            shares(&l, P),
            vec![(0, Source::All, 43), (1, Source::All, 57)]
        );
        // Only P1 is under the threshold: P0 keeps its scaled healthy load.
        let l = [level(2, 1, 0), level(4, 1, 0)];
        // 70 + 35 = 105 -> total 100, no panic at all.
        assert_eq!(
            shares(&l, P),
            vec![(0, Source::Healthy, 70), (1, Source::Healthy, 30)]
        );
        let l = [level(5, 3, 0), level(5, 1, 0)];
        // 84 + 28 = 112: no panic; P0 84, P1 16.
        assert_eq!(
            shares(&l, P),
            vec![(0, Source::Healthy, 84), (1, Source::Healthy, 16)]
        );
        let l = [level(10, 5, 0), level(10, 1, 0)];
        // 70 + 14 = 84: scaled 83 / 16 (+1 to P0); P1 at 10 % is in panic, P0 at 50 % is not.
        assert_eq!(
            shares(&l, P),
            vec![(0, Source::Healthy, 84), (1, Source::All, 16)]
        );
    }

    #[test]
    fn health_rounding_to_zero_outside_panic_falls_back_to_the_first_level() {
        // 1 of 2 healthy with an overprovisioning factor of 1: health 0, share 50 %.
        let p = Params {
            overprovisioning_factor: 1,
            ..P
        };
        let l = [level(2, 1, 0), level(2, 1, 0)];
        assert_eq!(shares(&l, p), vec![(0, Source::Healthy, 100)]);
    }

    #[test]
    fn degraded_hosts_take_what_healthy_ones_cannot() {
        let l = [level(2, 1, 1)];
        assert_eq!(
            shares(&l, P),
            vec![(0, Source::Healthy, 70), (0, Source::Degraded, 30)]
        );
    }

    #[test]
    fn no_availability_without_panic_sends_everything_to_the_first_level() {
        let p = Params {
            panic_threshold: 0,
            ..P
        };
        let l = [level(2, 0, 0), level(2, 0, 0)];
        assert_eq!(shares(&l, p), vec![(0, Source::Healthy, 100)]);
        assert_eq!(
            shares(&l, P),
            vec![(0, Source::All, 50), (1, Source::All, 50)]
        );
    }

    #[test]
    fn excluded_hosts_count_in_no_share_and_factor_and_weights_apply() {
        // 1 healthy + 1 draining: 100 % of the counted hosts are healthy.
        let l = [LevelCounts {
            hosts: 2,
            counted: 1,
            healthy: 1,
            counted_weight: 1,
            healthy_weight: 1,
            ..Default::default()
        }];
        assert_eq!(shares(&l, P), vec![(0, Source::Healthy, 100)]);
        let l = [level(2, 1, 0), level(1, 1, 0)];
        let p = Params {
            overprovisioning_factor: 200,
            ..P
        };
        assert_eq!(shares(&l, p), vec![(0, Source::Healthy, 100)]);
        // By weight: the healthy host weighs 1 of 4 -> 35 %.
        let l = [
            LevelCounts {
                counted_weight: 4,
                ..level(2, 1, 0)
            },
            level(1, 1, 0),
        ];
        let p = Params {
            weighted: true,
            ..P
        };
        assert_eq!(
            shares(&l, p),
            vec![(0, Source::Healthy, 35), (1, Source::Healthy, 65)]
        );
    }
}
