//! The journal's SQL, written once and compiled for both backends.
//!
//! sqlx has no dialect-neutral way to be generic over a database without a
//! wall of trait bounds, and its `Any` driver copies every value through an
//! intermediate row. So each operation is written once inside
//! [`backend!`], which expands it for SQLite and for PostgreSQL with concrete
//! types; the few statements whose dialects differ (row locks, `SKIP LOCKED`)
//! are arguments of the expansion. Both dialects take `$N` parameters.
//!
//! Every write runs inside a transaction the writer owns (see
//! [`super::writer`]); nothing here commits. Moves of state are a read of
//! the current state, the rule of [`State::may_move`], and an `UPDATE ...
//! WHERE state = <what was read>`: if another writer (another instance)
//! moved it in between, the update touches no row and the move is judged
//! again against the new state.

use super::model::*;
use super::state::{Protocol, Rule, State};

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

/// Rows per multi-row `INSERT` of history (6 parameters each: well under
/// both backends' parameter limits).
const HISTORY_CHUNK: usize = 500;

/// How often a move is judged again after losing a race; states only move
/// forward through at most three steps, so more is a bug, not contention.
const MAX_RACES: usize = 8;

fn decode_err(what: &str, value: &str) -> sqlx::Error {
    sqlx::Error::Decode(format!("journal: unknown {what} {value:?}").into())
}

