//! The journal's SQL: every write written once, run by two drivers.
//!
//! The write logic ([`write`]) is generic over [`Tx`], an open transaction
//! that runs a statement with [`Arg`]s and hands back [`Row`]s. Two drivers
//! implement it:
//!
//! - [`sqlite`]: rusqlite, on the SQLite writer's own thread. A whole group
//!   commit runs there synchronously with cached prepared statements; its
//!   futures never wait. (sqlx's SQLite driver sends every statement to its
//!   worker thread and back; at thousands of payments a second those
//!   hand-offs were the journal's whole cost — BENCHMARKS.md, session 5.)
//! - [`postgres`]: sqlx on a pooled connection, one round trip a statement.
//!
//! Both dialects take `$N` parameters (the SQLite driver binds them by
//! number). The few statements whose dialects differ (row locks, `SKIP
//! LOCKED`) are the driver's [`Tx`] constants. Reads, outside the writer,
//! go through sqlx on either backend ([`read`]) and decode rows with the
//! same [`payment`] and [`event`] as the writes.
//!
//! Moves of state are a compare-and-set: an `UPDATE ... WHERE state = <what
//! it was>`; if another writer (another instance) moved the payment in
//! between, the update touches no row and the move is judged again.

pub(super) mod postgres;
pub(super) mod read;
pub(super) mod sqlite;
mod write;

pub(super) use write::{apply, stands_alone};

use super::model::*;
use super::state::{Protocol, State};
use super::JournalError;

macro_rules! payment_cols {
    () => {
        "trade_no, merchant_id, order_id, amount, currency, pay_type, protocol, channel_id, \
         channel_trade_no, state, expected_fee, refunded_amount, refund_held, merchant_data, \
         created_at_ms, updated_at_ms, next_query_at_ms, query_count"
    };
}

macro_rules! event_cols {
    () => {
        "event_id, trade_no, merchant_id, kind, target, method, body, state, attempts, next_at_ms, \
         lease_owner, lease_until_ms, last_error, created_at_ms, delivered_at_ms"
    };
}
pub(super) use {event_cols, payment_cols};

/// A value bound to a statement's `$N`. Nulls are typed: PostgreSQL infers
/// a parameter's type from what is bound.
#[derive(Debug, Clone, Copy)]
pub(super) enum Arg<'a> {
    Int(Option<i64>),
    Text(Option<&'a str>),
}

impl From<i64> for Arg<'_> {
    fn from(v: i64) -> Self {
        Arg::Int(Some(v))
    }
}

impl From<Option<i64>> for Arg<'_> {
    fn from(v: Option<i64>) -> Self {
        Arg::Int(v)
    }
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(v: &'a str) -> Self {
        Arg::Text(Some(v))
    }
}

impl<'a> From<&'a String> for Arg<'a> {
    fn from(v: &'a String) -> Self {
        Arg::Text(Some(v))
    }
}

impl<'a> From<Option<&'a str>> for Arg<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Arg::Text(v)
    }
}

impl<'a> From<&'a Option<String>> for Arg<'a> {
    fn from(v: &'a Option<String>) -> Self {
        Arg::Text(v.as_deref())
    }
}

/// `args![a, b, ...]`: the `Arg`s of a statement, in `$N` order.
macro_rules! args {
    ($($v:expr),* $(,)?) => { [$($crate::journal::sql::Arg::from($v)),*] };
}
pub(super) use args;

/// A result row, read by column name.
pub(super) trait Row {
    fn int(&self, column: &str) -> Result<Option<i64>, JournalError>;
    fn text(&self, column: &str) -> Result<Option<String>, JournalError>;

    fn req_int(&self, column: &str) -> Result<i64, JournalError> {
        self.int(column)?.ok_or_else(|| null(column))
    }

    fn req_text(&self, column: &str) -> Result<String, JournalError> {
        self.text(column)?.ok_or_else(|| null(column))
    }
}

fn null(column: &str) -> JournalError {
    JournalError::Database(format!("journal: column {column} is NULL"))
}

