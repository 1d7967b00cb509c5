//! The SQLite driver of the journal's writes: rusqlite on the writer's own
//! thread, which owns the one connection that writes.
//!
//! Every statement is prepared once and cached on the connection; a whole
//! group commit (`BEGIN` … `COMMIT`) runs on that thread without a hand-off,
//! so a payment's writes cost SQLite's own work and little else. The
//! futures of [`SqliteTx`] never wait: the writer drives them to completion
//! on its thread.

use std::path::Path;
use std::time::Duration;

use rusqlite::types::Value;
use rusqlite::{Connection, ErrorCode};

use super::{event_cols, payment_cols, Arg, Row, Tx};
use crate::config::Synchronous;
use crate::journal::{JournalError, ReconDay, ReconRow, State};

/// Statements kept prepared: every write of [`super::write`] fits.
const STATEMENT_CACHE: usize = 64;
/// Rows per multi-row statement ([`SqliteTx::insert_rows`], the stage's
/// projection), largest first: a statement run costs its own cursors,
/// checks' set-up and `Halt` however few rows it writes, and three sizes
/// keep three statements per table in the cache. The last size is 1, so
/// every row goes in. No more than 16: a statement is also how long the
/// writer thread keeps its core before it yields it ([`in_chunks`]).
pub(in crate::journal) const CHUNKS: [usize; 3] = [16, 4, 1];

/// Splits `items`, rows of `width` items each, into chunks of [`CHUNKS`]
/// rows, largest first; `each` gets the index of the chunk's size in
/// [`CHUNKS`] and its items. A tail shorter than a row is left out.
///
/// After each chunk the calling thread (the writer's) yields its core. It
/// shares two cores with the payment workers, and a projection of 50 ms of
/// payments or a batch of history is a millisecond or more of CPU at 2,000
/// payments a second: a worker woken on that core waited for all of it,
/// most of what the journal added to the p99. Yielding every statement (16
/// rows, ~0.2 ms) lets such a worker run first, and returns at once when
/// nothing else is runnable. At 2,000/s against 64-row statements without
/// yields: p99 1.33 → 0.89 ms (no journal 0.63 ms); saturated, 7.7 → 6.5 ms
/// (BENCHMARKS.md, "Session 16"). It relies on no payment waiting for a
/// projection (the stage's `Inner::restage`): the scheduler gives a
/// yielding thread's slice away, so under saturation a projection runs
/// longer, and before that a payment in flight waited for all of it (p99
/// 16 → 250-300 ms when this was tried alone).
pub(in crate::journal) fn in_chunks<'a, T, E>(
    items: &'a [T],
    width: usize,
    mut each: impl FnMut(usize, &'a [T]) -> Result<(), E>,
) -> Result<(), E> {
    let mut rest = items;
    for (i, rows) in CHUNKS.iter().enumerate() {
        let len = rows * width;
        while len > 0 && rest.len() >= len {
            let (chunk, next) = rest.split_at(len);
            rest = next;
            each(i, chunk)?;
            std::thread::yield_now();
        }
    }
    Ok(())
}

/// Opens the writer's connection (the schema is migrated already). The
/// pragmas are those of `Journal::open_sqlite`'s own connections, but for
/// the busy handler: it has none once set up; the writer thread waits for
/// another connection's lock itself, backing off, and gives up a batch
/// after `BUSY_TIMEOUT` (`writer::sqlite::SqliteBatch::begin`).
pub(in crate::journal) fn open(path: &Path, synchronous: Synchronous) -> Result<Connection, JournalError> {
    let conn = Connection::open(path).map_err(|e| JournalError::Open(format!("{}: {e}", path.display())))?;
    // Patient while it is set up (another process may hold the lock)...
    conn.busy_timeout(super::super::BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    let sync = match synchronous {
        Synchronous::Normal => "NORMAL",
        Synchronous::Full => "FULL",
    };
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; PRAGMA foreign_keys = ON; \
         PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = {};",
        super::super::WAL_LIMIT
    ))?;
    // ...never after.
    conn.busy_timeout(Duration::ZERO)?;
    Ok(conn)
}

