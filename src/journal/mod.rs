//! The journal: the durable record of every payment, its attempts, the
//! notifications in and out, reversals and refunds (contract part two,
//! "Payment states and the journal", "Notifications in/out", "The sweeper").
//!
//! **Where.** SQLite by default, embedded (sqlx's bundled build: nothing to
//! install), in `payroute.db` beside the config; PostgreSQL for a fleet.
//! The schema is versioned ([`migrations`](self#migrations)) and migrated
//! when a journal opens; PostgreSQL migrations take sqlx's advisory lock, so
//! instances starting together migrate once.
//!
//! **What is durable when.** Money state — a payment recorded, a state
//! moved, a notification accepted, a refund held or settled, a reversal, an
//! outbox event and its delivery — is committed before the call returns, so
//! nothing is acknowledged to anyone before it is in the journal. Each move
//! of state is a compare-and-set under the rules of [`State::may_move`]
//! (never backwards), and the outbox event it causes is inserted in the same
//! transaction: a payment can not be paid without its merchant notification
//! queued, nor the other way round. Writes are group-committed
//! ([`writer`]): concurrent callers share one transaction.
//!
//! On SQLite (`synchronous = "normal"`) a new payment's open, failover and
//! close are appended to a log file and kept in memory, and moved into
//! `payments` in bulk every 50 ms ([`writer::Stage`]): as durable as a WAL
//! commit when the call returns, and every read through [`Journal`] sees
//! them.
//!
//! History — attempts and rejected notifications — is written behind: the
//! call never waits, rows are flushed every 100 ms or 1,000 rows. A crash
//! loses at most the history of the last 100 ms plus the batch being
//! committed; money state is never in that window.
//!
//! **SQLite durability.** WAL with `synchronous = NORMAL` (the default;
//! `[journal] synchronous = "full"` to change): a commit is in the WAL file
//! when the call returns, so a crash or `kill -9` of payroute loses nothing
//! committed; only a power loss or kernel crash can lose the commits since
//! the WAL was last synced to disk, at the checkpoint a background task runs
//! every 250 ms (commits wait for a checkpoint only when one must start the
//! WAL over: see [`checkpoints`]). `"full"` syncs
//! the WAL at every commit: durable against power loss too, at the disk's
//! sync time per commit (about 3 ms on the test machines) added to every
//! payment's answer. Group commit amortizes that over concurrent payments,
//! but not for a lone one, so `"normal"` is the default, as for most
//! embedded WAL deployments; a host whose power is not trusted sets `"full"`.
//!
//! **Outbox across a fleet.** Events are claimed with a lease (`claim_due_events`):
//! on PostgreSQL with `FOR UPDATE SKIP LOCKED`, so two instances never
//! claim the same event, and an instance that dies leaves leases that expire
//! and are claimed by another. The sweeper's pending payments are claimed
//! the same way (`claim_due_queries`), so a fleet asks about each payment once.
//!
//! # Migrations
//!
//! `src/journal/migrations/{sqlite,postgres}/NNNN_name.sql`, one file per
//! version and backend, listed in [`MIGRATIONS_SQLITE`] and
//! [`MIGRATIONS_POSTGRES`], embedded in the binary and tracked by sqlx in
//! `_sqlx_migrations` (a changed file that was already applied is refused:
//! add a new version instead).

mod export;
mod model;
mod sql;
mod state;
mod writer;

#[cfg(test)]
pub(crate) mod tests;

/// A SQLite journal in a temporary directory, for unit tests elsewhere that
/// need an `App`: its writer tasks run on the returned runtime, so keep all
/// three alive for the test.
#[cfg(test)]
pub(crate) fn scratch() -> (Journal, tempfile::TempDir, tokio::runtime::Runtime) {
    let dir = tempfile::tempdir().expect("temp dir");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let cfg = JournalConfig::Sqlite {
        path: dir.path().join("journal.db"),
        synchronous: Synchronous::Normal,
    };
    let journal = rt.block_on(Journal::open(&cfg)).expect("scratch journal");
    (journal, dir, rt)
}

use std::borrow::Cow;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::ConnectOptions;

