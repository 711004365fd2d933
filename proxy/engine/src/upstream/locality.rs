//! Envoy's locality-weighted load balancing (`common_lb_config.locality_weighted_lb_config`).
//!
//! Within the priority level (and host source) chosen for a request, a locality is picked first,
//! then a host of that locality by the cluster's policy. A locality's effective weight is its
//! `load_balancing_weight` times its availability, min(1, overprovisioning factor x eligible /
//! counted hosts) (eligible: the source's healthy or degraded hosts; counted: hosts not
//! excluded); a locality without a weight (or without `locality`) has weight 0 and takes no
//! traffic. Localities are picked by Envoy's EDF scheduler from a random start
//! (`LocalityWrr`); when no locality has a positive effective weight, the level's whole source
//! serves the request (Envoy has no scheduler then). Panic bypasses localities.
//!
//! Health changes at any time (active checks, outlier ejection), so a level keeps one
//! [`Schedule`] per source, built for a set of eligible hosts (identified by a hash of their
//! indexes) and rebuilt by the first request that finds a different set, as Envoy rebuilds its
//! scheduler on every host-set change. The hot path computes that hash (one pass over the
//! level, no allocation) and does table lookups.
//!
//! Ring hash and maglev take no scheduler: their table gives each locality's hosts its
//! configured weight's share over the healthy hosts ([`hashing_weights`], Envoy's
//! `normalizeLocalityWeights`, without availability scaling).

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use arc_swap::{ArcSwapOption, Guard};

use super::{edf, Host, HostMeta};

/// A level's localities and the schedules built over its eligible hosts.
#[derive(Debug)]
pub struct LocalityLevel {
    /// Each of the level's hosts' locality (an index into `weights`), in host order.
    of_host: Vec<u32>,
    /// Each locality's weight (0: none), in Envoy's locality order.
    weights: Vec<u32>,
    /// The schedule over the healthy hosts, once a request needed it.
    healthy: ArcSwapOption<Schedule>,
    /// The schedule over the degraded hosts.
    degraded: ArcSwapOption<Schedule>,
}

/// A level's hosts as a request sees them.
#[derive(Clone, Copy)]
pub struct LevelView<'a> {
    /// The level's hosts.
    pub hosts: &'a [Arc<Host>],
    /// Host `i` may take the request (the source's health, right now).
    pub eligible: &'a dyn Fn(usize) -> bool,
    /// Host `i` counts in its locality's availability (not excluded).
    pub counted: &'a dyn Fn(usize) -> bool,
    /// The cluster's overprovisioning factor, percent.
    pub overprovisioning_factor: u32,
}

/// Which hosts of the level a schedule is built over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eligible {
    /// The healthy hosts (Envoy's `chooseHealthyLocality`).
    Healthy,
    /// The degraded hosts (`chooseDegradedLocality`).
    Degraded,
}

/// One EDF round of locality picks and each locality's eligible hosts.
#[derive(Debug)]
pub struct Schedule {
    /// Hash of the eligible host indexes it was built for.
    key: u64,
    /// Locality indexes in pick order; empty when no locality has a positive effective weight.
    order: Vec<u32>,
    /// Position in `order`.
    next: AtomicUsize,
    /// Per locality, its eligible hosts.
    localities: Vec<LocalityHosts>,
}

/// One locality's eligible hosts (indexes into the level's hosts).
#[derive(Debug)]
pub struct LocalityHosts {
    /// In host order.
    pub eligible: Vec<u32>,
    /// Weighted round robin order (Envoy's EDF round, `edf::round`) when host weights differ;
    /// None when they are equal (plain round robin over `eligible`) or the round is too long.
    round: Option<Vec<u32>>,
    /// Round-robin position.
    next: AtomicUsize,
}

impl LocalityHosts {
    /// The next host by round robin (Envoy's per-locality scheduler); None without hosts.
    pub fn round_robin(&self, hosts: &[Arc<Host>]) -> Option<usize> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        if let Some(round) = &self.round {
            return Some(round[n % round.len()] as usize);
        }
        let weights = || {
            self.eligible
                .iter()
                .map(|i| u64::from(hosts[*i as usize].weight))
        };
        let first = *self.eligible.first()?;
        if weights().all(|w| w == u64::from(hosts[first as usize].weight)) {
            return Some(self.eligible[n % self.eligible.len()] as usize);
        }
        // A round too long to precompute: cumulative weights.
        let mut pos = n as u64 % weights().sum::<u64>();
        for (i, w) in self.eligible.iter().zip(weights()) {
            if pos < w {
                return Some(*i as usize);
            }
            pos -= w;
        }
        None
    }
}

impl Schedule {
    /// The next locality's hosts; None when no locality has weight.
    pub fn next_locality(&self) -> Option<&LocalityHosts> {
        if self.order.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.order.len();
        self.localities.get(self.order[i] as usize)
    }
}

impl LocalityLevel {
    /// The localities of a level's hosts (their `meta`, in host order).
    pub fn build(meta: &[HostMeta]) -> Self {
        let mut ranks: Vec<u32> = meta.iter().map(|m| m.locality).collect();
        ranks.sort_unstable();
        ranks.dedup();
        let of_host: Vec<u32> = meta
            .iter()
            .map(|m| ranks.binary_search(&m.locality).unwrap_or(0) as u32)
            .collect();
        let mut weights = vec![0u32; ranks.len()];
        for (m, l) in meta.iter().zip(&of_host) {
            weights[*l as usize] = m.locality_weight;
        }
        Self {
            of_host,
            weights,
            healthy: ArcSwapOption::empty(),
            degraded: ArcSwapOption::empty(),
        }
    }

