//! The process's threads: the main runtime, and the payment workers —
//! thread-per-core, each running a single-threaded tokio runtime of its own.
//!
//! A leaf: it knows nothing of payments, configs or sockets. The ingress
//! hands the workers jobs ([`Workers::submit`]); the upstream client asks
//! [`worker_slot`] which of its per-worker connection pools is the calling
//! worker's; the composition root passes [`Workers::count`] down to
//! whatever is sized per worker. Nothing here is a global the rest of the
//! house reads, except the calling thread's own worker index.
//!
//! Why not tokio's work-stealing runtime for payments: a payment is a chain
//! of small hand-offs (merchant connection → payment task → upstream
//! connection task → back), and on a multi-threaded runtime each hand-off
//! may cross threads — a futex wake-up and an inter-processor interrupt,
//! expensive on virtual machines — and the upstream pool is shared, so a
//! connection opened by one worker is driven by it for the others. Here a
//! merchant connection lives on one worker for its whole life, the payments
//! on it run there, and so do the upstream connections they use: every
//! channel has one connection pool per worker. This is nginx's and actix's
//! model; the measurements are in BENCHMARKS.md.
//!
//! The accept loops stay on the main runtime ([`main_runtime`]) and hand
//! each accepted connection to the next worker in turn (connections are
//! long-lived: keep-alive, HTTP/2). Everything not on the payment path —
//! admin API, reload triggers, housekeeping, the Redis connection's driver —
//! stays on the main runtime (a reload itself runs on a thread of its own:
//! `crate::reload`). State the workers share (the config snapshot,
//! channel stats, limits, the idempotency store) is read through `Arc`s and
//! is lock-free or sharded.
//!
//! Each worker keeps one timer always armed ([`anchor_timers`]). Every
//! attempt arms a timeout, and tokio's timer wheel, seeing a deadline
//! earlier than any it knew when its thread last went to sleep, wakes that
//! thread through its eventfd — even when the thread arming it *is* that
//! thread and is awake. On an idle worker (no timer pending, the common case
//! at moderate load) that would be one `write` and one extra `epoll_wait`
//! per payment (counted with `perf stat`; BENCHMARKS.md). With an anchor
//! that is never further away than [`ANCHOR_EVERY`], an attempt's timeout
//! (longer than that) is never the earliest deadline and arms silently.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use tokio::sync::{mpsc, watch};

/// Work for a worker: runs on the worker's thread, inside its runtime (so
/// `tokio::spawn` there spawns onto the worker).
type Job = Box<dyn FnOnce() + Send>;

thread_local! {
    static INDEX: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The index of the worker running the caller, `None` off the workers.
pub(crate) fn current_worker() -> Option<usize> {
    INDEX.with(Cell::get)
}

/// The caller's slot among `slots` kept per worker (`slots >= 1`): its
/// worker's own, or the last one, shared by callers off the workers (and
/// by a worker beyond the count, which does not happen).
pub(crate) fn worker_slot(slots: usize) -> usize {
    let last = slots.saturating_sub(1);
    current_worker().map_or(last, |i| i.min(last))
}

/// The main runtime: accept loops, admin API, reload triggers,
/// housekeeping, the Redis driver. One thread: what runs there is light, and
/// the cores are the workers'.
pub(crate) fn main_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()
}

/// How often a worker's anchor timer fires: shorter than any sensible
/// attempt timeout (the default is 2 s), rare enough to cost nothing idle.
const ANCHOR_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Keeps a timer armed on this worker for as long as it runs (see the
/// module doc): a no-op that fires every [`ANCHOR_EVERY`].
async fn anchor_timers() {
    let mut tick = tokio::time::interval(ANCHOR_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}

/// The running workers.
pub(crate) struct Workers {
    queues: Vec<mpsc::UnboundedSender<Job>>,
    next: AtomicUsize,
    stop: watch::Sender<bool>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Starts `n` workers (0: one per available core).
    pub fn start(n: usize) -> std::io::Result<Workers> {
        let n = match n {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let (stop, stopped) = watch::channel(false);
        let mut queues = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        for index in 0..n {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let (queue, mut jobs) = mpsc::unbounded_channel::<Job>();
            let mut stopped = stopped.clone();
            let thread = std::thread::Builder::new()
                .name(format!("payroute-worker-{index}"))
                .spawn(move || {
                    INDEX.with(|i| i.set(Some(index)));
                    runtime.block_on(async move {
                        tokio::spawn(anchor_timers());
                        // Jobs until the queue closes (no more connections),
                        // then keep running what they spawned until told to stop.
                        while let Some(job) = jobs.recv().await {
                            job();
                        }
                        let _ = stopped.wait_for(|stop| *stop).await;
                    });
                })?;
            queues.push(queue);
            threads.push(thread);
        }
        Ok(Workers {
            queues,
            next: AtomicUsize::new(0),
            stop,
            threads,
        })
    }

    /// How many workers run: what per-worker structures (the upstream
    /// connection pools) are sized by.
    pub fn count(&self) -> usize {
        self.queues.len()
    }

    /// Runs `job` on the next worker (round robin).
    pub fn submit(&self, job: impl FnOnce() + Send + 'static) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.queues.len();
        // A worker only goes away after `stop`, which consumes `self`.
        let _ = self.queues[i].send(Box::new(job));
    }

    /// Stops the workers: what is still running on them (connections past
    /// the drain, background tasks) is dropped. Blocks until they exit.
    pub fn stop(self) {
        drop(self.queues);
        let _ = self.stop.send(true);
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc as std_mpsc;

    #[test]
    fn jobs_run_on_every_worker_in_turn_inside_its_runtime() {
        let workers = Workers::start(2).unwrap();
        assert_eq!(workers.count(), 2);
        assert_eq!(current_worker(), None, "the test thread is no worker");
        let (tx, rx) = std_mpsc::channel();
        for _ in 0..4 {
            let tx = tx.clone();
            workers.submit(move || {
                // Inside the worker's runtime: spawning works and stays there.
                let index = current_worker();
                tokio::spawn(async move {
                    tokio::task::yield_now().await;
                    let _ = tx.send((index, current_worker()));
                });
            });
        }
        let mut seen: Vec<_> = (0..4).map(|_| rx.recv().unwrap()).collect();
        seen.sort();
        assert_eq!(
            seen,
            [
                (Some(0), Some(0)),
                (Some(0), Some(0)),
                (Some(1), Some(1)),
                (Some(1), Some(1))
            ]
        );
        workers.stop();
    }

    #[test]
    fn spawned_work_keeps_running_until_stop() {
        let workers = Workers::start(1).unwrap();
        let (tx, rx) = std_mpsc::channel();
        workers.submit(move || {
            tokio::spawn(async move {
                for i in 0.. {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    if tx.send(i).is_err() {
                        break;
                    }
                }
            });
        });
        assert_eq!(rx.recv().unwrap(), 0);
        assert_eq!(rx.recv().unwrap(), 1);
        workers.stop();
        // The runtime is gone, and with it the task: the channel closes.
        while rx.recv().is_ok() {}
    }
}
