//! The payment's record in the journal, written at the moments that matter
//! for money and committed before the payment goes on:
//!
//! - [`open`], before the first attempt leaves: the payment exists, pending,
//!   on the channel it is sent to, with the sweeper's first query scheduled.
//!   A crash after this point leaves a pending payment the sweeper asks
//!   about — never a charge nobody knows of;
//! - [`moved`], before a failover sends it to the next channel (and
//!   [`settled`], before an unknown attempt is reversed);
//! - [`close`], before the merchant gets the answer: the state the answer
//!   means (paid, declined, failed, or still pending).
//!
//! Each attempt is history ([`attempt`]), written behind without waiting.
//!
//! If the journal cannot be written when a payment opens, `[state]
//! on_unavailable` decides, as for the state store: `fail_closed` refuses
//! the payment (503 `state_unavailable`; nothing reached an acquirer),
//! `fail_open` serves it unrecorded. A close that fails (the database went
//! away mid-payment) cannot take the answer back — the acquirer has acted —
//! so it is retried in the background and counted in
//! `payroute_journal_errors_total`.

use std::time::Duration;

use super::respond::{Answer, Ended};
use super::Payment;
use crate::config::OnUnavailable;
use crate::epay::merchant::MerchantData;
use crate::error::PaymentError;
use crate::journal::{self, Attempt, Journal, JournalError, NewPayment, Protocol, State, TransitionFacts};
use crate::outcome::{Outcome, Verdict};
use crate::snapshot::Channel;
use crate::upstream::stated;

/// Tries of a close that failed, in the background, before it is left to
/// the sweeper and a human (the payment then stays pending in the journal).
const CLOSE_TRIES: u32 = 8;

/// open: the payment, pending on `channel`, committed. `Ok(false)`: the
/// journal is down and `fail_open` lets the payment go unrecorded.
pub(super) async fn open(p: &Payment<'_>, channel: &Channel) -> Result<bool, PaymentError> {
    let req = p.req;
    let now = journal::now_ms();
    let first_query = req.snap.sweeper.query_after.first().copied().unwrap_or(Duration::ZERO);
    let (protocol, pay_type, merchant_data) = match &p.epay {
        Some(order) => (
            Protocol::Epay,
            Some(order.pay_type.clone()),
            MerchantData::of(order).to_json(),
        ),
        None => (Protocol::Http, None, "{}".into()),
    };
    let payment = NewPayment {
        trade_no: p.trade_no.clone(),
        merchant_id: req.merchant.config.id.clone(),
        order_id: p.facts.order_id.clone(),
        amount: p.facts.amount as i64,
        currency: p.facts.currency.clone(),
        pay_type,
        protocol,
        channel_id: Some(channel.config.id.clone()),
        channel_trade_no: None,
        state: State::Pending,
        expected_fee: expected_fee(channel, p.facts.amount),
        merchant_data,
        created_at_ms: now,
        next_query_at_ms: Some(now + first_query.as_millis() as i64),
    };
    match req.app.journal.open_payment(payment).await {
        Ok(_) => {
            req.app.metrics.payment_state(State::Pending);
            Ok(true)
        }
        Err(e) => {
            req.app.metrics.journal_errors.inc();
            match req.snap.state.on_unavailable {
                OnUnavailable::FailClosed => {
                    tracing::warn!(error = %e, "journal unavailable: payment refused (fail_closed)");
                    Err(PaymentError::StateUnavailable)
                }
                OnUnavailable::FailOpen => {
                    tracing::warn!(error = %e, "journal unavailable: payment served unrecorded (fail_open)");
                    Ok(false)
                }
            }
        }
    }
}

/// moved: the payment is now tried on `channel`; whether it may be.
/// `false`: the journal has settled the payment meanwhile (a notification
/// or the sweeper decided the attempt just given up on), so the attempt
/// decided it and the payment must go nowhere else — the move is a
/// compare-and-set on `pending`. A journal that cannot be written changes
/// nothing here (logged and counted; the failover goes on, as before).
pub(super) async fn moved(p: &Payment<'_>, channel: &Channel) -> bool {
    let journal = &p.req.app.journal;
    match journal
        .set_channel(&p.trade_no, channel.config.id.clone(), journal::now_ms())
        .await
    {
        Ok(still_pending) => still_pending,
        Err(e) => {
            p.req.app.metrics.journal_errors.inc();
            tracing::warn!(error = %e, trade_no = %p.trade_no, "journal: cannot record the failover");
            true
        }
    }
}

/// settled: whether the journal already holds the payment decided (a
/// notification or the sweeper settled it while its attempt ran). A
/// payment served unrecorded, or a journal that cannot be read, counts as
/// undecided: the caller goes on as it would without a journal.
pub(super) async fn settled(p: &Payment<'_>) -> bool {
    match p.req.app.journal.payment_row(&p.trade_no).await {
        Ok(row) => row.is_some_and(|row| row.state != State::Pending),
        Err(e) => {
            p.req.app.metrics.journal_errors.inc();
            tracing::warn!(error = %e, trade_no = %p.trade_no, "journal: cannot read whether the payment is settled");
            false
        }
    }
}

