//! A fixed-size, lock-free table of request counters and duration histograms, keyed by the label
//! values only a request knows (response code, response flags, protocol, destination port).
//! Recording is a few atomic loads and adds; the table is allocated once, on the series' first
//! request, and a key that finds no free slot is folded into the overflow slot.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::http::local_reply::Flag;

/// Istio's default buckets of `istio_request_duration_milliseconds` (milliseconds).
pub const BUCKETS_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// Distinct keys per series; the last slot is the overflow slot.
pub const SLOTS: usize = 32;

/// Every response flag, indexed by its key bits.
const FLAGS: [Flag; 25] = [
    Flag::None,
    Flag::NoRoute,
    Flag::NoCluster,
    Flag::NoHealthyUpstream,
    Flag::ConnectFailure,
    Flag::Overflow,
    Flag::Timeout,
    Flag::ConnectionTermination,
    Flag::RetryLimitExceeded,
    Flag::DownstreamTermination,
    Flag::StreamIdleTimeout,
    Flag::DownstreamProtocolError,
    Flag::DurationTimeout,
    Flag::FaultInjected,
    Flag::DelayInjected,
    Flag::RateLimited,
    Flag::UpstreamProtocolError,
    Flag::RetryLimitConnectFailure,
    Flag::RetryLimitConnectionTermination,
    Flag::RetryLimitProtocolError,
    Flag::RetryLimitTimeout,
    Flag::UnauthorizedExternalService,
    Flag::UpstreamRemoteReset,
    Flag::RetryLimitRemoteReset,
    Flag::FailedLocalHealthCheck,
];

/// Set in every used key, so 0 means "free slot".
const USED: u64 = 1 << 63;
/// The key of the overflow slot.
const OVERFLOW: u64 = USED | 1 << 62;

/// The per-request label values, packed in a `u64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key(u64);

impl Key {
    /// Packs a response code (0 when none was sent), a flag, gRPC or plain HTTP, a port.
    pub fn new(code: u16, flag: Flag, grpc: bool, port: u16) -> Self {
        let f = FLAGS.iter().position(|x| *x == flag).unwrap_or(0) as u64;
        Self(
            USED | u64::from(code.min(999))
                | f << 10
                | u64::from(grpc) << 15
                | u64::from(port) << 16,
        )
    }

    /// `None` for the overflow slot.
    pub fn parts(self) -> Option<(u16, Flag, bool, u16)> {
        if self.0 == OVERFLOW {
            return None;
        }
        let code = (self.0 & 0x3ff) as u16;
        let flag = FLAGS[((self.0 >> 10) & 0x1f) as usize % FLAGS.len()];
        Some((code, flag, self.0 >> 15 & 1 == 1, (self.0 >> 16) as u16))
    }
}

/// One slot: a key and its counts.
#[derive(Debug, Default)]
pub struct Slot {
    key: AtomicU64,
    /// Requests.
    pub count: AtomicU64,
    /// Per bucket (not cumulative), the last one is +Inf.
    pub buckets: [AtomicU64; BUCKETS_MS.len() + 1],
    /// Sum of durations, microseconds.
    pub sum_us: AtomicU64,
}

/// The slots of one series.
#[derive(Debug)]
pub struct Table {
    slots: Box<[Slot]>,
}

impl Default for Table {
    fn default() -> Self {
        Self {
            slots: (0..SLOTS).map(|_| Slot::default()).collect(),
        }
    }
}

impl Table {
    /// Counts one request of `key` that took `micros`.
    pub fn record(&self, key: Key, micros: u64) {
        let slot = self.slot(key.0);
        slot.count.fetch_add(1, Ordering::Relaxed);
        slot.sum_us.fetch_add(micros, Ordering::Relaxed);
        let ms = micros as f64 / 1000.0;
        let b = BUCKETS_MS
            .iter()
            .position(|le| ms <= *le)
            .unwrap_or(BUCKETS_MS.len());
        slot.buckets[b].fetch_add(1, Ordering::Relaxed);
    }

