//! Moving staged rows into `payments`: by the log's owner (its rows are a
//! payment's latest) or by a guest (a copy of what the table lacks).

use std::sync::OnceLock;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{params, Connection};

use super::Staged;
use crate::journal::sql::sqlite::{in_chunks, CHUNKS};
use crate::journal::JournalError;

/// Who writes rows found in a log into `payments`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Writer {
    /// The owner of the log: its row is the payment's latest and goes over
    /// another process's copy; the segments' number is recorded.
    Owner,
    /// Another process: copies only what the table does not hold.
    Guest,
}

/// Columns of a staged row's `INSERT` into `payments`, in [`bind`]'s order.
const COLUMNS: usize = 16;

/// The `INSERT` of `CHUNKS[chunk]` staged rows into `payments`, by
/// `writer`. Many rows a statement: `payments`' checks are `IN` lists
/// (migration 4 says why they stay), which SQLite builds a temporary b-tree
/// for once per statement run; once per row, that was half a projection's
/// cost (BENCHMARKS.md, "Session 13"). Each text is built once per process
/// (the text of 16 rows is ~2.5 KiB, and `prepare_cached` finds a statement
/// by its text).
fn insert_sql(chunk: usize, writer: Writer) -> &'static str {
    static SQL: OnceLock<[[String; CHUNKS.len()]; 2]> = OnceLock::new();
    let all = SQL.get_or_init(|| [Writer::Owner, Writer::Guest].map(|w| CHUNKS.map(|rows| build_insert(rows, w))));
    &all[usize::from(writer == Writer::Guest)][chunk]
}

fn build_insert(rows: usize, writer: Writer) -> String {
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
pub(super) fn write_rows(conn: &Connection, rows: &[Staged], writer: Writer, through: u64) -> Result<(), JournalError> {
    let mut values = Vec::with_capacity(CHUNKS[0] * COLUMNS);
    in_chunks(rows, 1, |i, chunk| {
        values.clear();
        for row in chunk {
            bind(row, &mut values);
        }
        let changed = conn
            .prepare_cached(insert_sql(i, writer))?
            .execute(rusqlite::params_from_iter(values.iter()))?;
        if changed < chunk.len() && writer == Writer::Owner {
            collisions(conn, chunk)?;
        }
        Ok::<(), JournalError>(())
    })?;
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