/// A channel's business day (`payroute reconcile`), read whole on a
/// read-only connection of its own: through sqlx every row is handed from
/// its worker thread to the runtime, and for a million rows those
/// hand-offs, not SQLite, were most of the time (BENCHMARKS.md).
pub(in crate::journal) fn recon_day(
    path: &Path,
    day: &ReconDay,
    mut each: impl FnMut(ReconRow),
) -> Result<u64, JournalError> {
    use rusqlite::OpenFlags;
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|e| JournalError::Open(format!("{}: {e}", path.display())))?;
    conn.busy_timeout(super::super::BUSY_TIMEOUT)?;
    let sql = concat!(
        "SELECT ",
        super::read::recon_cols!(),
        " FROM payments INDEXED BY payments_created WHERE created_at_ms >= ?1 AND created_at_ms < ?2 \
         AND channel_id = ?3 AND ",
        super::read::paid_at!(),
        " >= ?4 AND ",
        super::read::paid_at!(),
        " < ?2 ORDER BY created_at_ms, trade_no"
    );
    let mut stmt = conn.prepare(sql)?;
    let mut rows = stmt.query(rusqlite::params![
        day.created_from_ms,
        day.paid_until_ms,
        day.channel,
        day.paid_from_ms
    ])?;
    let mut n = 0;
    while let Some(r) = rows.next()? {
        let state: String = r.get(3)?;
        each(ReconRow {
            trade_no: r.get(0)?,
            amount: r.get(1)?,
            expected_fee: r.get(2)?,
            state: State::parse(&state).ok_or_else(|| super::decode_err("state", &state))?,
            refunded_amount: r.get(4)?,
            created_at_ms: r.get(5)?,
        });
        n += 1;
    }
    Ok(n)
}

impl From<rusqlite::Error> for JournalError {
    fn from(e: rusqlite::Error) -> JournalError {
        match e.sqlite_error_code() {
            // The file cannot be written (disk full, gone, locked by another
            // process past the busy timeout): retry later, answer 503.
            Some(
                ErrorCode::CannotOpen
                | ErrorCode::DiskFull
                | ErrorCode::SystemIoFailure
                | ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::ReadOnly
                | ErrorCode::OutOfMemory,
            ) => JournalError::Unavailable(e.to_string()),
            // The message only: details may quote values.
            _ => JournalError::Database(match e {
                rusqlite::Error::SqliteFailure(_, Some(msg)) => msg,
                other => other.to_string(),
            }),
        }
    }
}

/// The writer's open transaction.
pub(in crate::journal) struct SqliteTx<'c>(pub &'c Connection);