use crate::config::{JournalConfig, Synchronous};
pub(crate) use model::*;
#[allow(unused_imports)]
pub(crate) use state::{valid_trade_no, Protocol, State};
use writer::{History, Lanes, Stage, WritePool};

/// `(version, description, SQL)` for SQLite.
const MIGRATIONS_SQLITE: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("migrations/sqlite/0001_init.sql")),
    (
        2,
        "reconciliation",
        include_str!("migrations/sqlite/0002_reconciliation.sql"),
    ),
    (3, "staging", include_str!("migrations/sqlite/0003_staging.sql")),
    (
        4,
        "stage checks",
        include_str!("migrations/sqlite/0004_stage_checks.sql"),
    ),
    (5, "stage log", include_str!("migrations/sqlite/0005_stage_log.sql")),
];
/// The same versions for PostgreSQL.
const MIGRATIONS_POSTGRES: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("migrations/postgres/0001_init.sql")),
    (
        2,
        "reconciliation",
        include_str!("migrations/postgres/0002_reconciliation.sql"),
    ),
    (
        3,
        "order index",
        include_str!("migrations/postgres/0003_order_index.sql"),
    ),
];

/// How often the SQLite WAL is checkpointed.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);
/// WAL frames past which a checkpoint makes the writer start the WAL over
/// (see [`checkpoints`]): 16 MiB of 1 KiB pages.
const WAL_FRAMES_LIMIT: i64 = 16_384;
/// Page size of a new SQLite journal. A commit writes each page it changed
/// whole into the WAL, and a payment changes about six (its row and five
/// index entries, each on a different page): at SQLite's default 4 KiB,
/// 24 KiB of WAL for a few hundred bytes of data, which checkpoints then
/// copy back. 1 KiB pages cut that fourfold; the tables' rows are small.
/// (A journal created with other pages keeps them.)
const PAGE_SIZE: u32 = 1024;
/// A WAL file larger than this is cut back to it when it starts over
/// (`journal_size_limit`).
const WAL_LIMIT: u64 = 64 << 20;
/// How long a SQLite connection waits for another's lock (a checkpoint).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Readers of the SQLite journal (WAL: they never block the writer).
const SQLITE_READERS: u32 = 4;
/// PostgreSQL's readers (and migrations); each writer lane opens a
/// connection of its own (`writer`).
const PG_CONNECTIONS: u32 = 6;
/// Waiting for a connection longer than this means the database is down.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long `ping` may take before the journal counts as unreachable.
const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// Payments `find_for_channel` returns at most (one order id, several merchants).
const FIND_LIMIT: i64 = 16;

/// Everything that can go wrong in the journal. Never carries the
/// database URL (it may hold a password) nor a row's values.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum JournalError {
    /// The database cannot be reached (connection refused or lost, pool
    /// exhausted, timed out): retry later, answer 503.
    #[error("journal database unavailable: {0}")]
    Unavailable(String),
    /// The database refused a statement.
    #[error("journal database error: {0}")]
    Database(String),
    #[error("cannot open the journal: {0}")]
    Open(String),
    #[error("journal schema migration failed: {0}")]
    Migrate(String),
    /// The caller's input cannot be recorded (e.g. a malformed trade number).
    #[error("journal: {0}")]
    Invalid(String),
    #[error("journal export failed: {0}")]
    Export(String),
    /// The journal's tasks are gone (runtime shutting down).
    #[error("the journal is closed")]
    Closed,
    #[error("journal internal error: {0}")]
    Internal(&'static str),
}

impl From<sqlx::Error> for JournalError {
    fn from(e: sqlx::Error) -> JournalError {
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => JournalError::Unavailable(e.to_string()),
            // The message only: details may quote values.
            sqlx::Error::Database(db) => JournalError::Database(db.message().to_owned()),
            other => JournalError::Database(other.to_string()),
        }
    }
}

