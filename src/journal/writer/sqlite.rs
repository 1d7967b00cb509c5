//! SQLite's lane: one writer thread owns the one connection that writes
//! (SQLite allows one writer at a time anyway) and group-commits every job
//! queued for it, synchronously through rusqlite
//! ([`sql::sqlite`](crate::journal::sql::sqlite)).
//!
//! A payment's own writes rarely come here: under `synchronous = "normal"`
//! they are served by the [`stage`](super::stage) from the worker that waits
//! for them, and this thread moves the stage into `payments` every
//! [`PROJECT_EVERY`] or [`PROJECT_ROWS`] rows, and before any job that reads
//! or writes a payment's row. Under `synchronous = "full"` nothing stages
//! (the log would need a sync per record): every write is this thread's,
//! and its group commit shares each sync among all the payments waiting.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use rusqlite::ErrorCode;
use tokio::sync::mpsc;

use super::stage::Stage;
#[cfg(doc)]
use super::stage::{PROJECT_EVERY, PROJECT_ROWS};
use super::{commit, Batch, Job, LANE_DEPTH, MAX_BATCH};
use crate::journal::model::*;
use crate::journal::sql;
use crate::journal::JournalError;

/// The writer waits [`GATHER`] for more jobs before committing when it
/// found at least this many queued: jobs arriving together are the sign of
/// a busy journal, where one commit for more jobs saves more than the wait
/// costs. A commit writes every page it changed once, however many jobs
/// changed it. A lone job (a quiet journal) is committed at once.
const GATHER_FROM: usize = 2;
/// How long the writer waits for company before a busy commit.
const GATHER: Duration = Duration::from_micros(100);

/// SQLite: statements on the writer thread's connection.
struct SqliteBatch {
    conn: rusqlite::Connection,
}

impl SqliteBatch {
    fn statement(&self, sql: &str) -> Result<(), JournalError> {
        self.conn.prepare_cached(sql)?.execute([])?;
        Ok(())
    }

