//! The counters the soak's client process keeps and prints (one JSON line every few seconds,
//! cumulative): per well-behaved client kind, successes and errors by kind; per abusive
//! client kind, how each attempt ended.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use serde::{Deserialize, Serialize};

/// Successes and errors (by kind) of one well-behaved client.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Tally {
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
}

impl Tally {
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Everything the client process counted so far.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Counters {
    /// Well-behaved clients: `h1_keepalive`, `h1_close`, `websocket`, `tcp`.
    pub good: BTreeMap<String, Tally>,
    /// Abusive clients: kind -> outcome -> count.
    pub abuse: BTreeMap<String, BTreeMap<String, u64>>,
}

impl Counters {
    pub fn good_ok(&self) -> u64 {
        self.good.values().map(|t| t.ok).sum()
    }

    pub fn good_errors(&self) -> u64 {
        self.good.values().map(Tally::error_count).sum()
    }

    pub fn abuse_total(&self) -> u64 {
        self.abuse.values().flat_map(|m| m.values()).sum()
    }
}

/// The client process's shared counters.
#[derive(Clone, Default)]
pub struct Shared(Arc<Mutex<Counters>>);

impl Shared {
    pub fn ok(&self, kind: &str) {
        let mut c = self.0.lock().expect("counters");
        c.good.entry(kind.into()).or_default().ok += 1;
    }

    pub fn error(&self, kind: &str, why: &str) {
        let mut c = self.0.lock().expect("counters");
        *c.good
            .entry(kind.into())
            .or_default()
            .errors
            .entry(why.into())
            .or_default() += 1;
    }

    pub fn abuse(&self, kind: &str, outcome: &str) {
        let mut c = self.0.lock().expect("counters");
        *c.abuse
            .entry(kind.into())
            .or_default()
            .entry(outcome.into())
            .or_default() += 1;
    }

    pub fn snapshot(&self) -> Counters {
        self.0.lock().expect("counters").clone()
    }
}
