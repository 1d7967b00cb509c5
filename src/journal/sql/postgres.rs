//! The PostgreSQL driver of the journal's writes: sqlx on the lane's
//! connection, inside the transaction the writer opened.

use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::Postgres;

use super::{event_cols, payment_cols, Arg, Tx};
use crate::journal::JournalError;

/// A lane's connection: inside its open transaction, or, for an op that
/// stands alone (`write::stands_alone`), outside any.
pub(in crate::journal) struct PgTx<'c>(pub &'c mut sqlx::PgConnection);

fn bind<'q>(mut query: Query<'q, Postgres, PgArguments>, args: &[Arg<'q>]) -> Query<'q, Postgres, PgArguments> {
    for arg in args {
        query = match *arg {
            Arg::Int(v) => query.bind(v),
            Arg::Text(v) => query.bind(v),
        };
    }
    query
}

impl Tx for PgTx<'_> {
    type Row = PgRow;

    // Instances share the rows: lock the payment for the rest of the move
    // (inside a transaction; outside one, for the statement, and the move's
    // compare-and-set checks the state again).
    const SELECT_FOR_MOVE: &'static str = "SELECT state, channel_id FROM payments WHERE trade_no = $1 FOR UPDATE";

    // SKIP LOCKED: two instances claiming at once take disjoint events
    // instead of one waiting for (and then re-checking) the other's rows.
    const CLAIM_EVENTS: &'static str = concat!(
        "UPDATE events SET lease_owner = $1, lease_until_ms = $2 + $3, attempts = attempts + 1 \
         FROM (SELECT event_id AS claimed FROM events WHERE state = 'pending' AND next_at_ms <= $2 \
         AND (lease_until_ms IS NULL OR lease_until_ms <= $2) \
         AND merchant_id NOT IN (SELECT jsonb_array_elements_text($5::jsonb)) ORDER BY next_at_ms LIMIT $4 \
         FOR UPDATE SKIP LOCKED) c WHERE events.event_id = c.claimed RETURNING ",
        event_cols!()
    );

    const CLAIM_QUERIES: &'static str = concat!(
        "UPDATE payments SET next_query_at_ms = $1 + $2, query_count = query_count + 1 \
         FROM (SELECT trade_no AS claimed FROM payments WHERE state = 'pending' AND next_query_at_ms <= $1 \
         ORDER BY next_query_at_ms LIMIT $3 FOR UPDATE SKIP LOCKED) c WHERE payments.trade_no = c.claimed \
         RETURNING ",
        payment_cols!()
    );

    async fn execute(&mut self, sql: &'static str, args: &[Arg<'_>]) -> Result<u64, JournalError> {
        Ok(bind(sqlx::query(sql), args)
            .execute(&mut *self.0)
            .await?
            .rows_affected())
    }

    async fn fetch_optional(&mut self, sql: &'static str, args: &[Arg<'_>]) -> Result<Option<PgRow>, JournalError> {
        Ok(bind(sqlx::query(sql), args).fetch_optional(&mut *self.0).await?)
    }

    async fn fetch_all(&mut self, sql: &'static str, args: &[Arg<'_>]) -> Result<Vec<PgRow>, JournalError> {
        Ok(bind(sqlx::query(sql), args).fetch_all(&mut *self.0).await?)
    }

    /// One statement for all the rows: a round trip each would cost more
    /// than the rows.
    async fn insert_rows(
        &mut self,
        table_columns: &'static str,
        width: usize,
        rows: &[Arg<'_>],
    ) -> Result<(), JournalError> {
        if rows.is_empty() || width == 0 {
            return Ok(());
        }
        let sql = insert_sql(table_columns, width, rows.len() / width);
        bind(sqlx::query(&sql), rows).execute(&mut *self.0).await?;
        Ok(())
    }
}

/// `INSERT INTO {table_columns} VALUES ($1, ..., $width), ...` for `rows`
/// rows: one statement for all the rows of [`Tx::insert_rows`].
fn insert_sql(table_columns: &str, width: usize, rows: usize) -> String {
    use std::fmt::Write;
    let mut sql = format!("INSERT INTO {table_columns} VALUES ");
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for col in 0..width {
            let sep = if col == 0 { "" } else { ", " };
            let _ = write!(sql, "{sep}${}", row * width + col + 1);
        }
        sql.push(')');
    }
    sql
}

#[cfg(test)]
#[test]
fn insert_sql_numbers_every_value() {
    assert_eq!(insert_sql("t (a, b)", 2, 1), "INSERT INTO t (a, b) VALUES ($1, $2)");
    assert_eq!(
        insert_sql("t (a, b)", 2, 2),
        "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4)"
    );
}
