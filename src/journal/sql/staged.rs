//! Staging (SQLite): a payment's open and close written where they cost
//! least, and moved into `payments` behind, in bulk.
//!
//! A JSON payment is two commits a few milliseconds apart: `open` (pending,
//! before the first attempt leaves) and `close` (paid, declined, failed).
//! Written to `payments`, the open touched the row and five index entries —
//! one keyed by the merchant's order id, a random page of a file that grows
//! — and the close rewrote the row and took the sweeper's entry out again.
//! Measured, the writer's SQL was half the journal's cost per payment; the
//! stage took a fifth off the journal's CPU and +15 % throughput
//! (BENCHMARKS.md, "Session 10").
//!
//! So the writer stages: an open is appended to `payments_staged` (its rows
//! in arrival order, keyed by trade number; both at the end of their
//! b-trees, on pages every commit shares), a close from `pending` rewrites
//! the staged row in place, and [`project`] moves every staged row into
//! `payments` with one `INSERT ... SELECT` and empties the stage. The
//! writer projects every 10 ms or 2,048 rows (`writer`), so a payment that
//! closed meanwhile enters `payments` once, in its final state, with no
//! sweeper entry, and its index pages are written once per projection
//! rather than once per commit.
//!
//! Durability is unchanged: a staged row is committed like any other
//! before its caller hears back, and a projection is one transaction. What
//! staging changes is *where* a payment is for up to 10 ms, so everything
//! that reads `payments` first makes sure nothing it needs is staged:
//!
//! - the writer's own ops: those staging serves ([`apply`]: the open, a
//!   move from `pending` without an outbox event, a failover's channel)
//!   work on the staged row; any other op about a payment projects first,
//!   then runs as it always has ([`write::apply`]);
//! - reads (sqlx, other connections) ask the writer for an `Op::Project`
//!   first when anything is staged (`Journal::unstaged`);
//! - the sweeper's claim is such an op: it runs once a tick (or when a
//!   payment it put off is due), so the stage still collects a tick's
//!   payments under load;
//! - another process that opens the file (`payroute journal export`)
//!   projects what it finds at open; the serving writer then finds its row
//!   in `payments` (every staged op falls back to the table when the
//!   staged row is gone), and the view `payments_all` shows both tables to
//!   anyone reading the file with SQL of their own.
//!
//! PostgreSQL does not stage: a fleet's instances share payments, and a
//! move must be a compare-and-set on the one row they all see.

use super::write::{self, insert_args, insert_columns, insert_values, move_sql};
use super::{args, payment_cols, Tx};
use crate::journal::model::*;
use crate::journal::state::{Rule, State};
use crate::journal::JournalError;

/// Every column a projection copies, in both tables' names: what a
/// payment is read with, and when it was paid.
macro_rules! stored_columns {
    () => {
        concat!(payment_cols!(), ", paid_at_ms")
    };
}

/// What the stage held of an op's payment.
enum Stage<T> {
    /// Done on the staged row.
    Done(T),
    /// Not staged: the op runs on `payments`.
    Absent,
    /// Staged, but past what staging serves: project, then run the op.
    Project,
}

/// One op in the writer's open transaction, staging where it serves.
/// `staged` counts the rows on the stage (the writer's to keep).
pub(in crate::journal) async fn apply<T: Tx>(tx: &mut T, op: &Op, staged: &mut usize) -> Result<Reply, JournalError> {
    let found = match op {
        Op::Insert(p) => {
            let inserted = insert(tx, p).await?;
            *staged += usize::from(inserted);
            return Ok(Reply::Inserted(inserted));
        }
        Op::SetChannel {
            trade_no,
            channel,
            at_ms,
        } => set_channel(tx, trade_no, channel, *at_ms).await?.map(Reply::Inserted),
        Op::Transition {
            trade_no,
            to,
            facts,
            event: None,
        } => transition(tx, trade_no, *to, facts).await?.map(Reply::Moved),
        Op::Project => {
            project(tx, staged).await?;
            return Ok(Reply::Done);
        }
        // A move that queues an event, a notification, refunds, the
        // sweeper's schedule and claim: rarer, and written once, for `payments`.
        Op::Transition { .. }
        | Op::Accept { .. }
        | Op::HoldRefund { .. }
        | Op::SettleRefund { .. }
        | Op::Reschedule { .. }
        | Op::ClaimQueries { .. } => Stage::Project,
        // Not about a payment's row.
        Op::History(_)
        | Op::Adjustment(_)
        | Op::ClaimEvents { .. }
        | Op::ReleaseEvents { .. }
        | Op::EventDelivered { .. }
        | Op::EventRetry { .. }
        | Op::EventFailed { .. }
        | Op::Resend { .. }
        | Op::Reconciled(_) => Stage::Absent,
    };
    match found {
        Stage::Done(reply) => Ok(reply),
        Stage::Absent => write::apply(tx, op).await,
        Stage::Project => {
            if *staged > 0 {
                project(tx, staged).await?;
            }
            write::apply(tx, op).await
        }
    }
}

