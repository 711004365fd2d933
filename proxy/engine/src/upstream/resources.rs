//! A cluster's resource manager for one routing priority (Envoy's `ResourceManagerImpl`): the
//! counts its circuit breakers hold against their thresholds. A cluster has one per priority
//! (`ClusterInfoImpl::ResourceManagers`), so a HIGH route's requests, pending requests,
//! connections and retries never count against DEFAULT's thresholds, nor DEFAULT's against
//! HIGH's.

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use super::spec::Breakers;

/// One priority's thresholds and what is in use of each.
#[derive(Debug)]
pub struct Resources {
    /// The priority's `circuit_breakers.thresholds[]` entry (Envoy's defaults without one).
    pub limits: Breakers,
    /// Requests in flight (max_requests).
    pub requests: AtomicUsize,
    /// Requests waiting for a connection (max_pending_requests).
    pub pending: AtomicUsize,
    /// Open upstream connections of the priority's pools (max_connections); shared with each
    /// connection's task, which gives its slot back when the connection closes.
    pub connections: Arc<AtomicUsize>,
    /// Retries in flight (max_retries).
    pub retries: AtomicUsize,
}

impl Resources {
    /// Nothing in use yet.
    pub fn new(limits: Breakers) -> Self {
        Self {
            limits,
            requests: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            connections: Arc::new(AtomicUsize::new(0)),
            retries: AtomicUsize::new(0),
        }
    }

    /// A request in flight, or `None` at `max_requests` (overflow).
    pub fn request(&self) -> Option<Slot<'_>> {
        Slot::take(&self.requests, self.limits.max_requests)
    }

    /// A request waiting for a connection, or `None` at `max_pending_requests` (overflow).
    pub fn pending(&self) -> Option<Slot<'_>> {
        Slot::take(&self.pending, self.limits.max_pending_requests)
    }

    /// A retry in flight, or `None` at `max_retries` (the retry is not made); with a
    /// `retry_budget`, at the budget's share of the requests active and pending now.
    pub fn retry(&self) -> Option<Slot<'_>> {
        Slot::take(&self.retries, self.max_retries())
    }

    /// The retries allowed in flight now. A request holds its `requests` slot from its start
    /// (waiting for a connection too), so that count is Envoy's active plus pending requests.
    pub fn max_retries(&self) -> usize {
        match &self.limits.retry_budget {
            None => self.limits.max_retries,
            Some(b) => b.max(self.requests.load(Ordering::Relaxed)),
        }
    }

    /// Takes a connection slot below `max_connections`; the connection gives it back when it
    /// closes (or when connecting fails). False at the limit.
    pub fn connection(&self) -> bool {
        below(&self.connections, self.limits.max_connections)
    }
}

/// Adds one to `counter` unless it is at `max`.
fn below(counter: &AtomicUsize, max: usize) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
            (n < max).then(|| n + 1)
        })
        .is_ok()
}

/// One unit of a resource in use, given back when dropped.
#[derive(Debug)]
pub struct Slot<'a>(&'a AtomicUsize);

impl<'a> Slot<'a> {
    fn take(counter: &'a AtomicUsize, max: usize) -> Option<Self> {
        // Lazily: a slot made and dropped on refusal would give back what was never taken.
        below(counter, max).then(|| Self(counter))
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize) -> Breakers {
        Breakers {
            max_connections: max,
            max_pending_requests: max,
            max_requests: max,
            max_retries: max,
            track_remaining: false,
            retry_budget: None,
        }
    }

    #[test]
    fn slots_stop_at_the_threshold_and_come_back_when_dropped() {
        let r = Resources::new(limits(2));
        for take in [Resources::request, Resources::pending, Resources::retry] {
            let a = take(&r).expect("first");
            let b = take(&r).expect("second");
            assert!(take(&r).is_none(), "third is over the threshold");
            drop(a);
            let c = take(&r).expect("a slot was given back");
            drop((b, c));
        }
        assert_eq!(r.requests.load(Ordering::Relaxed), 0);
        assert_eq!(r.pending.load(Ordering::Relaxed), 0);
        assert_eq!(r.retries.load(Ordering::Relaxed), 0);
        assert!(r.connection() && r.connection());
        assert!(!r.connection());
        assert_eq!(r.connections.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_retry_budget_scales_with_the_requests_in_flight() {
        let mut l = limits(0);
        l.retry_budget = Some(crate::config::RetryBudget::new(25.0, 1));
        let r = Resources::new(l);
        // No request: the minimum concurrency.
        assert_eq!(r.max_retries(), 1);
        let held: Vec<_> = (0..8).filter_map(|_| r.request()).collect();
        assert!(held.is_empty(), "max_requests 0");
        r.requests.store(8, Ordering::Relaxed);
        r.pending.store(1, Ordering::Relaxed);
        // 25 % of the 8 requests (a pending one holds its request slot too); max_retries 0
        // does not count.
        assert_eq!(r.max_retries(), 2);
        let (a, b) = (r.retry().expect("first"), r.retry().expect("second"));
        assert!(r.retry().is_none());
        drop((a, b));
        r.requests.store(3, Ordering::Relaxed);
        r.pending.store(0, Ordering::Relaxed);
        assert_eq!(r.max_retries(), 1, "0.75 truncates, the minimum holds");
    }

    #[test]
    fn zero_threshold_refuses_everything() {
        let r = Resources::new(limits(0));
        assert!(r.request().is_none());
        assert!(r.pending().is_none());
        assert!(r.retry().is_none());
        assert!(!r.connection());
    }

    #[test]
    fn a_refusal_gives_nothing_back() {
        let r = Resources::new(limits(1));
        let held = r.request().expect("one");
        for _ in 0..3 {
            assert!(r.request().is_none());
        }
        assert_eq!(r.requests.load(Ordering::Relaxed), 1);
        drop(held);
        assert_eq!(r.requests.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn priorities_count_apart() {
        use crate::config::{ByPriority, RoutingPriority::*};
        let rs = ByPriority([Resources::new(limits(1)), Resources::new(limits(0))]);
        let _held = rs[Default].request().expect("DEFAULT has one");
        assert!(rs[Default].request().is_none());
        assert!(rs[High].request().is_none(), "HIGH's own zero");
        let rs = ByPriority([Resources::new(limits(0)), Resources::new(limits(1))]);
        assert!(
            rs[High].retry().is_some(),
            "DEFAULT's zero does not apply to HIGH"
        );
    }
}
