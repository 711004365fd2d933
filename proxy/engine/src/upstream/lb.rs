//! Load balancers: weighted round robin, least request (P2C), random, ring hash and maglev.
//!
//! A request first gets a priority level and a host source ([`priority`](super::priority):
//! Envoy's spill-over, degraded load and panic, from the request hash for hashing balancers, a
//! random number otherwise), then a host of that level. In panic every host of the level is a
//! candidate (or, with `zone_aware_lb_config.fail_traffic_on_panic`, none, except for ring hash
//! and maglev, which ignore it as Envoy's do). Weighted round robin
//! follows Envoy's EDF order (`edf.rs`) while every host of the source is usable; otherwise it
//! falls back to cumulative weights over the usable hosts. Ring hash and maglev walk their
//! table (built over the level's healthy hosts, or every host in panic) past unusable hosts;
//! as in Envoy they take their level's healthy hosts even when the level was chosen for its
//! degraded load.

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use std::fmt::Write as _;

use rand::Rng;

use smallvec::SmallVec;

use super::{
    locality::{Eligible, LevelView},
    now_ms,
    priority::{self, LevelCounts, Source},
    EndpointHealth, Host, HostSet, LbContext, LbKind,
};
use crate::config::ClusterOptions;

/// Maglev table size (Envoy's default, a prime).
pub const MAGLEV_TABLE_SIZE: usize = 65537;
/// Ring hash upper bound on ring entries.
pub const MAX_RING_SIZE: u64 = 8 * 1024 * 1024;

/// Precomputed pick structure: host indexes ordered for lookup.
#[derive(Debug)]
pub enum HashTable {
    /// Sorted (hash, host index) ring.
    Ring(Vec<(u64, u32)>),
    /// Maglev lookup table of host indexes.
    Maglev(Vec<u32>),
    /// One round of Envoy's weighted round robin (host indexes in pick order, `edf::round`).
    Round(Vec<u32>),
}

/// Envoy's request and ring hash: XXH64 with seed 0.
pub fn hash_bytes(data: &[u8]) -> u64 {
    super::xxhash::xxh64(data, 0)
}

impl HashTable {
    /// Builds the ring or table a hashing balancer needs; None for other balancers or no hosts.
    pub fn build(kind: &LbKind, hosts: &[Arc<Host>]) -> Option<Self> {
        if hosts.is_empty() {
            return None;
        }
        match kind {
            LbKind::RingHash { .. } | LbKind::Maglev { .. } => {
                // Envoy's normalizeHostWeights: each host's share of the weights.
                let total: f64 = hosts.iter().map(|h| f64::from(h.weight)).sum();
                let weights: Vec<f64> = hosts
                    .iter()
                    .map(|h| f64::from(h.weight) * 1.0 / total)
                    .collect();
                Some(Self::hashing(kind, hosts, &weights))
            }
            LbKind::RoundRobin => {
                let weights: Vec<u32> = hosts.iter().map(|h| h.weight).collect();
                // Envoy's seed is a random u64 passed on as the u32 number of initial picks.
                super::edf::round(&weights, rand::random::<u64>() as u32).map(Self::Round)
            }
            _ => None,
        }
    }

    /// The ring or maglev table over `hosts` with normalized `weights` (summing to at most 1;
    /// locality-weighted levels leave out localities without weight). Empty without hosts (no
    /// host for any hash, as Envoy's empty table).
    pub fn hashing(kind: &LbKind, hosts: &[Arc<Host>], weights: &[f64]) -> Self {
        match kind {
            LbKind::Maglev { table_size } if !hosts.is_empty() => {
                Self::Maglev(maglev_table(hosts, weights, *table_size))
            }
            LbKind::Maglev { .. } => Self::Maglev(Vec::new()),
            LbKind::RingHash {
                min_ring_size,
                max_ring_size,
            } => Self::Ring(ring(
                hosts,
                weights,
                *min_ring_size,
                (*max_ring_size).min(MAX_RING_SIZE),
            )),
            _ => Self::Ring(Vec::new()),
        }
    }

    /// The table with host index `i` replaced by `members[i]` (a table built over a subset of
    /// hosts, made to index the whole list).
    pub fn remap(self, members: &[u32]) -> Self {
        let m = |i: u32| members[i as usize];
        match self {
            Self::Ring(v) => Self::Ring(v.into_iter().map(|(h, i)| (h, m(i))).collect()),
            Self::Maglev(v) => Self::Maglev(v.into_iter().map(m).collect()),
            Self::Round(v) => Self::Round(v.into_iter().map(m).collect()),
        }
    }
}

