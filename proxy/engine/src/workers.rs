//! The agent's connection workers (node mode): one single-threaded tokio runtime per worker
//! thread, each with its own I/O driver and timers, the way each of Envoy's workers owns its
//! dispatcher.
//!
//! A connection is handed to one worker when it is accepted and stays there: its task, the tasks
//! it spawns (an upstream connection's driver, HTTP/2 streams) and the sockets they poll all live
//! on that worker's runtime, and nothing wakes a task across cores. Against tokio's work-stealing
//! runtime the same bench measured 28% less agent CPU per L7 request with two workers and 45% more
//! requests per second (`cargo xtask bench --scale --paths workers`, ARCHITECTURE.md "Per-pod
//! fairness and the agent's workers").
//!
//! Per-pod fairness: pods are placed on workers when they enroll. A pod's [`Placement`] is the `k`
//! workers with the fewest pods (`k` = `--pod-workers`), and its connections go round robin over
//! them, so one pod's work occupies at most `k` workers, whatever its rate, and pods spread evenly
//! over the workers. Inside a worker each pod's tasks form a [`lane`], and the worker serves its
//! lanes in turn (`--pod-turn` task polls each), so a quiet pod that shares a worker with a busy one
//! waits for one turn of it, not for all of its connections. The workers also ask the kernel for a
//! short scheduler slice ([`slice`]), so a task that wakes on a core where a worker serves a busy
//! pod waits at most that long, and a worker busy without a pause yields its core between turns
//! ([`give_way`]), so a task the kernel queued behind it is not left waiting for the next tick.
//! Outside the agent (`sluice proxy`, the sidecar) no workers are installed and connections run
//! on the caller's runtime.

/// The stack of every thread that runs requests (the workers, the runtimes' threads): a request's
/// state machine nests the connection manager, the filters and the router, and an unoptimised
/// (debug) build's poll frames of it came within a few KiB of the default 2 MiB (a request under
/// `request_timeout` overflowed it). Only the pages a thread touches are resident.
pub const THREAD_STACK: usize = 8 << 20;

use std::{
    cell::Cell,
    future::Future,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, OnceLock,
    },
};

use tokio::{runtime::Handle, task::JoinHandle};

pub mod give_way;
pub mod lane;
pub mod slice;

use lane::Lane;

/// The default of `--pod-turn`: a pod's task polls per turn on a worker. A poll of an L7
/// connection is a few µs, so a quiet pod's ready task waits some tens of µs per busy pod on its
/// worker. Turns this long keep a pod's L7 requests in one turn: 4-poll turns cost a pod alone
/// on its worker 22% of its L7 requests per agent CPU-second; they are for a shared worker
/// ([`lane::DEFAULT_SHARED_TURN`], ARCHITECTURE.md "Per-pod fairness").
pub const DEFAULT_TURN: usize = 16;

static INSTALLED: OnceLock<Workers> = OnceLock::new();

thread_local! {
    /// The worker the calling thread is, if it is one.
    static INDEX: Cell<Option<usize>> = const { Cell::new(None) };
}

/// A set of worker threads, each running a single-threaded runtime.
#[derive(Debug)]
pub struct Workers {
    handles: Vec<Handle>,
    /// Pods placed on each worker.
    pods: Vec<AtomicUsize>,
    /// Round robin over every worker, for connections of no pod.
    next: AtomicUsize,
    /// Task polls per pod's turn; 0: no lanes (a worker's tasks in one FIFO).
    turn: usize,
}

/// The process's workers, once [`install`]ed.
pub fn get() -> Option<&'static Workers> {
    INSTALLED.get()
}

/// The worker the calling thread is (`None` outside the workers).
pub fn index() -> Option<usize> {
    INDEX.with(Cell::get)
}

/// Starts `n` (at least one) worker threads serving pods' lanes in turns of `turn` task polls (0:
/// no lanes) and makes them the process's workers; each thread runs `on_start` first (e.g.
/// [`slice::for_worker`]). Fails if workers are already installed or a thread or runtime cannot
/// be made.
pub fn install(
    n: usize,
    turn: usize,
    on_start: impl Fn() + Send + Clone + 'static,
) -> std::io::Result<&'static Workers> {
    let workers = Workers::start(n, turn, on_start)?;
    INSTALLED
        .set(workers)
        .map_err(|_| std::io::Error::other("the workers are already installed"))?;
    Ok(INSTALLED.get().expect("just set"))
}

