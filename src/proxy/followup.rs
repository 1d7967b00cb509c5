//! Follow-ups (status, refund…): once, to the channel that served the
//! order, whatever the scores say now.
//!
//! A follow-up is an attempt with nowhere else to go, so it is built from
//! the payment's own pieces — `send`, `verdict` (with a policy that fails
//! over on nothing), the attempt metrics, `answer` and `respond` — and
//! differs only where it must: no idempotency claim, no failover, no
//! ambiguity resolution, and no effect on the channel's statistics or
//! breaker, which judge how a channel takes payments.

use super::admit::state_unavailable;
use super::attempt::{answer, send, verdict};
use super::respond::{Answer, Ended, Trail};
use super::Inbound;
use crate::config::FailoverOn;
use crate::error::PaymentError;
use crate::state::Followup;

/// A follow-up is never failed over.
const NEVER: FailoverOn = FailoverOn {
    connect: false,
    timeout: false,
    status_5xx: false,
};

/// Rate check and the order's channel, then one attempt there.
pub(super) async fn follow_up(req: &Inbound<'_>, order_id: &str) -> Result<Ended, PaymentError> {
    let cfg = &req.merchant.config;
    let rate = (cfg.rate_per_sec, cfg.burst);
    let followup = req.app.store.followup(&cfg.id, &req.merchant.limiter, rate, order_id);
    let channel_id = match followup.await.map_err(state_unavailable)? {
        Followup::Channel(id) => id,
        Followup::UnknownOrder => return Err(PaymentError::UnknownOrder),
        Followup::RateLimited(retry_after) => return Err(PaymentError::RateLimited { retry_after }),
    };
    let channel = req
        .snap
        .channels
        .iter()
        .find(|c| c.config.id == channel_id)
        .ok_or_else(|| {
            PaymentError::UpstreamFailed(format!(
                "channel {channel_id} that served this order is no longer configured"
            ))
        })?;
    let sent = send(req, channel, req.snap.server.deadline, None).await?;
    let v = verdict(&sent.result, NEVER, channel.config.outcome.as_deref());
    channel.metrics.attempt(v, sent.elapsed);
    Ok(match answer(sent.result, channel, v) {
        // Answered like a refusal: a follow-up's error names no attempts.
        Answer::Error(e) => Ended::refused(e),
        answer => Trail::single().end(answer),
    })
}
