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
//!   PostgreSQL has a lane per runtime that writes ([`PgLanes`]): each
//!   payment worker's, and one for callers off the workers (sweeper,
//!   outbox, history). A lane is a task on that runtime with a connection of
//!   its own, so a payment's write never leaves its worker's thread: no
//!   hand-off to another thread and back, and the connection's replies wake
//!   the thread that waits for them. One transaction in flight per lane, so
//!   under load a worker's jobs gather into one batch. Two lanes may hold
//!   jobs about one payment (its close on one worker, a notification on
//!   another): the database's row locks order them, as between two
//!   instances, and every batch takes its rows in trade-number order, so two
//!   batches never wait for each other in a circle.
//! - **A lone job that stands alone** (one statement, or statements each a
//!   compare-and-set: [`sql::stands_alone`]) runs without `BEGIN` and
//!   `COMMIT` on PostgreSQL: one round trip instead of three, the common
//!   case at moderate load, where a payment's open and close each find the
//!   lane idle.
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

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::runtime::worker_slot;

use super::model::*;
use super::sql;
use super::{JournalError, ACQUIRE_TIMEOUT};
pub(super) use history::History;
#[cfg(test)]
pub(crate) use history::FLUSH_EVERY;
use sqlite::SqliteHandle;
pub(super) use stage::Stage;

/// Most jobs committed in one transaction.
pub(super) const MAX_BATCH: usize = 256;
/// Jobs waiting per lane before callers wait to enqueue (back-pressure).
const LANE_DEPTH: usize = 8_192;
/// PostgreSQL lanes, and so writing connections, an instance opens at most:
/// one per payment worker, the last for callers off the workers (and for
/// workers past the fifteenth, which share it, a hop away). Bounded so that a
/// fleet of many-core instances stays within the database's
/// `max_connections` (README says how many an instance opens).
const PG_LANES: usize = 16;
/// A PostgreSQL lane's connection idle this long is pinged before its next
/// batch (and opened again if that fails): the database may have closed it
/// meanwhile. A busy lane's connection is never idle that long, so under
/// load no batch pays the round trip.
pub(super) const PG_IDLE_PING: Duration = Duration::from_secs(1);
/// A batch that takes longer than this is given up (the database hangs);
/// its callers get `Unavailable`. It may still commit: every write is safe
/// to repeat (keys, compare-and-set), so a caller that retries is right.
const BATCH_TIMEOUT: Duration = Duration::from_secs(10);

struct Job {
    op: Op,
    reply: oneshot::Sender<Result<Reply, JournalError>>,
}

/// Where writes go: SQLite's one connection (its writer thread's:
/// [`sqlite`]) and its stage, if payments are staged; or PostgreSQL's
/// connection options (each lane opens its own connection).
pub(super) enum WritePool {
    Sqlite(rusqlite::Connection, Option<Arc<Stage>>),
    Postgres(Arc<PgConnectOptions>),
}

/// A backend's way to run a batch as one transaction.
trait Batch {
    /// Runs `ops` in one transaction; the replies, in order, once committed.
    /// A failure rolls the whole batch back.
    async fn run(&mut self, ops: &[&Op]) -> Result<Vec<Reply>, JournalError>;
}

/// A PostgreSQL lane's connection, opened at its first batch and again
/// after a batch failed (the failure may have been the connection's).
struct PgLane {
    opts: Arc<PgConnectOptions>,
    conn: Option<PgConnection>,
    last_used: Instant,
}

impl PgLane {
    /// The lane's connection, opened if it has none, pinged if it has been
    /// idle ([`PG_IDLE_PING`]).
    async fn connection(&mut self) -> Result<&mut PgConnection, JournalError> {
        let conn = match self.conn.take() {
            Some(mut conn) if self.last_used.elapsed() >= PG_IDLE_PING => match conn.ping().await {
                Ok(()) => conn,
                Err(_) => self.connect().await?,
            },
            Some(conn) => conn,
            None => self.connect().await?,
        };
        self.last_used = Instant::now();
        Ok(self.conn.insert(conn))
    }