macro_rules! backend {
    (
        $module:ident, $db:ty, $conn:ty,
        lock = $lock:literal,
        claim_events = $claim_events:expr,
        claim_queries = $claim_queries:expr $(,)?
    ) => {
        pub(super) mod $module {
            use sqlx::{QueryBuilder, Row};

            use super::*;

            type Conn = $conn;
            type Pool = sqlx::Pool<$db>;
            type DbRow = <$db as sqlx::Database>::Row;

            fn payment(row: &DbRow) -> Result<Payment, sqlx::Error> {
                let state: String = row.try_get("state")?;
                let protocol: String = row.try_get("protocol")?;
                Ok(Payment {
                    trade_no: row.try_get("trade_no")?,
                    merchant_id: row.try_get("merchant_id")?,
                    order_id: row.try_get("order_id")?,
                    amount: row.try_get("amount")?,
                    currency: row.try_get("currency")?,
                    pay_type: row.try_get("pay_type")?,
                    protocol: Protocol::parse(&protocol).ok_or_else(|| decode_err("protocol", &protocol))?,
                    channel_id: row.try_get("channel_id")?,
                    channel_trade_no: row.try_get("channel_trade_no")?,
                    state: State::parse(&state).ok_or_else(|| decode_err("state", &state))?,
                    expected_fee: row.try_get("expected_fee")?,
                    refunded_amount: row.try_get("refunded_amount")?,
                    refund_held: row.try_get("refund_held")?,
                    merchant_data: row.try_get("merchant_data")?,
                    created_at_ms: row.try_get("created_at_ms")?,
                    updated_at_ms: row.try_get("updated_at_ms")?,
                    next_query_at_ms: row.try_get("next_query_at_ms")?,
                    query_count: row.try_get("query_count")?,
                })
            }

            fn event(row: &DbRow) -> Result<Event, sqlx::Error> {
                let state: String = row.try_get("state")?;
                Ok(Event {
                    event_id: row.try_get("event_id")?,
                    trade_no: row.try_get("trade_no")?,
                    merchant_id: row.try_get("merchant_id")?,
                    kind: row.try_get("kind")?,
                    target: row.try_get("target")?,
                    method: row.try_get("method")?,
                    body: row.try_get("body")?,
                    state: EventState::parse(&state).ok_or_else(|| decode_err("event state", &state))?,
                    attempts: row.try_get("attempts")?,
                    next_at_ms: row.try_get("next_at_ms")?,
                    lease_owner: row.try_get("lease_owner")?,
                    lease_until_ms: row.try_get("lease_until_ms")?,
                    last_error: row.try_get("last_error")?,
                    created_at_ms: row.try_get("created_at_ms")?,
                    delivered_at_ms: row.try_get("delivered_at_ms")?,
                })
            }

            /// One operation inside the writer's open transaction.
            pub(in crate::journal) async fn apply(conn: &mut Conn, op: &Op) -> Result<Reply, sqlx::Error> {
                Ok(match op {
                    Op::Insert(p) => Reply::Inserted(insert_payment(conn, p).await?),
                    Op::SetChannel {
                        trade_no,
                        channel,
                        at_ms,
                    } => Reply::Inserted(set_channel(conn, trade_no, channel, *at_ms).await?),
                    Op::Transition {
                        trade_no,
                        to,
                        facts,
                        event,
                    } => Reply::Moved(transition(conn, trade_no, *to, facts, event.as_ref()).await?),
                    Op::Accept { note, to, facts, event } => {
                        Reply::Accept(accept(conn, note, *to, facts, event.as_ref()).await?)
                    }
                    Op::History(rows) => {
                        history(conn, rows).await?;
                        Reply::Done
                    }
                    Op::Adjustment(a) => {
                        adjustment(conn, a).await?;
                        Reply::Done
                    }
                    Op::HoldRefund { trade_no, amount } => Reply::Hold(hold_refund(conn, trade_no, *amount).await?),
                    Op::SettleRefund {
                        trade_no,
                        amount,
                        accepted,
                        facts,
                        detail,
                        event,
                    } => Reply::Moved(
                        settle_refund(conn, trade_no, *amount, *accepted, facts, detail, event.as_ref()).await?,
                    ),
                    Op::ClaimQueries { now_ms, hold_ms, limit } => {
                        let rows = sqlx::query($claim_queries)
                            .bind(now_ms)
                            .bind(hold_ms)
                            .bind(limit)
                            .fetch_all(&mut *conn)
                            .await?;
                        Reply::Payments(rows.iter().map(payment).collect::<Result<_, _>>()?)
                    }
                    Op::Reschedule { trade_no, next_at_ms } => {
                        let done = sqlx::query(
                            "UPDATE payments SET next_query_at_ms = $2 WHERE trade_no = $1 AND state = 'pending'",
                        )
                        .bind(trade_no)
                        .bind(next_at_ms)
                        .execute(&mut *conn)
                        .await?;
                        Reply::Changed(done.rows_affected() == 1)
                    }
                    Op::ClaimEvents {
                        owner,
                        now_ms,
                        lease_ms,
                        limit,
                        skip,
                    } => {
                        let rows = sqlx::query($claim_events)
                            .bind(owner)
                            .bind(now_ms)
                            .bind(lease_ms)
                            .bind(limit)
                            .bind(skip)
                            .fetch_all(&mut *conn)
                            .await?;
                        let mut events = rows.iter().map(event).collect::<Result<Vec<_>, _>>()?;
                        events.sort_by_key(|e| e.next_at_ms);
                        Reply::Events(events)
                    }
                    Op::ReleaseEvents { owner, event_ids } => {
                        // The claim counted a try that was never made.
                        for event_id in event_ids {
                            sqlx::query(
                                "UPDATE events SET lease_owner = NULL, lease_until_ms = NULL, \
                                 attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END \
                                 WHERE event_id = $1 AND lease_owner = $2 AND state = 'pending'",
                            )
                            .bind(event_id)
                            .bind(owner)
                            .execute(&mut *conn)
                            .await?;
                        }
                        Reply::Done
                    }
                    Op::EventDelivered { event_id, at_ms } => {
                        // Whoever holds the lease: a delivered event is
                        // delivered, and saying so early spares a repeat.
                        let done = sqlx::query(
                            "UPDATE events SET state = 'delivered', delivered_at_ms = $2, lease_owner = NULL, \
                             lease_until_ms = NULL, last_error = NULL WHERE event_id = $1 AND state = 'pending'",
                        )
                        .bind(event_id)
                        .bind(at_ms)
                        .execute(&mut *conn)
                        .await?;
                        Reply::Changed(done.rows_affected() == 1)
                    }
                    Op::EventRetry {
                        event_id,
                        owner,
                        next_at_ms,
                        error,
                    } => {
                        let done = sqlx::query(
                            "UPDATE events SET next_at_ms = $3, last_error = $4, lease_owner = NULL, \
                             lease_until_ms = NULL WHERE event_id = $1 AND lease_owner = $2 AND state = 'pending'",
                        )
                        .bind(event_id)
                        .bind(owner)
                        .bind(next_at_ms)
                        .bind(error)
                        .execute(&mut *conn)
                        .await?;
                        Reply::Changed(done.rows_affected() == 1)
                    }
                    Op::EventFailed { event_id, owner, error } => {
                        let done = sqlx::query(
                            "UPDATE events SET state = 'failed', last_error = $3, lease_owner = NULL, \
                             lease_until_ms = NULL WHERE event_id = $1 AND lease_owner = $2 AND state = 'pending'",
                        )
                        .bind(event_id)
                        .bind(owner)
                        .bind(error)
                        .execute(&mut *conn)
                        .await?;
                        Reply::Changed(done.rows_affected() == 1)
                    }
                    Op::Resend { event_id, now_ms } => {
                        let done = sqlx::query(
                            "UPDATE events SET state = 'pending', attempts = 0, next_at_ms = $2, lease_owner = NULL, \
                             lease_until_ms = NULL, delivered_at_ms = NULL WHERE event_id = $1",
                        )
                        .bind(event_id)
                        .bind(now_ms)
                        .execute(&mut *conn)
                        .await?;
                        Reply::Changed(done.rows_affected() == 1)
                    }
                })
            }

            async fn insert_payment(conn: &mut Conn, p: &NewPayment) -> Result<bool, sqlx::Error> {
                let done = sqlx::query(
                    "INSERT INTO payments (trade_no, merchant_id, order_id, amount, currency, pay_type, protocol, \
                     channel_id, channel_trade_no, state, expected_fee, merchant_data, created_at_ms, updated_at_ms, \
                     next_query_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13, $14) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(&p.trade_no)
                .bind(&*p.merchant_id)
                .bind(&p.order_id)
                .bind(p.amount)
                .bind(&p.currency)
                .bind(&p.pay_type)
                .bind(p.protocol.as_str())
                .bind(p.channel_id.as_deref())
                .bind(&p.channel_trade_no)
                .bind(p.state.as_str())
                .bind(p.expected_fee)
                .bind(&p.merchant_data)
                .bind(p.created_at_ms)
                .bind(p.next_query_at_ms.filter(|_| !p.state.is_final()))
                .execute(&mut *conn)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            /// The channel a pending payment is being tried on now (a failover).
            async fn set_channel(conn: &mut Conn, trade_no: &str, channel: &str, at_ms: i64) -> Result<bool, sqlx::Error> {
                let done = sqlx::query(
                    "UPDATE payments SET channel_id = $2, updated_at_ms = $3 WHERE trade_no = $1 AND state = 'pending'",
                )
                .bind(trade_no)
                .bind(channel)
                .bind(at_ms)
                .execute(&mut *conn)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn transition(
                conn: &mut Conn,
                trade_no: &str,
                to: State,
                facts: &TransitionFacts,
                event: Option<&NewEvent>,
            ) -> Result<Moved, sqlx::Error> {
                for _ in 0..MAX_RACES {
                    let row = sqlx::query(concat!(
                        "SELECT state, channel_id FROM payments WHERE trade_no = $1",
                        $lock
                    ))
                    .bind(trade_no)
                    .fetch_optional(&mut *conn)
                    .await?;
                    let Some(row) = row else {
                        return Ok(Moved::Unknown);
                    };
                    let state: String = row.try_get("state")?;
                    let current = State::parse(&state).ok_or_else(|| decode_err("state", &state))?;
                    let channel: Option<String> = row.try_get("channel_id")?;
                    let same_channel = matches!((&facts.channel, &channel), (Some(a), Some(b)) if **a == **b);
                    match current.may_move(to, same_channel) {
                        Rule::Same => return Ok(Moved::AlreadyThere),
                        Rule::Refused => return Ok(Moved::Refused { current }),
                        Rule::Allowed => {}
                    }
                    // `to` is never pending here (nothing moves to pending):
                    // the sweeper's schedule ends with the move.
                    let done = sqlx::query(
                        "UPDATE payments SET state = $2, updated_at_ms = $3, channel_id = COALESCE($4, channel_id), \
                         channel_trade_no = COALESCE($5, channel_trade_no), expected_fee = COALESCE($6, expected_fee), \
                         next_query_at_ms = NULL WHERE trade_no = $1 AND state = $7",
                    )
                    .bind(trade_no)
                    .bind(to.as_str())
                    .bind(facts.at_ms)
                    .bind(facts.channel.as_deref())
                    .bind(&facts.channel_trade_no)
                    .bind(facts.expected_fee)
                    .bind(current.as_str())
                    .execute(&mut *conn)
                    .await?;
                    if done.rows_affected() == 1 {
                        if let Some(ev) = event {
                            insert_event(conn, trade_no, ev, facts.at_ms).await?;
                        }
                        return Ok(Moved::Applied { from: current });
                    }
                }
                Err(sqlx::Error::Protocol(format!(
                    "journal: payment {trade_no} kept changing under a move"
                )))
            }

            async fn insert_event(
                conn: &mut Conn,
                trade_no: &str,
                ev: &NewEvent,
                at_ms: i64,
            ) -> Result<(), sqlx::Error> {
                sqlx::query(
                    "INSERT INTO events (event_id, trade_no, merchant_id, kind, target, method, body, state, \
                     attempts, next_at_ms, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', 0, $8, $9)",
                )
                .bind(&ev.event_id)
                .bind(trade_no)
                .bind(&*ev.merchant_id)
                .bind(&ev.kind)
                .bind(&ev.target)
                .bind(&ev.method)
                .bind(&ev.body)
                .bind(ev.next_at_ms)
                .bind(at_ms)
                .execute(&mut *conn)
                .await?;
                Ok(())
            }

            async fn accept(
                conn: &mut Conn,
                note: &NotificationIn,
                to: State,
                facts: &TransitionFacts,
                event: Option<&NewEvent>,
            ) -> Result<Accept, sqlx::Error> {
                let (Some(key), Some(trade_no)) = (&note.dedupe_key, &note.trade_no) else {
                    return Err(sqlx::Error::Protocol(
                        "journal: an accepted notification needs a dedupe key and a trade number".into(),
                    ));
                };
                let first = sqlx::query(
                    "INSERT INTO notifications_in (channel_id, dedupe_key, trade_no, result, at_ms) \
                     VALUES ($1, $2, $3, 'accepted', $4) ON CONFLICT DO NOTHING",
                )
                .bind(&*note.channel)
                .bind(key)
                .bind(trade_no)
                .bind(note.at_ms)
                .execute(&mut *conn)
                .await?
                .rows_affected()
                    == 1;
                if !first {
                    notification(conn, note, NotifyResult::Duplicate).await?;
                    return Ok(Accept::Duplicate);
                }
                match transition(conn, trade_no, to, facts, event).await? {
                    Moved::Unknown => {
                        sqlx::query(
                            "UPDATE notifications_in SET result = 'unknown_payment' \
                             WHERE channel_id = $1 AND dedupe_key = $2 AND result = 'accepted'",
                        )
                        .bind(&*note.channel)
                        .bind(key)
                        .execute(&mut *conn)
                        .await?;
                        Ok(Accept::UnknownPayment)
                    }
                    moved => Ok(Accept::Accepted(moved)),
                }
            }

            async fn notification(conn: &mut Conn, note: &NotificationIn, result: NotifyResult) -> Result<(), sqlx::Error> {
                sqlx::query(
                    "INSERT INTO notifications_in (channel_id, dedupe_key, trade_no, result, at_ms) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&*note.channel)
                .bind(&note.dedupe_key)
                .bind(&note.trade_no)
                .bind(result.as_str())
                .bind(note.at_ms)
                .execute(&mut *conn)
                .await?;
                Ok(())
            }

            /// History written behind: attempts and rejected notifications,
            /// each kind as multi-row inserts.
            async fn history(conn: &mut Conn, rows: &[HistoryRow]) -> Result<(), sqlx::Error> {
                let attempts: Vec<&Attempt> = rows
                    .iter()
                    .filter_map(|r| match r {
                        HistoryRow::Attempt(a) => Some(a),
                        HistoryRow::Notification(..) => None,
                    })
                    .collect();
                for chunk in attempts.chunks(HISTORY_CHUNK) {
                    let mut q: QueryBuilder<'_, $db> = QueryBuilder::new(
                        "INSERT INTO attempts (trade_no, channel_id, result, latency_ms, at_ms) ",
                    );
                    q.push_values(chunk, |mut b, a| {
                        b.push_bind(&a.trade_no)
                            .push_bind(&*a.channel)
                            .push_bind(&*a.result)
                            .push_bind(a.latency_ms)
                            .push_bind(a.at_ms);
                    });
                    q.build().execute(&mut *conn).await?;
                }
                for row in rows {
                    if let HistoryRow::Notification(note, result) = row {
                        if *result == NotifyResult::Accepted {
                            // Accepted ones are recorded by `accept`, never behind.
                            continue;
                        }
                        notification(conn, note, *result).await?;
                    }
                }
                Ok(())
            }

            async fn adjustment(conn: &mut Conn, a: &Adjustment) -> Result<(), sqlx::Error> {
                sqlx::query(
                    "INSERT INTO adjustments (trade_no, kind, channel_id, amount, result, detail, at_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&a.trade_no)
                .bind(a.kind.as_str())
                .bind(&a.channel_id)
                .bind(a.amount)
                .bind(&a.result)
                .bind(&a.detail)
                .bind(a.at_ms)
                .execute(&mut *conn)
                .await?;
                Ok(())
            }

            async fn hold_refund(conn: &mut Conn, trade_no: &str, amount: i64) -> Result<RefundHold, sqlx::Error> {
                let held = sqlx::query(
                    "UPDATE payments SET refund_held = refund_held + $2 WHERE trade_no = $1 AND state = 'paid' \
                     AND amount - refunded_amount - refund_held >= $2",
                )
                .bind(trade_no)
                .bind(amount)
                .execute(&mut *conn)
                .await?
                .rows_affected()
                    == 1;
                if held {
                    return Ok(RefundHold::Held);
                }
                let row = sqlx::query(
                    "SELECT state, amount - refunded_amount - refund_held AS available FROM payments WHERE trade_no = $1",
                )
                .bind(trade_no)
                .fetch_optional(&mut *conn)
                .await?;
                let Some(row) = row else {
                    return Ok(RefundHold::Unknown);
                };
                let state: String = row.try_get("state")?;
                let current = State::parse(&state).ok_or_else(|| decode_err("state", &state))?;
                Ok(if current == State::Paid {
                    RefundHold::Exceeds {
                        available: row.try_get("available")?,
                    }
                } else {
                    RefundHold::NotRefundable { current }
                })
            }

            #[allow(clippy::too_many_arguments)]
            async fn settle_refund(
                conn: &mut Conn,
                trade_no: &str,
                amount: i64,
                accepted: bool,
                facts: &TransitionFacts,
                detail: &str,
                event: Option<&NewEvent>,
            ) -> Result<Moved, sqlx::Error> {
                let taken = if accepted { amount } else { 0 };
                let row = sqlx::query(
                    "UPDATE payments SET refund_held = refund_held - $2, refunded_amount = refunded_amount + $3, \
                     updated_at_ms = $4 WHERE trade_no = $1 AND refund_held >= $2 \
                     RETURNING amount, refunded_amount",
                )
                .bind(trade_no)
                .bind(amount)
                .bind(taken)
                .bind(facts.at_ms)
                .fetch_optional(&mut *conn)
                .await?;
                let Some(row) = row else {
                    return Err(sqlx::Error::Protocol(format!(
                        "journal: no refund of {amount} held on payment {trade_no}"
                    )));
                };
                adjustment(
                    conn,
                    &Adjustment {
                        trade_no: trade_no.to_owned(),
                        kind: AdjustmentKind::Refund,
                        channel_id: facts.channel.as_deref().map(str::to_owned),
                        amount: Some(amount),
                        result: if accepted { "accepted" } else { "refused" }.to_owned(),
                        detail: detail.to_owned(),
                        at_ms: facts.at_ms,
                    },
                )
                .await?;
                let total: i64 = row.try_get("amount")?;
                let refunded: i64 = row.try_get("refunded_amount")?;
                if accepted && refunded >= total {
                    return transition(conn, trade_no, State::Refunded, facts, event).await;
                }
                // A partial refund moves no state but is news to the merchant.
                if accepted {
                    if let Some(ev) = event {
                        insert_event(conn, trade_no, ev, facts.at_ms).await?;
                    }
                }
                Ok(Moved::AlreadyThere)
            }

            // ---- reads (outside the writer) ----

            pub(in crate::journal) async fn ping(pool: &Pool) -> Result<(), sqlx::Error> {
                sqlx::query("SELECT 1").execute(pool).await.map(drop)
            }

            pub(in crate::journal) async fn payment_record(
                pool: &Pool,
                trade_no: &str,
            ) -> Result<Option<PaymentRecord>, sqlx::Error> {
                let row = sqlx::query(concat!("SELECT ", payment_cols!(), " FROM payments WHERE trade_no = $1"))
                    .bind(trade_no)
                    .fetch_optional(pool)
                    .await?;
                let Some(row) = row else { return Ok(None) };
                let payment = payment(&row)?;
                let attempts = sqlx::query(
                    "SELECT channel_id, result, latency_ms, at_ms FROM attempts WHERE trade_no = $1 ORDER BY at_ms, id",
                )
                .bind(trade_no)
                .fetch_all(pool)
                .await?
                .iter()
                .map(|r| {
                    Ok(AttemptRow {
                        channel_id: r.try_get("channel_id")?,
                        result: r.try_get("result")?,
                        latency_ms: r.try_get("latency_ms")?,
                        at_ms: r.try_get("at_ms")?,
                    })
                })
                .collect::<Result<_, sqlx::Error>>()?;
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
                        channel_id: r.try_get("channel_id")?,
                        dedupe_key: r.try_get("dedupe_key")?,
                        result: r.try_get("result")?,
                        at_ms: r.try_get("at_ms")?,
                    })
                })
                .collect::<Result<_, sqlx::Error>>()?;
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
                    let kind: String = r.try_get("kind")?;
                    Ok(Adjustment {
                        trade_no: trade_no.to_owned(),
                        kind: match kind.as_str() {
                            "refund" => AdjustmentKind::Refund,
                            "reversal" => AdjustmentKind::Reversal,
                            other => return Err(decode_err("adjustment kind", other)),
                        },
                        channel_id: r.try_get("channel_id")?,
                        amount: r.try_get("amount")?,
                        result: r.try_get("result")?,
                        detail: r.try_get("detail")?,
                        at_ms: r.try_get("at_ms")?,
                    })
                })
                .collect::<Result<_, sqlx::Error>>()?;
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
            ) -> Result<Vec<Payment>, sqlx::Error> {
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
            ) -> Result<Option<Payment>, sqlx::Error> {
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
            ) -> Result<Vec<Event>, sqlx::Error> {
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

            pub(in crate::journal) async fn event_by_id(pool: &Pool, event_id: &str) -> Result<Option<Event>, sqlx::Error> {
                sqlx::query(concat!("SELECT ", event_cols!(), " FROM events WHERE event_id = $1"))
                    .bind(event_id)
                    .fetch_optional(pool)
                    .await?
                    .as_ref()
                    .map(event)
                    .transpose()
            }

            pub(in crate::journal) async fn backlog(pool: &Pool) -> Result<i64, sqlx::Error> {
                sqlx::query("SELECT COUNT(*) AS n FROM events WHERE state = 'pending'")
                    .fetch_one(pool)
                    .await?
                    .try_get("n")
            }

            /// One page of payments created in `[since, until)`, after the
            /// key `(created_at_ms, trade_no)` of the previous page's last row.
            pub(in crate::journal) async fn export_page(
                pool: &Pool,
                after: (i64, &str),
                until: i64,
                limit: i64,
            ) -> Result<Vec<Payment>, sqlx::Error> {
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
        }
    };
}