    /// Host `i`'s locality.
    pub fn locality_of(&self, i: usize) -> usize {
        self.of_host[i] as usize
    }

    /// The schedule over `level`'s eligible hosts, rebuilt when they changed (a guard: no
    /// reference count taken on the hot path).
    pub fn schedule(&self, which: Eligible, level: &LevelView<'_>) -> Guard<Option<Arc<Schedule>>> {
        let slot = match which {
            Eligible::Healthy => &self.healthy,
            Eligible::Degraded => &self.degraded,
        };
        let key = eligible_key(level.hosts.len(), level.eligible);
        let current = slot.load();
        if current.as_ref().is_some_and(|s| s.key == key) {
            return current;
        }
        drop(current);
        slot.store(Some(Arc::new(self.build_schedule(key, level))));
        slot.load()
    }

    fn build_schedule(&self, key: u64, level: &LevelView<'_>) -> Schedule {
        let LevelView {
            hosts,
            eligible,
            counted,
            overprovisioning_factor: factor,
        } = *level;
        let n = self.weights.len();
        let mut counts = vec![0u32; n];
        let mut localities: Vec<Vec<u32>> = vec![Vec::new(); n];
        for i in 0..hosts.len() {
            let l = self.locality_of(i);
            if counted(i) {
                counts[l] += 1;
            }
            if eligible(i) {
                localities[l].push(i as u32);
            }
        }
        let effective: Vec<(u32, f64)> = (0..n)
            .map(|l| {
                (
                    l as u32,
                    effective_weight(
                        self.weights[l],
                        localities[l].len(),
                        counts[l] as usize,
                        factor,
                    ),
                )
            })
            .filter(|(_, w)| *w > 0.0)
            .collect();
        let order = if localities.iter().all(Vec::is_empty) {
            Vec::new()
        } else {
            let w: Vec<f64> = effective.iter().map(|(_, w)| *w).collect();
            // Envoy's seed is a random u64 passed on as the u32 number of initial picks.
            edf::picks(&w, rand::random::<u64>() as u32, edf::round_len(&w))
                .into_iter()
                .map(|e| effective[e as usize].0)
                .collect()
        };
        let localities = localities
            .into_iter()
            .map(|eligible| {
                let weights: Vec<u32> =
                    eligible.iter().map(|i| hosts[*i as usize].weight).collect();
                let round = edf::round(&weights, rand::random::<u64>() as u32)
                    .map(|r| r.into_iter().map(|k| eligible[k as usize]).collect());
                LocalityHosts {
                    eligible,
                    round,
                    next: AtomicUsize::new(rand::random::<u32>() as usize),
                }
            })
            .collect();
        Schedule {
            key,
            order,
            next: AtomicUsize::new(0),
            localities,
        }
    }
}

/// Envoy's `LocalityWrr::effectiveLocalityWeight`: the weight times min(1, factor / 100 x
/// eligible / counted), 0 for a locality without counted hosts.
pub fn effective_weight(weight: u32, eligible: usize, counted: usize, factor: u32) -> f64 {
    if counted == 0 {
        return 0.0;
    }
    let availability = 1.0 * eligible as f64 / counted as f64;
    f64::from(weight) * (1.0f64).min((f64::from(factor) / 100.0) * availability)
}

/// FNV-1a over the indexes of the eligible hosts among `n`.
fn eligible_key(n: usize, eligible: &dyn Fn(usize) -> bool) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for i in (0..n).filter(|i| eligible(*i)) {
        for b in (i as u64).to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The hosts (indexes into `hosts`, grouped by locality in Envoy's order) a ring hash or maglev
/// table of a locality-weighted level holds, with their normalized weights: a host's weight
/// share of its locality times its locality's share of the level's locality weights (Envoy's
/// `normalizeLocalityWeights`); hosts of a locality without weight are left out. `take(i)`:
/// host `i` belongs in the table (healthy, or every host in panic).
pub fn hashing_weights(
    level: &LocalityLevel,
    hosts: &[Arc<Host>],
    take: &dyn Fn(usize) -> bool,
) -> (Vec<u32>, Vec<f64>) {
    let sum: u64 = level.weights.iter().map(|w| u64::from(*w)).sum();
    let (mut members, mut weights) = (Vec::new(), Vec::new());
    if sum == 0 {
        return (members, weights);
    }
    for (l, lw) in level.weights.iter().enumerate() {
        if *lw == 0 {
            continue;
        }
        let in_l: Vec<usize> = (0..hosts.len())
            .filter(|i| level.locality_of(*i) == l && take(*i))
            .collect();
        let host_sum: u64 = in_l.iter().map(|i| u64::from(hosts[*i].weight)).sum();
        let share = f64::from(*lw) / sum as f64;
        for i in in_l {
            members.push(i as u32);
            weights.push(f64::from(hosts[i].weight) * share / host_sum as f64);
        }
    }
    (members, weights)
}

#[cfg(test)]
#[path = "locality_tests.rs"]
mod tests;