    /// A new connection, given up as a pooled one's checkout is
    /// ([`ACQUIRE_TIMEOUT`]): a database that does not answer fails the
    /// batch as down well before [`BATCH_TIMEOUT`].
    async fn connect(&self) -> Result<PgConnection, JournalError> {
        match tokio::time::timeout(ACQUIRE_TIMEOUT, PgConnection::connect_with(&self.opts)).await {
            Ok(conn) => Ok(conn?),
            Err(_) => Err(JournalError::Unavailable("connecting timed out".into())),
        }
    }
}

impl Batch for PgLane {
    async fn run(&mut self, ops: &[&Op]) -> Result<Vec<Reply>, JournalError> {
        let work = async {
            let conn = self.connection().await?;
            if let [op] = ops {
                if sql::stands_alone(op) {
                    return Ok(vec![sql::apply(&mut sql::postgres::PgTx(conn), op).await?]);
                }
            }
            let mut tx = conn.begin().await?;
            let mut replies = Vec::with_capacity(ops.len());
            for op in ops {
                replies.push(sql::apply(&mut sql::postgres::PgTx(&mut tx), op).await?);
            }
            tx.commit().await?;
            Ok(replies)
        };
        let result = tokio::time::timeout(BATCH_TIMEOUT, work)
            .await
            .unwrap_or_else(|_| Err(JournalError::Unavailable("timed out".into())));
        if result.is_err() {
            // Whatever failed, the next batch starts on a fresh connection.
            self.conn = None;
        }
        result
    }
}

/// PostgreSQL's lanes, one per runtime that writes (the module's doc says
/// why), each started on that runtime by its first job, and started again
/// there if its task has gone (its runtime was shut down).
struct PgLanes {
    opts: Arc<PgConnectOptions>,
    lanes: Box<[Mutex<Option<mpsc::Sender<Job>>>]>,
}

impl PgLanes {
    fn new(opts: Arc<PgConnectOptions>) -> PgLanes {
        PgLanes {
            opts,
            lanes: (0..PG_LANES).map(|_| Mutex::new(None)).collect(),
        }
    }

    /// The caller's lane. A lane's lock is its worker's (and, for the last
    /// one, the callers' off the workers): never contended on the payment
    /// path.
    fn sender(&self) -> mpsc::Sender<Job> {
        let mut lane = self.lanes[worker_slot(self.lanes.len())]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &*lane {
            Some(sender) if !sender.is_closed() => sender.clone(),
            _ => {
                let (sender, rx) = mpsc::channel(LANE_DEPTH);
                let db = PgLane {
                    opts: self.opts.clone(),
                    conn: None,
                    last_used: Instant::now(),
                };
                tokio::spawn(pg_writer(db, rx));
                lane.insert(sender).clone()
            }
        }
    }
}

/// The writer lanes of one journal.
pub(super) struct Lanes {
    writers: Writers,
    /// SQLite's stage, if payments are staged.
    stage: Option<Arc<Stage>>,
}

/// Who commits what is not staged.
enum Writers {
    /// SQLite's writer thread: its queue and its handle.
    Sqlite(mpsc::Sender<Job>, SqliteHandle),
    Postgres(PgLanes),
}

