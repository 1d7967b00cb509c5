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
//! (one transaction, one `INSERT` a row), so a payment that closed meanwhile
//! enters the table once, final, with no sweeper entry to add and remove.
//! Nothing a payment's answer waits for touches SQLite: a projection holds
//! the connection, not the payments.
//!
//! What the stage serves, from the worker that waits, with no hand-off: an
//! open (a trade number minted for it just now: new by construction, see
//! `payment::trade_no`), a failover's channel and a move from `pending` of
//! a staged payment. Everything else about a payment is the writer
//! thread's, which first projects whatever is staged ([`needs_projection`]),
//! and so do reads (`Journal::unstaged`): every read and every other write
//! sees the staged rows in the table.
//!
//! **The log.** Records are JSON lines in numbered segment files beside the
//! database (`payroute.db-stage.N`); a projection starts the next segment,
//! and the transaction that moves a segment's rows into the table also
//! records its number (`stage_projected`), so a crash between that commit
//! and the segment's removal replays nothing twice. At open, the segments
//! past that number are replayed and projected before anything else runs.
//! One process owns the log (`payroute.db-stage.lock`, an advisory lock):
//! another that opens the journal while payroute serves (`payroute journal
//! export`) copies what the log holds into the table where a payment is
//! not there yet, and leaves the log alone; the owner's own projection later
//! writes the final row over such a copy.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::Thread;
use std::time::{Duration, Instant};

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};

use crate::journal::model::*;
use crate::journal::state::{Protocol, Rule, State};
use crate::journal::JournalError;

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

/// One line of the log.
#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Record<'a> {
    Open {
        #[serde(borrow)]
        trade_no: Cow<'a, str>,
        #[serde(borrow)]
        merchant_id: Cow<'a, str>,
        #[serde(borrow)]
        order_id: Cow<'a, str>,
        amount: i64,
        #[serde(borrow)]
        currency: Cow<'a, str>,
        #[serde(borrow)]
        pay_type: Option<Cow<'a, str>>,
        #[serde(borrow)]
        protocol: Cow<'a, str>,
        #[serde(borrow)]
        channel_id: Option<Cow<'a, str>>,
        #[serde(borrow)]
        channel_trade_no: Option<Cow<'a, str>>,
        #[serde(borrow)]
        state: Cow<'a, str>,
        expected_fee: i64,
        #[serde(borrow)]
        merchant_data: Cow<'a, str>,
        created_at_ms: i64,
        next_query_at_ms: Option<i64>,
    },
    Channel {
        #[serde(borrow)]
        trade_no: Cow<'a, str>,
        #[serde(borrow)]
        channel: Cow<'a, str>,
        at_ms: i64,
    },
    Move {
        #[serde(borrow)]
        trade_no: Cow<'a, str>,
        #[serde(borrow)]
        to: Cow<'a, str>,
        at_ms: i64,
        #[serde(borrow)]
        channel: Option<Cow<'a, str>>,
        #[serde(borrow)]
        channel_trade_no: Option<Cow<'a, str>>,
        expected_fee: Option<i64>,
    },
}

