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
//! over the workers. The workers also ask the kernel for a short scheduler slice ([`slice`]), so a
//! task that wakes on a core where a worker serves a busy pod waits at most that long.
//! Outside the agent (`sluice proxy`, the sidecar) no workers are installed and connections run
//! on the caller's runtime.

use std::{
    cell::Cell,
    future::Future,
    sync::{
        atomic::{AtomicUsize, Ordering},
        OnceLock,
    },
};

use tokio::{runtime::Handle, task::JoinHandle};

pub mod slice;

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
}

/// The process's workers, once [`install`]ed.
pub fn get() -> Option<&'static Workers> {
    INSTALLED.get()
}

/// The worker the calling thread is (`None` outside the workers).
pub fn index() -> Option<usize> {
    INDEX.with(Cell::get)
}

/// Starts `n` (at least one) worker threads and makes them the process's workers; each thread
/// runs `on_start` first (e.g. [`slice::for_worker`]). Fails if workers are already
/// installed or a thread or runtime cannot be made.
pub fn install(
    n: usize,
    on_start: impl Fn() + Send + Clone + 'static,
) -> std::io::Result<&'static Workers> {
    let workers = Workers::start(n, on_start)?;
    INSTALLED
        .set(workers)
        .map_err(|_| std::io::Error::other("the workers are already installed"))?;
    Ok(INSTALLED.get().expect("just set"))
}

impl Workers {
    /// Starts `n` (at least one) worker threads. They run for the rest of the process.
    pub fn start(
        n: usize,
        on_start: impl Fn() + Send + Clone + 'static,
    ) -> std::io::Result<Workers> {
        let n = n.max(1);
        let mut handles = Vec::with_capacity(n);
        for i in 0..n {
            let (tx, rx) = std::sync::mpsc::channel();
            let on_start = on_start.clone();
            std::thread::Builder::new()
                .name(format!("sluice-worker-{i}"))
                .spawn(move || {
                    INDEX.with(|c| c.set(Some(i)));
                    on_start();
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build();
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
        Placement {
            workers,
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

/// The workers one pod's connections run on (see the module docs).
#[derive(Debug)]
pub struct Placement {
    workers: Vec<usize>,
    next: AtomicUsize,
    of: &'static Workers,
}

impl Placement {
    /// The worker for the pod's next connection (round robin over its workers).
    pub fn next(&self) -> usize {
        self.workers[self.next.fetch_add(1, Ordering::Relaxed) % self.workers.len()]
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
        let w = leak(Workers::start(3, || {}).unwrap());
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
        let seen: Vec<usize> = (0..6).map(|_| all.next()).collect();
        assert_eq!(seen[..3], seen[3..], "round robin");
    }

    #[test]
    fn a_task_runs_on_the_worker_it_was_given_and_its_spawns_stay_there() {
        let w = leak(Workers::start(2, || {}).unwrap());
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
}