impl SqliteTx<'_> {
    /// The statement of `sql`, prepared once per connection, with `args`
    /// bound by their `$N` numbers.
    fn prepare(&self, sql: &str, args: &[Arg<'_>]) -> Result<rusqlite::CachedStatement<'_>, JournalError> {
        let mut stmt = self.0.prepare_cached(sql)?;
        for index in 1..=stmt.parameter_count() {
            let arg = stmt
                .parameter_name(index)
                .and_then(|name| name.strip_prefix('$'))
                .and_then(|n| n.parse::<usize>().ok())
                .and_then(|n| args.get(n.wrapping_sub(1)))
                .copied()
                .ok_or(JournalError::Internal("a statement parameter without its $N argument"))?;
            match arg {
                Arg::Int(v) => stmt.raw_bind_parameter(index, v)?,
                Arg::Text(v) => stmt.raw_bind_parameter(index, v)?,
            }
        }
        Ok(stmt)
    }

    fn rows(&self, sql: &str, args: &[Arg<'_>], limit: usize) -> Result<Vec<OwnedRow>, JournalError> {
        let mut stmt = self.prepare(sql, args)?;
        let names: Vec<String> = stmt.column_names().into_iter().map(str::to_owned).collect();
        let width = names.len();
        let names: std::sync::Arc<[String]> = names.into();
        let mut rows = stmt.raw_query();
        let mut out = Vec::new();
        while out.len() < limit {
            let Some(row) = rows.next()? else { break };
            let values = (0..width).map(|i| row.get::<_, Value>(i)).collect::<Result<_, _>>()?;
            out.push(OwnedRow {
                names: names.clone(),
                values,
            });
        }
        Ok(out)
    }
}

impl Tx for SqliteTx<'_> {
    type Row = OwnedRow;

    // One writer connection: nothing else can change a row under a move.
    const SELECT_FOR_MOVE: &'static str = "SELECT state, channel_id FROM payments WHERE trade_no = $1";

    // INDEXED BY: left to itself, SQLite's planner takes `events_state`
    // (an equality on `state`) and reads and sorts *every* pending event on
    // each claim, in the writer's thread: with a merchant down and 60,000
    // events waiting, each notification in cost 4 ms (BENCHMARKS.md,
    // session 6). The partial `events_due` index reads only the due ones.
    const CLAIM_EVENTS: &'static str = concat!(
        "UPDATE events SET lease_owner = $1, lease_until_ms = $2 + $3, attempts = attempts + 1 \
         WHERE event_id IN (SELECT event_id FROM events INDEXED BY events_due WHERE state = 'pending' \
         AND next_at_ms <= $2 \
         AND (lease_until_ms IS NULL OR lease_until_ms <= $2) \
         AND merchant_id NOT IN (SELECT value FROM json_each($5)) ORDER BY next_at_ms LIMIT $4) RETURNING ",
        event_cols!()
    );

    const CLAIM_QUERIES: &'static str = concat!(
        "UPDATE payments SET next_query_at_ms = $1 + $2, query_count = query_count + 1 \
         WHERE trade_no IN (SELECT trade_no FROM payments WHERE state = 'pending' AND next_query_at_ms <= $1 \
         ORDER BY next_query_at_ms LIMIT $3) RETURNING ",
        payment_cols!()
    );

    async fn execute(&mut self, sql: &'static str, args: &[Arg<'_>]) -> Result<u64, JournalError> {
        Ok(self.prepare(sql, args)?.raw_execute()? as u64)
    }

    async fn fetch_optional(&mut self, sql: &'static str, args: &[Arg<'_>]) -> Result<Option<OwnedRow>, JournalError> {
        Ok(self.rows(sql, args, 1)?.pop())
    }

    async fn fetch_all(&mut self, sql: &'static str, args: &[Arg<'_>]) -> Result<Vec<OwnedRow>, JournalError> {
        self.rows(sql, args, usize::MAX)
    }

    /// In [`CHUNKS`] of rows: a statement a row was most of what history
    /// cost (BENCHMARKS.md, "Session 14"). The values bind by position, to
    /// `?`s: numbering them (`$N`, as PostgreSQL needs) cost more to format
    /// than the rows to write.
    async fn insert_rows(
        &mut self,
        table_columns: &'static str,
        width: usize,
        rows: &[Arg<'_>],
    ) -> Result<(), JournalError> {
        in_chunks(rows, width, |size, chunk| {
            let mut stmt = self.0.prepare_cached(&insert_sql(table_columns, width, CHUNKS[size]))?;
            for (i, arg) in chunk.iter().enumerate() {
                match *arg {
                    Arg::Int(v) => stmt.raw_bind_parameter(i + 1, v)?,
                    Arg::Text(v) => stmt.raw_bind_parameter(i + 1, v)?,
                }
            }
            stmt.raw_execute()?;
            Ok(())
        })
    }
}

/// `INSERT INTO {table_columns} VALUES (?, …), …`: `rows` rows of
/// `width` positional parameters.
fn insert_sql(table_columns: &str, width: usize, rows: usize) -> String {
    let row = format!("({})", vec!["?"; width].join(", "));
    let mut sql = format!("INSERT INTO {table_columns} VALUES ");
    sql.reserve(rows * (row.len() + 2));
    for i in 0..rows {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&row);
    }
    sql
}

/// A row copied out of its statement (rusqlite's rows borrow it).
pub(in crate::journal) struct OwnedRow {
    names: std::sync::Arc<[String]>,
    values: Vec<Value>,
}

impl OwnedRow {
    fn value(&self, column: &str) -> Result<&Value, JournalError> {
        self.names
            .iter()
            .position(|n| n == column)
            .and_then(|i| self.values.get(i))
            .ok_or_else(|| JournalError::Database(format!("journal: no column {column}")))
    }
}

