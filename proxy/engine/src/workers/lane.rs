//! Per-pod turns inside a worker: a pod's tasks on one worker form a lane, and the worker serves
//! its lanes in turn, at most `turn` task polls each.
//!
//! Without lanes every task on a worker is in one FIFO: a quiet pod's request that becomes ready
//! waits behind every connection of a pod driven at full speed on the same worker (64 of them in
//! the bench) and behind up to 61 polls before the I/O driver even sees it. With lanes, the
//! worker's runtime holds one task per pod (the lane's driver), which runs up to `turn` of the
//! pod's ready tasks and yields; the runtime polls its I/O driver after each lane's turn and
//! queues the lanes it woke before the one that yielded, so a quiet pod's ready task waits for at
//! most one turn of each busy pod on its worker.
//!
//! A lane is a small executor over [`async_task`]: its run queue is a deque the tasks' wakers push
//! to (from any thread: a lock per wake, never contended by more than the waker and the worker),
//! and its driver is an ordinary tokio task on the worker, so tokio's I/O, timers and coop budget
//! work inside the lane's tasks unchanged. A turn also ends when tokio's budget for the driver's
//! poll is spent. The driver ends when the lane is closed (its pod's placement is gone) and its
//! last task has ended; tasks a lane's task spawns through [`super::spawn`] join its lane.
//!
//! A turn is `turn` polls while the worker serves one pod, and the shorter shared turn
//! (`--pod-turn-shared`) while two pods' turns have followed each other within the last
//! `--pod-turn-shared-window-us` (10 ms): each turn ends with an I/O poll, so short turns cost a pod's throughput, paid
//! only while another pod is there to gain from them.

