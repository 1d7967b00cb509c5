//! Group commit: every write to the journal is queued, and whoever commits
//! takes whatever has queued up as one transaction, then answers each
//! caller.
//!
//! A transaction per call costs a round trip for `BEGIN` and `COMMIT` each
//! and, where the database syncs, one sync per call; at thousands of
//! payments a second that is the bottleneck. A committer instead takes every
//! job waiting in its queue (up to [`MAX_BATCH`]), runs them in one
//! transaction and answers them all after `COMMIT`: under load batches grow
//! by themselves, and an idle journal still commits a lone job at once, with
//! no added delay. Nothing is acknowledged before its commit.
//!
//! - **Lanes.** SQLite has one connection that writes (SQLite allows one
//!   writer at a time anyway), shared under a lock by a writer thread and
//!   the payment workers ([`SqliteLane`]). A payment's own writes — its
//!   open, a failover, its close: small, on the stage — are committed by the
//!   worker that waits for them when the connection is free, after one
//!   yield so that the payments ready on that worker commit together; a
//!   hand-off to another thread and back cost two cross-thread wake-ups per
//!   commit, the largest part of a payment's added latency (BENCHMARKS.md,
//!   "Session 11"). Everything else (history, projections, the sweeper's
//!   claims, the outbox), and whatever a worker can not commit at once (the
//!   connection is busy, SQLite's lock is held by a checkpoint, a batch
//!   failed), is the writer thread's: a worker never waits for SQLite's
//!   lock and commits one batch at most. Under `synchronous = "full"` (a
//!   disk sync per commit) workers commit nothing: the writer thread's group
//!   commit shares each sync among all the payments waiting. Batches run
//!   synchronously through rusqlite ([`sql::sqlite`]).
//!   PostgreSQL has [`PG_LANES`] writer tasks, each on its own connection; a job
//!   about a payment always goes to the lane its trade number hashes to, so
//!   moves of one payment never race each other inside an instance and
//!   batches of different lanes touch different payments.
//! - **Staging.** SQLite's writer stages new payments and projects them
//!   into `payments` every [`PROJECT_EVERY`] or [`PROJECT_ROWS`] rows
//!   ([`sql::staged`] says why and how reads stay exact); it tells readers
//!   whether anything is staged through [`Lanes::staged`].
//! - **A failed batch** (a lost connection, a deadlock with another instance)
//!   is rolled back whole and its jobs are run again one transaction each, so
//!   one bad job fails alone and every caller gets its own answer.
//! - **History** ([`HistoryRow`]: attempts, rejected notifications) is not
//!   money: callers hand it over without waiting ([`History::push`]) and a
//!   flusher task sends it to a writer every [`FLUSH_EVERY`] or
//!   [`FLUSH_ROWS`] rows. The longest a crash can lose is therefore what
//!   arrived in the last [`FLUSH_EVERY`] plus the batch being committed.
//!   The flusher is woken by the first row of a window, not by each: a
//!   wake-up per row was a cross-thread wake (a write to the other
//!   runtime's eventfd, a context switch) per payment.
//!   While the database is down, history that cannot be written is dropped
//!   and counted (`Journal::history_dropped`); money writes fail instead.