/// An open transaction on the writer's connection.
///
/// The futures of the SQLite driver never wait, so its writer thread can
/// drive them to completion by itself; PostgreSQL's wait on the network.
pub(super) trait Tx {
    type Row: Row;
    /// Reads a payment's state and channel for a move (PostgreSQL locks the
    /// row: instances share it; SQLite has one writer).
    const SELECT_FOR_MOVE: &'static str;
    /// Claims due outbox events (see `Op::ClaimEvents`).
    const CLAIM_EVENTS: &'static str;
    /// Claims due sweeper queries (see `Op::ClaimQueries`).
    const CLAIM_QUERIES: &'static str;

    /// Runs a statement; the number of rows it changed.
    async fn execute(&mut self, sql: &'static str, args: &[Arg<'_>]) -> Result<u64, JournalError>;
    /// Runs a statement; its first row, if any.
    async fn fetch_optional(&mut self, sql: &'static str, args: &[Arg<'_>]) -> Result<Option<Self::Row>, JournalError>;
    /// Runs a statement; all its rows.
    async fn fetch_all(&mut self, sql: &'static str, args: &[Arg<'_>]) -> Result<Vec<Self::Row>, JournalError>;
    /// Inserts `rows.len() / width` rows of `width` values each into
    /// `table (columns)`, in multi-row statements (a round trip costs on
    /// PostgreSQL, a statement run on SQLite).
    async fn insert_rows(
        &mut self,
        table_columns: &'static str,
        width: usize,
        rows: &[Arg<'_>],
    ) -> Result<(), JournalError>;
}

pub(super) fn decode_err(what: &str, value: &str) -> JournalError {
    JournalError::Database(format!("journal: unknown {what} {value:?}"))
}

/// A `payments` row (selected with [`payment_cols`]).
pub(super) fn payment(row: &impl Row) -> Result<Payment, JournalError> {
    let state = row.req_text("state")?;
    let protocol = row.req_text("protocol")?;
    Ok(Payment {
        trade_no: row.req_text("trade_no")?,
        merchant_id: row.req_text("merchant_id")?,
        order_id: row.req_text("order_id")?,
        amount: row.req_int("amount")?,
        currency: row.req_text("currency")?,
        pay_type: row.text("pay_type")?,
        protocol: Protocol::parse(&protocol).ok_or_else(|| decode_err("protocol", &protocol))?,
        channel_id: row.text("channel_id")?,
        channel_trade_no: row.text("channel_trade_no")?,
        state: State::parse(&state).ok_or_else(|| decode_err("state", &state))?,
        expected_fee: row.req_int("expected_fee")?,
        refunded_amount: row.req_int("refunded_amount")?,
        refund_held: row.req_int("refund_held")?,
        merchant_data: row.req_text("merchant_data")?,
        created_at_ms: row.req_int("created_at_ms")?,
        updated_at_ms: row.req_int("updated_at_ms")?,
        next_query_at_ms: row.int("next_query_at_ms")?,
        query_count: row.req_int("query_count")?,
    })
}

/// An `events` row (selected with [`event_cols`]).
pub(super) fn event(row: &impl Row) -> Result<Event, JournalError> {
    let state = row.req_text("state")?;
    Ok(Event {
        event_id: row.req_text("event_id")?,
        trade_no: row.req_text("trade_no")?,
        merchant_id: row.req_text("merchant_id")?,
        kind: row.req_text("kind")?,
        target: row.req_text("target")?,
        method: row.req_text("method")?,
        body: row.req_text("body")?,
        state: EventState::parse(&state).ok_or_else(|| decode_err("event state", &state))?,
        attempts: row.req_int("attempts")?,
        next_at_ms: row.req_int("next_at_ms")?,
        lease_owner: row.text("lease_owner")?,
        lease_until_ms: row.int("lease_until_ms")?,
        last_error: row.text("last_error")?,
        created_at_ms: row.req_int("created_at_ms")?,
        delivered_at_ms: row.int("delivered_at_ms")?,
    })
}

/// sqlx rows (reads on both backends, PostgreSQL's writes).
macro_rules! sqlx_row {
    ($row:ty) => {
        impl Row for $row {
            fn int(&self, column: &str) -> Result<Option<i64>, JournalError> {
                Ok(sqlx::Row::try_get(self, column)?)
            }

            fn text(&self, column: &str) -> Result<Option<String>, JournalError> {
                Ok(sqlx::Row::try_get(self, column)?)
            }
        }
    };
}
sqlx_row!(sqlx::sqlite::SqliteRow);
sqlx_row!(sqlx::postgres::PgRow);