fn open_record(p: &NewPayment) -> Record<'_> {
    Record::Open {
        trade_no: Cow::Borrowed(&p.trade_no),
        merchant_id: Cow::Borrowed(&p.merchant_id),
        order_id: Cow::Borrowed(&p.order_id),
        amount: p.amount,
        currency: Cow::Borrowed(&p.currency),
        pay_type: p.pay_type.as_deref().map(Cow::Borrowed),
        protocol: Cow::Borrowed(p.protocol.as_str()),
        channel_id: p.channel_id.as_deref().map(Cow::Borrowed),
        channel_trade_no: p.channel_trade_no.as_deref().map(Cow::Borrowed),
        state: Cow::Borrowed(p.state.as_str()),
        expected_fee: p.expected_fee,
        merchant_data: Cow::Borrowed(&p.merchant_data),
        created_at_ms: p.created_at_ms,
        next_query_at_ms: p.next_query_at_ms,
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

    /// `false`: that trade number is staged already.
    fn insert(&mut self, row: Staged) -> bool {
        if self.index.contains_key(&row.p.trade_no) {
            return false;
        }
        self.index.insert(row.p.trade_no.clone(), self.list.len());
        self.list.push(row);
        true
    }

    /// Applies one record of a log being replayed, by the rules the stage
    /// served it with (a record was only written for an op it applied).
    fn replay(&mut self, record: Record<'_>) -> Result<(), String> {
        match record {
            Record::Open {
                trade_no,
                merchant_id,
                order_id,
                amount,
                currency,
                pay_type,
                protocol,
                channel_id,
                channel_trade_no,
                state,
                expected_fee,
                merchant_data,
                created_at_ms,
                next_query_at_ms,
            } => {
                let p = NewPayment {
                    trade_no: trade_no.into_owned(),
                    merchant_id: Arc::from(&*merchant_id),
                    order_id: order_id.into_owned(),
                    amount,
                    currency: currency.into_owned(),
                    pay_type: pay_type.map(Cow::into_owned),
                    protocol: Protocol::parse(&protocol).ok_or("unknown protocol")?,
                    channel_id: channel_id.map(|c| Arc::from(&*c)),
                    channel_trade_no: channel_trade_no.map(Cow::into_owned),
                    state: State::parse(&state).ok_or("unknown state")?,
                    expected_fee,
                    merchant_data: merchant_data.into_owned(),
                    created_at_ms,
                    next_query_at_ms,
                };
                self.insert(Staged::new(p));
            }
            Record::Channel {
                trade_no,
                channel,
                at_ms,
            } => {
                if let Some(row) = self.get_mut(&trade_no).filter(|r| r.p.state == State::Pending) {
                    row.set_channel(&Arc::from(&*channel), at_ms);
                }
            }
            Record::Move {
                trade_no,
                to,
                at_ms,
                channel,
                channel_trade_no,
                expected_fee,
            } => {
                let to = State::parse(&to).ok_or("unknown state")?;
                let facts = TransitionFacts {
                    at_ms,
                    channel: channel.map(|c| Arc::from(&*c)),
                    channel_trade_no: channel_trade_no.map(Cow::into_owned),
                    expected_fee,
                };
                if let Some(row) = self.get_mut(&trade_no).filter(|r| r.p.state == State::Pending) {
                    row.moved(to, &facts);
                }
            }
        }
        Ok(())
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
    /// A record's bytes, kept to spare an allocation per record.
    buf: Vec<u8>,
    /// A write failed: the next record starts on a line of its own.
    torn: bool,
}

/// The stage of one journal (see the module's doc).
pub(in crate::journal) struct Stage {
    inner: Mutex<Inner>,
    /// Something is staged or being projected: a reader of `payments` must
    /// ask for a projection first.
    any: AtomicBool,
    /// The writer thread, woken when the stage needs projecting.
    writer: OnceLock<Thread>,
    /// `payroute.db-stage.`: segment `N` is this plus `N`.
    prefix: PathBuf,
    /// The last segment synced to disk with its directory entry.
    synced: AtomicU64,
    /// Held while this process owns the log.
    _lock: File,
}

/// Who writes rows found in a log into `payments`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Writer {
    /// The owner of the log: its row is the payment's latest and goes over
    /// another process's copy; the segments' number is recorded.
    Owner,
    /// Another process: copies only what the table does not hold.
    Guest,
}

