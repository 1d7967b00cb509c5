//! Every write the journal makes, once, for both drivers: one [`Op`] inside
//! the writer's open transaction (on PostgreSQL, a lone op that
//! [`stands_alone`] runs in none). Nothing here begins or commits.

use super::{args, event, payment, Arg, Row, Tx};
use crate::journal::model::*;
use crate::journal::state::{Rule, State};
use crate::journal::JournalError;

/// Rows per multi-row `INSERT` of history (5 parameters each: well under
/// both backends' parameter limits).
const HISTORY_CHUNK: usize = 500;

/// How often a move is judged again after losing a race; states only move
/// forward through at most three steps, so more is a bug, not contention.
const MAX_RACES: usize = 8;

/// Whether [`apply`] may run `op` outside a transaction, each statement
/// committed as it runs: a payment's open (one `INSERT`), a failover (one
/// `UPDATE`) and a move with no merchant event (one compare-and-set
/// `UPDATE` in the common case; where that finds the payment moved, a read
/// and another compare-and-set, each right on its own — the read's row
/// lock then lasts the statement, and the `UPDATE` checks the state it read
/// again). Anything that writes two rows that must commit together does
/// not (a move and its event, a notification and its move).
pub(in crate::journal) fn stands_alone(op: &Op) -> bool {
    matches!(
        op,
        Op::Open(_) | Op::SetChannel { .. } | Op::Transition { event: None, .. }
    )
}