use std::future::Future;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::task::{Context, Poll, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use rusqlite::ErrorCode;
use tokio::sync::{mpsc, oneshot, Notify};

use super::model::*;
use super::sql;
use super::JournalError;

/// Most jobs committed in one transaction.
pub(super) const MAX_BATCH: usize = 256;
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
/// Jobs waiting per lane before callers wait to enqueue (back-pressure).
const LANE_DEPTH: usize = 8_192;
/// PostgreSQL writer lanes (connections that write).
pub(super) const PG_LANES: usize = 4;
/// A batch that takes longer than this is given up (the database hangs);
/// its callers get `Unavailable`. It may still commit: every write is safe
/// to repeat (keys, compare-and-set), so a caller that retries is right.
const BATCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Staged payments are moved into `payments` at the latest this long after
/// the first of them was staged...
const PROJECT_EVERY: Duration = Duration::from_millis(100);
/// ...or as soon as this many are staged.
const PROJECT_ROWS: usize = 2_048;

/// History is flushed this often...
pub(crate) const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// ...or as soon as this many rows wait.
const FLUSH_ROWS: usize = 1_000;
/// History waiting to be flushed; beyond it new rows are dropped (counted).
const HISTORY_DEPTH: usize = 65_536;

struct Job {
    op: Op,
    reply: oneshot::Sender<Result<Reply, JournalError>>,
}

/// Where writes go: SQLite's one connection (moved onto the writer's
/// thread) or PostgreSQL's pool (a connection per lane).
pub(super) enum WritePool {
    Sqlite(rusqlite::Connection),
    Postgres(sqlx::PgPool),
}

/// A backend's way to run a batch as one transaction.
trait Batch {
    /// Runs `ops` in one transaction; the replies, in order, once committed.
    /// A failure rolls the whole batch back.
    async fn run(&mut self, ops: &[&Op]) -> Result<Vec<Reply>, JournalError>;
}

/// SQLite: statements on the connection of whoever holds the lane; nothing
/// here waits but [`SqliteBatch::begin`] when told to be patient.
struct SqliteBatch {
    conn: rusqlite::Connection,
    /// Payments on the stage, and since when (the first of them).
    staged: usize,
    staged_since: Option<Instant>,
    /// Whether a reader must ask for a projection first; shared with [`Lanes`].
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

    /// Whether `staged` rows are due to be projected: enough of them, or
    /// the first has waited long enough.
    fn must_project(&self, staged: usize) -> bool {
        staged > 0 && (staged >= PROJECT_ROWS || self.projection_due().is_some_and(|at| at <= Instant::now()))
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
                    if started.elapsed() >= super::BUSY_TIMEOUT {
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
    /// `project`: the stage is projected too if it is due (the writer
    /// thread's batches; a worker's never carry that cost).
    fn transact(&mut self, ops: &[&Op], project: bool) -> Result<Vec<Reply>, JournalError> {
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
        if result.is_ok() && project && self.must_project(staged) {
            result = now(sql::staged::project(&mut tx, &mut staged)).unwrap_or(Err(WAITED));
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
    /// The writer thread's batch: patient, and projecting when due.
    async fn run(&mut self, ops: &[&Op]) -> Result<Vec<Reply>, JournalError> {
        self.begin(true)?;
        self.transact(ops, true)
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
            Ok(true) => self.db.transact(&ops, false).ok(),
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

/// PostgreSQL: a pooled connection's transaction, given up after
/// [`BATCH_TIMEOUT`] (the database hangs).
struct PgBatch(sqlx::PgPool);

impl Batch for PgBatch {
    async fn run(&mut self, ops: &[&Op]) -> Result<Vec<Reply>, JournalError> {
        let work = async {
            let mut tx = self.0.begin().await?;
            let mut replies = Vec::with_capacity(ops.len());
            for op in ops {
                replies.push(sql::apply(&mut sql::postgres::PgTx(&mut tx), op).await?);
            }
            tx.commit().await?;
            Ok(replies)
        };
        tokio::time::timeout(BATCH_TIMEOUT, work)
            .await
            .unwrap_or_else(|_| Err(JournalError::Unavailable("timed out".into())))
    }
}

/// The writer lanes of one journal.
pub(super) struct Lanes {
    senders: Box<[mpsc::Sender<Job>]>,
    /// Whether payments may be staged (SQLite; see [`Lanes::staged`]).
    any_staged: Arc<AtomicBool>,
    /// SQLite's lane (its writer thread's queue is `senders[0]`).
    sqlite: Option<SqliteHandle>,
}

/// What submitting to SQLite's lane takes beside the writer's queue.
struct SqliteHandle {
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

impl Lanes {
    /// Starts the writers: SQLite's on a thread of its own (its work is
    /// synchronous C, and a thread of its own keeps it off the runtime's
    /// workers), PostgreSQL's [`PG_LANES`] as tasks on the current runtime.
    pub fn start(pool: WritePool) -> Result<Lanes, JournalError> {
        // Until the SQLite writer has projected what an earlier run left
        // staged, readers must ask it to.
        let any_staged = Arc::new(AtomicBool::new(matches!(pool, WritePool::Sqlite(_))));
        let (senders, sqlite) = match pool {
            WritePool::Sqlite(conn) => {
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
                (vec![tx], Some(handle))
            }
            WritePool::Postgres(pool) => {
                let senders = (0..PG_LANES)
                    .map(|_| {
                        let (tx, rx) = mpsc::channel(LANE_DEPTH);
                        tokio::spawn(pg_writer(PgBatch(pool.clone()), rx));
                        tx
                    })
                    .collect();
                (senders, None)
            }
        };
        Ok(Lanes {
            senders: senders.into_boxed_slice(),
            any_staged,
            sqlite,
        })
    }

    /// Whether payment workers commit their payments' writes themselves.
    #[cfg(test)]
    pub fn workers_commit(&self) -> bool {
        self.sqlite.as_ref().is_some_and(|s| s.workers_commit)
    }

    /// Whether a reader of `payments` must first ask for a projection
    /// (`Op::Project`): something may be staged.
    pub fn staged(&self) -> bool {
        self.any_staged.load(Ordering::Acquire)
    }

    /// The lane of `key` (a trade number; `None`: lane 0).
    pub fn lane(&self, key: Option<&str>) -> usize {
        key.map_or(0, |k| lane_of(k, self.senders.len()))
    }

    /// Runs `op` on `lane` and waits for its commit.
    pub async fn submit(&self, lane: usize, op: Op) -> Result<Reply, JournalError> {
        let (reply, answer) = oneshot::channel();
        let sender = &self.senders[lane % self.senders.len()];
        match &self.sqlite {
            None => sender.send(Job { op, reply }).await.map_err(|_| JournalError::Closed)?,
            Some(sqlite) => {
                let inline = sqlite.workers_commit && committed_inline(&op);
                // Counted before it is queued (and uncounted if the send is
                // given up): a holder letting go never misses it.
                let counted = Counted::new(&sqlite.lane.queued);
                let queue = if inline { &sqlite.inline } else { sender };
                queue.send(Job { op, reply }).await.map_err(|_| JournalError::Closed)?;
                counted.keep();
                if inline {
                    // The payments ready on this worker queue theirs first:
                    // one commit for all of them.
                    tokio::task::yield_now().await;
                    sqlite.lane.lead(&sqlite.writer);
                } else {
                    sqlite.writer.unpark();
                }
            }
        }
        answer.await.map_err(|_| JournalError::Closed)?
    }
}

impl Drop for Lanes {
    fn drop(&mut self) {
        if let Some(sqlite) = &self.sqlite {
            sqlite.lane.closed.store(true, Ordering::SeqCst);
            sqlite.writer.unpark();
        }
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

/// FNV-1a: cheap, stable, and enough to spread trade numbers over a few lanes.
fn lane_of(key: &str, lanes: usize) -> usize {
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    (hash % lanes as u64) as usize
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
        if state.db.must_project(state.db.staged) {
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

async fn pg_writer(mut db: PgBatch, mut rx: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        commit(&mut db, &mut batch).await;
    }
}

/// Commits `batch` as one transaction (or, if that fails, each job alone)
/// and answers every job.
async fn commit(db: &mut impl Batch, batch: &mut Vec<Job>) {
    let ops: Vec<&Op> = batch.iter().map(|j| &j.op).collect();
    let result = db.run(&ops).await;
    drop(ops);
    let failed = match result {
        Ok(replies) => {
            for (job, reply) in batch.drain(..).zip(replies) {
                // A caller that stopped waiting does not undo the commit.
                let _ = job.reply.send(Ok(reply));
            }
            return;
        }
        Err(e) => e,
    };
    // The database refused something in the batch: each job alone, so only
    // the one at fault fails. When the database itself is gone, trying each
    // job would only make every caller wait once more per job before it.
    if batch.len() > 1 && !matches!(failed, JournalError::Unavailable(_)) {
        tracing::debug!(jobs = batch.len(), error = %failed, "journal: batch rolled back; committing its jobs one by one");
        for job in batch.drain(..) {
            let answer = db
                .run(&[&job.op])
                .await
                .and_then(|mut replies| replies.pop().ok_or(JournalError::Internal("no reply")));
            let _ = job.reply.send(answer);
        }
        return;
    }
    for job in batch.drain(..) {
        let _ = job.reply.send(Err(failed.clone()));
    }
}

/// The write-behind side: a bounded queue and the task that flushes it.
pub(super) struct History {
    tx: mpsc::Sender<HistoryMsg>,
    /// Ends the flusher's window early: the window is full, or a caller
    /// waits for a flush.
    due: Arc<Notify>,
    /// Rows dropped: the queue was full, or the database stayed down.
    pub dropped: Arc<AtomicU64>,
}

enum HistoryMsg {
    Row(HistoryRow),
    /// Answered once everything queued before it is committed.
    Flush(oneshot::Sender<Result<(), JournalError>>),
}

impl History {
    pub fn start(lanes: Arc<Lanes>) -> History {
        let (tx, rx) = mpsc::channel(HISTORY_DEPTH);
        let due = Arc::new(Notify::new());
        let dropped = Arc::new(AtomicU64::new(0));
        tokio::spawn(flusher(rx, due.clone(), lanes, dropped.clone()));
        History { tx, due, dropped }
    }

    /// Never waits: a full queue drops the row (and counts it).
    pub fn push(&self, row: HistoryRow) {
        if self.tx.try_send(HistoryMsg::Row(row)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        } else if self.tx.max_capacity() - self.tx.capacity() >= FLUSH_ROWS {
            // A full window: no need to wait for its end.
            self.due.notify_one();
        }
    }

    /// Waits until everything pushed before is committed.
    pub async fn flush(&self) -> Result<(), JournalError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(HistoryMsg::Flush(tx))
            .await
            .map_err(|_| JournalError::Closed)?;
        self.due.notify_one();
        rx.await.map_err(|_| JournalError::Closed)?
    }
}

/// Flushes history a window at a time: the first row (or flush request)
/// wakes it and opens a window of [`FLUSH_EVERY`]; rows arriving meanwhile
/// only queue — the flusher is not waiting on the queue then, so sending
/// wakes nobody — until the window ends, fills ([`FLUSH_ROWS`]) or a
/// caller asks for a flush. An idle journal has no timer running.
async fn flusher(mut rx: mpsc::Receiver<HistoryMsg>, due: Arc<Notify>, lanes: Arc<Lanes>, dropped: Arc<AtomicU64>) {
    let mut msgs = Vec::with_capacity(FLUSH_ROWS);
    loop {
        let mut closed = rx.recv_many(&mut msgs, FLUSH_ROWS).await == 0;
        let asked = msgs.iter().any(|m| matches!(m, HistoryMsg::Flush(_)));
        if !closed && !asked && msgs.len() < FLUSH_ROWS {
            tokio::select! {
                () = tokio::time::sleep(FLUSH_EVERY) => {}
                () = due.notified() => {}
            }
        }
        // The window's rows, without waiting (some may come in after this:
        // they open the next window).
        while !closed && msgs.len() < HISTORY_DEPTH {
            match rx.try_recv() {
                Ok(msg) => msgs.push(msg),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => closed = true,
            }
        }
        let mut rows = Vec::with_capacity(msgs.len());
        let mut waiters = Vec::new();
        for msg in msgs.drain(..) {
            match msg {
                HistoryMsg::Row(row) => rows.push(row),
                HistoryMsg::Flush(tx) => waiters.push(tx),
            }
        }
        let result = if rows.is_empty() {
            Ok(())
        } else {
            let count = rows.len();
            match lanes.submit(0, Op::History(rows)).await {
                Ok(_) => Ok(()),
                Err(e) => {
                    tracing::warn!(rows = count, error = %e, "journal: history not written");
                    dropped.fetch_add(count as u64, Ordering::Relaxed);
                    Err(e)
                }
            }
        };
        for w in waiters {
            let _ = w.send(result.clone());
        }
        if closed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_are_stable_and_spread() {
        assert_eq!(lane_of("P1", 4), lane_of("P1", 4));
        let mut seen = [0usize; 4];
        for i in 0..1_000 {
            seen[lane_of(&format!("P{i}"), 4)] += 1;
        }
        assert!(seen.iter().all(|n| *n > 150), "{seen:?}");
        assert_eq!(lane_of("anything", 1), 0);
    }
}