/// attempt: one attempt, as history.
pub(super) fn attempt(p: &Payment<'_>, channel: &Channel, v: Verdict, elapsed: Duration) {
    p.req.app.journal.record_attempt(Attempt {
        trade_no: p.trade_no.clone(),
        channel: channel.config.id.clone(),
        result: Verdict::RESULTS[v.result()].into(),
        latency_ms: elapsed.as_millis() as i64,
        at_ms: journal::now_ms(),
    });
}

/// The state an ended payment is in, as the journal records it. `None`:
/// the ending is not a payment of its own (a replay).
pub(super) fn state_of(ended: &Ended) -> Option<State> {
    match &ended.answer {
        Answer::Acquirer { outcome, .. } => Some(match outcome {
            Outcome::Success => State::Paid,
            Outcome::Decline => State::Declined,
            Outcome::Pending => State::Pending,
            // A 5xx passed on as the answer (failover_on without 5xx).
            _ => State::Failed,
        }),
        // An attempt nothing could resolve: it may yet be charged.
        Answer::Error(_) if ended.trail.unresolved => Some(State::Pending),
        Answer::Error(_) => Some(State::Failed),
        Answer::Replay { .. } => None,
    }
}

/// close: the state the answer means, committed before the merchant has it.
pub(super) async fn close(p: &Payment<'_>, ended: &Ended) {
    let Some(state) = state_of(ended) else {
        return;
    };
    if !ended.trail.journaled || state == State::Pending {
        // Still pending: the record opened by `open` says so already.
        return;
    }
    let facts = facts_of(p, ended);
    let app = p.req.app;
    if p.epay.is_some() && state == State::Paid {
        // An epay merchant learns "paid" only by its notification: the move
        // that queues it is the one every later payment takes.
        return close_paid_epay(p, facts).await;
    }
    match app.journal.transition(&p.trade_no, state, facts.clone(), None).await {
        Ok(journal::Moved::Applied { .. }) => app.metrics.payment_state(state),
        Ok(moved) => tracing::debug!(trade_no = %p.trade_no, ?moved, "journal: close changed nothing"),
        Err(e) => {
            app.metrics.journal_errors.inc();
            tracing::error!(error = %e, trade_no = %p.trade_no, %state, "journal: cannot record the payment's end yet; retrying in the background");
            retry_close(
                app.journal.clone(),
                p.trade_no.clone(),
                state,
                facts,
                app.metrics.journal_errors.clone(),
            );
        }
    }
}

/// close, for an epay payment found paid while it ran (its ambiguous
/// creation's order query said so): moved with its merchant's notification.
async fn close_paid_epay(p: &Payment<'_>, facts: TransitionFacts) {
    let app = p.req.app;
    let payment = match app.journal.payment_row(&p.trade_no).await {
        Ok(Some(payment)) => payment,
        Ok(None) => return,
        Err(e) => {
            app.metrics.journal_errors.inc();
            tracing::error!(error = %e, trade_no = %p.trade_no, "journal: cannot record the epay payment paid; the sweeper will find it");
            return;
        }
    };
    if let Err(e) = crate::lifecycle::move_payment(app, &payment, State::Paid, facts).await {
        app.metrics.journal_errors.inc();
        tracing::error!(error = %e, trade_no = %p.trade_no, "journal: cannot record the epay payment paid; the sweeper will find it");
    }
}

/// What the journal learns with the final state: the deciding channel, its
/// own trade number (where its outcome rule says), and the fee expected there.
fn facts_of(p: &Payment<'_>, ended: &Ended) -> TransitionFacts {
    let mut facts = TransitionFacts {
        at_ms: journal::now_ms(),
        ..TransitionFacts::default()
    };
    if let Answer::Acquirer { channel, body, .. } = &ended.answer {
        if let Some(ch) = p.req.snap.channels.iter().find(|c| c.config.id == *channel) {
            facts.channel_trade_no = ch
                .config
                .outcome
                .as_deref()
                .and_then(|rule| stated::channel_trade_no(rule, body));
            facts.expected_fee = Some(expected_fee(ch, p.facts.amount));
        }
        facts.channel = Some(channel.clone());
    }
    facts
}

fn retry_close(
    journal: Journal,
    trade_no: String,
    state: State,
    facts: TransitionFacts,
    errors: prometheus::IntCounter,
) {
    tokio::spawn(async move {
        let mut delay = Duration::from_millis(250);
        for _ in 0..CLOSE_TRIES {
            tokio::time::sleep(delay).await;
            match journal.transition(&trade_no, state, facts.clone(), None).await {
                Ok(_) => return,
                Err(JournalError::Unavailable(_)) | Err(JournalError::Closed) => errors.inc(),
                Err(e) => {
                    errors.inc();
                    tracing::error!(error = %e, %trade_no, "journal refused the payment's end");
                    return;
                }
            }
            delay = (delay * 2).min(Duration::from_secs(30));
        }
        tracing::error!(%trade_no, %state, "journal: the payment's end was not recorded; it stays pending for the sweeper");
    });
}

/// The channel's fee for `amount`, in minor units (rounded half up).
fn expected_fee(channel: &Channel, amount: u64) -> i64 {
    channel.config.fee(amount).round() as i64
}

/// Whether the payment counts against the merchant's daily limit: paid, or
/// possibly paid (pending). The reservation is kept for those.
pub(super) fn counts_as_taken(ended: &Ended) -> bool {
    matches!(state_of(ended), Some(State::Paid | State::Pending))
}