/// One operation inside the writer's open transaction.
pub(in crate::journal) async fn apply<T: Tx>(tx: &mut T, op: &Op) -> Result<Reply, JournalError> {
    Ok(match op {
        Op::Open(p) => Reply::Inserted(insert_payment(tx, p).await?),
        Op::SetChannel {
            trade_no,
            channel,
            at_ms,
        } => {
            let sql =
                "UPDATE payments SET channel_id = $2, updated_at_ms = $3 WHERE trade_no = $1 AND state = 'pending'";
            Reply::Inserted(tx.execute(sql, &args![trade_no, &**channel, *at_ms]).await? == 1)
        }
        Op::Transition {
            trade_no,
            to,
            facts,
            event,
        } => Reply::Moved(transition(tx, trade_no, *to, facts, event.as_ref()).await?),
        Op::Accept { note, to, facts, event } => Reply::Accept(accept(tx, note, *to, facts, event.as_ref()).await?),
        Op::History(rows) => {
            history(tx, rows).await?;
            Reply::Done
        }
        Op::Adjustment(a) => {
            adjustment(tx, a).await?;
            Reply::Done
        }
        Op::HoldRefund { trade_no, amount } => Reply::Hold(hold_refund(tx, trade_no, *amount).await?),
        Op::SettleRefund {
            trade_no,
            amount,
            accepted,
            facts,
            detail,
            event,
        } => Reply::Moved(settle_refund(tx, trade_no, *amount, *accepted, facts, detail, event.as_ref()).await?),
        Op::ClaimQueries { now_ms, hold_ms, limit } => {
            let rows = tx
                .fetch_all(T::CLAIM_QUERIES, &args![*now_ms, *hold_ms, *limit])
                .await?;
            Reply::Payments(rows.iter().map(payment).collect::<Result<_, _>>()?)
        }
        Op::Reschedule { trade_no, next_at_ms } => {
            let sql = "UPDATE payments SET next_query_at_ms = $2 WHERE trade_no = $1 AND state = 'pending'";
            Reply::Changed(tx.execute(sql, &args![trade_no, *next_at_ms]).await? == 1)
        }
        Op::ClaimEvents {
            owner,
            now_ms,
            lease_ms,
            limit,
            skip,
        } => {
            let rows = tx
                .fetch_all(T::CLAIM_EVENTS, &args![owner, *now_ms, *lease_ms, *limit, skip])
                .await?;
            let mut events = rows.iter().map(event).collect::<Result<Vec<_>, _>>()?;
            events.sort_by_key(|e| e.next_at_ms);
            Reply::Events(events)
        }
        Op::ReleaseEvents { owner, event_ids } => {
            // The claim counted a try that was never made.
            let sql = "UPDATE events SET lease_owner = NULL, lease_until_ms = NULL, \
                       attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END \
                       WHERE event_id = $1 AND lease_owner = $2 AND state = 'pending'";
            for event_id in event_ids {
                tx.execute(sql, &args![event_id, owner]).await?;
            }
            Reply::Done
        }
        Op::EventDelivered { event_id, at_ms } => {
            // Whoever holds the lease: a delivered event is delivered, and
            // saying so early spares a repeat.
            let sql = "UPDATE events SET state = 'delivered', delivered_at_ms = $2, lease_owner = NULL, \
                       lease_until_ms = NULL, last_error = NULL WHERE event_id = $1 AND state = 'pending'";
            Reply::Changed(tx.execute(sql, &args![event_id, *at_ms]).await? == 1)
        }
        Op::EventRetry {
            event_id,
            owner,
            next_at_ms,
            error,
        } => {
            let sql = "UPDATE events SET next_at_ms = $3, last_error = $4, lease_owner = NULL, \
                       lease_until_ms = NULL WHERE event_id = $1 AND lease_owner = $2 AND state = 'pending'";
            Reply::Changed(tx.execute(sql, &args![event_id, owner, *next_at_ms, error]).await? == 1)
        }
        Op::EventFailed { event_id, owner, error } => {
            let sql = "UPDATE events SET state = 'failed', last_error = $3, lease_owner = NULL, \
                       lease_until_ms = NULL WHERE event_id = $1 AND lease_owner = $2 AND state = 'pending'";
            Reply::Changed(tx.execute(sql, &args![event_id, owner, error]).await? == 1)
        }
        Op::Resend { event_id, now_ms } => {
            let sql = "UPDATE events SET state = 'pending', attempts = 0, next_at_ms = $2, lease_owner = NULL, \
                       lease_until_ms = NULL, delivered_at_ms = NULL WHERE event_id = $1";
            Reply::Changed(tx.execute(sql, &args![event_id, *now_ms]).await? == 1)
        }
        // SQLite's writer has projected its stage before the batch began.
        Op::Project => Reply::Done,
        Op::Reconciled(r) => {
            let sql = "INSERT INTO reconciliations (channel_id, business_day, statement_lines, matched, \
                       differences, fee_base, fees_charged, at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
            let args = args![
                &r.channel_id,
                &r.business_day,
                r.statement_lines,
                r.matched,
                r.differences,
                r.fee_base,
                r.fees_charged,
                r.at_ms,
            ];
            tx.execute(sql, &args).await?;
            Reply::Done
        }
    })
}

/// The columns a new payment is written with; `$1` … `$14` are
/// [`insert_args`], in order. (`updated_at_ms` starts as `created_at_ms`;
/// `paid_at_ms` is set for a payment recorded paid.)
macro_rules! insert_columns {
    () => {
        "(trade_no, merchant_id, order_id, amount, currency, pay_type, protocol, channel_id, channel_trade_no, \
         state, expected_fee, merchant_data, created_at_ms, updated_at_ms, next_query_at_ms, paid_at_ms)"
    };
}
macro_rules! insert_values {
    () => {
        "$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13, $14, CASE WHEN $10 = 'paid' THEN $13 END"
    };
}

/// The arguments of [`insert_columns`]' statement.
fn insert_args(p: &NewPayment) -> [Arg<'_>; 14] {
    args![
        &p.trade_no,
        &*p.merchant_id,
        &p.order_id,
        p.amount,
        &p.currency,
        &p.pay_type,
        p.protocol.as_str(),
        p.channel_id.as_deref(),
        &p.channel_trade_no,
        p.state.as_str(),
        p.expected_fee,
        &p.merchant_data,
        p.created_at_ms,
        p.next_query_at_ms.filter(|_| !p.state.is_final()),
    ]
}

