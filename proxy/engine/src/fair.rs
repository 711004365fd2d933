//! Per-pod fairness on the agent's shared workers (node mode).
//!
//! One agent serves every enrolled pod. Without a bound, a pod driven at its maximum rate keeps
//! every worker busy, and a quiet pod's connection waits in a worker's FIFO queue behind the busy
//! pod's tasks. Each pod gets a [`PodShare`]: its placement on `--pod-workers` of the agent's
//! workers ([`crate::workers`], the fewest-loaded when it enrolls). Every connection of the pod,
//! and every task it spawns, runs on those workers, so one pod occupies at most that many
//! workers, whatever its rate, and pods spread evenly over them.
//!
//! The workers also ask the kernel for a short scheduler slice ([`slice`]), so a task that wakes
//! on a core where a worker serves a busy pod waits at most that long.
//!
//! Measured history (ARCHITECTURE.md "Per-pod fairness and the agent's workers"): before the agent had its own workers,
//! the share was a semaphore of worker permits held for each poll of a pod's task on tokio's
//! work-stealing runtime, with the worker dropping to nice 10 while it served a pod over its share.
//! The placement gives the same bound by construction, without a permit per poll.

use std::sync::Arc;

pub mod slice;

/// One pod's share of the agent's workers.
#[derive(Debug)]
pub struct PodShare {
    workers: usize,
    /// The agent's workers the pod's connections run on, when the agent has its own
    /// ([`crate::workers`]).
    placement: Option<crate::workers::Placement>,
}

impl PodShare {
    /// A share letting the pod's connections run on at most `workers` workers (at least one),
    /// placed on the installed workers if any.
    pub fn new(workers: usize) -> Arc<Self> {
        let workers = workers.max(1);
        Arc::new(Self {
            workers,
            placement: crate::workers::get().map(|w| w.place(workers)),
        })
    }

    /// How many workers the pod's connections may occupy.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// The workers the pod is placed on (empty when the agent has no workers of its own).
    pub fn placed_on(&self) -> &[usize] {
        self.placement
            .as_ref()
            .map_or(&[], crate::workers::Placement::workers)
    }

    /// The worker for the pod's next connection, when the agent has its own workers.
    pub fn next_worker(&self) -> Option<usize> {
        self.placement.as_ref().map(crate::workers::Placement::next)
    }
}
