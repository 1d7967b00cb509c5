//! Reads, outside the writer: on a pool of their own connections (SQLite
//! WAL readers never block its writer), through sqlx on both backends.
//! Written once inside [`backend!`], which expands it for SQLite and for
//! PostgreSQL with concrete types (sqlx has no dialect-neutral way to be
//! generic over a database without a wall of trait bounds).

use super::{event, event_cols, payment, payment_cols};
use crate::journal::model::*;
use crate::journal::JournalError;

/// A row of [`ReconRow`]'s columns.
fn recon_row(r: &impl super::Row) -> Result<ReconRow, JournalError> {
    let state = r.req_text("state")?;
    Ok(ReconRow {
        trade_no: r.req_text("trade_no")?,
        amount: r.req_int("amount")?,
        expected_fee: r.req_int("expected_fee")?,
        state: crate::journal::State::parse(&state).ok_or_else(|| super::decode_err("state", &state))?,
        refunded_amount: r.req_int("refunded_amount")?,
        created_at_ms: r.req_int("created_at_ms")?,
    })
}

/// The columns of a [`ReconRow`].
macro_rules! recon_cols {
    () => {
        "trade_no, amount, expected_fee, state, refunded_amount, created_at_ms"
    };
}

/// The business time a statement dates a payment by: when it was paid
/// (before schema version 2, the last move of a paid or refunded payment).
macro_rules! paid_at {
    () => {
        "COALESCE(paid_at_ms, CASE WHEN state IN ('paid', 'refunded') THEN updated_at_ms END)"
    };
}
pub(in crate::journal) use {paid_at, recon_cols};