impl Lanes {
    /// Starts the writers: SQLite's thread ([`sqlite`]); PostgreSQL's lanes
    /// start as they are first used.
    pub fn start(pool: WritePool) -> Result<Lanes, JournalError> {
        Ok(match pool {
            WritePool::Sqlite(conn, stage) => {
                let (queue, handle) = SqliteHandle::start(conn, stage.clone())?;
                Lanes {
                    writers: Writers::Sqlite(queue, handle),
                    stage,
                }
            }
            WritePool::Postgres(opts) => Lanes {
                writers: Writers::Postgres(PgLanes::new(opts)),
                stage: None,
            },
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

    /// Runs `op` and waits for its commit; on SQLite, served by the stage
    /// at once where it can be.
    pub async fn submit(&self, op: Op) -> Result<Reply, JournalError> {
        let op = match &self.stage {
            Some(stage) => match stage.serve(op) {
                Ok(answer) => return answer,
                Err(op) => op,
            },
            None => op,
        };
        let (reply, answer) = oneshot::channel();
        let job = Job { op, reply };
        match &self.writers {
            Writers::Sqlite(queue, sqlite) => sqlite.queue(job, queue).await?,
            Writers::Postgres(pg) => pg.sender().send(job).await.map_err(|_| JournalError::Closed)?,
        }
        answer.await.map_err(|_| JournalError::Closed)?
    }
}

/// A PostgreSQL lane: commits whatever has queued up, as one batch at a
/// time. A batch takes its rows in key order, so that two batches (two
/// lanes, two instances) taking the same rows never wait for each other in
/// a circle; the sort is stable, so one payment's jobs keep their order.
async fn pg_writer(mut db: PgLane, mut rx: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        in_lock_order(&mut batch);
        commit(&mut db, &mut batch).await;
    }
}

fn in_lock_order(batch: &mut [Job]) {
    batch.sort_by(|a, b| row_of(&a.op).cmp(&row_of(&b.op)));
}

/// The key of the one existing row `op` locks (a payment's trade number,
/// an event's id), if it locks one.
fn row_of(op: &Op) -> Option<&str> {
    op.one_payment().or(match op {
        Op::EventDelivered { event_id, .. }
        | Op::EventRetry { event_id, .. }
        | Op::EventFailed { event_id, .. }
        | Op::Resend { event_id, .. } => Some(event_id),
        _ => None,
    })
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

    fn job(op: Op) -> Job {
        Job {
            op,
            reply: oneshot::channel().0,
        }
    }

    fn reschedule(trade_no: &str, next_at_ms: i64) -> Op {
        Op::Reschedule {
            trade_no: trade_no.into(),
            next_at_ms: Some(next_at_ms),
        }
    }

    /// A database that takes the connection and never answers: the lane
    /// gives the batch up as the database being down after
    /// `ACQUIRE_TIMEOUT`, not after `BATCH_TIMEOUT`, and leaves no
    /// connection behind.
    #[tokio::test]
    async fn a_lane_gives_up_a_database_that_never_answers() {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = silent.local_addr().unwrap().port();
        let held = tokio::spawn(async move {
            let mut conns = Vec::new();
            while let Ok((conn, _)) = silent.accept().await {
                conns.push(conn);
            }
        });
        let opts: PgConnectOptions = format!("postgres://payroute@127.0.0.1:{port}/payroute?sslmode=disable")
            .parse()
            .unwrap();
        let mut lane = PgLane {
            opts: Arc::new(opts),
            conn: None,
            last_used: Instant::now(),
        };
        let started = Instant::now();
        let failed = lane.run(&[&reschedule("A", 1)]).await;
        assert!(matches!(failed, Err(JournalError::Unavailable(_))), "{failed:?}");
        assert!(started.elapsed() < BATCH_TIMEOUT, "took {:?}", started.elapsed());
        assert!(lane.conn.is_none());
        held.abort();
    }

    #[test]
    fn a_batch_takes_its_rows_in_key_order_and_keeps_each_rows_jobs_in_order() {
        let mut batch = vec![
            job(reschedule("B", 1)),
            job(Op::Project),
            job(reschedule("A", 2)),
            job(reschedule("B", 3)),
            job(reschedule("A", 4)),
        ];
        in_lock_order(&mut batch);
        let order: Vec<_> = batch
            .iter()
            .map(|j| match &j.op {
                Op::Reschedule { trade_no, next_at_ms } => (trade_no.as_str(), next_at_ms.unwrap_or(0)),
                _ => ("-", 0),
            })
            .collect();
        assert_eq!(order, [("-", 0), ("A", 2), ("A", 4), ("B", 1), ("B", 3)]);
    }
}