impl Workers {
    /// Starts `n` (at least one) worker threads, with lanes of `turn` task polls (0: none). They
    /// run for the rest of the process.
    pub fn start(
        n: usize,
        turn: usize,
        on_start: impl Fn() + Send + Clone + 'static,
    ) -> std::io::Result<Workers> {
        let n = n.max(1);
        let mut handles = Vec::with_capacity(n);
        for i in 0..n {
            let (tx, rx) = std::sync::mpsc::channel();
            let on_start = on_start.clone();
            std::thread::Builder::new()
                .name(format!("sluice-worker-{i}"))
                .stack_size(THREAD_STACK)
                .spawn(move || {
                    INDEX.with(|c| c.set(Some(i)));
                    on_start();
                    let mut rt = tokio::runtime::Builder::new_current_thread();
                    if turn > 0 {
                        // The I/O driver and the queue of tasks woken from other threads after
                        // every lane's turn: a task that became ready joins its lane's queue
                        // before the next turn, not 61 (31) turns later.
                        rt.event_interval(1).global_queue_interval(1);
                    }
                    rt.on_thread_unpark(give_way::woke);
                    let rt = rt.enable_all().build();
                    match rt {
                        Ok(rt) => {
                            let _ = tx.send(Ok(rt.handle().clone()));
                            rt.block_on(std::future::pending::<()>());
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                        }
                    }
                })?;
            let handle = rx
                .recv()
                .map_err(|_| std::io::Error::other("a worker thread ended at start"))??;
            handles.push(handle);
        }
        Ok(Workers {
            pods: handles.iter().map(|_| AtomicUsize::new(0)).collect(),
            handles,
            next: AtomicUsize::new(0),
            turn,
        })
    }

    /// How many workers there are.
    pub fn count(&self) -> usize {
        self.handles.len()
    }

    /// Runs `fut` on worker `i` (modulo the count).
    pub fn spawn_on<F>(&self, i: usize, fut: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handles[i % self.handles.len()].spawn(fut)
    }

    /// The next worker in a round robin over all of them.
    pub fn next_any(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len()
    }

    /// Places a pod on the `k` (at least one, at most all) workers with the fewest pods; the
    /// placement is released when dropped.
    pub fn place(&'static self, k: usize) -> Placement {
        let k = k.clamp(1, self.count());
        let mut by_load: Vec<(usize, usize)> = self
            .pods
            .iter()
            .enumerate()
            .map(|(i, p)| (p.load(Ordering::Relaxed), i))
            .collect();
        by_load.sort_unstable();
        let workers: Vec<usize> = by_load.into_iter().take(k).map(|(_, i)| i).collect();
        for &i in &workers {
            self.pods[i].fetch_add(1, Ordering::Relaxed);
        }
        let lanes = match self.turn {
            0 => Vec::new(),
            turn => workers.iter().map(|_| Lane::new(turn)).collect(),
        };
        Placement {
            workers,
            lanes,
            next: AtomicUsize::new(0),
            of: self,
        }
    }

    /// Pods placed on each worker.
    pub fn pods(&self) -> Vec<usize> {
        self.pods
            .iter()
            .map(|p| p.load(Ordering::Relaxed))
            .collect()
    }
}

/// Runs `fut` beside the calling task: in its lane when the caller is a lane's task (a
/// connection's upstream driver, HTTP/2 streams, mirrors, upgrades stay in their pod's turns),
/// else as a task of the current tokio runtime.
pub fn spawn<F>(fut: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    if std::mem::size_of::<F>() > BOX_ABOVE {
        spawn_sized(Box::pin(fut));
    } else {
        spawn_sized(fut);
    }
}

/// Futures larger than this are boxed before they are handed on, as tokio's own `spawn` does: an
/// unoptimised build copies a future on every move, and a few copies of an HTTP/2 stream's
/// future (the whole request's routing and forwarding) overflow a worker thread's stack.
const BOX_ABOVE: usize = if cfg!(debug_assertions) { 2048 } else { 16384 };

fn spawn_sized<F>(fut: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    if let Some(fut) = lane::spawn_here(fut) {
        tokio::spawn(fut);
    }
}

/// [`spawn`] for a future whose output nobody takes.
fn spawn_ignoring<F>(fut: F)
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    spawn(async move {
        fut.await;
    });
}

/// hyper's executor for the tasks a connection spawns (HTTP/2 streams and connection drivers):
/// [`spawn`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Exec;

impl<F> hyper::rt::Executor<F> for Exec
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        if std::mem::size_of::<F>() > BOX_ABOVE {
            spawn_ignoring(Box::pin(fut));
        } else {
            spawn_ignoring(fut);
        }
    }
}

/// The workers one pod's connections run on (see the module docs).
#[derive(Debug)]
pub struct Placement {
    workers: Vec<usize>,
    /// The pod's lane on each of its workers (empty without lanes).
    lanes: Vec<Arc<Lane>>,
    next: AtomicUsize,
    of: &'static Workers,
}

