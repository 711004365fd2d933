//! Envoy's weighted round robin order, precomputed: Envoy 1.40 picks weighted ROUND_ROBIN hosts
//! with an earliest-deadline-first scheduler (every host is due at its last pick time plus
//! 1 / weight; ties go to the entry queued first), started as if a random number of picks had
//! already been made (`EdfScheduler::createWithPicks` with the balancer's random seed). This
//! module runs that scheduler once per host set, for one full round (sum of weights picks), so
//! a pick on the hot path is one table lookup: the same order as Envoy for its first round, then
//! the round repeats.

use std::{cmp::Ordering, collections::BinaryHeap};

/// Longest round precomputed (as many entries as a maglev table); longer rounds (a larger sum
/// of weights) use the plain cumulative-weight round robin instead.
pub const MAX_ROUND: u64 = 65536;
/// Envoy bounds the initial picks to `u32::MAX / 10`.
const MAX_PICKS: u32 = 429_496_729;
/// Envoy adds this to every weight while emulating the initial picks (so that weights that are
/// multiples of each other emulate exactly).
const EMULATION_EPSILON: f64 = 1e-13;

/// One queued host: due at `deadline`, FIFO among equal deadlines by `order`.
#[derive(Debug, Clone, Copy)]
struct Entry {
    deadline: f64,
    order: u64,
    host: u32,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    /// Reversed, so that `BinaryHeap` (a max-heap) pops the earliest deadline, then lowest order.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .deadline
            .total_cmp(&self.deadline)
            .then(other.order.cmp(&self.order))
    }
}

/// The scheduler state: the current time, the next FIFO order and the queue.
struct Scheduler<'w> {
    weights: &'w [f64],
    now: f64,
    order: u64,
    queue: BinaryHeap<Entry>,
}

impl Scheduler<'_> {
    /// Picks the host due first and queues it again at its pick time + 1 / weight.
    fn pick(&mut self) -> u32 {
        let Some(e) = self.queue.pop() else {
            return 0;
        };
        self.now = e.deadline;
        self.queue.push(Entry {
            deadline: self.now + 1.0 / self.weights[e.host as usize],
            order: self.order,
            host: e.host,
        });
        self.order += 1;
        e.host
    }
}

/// Envoy's scheduler after `picks` picks: each host's share of the picks is emulated at once
/// (its floor, with the epsilon-augmented weights), the rest picked one by one.
fn with_picks(weights: &[f64], picks: u32) -> Scheduler<'_> {
    let picks = picks % MAX_PICKS;
    let aug = |w: f64| w + EMULATION_EPSILON;
    let sum = weights.iter().fold(0.0, |s, w| s + aug(*w));
    let share = f64::from(picks) / sum;
    let mut now = 0.0f64;
    let mut done = 0u32;
    let mut queue = BinaryHeap::with_capacity(weights.len());
    for (i, w) in weights.iter().enumerate() {
        let w = aug(*w);
        let mut floor = (w * f64::from(picks) / sum) as u32;
        if floor > 0 && f64::from(floor) / w >= share {
            floor -= 1;
        }
        now = now.max(f64::from(floor) / w);
        queue.push(Entry {
            deadline: f64::from(floor + 1) / w,
            order: i as u64,
            host: i as u32,
        });
        done += floor;
    }
    let mut s = Scheduler {
        weights,
        now,
        order: weights.len() as u64,
        queue,
    };
    for _ in done..picks {
        s.pick();
    }
    s
}

/// The host indexes of one round of Envoy's weighted round robin over `weights` (config order),
/// started after `picks` emulated picks (Envoy: its balancer's random seed). None when Envoy uses
/// no scheduler (fewer than two hosts, or all weights equal: plain round robin), a weight is 0,
/// or the round is longer than [`MAX_ROUND`].
pub fn round(weights: &[u32], picks: u32) -> Option<Vec<u32>> {
    if weights.len() < 2 || weights.iter().all(|w| *w == weights[0]) || weights.contains(&0) {
        return None;
    }
    let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
    if total > MAX_ROUND {
        return None;
    }
    let weights: Vec<f64> = weights.iter().map(|w| f64::from(*w)).collect();
    let mut s = with_picks(&weights, picks);
    Some((0..total).map(|_| s.pick()).collect())
}

