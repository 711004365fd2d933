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
    weights: &'w [u32],
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
            deadline: self.now + 1.0 / f64::from(self.weights[e.host as usize]),
            order: self.order,
            host: e.host,
        });
        self.order += 1;
        e.host
    }
}

/// Envoy's scheduler after `picks` picks: each host's share of the picks is emulated at once
/// (its floor, with the epsilon-augmented weights), the rest picked one by one.
fn with_picks(weights: &[u32], picks: u32) -> Scheduler<'_> {
    let picks = picks % MAX_PICKS;
    let aug = |w: u32| f64::from(w) + EMULATION_EPSILON;
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
    let mut s = with_picks(weights, picks);
    Some((0..total).map(|_| s.pick()).collect())
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
    fn no_round_where_envoy_has_no_scheduler() {
        assert_eq!(round(&[2, 2, 2], 7), None);
        assert_eq!(round(&[9], 7), None);
        assert_eq!(round(&[1, 0], 7), None);
        assert_eq!(round(&[70_000, 1], 7), None);
    }
}
