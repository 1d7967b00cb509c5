//! The stage (SQLite): a new payment's open, failover and close kept in
//! memory and appended to a log file; moved into `payments` behind, in bulk.
//!
//! A JSON payment is two money writes a few milliseconds apart: its open
//! (pending, before the first attempt leaves) and its close (paid,
//! declined, failed). As SQLite commits, each cost a transaction of its
//! own when payments came one at a time: the write lock, b-tree pages,
//! WAL frames and the wal-index, about 80,000 instructions a commit — two
//! thirds of a payment's whole cost under callgrind (BENCHMARKS.md,
//! "Session 13"). Here the two writes are appended to a log file with one
//! `write(2)` each: in the kernel's page cache when the call returns, so a
//! crash or `kill -9` of payroute loses nothing acknowledged — the same
//! promise as SQLite's WAL under `synchronous = "normal"`, which is the only
//! mode that stages (`"full"` writes `payments` directly, every commit
//! synced). The journal's checkpoint task syncs the log with the WAL, so a
//! power loss loses at most the same quarter second.
//!
//! The rows live in memory, keyed by trade number; the writer thread moves
//! them into `payments` every [`PROJECT_EVERY`] or [`PROJECT_ROWS`] rows
//! (one transaction, up to 16 rows an `INSERT`: [`project`]), so a payment that closed meanwhile
//! enters the table once, final, with no sweeper entry to add and remove.
//! Nothing a payment's answer waits for touches SQLite: a projection holds
//! the connection, not the payments.
//!
//! What the stage serves, from the worker that waits, with no hand-off: an
//! open (a trade number minted for it just now: new by construction, see
//! `payment::trade_no`), a failover's channel and a move from `pending` of
//! a staged payment — or of one a projection in progress took, staged
//! again for it ([`Inner::restage`]). Everything else about a payment is the writer
//! thread's, which first projects whatever is staged ([`needs_projection`]),
//! and so do reads (`Journal::unstaged`): every read and every other write
//! sees the staged rows in the table.
//!
//! **The log** ([`log`]). Records are JSON lines in numbered segment files beside the
//! database (`payroute.db-stage/N`); a projection starts the next segment,
//! and the transaction that moves a segment's rows into the table also
//! records its number (`stage_projected`), so a crash between that commit
//! and the segment's removal replays nothing twice. At open, the segments
//! past that number are replayed and projected before anything else runs.
//! One process owns the log (`payroute.db-stage/lock`, an advisory lock):
//! another that opens the journal while payroute serves (`payroute journal
//! export`) copies what the log holds into the table where a payment is
//! not there yet, and leaves the log alone; the owner's own projection later
//! writes the final row over such a copy.

mod log;
mod project;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::Thread;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::journal::model::*;
use crate::journal::state::{Rule, State};
use crate::journal::JournalError;
use log::{create_segment, open_record, remove, replay, segment_path, segments, stage_dir, Record};
use project::{write_rows, Writer};

/// Staged payments are moved into `payments` at the latest this long after
/// the first of them was staged... A projection holds the SQLite connection
/// but no payment, so the stage can collect more rows per transaction than
/// the stage table it replaced (10 ms there: payments waited for the
/// connection a projection held).
pub(super) const PROJECT_EVERY: Duration = Duration::from_millis(50);
/// ...or as soon as this many are staged.
pub(super) const PROJECT_ROWS: usize = 4_096;
/// How long a journal opening waits for another owner of the log to let go.
const LOCK_PATIENCE: Duration = Duration::from_millis(500);

/// A staged payment: the row `payments` will hold.
#[derive(Debug, Clone)]
pub(super) struct Staged {
    p: NewPayment,
    updated_at_ms: i64,
    paid_at_ms: Option<i64>,
}

impl Staged {
    fn new(mut p: NewPayment) -> Staged {
        if p.state.is_final() {
            p.next_query_at_ms = None;
        }
        let paid_at_ms = (p.state == State::Paid).then_some(p.created_at_ms);
        Staged {
            updated_at_ms: p.created_at_ms,
            paid_at_ms,
            p,
        }
    }