backend!(
    sqlite,
    sqlx::Sqlite,
    sqlx::SqliteConnection,
    // One writer connection: nothing else can change a row under a move.
    lock = "",
    claim_events = concat!(
        "UPDATE events SET lease_owner = $1, lease_until_ms = $2 + $3, attempts = attempts + 1 \
         WHERE event_id IN (SELECT event_id FROM events WHERE state = 'pending' AND next_at_ms <= $2 \
         AND (lease_until_ms IS NULL OR lease_until_ms <= $2) \
         AND merchant_id NOT IN (SELECT value FROM json_each($5)) ORDER BY next_at_ms LIMIT $4) RETURNING ",
        event_cols!()
    ),
    claim_queries = concat!(
        "UPDATE payments SET next_query_at_ms = $1 + $2, query_count = query_count + 1 \
         WHERE trade_no IN (SELECT trade_no FROM payments WHERE state = 'pending' AND next_query_at_ms <= $1 \
         ORDER BY next_query_at_ms LIMIT $3) RETURNING ",
        payment_cols!()
    ),
);

backend!(
    postgres,
    sqlx::Postgres,
    sqlx::PgConnection,
    // Instances share the rows: lock the payment for the rest of the move.
    lock = " FOR UPDATE",
    // SKIP LOCKED: two instances claiming at once take disjoint events
    // instead of one waiting for (and then re-checking) the other's rows.
    claim_events = concat!(
        "UPDATE events SET lease_owner = $1, lease_until_ms = $2 + $3, attempts = attempts + 1 \
         FROM (SELECT event_id AS claimed FROM events WHERE state = 'pending' AND next_at_ms <= $2 \
         AND (lease_until_ms IS NULL OR lease_until_ms <= $2) \
         AND merchant_id NOT IN (SELECT jsonb_array_elements_text($5::jsonb)) ORDER BY next_at_ms LIMIT $4 \
         FOR UPDATE SKIP LOCKED) c WHERE events.event_id = c.claimed RETURNING ",
        event_cols!()
    ),
    claim_queries = concat!(
        "UPDATE payments SET next_query_at_ms = $1 + $2, query_count = query_count + 1 \
         FROM (SELECT trade_no AS claimed FROM payments WHERE state = 'pending' AND next_query_at_ms <= $1 \
         ORDER BY next_query_at_ms LIMIT $3 FOR UPDATE SKIP LOCKED) c WHERE payments.trade_no = c.claimed \
         RETURNING ",
        payment_cols!()
    ),
);