impl Placement {
    /// Runs `fut` (a new connection of the pod) on the pod's next worker, round robin over its
    /// workers, in the pod's lane there.
    pub fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        if std::mem::size_of::<F>() > BOX_ABOVE {
            self.spawn_sized(Box::pin(fut));
        } else {
            self.spawn_sized(fut);
        }
    }

    fn spawn_sized<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let n = self.next_index();
        let handle = &self.of.handles[self.workers[n]];
        match self.lanes.get(n) {
            Some(lane) => lane.spawn(handle, fut),
            None => drop(handle.spawn(fut)),
        }
    }

    /// Which of the pod's workers takes its next connection (round robin).
    fn next_index(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % self.workers.len()
    }

    /// The pod's workers.
    pub fn workers(&self) -> &[usize] {
        &self.workers
    }
}

impl Drop for Placement {
    fn drop(&mut self) {
        for &i in &self.workers {
            self.of.pods[i].fetch_sub(1, Ordering::Relaxed);
        }
        for lane in &self.lanes {
            lane.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leak(w: Workers) -> &'static Workers {
        Box::leak(Box::new(w))
    }

    #[test]
    fn pods_spread_over_the_least_loaded_workers_and_leave_on_drop() {
        let w = leak(Workers::start(3, DEFAULT_TURN, || {}).unwrap());
        let a = w.place(1);
        let b = w.place(1);
        let c = w.place(1);
        let mut on: Vec<usize> = [&a, &b, &c].iter().map(|p| p.workers()[0]).collect();
        on.sort_unstable();
        assert_eq!(on, [0, 1, 2], "one pod per worker");
        let wide = w.place(2);
        assert_eq!(wide.workers().len(), 2);
        assert_eq!(w.pods().iter().sum::<usize>(), 5);
        drop(b);
        drop(wide);
        assert_eq!(w.pods().iter().sum::<usize>(), 2);
        let all = w.place(10);
        assert_eq!(all.workers().len(), 3, "clamped to the worker count");
        let seen: Vec<usize> = (0..6).map(|_| all.workers()[all.next_index()]).collect();
        assert_eq!(seen[..3], seen[3..], "round robin");
    }

    #[test]
    fn a_task_runs_on_the_worker_it_was_given_and_its_spawns_stay_there() {
        let w = leak(Workers::start(2, 0, || {}).unwrap());
        for i in 0..2 {
            let (tx, rx) = std::sync::mpsc::channel();
            w.spawn_on(i, async move {
                let outer = index();
                let inner = tokio::spawn(async { index() }).await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                tx.send((outer, inner, index())).unwrap();
            });
            assert_eq!(rx.recv().unwrap(), (Some(i), Some(i), Some(i)));
        }
        assert_eq!(index(), None, "the test thread is no worker");
    }

    /// A future that is ready on its second poll and wakes itself on the first (the shape of a
    /// connection with data always waiting).
    fn yield_once() -> impl Future<Output = ()> {
        let mut yielded = false;
        std::future::poll_fn(move |cx| {
            if yielded {
                return std::task::Poll::Ready(());
            }
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        })
    }

    /// The busy pod's task polls a quiet pod's new task waited for before it ran, over 21
    /// trials, sorted, with 64 always-ready tasks of a busy pod on the same (single) worker.
    fn quiet_waits(turn: usize) -> Vec<usize> {
        quiet_waits_timed(turn, 0, 0, 0)
    }

    /// [`quiet_waits`] with turns bounded to `turn_us` µs (0: none), shared turns of `shared`
    /// polls (0: none) and busy polls that each run `spin_us` µs.
    fn quiet_waits_timed(turn: usize, turn_us: u32, shared: usize, spin_us: u64) -> Vec<usize> {
        use std::sync::atomic::AtomicBool;
        let w = leak(
            Workers::start(1, turn, move || {
                lane::turn_time_for_worker(turn_us);
                lane::shared_turn_for_worker(shared, lane::DEFAULT_SHARED_WINDOW_US);
            })
            .unwrap(),
        );
        let (busy, quiet) = (w.place(1), w.place(1));
        let polls: &'static AtomicUsize = Box::leak(Box::new(AtomicUsize::new(0)));
        let stop: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
        for _ in 0..64 {
            busy.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    polls.fetch_add(1, Ordering::Relaxed);
                    let t = std::time::Instant::now();
                    while t.elapsed().as_micros() < u128::from(spin_us) {
                        std::hint::spin_loop();
                    }
                    yield_once().await;
                }
            });
        }
        // Warm up: the busy pod's tasks all running (a shorter warm-up when its polls are slow).
        let warm = if spin_us > 0 { 1_000 } else { 10_000 };
        while polls.load(Ordering::Relaxed) < warm {
            std::thread::yield_now();
        }
        let mut waits = Vec::new();
        for _ in 0..21 {
            let (tx, rx) = std::sync::mpsc::channel();
            let before = polls.load(Ordering::Relaxed);
            quiet.spawn(async move {
                tx.send(polls.load(Ordering::Relaxed)).unwrap();
            });
            waits.push(rx.recv().unwrap() - before);
            // With slow busy polls, let the quiet lane's turn end first: a task spawned while
            // it is still running would join that turn and wait for nothing.
            if spin_us > 0 {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        }
        stop.store(true, Ordering::Relaxed);
        waits.sort_unstable();
        waits
    }

    #[test]
    fn a_quiet_pod_waits_one_turn_of_a_busy_pod_on_its_worker() {
        const TURN: usize = 4;
        let lanes = quiet_waits(TURN);
        let fifo = quiet_waits(0);
        // The busy pod's current turn (and the polls the test thread's own preemption adds:
        // hence the median, not the worst).
        assert!(
            lanes[10] <= 2 * TURN,
            "with lanes: {lanes:?}; without: {fifo:?}"
        );
        assert!(
            fifo[10] > lanes[10],
            "with lanes: {lanes:?}; without: {fifo:?}"
        );
        eprintln!("busy polls waited, with lanes: {lanes:?}; without: {fifo:?}");
    }

    /// Runs `trial` up to five times until it holds (a loaded machine, as CI running tests in
    /// parallel, preempts the worker and the test thread alike); panics with every try's
    /// findings, saying `what` never held.
    fn holds_in_one_of_five(what: &str, trial: impl Fn() -> Result<(), String>) {
        let mut seen = Vec::new();
        for _ in 0..5 {
            match trial() {
                Ok(()) => return,
                Err(e) => seen.push(e),
            }
        }
        panic!("{what}:\n{}", seen.join("\n"));
    }

    #[test]
    fn a_shared_worker_shortens_the_turns_of_the_busy_pod() {
        // Turns of 64 polls, 4 while shared: the quiet pod's tasks come one after the other
        // (each trial's within a millisecond of the one before), so from the second on the
        // busy pod's turns are the shared ones. The median, not the worst, as the test thread's
        // own preemption adds polls.
        holds_in_one_of_five("shared turns never cut the wait", || {
            let shared = quiet_waits_timed(64, 0, 4, 0);
            let own = quiet_waits_timed(64, 0, 0, 0);
            match shared[10] <= 8 && own[10] > 2 * shared[10].max(4) {
                true => Ok(()),
                false => Err(format!("shared turns: {shared:?}; own turns: {own:?}")),
            }
        });
    }

    #[test]
    fn a_turn_bounded_in_time_ends_before_its_polls_when_they_are_slow() {
        // Polls of 200 µs: a turn of 64 polls runs 12.8 ms, one bounded to 500 µs three polls.
        holds_in_one_of_five("a bounded turn never cut the wait", || {
            let timed = quiet_waits_timed(64, 500, 0, 200);
            let polls_only = quiet_waits_timed(64, 0, 0, 200);
            match timed[10] <= 16 && polls_only[10] >= 2 * timed[10].max(1) {
                true => Ok(()),
                false => Err(format!("bounded: {timed:?}; by polls only: {polls_only:?}")),
            }
        });
    }

    #[test]
    fn a_lanes_spawns_join_it_and_the_lane_ends_with_its_last_task() {
        let w = leak(Workers::start(1, DEFAULT_TURN, || {}).unwrap());
        let pod = w.place(1);
        let lane = pod.lanes[0].clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        pod.spawn(async move {
            spawn(async move {
                let _ = stop_rx.await;
            });
            tx.send(index()).unwrap();
        });
        assert_eq!(rx.recv().unwrap(), Some(0));
        // The outer task ends right after its send; the one it spawned stays, in the lane.
        let t = std::time::Instant::now();
        while lane.live() != 1 {
            assert!(
                lane.live() == 2 && t.elapsed().as_secs() < 5,
                "live: {}",
                lane.live()
            );
            std::thread::yield_now();
        }
        drop(pod);
        assert_eq!(w.pods(), [0], "the placement is released");
        stop_tx.send(()).unwrap();
        let t = std::time::Instant::now();
        while lane.live() > 0 || Arc::strong_count(&lane) > 1 {
            assert!(t.elapsed().as_secs() < 5, "the lane's driver did not end");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}
