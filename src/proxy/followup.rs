//! Follow-ups (status, refund…): once, to the channel that served the
//! order, whatever the scores say now.
//!
//! A follow-up is an attempt with nowhere else to go, so it is built from
//! the payment's own pieces — `send`, `verdict` (with a policy that fails
//! over on nothing), the attempt metrics, `answer` and `respond` — and
//! differs only where it must: no failover, no ambiguity resolution, and no
//! effect on the channel's statistics or breaker, which judge how a channel
//! takes payments.
//!
//! A follow-up that moves money (any method but GET and HEAD: a refund, a
//! capture) is guarded like a payment:
//!
//! - an `Idempotency-Key` claims the key in the state store, with the same
//!   409 / replay / 422 answers as a payment's, so a retried refund never
//!   reaches the acquirer twice (keys share the merchant's namespace with
//!   payments', as Stripe's do: the same key on another request is 422);
//! - an amount it states (at `amount_pointer`) is held against what the
//!   payment still has, in the journal, before it is sent (a payment the
//!   journal does not hold has nothing to give) — two refunds
//!   racing can never together exceed the payment — and counted as
//!   refunded when the acquirer answers 2xx (`refunded` once in full, with
//!   the merchant's notification), released otherwise.
//!
//! Every request about a known payment carries its trade number, both ways.

use std::time::Duration;

use super::admit::state_unavailable;
use super::attempt::{answer, send, verdict, Reading};
use super::intake::{fingerprint, idempotency_key};
use super::respond::{Answer, Ended, Trail};
use super::Inbound;
use crate::config::FailoverOn;
use crate::error::PaymentError;
use crate::journal::{self, Payment, RefundHold, State, TransitionFacts};
use crate::notify::event;
use crate::payment::facts;
use crate::snapshot::Channel;
use crate::state::{Admission, Admit, Followup, Settlement};

/// A follow-up is never failed over.
const NEVER: FailoverOn = FailoverOn {
    connect: false,
    timeout: false,
    status_5xx: false,
};

/// Rate check and the order's channel, then one attempt there.
pub(super) async fn follow_up(req: &Inbound<'_>, order_id: &str) -> Result<Ended, PaymentError> {
    let moves_money = !matches!(req.parts.method, http::Method::GET | http::Method::HEAD);
    // Checked on every follow-up (two keys are refused, as on payments);
    // claimed only where money moves.
    let key = idempotency_key(&req.parts.headers)?.filter(|_| moves_money);
    let amount = if moves_money {
        facts::stated_amount(&req.body, &req.snap.request.amount_pointer)
            .map_err(|e| PaymentError::InvalidRequest(e.0))?
    } else {
        None
    };
    let channel = channel(req, order_id).await?;
    let payment = known_payment(req, order_id, moves_money).await?;
    let Some(key) = key else {
        return guarded(req, channel, payment.as_ref(), amount).await;
    };

    // Claimed like a payment: a repeat is answered from the store.
    let fingerprint = fingerprint(&req.parts, &req.body);
    let ttl = req.snap.request.idempotency_ttl;
    let cfg = &req.merchant.config;
    let admission = Admission {
        merchant: &cfg.id,
        // The rate was counted when the order was looked up.
        limiter: None,
        rate_per_sec: cfg.rate_per_sec,
        burst: cfg.burst,
        key,
        fingerprint,
        ttl,
        daily: None,
    };
    let claim = match req.app.store.admit(admission).await.map_err(state_unavailable)? {
        Admit::Started(claim) => claim,
        Admit::Finished(stored) => {
            req.app.metrics.replays.inc();
            return Ok(Ended::replay(stored));
        }
        Admit::InFlight => return Err(PaymentError::DuplicateInFlight),
        Admit::Reused => return Err(PaymentError::IdempotencyKeyReused),
        Admit::RateLimited(retry_after) => return Err(PaymentError::RateLimited { retry_after }),
        Admit::DailyExceeded { .. } => return Err(PaymentError::Internal),
    };
    let ended = match guarded(req, channel, payment.as_ref(), amount).await {
        Ok(ended) => ended,
        Err(e) => Ended::refused(e),
    };
    let settlement = Settlement {
        merchant: &cfg.id,
        key,
        fingerprint,
        ttl,
        answer: ended
            .trail
            .reached_acquirer
            .then(|| ended.stored(req.snap.state.max_answer_bytes)),
        accepted: false,
        order: None,
    };
    if let Err(e) = req.app.store.settle(claim, settlement).await {
        tracing::error!(request_id = ?req.request_id, error = %e, "cannot record the follow-up's answer yet; retrying in the background");
    }
    Ok(ended)
}