async fn insert_payment<T: Tx>(tx: &mut T, p: &NewPayment) -> Result<bool, JournalError> {
    let sql = concat!(
        "INSERT INTO payments ",
        insert_columns!(),
        " VALUES (",
        insert_values!(),
        ") ON CONFLICT DO NOTHING"
    );
    Ok(tx.execute(sql, &insert_args(p)).await? == 1)
}

/// A move of state. From `pending`, where every move but to `pending` is
/// allowed whatever the channel, it is tried straight away as one `UPDATE
/// ... WHERE state = 'pending'` (the common case: a payment closing); only
/// when that touches no row is the current state read and judged.
async fn transition<T: Tx>(
    tx: &mut T,
    trade_no: &str,
    to: State,
    facts: &TransitionFacts,
    event: Option<&NewEvent>,
) -> Result<Moved, JournalError> {
    if State::Pending.may_move(to, false) == Rule::Allowed && set_state(tx, trade_no, State::Pending, to, facts).await?
    {
        return applied(tx, trade_no, State::Pending, facts, event).await;
    }
    for _ in 0..MAX_RACES {
        let Some(row) = tx.fetch_optional(T::SELECT_FOR_MOVE, &args![trade_no]).await? else {
            return Ok(Moved::Unknown);
        };
        let state = row.req_text("state")?;
        let current = State::parse(&state).ok_or_else(|| super::decode_err("state", &state))?;
        let channel = row.text("channel_id")?;
        let same_channel = matches!((&facts.channel, &channel), (Some(a), Some(b)) if **a == **b);
        match current.may_move(to, same_channel) {
            Rule::Same => return Ok(Moved::AlreadyThere),
            Rule::Refused => return Ok(Moved::Refused { current }),
            Rule::Allowed => {}
        }
        if set_state(tx, trade_no, current, to, facts).await? {
            return applied(tx, trade_no, current, facts, event).await;
        }
    }
    Err(JournalError::Database(format!(
        "journal: payment {trade_no} kept changing under a move"
    )))
}

/// A move's `UPDATE` of `$table`: `$1` trade number, `$2` the new state,
/// `$3` when, `$4` the channel's trade number and `$5` the expected fee
/// (each kept when NULL), `$6` the state it must still be in; `$set` and
/// `$cond` add to `SET` and `WHERE`. `paid_at_ms`: the time a channel's
/// statement dates the payment by (reconciliation).
macro_rules! move_sql {
    ($table:literal, $set:literal, $cond:literal) => {
        concat!(
            "UPDATE ",
            $table,
            " SET state = $2, updated_at_ms = $3, channel_trade_no = COALESCE($4, channel_trade_no), \
             expected_fee = COALESCE($5, expected_fee), next_query_at_ms = NULL, \
             paid_at_ms = CASE WHEN $2 = 'paid' THEN $3 ELSE paid_at_ms END",
            $set,
            " WHERE trade_no = $1 AND state = $6",
            $cond
        )
    };
}

/// The compare-and-set: `from` → `to`, if the payment is still `from`.
/// `to` is never pending (nothing moves to pending): the sweeper's schedule
/// ends with the move.
///
/// `channel_id` is set only when it changes. SQLite rewrites an index entry
/// whenever its column is named in `SET`, equal value or not, and
/// `payments_channel_order` is keyed by order id: a random index page
/// rewritten (and a WAL frame written) per payment closed, for nothing, in
/// the common case where the deciding channel is the one the payment is
/// already on. So that case is one `UPDATE` leaving the column alone; only
/// when it touches no row (another channel decided, or the state moved)
/// is the move tried again setting it.
async fn set_state<T: Tx>(
    tx: &mut T,
    trade_no: &str,
    from: State,
    to: State,
    facts: &TransitionFacts,
) -> Result<bool, JournalError> {
    let (to, from) = (to.as_str(), from.as_str());
    let (at, channel_trade_no, fee) = (facts.at_ms, &facts.channel_trade_no, facts.expected_fee);
    let Some(channel) = facts.channel.as_deref() else {
        let args = args![trade_no, to, at, channel_trade_no, fee, from];
        return Ok(tx.execute(move_sql!("payments", "", ""), &args).await? == 1);
    };
    let args = args![trade_no, to, at, channel_trade_no, fee, from, channel];
    if tx
        .execute(move_sql!("payments", "", " AND channel_id = $7"), &args)
        .await?
        == 1
    {
        return Ok(true);
    }
    Ok(tx
        .execute(move_sql!("payments", ", channel_id = $7", ""), &args)
        .await?
        == 1)
}

