//! The payment's two meetings with the state store: `admit` before the
//! first attempt, `settle` after the last.
//!
//! Together because they are one protocol: `admit` claims the idempotency
//! key and reserves the day's amount, and the [`Claim`] it returns can only
//! be given back through `settle`, which keeps what an acquirer may have
//! seen, forgets what none did, and commits or releases the reservation.

use std::num::NonZeroU64;

use super::respond::{Answer, Ended};
use super::Payment;
use crate::error::PaymentError;
use crate::state::{Admission, Admit, Claim, DailyCheck, Settlement, StateError};

/// admit: rate, idempotency key (or a repeat's stored answer), daily
/// reservation — one atomic step in the state store. `Err`: refused, or
/// answered from the store as a replay.
pub(super) async fn admit(p: &Payment<'_>) -> Result<Claim, Ended> {
    let req = p.req;
    let cfg = &req.merchant.config;
    let admission = Admission {
        merchant: &cfg.id,
        limiter: Some(&req.merchant.limiter),
        rate_per_sec: cfg.rate_per_sec,
        burst: cfg.burst,
        key: p.key(),
        fingerprint: p.fingerprint,
        ttl: req.snap.request.idempotency_ttl,
        daily: cfg.daily_limit.map(NonZeroU64::get).map(|limit| {
            let day = cfg.day_cut.today();
            DailyCheck {
                day,
                amount: p.facts.amount,
                limit,
                day_ends: cfg.day_cut.day_ends(day),
            }
        }),
    };
    match req.app.store.admit(admission).await.map_err(state_unavailable)? {
        Admit::Started(claim) => Ok(claim),
        Admit::RateLimited(retry_after) => Err(PaymentError::RateLimited { retry_after }.into()),
        Admit::InFlight => Err(PaymentError::DuplicateInFlight.into()),
        Admit::Reused => Err(PaymentError::IdempotencyKeyReused.into()),
        Admit::DailyExceeded { used, limit } => Err(PaymentError::DailyLimitExceeded {
            amount: p.facts.amount,
            used,
            limit,
        }
        .into()),
        Admit::Finished(stored) => {
            req.app.metrics.replays.inc();
            Err(Ended::replay(stored))
        }
    }
}

/// settle: keep what an acquirer may have seen, forget what none did;
/// commit or release the reservation; remember the order's channel.
pub(super) async fn settle(p: &Payment<'_>, claim: Claim, ended: &Ended) {
    let req = p.req;
    let channel = match &ended.answer {
        Answer::Acquirer { channel, .. } => Some(channel),
        Answer::Error(_) | Answer::Replay { .. } => None,
    };
    let settlement = Settlement {
        merchant: &req.merchant.config.id,
        key: p.key(),
        fingerprint: p.fingerprint,
        ttl: req.snap.request.idempotency_ttl,
        answer: ended
            .trail
            .reached_acquirer
            .then(|| ended.stored(req.snap.state.max_answer_bytes)),
        accepted: super::ledger::counts_as_taken(ended),
        order: channel.map(|c| (p.facts.order_id.as_str(), c)),
    };
    if let Err(e) = req.app.store.settle(claim, settlement).await {
        tracing::error!(request_id = ?req.request_id, error = %e, "cannot record the payment's answer yet; retrying in the background");
    }
}

/// The store logs an outage once per episode; per request it is only debug.
pub(super) fn state_unavailable(e: StateError) -> PaymentError {
    tracing::debug!(error = %e, "shared state unavailable");
    PaymentError::StateUnavailable
}