/// The channel that served `order_id` (the rate is checked on the way).
async fn channel<'s>(req: &Inbound<'s>, order_id: &str) -> Result<&'s Channel, PaymentError> {
    let cfg = &req.merchant.config;
    let rate = (cfg.rate_per_sec, cfg.burst);
    let followup = req.app.store.followup(&cfg.id, &req.merchant.limiter, rate, order_id);
    let channel_id = match followup.await.map_err(state_unavailable)? {
        Followup::Channel(id) => id,
        Followup::UnknownOrder => return Err(PaymentError::UnknownOrder),
        Followup::RateLimited(retry_after) => return Err(PaymentError::RateLimited { retry_after }),
    };
    req.snap
        .channels
        .iter()
        .find(|c| c.config.id == channel_id)
        .ok_or_else(|| {
            PaymentError::UpstreamFailed(format!(
                "channel {channel_id} that served this order is no longer configured"
            ))
        })
}

/// The journal's record of the merchant's payment under `order_id`. A
/// money-moving follow-up needs the journal (503 when it is down); a query
/// goes on without it.
async fn known_payment(req: &Inbound<'_>, order_id: &str, moves_money: bool) -> Result<Option<Payment>, PaymentError> {
    match req
        .app
        .journal
        .find_for_merchant(&req.merchant.config.id, order_id)
        .await
    {
        Ok(p) => Ok(p),
        Err(e) => {
            req.app.metrics.journal_errors.inc();
            tracing::warn!(error = %e, "journal unavailable for a follow-up");
            if moves_money {
                Err(PaymentError::StateUnavailable)
            } else {
                Ok(None)
            }
        }
    }
}

/// One attempt at `channel`, with the refund `amount` held against the
/// payment while it runs.
async fn guarded(
    req: &Inbound<'_>,
    channel: &Channel,
    payment: Option<&Payment>,
    amount: Option<u64>,
) -> Result<Ended, PaymentError> {
    let held = match (payment, amount) {
        (Some(p), Some(amount)) => Some((p, hold(req, p, amount).await?)),
        // Money moving on a payment the journal does not hold (served
        // unrecorded under `fail_open`, or by an instance with another
        // journal): nothing says what it still has, so nothing may go.
        (None, Some(amount)) => return Err(PaymentError::ExceedsPayment { amount, available: 0 }),
        _ => None,
    };
    let trade_no = payment.map(|p| p.trade_no.as_str());
    let sent = match send(req, channel, req.snap.server.deadline, trade_no).await {
        Ok(sent) => sent,
        Err(e) => {
            if let Some((p, amount)) = held {
                settle_refund(req, channel, p, amount, false).await;
            }
            return Err(e);
        }
    };
    let v = verdict(&sent.result, NEVER, Reading::of(&channel.config));
    channel.metrics.attempt(v, sent.elapsed);
    let ended = match answer(sent.result, channel, v) {
        // Answered like a refusal: a follow-up's error names no attempts.
        Answer::Error(e) => Ended::refused(e),
        answer => Trail::single().end(answer),
    };
    if let Some((p, amount)) = held {
        let accepted = matches!(&ended.answer, Answer::Acquirer { status, .. } if status.is_success());
        settle_refund(req, channel, p, amount, accepted).await;
    }
    let mut ended = ended;
    ended.trail.trade_no = trade_no.map(str::to_owned);
    Ok(ended)
}

/// Holds `amount` of the payment for a refund, or says why it cannot be.
async fn hold(req: &Inbound<'_>, p: &Payment, amount: u64) -> Result<u64, PaymentError> {
    let held = req
        .app
        .journal
        .hold_refund(&p.trade_no, amount as i64)
        .await
        .map_err(|e| {
            req.app.metrics.journal_errors.inc();
            tracing::warn!(error = %e, "journal unavailable: refund refused");
            PaymentError::StateUnavailable
        })?;
    match held {
        RefundHold::Held => Ok(amount),
        RefundHold::Exceeds { available } => Err(PaymentError::ExceedsPayment {
            amount,
            available: available.max(0) as u64,
        }),
        RefundHold::NotRefundable { .. } | RefundHold::Unknown => {
            Err(PaymentError::ExceedsPayment { amount, available: 0 })
        }
    }
}

/// Ends a held refund: refunded (with the merchant's notification) or released.
async fn settle_refund(req: &Inbound<'_>, channel: &Channel, p: &Payment, amount: u64, accepted: bool) {
    let now = journal::now_ms();
    let first_try = req.snap.notify.retry.first().copied().unwrap_or(Duration::ZERO);
    let event = accepted
        .then(|| event::for_json_merchant(&req.merchant.config, p, State::Refunded, first_try, now))
        .flatten();
    let facts = TransitionFacts {
        at_ms: now,
        channel: Some(channel.config.id.clone()),
        ..TransitionFacts::default()
    };
    let detail = if accepted {
        "acquirer accepted"
    } else {
        "acquirer refused or did not answer"
    };
    match req
        .app
        .journal
        .settle_refund(&p.trade_no, amount as i64, accepted, facts, detail.into(), event)
        .await
    {
        Ok(journal::Moved::Applied { .. }) => {
            req.app.metrics.payment_state(State::Refunded);
            req.app.outbox.ring();
        }
        // A partial refund queues its event without a move.
        Ok(_) => req.app.outbox.ring(),
        Err(e) => {
            req.app.metrics.journal_errors.inc();
            tracing::error!(error = %e, trade_no = %p.trade_no, amount, accepted, "journal: cannot settle a refund's hold");
        }
    }
}