/// A move made: its event joins the outbox in the same transaction.
async fn applied<T: Tx>(
    tx: &mut T,
    trade_no: &str,
    from: State,
    facts: &TransitionFacts,
    event: Option<&NewEvent>,
) -> Result<Moved, JournalError> {
    if let Some(ev) = event {
        insert_event(tx, trade_no, ev, facts.at_ms).await?;
    }
    Ok(Moved::Applied { from })
}

async fn insert_event<T: Tx>(tx: &mut T, trade_no: &str, ev: &NewEvent, at_ms: i64) -> Result<(), JournalError> {
    let sql = "INSERT INTO events (event_id, trade_no, merchant_id, kind, target, method, body, state, \
               attempts, next_at_ms, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', 0, $8, $9)";
    let args = args![
        &ev.event_id,
        trade_no,
        &*ev.merchant_id,
        &ev.kind,
        &ev.target,
        &ev.method,
        &ev.body,
        ev.next_at_ms,
        at_ms,
    ];
    tx.execute(sql, &args).await?;
    Ok(())
}

async fn accept<T: Tx>(
    tx: &mut T,
    note: &NotificationIn,
    to: State,
    facts: &TransitionFacts,
    event: Option<&NewEvent>,
) -> Result<Accept, JournalError> {
    let (Some(key), Some(trade_no)) = (&note.dedupe_key, &note.trade_no) else {
        return Err(JournalError::Invalid(
            "an accepted notification needs a dedupe key and a trade number".into(),
        ));
    };
    let sql = "INSERT INTO notifications_in (channel_id, dedupe_key, trade_no, result, at_ms) \
               VALUES ($1, $2, $3, 'accepted', $4) ON CONFLICT DO NOTHING";
    let first = tx
        .execute(sql, &args![&*note.channel, key, trade_no, note.at_ms])
        .await?
        == 1;
    if !first {
        notification(tx, note, NotifyResult::Duplicate).await?;
        return Ok(Accept::Duplicate);
    }
    match transition(tx, trade_no, to, facts, event).await? {
        Moved::Unknown => {
            let sql = "UPDATE notifications_in SET result = 'unknown_payment' \
                       WHERE channel_id = $1 AND dedupe_key = $2 AND result = 'accepted'";
            tx.execute(sql, &args![&*note.channel, key]).await?;
            Ok(Accept::UnknownPayment)
        }
        moved => Ok(Accept::Accepted(moved)),
    }
}

async fn notification<T: Tx>(tx: &mut T, note: &NotificationIn, result: NotifyResult) -> Result<(), JournalError> {
    let sql = "INSERT INTO notifications_in (channel_id, dedupe_key, trade_no, result, at_ms) \
               VALUES ($1, $2, $3, $4, $5)";
    let args = args![
        &*note.channel,
        &note.dedupe_key,
        &note.trade_no,
        result.as_str(),
        note.at_ms
    ];
    tx.execute(sql, &args).await?;
    Ok(())
}