use std::{
    cell::{Cell, RefCell},
    collections::VecDeque,
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use async_task::Runnable;
use futures_util::task::AtomicWaker;
use tokio::runtime::Handle;

thread_local! {
    /// The lane whose task the calling thread is running, if any.
    static CURRENT: RefCell<Option<Arc<Lane>>> = const { RefCell::new(None) };
    /// The longest turn on the calling worker, in ns (0: bounded by polls alone).
    static TURN_NS: Cell<u64> = const { Cell::new(0) };
    /// The turn, in polls, while the worker is shared (0: the lane's own turn always).
    static SHARED_TURN: Cell<usize> = const { Cell::new(0) };
    /// The lane whose turn ran last on the calling worker (its address; 0: none yet).
    static LAST_LANE: Cell<usize> = const { Cell::new(0) };
    /// How long the calling worker counts as shared after two lanes' turns followed each other.
    static SHARED_WINDOW: Cell<Duration> = const { Cell::new(Duration::from_micros(DEFAULT_SHARED_WINDOW_US as u64)) };
    /// Until when the calling worker counts as shared: another lane than the one before ran
    /// within its shared window.
    static SHARED_UNTIL: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The default of `--pod-turn-shared`: turns of 4 polls while another pod has work on the
/// worker. Next to a pod driven at full speed on the same worker, side by side in one run, the
/// quiet pod's p99 measured 2.93x (L4) and 1.41x (L7) its p99 alone against 3.81x and 1.99x
/// with 16-poll turns, for 9% of the busy pod's L7 rate; 4-poll turns always would cost a pod
/// alone on its worker 22% of its L7 requests per agent CPU-second, shared ones cost it
/// nothing (ARCHITECTURE.md "Per-pod fairness").
pub const DEFAULT_SHARED_TURN: usize = 4;

/// The default of `--pod-turn-shared-window-us`: how long a worker counts as shared after two
/// pods' turns followed each other. Long enough to cover the gaps of a quiet pod at 1k rps
/// (its turns come about every millisecond): side by side, the quiet L7 pod next to a busy one
/// on its worker measured 1.25x its p99 alone against 1.50x with a 1 ms window, for 7% of the
/// busy pod's rate (L4 unchanged, 2.68x against 2.60x: not its turn length, ARCHITECTURE.md
/// "Per-pod fairness"). A pod alone on its worker never pays it.
pub const DEFAULT_SHARED_WINDOW_US: u32 = 10_000;

/// The default of `--pod-turn-us`: off, turns bounded by their polls alone. A bound of 20 µs
/// took a quiet pod's p99 next to a busy pod on its worker from 2.08x to 1.28x its p99 alone
/// (L7; L4 2.61x to 2.51x) but cost the busy pod 20% of its rate (23.3k to 18.6k req/s): each
/// turn ends with a poll of the I/O driver, also when no other pod is waiting
/// (`cargo xtask bench --scale --paths noisy-l7-same-worker,noisy-l7-same-worker-turn-20us`).
pub const DEFAULT_TURN_US: u32 = 0;

/// Bounds each lane's turn on the calling thread (a worker, at its start) to `us` µs of polls
/// (at least one poll runs); 0: by the turn's poll count alone.
pub fn turn_time_for_worker(us: u32) {
    TURN_NS.with(|c| c.set(u64::from(us) * 1_000));
}

/// Shortens each lane's turn on the calling thread (a worker, at its start) to `polls` while
/// another lane has run on it within the last `window_us` µs (at most the lane's own turn; 0
/// polls: the lane's own turn always).
pub fn shared_turn_for_worker(polls: usize, window_us: u32) {
    SHARED_TURN.with(|c| c.set(polls));
    SHARED_WINDOW.with(|c| c.set(Duration::from_micros(u64::from(window_us))));
}

/// The polls of `lane`'s turn starting now on the calling worker: its own turn, or the shared
/// one while another lane's turn came just before (within the worker's shared window).
fn turn_polls(lane: &Lane) -> usize {
    let shared = SHARED_TURN.with(Cell::get);
    if shared == 0 || shared >= lane.turn {
        return lane.turn;
    }
    let me = std::ptr::from_ref(lane) as usize;
    let before = LAST_LANE.with(|c| c.replace(me));
    let now = Instant::now();
    if before != 0 && before != me {
        let window = SHARED_WINDOW.with(Cell::get);
        SHARED_UNTIL.with(|c| c.set(Some(now + window)));
    }
    match SHARED_UNTIL.with(Cell::get) {
        Some(until) if now < until => shared,
        _ => lane.turn,
    }
}

/// One pod's tasks on one worker.
#[derive(Debug)]
pub struct Lane {
    queue: Mutex<VecDeque<Runnable>>,
    waker: AtomicWaker,
    /// Tasks spawned into the lane and not yet ended.
    live: AtomicUsize,
    /// The pod's placement is gone: no connection will be added.
    closed: AtomicBool,
    /// The driver was spawned on the worker.
    started: AtomicBool,
    turn: usize,
}

impl Lane {
    /// A lane whose turns run at most `turn` (at least one) task polls.
    pub fn new(turn: usize) -> Arc<Lane> {
        Arc::new(Lane {
            queue: Mutex::new(VecDeque::new()),
            waker: AtomicWaker::new(),
            live: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            started: AtomicBool::new(false),
            turn: turn.max(1),
        })
    }

    /// Runs `fut` in this lane; `worker` is the runtime of the worker the lane belongs to (its
    /// driver is spawned there on first use).
    pub fn spawn<F>(self: &Arc<Self>, worker: &Handle, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        if !self.started.swap(true, Ordering::AcqRel) {
            worker.spawn(Driver(self.clone()));
        }
        self.add(fut);
    }

    /// Marks the lane as getting no more connections: its driver ends with its last task.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Tasks in the lane that have not ended.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    fn add<F>(self: &Arc<Self>, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.live.fetch_add(1, Ordering::AcqRel);
        let ended = Ended(self.clone());
        let fut = async move {
            let _ended = ended;
            fut.await
        };
        let lane = self.clone();
        // A panicking task ends alone, as a tokio task would; the panic hook has printed it.
        let (runnable, task) = async_task::Builder::new()
            .propagate_panic(true)
            .spawn(move |_| fut, move |r| lane.schedule(r));
        task.detach();
        runnable.schedule();
    }

    fn schedule(&self, r: Runnable) {
        let was_empty = {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            let empty = q.is_empty();
            q.push_back(r);
            empty
        };
        // A non-empty queue means the driver is due to run anyway (it never leaves work queued
        // without waking itself).
        if was_empty {
            self.waker.wake();
        }
    }

    fn pop(&self) -> Option<Runnable> {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
    }

    fn is_idle(&self) -> bool {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }
}

/// Runs `fut` in the lane of the task the caller is running, if it is a lane's; gives it back
/// otherwise.
pub(super) fn spawn_here<F>(fut: F) -> Option<F>
where
    F: Future<Output = ()> + Send + 'static,
{
    let lane = CURRENT.with(|c| c.borrow().clone());
    match lane {
        Some(lane) => {
            lane.add(fut);
            None
        }
        None => Some(fut),
    }
}

/// Counts a task out of its lane when its future is dropped (ended or cancelled).
struct Ended(Arc<Lane>);

impl Drop for Ended {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The lane's task on its worker's runtime.
struct Driver(Arc<Lane>);

impl Future for Driver {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let lane = &self.0;
        lane.waker.register(cx.waker());
        let previous = CURRENT.with(|c| c.replace(Some(lane.clone())));
        let budget = TURN_NS.with(Cell::get);
        let started = (budget != 0).then(Instant::now);
        for _ in 0..turn_polls(lane) {
            let Some(r) = lane.pop() else { break };
            r.run();
            if !tokio::task::coop::has_budget_remaining() {
                break;
            }
            if started.is_some_and(|t| t.elapsed() >= Duration::from_nanos(budget)) {
                break;
            }
        }
        CURRENT.with(|c| *c.borrow_mut() = previous);
        // Between turns: a worker busy for its interval lets the tasks queued on its core run.
        super::give_way::after_turn();
        if !lane.is_idle() {
            // The turn is over. Back in the worker's queue only once its I/O driver has been
            // polled (tokio defers a yielding task's wake until then): a lane its I/O woke is
            // queued first, so it waits for this turn alone, not also for the next.
            let yielded = std::pin::pin!(tokio::task::yield_now()).poll(cx);
            debug_assert!(yielded.is_pending());
            return Poll::Pending;
        }
        if lane.closed.load(Ordering::Acquire) && lane.live() == 0 {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The runtime is shutting down (or the lane has ended, with nothing queued): dropping the
        // queued tasks drops their futures and breaks their references back to the lane.
        let queued = std::mem::take(&mut *self.0.queue.lock().unwrap_or_else(|e| e.into_inner()));
        drop(queued);
    }
}
