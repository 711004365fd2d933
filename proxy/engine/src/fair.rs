//! Per-pod fairness on the agent's shared workers (node mode).
//!
//! Every enrolled pod's connections run as tasks on the same tokio workers, whose run queues are
//! FIFO. A pod driven at its maximum rate keeps dozens of its tasks runnable at once, so a quiet
//! pod's task that becomes runnable waits behind all of them, and the agent spends every core it
//! has on the busy pod at its own (normal) priority. Measured before this module: the quiet pod's
//! p99 rose 3.4x (L4) and 8.8x (L7) next to a neighbour at full speed (`cargo xtask bench
//! --scale`, noisy-neighbour section).
//!
//! A [`PodShare`] bounds how many workers one pod's tasks occupy at the same moment: every poll of
//! a pod's task holds one of the share's permits for the length of that poll (never across an
//! `.await`). A task that finds no permit left costs one cheap poll, waits in FIFO order on the
//! share, and the worker moves on to the next task in its queue, which is how a quiet pod's task
//! gets a worker while the busy pod already holds all of its permits. Uncontended, a poll costs one
//! atomic acquire and release.
//!
//! The share follows the pod's work into the tasks its connections spawn (an HTTP/2 stream, an
//! upstream connection, an upgraded tunnel): [`spawn`] and [`Executor`] wrap a task spawned while a
//! pod's task is being polled in that pod's share. Outside node mode (`sluice proxy`, the sidecar)
//! no share is ever set and both are plain `tokio::spawn`.
//!
//! A pod that wants more than its share also has its excess served at a lower OS priority
//! ([`lane`]), so the worker serving it yields the core to other pods' processes.

use std::{
    cell::RefCell,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tokio::sync::Semaphore;
use tokio_util::sync::PollSemaphore;

pub mod lane;
pub mod slice;

/// One pod's share of the agent's workers.
#[derive(Debug)]
pub struct PodShare {
    permits: Arc<Semaphore>,
    workers: usize,
    /// When the pod last wanted more workers than its share ([`lane`]).
    heat: lane::Heat,
}

impl PodShare {
    /// A share letting the pod's tasks run on at most `workers` workers at once (at least one).
    pub fn new(workers: usize) -> Arc<Self> {
        let workers = workers.max(1);
        Arc::new(Self {
            permits: Arc::new(Semaphore::new(workers)),
            workers,
            heat: lane::Heat::default(),
        })
    }

    /// How many workers the pod's tasks may occupy at once.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// `fut` run under this share.
    pub fn run<F: Future>(self: &Arc<Self>, fut: F) -> Fair<F> {
        Fair {
            inner: fut,
            share: Some(self.clone()),
            permits: PollSemaphore::new(self.permits.clone()),
        }
    }
}

thread_local! {
    /// The share of the task being polled on this thread, set by [`Fair::poll`].
    static CURRENT: RefCell<Option<Arc<PodShare>>> = const { RefCell::new(None) };
}

/// The share of the task being polled on this thread, if it runs under one.
pub fn current() -> Option<Arc<PodShare>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// `tokio::spawn`, under the current task's share when it has one.
pub fn spawn<F>(fut: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match current() {
        Some(share) => tokio::spawn(share.run(fut)),
        None => tokio::spawn(fut),
    }
}

/// hyper's executor (HTTP/2 streams, connection drivers) spawning through [`spawn`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Executor;

impl<F> hyper::rt::Executor<F> for Executor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        spawn(fut);
    }
}

pin_project_lite::pin_project! {
    /// A future polled only while it holds one of its pod's permits. See the module docs.
    pub struct Fair<F> {
        #[pin]
        inner: F,
        // Moved into `CURRENT` for the length of each poll of `inner`, then back.
        share: Option<Arc<PodShare>>,
        permits: PollSemaphore,
    }
}

impl<F> std::fmt::Debug for Fair<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fair").finish_non_exhaustive()
    }
}

impl<F: Future> Future for Fair<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        // The semaphore is never closed, so `None` cannot happen; should it, run unbounded.
        let permit = match this.permits.poll_acquire(cx) {
            Poll::Pending => {
                if let Some(s) = this.share.as_ref() {
                    s.heat.waited();
                }
                return Poll::Pending;
            }
            Poll::Ready(p) => p,
        };
        if let Some(s) = this.share.as_ref() {
            lane::enter(s.heat.hot());
        }
        let _current = Current::enter(this.share);
        let out = this.inner.poll(cx);
        drop(permit);
        out
    }
}

/// The share moved into [`CURRENT`] for one poll and back out when dropped (also when the poll
/// panics, so a later task on this worker never runs under another pod's share).
struct Current<'a> {
    slot: &'a mut Option<Arc<PodShare>>,
    prev: Option<Arc<PodShare>>,
}

impl<'a> Current<'a> {
    fn enter(slot: &'a mut Option<Arc<PodShare>>) -> Self {
        let prev = CURRENT.with(|c| c.replace(slot.take()));
        Self { slot, prev }
    }
}

impl Drop for Current<'_> {
    fn drop(&mut self) {
        *self.slot = CURRENT.with(|c| c.replace(self.prev.take()));
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::{AtomicUsize, Ordering},
        time::Duration,
    };

    use super::*;

    /// A task that busy-polls: each poll burns `work` and yields, `polls` times, recording the
    /// most of its pod's tasks seen inside a poll at once.
    async fn busy(polls: usize, work: Duration, inside: Arc<AtomicUsize>, most: Arc<AtomicUsize>) {
        for _ in 0..polls {
            let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            let t = std::time::Instant::now();
            while t.elapsed() < work {
                std::hint::spin_loop();
            }
            inside.fetch_sub(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_pod_never_occupies_more_workers_than_its_share() {
        let share = PodShare::new(2);
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                tokio::spawn(share.run(busy(
                    20,
                    Duration::from_micros(200),
                    inside.clone(),
                    most.clone(),
                )))
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(
            most.load(Ordering::SeqCst),
            2,
            "at most 2 at once, and 2 were used"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_quiet_pod_gets_a_worker_while_a_busy_pod_holds_its_share() {
        // The busy pod may use one of the two workers; its 32 runnable tasks each burn 2 ms per
        // poll. Unshared they would hold both workers and the quiet task would wait behind ~16
        // polls per worker (~32 ms); with the share it waits for at most one poll on the other
        // worker.
        let busy_share = PodShare::new(1);
        let quiet_share = PodShare::new(1);
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let busy_tasks: Vec<_> = (0..32)
            .map(|_| {
                tokio::spawn(busy_share.run(busy(
                    10,
                    Duration::from_millis(2),
                    inside.clone(),
                    most.clone(),
                )))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let mut worst = Duration::ZERO;
        for _ in 0..20 {
            let t = std::time::Instant::now();
            tokio::spawn(quiet_share.run(async {})).await.unwrap();
            worst = worst.max(t.elapsed());
        }
        for t in busy_tasks {
            t.await.unwrap();
        }
        assert!(
            worst < Duration::from_millis(12),
            "the quiet task waited {worst:?} for a worker"
        );
        assert_eq!(most.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn spawned_tasks_inherit_the_share_and_plain_tasks_have_none() {
        let share = PodShare::new(1);
        let seen = share
            .run(async {
                spawn(async { current().map(|s| s.workers()) })
                    .await
                    .unwrap()
            })
            .await;
        assert_eq!(seen, Some(1));
        assert!(spawn(async { current() }).await.unwrap().is_none());
        assert!(current().is_none(), "the share does not leak past the poll");
    }
}