/// Envoy's ring: `min(ceil(w_min * min_ring_size) / w_min, max)` points (w = normalized weights),
/// handed out by running sums of `scale * w` in host order, point `i` of a host at
/// XXH64("<address>_<i>"), sorted by hash.
fn ring(
    hosts: &[Arc<Host>],
    weights: &[f64],
    min_ring_size: u64,
    max_ring_size: u64,
) -> Vec<(u64, u32)> {
    if hosts.is_empty() {
        return Vec::new();
    }
    let min_w = weights.iter().copied().fold(1.0, f64::min);
    let scale = ((min_w * min_ring_size as f64).ceil() / min_w).min(max_ring_size as f64);
    let mut ring = Vec::with_capacity(scale.ceil() as usize);
    let (mut current, mut target) = (0.0f64, 0.0f64);
    let mut key = String::new();
    for (i, (h, w)) in hosts.iter().zip(weights).enumerate() {
        target += scale * w;
        let mut n = 0u64;
        while current < target {
            key.clear();
            let _ = write!(key, "{}_{n}", h.addr);
            ring.push((hash_bytes(key.as_bytes()), i as u32));
            n += 1;
            current += 1.0;
        }
    }
    ring.sort_unstable();
    ring
}

/// Envoy's maglev table: hosts sorted by address string, each with the permutation
/// `offset = XXH64(addr) % m`, `skip = XXH64(addr, seed 1) % (m - 1) + 1`; rounds over the sorted
/// hosts give a host its next free slot whenever `round * w >= target` (w = normalized weight;
/// target starts at 0 and grows by the largest w per slot taken).
fn maglev_table(hosts: &[Arc<Host>], weights: &[f64], m: u64) -> Vec<u32> {
    let size = m as usize;
    struct Entry {
        host: u32,
        offset: u64,
        skip: u64,
        weight: f64,
        target: f64,
        next: u64,
    }
    let mut keyed: Vec<(String, u32)> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| (h.addr.to_string(), i as u32))
        .collect();
    keyed.sort();
    let mut entries: Vec<Entry> = keyed
        .iter()
        .map(|(k, i)| Entry {
            host: *i,
            offset: super::xxhash::xxh64(k.as_bytes(), 0) % m,
            skip: super::xxhash::xxh64(k.as_bytes(), 1) % (m - 1) + 1,
            weight: weights[*i as usize],
            target: 0.0,
            next: 0,
        })
        .collect();
    let max_w = entries.iter().map(|e| e.weight).fold(0.0, f64::max);
    let mut table = vec![u32::MAX; size];
    let mut filled = 0;
    let mut round: u32 = 1;
    while filled < size {
        for e in entries.iter_mut() {
            if filled == size {
                break;
            }
            if f64::from(round) * e.weight < e.target {
                continue;
            }
            e.target += max_w;
            let mut c = ((e.offset + e.skip * e.next) % m) as usize;
            while table[c] != u32::MAX {
                e.next += 1;
                c = ((e.offset + e.skip * e.next) % m) as usize;
            }
            table[c] = e.host;
            e.next += 1;
            filled += 1;
        }
        round += 1;
    }
    table
}

/// Counts each level's hosts by health right now.
fn level_counts(set: &HostSet, now: u64) -> SmallVec<[LevelCounts; 4]> {
    set.levels
        .iter()
        .map(|level| {
            let mut c = LevelCounts::default();
            for (h, m) in set.hosts[level.range.clone()]
                .iter()
                .zip(&set.meta[level.range.clone()])
            {
                c.hosts += 1;
                if m.health == EndpointHealth::Draining {
                    continue;
                }
                let w = u64::from(h.weight);
                c.counted += 1;
                c.counted_weight += w;
                if !h.is_healthy(now) {
                    continue;
                }
                match m.health {
                    EndpointHealth::Healthy => {
                        c.healthy += 1;
                        c.healthy_weight += w;
                    }
                    EndpointHealth::Degraded => {
                        c.degraded += 1;
                        c.degraded_weight += w;
                    }
                    EndpointHealth::Unhealthy | EndpointHealth::Draining => {}
                }
            }
            c
        })
        .collect()
}