/// The journal's migrations, embedded (no files at run time, no database at build time).
#[derive(Debug)]
struct Embedded(&'static [(i64, &'static str, &'static str)]);

type Resolved<'s> = Pin<Box<dyn Future<Output = Result<Vec<Migration>, sqlx::error::BoxDynError>> + Send + 's>>;

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(self) -> Resolved<'s> {
        Box::pin(async move {
            Ok(self
                .0
                .iter()
                .map(|(version, description, sql)| {
                    Migration::new(
                        *version,
                        Cow::Borrowed(*description),
                        MigrationType::Simple,
                        Cow::Borrowed(*sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

async fn migrator(list: &'static [(i64, &'static str, &'static str)]) -> Result<Migrator, JournalError> {
    Migrator::new(Embedded(list))
        .await
        .map_err(|e| JournalError::Migrate(e.to_string()))
}

/// Where reads go.
enum ReadPool {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

struct Inner {
    read: ReadPool,
    /// The SQLite file, for reads that run whole on a connection of their own.
    sqlite_path: Option<PathBuf>,
    lanes: Arc<Lanes>,
    history: History,
    /// For logs: backend and place, never a password.
    describe: String,
}

/// A handle on the journal; cheap to clone, shared by every task.
#[derive(Clone)]
pub(crate) struct Journal {
    inner: Arc<Inner>,
}

/// Runs a read on whichever backend the journal has.
macro_rules! read {
    ($journal:expr, $f:ident ( $($arg:expr),* )) => {
        match &$journal.inner.read {
            ReadPool::Sqlite(pool) => sql::read::sqlite::$f(pool, $($arg),*).await,
            ReadPool::Postgres(pool) => sql::read::postgres::$f(pool, $($arg),*).await,
        }
    };
}

/// Turns a writer's reply into the one the operation answers.
macro_rules! reply {
    ($reply:expr, Done) => {
        match $reply? {
            Reply::Done => Ok(()),
            _ => Err(JournalError::Internal("expected a Done reply")),
        }
    };
    ($reply:expr, $variant:ident) => {
        match $reply? {
            Reply::$variant(value) => Ok(value),
            _ => Err(JournalError::Internal(concat!(
                "expected a ",
                stringify!($variant),
                " reply"
            ))),
        }
    };
}

impl Journal {
    /// Opens (creating if needed) and migrates the journal, and starts its
    /// writer tasks on the current runtime.
    pub async fn open(cfg: &JournalConfig) -> Result<Journal, JournalError> {
        match cfg {
            JournalConfig::Sqlite { path, synchronous } => Journal::open_sqlite(path, *synchronous).await,
            JournalConfig::Postgres { url } => Journal::open_postgres(url.expose()).await,
        }
    }

    async fn open_sqlite(path: &Path, synchronous: Synchronous) -> Result<Journal, JournalError> {
        let open_err = |e: sqlx::Error| JournalError::Open(format!("{}: {e}", path.display()));
        let write_opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .page_size(PAGE_SIZE)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match synchronous {
                Synchronous::Normal => SqliteSynchronous::Normal,
                Synchronous::Full => SqliteSynchronous::Full,
            })
            .busy_timeout(BUSY_TIMEOUT)
            // Checkpoints (which sync the disk) run in their own task, not
            // inside a commit that payments wait for.
            .pragma("wal_autocheckpoint", "0")
            // A WAL that a checkpoint has emptied is cut back to this size,
            // so a busy journal's WAL does not keep its high-water mark on disk.
            .pragma("journal_size_limit", WAL_LIMIT.to_string())
            .disable_statement_logging();
        let checkpoint = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(write_opts.clone());
        // Migrations through sqlx (its migrator keeps `_sqlx_migrations`),
        // then the connection is closed: from here on, the writer thread's
        // own connection is the one that writes.
        let migrate = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(write_opts)
            .await
            .map_err(open_err)?;
        migrator(MIGRATIONS_SQLITE)
            .await?
            .run(&migrate)
            .await
            .map_err(|e| JournalError::Migrate(e.to_string()))?;
        migrate.close().await;
        let mut writer = sql::sqlite::open(path, synchronous)?;
        // What an earlier run left in the stage's log is projected first.
        // Under "full" nothing stages: the log would need a sync a record.
        let lock = Stage::take_log(path).await?;
        let stage = Stage::open(path, &mut writer, lock, synchronous == Synchronous::Normal)?;
        let read_opts = SqliteConnectOptions::new()
            .filename(path)
            .read_only(true)
            .busy_timeout(BUSY_TIMEOUT)
            .disable_statement_logging();
        let read = SqlitePoolOptions::new()
            .max_connections(SQLITE_READERS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(read_opts)
            .await
            .map_err(open_err)?;
        let journal = Journal::start(
            ReadPool::Sqlite(read),
            WritePool::Sqlite(writer, stage.map(Arc::new)),
            format!("sqlite {}", path.display()),
            Some(path.to_owned()),
        )?;
        tokio::spawn(checkpoints(checkpoint, Arc::downgrade(&journal.inner)));
        Ok(journal)
    }

    async fn open_postgres(url: &str) -> Result<Journal, JournalError> {
        let opts = PgConnectOptions::from_str(url)
            .map_err(|_| JournalError::Open("url is not a valid PostgreSQL URL".into()))?
            .application_name("payroute")
            .disable_statement_logging();
        let describe = format!(
            "postgres {}:{}/{}",
            opts.get_host(),
            opts.get_port(),
            opts.get_database().unwrap_or("")
        );
        let pool = PgPoolOptions::new()
            .max_connections(PG_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(opts)
            .await
            .map_err(|e| JournalError::Open(format!("{describe}: {}", JournalError::from(e))))?;
        migrator(MIGRATIONS_POSTGRES)
            .await?
            .run(&pool)
            .await
            .map_err(|e| JournalError::Migrate(e.to_string()))?;
        Journal::start(
            ReadPool::Postgres(pool.clone()),
            WritePool::Postgres(pool.connect_options()),
            describe,
            None,
        )
    }

    fn start(
        read: ReadPool,
        write: WritePool,
        describe: String,
        sqlite_path: Option<PathBuf>,
    ) -> Result<Journal, JournalError> {
        let lanes = Arc::new(Lanes::start(write)?);
        let history = History::start(lanes.clone());
        Ok(Journal {
            inner: Arc::new(Inner {
                read,
                sqlite_path,
                lanes,
                history,
                describe,
            }),
        })
    }

    /// Backend and place, for logs (`sqlite /srv/payroute.db`,
    /// `postgres db.internal:5432/payroute`): never a password.
    pub fn describe(&self) -> &str {
        &self.inner.describe
    }

    /// Readiness: the database answers within 2 s.
    pub async fn ping(&self) -> Result<(), JournalError> {
        match tokio::time::timeout(PING_TIMEOUT, async { read!(self, ping()) }).await {
            Ok(result) => result,
            Err(_) => Err(JournalError::Unavailable("ping timed out".into())),
        }
    }

    /// Before a read of `payments` (another connection): has the writer
    /// project whatever is staged, so the read sees every payment committed
    /// before it ([`writer::Stage`]). Free when nothing is staged.
    async fn unstaged(&self) -> Result<(), JournalError> {
        if self.inner.lanes.staged() {
            reply!(self.write(Op::Project).await, Done)?;
        }
        Ok(())
    }

    /// Commits `op` (on PostgreSQL, on the calling runtime's lane).
    async fn write(&self, op: Op) -> Result<Reply, JournalError> {
        self.inner.lanes.submit(op).await
    }

    /// Records that a pending payment is now tried on `channel` (a failover),
    /// committed on return, so a crash leaves the sweeper asking the channel
    /// that may hold it. `false`: no pending payment with that trade number.
    pub async fn set_channel(&self, trade_no: &str, channel: Arc<str>, at_ms: i64) -> Result<bool, JournalError> {
        let op = Op::SetChannel {
            trade_no: trade_no.to_owned(),
            channel,
            at_ms,
        };
        reply!(self.write(op).await, Inserted)
    }

    /// Records a new payment, committed on return; its trade number was
    /// minted for it just now (`payment::trade_no::mint`). `false`: a
    /// payment with that trade number exists, nothing changed. On SQLite
    /// such a number is staged without asking the table (it is new by
    /// construction): `false` there only while the other is staged, and a
    /// projection that meets a payment of another merchant, order or time
    /// under that number keeps the first and logs the second.
    pub async fn open_payment(&self, p: NewPayment) -> Result<bool, JournalError> {
        if !valid_trade_no(&p.trade_no) {
            return Err(JournalError::Invalid("a trade number is 1-32 of [A-Za-z0-9]".into()));
        }
        if p.amount < 0 || p.expected_fee < 0 {
            return Err(JournalError::Invalid("amounts are never negative".into()));
        }
        reply!(self.write(Op::Open(p)).await, Inserted)
    }

    /// Moves a payment to `to` if the rules allow it (a compare-and-set:
    /// never backwards), recording `facts`; `event` goes into the outbox in
    /// the same transaction, only if the move is applied. Committed on return.
    pub async fn transition(
        &self,
        trade_no: &str,
        to: State,
        facts: TransitionFacts,
        event: Option<NewEvent>,
    ) -> Result<Moved, JournalError> {
        let op = Op::Transition {
            trade_no: trade_no.to_owned(),
            to,
            facts,
            event,
        };
        reply!(self.write(op).await, Moved)
    }

    /// A verified, matched and checked notification: deduplicated on
    /// `(channel, dedupe_key)`, recorded, and the move to `to` tried with
    /// its event — all in one transaction, committed on return. Only then
    /// may the channel be answered.
    pub async fn accept_notification(
        &self,
        note: NotificationIn,
        to: State,
        facts: TransitionFacts,
        event: Option<NewEvent>,
    ) -> Result<Accept, JournalError> {
        let (Some(_), Some(_)) = (&note.dedupe_key, &note.trade_no) else {
            return Err(JournalError::Invalid(
                "an accepted notification needs a dedupe key and a trade number".into(),
            ));
        };
        let op = Op::Accept { note, to, facts, event };
        reply!(self.write(op).await, Accept)
    }

    /// A rejected notification (bad signature, wrong amount, unknown
    /// payment), as history: written behind, never waits.
    pub fn record_notification(&self, note: NotificationIn, result: NotifyResult) {
        self.inner.history.push(HistoryRow::Notification(note, result));
    }

    /// An attempt at a channel, as history: written behind, never waits.
    pub fn record_attempt(&self, attempt: Attempt) {
        self.inner.history.push(HistoryRow::Attempt(attempt));
    }

    /// Waits until all history handed over so far is committed (shutdown, tests).
    pub async fn flush_history(&self) -> Result<(), JournalError> {
        self.inner.history.flush().await
    }

    /// History rows dropped so far (queue full, or the database down when
    /// they were flushed).
    #[cfg(test)]
    pub fn history_dropped(&self) -> u64 {
        self.inner.history.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A reversal (or a refund outside `hold_refund`), committed on return.
    pub async fn record_adjustment(&self, a: Adjustment) -> Result<(), JournalError> {
        reply!(self.write(Op::Adjustment(a)).await, Done)
    }

    /// Reserves `amount` of a paid payment for a refund being sent, so two
    /// refunds can never together exceed what was paid.
    pub async fn hold_refund(&self, trade_no: &str, amount: i64) -> Result<RefundHold, JournalError> {
        if amount <= 0 {
            return Err(JournalError::Invalid("a refund is a positive amount".into()));
        }
        let op = Op::HoldRefund {
            trade_no: trade_no.to_owned(),
            amount,
        };
        reply!(self.write(op).await, Hold)
    }

    /// Ends a held refund: `accepted` counts it as refunded (the payment
    /// becomes `refunded` once fully refunded, with `event`; a partial refund
    /// queues `event` as it is), otherwise the hold is released. Recorded as
    /// an adjustment. `Moved::AlreadyThere` when no state moved.
    pub async fn settle_refund(
        &self,
        trade_no: &str,
        amount: i64,
        accepted: bool,
        facts: TransitionFacts,
        detail: String,
        event: Option<NewEvent>,
    ) -> Result<Moved, JournalError> {
        let op = Op::SettleRefund {
            trade_no: trade_no.to_owned(),
            amount,
            accepted,
            facts,
            detail,
            event,
        };
        reply!(self.write(op).await, Moved)
    }

    /// One payment's row, without its history: what a notification, an
    /// order query or a return needs (one SELECT where [`payment`](Self::payment)
    /// makes five).
    pub async fn payment_row(&self, trade_no: &str) -> Result<Option<Payment>, JournalError> {
        self.unstaged().await?;
        read!(self, payment_row(trade_no))
    }

    /// Everything about one payment (`GET /-/payments/{trade_no}`).
    pub async fn payment(&self, trade_no: &str) -> Result<Option<PaymentRecord>, JournalError> {
        self.unstaged().await?;
        read!(self, payment_record(trade_no))
    }

    /// Payments this channel served under this order id, newest first (two
    /// merchants may use one order id on one channel: at most 16).
    pub async fn find_for_channel(&self, channel_id: &str, order_id: &str) -> Result<Vec<Payment>, JournalError> {
        self.unstaged().await?;
        read!(self, find_for_channel(channel_id, order_id, FIND_LIMIT))
    }

    /// The merchant's newest payment under this order id.
    pub async fn find_for_merchant(&self, merchant_id: &str, order_id: &str) -> Result<Option<Payment>, JournalError> {
        self.unstaged().await?;
        read!(self, find_for_merchant(merchant_id, order_id))
    }

    /// The sweeper's work: up to `limit` pending payments whose query is due
    /// at `now_ms`, claimed for `hold_ms` (their next query is pushed to
    /// `now_ms + hold_ms` and `query_count` counts this one), so no other
    /// instance asks about them meanwhile; `reschedule` sets the real next time.
    pub async fn claim_due_queries(&self, now_ms: i64, hold_ms: i64, limit: i64) -> Result<Vec<Payment>, JournalError> {
        let op = Op::ClaimQueries { now_ms, hold_ms, limit };
        reply!(self.write(op).await, Payments)
    }

    /// Sets when a pending payment is next asked about (`None`: never).
    /// `false`: not pending (any more).
    pub async fn reschedule(&self, trade_no: &str, next_at_ms: Option<i64>) -> Result<bool, JournalError> {
        let op = Op::Reschedule {
            trade_no: trade_no.to_owned(),
            next_at_ms,
        };
        reply!(self.write(op).await, Changed)
    }

    /// Claims up to `limit` outbox events due at `now_ms` for `owner` (an
    /// instance id) until `now_ms + lease_ms`, counting an attempt on each.
    /// `lease_ms` must exceed a delivery's timeout: a lease that runs out
    /// while its owner is still delivering lets another instance send the
    /// event too.
    #[cfg(test)]
    pub async fn claim_due_events(
        &self,
        owner: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<Event>, JournalError> {
        self.claim_due_events_skipping(owner, now_ms, lease_ms, limit, &[])
            .await
    }

    /// [`claim_due_events`](Self::claim_due_events), leaving the events of
    /// `skip` (merchant ids) to a later claim: the outbox names the
    /// merchants it already sends all it may to, so one merchant's backlog
    /// never fills a page that others are waiting behind.
    pub async fn claim_due_events_skipping(
        &self,
        owner: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: i64,
        skip: &[&str],
    ) -> Result<Vec<Event>, JournalError> {
        let skip = serde_json::to_string(skip).map_err(|_| JournalError::Internal("merchant ids as JSON"))?;
        let op = Op::ClaimEvents {
            owner: owner.to_owned(),
            now_ms,
            lease_ms,
            limit,
            skip,
        };
        reply!(self.write(op).await, Events)
    }

    /// Gives back claimed events that `owner` will not send now, uncounted:
    /// their lease ends, their try is not counted, they are due as before.
    pub async fn release_events(&self, owner: &str, event_ids: Vec<String>) -> Result<(), JournalError> {
        if event_ids.is_empty() {
            return Ok(());
        }
        let op = Op::ReleaseEvents {
            owner: owner.to_owned(),
            event_ids,
        };
        reply!(self.write(op).await, Done)
    }

    /// The merchant took it. Whoever holds the lease (a delivered event is
    /// delivered); `false`: it was not pending (already recorded).
    pub async fn event_delivered(&self, event_id: &str, at_ms: i64) -> Result<bool, JournalError> {
        let op = Op::EventDelivered {
            event_id: event_id.to_owned(),
            at_ms,
        };
        reply!(self.write(op).await, Changed)
    }

    /// Not delivered this time: due again at `next_at_ms`. `false`: `owner`
    /// no longer holds the lease (nothing changed).
    pub async fn event_retry(
        &self,
        event_id: &str,
        owner: &str,
        next_at_ms: i64,
        error: &str,
    ) -> Result<bool, JournalError> {
        let op = Op::EventRetry {
            event_id: event_id.to_owned(),
            owner: owner.to_owned(),
            next_at_ms,
            error: error.to_owned(),
        };
        reply!(self.write(op).await, Changed)
    }

    /// Out of retries: `failed`, listed and re-sendable. `false`: `owner` no
    /// longer holds the lease.
    pub async fn event_failed(&self, event_id: &str, owner: &str, error: &str) -> Result<bool, JournalError> {
        let op = Op::EventFailed {
            event_id: event_id.to_owned(),
            owner: owner.to_owned(),
            error: error.to_owned(),
        };
        reply!(self.write(op).await, Changed)
    }

    /// Outbox events in `state`, newest first.
    pub async fn events(&self, state: EventState, limit: i64) -> Result<Vec<Event>, JournalError> {
        read!(self, events(state, limit))
    }

    /// Queues an event again (by hand): pending, due now, its retries
    /// counted from zero. `false`: no such event.
    pub async fn resend(&self, event_id: &str, now_ms: i64) -> Result<bool, JournalError> {
        let op = Op::Resend {
            event_id: event_id.to_owned(),
            now_ms,
        };
        reply!(self.write(op).await, Changed)
    }

    /// One outbox event.
    pub async fn event(&self, event_id: &str) -> Result<Option<Event>, JournalError> {
        read!(self, event_by_id(event_id))
    }

    /// Events not delivered yet (`payroute_notification_backlog`).
    pub async fn backlog(&self) -> Result<i64, JournalError> {
        read!(self, backlog())
    }

    /// Writes the payments created in `[since_ms, until_ms)` to `out`, oldest
    /// first, a page at a time (memory stays flat however long the range);
    /// returns how many. Blocking writes: meant for the CLI's own runtime.
    pub async fn export(
        &self,
        since_ms: Option<i64>,
        until_ms: Option<i64>,
        format: ExportFormat,
        out: &mut dyn std::io::Write,
    ) -> Result<u64, JournalError> {
        self.unstaged().await?;
        export::run(self, since_ms, until_ms, format, out).await
    }

    async fn export_page(&self, after: (i64, &str), until: i64, limit: i64) -> Result<Vec<Payment>, JournalError> {
        read!(self, export_page(after, until, limit))
    }

    /// Every payment of a channel's business day, handed to `each` with
    /// `sink` (given back at the end): SQLite reads it in one pass on a
    /// blocking thread of its own, PostgreSQL a page at a time.
    pub async fn recon_day<S: Send + 'static>(
        &self,
        day: &ReconDay,
        mut sink: S,
        each: fn(&mut S, ReconRow),
    ) -> Result<S, JournalError> {
        self.unstaged().await?;
        if let Some(path) = self.inner.sqlite_path.clone() {
            let day = day.clone();
            return tokio::task::spawn_blocking(move || {
                sql::sqlite::recon_day(&path, &day, |row| each(&mut sink, row)).map(|_| sink)
            })
            .await
            .map_err(|e| JournalError::Database(format!("journal: the day's read stopped: {e}")))?;
        }
        const PAGE: i64 = 5_000;
        let mut after = (day.created_from_ms, String::new());
        loop {
            let page = read!(self, recon_page(day, (after.0, &after.1), PAGE))?;
            let full = page.len() as i64 == PAGE;
            if let Some(last) = page.last() {
                after = (last.created_at_ms, last.trade_no.clone());
            }
            for row in page {
                each(&mut sink, row);
            }
            if !full {
                return Ok(sink);
            }
        }
    }

    /// The payments of these trade numbers that the journal has, any channel.
    pub async fn recon_lookup(&self, trade_nos: &[&str]) -> Result<Vec<ReconRow>, JournalError> {
        self.unstaged().await?;
        read!(self, recon_lookup(trade_nos))
    }

    /// Whether any payment was created in `[from_ms, until_ms)`.
    pub async fn any_created(&self, from_ms: i64, until_ms: i64) -> Result<bool, JournalError> {
        self.unstaged().await?;
        read!(self, any_created(from_ms, until_ms))
    }

    /// Keeps a reconciliation's figures.
    pub async fn record_reconciliation(&self, r: Reconciled) -> Result<(), JournalError> {
        reply!(self.write(Op::Reconciled(r)).await, Done)
    }

    /// Each channel's newest reconciliation: `(channel, fee_base, fees_charged)`.
    pub async fn latest_fees(&self) -> Result<Vec<(String, i64, i64)>, JournalError> {
        read!(self, latest_fees())
    }
}

/// Moves the SQLite WAL into the database file every [`CHECKPOINT_EVERY`]
/// until the journal is dropped. With `synchronous = NORMAL` this is also
/// when the WAL reaches the disk, so it bounds what a power loss can take.
///
/// A PASSIVE checkpoint never waits for, nor blocks, the writer; but under
/// sustained writes it never *completes* (frames arrive while it copies),
/// and the WAL is only reused once a checkpoint has completed, so the file
/// would grow without bound (measured: over a gigabyte in minutes of full
/// load, BENCHMARKS.md session 5). So when the WAL holds more than
/// [`WAL_FRAMES_LIMIT`] frames after a PASSIVE pass, a RESTART follows: it
/// waits for the writer's current transaction, holds the next one back while
/// it copies what the PASSIVE pass left (a quarter of a second's frames at
/// most) and syncs, and the writer starts the WAL over. An earlier design
/// checkpointed once a second and only past 64 MiB, with TRUNCATE: each of
/// those copied the whole backlog with the writer held, half a second at
/// 4,000 payments a second (session 6).
async fn checkpoints(pool: sqlx::SqlitePool, journal: std::sync::Weak<Inner>) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        if journal.strong_count() == 0 {
            pool.close().await;
            return;
        }
        if let Err(e) = checkpoint(&pool, WAL_FRAMES_LIMIT).await {
            tracing::warn!(error = %e, "journal: SQLite checkpoint failed");
        }
        // The stage's log with it (a sync of a file: off the runtime).
        let lanes = match journal.upgrade() {
            Some(inner) if inner.lanes.stages() => inner.lanes.clone(),
            _ => continue,
        };
        match tokio::task::spawn_blocking(move || lanes.sync_stage()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "journal: the stage's log was not synced"),
            Err(_) => tracing::warn!("journal: the stage's log sync panicked"),
        }
    }
}

/// What one [`checkpoint`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Checkpointed {
    /// Frames in the WAL after the PASSIVE pass.
    frames: i64,
    /// Whether a RESTART followed (and completed: the WAL starts over).
    restarted: bool,
}

/// One checkpoint: PASSIVE, then RESTART when the WAL holds more than
/// `limit_frames`.
async fn checkpoint(pool: &sqlx::SqlitePool, limit_frames: i64) -> Result<Checkpointed, sqlx::Error> {
    use sqlx::Row;
    // (busy, frames in the WAL, frames checkpointed)
    let row = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(pool).await?;
    let frames: i64 = row.try_get(1)?;
    if frames <= limit_frames {
        return Ok(Checkpointed {
            frames,
            restarted: false,
        });
    }
    let row = sqlx::query("PRAGMA wal_checkpoint(RESTART)").fetch_one(pool).await?;
    let busy: i64 = row.try_get(0)?;
    Ok(Checkpointed {
        frames,
        restarted: busy == 0,
    })
}

/// A fresh outbox event id: `evt` and 26 random `[0-9a-z]` (about 134 bits;
/// unique across a fleet without coordination).
pub(crate) fn new_event_id() -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut id = String::with_capacity(29);
    id.push_str("evt");
    for _ in 0..26 {
        id.push(ALPHABET[fastrand::usize(..ALPHABET.len())] as char);
    }
    id
}

/// Unix milliseconds now (the journal's clock unit).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