    /// A failover: the same columns `write::apply` sets on `payments`.
    fn set_channel(&mut self, channel: &Arc<str>, at_ms: i64) {
        self.p.channel_id = Some(channel.clone());
        self.updated_at_ms = at_ms;
    }

    /// A move from `pending`: the same columns as `write::move_sql`.
    fn moved(&mut self, to: State, facts: &TransitionFacts) {
        let p = &mut self.p;
        p.state = to;
        self.updated_at_ms = facts.at_ms;
        if let Some(t) = &facts.channel_trade_no {
            p.channel_trade_no = Some(t.clone());
        }
        if let Some(fee) = facts.expected_fee {
            p.expected_fee = fee;
        }
        if let Some(channel) = &facts.channel {
            p.channel_id = Some(channel.clone());
        }
        p.next_query_at_ms = None;
        if to == State::Paid {
            self.paid_at_ms = Some(facts.at_ms);
        }
    }
}

/// The staged rows, in the order they were opened.
#[derive(Default)]
struct Rows {
    list: Vec<Staged>,
    index: HashMap<String, usize>,
}

impl Rows {
    fn get_mut(&mut self, trade_no: &str) -> Option<&mut Staged> {
        let i = *self.index.get(trade_no)?;
        self.list.get_mut(i)
    }

    /// Stages `row` over what is staged under its trade number, if anything.
    fn replace(&mut self, row: Staged) {
        match self.index.get(&row.p.trade_no) {
            Some(&i) => self.list[i] = row,
            None => {
                self.insert(row);
            }
        }
    }

    /// `false`: that trade number is staged already.
    fn insert(&mut self, row: Staged) -> bool {
        if self.index.contains_key(&row.p.trade_no) {
            return false;
        }
        self.index.insert(row.p.trade_no.clone(), self.list.len());
        self.list.push(row);
        true
    }
}

/// Rows taken from the stage by a projection, and the last segment that
/// holds their records.
pub(super) struct Taken {
    rows: Vec<Staged>,
    through: u64,
}

struct Inner {
    rows: Rows,
    /// The segment records are appended to, and its number.
    log: Arc<File>,
    segment: u64,
    /// The oldest segment whose rows are not in `payments` yet.
    oldest: u64,
    /// When the first of the rows staged since a projection was.
    since: Option<Instant>,
    projecting: bool,
    /// The rows a projection in progress took that were still pending, as
    /// taken: a failover or close of one of them is staged again from
    /// here ([`Inner::restage`]) rather than wait for the projection.
    in_projection: HashMap<String, Staged>,
    /// A record's bytes, kept to spare an allocation per record.
    buf: Vec<u8>,
    /// A write failed: the next record starts on a line of its own.
    torn: bool,
    /// The earliest the sweeper may ask about a staged payment (over
    /// every row staged since the last projection; kept low, never late).
    earliest_due: Option<i64>,
}

/// The stage of one journal (see the module's doc).
pub(in crate::journal) struct Stage {
    inner: Mutex<Inner>,
    /// Something is staged or being projected: a reader of `payments` must
    /// ask for a projection first.
    any: AtomicBool,
    /// The writer thread, woken when the stage needs projecting.
    writer: OnceLock<Thread>,
    /// `payroute.db-stage/`: segment `N` is the file `N` in it.
    dir: PathBuf,
    /// The last segment synced to disk with its directory entry.
    synced: AtomicU64,
    /// Held while this process owns the log.
    _lock: File,
}