/// History written behind: attempts as multi-row inserts, rejected
/// notifications one by one (they are rare).
async fn history<T: Tx>(tx: &mut T, rows: &[HistoryRow]) -> Result<(), JournalError> {
    let attempts: Vec<&Attempt> = rows
        .iter()
        .filter_map(|r| match r {
            HistoryRow::Attempt(a) => Some(a),
            HistoryRow::Notification(..) => None,
        })
        .collect();
    for chunk in attempts.chunks(HISTORY_CHUNK) {
        let values: Vec<Arg<'_>> = chunk
            .iter()
            .flat_map(|a| args![&a.trade_no, &*a.channel, &*a.result, a.latency_ms, a.at_ms])
            .collect();
        tx.insert_rows("attempts (trade_no, channel_id, result, latency_ms, at_ms)", 5, &values)
            .await?;
    }
    for row in rows {
        if let HistoryRow::Notification(note, result) = row {
            if *result == NotifyResult::Accepted {
                // Accepted ones are recorded by `accept`, never behind.
                continue;
            }
            notification(tx, note, *result).await?;
        }
    }
    Ok(())
}

async fn adjustment<T: Tx>(tx: &mut T, a: &Adjustment) -> Result<(), JournalError> {
    let sql = "INSERT INTO adjustments (trade_no, kind, channel_id, amount, result, detail, at_ms) \
               VALUES ($1, $2, $3, $4, $5, $6, $7)";
    let args = args![
        &a.trade_no,
        a.kind.as_str(),
        &a.channel_id,
        a.amount,
        &a.result,
        &a.detail,
        a.at_ms
    ];
    tx.execute(sql, &args).await?;
    Ok(())
}

async fn hold_refund<T: Tx>(tx: &mut T, trade_no: &str, amount: i64) -> Result<RefundHold, JournalError> {
    let sql = "UPDATE payments SET refund_held = refund_held + $2 WHERE trade_no = $1 AND state = 'paid' \
               AND amount - refunded_amount - refund_held >= $2";
    if tx.execute(sql, &args![trade_no, amount]).await? == 1 {
        return Ok(RefundHold::Held);
    }
    let sql = "SELECT state, amount - refunded_amount - refund_held AS available FROM payments WHERE trade_no = $1";
    let Some(row) = tx.fetch_optional(sql, &args![trade_no]).await? else {
        return Ok(RefundHold::Unknown);
    };
    let state = row.req_text("state")?;
    let current = State::parse(&state).ok_or_else(|| super::decode_err("state", &state))?;
    Ok(if current == State::Paid {
        RefundHold::Exceeds {
            available: row.req_int("available")?,
        }
    } else {
        RefundHold::NotRefundable { current }
    })
}

#[allow(clippy::too_many_arguments)]
async fn settle_refund<T: Tx>(
    tx: &mut T,
    trade_no: &str,
    amount: i64,
    accepted: bool,
    facts: &TransitionFacts,
    detail: &str,
    event: Option<&NewEvent>,
) -> Result<Moved, JournalError> {
    let taken = if accepted { amount } else { 0 };
    let sql = "UPDATE payments SET refund_held = refund_held - $2, refunded_amount = refunded_amount + $3, \
               updated_at_ms = $4 WHERE trade_no = $1 AND refund_held >= $2 RETURNING amount, refunded_amount";
    let Some(row) = tx
        .fetch_optional(sql, &args![trade_no, amount, taken, facts.at_ms])
        .await?
    else {
        return Err(JournalError::Database(format!(
            "journal: no refund of {amount} held on payment {trade_no}"
        )));
    };
    let adjustment_row = Adjustment {
        trade_no: trade_no.to_owned(),
        kind: AdjustmentKind::Refund,
        channel_id: facts.channel.as_deref().map(str::to_owned),
        amount: Some(amount),
        result: if accepted { "accepted" } else { "refused" }.to_owned(),
        detail: detail.to_owned(),
        at_ms: facts.at_ms,
    };
    adjustment(tx, &adjustment_row).await?;
    let total = row.req_int("amount")?;
    let refunded = row.req_int("refunded_amount")?;
    if accepted && refunded >= total {
        return transition(tx, trade_no, State::Refunded, facts, event).await;
    }
    // A partial refund moves no state but is news to the merchant.
    if accepted {
        if let Some(ev) = event {
            insert_event(tx, trade_no, ev, facts.at_ms).await?;
        }
    }
    Ok(Moved::AlreadyThere)
}