    fn slot(&self, key: u64) -> &Slot {
        let n = SLOTS - 1;
        // Fibonacci hashing spreads the packed fields over the slots.
        let start = (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize % n;
        for i in 0..n {
            let s = &self.slots[(start + i) % n];
            let k = s.key.load(Ordering::Acquire);
            if k == key {
                return s;
            }
            if k == 0 {
                match s
                    .key
                    .compare_exchange(0, key, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => return s,
                    Err(other) if other == key => return s,
                    Err(_) => {}
                }
            }
        }
        let last = &self.slots[n];
        last.key.store(OVERFLOW, Ordering::Release);
        last
    }

    /// The used slots with their keys.
    pub fn used(&self) -> impl Iterator<Item = (Key, &Slot)> {
        self.slots.iter().filter_map(|s| {
            let k = s.key.load(Ordering::Acquire);
            (k != 0).then_some((Key(k), s))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_flag_keeps_its_name_in_a_key() {
        // Exhaustive: a new flag does not compile here until it is listed, and must then be
        // in FLAGS (else its requests would be labelled `-`).
        let all = |f: Flag| match f {
            Flag::None
            | Flag::NoRoute
            | Flag::NoCluster
            | Flag::NoHealthyUpstream
            | Flag::ConnectFailure
            | Flag::Overflow
            | Flag::Timeout
            | Flag::ConnectionTermination
            | Flag::UpstreamProtocolError
            | Flag::RetryLimitExceeded
            | Flag::DownstreamTermination
            | Flag::StreamIdleTimeout
            | Flag::DownstreamProtocolError
            | Flag::DurationTimeout
            | Flag::FaultInjected
            | Flag::DelayInjected
            | Flag::RateLimited
            | Flag::RetryLimitConnectFailure
            | Flag::RetryLimitConnectionTermination
            | Flag::RetryLimitProtocolError
            | Flag::RetryLimitTimeout
            | Flag::UnauthorizedExternalService
            | Flag::UpstreamRemoteReset
            | Flag::RetryLimitRemoteReset
            | Flag::FailedLocalHealthCheck => f,
        };
        for f in FLAGS.map(all) {
            assert_eq!(Key::new(200, f, false, 80).parts().map(|p| p.1), Some(f));
        }
        assert_eq!(FLAGS.len(), 25);
        assert_eq!(
            Flag::ConnectionTermination.after_retries().as_str(),
            "URX,UC"
        );
        assert_eq!(Flag::Timeout.after_retries().as_str(), "URX,UT");
        assert_eq!(Flag::NoRoute.after_retries().as_str(), "NR");
    }

    #[test]
    fn keys_round_trip_and_full_tables_fold_into_overflow() {
        let k = Key::new(503, Flag::NoHealthyUpstream, true, 8080);
        assert_eq!(k.parts(), Some((503, Flag::NoHealthyUpstream, true, 8080)));
        let t = Table::default();
        for code in 100..(100 + SLOTS as u16 + 10) {
            t.record(Key::new(code, Flag::None, false, 80), 2_000);
        }
        let used: Vec<_> = t.used().collect();
        assert_eq!(used.len(), SLOTS);
        let overflow: u64 = used
            .iter()
            .filter(|(k, _)| k.parts().is_none())
            .map(|(_, s)| s.count.load(Ordering::Relaxed))
            .sum();
        assert_eq!(
            overflow, 11,
            "SLOTS-1 keys fit, the rest fold into one slot"
        );
        let total: u64 = used
            .iter()
            .map(|(_, s)| s.count.load(Ordering::Relaxed))
            .sum();
        assert_eq!(total, SLOTS as u64 + 10);
        // 2 ms lands in the `le=5` bucket (index 2).
        assert_eq!(used[0].1.buckets[2].load(Ordering::Relaxed), 1);
    }
}