impl Stage {
    /// Takes the lock on the log of the journal at `db`: `None` if another
    /// owns it. A journal this process dropped a moment ago lets go once its
    /// writer has projected the last rows, so an owner is waited for a
    /// little ([`LOCK_PATIENCE`]) before this opens as a guest.
    pub(in crate::journal) async fn take_log(db: &Path) -> Result<Option<File>, JournalError> {
        let dir = stage_dir(db);
        let path = dir.join("lock");
        let err = |e: std::io::Error| JournalError::Open(format!("{}: {e}", path.display()));
        std::fs::create_dir_all(&dir).map_err(err)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(err)?;
        let started = Instant::now();
        loop {
            match lock.try_lock() {
                Ok(()) => return Ok(Some(lock)),
                Err(std::fs::TryLockError::WouldBlock) if started.elapsed() < LOCK_PATIENCE => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
                Err(std::fs::TryLockError::Error(e)) => return Err(err(e)),
            }
        }
    }

    /// Replays and projects what the log of the journal at `db` holds (on
    /// `conn`, the writer's) and, if this process owns the log (`lock`) and
    /// the journal `stages`, starts a new segment. `None` if it does not or
    /// is a guest (which only copies what the log holds into the table).
    pub(in crate::journal) fn open(
        db: &Path,
        conn: &mut Connection,
        lock: Option<File>,
        stages: bool,
    ) -> Result<Option<Stage>, JournalError> {
        let dir = stage_dir(db);
        let owner = if lock.is_some() { Writer::Owner } else { Writer::Guest };
        let projected: i64 = conn.query_row("SELECT through FROM stage_projected WHERE id = 1", [], |r| r.get(0))?;
        let projected = u64::try_from(projected).unwrap_or(0);
        let segments = segments(&dir)?;
        let mut rows = Rows::default();
        for (n, path) in segments.iter().filter(|(n, _)| *n > projected) {
            replay(*n, path, &mut rows)?;
        }
        let last = segments.last().map_or(projected, |(n, _)| (*n).max(projected));
        if !rows.list.is_empty() {
            tracing::info!(
                rows = rows.list.len(),
                "journal: moving the payments in the stage's log into the table"
            );
            // Patient here (a checkpoint may hold the lock); the writer's
            // connection waits for no lock once it serves.
            conn.busy_timeout(crate::journal::BUSY_TIMEOUT)?;
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            write_rows(&tx, &rows.list, owner, last)?;
            tx.commit()?;
            conn.busy_timeout(Duration::ZERO)?;
        }
        let Some(lock) = lock else {
            return Ok(None);
        };
        for (_, path) in &segments {
            remove(path);
        }
        if !stages {
            return Ok(None);
        }
        let segment = last + 1;
        let log = create_segment(&dir, segment)?;
        Ok(Some(Stage {
            inner: Mutex::new(Inner {
                rows: Rows::default(),
                log: Arc::new(log),
                segment,
                oldest: segment,
                since: None,
                projecting: false,
                in_projection: HashMap::new(),
                buf: Vec::with_capacity(512),
                torn: false,
                earliest_due: None,
            }),
            any: AtomicBool::new(false),
            writer: OnceLock::new(),
            dir,
            synced: AtomicU64::new(0),
            _lock: lock,
        }))
    }