impl Row for OwnedRow {
    fn int(&self, column: &str) -> Result<Option<i64>, JournalError> {
        match self.value(column)? {
            Value::Null => Ok(None),
            Value::Integer(v) => Ok(Some(*v)),
            _ => Err(JournalError::Database(format!(
                "journal: column {column} is not an integer"
            ))),
        }
    }

    fn text(&self, column: &str) -> Result<Option<String>, JournalError> {
        match self.value(column)? {
            Value::Null => Ok(None),
            Value::Text(v) => Ok(Some(v.clone())),
            _ => Err(JournalError::Database(format!("journal: column {column} is not text"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn arguments_bind_by_their_number_not_their_place() {
        let conn = Connection::open_in_memory().expect("memory db");
        conn.execute_batch("CREATE TABLE t (a INTEGER, b TEXT, c INTEGER)")
            .expect("table");
        let mut tx = SqliteTx(&conn);
        // $2 appears first, $1 twice: SQLite numbers `$N` names by first
        // appearance; the driver must bind by N.
        let sql = "INSERT INTO t (b, a, c) VALUES ($2, $1, $1 + $3)";
        let n = tx
            .execute(sql, &super::super::args![7, "seven", Some(1)])
            .await
            .expect("insert");
        assert_eq!(n, 1);
        let row = tx
            .fetch_optional("SELECT a, b, c FROM t WHERE b = $1", &super::super::args!["seven"])
            .await
            .expect("select")
            .expect("a row");
        assert_eq!(row.req_int("a").expect("a"), 7);
        assert_eq!(row.req_text("b").expect("b"), "seven");
        assert_eq!(row.int("c").expect("c"), Some(8));
        let missing = tx.execute("SELECT $2", &super::super::args![1]).await;
        assert!(matches!(missing, Err(JournalError::Internal(_))), "{missing:?}");
    }

    /// The bundled SQLite is built with .cargo/config.toml's flags: without
    /// memory statistics and with a page cache of its own per connection,
    /// neither behind a global mutex (a build that lost the flags would only
    /// be slower, so nothing else would tell).
    #[test]
    fn sqlite_is_built_without_global_memory_mutexes() {
        let conn = Connection::open_in_memory().expect("memory db");
        let mut stmt = conn.prepare("PRAGMA compile_options").expect("pragma");
        let options: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .expect("options")
            .collect::<Result<_, _>>()
            .expect("options");
        assert!(options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"), "{options:?}");
        assert!(!options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"), "{options:?}");
    }

    /// Rows of every count go in whole and in order, across the chunk
    /// sizes (16 × 5 + 4 + 1 + 1 = 86), each value in its own column.
    #[tokio::test]
    async fn insert_rows_writes_every_row_across_chunks() {
        let conn = Connection::open_in_memory().expect("memory db");
        conn.execute_batch("CREATE TABLE t (n INTEGER, s TEXT, m INTEGER)")
            .expect("table");
        let texts: Vec<String> = (0..86).map(|i| format!("row {i}")).collect();
        let mut values = Vec::new();
        for (i, text) in texts.iter().enumerate() {
            let n = i as i64;
            values.extend(super::super::args![n, text, (n % 3 == 0).then_some(-n)]);
        }
        SqliteTx(&conn)
            .insert_rows("t (n, s, m)", 3, &values)
            .await
            .expect("insert");
        let mut stmt = conn.prepare("SELECT n, s, m FROM t ORDER BY rowid").expect("select");
        let rows: Vec<(i64, String, Option<i64>)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("decode");
        assert_eq!(rows.len(), 86);
        for (i, (n, s, m)) in rows.into_iter().enumerate() {
            let i = i as i64;
            assert_eq!(
                (n, s.as_str(), m),
                (i, texts[i as usize].as_str(), (i % 3 == 0).then_some(-i))
            );
        }
        assert_eq!(
            insert_sql("t (a, b)", 2, 2),
            "INSERT INTO t (a, b) VALUES (?, ?), (?, ?)"
        );
    }
}