/// Picks a host from `set` with policy `kind`; None when no host may take the request.
pub fn choose(
    kind: &LbKind,
    set: &HostSet,
    rr: &AtomicUsize,
    ctx: &LbContext,
    opts: &ClusterOptions,
) -> Option<Arc<Host>> {
    if set.hosts.is_empty() {
        return None;
    }
    let now = now_ms();
    let counts = level_counts(set, now);
    let hashing = kind.hashes();
    let hash = hashing.then(|| ctx.hash.unwrap_or_else(|| rand::thread_rng().gen()));
    // One level without degraded hosts needs no draw (it takes all the load).
    let draw = hash.unwrap_or_else(|| {
        if counts.len() == 1 && counts[0].degraded == 0 {
            0
        } else {
            rand::thread_rng().gen()
        }
    });
    let params = priority::Params {
        overprovisioning_factor: u64::from(opts.overprovisioning_factor),
        weighted: opts.weighted_priority_health,
        panic_threshold: opts.healthy_panic_threshold.round().clamp(0.0, 100.0) as u64,
    };
    let pick = priority::pick(&counts, params, draw);
    // Envoy's ring hash and maglev balancers ignore `fail_traffic_on_panic`.
    if pick.source == Source::All && opts.fail_traffic_on_panic && !hashing {
        return None;
    }
    let level = &set.levels[pick.level];
    let hosts = &set.hosts[level.range.clone()];
    let meta = &set.meta[level.range.clone()];
    // Hashing balancers take the level's healthy hosts whatever the source (Envoy builds their
    // table over the healthy hosts only).
    let want = match (pick.source, hashing) {
        (Source::All, _) => None,
        (Source::Degraded, false) => Some(EndpointHealth::Degraded),
        _ => Some(EndpointHealth::Healthy),
    };
    let usable = |i: usize| want.is_none_or(|w| meta[i].health == w && hosts[i].is_healthy(now));
    // Locality-weighted: a locality of the source first (Envoy's hostSourceToUse; panic and
    // hashing balancers bypass it, and without a locality of positive weight the whole source
    // serves the request).
    if let (Some(loc), Some(w), false) = (&level.locality, want, hashing) {
        let which = match w {
            EndpointHealth::Degraded => Eligible::Degraded,
            _ => Eligible::Healthy,
        };
        let counted = |i: usize| meta[i].health != EndpointHealth::Draining;
        let view = LevelView {
            hosts,
            eligible: &usable,
            counted: &counted,
            overprovisioning_factor: opts.overprovisioning_factor,
        };
        let schedule = loc.schedule(which, &view);
        if let Some(l) = schedule.as_ref().and_then(|s| s.next_locality()) {
            let i = match kind {
                LbKind::RoundRobin => l.round_robin(hosts)?,
                LbKind::LeastRequest { choice_count } => {
                    let at = |k: usize| l.eligible[k] as usize;
                    least_request(hosts, l.eligible.len(), &at, *choice_count)?
                }
                _ => {
                    let k = rand::thread_rng().gen_range(0..l.eligible.len().max(1));
                    *l.eligible.get(k)? as usize
                }
            };
            return Some(hosts[i].clone());
        }
    }
    // Slow start: while a usable host is in its window, weights scaled by it.
    if let (Some(s), LbKind::RoundRobin | LbKind::LeastRequest { .. }) = (&opts.slow_start, kind) {
        let least_request = matches!(kind, LbKind::LeastRequest { .. });
        if let Some(i) = super::slow_start::pick(s, hosts, &usable, now, least_request) {
            return Some(hosts[i].clone());
        }
    }
    let all_table = || level.all_table.as_ref().or(level.healthy_table.as_ref());
    match kind {
        LbKind::RoundRobin => {
            let table = match pick.source {
                Source::All => all_table(),
                Source::Healthy if counts[pick.level].healthy as usize == level.eds_healthy => {
                    level.healthy_table.as_ref()
                }
                _ => None,
            };
            if let Some(HashTable::Round(order)) = table {
                let i = rr.fetch_add(1, Ordering::Relaxed) % order.len();
                return Some(hosts[order[i] as usize].clone());
            }
            let total: u64 = (0..hosts.len())
                .filter(|i| usable(*i))
                .map(|i| u64::from(hosts[i].weight))
                .sum();
            if total == 0 {
                return None;
            }
            let mut pos = rr.fetch_add(1, Ordering::Relaxed) as u64 % total;
            for i in (0..hosts.len()).filter(|i| usable(*i)) {
                let w = u64::from(hosts[i].weight);
                if pos < w {
                    return Some(hosts[i].clone());
                }
                pos -= w;
            }
            None
        }
        LbKind::Random => pick_random(hosts, &usable),
        LbKind::LeastRequest { choice_count } => {
            // Samples are drawn among the source's usable hosts, as Envoy's (which draws from
            // the source's host list).
            // The usable hosts, listed (on the stack up to 32) only when some host is not.
            let all = (0..hosts.len()).all(&usable);
            let listed: SmallVec<[u32; 32]> = if all {
                SmallVec::new()
            } else {
                (0..hosts.len())
                    .filter(|i| usable(*i))
                    .map(|i| i as u32)
                    .collect()
            };
            let n = if all { hosts.len() } else { listed.len() };
            let at = |k: usize| if all { k } else { listed[k] as usize };
            least_request(hosts, n, &at, *choice_count).map(|i| hosts[i].clone())
        }
        LbKind::RingHash { .. } | LbKind::Maglev { .. } => {
            let hash = hash.unwrap_or(draw);
            let table = match pick.source {
                Source::All => all_table(),
                _ => level.healthy_table.as_ref(),
            };
            match table {
                Some(HashTable::Ring(ring)) => {
                    let start = ring.partition_point(|(h, _)| *h < hash);
                    (0..ring.len())
                        .map(|i| ring[(start + i) % ring.len()].1 as usize)
                        .find(|i| usable(*i))
                        .map(|i| hosts[i].clone())
                }
                Some(HashTable::Maglev(table)) => {
                    let start = (hash % (table.len() as u64).max(1)) as usize;
                    // Unhealthy host: walk on (a rebuilt table would move fewer keys; see docs).
                    (0..table.len())
                        .map(|i| table[(start + i) % table.len()] as usize)
                        .find(|i| usable(*i))
                        .map(|i| hosts[i].clone())
                }
                Some(HashTable::Round(_)) | None => pick_random(hosts, &usable),
            }
        }
    }
}