/// `$from_created`: the payments table read in creation order (SQLite is
/// told to; its planner would otherwise take an index that narrows the
/// channel or the state and read every payment the channel ever had).
/// `$in_list`: the trade numbers of a JSON array bound as `$1`.
macro_rules! backend {
    ($module:ident, $db:ty, $from_created:literal, $in_list:literal) => {
        pub(in crate::journal) mod $module {
            use super::super::Row;
            use super::*;

            type Pool = sqlx::Pool<$db>;

            pub(in crate::journal) async fn ping(pool: &Pool) -> Result<(), JournalError> {
                sqlx::query("SELECT 1").execute(pool).await?;
                Ok(())
            }

            /// The payment's row alone: one SELECT.
            pub(in crate::journal) async fn payment_row(pool: &Pool, trade_no: &str) -> Result<Option<Payment>, JournalError> {
                sqlx::query(concat!("SELECT ", payment_cols!(), " FROM payments WHERE trade_no = $1"))
                    .bind(trade_no)
                    .fetch_optional(pool)
                    .await?
                    .as_ref()
                    .map(payment)
                    .transpose()
            }

            pub(in crate::journal) async fn payment_record(
                pool: &Pool,
                trade_no: &str,
            ) -> Result<Option<PaymentRecord>, JournalError> {
                let Some(payment) = payment_row(pool, trade_no).await? else {
                    return Ok(None);
                };
                let attempts = sqlx::query(
                    "SELECT channel_id, result, latency_ms, at_ms FROM attempts WHERE trade_no = $1 ORDER BY at_ms, id",
                )
                .bind(trade_no)
                .fetch_all(pool)
                .await?
                .iter()
                .map(|r| {
                    Ok(AttemptRow {
                        channel_id: r.req_text("channel_id")?,
                        result: r.req_text("result")?,
                        latency_ms: r.req_int("latency_ms")?,
                        at_ms: r.req_int("at_ms")?,
                    })
                })
                .collect::<Result<_, JournalError>>()?;
                let notifications_in = sqlx::query(
                    "SELECT channel_id, dedupe_key, result, at_ms FROM notifications_in WHERE trade_no = $1 \
                     ORDER BY at_ms, id",
                )
                .bind(trade_no)
                .fetch_all(pool)
                .await?
                .iter()
                .map(|r| {
                    Ok(NotificationRow {
                        channel_id: r.req_text("channel_id")?,
                        dedupe_key: r.text("dedupe_key")?,
                        result: r.req_text("result")?,
                        at_ms: r.req_int("at_ms")?,
                    })
                })
                .collect::<Result<_, JournalError>>()?;
                let notifications_out = sqlx::query(concat!(
                    "SELECT ",
                    event_cols!(),
                    " FROM events WHERE trade_no = $1 ORDER BY created_at_ms, event_id"
                ))
                .bind(trade_no)
                .fetch_all(pool)
                .await?
                .iter()
                .map(event)
                .collect::<Result<_, _>>()?;
                let adjustments = sqlx::query(
                    "SELECT kind, channel_id, amount, result, detail, at_ms FROM adjustments WHERE trade_no = $1 \
                     ORDER BY at_ms, id",
                )
                .bind(trade_no)
                .fetch_all(pool)
                .await?
                .iter()
                .map(|r| {
                    let kind = r.req_text("kind")?;
                    Ok(Adjustment {
                        trade_no: trade_no.to_owned(),
                        kind: match kind.as_str() {
                            "refund" => AdjustmentKind::Refund,
                            "reversal" => AdjustmentKind::Reversal,
                            other => return Err(super::super::decode_err("adjustment kind", other)),
                        },
                        channel_id: r.text("channel_id")?,
                        amount: r.int("amount")?,
                        result: r.req_text("result")?,
                        detail: r.req_text("detail")?,
                        at_ms: r.req_int("at_ms")?,
                    })
                })
                .collect::<Result<_, JournalError>>()?;
                Ok(Some(PaymentRecord {
                    payment,
                    attempts,
                    notifications_in,
                    notifications_out,
                    adjustments,
                }))
            }

            pub(in crate::journal) async fn find_for_channel(
                pool: &Pool,
                channel_id: &str,
                order_id: &str,
                limit: i64,
            ) -> Result<Vec<Payment>, JournalError> {
                sqlx::query(concat!(
                    "SELECT ",
                    payment_cols!(),
                    " FROM payments WHERE channel_id = $1 AND order_id = $2 ORDER BY created_at_ms DESC, trade_no LIMIT $3"
                ))
                .bind(channel_id)
                .bind(order_id)
                .bind(limit)
                .fetch_all(pool)
                .await?
                .iter()
                .map(payment)
                .collect()
            }

            pub(in crate::journal) async fn find_for_merchant(
                pool: &Pool,
                merchant_id: &str,
                order_id: &str,
            ) -> Result<Option<Payment>, JournalError> {
                sqlx::query(concat!(
                    "SELECT ",
                    payment_cols!(),
                    " FROM payments WHERE merchant_id = $1 AND order_id = $2 ORDER BY created_at_ms DESC, trade_no LIMIT 1"
                ))
                .bind(merchant_id)
                .bind(order_id)
                .fetch_optional(pool)
                .await?
                .as_ref()
                .map(payment)
                .transpose()
            }

            pub(in crate::journal) async fn events(
                pool: &Pool,
                state: EventState,
                limit: i64,
            ) -> Result<Vec<Event>, JournalError> {
                sqlx::query(concat!(
                    "SELECT ",
                    event_cols!(),
                    " FROM events WHERE state = $1 ORDER BY created_at_ms DESC, event_id LIMIT $2"
                ))
                .bind(state.as_str())
                .bind(limit)
                .fetch_all(pool)
                .await?
                .iter()
                .map(event)
                .collect()
            }

            pub(in crate::journal) async fn event_by_id(pool: &Pool, event_id: &str) -> Result<Option<Event>, JournalError> {
                sqlx::query(concat!("SELECT ", event_cols!(), " FROM events WHERE event_id = $1"))
                    .bind(event_id)
                    .fetch_optional(pool)
                    .await?
                    .as_ref()
                    .map(event)
                    .transpose()
            }

            pub(in crate::journal) async fn backlog(pool: &Pool) -> Result<i64, JournalError> {
                sqlx::query("SELECT COUNT(*) AS n FROM events WHERE state = 'pending'")
                    .fetch_one(pool)
                    .await?
                    .req_int("n")
            }

            /// One page of payments created in `[since, until)`, after the
            /// key `(created_at_ms, trade_no)` of the previous page's last row.
            pub(in crate::journal) async fn export_page(
                pool: &Pool,
                after: (i64, &str),
                until: i64,
                limit: i64,
            ) -> Result<Vec<Payment>, JournalError> {
                sqlx::query(concat!(
                    "SELECT ",
                    payment_cols!(),
                    " FROM payments WHERE (created_at_ms > $1 OR (created_at_ms = $1 AND trade_no > $2)) \
                     AND created_at_ms < $3 ORDER BY created_at_ms, trade_no LIMIT $4"
                ))
                .bind(after.0)
                .bind(after.1)
                .bind(until)
                .bind(limit)
                .fetch_all(pool)
                .await?
                .iter()
                .map(payment)
                .collect()
            }

            /// One page of a channel's business day (see [`ReconDay`]), after
            /// the key `(created_at_ms, trade_no)` of the previous page's last row.
            pub(in crate::journal) async fn recon_page(
                pool: &Pool,
                day: &ReconDay,
                after: (i64, &str),
                limit: i64,
            ) -> Result<Vec<ReconRow>, JournalError> {
                sqlx::query(concat!(
                    "SELECT ", recon_cols!(), " FROM ",
                    $from_created,
                    " WHERE (created_at_ms > $1 OR (created_at_ms = $1 AND trade_no > $2)) AND created_at_ms < $3 \
                     AND channel_id = $4 AND ",
                    paid_at!(),
                    " >= $5 AND ",
                    paid_at!(),
                    " < $3 ORDER BY created_at_ms, trade_no LIMIT $6"
                ))
                .bind(after.0)
                .bind(after.1)
                .bind(day.paid_until_ms)
                .bind(&day.channel)
                .bind(day.paid_from_ms)
                .bind(limit)
                .fetch_all(pool)
                .await?
                .iter()
                .map(recon_row)
                .collect()
            }

            /// The payments of these trade numbers (those the journal has).
            pub(in crate::journal) async fn recon_lookup(
                pool: &Pool,
                trade_nos: &[&str],
            ) -> Result<Vec<ReconRow>, JournalError> {
                let list = serde_json::to_string(trade_nos).map_err(|e| JournalError::Database(e.to_string()))?;
                sqlx::query(concat!(
                    "SELECT ",
                    recon_cols!(),
                    " FROM payments WHERE trade_no IN ",
                    $in_list
                ))
                .bind(list)
                .fetch_all(pool)
                .await?
                .iter()
                .map(recon_row)
                .collect()
            }

            /// Whether any payment was created in `[from_ms, until_ms)`.
            pub(in crate::journal) async fn any_created(
                pool: &Pool,
                from_ms: i64,
                until_ms: i64,
            ) -> Result<bool, JournalError> {
                let found = sqlx::query(concat!(
                    "SELECT 1 AS one FROM ",
                    $from_created,
                    " WHERE created_at_ms >= $1 AND created_at_ms < $2 LIMIT 1"
                ))
                .bind(from_ms)
                .bind(until_ms)
                .fetch_optional(pool)
                .await?;
                Ok(found.is_some())
            }

            /// The newest reconciliation's fee figures per channel:
            /// `(channel, fee_base, fees_charged)`.
            pub(in crate::journal) async fn latest_fees(pool: &Pool) -> Result<Vec<(String, i64, i64)>, JournalError> {
                sqlx::query(
                    "SELECT r.channel_id, r.fee_base, r.fees_charged FROM reconciliations r \
                     WHERE r.id = (SELECT MAX(l.id) FROM reconciliations l WHERE l.channel_id = r.channel_id)",
                )
                .fetch_all(pool)
                .await?
                .iter()
                .map(|r| Ok((r.req_text("channel_id")?, r.req_int("fee_base")?, r.req_int("fees_charged")?)))
                .collect()
            }
        }
    };
}

backend!(
    sqlite,
    sqlx::Sqlite,
    "payments INDEXED BY payments_created",
    "(SELECT value FROM json_each($1))"
);
backend!(
    postgres,
    sqlx::Postgres,
    "payments",
    "(SELECT jsonb_array_elements_text($1::jsonb))"
);
