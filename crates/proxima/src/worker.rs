//! Which worker thread the current code runs on.
//!
//! The gateway serves on one single-threaded runtime per core (see `server::workers`), so
//! that a request never wakes another core. Resources that spawn tasks of their own, such as
//! the upstream connection pools, are picked by worker so that those tasks stay on the
//! thread that uses them.

use std::cell::Cell;

/// A worker's place among its siblings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Worker {
    pub index: usize,
    pub count: usize,
}

thread_local! {
    // Threads that are no worker (tests, blocking pools) count as the only one.
    static CURRENT: Cell<Worker> = const { Cell::new(Worker { index: 0, count: 1 }) };
}

/// The worker running on this thread.
pub fn current() -> Worker {
    CURRENT.with(Cell::get)
}

/// Marks this thread as `worker`.
pub(crate) fn set_current(worker: Worker) {
    CURRENT.with(|current| current.set(worker));
}

/// How many workers to run: `TOKIO_WORKER_THREADS` when set (the variable tokio's own
/// multi-threaded runtime reads), otherwise one per core this process may use (its CPU
/// affinity and cgroup quota count).
pub fn count_for_this_process() -> usize {
    std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|n| n.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
        .unwrap_or(1)
}