    pub(super) fn set_writer(&self, writer: Thread) {
        let _ = self.writer.set(writer);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every change to `Inner` is whole before anything that can fail
        // or panic runs: a poisoned lock holds a consistent stage.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a reader of `payments` must ask for a projection first.
    pub(super) fn any(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    /// When the stage is due to be projected, if anything is staged.
    pub(super) fn due(&self) -> Option<Instant> {
        self.lock().since.map(|since| since + PROJECT_EVERY)
    }

    /// Whether `op` must wait for a projection: it reads or writes a
    /// payment's row ([`needs_projection`]) and something is staged. An op
    /// about one payment only when that payment is staged: the others are
    /// in the table already, and a later move (a notification, the
    /// sweeper's query) that projected everything staged cut the stage's
    /// batches short for nothing — most projections at 1,000 payments a
    /// second (BENCHMARKS.md, "Session 14"). The sweeper's claim only when a
    /// staged payment may be due by its time: it runs every few tens of
    /// milliseconds.
    pub(super) fn must_project_for(&self, op: &Op) -> bool {
        if !needs_projection(op) || !self.any() {
            return false;
        }
        let inner = self.lock();
        match op {
            Op::ClaimQueries { now_ms, .. } => inner.earliest_due.is_some_and(|due| due <= *now_ms),
            // Between projections nothing is being projected (the writer
            // thread projects start to end before its next job), so the
            // index says whether the payment is still staged.
            _ => op
                .one_payment()
                .is_none_or(|trade_no| inner.rows.index.contains_key(trade_no)),
        }
    }

    /// Whether `op` is about one payment that is staged: after a
    /// projection, one that a payment in flight had staged again meanwhile
    /// ([`Inner::restage`]).
    pub(super) fn staged_again(&self, op: &Op) -> bool {
        op.one_payment().is_some() && self.must_project_for(op)
    }

    /// Whether the stage is due to be projected now.
    pub(super) fn must_project(&self) -> bool {
        let inner = self.lock();
        inner.rows.list.len() >= PROJECT_ROWS || inner.since.is_some_and(|at| at + PROJECT_EVERY <= Instant::now())
    }

    /// Serves `op` from the stage, if it is one the stage serves (see the
    /// module's doc); `Err(op)`: the writer thread's. (The op is handed
    /// back by value, a move, where a box would cost an allocation.)
    #[allow(clippy::result_large_err)]
    pub(super) fn serve(&self, op: Op) -> Result<Result<Reply, JournalError>, Op> {
        let mut inner = self.lock();
        let served = match op {
            Op::Open(p) => {
                if inner.rows.index.contains_key(&p.trade_no) {
                    return Ok(Ok(Reply::Inserted(false)));
                }
                if let Some(due) = p.next_query_at_ms.filter(|_| !p.state.is_final()) {
                    inner.earliest_due = Some(inner.earliest_due.map_or(due, |d| d.min(due)));
                }
                inner
                    .append(&open_record(&p))
                    .map(|()| Reply::Inserted(inner.rows.insert(Staged::new(p))))
            }
            Op::SetChannel {
                ref trade_no,
                ref channel,
                ref at_ms,
            } => {
                if let Err(e) = inner.restage(trade_no) {
                    return Ok(Err(e));
                }
                let Some(row) = inner.rows.get_mut(trade_no) else {
                    return Err(op);
                };
                if row.p.state != State::Pending {
                    return Ok(Ok(Reply::Inserted(false)));
                }
                inner.append(&log::channel_record(trade_no, channel, *at_ms)).map(|()| {
                    if let Some(row) = inner.rows.get_mut(trade_no) {
                        row.set_channel(channel, *at_ms);
                    }
                    Reply::Inserted(true)
                })
            }
            Op::Transition {
                ref trade_no,
                ref to,
                ref facts,
                event: None,
            } => {
                // A payment that moved once already is judged on the
                // table, after a projection, by the one table of rules.
                if State::Pending.may_move(*to, false) != Rule::Allowed {
                    return Err(op);
                }
                if let Err(e) = inner.restage(trade_no) {
                    return Ok(Err(e));
                }
                let pending = inner
                    .rows
                    .get_mut(trade_no)
                    .is_some_and(|r| r.p.state == State::Pending);
                if !pending {
                    return Err(op);
                }
                inner.append(&log::move_record(trade_no, *to, facts)).map(|()| {
                    if let Some(row) = inner.rows.get_mut(trade_no) {
                        row.moved(*to, facts);
                    }
                    Reply::Moved(Moved::Applied { from: State::Pending })
                })
            }
            _ => return Err(op),
        };
        let staged = inner.rows.list.len();
        let wake = staged > 0 && inner.since.is_none() || staged == PROJECT_ROWS;
        if staged > 0 {
            inner.since.get_or_insert_with(Instant::now);
            // Before the caller hears back: a read that follows projects.
            self.any.store(true, Ordering::Release);
        }
        drop(inner);
        if wake {
            if let Some(writer) = self.writer.get() {
                writer.unpark();
            }
        }
        Ok(served)
    }

    /// Takes every staged row for a projection and starts the next
    /// segment; `None` if nothing is staged.
    pub(super) fn take(&self) -> Result<Option<Taken>, JournalError> {
        let mut inner = self.lock();
        if inner.rows.list.is_empty() {
            return Ok(None);
        }
        let next = inner.segment + 1;
        inner.log = Arc::new(create_segment(&self.dir, next)?);
        inner.torn = false;
        let through = std::mem::replace(&mut inner.segment, next);
        let rows = std::mem::take(&mut inner.rows).list;
        inner.in_projection = rows
            .iter()
            .filter(|r| r.p.state == State::Pending)
            .map(|r| (r.p.trade_no.clone(), r.clone()))
            .collect();
        inner.since = None;
        inner.earliest_due = None;
        inner.projecting = true;
        Ok(Some(Taken { rows, through }))
    }

    /// Writes `taken` into `payments` inside the caller's transaction.
    pub(super) fn write(&self, conn: &Connection, taken: &Taken) -> Result<(), JournalError> {
        write_rows(conn, &taken.rows, Writer::Owner, taken.through)
    }

    /// `taken` is in `payments`, committed: its segments go.
    pub(super) fn projected(&self, taken: Taken) {
        let mut inner = self.lock();
        for n in inner.oldest..=taken.through {
            remove(&self.segment_path(n));
        }
        inner.oldest = taken.through + 1;
        inner.projecting = false;
        inner.in_projection.clear();
        self.any.store(!inner.rows.list.is_empty(), Ordering::Release);
    }

    /// The projection of `taken` failed: its rows are staged again, ahead
    /// of those staged since, and tried at the next deadline.
    pub(super) fn restore(&self, taken: Taken) {
        let mut inner = self.lock();
        let newer = std::mem::take(&mut inner.rows).list;
        for row in taken.rows {
            inner.rows.insert(row);
        }
        // A row staged again meanwhile ([`Inner::restage`]) is the later one.
        for row in newer {
            inner.rows.replace(row);
        }
        inner.in_projection.clear();
        inner.since = Some(Instant::now());
        // Their schedules are not kept apart from the newer rows': any claim projects.
        inner.earliest_due = Some(i64::MIN);
        inner.projecting = false;
    }

    /// Syncs the log's current segment (and, once, its directory entry) to
    /// disk: the journal's checkpoint does, so a power loss loses no more
    /// of the stage than of the WAL.
    pub(super) fn sync(&self) -> Result<(), JournalError> {
        let (log, segment) = {
            let inner = self.lock();
            (inner.log.clone(), inner.segment)
        };
        log.sync_data().map_err(|e| unavailable(&e))?;
        if self.synced.swap(segment, Ordering::AcqRel) != segment {
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| unavailable(&e))?;
        }
        Ok(())
    }

    fn segment_path(&self, n: u64) -> PathBuf {
        segment_path(&self.dir, n)
    }
}

/// A stage left empty (its writer projected it at the end) leaves no
/// segment behind; one with rows keeps its log for the next start.
impl Drop for Stage {
    fn drop(&mut self) {
        let inner = self.lock();
        if inner.rows.list.is_empty() && !inner.projecting {
            for n in inner.oldest..=inner.segment {
                remove(&self.segment_path(n));
            }
        }
    }
}

impl Inner {
    /// Stages again, as it was taken, a pending payment that a projection
    /// in progress took, so that its failover or close is served here
    /// like any staged payment's.
    ///
    /// Without this the move went to the writer thread, behind the whole
    /// projection: a payment in flight when a projection started waited for
    /// it — at saturation a projection of 50 ms of payments, the closed
    /// loop's p99 (BENCHMARKS.md, "Session 16"). The projection writes the
    /// row as taken; the next writes it over with the move (the owner's
    /// `INSERT` updates its own payment's row). The log gets the row's open
    /// record again in the current segment, ahead of the move's, so a replay
    /// of the segments past the projection's gives the same row; a replay
    /// that also reads the taken segments (the projection did not commit)
    /// finds the open there first, and the second is ignored as a repeat.
    fn restage(&mut self, trade_no: &str) -> Result<(), JournalError> {
        if self.rows.index.contains_key(trade_no) {
            return Ok(());
        }
        let Some(row) = self.in_projection.remove(trade_no) else {
            return Ok(());
        };
        match self.append(&open_record(&row.p)) {
            Ok(()) => {
                if let Some(due) = row.p.next_query_at_ms {
                    self.earliest_due = Some(self.earliest_due.map_or(due, |d| d.min(due)));
                }
                self.rows.insert(row);
                Ok(())
            }
            Err(e) => {
                self.in_projection.insert(row.p.trade_no.clone(), row);
                Err(e)
            }
        }
    }

