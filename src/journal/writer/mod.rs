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
//! - **Lanes.** SQLite has one writer thread on the one connection that
//!   writes (SQLite allows one writer at a time anyway; [`sqlite`]).
//!   PostgreSQL has [`PG_LANES`] writer tasks, each on its own connection; a job
//!   about a payment always goes to the lane its trade number hashes to, so
//!   moves of one payment never race each other inside an instance and
//!   batches of different lanes touch different payments.
//! - **Staging.** On SQLite, a payment's open, failover and close are served
//!   by the [`stage`] from the worker that waits for them — appended to a
//!   log file, kept in memory — and the writer thread projects them into
//!   `payments` ([`stage`] says why and how reads stay exact); readers ask
//!   [`Lanes::staged`] whether anything is staged.
//! - **A failed batch** (a lost connection, a deadlock with another instance)
//!   is rolled back whole and its jobs are run again one transaction each, so
//!   one bad job fails alone and every caller gets its own answer.
//! - **History** ([`HistoryRow`]: attempts, rejected notifications) is not
//!   money: it is written behind, in batches ([`history`]). Money writes
//!   fail while the database is down; history is dropped and counted.

mod history;
mod sqlite;
mod stage;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::model::*;
use super::sql;
use super::JournalError;
pub(super) use history::History;
#[cfg(test)]
pub(crate) use history::FLUSH_EVERY;
use sqlite::SqliteHandle;
pub(super) use stage::Stage;

/// Most jobs committed in one transaction.
pub(super) const MAX_BATCH: usize = 256;
/// Jobs waiting per lane before callers wait to enqueue (back-pressure).
const LANE_DEPTH: usize = 8_192;
/// PostgreSQL writer lanes (connections that write).
pub(super) const PG_LANES: usize = 4;
/// A batch that takes longer than this is given up (the database hangs);
/// its callers get `Unavailable`. It may still commit: every write is safe
/// to repeat (keys, compare-and-set), so a caller that retries is right.
const BATCH_TIMEOUT: Duration = Duration::from_secs(10);

struct Job {
    op: Op,
    reply: oneshot::Sender<Result<Reply, JournalError>>,
}

/// Where writes go: SQLite's one connection (its writer thread's:
/// [`sqlite`]) and its stage, if payments are staged; or PostgreSQL's pool
/// (a connection per lane).
pub(super) enum WritePool {
    Sqlite(rusqlite::Connection, Option<Arc<Stage>>),
    Postgres(sqlx::PgPool),
}

/// A backend's way to run a batch as one transaction.
trait Batch {
    /// Runs `ops` in one transaction; the replies, in order, once committed.
    /// A failure rolls the whole batch back.
    async fn run(&mut self, ops: &[&Op]) -> Result<Vec<Reply>, JournalError>;
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
    /// SQLite's lane (its writer thread's queue is `senders[0]`).
    sqlite: Option<SqliteHandle>,
    /// SQLite's stage, if payments are staged.
    stage: Option<Arc<Stage>>,
}

impl Lanes {
    /// Starts the writers: SQLite's thread ([`sqlite`]), PostgreSQL's
    /// [`PG_LANES`] as tasks on the current runtime.
    pub fn start(pool: WritePool) -> Result<Lanes, JournalError> {
        let mut stage = None;
        let (senders, sqlite) = match pool {
            WritePool::Sqlite(conn, staging) => {
                stage = staging;
                let (writer_queue, handle) = SqliteHandle::start(conn, stage.clone())?;
                (vec![writer_queue], Some(handle))
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
            sqlite,
            stage,
        })
    }

    /// Whether payments are staged (SQLite, `synchronous = "normal"`).
    pub fn stages(&self) -> bool {
        self.stage.is_some()
    }

    /// Whether a reader of `payments` must first ask for a projection
    /// (`Op::Project`): something may be staged.
    pub fn staged(&self) -> bool {
        self.stage.as_ref().is_some_and(|s| s.any())
    }

    /// Syncs the stage's log to disk (the checkpoint's companion).
    pub fn sync_stage(&self) -> Result<(), JournalError> {
        self.stage.as_ref().map_or(Ok(()), |s| s.sync())
    }

    /// The lane of `key` (a trade number; `None`: lane 0).
    pub fn lane(&self, key: Option<&str>) -> usize {
        key.map_or(0, |k| lane_of(k, self.senders.len()))
    }

    /// Runs `op` on `lane` and waits for its commit; on SQLite, served by
    /// the stage at once where it can be.
    pub async fn submit(&self, lane: usize, op: Op) -> Result<Reply, JournalError> {
        let op = match &self.stage {
            Some(stage) => match stage.serve(op) {
                Ok(answer) => return answer,
                Err(op) => op,
            },
            None => op,
        };
        let (reply, answer) = oneshot::channel();
        let sender = &self.senders[lane % self.senders.len()];
        match &self.sqlite {
            None => sender.send(Job { op, reply }).await.map_err(|_| JournalError::Closed)?,
            Some(sqlite) => sqlite.queue(Job { op, reply }, sender).await?,
        }
        answer.await.map_err(|_| JournalError::Closed)?
    }
}

/// FNV-1a: cheap, stable, and enough to spread trade numbers over a few lanes.
fn lane_of(key: &str, lanes: usize) -> usize {
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    (hash % lanes as u64) as usize
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