/// `len` picks of Envoy's EDF scheduler over positive real `weights` (Envoy's locality scheduler,
/// which runs even for one entry or equal weights), started after `picks` emulated picks.
pub fn picks(weights: &[f64], picks: u32, len: usize) -> Vec<u32> {
    if weights.is_empty() {
        return Vec::new();
    }
    let mut s = with_picks(weights, picks);
    (0..len).map(|_| s.pick()).collect()
}

/// The length of one round of EDF picks over `weights`: the sum of the weights scaled to the
/// smallest whole numbers (each entry's pick count per round), when that sum is at most
/// [`MAX_ROUND`]; otherwise [`MAX_ROUND`] (a round that only approximates the weights).
pub fn round_len(weights: &[f64]) -> usize {
    const CLOSE: f64 = 1e-9;
    for k in 1..=10_000u32 {
        let k = f64::from(k);
        let scaled: f64 = weights.iter().map(|w| w * k).sum();
        if scaled > MAX_ROUND as f64 + CLOSE {
            break;
        }
        if weights
            .iter()
            .all(|w| ((w * k) - (w * k).round()).abs() < CLOSE)
        {
            let whole = || weights.iter().map(|w| (w * k).round() as u64);
            let g = whole().fold(0, gcd).max(1);
            return (whole().sum::<u64>() / g) as usize;
        }
    }
    MAX_ROUND as usize
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_to_one_interleaves_from_each_start() {
        // Envoy's order for weights 3 and 1 (0 = the weight-3 host), by emulated picks.
        let expected: [&[u32]; 4] = [&[0, 0, 1, 0], &[0, 1, 0, 0], &[1, 0, 0, 0], &[0, 0, 0, 1]];
        for (picks, want) in expected.iter().enumerate() {
            assert_eq!(
                round(&[3, 1], picks as u32).unwrap(),
                *want,
                "picks {picks}"
            );
            let far = picks as u32 + 4 * 1_000_000;
            assert_eq!(round(&[3, 1], far).unwrap(), *want, "picks {far}");
        }
    }

    #[test]
    fn a_round_gives_each_host_its_weight() {
        let weights = [5, 2, 7, 1];
        let r = round(&weights, 12345).unwrap();
        for (i, w) in weights.iter().enumerate() {
            assert_eq!(r.iter().filter(|h| **h == i as u32).count(), *w as usize);
        }
    }

    #[test]
    fn real_weights_pick_like_whole_ones_and_rounds_cover_them() {
        for p in 0..4 {
            assert_eq!(picks(&[3.0, 1.0], p, 4), round(&[3, 1], p).unwrap());
        }
        // Equal weights (Envoy still schedules localities): one each per round.
        let r = picks(&[2.0, 2.0, 2.0], 5, 3);
        let mut sorted = r.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![0, 1, 2]);
        assert_eq!(round_len(&[1.0, 3.0]), 4);
        assert_eq!(round_len(&[1.0, 0.7]), 17);
        assert_eq!(round_len(&[2.0, 2.0]), 2);
        assert_eq!(round_len(&[1.0, 1.0 / 3.0]), 4);
        assert_eq!(round_len(&[1.0, std::f64::consts::PI]), MAX_ROUND as usize);
        let r = picks(&[1.0, 0.7], 0, 17);
        assert_eq!(r.iter().filter(|l| **l == 1).count(), 7);
    }

    #[test]
    fn no_round_where_envoy_has_no_scheduler() {
        assert_eq!(round(&[2, 2, 2], 7), None);
        assert_eq!(round(&[9], 7), None);
        assert_eq!(round(&[1, 0], 7), None);
        assert_eq!(round(&[70_000, 1], 7), None);
    }
}