impl<T> Stage<T> {
    fn map<U>(self, f: impl FnOnce(T) -> U) -> Stage<U> {
        match self {
            Stage::Done(v) => Stage::Done(f(v)),
            Stage::Absent => Stage::Absent,
            Stage::Project => Stage::Project,
        }
    }
}

/// Moves every staged row into `payments` and empties the stage.
pub(in crate::journal) async fn project<T: Tx>(tx: &mut T, staged: &mut usize) -> Result<(), JournalError> {
    let sql = concat!(
        "INSERT INTO payments (",
        stored_columns!(),
        ") SELECT ",
        stored_columns!(),
        " FROM payments_staged ORDER BY seq"
    );
    tx.execute(sql, &[]).await?;
    // No `WHERE`: SQLite empties the table and its index whole.
    tx.execute("DELETE FROM payments_staged", &[]).await?;
    *staged = 0;
    Ok(())
}

/// An open: a new payment, staged unless its trade number is taken
/// (staged or not).
const OPEN: &str = concat!(
    "INSERT INTO payments_staged ",
    insert_columns!(),
    " SELECT ",
    insert_values!(),
    " WHERE NOT EXISTS (SELECT 1 FROM payments WHERE trade_no = $1) ON CONFLICT DO NOTHING"
);
/// A failover's new channel, on a staged pending payment.
const SET_CHANNEL: &str =
    "UPDATE payments_staged SET channel_id = $2, updated_at_ms = $3 WHERE trade_no = $1 AND state = 'pending'";
/// A close: the move from `pending`, with the same columns as on `payments`.
const CLOSE: &str = move_sql!("payments_staged", ", channel_id = COALESCE($7, channel_id)", "");

/// The statements the stage runs for every payment (a test holds them to
/// building nothing per run: migration 4 says why).
#[cfg(test)]
pub(in crate::journal) const PER_PAYMENT: [&str; 3] = [OPEN, SET_CHANNEL, CLOSE];

async fn insert<T: Tx>(tx: &mut T, p: &NewPayment) -> Result<bool, JournalError> {
    Ok(tx.execute(OPEN, &insert_args(p)).await? == 1)
}

async fn is_staged<T: Tx>(tx: &mut T, trade_no: &str) -> Result<bool, JournalError> {
    let sql = "SELECT 1 AS staged FROM payments_staged WHERE trade_no = $1";
    Ok(tx.fetch_optional(sql, &args![trade_no]).await?.is_some())
}

/// A failover's new channel, on a staged pending payment. A staged payment
/// that is not pending any more answers `false`, as the table would.
async fn set_channel<T: Tx>(
    tx: &mut T,
    trade_no: &str,
    channel: &str,
    at_ms: i64,
) -> Result<Stage<bool>, JournalError> {
    if tx.execute(SET_CHANNEL, &args![trade_no, channel, at_ms]).await? == 1 {
        return Ok(Stage::Done(true));
    }
    Ok(if is_staged(tx, trade_no).await? {
        Stage::Done(false)
    } else {
        Stage::Absent
    })
}

/// A move from `pending` (the close), on the staged row: the same
/// compare-and-set and the same columns as on `payments`. Any other move
/// of a staged payment (it was already moved once) is judged on
/// `payments`, after a projection.
async fn transition<T: Tx>(
    tx: &mut T,
    trade_no: &str,
    to: State,
    facts: &TransitionFacts,
) -> Result<Stage<Moved>, JournalError> {
    if State::Pending.may_move(to, false) == Rule::Allowed {
        let args = args![
            trade_no,
            to.as_str(),
            facts.at_ms,
            &facts.channel_trade_no,
            facts.expected_fee,
            State::Pending.as_str(),
            facts.channel.as_deref(),
        ];
        if tx.execute(CLOSE, &args).await? == 1 {
            return Ok(Stage::Done(Moved::Applied { from: State::Pending }));
        }
    }
    Ok(if is_staged(tx, trade_no).await? {
        Stage::Project
    } else {
        Stage::Absent
    })
}