    /// Appends `record` to the log: in the page cache when this returns.
    fn append(&mut self, record: &Record<'_>) -> Result<(), JournalError> {
        self.buf.clear();
        if self.torn {
            self.buf.push(b'\n');
        }
        serde_json::to_writer(&mut self.buf, record).map_err(|_| JournalError::Internal("a stage record"))?;
        self.buf.push(b'\n');
        match (&*self.log).write_all(&self.buf) {
            Ok(()) => {
                self.torn = false;
                Ok(())
            }
            Err(e) => {
                self.torn = true;
                Err(unavailable(&e))
            }
        }
    }
}

fn unavailable(e: &std::io::Error) -> JournalError {
    JournalError::Unavailable(format!("the journal's stage log: {e}"))
}

/// The ops the writer thread runs only after projecting the stage: those
/// that read or write a payment's row in `payments` (the rest write other
/// tables).
fn needs_projection(op: &Op) -> bool {
    match op {
        Op::Open(_)
        | Op::SetChannel { .. }
        | Op::Transition { .. }
        | Op::Accept { .. }
        | Op::HoldRefund { .. }
        | Op::SettleRefund { .. }
        | Op::Reschedule { .. }
        | Op::ClaimQueries { .. }
        | Op::Project => true,
        Op::History(_)
        | Op::Adjustment(_)
        | Op::ClaimEvents { .. }
        | Op::ReleaseEvents { .. }
        | Op::EventDelivered { .. }
        | Op::EventRetry { .. }
        | Op::EventFailed { .. }
        | Op::Resend { .. }
        | Op::Reconciled(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transition(trade_no: &str) -> Op {
        Op::Transition {
            trade_no: trade_no.into(),
            to: State::Paid,
            facts: TransitionFacts::default(),
            event: None,
        }
    }

    async fn stage_in(dir: &Path) -> Stage {
        let db = dir.join("j.db");
        let mut conn = Connection::open(&db).unwrap();
        conn.execute_batch(
            "CREATE TABLE stage_projected (id INTEGER PRIMARY KEY, through INTEGER NOT NULL); \
             INSERT INTO stage_projected VALUES (1, 0);",
        )
        .unwrap();
        let lock = Stage::take_log(&db).await.unwrap();
        Stage::open(&db, &mut conn, lock, true)
            .unwrap()
            .expect("the owner stages")
    }

    /// A failover and a close of a payment that a projection in progress
    /// took are served here, not handed to the writer thread (which would
    /// run them after the projection); the log past the projection's
    /// segments replays to the moved row, and a projection that fails
    /// leaves the moved row staged, not the row it took.
    #[tokio::test]
    async fn a_payment_taken_by_a_projection_in_progress_moves_on_the_stage() {
        let dir = tempfile::tempdir().unwrap();
        let stage = stage_in(dir.path()).await;
        let open = |t: &str| Op::Open(log::tests::payment(t));
        assert!(matches!(stage.serve(open("A")), Ok(Ok(Reply::Inserted(true)))));
        let taken = stage.take().unwrap().expect("A is staged");

        let failover = Op::SetChannel {
            trade_no: "A".into(),
            channel: Arc::from("acq-b"),
            at_ms: 20,
        };
        assert!(matches!(stage.serve(failover), Ok(Ok(Reply::Inserted(true)))));
        assert!(matches!(
            stage.serve(transition("A")),
            Ok(Ok(Reply::Moved(Moved::Applied { from: State::Pending })))
        ));
        assert!(stage.must_project_for(&transition("A")), "A is staged again");
        assert!(stage.staged_again(&transition("A")));
        assert!(!stage.staged_again(&Op::Project), "about no one payment");
        stage.projected(taken);

        let mut rows = Rows::default();
        for (n, path) in segments(&stage.dir).unwrap() {
            replay(n, &path, &mut rows).unwrap();
        }
        let row = rows.get_mut("A").expect("A is in the log past the projection");
        assert_eq!(
            (row.p.state, row.p.channel_id.as_deref(), row.p.next_query_at_ms),
            (State::Paid, Some("acq-b"), None)
        );

        assert!(matches!(stage.serve(open("B")), Ok(Ok(Reply::Inserted(true)))));
        let taken = stage.take().unwrap().expect("A and B are staged");
        assert!(matches!(
            stage.serve(transition("B")),
            Ok(Ok(Reply::Moved(Moved::Applied { from: State::Pending })))
        ));
        stage.restore(taken);
        let mut inner = stage.lock();
        assert_eq!(inner.rows.list.len(), 2, "A and B, once each");
        for t in ["A", "B"] {
            assert_eq!(inner.rows.get_mut(t).map(|r| r.p.state), Some(State::Paid), "{t}");
        }
    }

    /// An op about one payment waits for a projection only while that
    /// payment is staged; an op about no one payment, while anything is.
    /// (A stage without its writer thread: nothing projects on a timer.)
    #[tokio::test]
    async fn only_an_op_about_a_staged_payment_projects_the_stage() {
        let dir = tempfile::tempdir().unwrap();
        let stage = stage_in(dir.path()).await;

        let open = |t: &str| Op::Open(log::tests::payment(t));
        assert!(matches!(stage.serve(open("A")), Ok(Ok(Reply::Inserted(true)))));
        assert!(stage.must_project_for(&transition("A")), "A is staged");
        // A projection takes A (the table's part is the writer's)...
        let taken = stage.take().unwrap().expect("A is staged");
        stage.projected(taken);
        // ...and B is staged after it.
        assert!(matches!(stage.serve(open("B")), Ok(Ok(Reply::Inserted(true)))));

        assert!(!stage.must_project_for(&transition("A")), "A is in the table");
        assert!(!stage.must_project_for(&Op::Reschedule {
            trade_no: "A".into(),
            next_at_ms: None
        }));
        assert!(stage.must_project_for(&transition("B")), "B is staged");
        assert!(stage.must_project_for(&Op::HoldRefund {
            trade_no: "B".into(),
            amount: 1
        }));
        let note = |trade_no: Option<&str>| Op::Accept {
            note: NotificationIn {
                channel: Arc::from("acq-a"),
                dedupe_key: Some("k".into()),
                trade_no: trade_no.map(String::from),
                at_ms: 1,
            },
            to: State::Paid,
            facts: TransitionFacts::default(),
            event: None,
        };
        assert!(!stage.must_project_for(&note(Some("A"))));
        assert!(stage.must_project_for(&note(Some("B"))));
        assert!(stage.must_project_for(&note(None)), "no one payment: project");
        assert!(stage.must_project_for(&Op::Project));
        assert!(!stage.must_project_for(&Op::EventDelivered {
            event_id: "e".into(),
            at_ms: 1
        }));
    }
}
