//! SQLite's lane: the one connection that writes, shared under a lock by
//! the writer thread and the payment workers.
//!
//! A payment's own writes — its open, a failover, its close: small, on the
//! stage ([`committed_inline`]) — are committed by the worker that waits for
//! them when the connection is free, after one yield so that the payments
//! ready on that worker commit together. A hand-off to a writer thread and
//! back cost two cross-thread wake-ups per commit, the largest part of a
//! payment's added latency (BENCHMARKS.md, "Session 11"). Everything else
//! (history, projections, the sweeper's claims, the outbox), and whatever a
//! worker can not commit at once (the connection is busy, SQLite's lock is
//! held by a checkpoint, a batch failed), is the writer thread's: a worker
//! never waits for SQLite's lock and commits one batch at most. Under
//! `synchronous = "full"` (a disk sync per commit) workers commit nothing:
//! the writer thread's group commit shares each sync among all the payments
//! waiting. Batches run synchronously through rusqlite
//! ([`sql::sqlite`](crate::journal::sql::sqlite)).
//!
//! The writer thread also projects the stage into `payments` every
//! [`PROJECT_EVERY`] or [`PROJECT_ROWS`] rows, and tells readers whether
//! anything is staged (`any_staged`).

use std::future::Future;
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::task::{Context, Poll, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use rusqlite::ErrorCode;
use tokio::sync::mpsc;

use super::{commit, Batch, Job, LANE_DEPTH, MAX_BATCH};
use crate::journal::model::*;
use crate::journal::sql;
use crate::journal::JournalError;

/// SQLite's writer thread waits [`GATHER`] for more jobs before committing when it
/// found at least this many queued: jobs arriving together are the sign of
/// a busy journal, where one commit for more jobs saves more than the wait
/// costs. A commit writes every page it changed once, however many jobs
/// changed it; one payment alone dirties about six pages (its row and five
/// indexes), so lone commits cost both the writer's time and WAL volume
/// that checkpoints must copy back (BENCHMARKS.md, session 6). A lone job
/// (a quiet journal) is committed at once. (A worker gathers differently:
/// it yields once, so the payments ready on it queue theirs first.)
const GATHER_FROM: usize = 2;
/// How long the writer waits for company before a busy commit.
const GATHER: Duration = Duration::from_micros(100);
/// Staged payments are moved into `payments` at the latest this long after
/// the first of them was staged... A projection holds the connection, and
/// the payments that want it meanwhile wait for it: at 2,000 payments a
/// second the projection's hold was what made the p99 (every 10 ms against
/// every 100: p99 1.7-2.2 against 2.9-4.2 ms, for ~5 % of closed-loop
/// throughput, as more payments are projected before they close;
/// BENCHMARKS.md, "Session 11").
const PROJECT_EVERY: Duration = Duration::from_millis(10);
/// ...or as soon as this many are staged.
const PROJECT_ROWS: usize = 2_048;

/// SQLite: statements on the connection of whoever holds the lane; nothing
/// here waits but [`SqliteBatch::begin`] when told to be patient.
struct SqliteBatch {
    conn: rusqlite::Connection,
    /// Payments on the stage, and since when (the first of them).
    staged: usize,
    staged_since: Option<Instant>,
    /// Whether a reader must ask for a projection first; shared with [`super::Lanes`].
    any_staged: Arc<AtomicBool>,
}

impl SqliteBatch {
    fn statement(&self, sql: &str) -> Result<(), JournalError> {
        self.conn.prepare_cached(sql)?.execute([])?;
        Ok(())
    }

    /// When the stage is due to be projected, if anything is staged.
    fn projection_due(&self) -> Option<Instant> {
        self.staged_since.map(|since| since + PROJECT_EVERY)
    }

    /// Whether the stage is due to be projected: enough rows, or the first
    /// has waited long enough.
    fn must_project(&self) -> bool {
        self.staged >= PROJECT_ROWS || self.projection_due().is_some_and(|at| at <= Instant::now())
    }

    /// Opens a batch's transaction. IMMEDIATE takes the write lock now, not
    /// at the first write, so a checkpoint or another process can not make
    /// the batch fail halfway. The connection has no busy handler of its
    /// own: a worker must never sleep in one. `Ok(false)`: another
    /// connection holds the lock (a checkpoint starting the WAL over) and
    /// the caller is not `patient`; a patient caller (the writer thread)
    /// waits for it, up to `BUSY_TIMEOUT`.
    fn begin(&self, patient: bool) -> Result<bool, JournalError> {
        let started = Instant::now();
        let mut pause = Duration::from_micros(50);
        loop {
            match self.conn.prepare_cached("BEGIN IMMEDIATE")?.execute([]) {
                Ok(_) => return Ok(true),
                Err(e) if e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy) => {
                    if !patient {
                        return Ok(false);
                    }
                    if started.elapsed() >= crate::journal::BUSY_TIMEOUT {
                        return Err(e.into());
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(5));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Runs `ops` in the transaction [`SqliteBatch::begin`] opened and
    /// commits; the replies, in order. A failure rolls the whole batch back.
    fn transact(&mut self, ops: &[&Op]) -> Result<Vec<Reply>, JournalError> {
        let mut tx = sql::sqlite::SqliteTx(&self.conn);
        // The stage's count moves with the transaction: kept only if it commits.
        let mut staged = self.staged;
        let mut replies = Vec::with_capacity(ops.len());
        let mut result = Ok(());
        for op in ops {
            match now(sql::staged::apply(&mut tx, op, &mut staged)).unwrap_or(Err(WAITED)) {
                Ok(reply) => replies.push(reply),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if let Err(e) = result.and_then(|()| self.statement("COMMIT")) {
            // A failed ROLLBACK leaves nothing to add to `e`: SQLite rolls
            // an unfinished transaction back by itself.
            let _ = self.statement("ROLLBACK");
            return Err(e);
        }
        if staged == 0 {
            self.staged_since = None;
        } else if self.staged_since.is_none() || staged < self.staged {
            // Rows staged since a projection (this batch's, or the first).
            self.staged_since = Some(Instant::now());
        }
        self.staged = staged;
        // Before any caller hears of its commit: a reader that follows sees it.
        self.any_staged.store(staged > 0, Ordering::Release);
        Ok(replies)
    }
}

impl Batch for SqliteBatch {
    /// The writer thread's batch: patient.
    async fn run(&mut self, ops: &[&Op]) -> Result<Vec<Reply>, JournalError> {
        self.begin(true)?;
        self.transact(ops)
    }
}

/// Drives a future of the SQLite driver to its end. Its futures never wait
/// (they share [`sql::Tx`] with PostgreSQL's, which do); `None` if one did.
fn now<F: Future>(f: F) -> Option<F::Output> {
    match std::pin::pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => Some(out),
        Poll::Pending => None,
    }
}

/// What a SQLite future that waited is answered with: a bug, not the database.
const WAITED: JournalError = JournalError::Internal("a SQLite statement waited");

/// SQLite's lane: the one connection that writes and its queue, shared by
/// the writer thread and the workers that commit their payments' writes
/// themselves (see the module's doc).
///
/// Nothing queued is left behind: a job is counted in `queued` before it
/// is sent; whoever holds the connection takes jobs from the queue (and
/// uncounts them) under the lock; a worker that leaves jobs queued when it
/// lets the connection go — it commits one batch at most — wakes the writer
/// thread, which commits until nothing is queued before it sleeps. A job
/// whose sender found the connection held is therefore seen counted by the
/// holder as it lets go, which wakes the writer thread for it (the fences
/// order the count against the lock).
struct SqliteLane {
    state: Mutex<SqliteState>,
    /// Jobs counted in and not taken from the queue yet.
    queued: AtomicUsize,
    /// The journal was dropped: the writer commits what is left and ends.
    closed: AtomicBool,
}

struct SqliteState {
    db: SqliteBatch,
    /// A payment's own writes ([`committed_inline`]): for whoever holds
    /// the connection.
    inline: mpsc::Receiver<Job>,
    /// Everything else: for the writer thread only.
    writer: mpsc::Receiver<Job>,
    /// Jobs a worker took but could not commit: the writer thread's first.
    handed_over: Vec<Job>,
}

impl SqliteLane {
    /// The connection, for the writer thread. A worker that panicked
    /// holding it may have left a transaction open: rolled back here.
    fn lock(&self) -> MutexGuard<'_, SqliteState> {
        self.state.lock().unwrap_or_else(|poisoned| {
            self.state.clear_poison();
            let state = poisoned.into_inner();
            if !state.db.conn.is_autocommit() {
                let _ = state.db.statement("ROLLBACK");
            }
            state
        })
    }

    /// A worker's commit: if the connection is free, one batch of what is
    /// queued (its own job among it, unless the holder took it), then the
    /// writer thread is woken for whatever is left.
    fn lead(&self, writer: &Thread) {
        match self.state.try_lock() {
            Ok(mut state) => state.commit_inline(&self.queued, writer),
            // Held: the holder sees this job when it lets go.
            Err(TryLockError::WouldBlock) => {}
            // A panic while holding it: the writer thread recovers it.
            Err(TryLockError::Poisoned(_)) => writer.unpark(),
        }
        fence(Ordering::SeqCst);
        if self.queued.load(Ordering::SeqCst) > 0 {
            writer.unpark();
        }
    }
}

/// Moves jobs from `queue` into `batch` (up to [`MAX_BATCH`]), uncounting them.
fn take(queue: &mut mpsc::Receiver<Job>, queued: &AtomicUsize, batch: &mut Vec<Job>) {
    while batch.len() < MAX_BATCH {
        match queue.try_recv() {
            Ok(job) => {
                queued.fetch_sub(1, Ordering::SeqCst);
                batch.push(job);
            }
            Err(_) => break,
        }
    }
}

impl SqliteState {
    /// The writer thread's take: jobs handed over, then both queues, into
    /// `batch` (up to [`MAX_BATCH`]).
    fn take_all(&mut self, queued: &AtomicUsize, batch: &mut Vec<Job>) {
        let handed = self.handed_over.len().min(MAX_BATCH.saturating_sub(batch.len()));
        batch.extend(self.handed_over.drain(..handed));
        take(&mut self.inline, queued, batch);
        take(&mut self.writer, queued, batch);
    }

    /// One batch, committed on the calling worker without waiting for
    /// SQLite's lock; anything that would need more is handed over.
    fn commit_inline(&mut self, queued: &AtomicUsize, writer: &Thread) {
        let mut batch = Vec::new();
        take(&mut self.inline, queued, &mut batch);
        if batch.is_empty() {
            return;
        }
        let first_staged = self.db.staged_since.is_none();
        let ops: Vec<&Op> = batch.iter().map(|j| &j.op).collect();
        let done = match self.db.begin(false) {
            Ok(true) => self.db.transact(&ops).ok(),
            // Busy, or the database is failing: the writer thread's, with
            // its patience and its one-job-at-a-time retry.
            Ok(false) | Err(_) => None,
        };
        drop(ops);
        let Some(replies) = done else {
            self.handed_over.append(&mut batch);
            writer.unpark();
            return;
        };
        for (job, reply) in batch.drain(..).zip(replies) {
            // A caller that stopped waiting does not undo the commit.
            let _ = job.reply.send(Ok(reply));
        }
        // The stage's deadline started, or it is full: the writer projects.
        if (first_staged && self.db.staged_since.is_some()) || self.db.staged >= PROJECT_ROWS {
            writer.unpark();
        }
    }
}

/// What submitting to SQLite's lane takes beside the writer's queue.
pub(super) struct SqliteHandle {
    lane: Arc<SqliteLane>,
    /// The queue of [`committed_inline`] jobs.
    inline: mpsc::Sender<Job>,
    /// Whether workers commit at all: not where every commit syncs the
    /// disk (`synchronous = FULL`, ~3 ms a commit), which would stall
    /// every payment on that worker; the writer thread's group commit
    /// shares one sync among all of them instead.
    workers_commit: bool,
    writer: Thread,
}

impl SqliteHandle {
    /// Starts the writer thread on `conn`; the writer's queue and the handle.
    pub(super) fn start(
        conn: rusqlite::Connection,
        any_staged: Arc<AtomicBool>,
    ) -> Result<(mpsc::Sender<Job>, SqliteHandle), JournalError> {
        // 1: NORMAL (a WAL commit writes, the checkpoint syncs).
        let workers_commit = conn
            .pragma_query_value(None, "synchronous", |row| row.get::<_, i64>(0))
            .is_ok_and(|level| level <= 1);
        let (tx, rx) = mpsc::channel(LANE_DEPTH);
        let (inline_tx, inline_rx) = mpsc::channel(LANE_DEPTH);
        let db = SqliteBatch {
            conn,
            staged: 0,
            staged_since: None,
            any_staged: any_staged.clone(),
        };
        let lane = Arc::new(SqliteLane {
            state: Mutex::new(SqliteState {
                db,
                inline: inline_rx,
                writer: rx,
                handed_over: Vec::new(),
            }),
            queued: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        });
        let writer = std::thread::Builder::new()
            .name("payroute-journal".into())
            .spawn({
                let lane = lane.clone();
                move || sqlite_writer(&lane)
            })
            .map_err(|e| JournalError::Open(format!("cannot start the journal's writer: {e}")))?;
        let handle = SqliteHandle {
            lane,
            inline: inline_tx,
            workers_commit,
            writer: writer.thread().clone(),
        };
        Ok((tx, handle))
    }

    #[cfg(test)]
    pub(super) fn workers_commit(&self) -> bool {
        self.workers_commit
    }

    /// Queues `job`: a payment's own write on the inline queue, then this
    /// worker commits if it can; anything else on `writer_queue`, for the
    /// writer thread.
    pub(super) async fn queue(&self, job: Job, writer_queue: &mpsc::Sender<Job>) -> Result<(), JournalError> {
        let inline = self.workers_commit && committed_inline(&job.op);
        // Counted before it is queued (and uncounted if the send is
        // given up): a holder letting go never misses it.
        let counted = Counted::new(&self.lane.queued);
        let queue = if inline { &self.inline } else { writer_queue };
        queue.send(job).await.map_err(|_| JournalError::Closed)?;
        counted.keep();
        if inline {
            // The payments ready on this worker queue theirs first:
            // one commit for all of them.
            tokio::task::yield_now().await;
            self.lane.lead(&self.writer);
        } else {
            self.writer.unpark();
        }
        Ok(())
    }
}

/// The journal was dropped: the writer thread commits what is left,
/// projects the stage and ends.
impl Drop for SqliteHandle {
    fn drop(&mut self) {
        self.lane.closed.store(true, Ordering::SeqCst);
        self.writer.unpark();
    }
}

/// The ops a worker commits itself on SQLite: a payment's own writes on
/// the stage, which its answer waits for. Anything that may project the
/// stage or write many rows is the writer thread's.
fn committed_inline(op: &Op) -> bool {
    matches!(
        op,
        Op::Insert(_) | Op::SetChannel { .. } | Op::Transition { event: None, .. }
    )
}

/// A job counted in [`SqliteLane::queued`] before it is sent; uncounted if
/// the send does not happen (the caller gave up while the queue was full).
struct Counted<'a>(Option<&'a AtomicUsize>);

impl<'a> Counted<'a> {
    fn new(queued: &'a AtomicUsize) -> Self {
        queued.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        Counted(Some(queued))
    }

    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        if let Some(queued) = self.0 {
            queued.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// SQLite's writer thread: sleeps until woken (a job for it, jobs a worker
/// left) or the stage's deadline, then commits until nothing is queued. It
/// projects what an earlier run left staged before anything else, and
/// what is staged when the journal is dropped, then ends.
fn sqlite_writer(lane: &SqliteLane) {
    project(&mut lane.lock().db);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let (idle, due) = {
            let state = lane.lock();
            let idle = state.handed_over.is_empty() && lane.queued.load(Ordering::SeqCst) == 0;
            (idle, state.db.projection_due())
        };
        let closed = lane.closed.load(Ordering::SeqCst);
        if idle && !closed {
            // A wake-up between the check and here is not lost: `unpark`
            // before `park` makes it return at once.
            match due {
                Some(at) => std::thread::park_timeout(at.saturating_duration_since(Instant::now())),
                None => std::thread::park(),
            }
        }
        let mut state = lane.lock();
        loop {
            state.take_all(&lane.queued, &mut batch);
            if batch.len() >= GATHER_FROM && batch.len() < MAX_BATCH {
                // Holding the connection: workers meanwhile queue for this batch.
                std::thread::sleep(GATHER);
                state.take_all(&lane.queued, &mut batch);
            }
            if batch.is_empty() {
                break;
            }
            if now(commit(&mut state.db, &mut batch)).is_none() {
                // Its jobs are still in `batch`: tried again next round.
                tracing::error!("journal: a SQLite batch waited");
            }
        }
        if state.db.must_project() {
            project(&mut state.db);
        }
        if closed && lane.queued.load(Ordering::SeqCst) == 0 {
            project(&mut state.db);
            return;
        }
    }
}

/// A projection on its own (the stage's deadline passed or it is full, or
/// the writer starts or ends). A failure leaves the rows staged, where
/// every op and the next projection still find them.
fn project(db: &mut SqliteBatch) {
    if !db.any_staged.load(Ordering::Acquire) {
        return;
    }
    if let Err(e) = now(db.run(&[&Op::Project])).unwrap_or(Err(WAITED)) {
        tracing::warn!(error = %e, "journal: staged payments not projected yet");
        // Tried again at the next deadline, not at once.
        if db.staged > 0 {
            db.staged_since = Some(Instant::now());
        }
    }
}