impl Stage {
    /// Takes the lock on the log of the journal at `db`: `None` if another
    /// owns it. A journal this process dropped a moment ago lets go once its
    /// writer has projected the last rows, so an owner is waited for a
    /// little ([`LOCK_PATIENCE`]) before this opens as a guest.
    pub(in crate::journal) async fn take_log(db: &Path) -> Result<Option<File>, JournalError> {
        let path = PathBuf::from(format!("{}-stage.lock", db.display()));
        let err = |e: std::io::Error| JournalError::Open(format!("{}: {e}", path.display()));
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
        let prefix = PathBuf::from(format!("{}-stage.", db.display()));
        let owner = if lock.is_some() { Writer::Owner } else { Writer::Guest };
        let projected: i64 = conn.query_row("SELECT through FROM stage_projected WHERE id = 1", [], |r| r.get(0))?;
        let projected = u64::try_from(projected).unwrap_or(0);
        let segments = segments(&prefix)?;
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
        let log = create_segment(&prefix, segment)?;
        Ok(Some(Stage {
            inner: Mutex::new(Inner {
                rows: Rows::default(),
                log: Arc::new(log),
                segment,
                oldest: segment,
                since: None,
                projecting: false,
                buf: Vec::with_capacity(512),
                torn: false,
            }),
            any: AtomicBool::new(false),
            writer: OnceLock::new(),
            prefix,
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
                inner
                    .append(&open_record(&p))
                    .map(|()| Reply::Inserted(inner.rows.insert(Staged::new(p))))
            }
            Op::SetChannel {
                ref trade_no,
                ref channel,
                ref at_ms,
            } => {
                let Some(row) = inner.rows.get_mut(trade_no) else {
                    return Err(op);
                };
                if row.p.state != State::Pending {
                    return Ok(Ok(Reply::Inserted(false)));
                }
                let record = Record::Channel {
                    trade_no: Cow::Borrowed(trade_no),
                    channel: Cow::Borrowed(channel),
                    at_ms: *at_ms,
                };
                inner.append(&record).map(|()| {
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
                let pending = inner
                    .rows
                    .get_mut(trade_no)
                    .is_some_and(|r| r.p.state == State::Pending);
                if !pending || State::Pending.may_move(*to, false) != Rule::Allowed {
                    return Err(op);
                }
                let record = Record::Move {
                    trade_no: Cow::Borrowed(trade_no),
                    to: Cow::Borrowed(to.as_str()),
                    at_ms: facts.at_ms,
                    channel: facts.channel.as_deref().map(Cow::Borrowed),
                    channel_trade_no: facts.channel_trade_no.as_deref().map(Cow::Borrowed),
                    expected_fee: facts.expected_fee,
                };
                inner.append(&record).map(|()| {
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
        inner.log = Arc::new(create_segment(&self.prefix, next)?);
        inner.torn = false;
        let through = std::mem::replace(&mut inner.segment, next);
        let rows = std::mem::take(&mut inner.rows).list;
        inner.since = None;
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
        self.any.store(!inner.rows.list.is_empty(), Ordering::Release);
    }

    /// The projection of `taken` failed: its rows are staged again, ahead
    /// of those staged since, and tried at the next deadline.
    pub(super) fn restore(&self, taken: Taken) {
        let mut inner = self.lock();
        let newer = std::mem::take(&mut inner.rows).list;
        for row in taken.rows.into_iter().chain(newer) {
            inner.rows.insert(row);
        }
        inner.since = Some(Instant::now());
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
            if let Some(dir) = self.prefix.parent().filter(|d| !d.as_os_str().is_empty()) {
                File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| unavailable(&e))?;
            }
        }
        Ok(())
    }

    fn segment_path(&self, n: u64) -> PathBuf {
        segment_path(&self.prefix, n)
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
pub(super) fn needs_projection(op: &Op) -> bool {
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

/// A staged row's `INSERT` into `payments`, then `$conflict`.
/// Rows per `INSERT` of a projection, largest first: one statement for many
/// rows. `payments`' checks are `IN` lists (migration 4 says why they stay),
/// which SQLite builds a temporary b-tree for once per statement run: once
/// per row, that was half a projection's cost (BENCHMARKS.md, "Session
/// 13"). Four sizes keep four statements per writer in the cache.
const CHUNKS: [usize; 4] = [64, 16, 4, 1];
/// Columns of a staged row's `INSERT` into `payments`, in [`bind`]'s order.
const COLUMNS: usize = 16;

/// The `INSERT` of `rows` staged rows into `payments`, by `writer`.
fn insert_sql(rows: usize, writer: Writer) -> String {
    let mut sql = String::from(
        "INSERT INTO payments (trade_no, merchant_id, order_id, amount, currency, pay_type, protocol, \
         channel_id, channel_trade_no, state, expected_fee, merchant_data, created_at_ms, updated_at_ms, \
         next_query_at_ms, paid_at_ms) VALUES ",
    );
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for col in 0..COLUMNS {
            if col > 0 {
                sql.push_str(", ");
            }
            sql.push('?');
            sql.push_str(&(row * COLUMNS + col + 1).to_string());
        }
        sql.push(')');
    }
    sql.push_str(match writer {
        // Over a guest's copy of the same payment (same merchant, order and
        // time): the owner's row is the later one. A different payment under
        // the same trade number (2^-83 a pair) is left alone and logged.
        Writer::Owner => {
            " ON CONFLICT (trade_no) DO UPDATE SET channel_id = excluded.channel_id, \
             channel_trade_no = excluded.channel_trade_no, state = excluded.state, \
             expected_fee = excluded.expected_fee, updated_at_ms = excluded.updated_at_ms, \
             next_query_at_ms = excluded.next_query_at_ms, paid_at_ms = excluded.paid_at_ms \
             WHERE payments.merchant_id = excluded.merchant_id AND payments.order_id = excluded.order_id \
             AND payments.created_at_ms = excluded.created_at_ms"
        }
        Writer::Guest => " ON CONFLICT (trade_no) DO NOTHING",
    });
    sql
}

/// A staged row's values, in [`insert_sql`]'s column order.
fn bind<'a>(row: &'a Staged, out: &mut Vec<ToSqlOutput<'a>>) {
    let text = |s: &'a str| ValueRef::Text(s.as_bytes());
    let opt_text = |s: Option<&'a str>| s.map_or(ValueRef::Null, text);
    let opt_int = |v: Option<i64>| v.map_or(ValueRef::Null, ValueRef::Integer);
    let p = &row.p;
    let values = [
        text(&p.trade_no),
        text(&p.merchant_id),
        text(&p.order_id),
        ValueRef::Integer(p.amount),
        text(&p.currency),
        opt_text(p.pay_type.as_deref()),
        text(p.protocol.as_str()),
        opt_text(p.channel_id.as_deref()),
        opt_text(p.channel_trade_no.as_deref()),
        text(p.state.as_str()),
        ValueRef::Integer(p.expected_fee),
        text(&p.merchant_data),
        ValueRef::Integer(p.created_at_ms),
        ValueRef::Integer(row.updated_at_ms),
        opt_int(p.next_query_at_ms),
        opt_int(row.paid_at_ms),
    ];
    out.extend(values.map(ToSqlOutput::Borrowed));
}

/// Writes staged rows into `payments` (inside the caller's transaction);
/// the owner also records that segments up to `through` are in the table.
fn write_rows(conn: &Connection, rows: &[Staged], writer: Writer, through: u64) -> Result<(), JournalError> {
    let mut values = Vec::with_capacity(CHUNKS[0] * COLUMNS);
    let mut rest = rows;
    while !rest.is_empty() {
        let size = CHUNKS.into_iter().find(|c| *c <= rest.len()).unwrap_or(1);
        let (chunk, next) = rest.split_at(size.min(rest.len()));
        rest = next;
        values.clear();
        for row in chunk {
            bind(row, &mut values);
        }
        let changed = conn
            .prepare_cached(&insert_sql(chunk.len(), writer))?
            .execute(rusqlite::params_from_iter(values.iter()))?;
        if changed < chunk.len() && writer == Writer::Owner {
            collisions(conn, chunk)?;
        }
    }
    if writer == Writer::Owner {
        let through = i64::try_from(through).map_err(|_| JournalError::Internal("segment number"))?;
        conn.prepare_cached("UPDATE stage_projected SET through = ?1 WHERE id = 1")?
            .execute([through])?;
    }
    Ok(())
}

/// Logs each row of `chunk` that the table holds as another payment (its
/// trade number was someone else's: the table's row was kept).
fn collisions(conn: &Connection, chunk: &[Staged]) -> Result<(), JournalError> {
    let mut same = conn.prepare_cached(
        "SELECT merchant_id = ?2 AND order_id = ?3 AND created_at_ms = ?4 FROM payments WHERE trade_no = ?1",
    )?;
    for row in chunk {
        let p = &row.p;
        let ours: bool = same.query_row(params![p.trade_no, &*p.merchant_id, p.order_id, p.created_at_ms], |r| {
            r.get(0)
        })?;
        if !ours {
            tracing::error!(trade_no = %p.trade_no, "journal: a staged payment's trade number names another payment; the staged one was not recorded");
        }
    }
    Ok(())
}

fn segment_path(prefix: &Path, n: u64) -> PathBuf {
    let mut path = prefix.as_os_str().to_owned();
    path.push(n.to_string());
    PathBuf::from(path)
}

fn create_segment(prefix: &Path, n: u64) -> Result<File, JournalError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(segment_path(prefix, n))
        .map_err(|e| unavailable(&e))
}

/// Removing a projected segment is tidying: one left behind is skipped at
/// the next open (its number is recorded) and removed then.
fn remove(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(error = %e, path = %path.display(), "journal: cannot remove a projected stage segment");
        }
    }
}

/// The segments beside the database, oldest first.
fn segments(prefix: &Path) -> Result<Vec<(u64, PathBuf)>, JournalError> {
    let dir = match prefix.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = prefix
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| JournalError::Open(format!("{}: not a file name", prefix.display())))?;
    let entries = std::fs::read_dir(&dir).map_err(|e| JournalError::Open(format!("{}: {e}", dir.display())))?;
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let file = entry.file_name();
        let number = file
            .to_str()
            .and_then(|f| f.strip_prefix(name))
            .and_then(|n| n.parse().ok());
        if let Some(n) = number {
            found.push((n, entry.path()));
        }
    }
    found.sort_unstable_by_key(|(n, _)| *n);
    Ok(found)
}

/// Replays segment `n` into `rows`. A line that does not parse is skipped
/// and logged: the last one may be a write a crash cut short (never
/// acknowledged); one in the middle is damage an operator must hear of. A
/// segment gone meanwhile was projected by its owner (a guest reads beside it).
fn replay(n: u64, path: &Path, rows: &mut Rows) -> Result<(), JournalError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(JournalError::Open(format!("{}: {e}", path.display()))),
    };
    let lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    for (i, line) in lines.iter().enumerate() {
        if line.is_empty() {
            continue;
        }
        let applied = serde_json::from_slice::<Record<'_>>(line)
            .map_err(|e| e.to_string())
            .and_then(|record| rows.replay(record));
        if let Err(e) = applied {
            let last = i + 1 == lines.len();
            if last {
                tracing::warn!(
                    segment = n,
                    "journal: the stage log ends in a record cut short (never acknowledged)"
                );
            } else {
                tracing::error!(segment = n, line = i + 1, error = %e, "journal: an unreadable stage record was skipped");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payment(trade_no: &str) -> NewPayment {
        NewPayment {
            trade_no: trade_no.into(),
            merchant_id: Arc::from("m1"),
            order_id: "o\"1\n".into(),
            amount: 500,
            currency: "CNY".into(),
            pay_type: None,
            protocol: Protocol::Http,
            channel_id: Some(Arc::from("acq-a")),
            channel_trade_no: None,
            state: State::Pending,
            expected_fee: 3,
            merchant_data: "{\"k\":\"v\"}".into(),
            created_at_ms: 10,
            next_query_at_ms: Some(1_000),
        }
    }

    /// What is replayed is what was served: an open, a failover and a
    /// close, with text that needs escaping, come back as the same row.
    #[test]
    fn a_replayed_log_gives_the_rows_it_was_written_from() {
        let p = payment("T1");
        let mut lines = Vec::new();
        let facts = TransitionFacts {
            at_ms: 30,
            channel: None,
            channel_trade_no: Some("CT-9".into()),
            expected_fee: Some(4),
        };
        for record in [
            open_record(&p),
            Record::Channel {
                trade_no: "T1".into(),
                channel: "acq-b".into(),
                at_ms: 20,
            },
            Record::Move {
                trade_no: "T1".into(),
                to: "paid".into(),
                at_ms: 30,
                channel: None,
                channel_trade_no: Some("CT-9".into()),
                expected_fee: Some(4),
            },
        ] {
            lines.extend(serde_json::to_vec(&record).unwrap());
            lines.push(b'\n');
        }
        let mut served = Staged::new(p);
        served.set_channel(&Arc::from("acq-b"), 20);
        served.moved(State::Paid, &facts);

        let mut rows = Rows::default();
        for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            rows.replay(serde_json::from_slice(line).unwrap()).unwrap();
        }
        let row = rows.get_mut("T1").unwrap();
        assert_eq!(format!("{:?}", row), format!("{served:?}"));
        assert_eq!(row.p.order_id, "o\"1\n");
        assert_eq!(
            (row.p.state, row.paid_at_ms, row.p.next_query_at_ms),
            (State::Paid, Some(30), None)
        );
        assert_eq!(row.p.channel_id.as_deref(), Some("acq-b"));
    }

    /// Replay keeps the stage's rules: a second open of a trade number, a
    /// failover or move of a payment that is not pending change nothing.
    #[test]
    fn replay_applies_only_what_the_stage_would_have() {
        let mut rows = Rows::default();
        rows.replay(open_record(&payment("T2"))).unwrap();
        let mut again = payment("T2");
        again.amount = 1;
        rows.replay(open_record(&again)).unwrap();
        let declined = Record::Move {
            trade_no: "T2".into(),
            to: "declined".into(),
            at_ms: 11,
            channel: None,
            channel_trade_no: None,
            expected_fee: None,
        };
        rows.replay(declined).unwrap();
        let paid = Record::Move {
            trade_no: "T2".into(),
            to: "paid".into(),
            at_ms: 12,
            channel: None,
            channel_trade_no: None,
            expected_fee: None,
        };
        rows.replay(paid).unwrap();
        rows.replay(Record::Channel {
            trade_no: "T2".into(),
            channel: "acq-z".into(),
            at_ms: 13,
        })
        .unwrap();
        let row = rows.get_mut("T2").unwrap();
        assert_eq!(
            (row.p.amount, row.p.state, row.updated_at_ms),
            (500, State::Declined, 11)
        );
        assert_eq!(row.p.channel_id.as_deref(), Some("acq-a"));
        assert!(rows
            .replay(Record::Move {
                trade_no: "T2".into(),
                to: "sideways".into(),
                at_ms: 14,
                channel: None,
                channel_trade_no: None,
                expected_fee: None,
            })
            .is_err());
    }
}