/// Least request (P2C): the host with the fewest requests in flight of `choice_count` random
/// samples among the `n` candidates (`at(k)`: the k-th candidate's index in `hosts`). Samples
/// are capped at 4 per host: a huge `choice_count` (Envoy loops that many times per request)
/// costs O(hosts), and a host is still missed only ~2% of picks.
fn least_request(
    hosts: &[Arc<Host>],
    n: usize,
    at: &dyn Fn(usize) -> usize,
    choice_count: u32,
) -> Option<usize> {
    if n == 0 {
        return None;
    }
    let mut rng = rand::thread_rng();
    let mut best: Option<usize> = None;
    let samples = (choice_count as usize).min(n.saturating_mul(4).max(2));
    for _ in 0..samples.max(1) {
        let c = at(rng.gen_range(0..n));
        let active = |i: usize| hosts[i].active_rq.load(Ordering::Relaxed);
        if best.is_none_or(|b| active(c) < active(b)) {
            best = Some(c);
        }
    }
    best
}

/// A uniformly random usable host (two passes, no allocation).
fn pick_random(hosts: &[Arc<Host>], usable: &dyn Fn(usize) -> bool) -> Option<Arc<Host>> {
    let n = (0..hosts.len()).filter(|i| usable(*i)).count();
    if n == 0 {
        return None;
    }
    let k = rand::thread_rng().gen_range(0..n);
    (0..hosts.len())
        .filter(|i| usable(*i))
        .nth(k)
        .map(|i| hosts[i].clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const MAGLEV: LbKind = LbKind::Maglev {
        table_size: MAGLEV_TABLE_SIZE as u64,
    };

    fn set_of(kind: &LbKind, hosts: Vec<Arc<Host>>) -> HostSet {
        HostSet::build(
            kind,
            hosts.into_iter().map(|h| (h, Default::default())).collect(),
            false,
        )
    }

    fn hosts(n: u16, weight: u32) -> Vec<Arc<Host>> {
        (0..n)
            .map(|i| Host::new(format!("10.0.0.{}:80", i + 1).parse().unwrap(), weight))
            .collect()
    }

    fn dist(
        kind: LbKind,
        set: &HostSet,
        n: usize,
        hash: impl Fn(usize) -> Option<u64>,
    ) -> Vec<usize> {
        let rr = AtomicUsize::new(0);
        let mut counts: HashMap<std::net::SocketAddr, usize> = HashMap::new();
        for i in 0..n {
            let ctx = LbContext {
                hash: hash(i),
                orig_dst: None,
            };
            let h = choose(&kind, set, &rr, &ctx, &ClusterOptions::default()).unwrap();
            *counts.entry(h.addr).or_default() += 1;
        }
        set.hosts
            .iter()
            .map(|h| counts.get(&h.addr).copied().unwrap_or(0))
            .collect()
    }

    #[test]
    fn weighted_round_robin_is_exact() {
        let mut hs = hosts(2, 1);
        hs.push(Host::new("10.0.0.9:80".parse().unwrap(), 2));
        let set = set_of(&LbKind::RoundRobin, hs);
        assert_eq!(
            dist(LbKind::RoundRobin, &set, 400, |_| None),
            vec![100, 100, 200]
        );
    }

    #[test]
    fn weighted_round_robin_interleaves_like_envoy() {
        let mut hs = hosts(1, 3);
        hs.push(Host::new("10.0.0.9:80".parse().unwrap(), 1));
        let set = set_of(&LbKind::RoundRobin, hs);
        let rr = AtomicUsize::new(0);
        let ctx = LbContext {
            hash: None,
            orig_dst: None,
        };
        let order: Vec<bool> = (0..8)
            .map(|_| {
                choose(
                    &LbKind::RoundRobin,
                    &set,
                    &rr,
                    &ctx,
                    &ClusterOptions::default(),
                )
                .unwrap()
                .weight
                    == 1
            })
            .collect();
        // The weight-1 host comes once in every 4 picks and the round repeats (Envoy's order
        // from one of its four starting points; `edf::tests` checks each exactly).
        assert_eq!(order.iter().filter(|l| **l).count(), 2);
        assert_eq!(order[..4], order[4..]);
        // Outlier-ejected host: the usable hosts share by weight.
        set.hosts[1]
            .ejected_until
            .store(now_ms() + 60_000, Ordering::Relaxed);
        assert_eq!(dist(LbKind::RoundRobin, &set, 40, |_| None), vec![40, 0]);
    }

    #[test]
    fn ring_hash_is_sticky_and_spreads() {
        let kind = LbKind::RingHash {
            min_ring_size: 1024,
            max_ring_size: MAX_RING_SIZE,
        };
        let hs = hosts(4, 1);
        let set = set_of(&kind, hs);
        let same = dist(kind.clone(), &set, 100, |_| Some(hash_bytes(b"user-1")));
        assert_eq!(same.iter().filter(|c| **c == 100).count(), 1);
        let spread = dist(kind, &set, 4000, |i| {
            Some(hash_bytes(format!("k{i}").as_bytes()))
        });
        for c in spread {
            assert!((600..1400).contains(&c), "ring hash share {c} of 4000");
        }
    }

    #[test]
    fn maglev_spreads_and_skips_ejected() {
        let hs = hosts(3, 1);
        let set = set_of(&MAGLEV, hs);
        let d = dist(MAGLEV, &set, 3000, |i| {
            Some(hash_bytes(format!("k{i}").as_bytes()))
        });
        for c in &d {
            assert!((700..1300).contains(c), "maglev share {c} of 3000");
        }
        set.hosts[0]
            .ejected_until
            .store(now_ms() + 60_000, Ordering::Relaxed);
        let d = dist(MAGLEV, &set, 300, |i| {
            Some(hash_bytes(format!("k{i}").as_bytes()))
        });
        assert_eq!(d[0], 0);
    }

    #[test]
    fn least_request_with_choice_count_u32_max_picks_at_once() {
        let set = set_of(&LbKind::RoundRobin, hosts(3, 1));
        let t = std::time::Instant::now();
        let kind = LbKind::LeastRequest {
            choice_count: u32::MAX,
        };
        let d = dist(kind, &set, 1000, |_| None);
        assert!(
            t.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(d.iter().sum::<usize>(), 1000);
    }
}