    /// Opens a transaction. IMMEDIATE takes the write lock now, not at the
    /// first write, so a checkpoint or another process can not make the
    /// batch fail halfway. The connection has no busy handler of its own:
    /// this waits for another connection's lock (a checkpoint starting the
    /// WAL over) itself, up to `BUSY_TIMEOUT`.
    fn begin(&self) -> Result<(), JournalError> {
        let started = Instant::now();
        let mut pause = Duration::from_micros(50);
        loop {
            match self.conn.prepare_cached("BEGIN IMMEDIATE")?.execute([]) {
                Ok(_) => return Ok(()),
                Err(e) if e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy) => {
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

    /// Runs `work` in a transaction and commits; a failure rolls it back.
    fn transaction<T>(&self, work: impl FnOnce() -> Result<T, JournalError>) -> Result<T, JournalError> {
        self.begin()?;
        match work().and_then(|out| self.statement("COMMIT").map(|()| out)) {
            Ok(out) => Ok(out),
            Err(e) => {
                // A failed ROLLBACK leaves nothing to add to `e`: SQLite
                // rolls an unfinished transaction back by itself.
                let _ = self.statement("ROLLBACK");
                Err(e)
            }
        }
    }

    /// Moves the stage into `payments` in one transaction. A failure stages
    /// the rows again, where every op and the next projection find them.
    fn project(&self, stage: &Stage) -> Result<(), JournalError> {
        let Some(taken) = stage.take()? else {
            return Ok(());
        };
        match self.transaction(|| stage.write(&self.conn, &taken)) {
            Ok(()) => {
                stage.projected(taken);
                Ok(())
            }
            Err(e) => {
                stage.restore(taken);
                Err(e)
            }
        }
    }
}

impl Batch for SqliteBatch {
    async fn run(&mut self, ops: &[&Op]) -> Result<Vec<Reply>, JournalError> {
        self.transaction(|| {
            let mut tx = sql::sqlite::SqliteTx(&self.conn);
            let mut replies = Vec::with_capacity(ops.len());
            for op in ops {
                replies.push(now(sql::apply(&mut tx, op)).unwrap_or(Err(WAITED))?);
            }
            Ok(replies)
        })
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

/// What submitting to SQLite's lane takes beside its queue.
pub(super) struct SqliteHandle {
    writer: Thread,
    /// The journal was dropped: the writer commits what is left and ends.
    closed: Arc<AtomicBool>,
}

impl SqliteHandle {
    /// Starts the writer thread on `conn`; its queue and the handle.
    pub(super) fn start(
        conn: rusqlite::Connection,
        stage: Option<Arc<Stage>>,
    ) -> Result<(mpsc::Sender<Job>, SqliteHandle), JournalError> {
        let (tx, rx) = mpsc::channel(LANE_DEPTH);
        let closed = Arc::new(AtomicBool::new(false));
        let writer = std::thread::Builder::new()
            .name("payroute-journal".into())
            .spawn({
                let closed = closed.clone();
                let stage = stage.clone();
                move || sqlite_writer(SqliteBatch { conn }, rx, &closed, stage.as_deref())
            })
            .map_err(|e| JournalError::Open(format!("cannot start the journal's writer: {e}")))?;
        if let Some(stage) = &stage {
            stage.set_writer(writer.thread().clone());
        }
        let handle = SqliteHandle {
            writer: writer.thread().clone(),
            closed,
        };
        Ok((tx, handle))
    }

    /// Queues `job` for the writer thread and wakes it.
    pub(super) async fn queue(&self, job: Job, queue: &mpsc::Sender<Job>) -> Result<(), JournalError> {
        queue.send(job).await.map_err(|_| JournalError::Closed)?;
        self.writer.unpark();
        Ok(())
    }
}

/// The journal was dropped: the writer thread commits what is left,
/// projects the stage and ends.
impl Drop for SqliteHandle {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::SeqCst);
        self.writer.unpark();
    }
}

/// Moves jobs from `queue` into `batch` (up to [`MAX_BATCH`]).
fn take(queue: &mut mpsc::Receiver<Job>, batch: &mut Vec<Job>) {
    while batch.len() < MAX_BATCH {
        match queue.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
}

/// SQLite's writer thread: sleeps until woken (a job, the stage filling up)
/// or the stage's deadline, then commits until nothing is queued, projecting
/// first whenever a batch holds a job that needs it. When the journal is
/// dropped it commits what is left, projects and ends.
fn sqlite_writer(mut db: SqliteBatch, mut queue: mpsc::Receiver<Job>, closed: &AtomicBool, stage: Option<&Stage>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        take(&mut queue, &mut batch);
        if batch.len() >= GATHER_FROM && batch.len() < MAX_BATCH {
            std::thread::sleep(GATHER);
            take(&mut queue, &mut batch);
        }
        if let Some(stage) = stage {
            if batch.iter().any(|job| stage.must_project_for(&job.op)) {
                // A payment of the batch in flight during the projection may
                // have been staged again meanwhile (the stage's `restage`):
                // then once more, so the batch sees that row. A payment
                // leaves `pending` once and fails over a bounded number of
                // times, so this ends.
                loop {
                    if let Err(e) = db.project(stage) {
                        // Those jobs would not see the staged payments: they
                        // fail, the others go on.
                        tracing::warn!(error = %e, "journal: staged payments not projected yet");
                        let (blocked, rest): (Vec<Job>, Vec<Job>) =
                            batch.drain(..).partition(|job| stage.must_project_for(&job.op));
                        for job in blocked {
                            let _ = job.reply.send(Err(e.clone()));
                        }
                        batch = rest;
                        break;
                    }
                    if !batch.iter().any(|job| stage.staged_again(&job.op)) {
                        break;
                    }
                }
            } else if stage.must_project() {
                if let Err(e) = db.project(stage) {
                    tracing::warn!(error = %e, "journal: staged payments not projected yet");
                }
            }
        }
        if !batch.is_empty() {
            if now(commit(&mut db, &mut batch)).is_none() {
                // Its jobs are still in `batch`: tried again next round.
                tracing::error!("journal: a SQLite batch waited");
            }
            continue;
        }
        if closed.load(Ordering::SeqCst) {
            take(&mut queue, &mut batch);
            if batch.is_empty() {
                if let Some(stage) = stage {
                    if let Err(e) = db.project(stage) {
                        tracing::warn!(error = %e, "journal: staged payments left in the log for the next start");
                    }
                }
                return;
            }
            continue;
        }
        // A wake-up between the last take and here is not lost: `unpark`
        // before `park` makes it return at once.
        match stage.and_then(Stage::due) {
            Some(at) => std::thread::park_timeout(at.saturating_duration_since(Instant::now())),
            None => std::thread::park(),
        }
    }
}
