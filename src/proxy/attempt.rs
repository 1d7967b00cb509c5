//! The attempts, and the rules that keep a payment from being charged twice.
//!
//! At most `max_attempts` distinct channels are tried, in rank order,
//! within the payment's deadline. The whole of "never twice" on the way out
//! is in this file, and reads top to bottom:
//!
//! - [`verdict`] is the one place that says what an attempt's result means:
//!   an answer ends the payment — judged by its status, or, for a channel
//!   with `[channel.outcome]`, by what its body states (paid, pending,
//!   declined); a channel failure fails over only when `failover_on` lists
//!   it; a 2xx whose body states nothing readable is a failure of unknown
//!   fate, like a 5xx;
//! - an ambiguous failure (a timeout, a 5xx or an unreadable answer after
//!   the request was written) is settled by [`resolve_ambiguity`] before
//!   anything else is tried: paid there ends the payment as that success;
//!   never charged lets it fail over; still unknown names the channel in
//!   `X-Payroute-Ambiguous` and fails over only if a reversal is on its way
//!   — otherwise the payment stops there, `pending`, for notifications and
//!   the sweeper to settle, because a second charge elsewhere could not be
//!   undone;
//! - a connect failure sent nothing, so it is never ambiguous.
//!
//! [`send`] and [`answer`] are shared with follow-ups.

use std::time::{Duration, Instant};

use super::ledger;
use super::respond::{Answer, Ended, Trail};
use super::{Inbound, Payment};
use crate::config::{FailoverOn, OutcomeRule};
use crate::error::PaymentError;
use crate::outcome::{Failure, Outcome, Verdict};
use crate::routing::breaker::Ticket;
use crate::snapshot::{Channel, Snapshot};
use crate::upstream::ambiguity::{self, Resolution, Subject};
use crate::upstream::client::AttemptResult;
use crate::upstream::forward;
use crate::upstream::stated::{self, Stated};

/// attempts: ( pick → send → verdict → [resolve_ambiguity] )*, until an
/// answer, a failure that may not fail over, or no channel, attempt or time
/// is left.
pub(super) async fn attempts(p: &Payment<'_>, order: &[usize]) -> Ended {
    let snap = p.req.snap;
    let deadline = Instant::now() + snap.server.deadline;
    let mut trail = Trail {
        trade_no: Some(p.trade_no.clone()),
        ..Trail::default()
    };
    // What the merchant gets when no attempt ends the payment.
    let mut last_error = PaymentError::NoChannelAvailable;
    // Counted once the next channel is really tried.
    let mut failing_over: Option<(&Channel, Failure)> = None;
    for &idx in order {
        if trail.attempts as usize == snap.routing.max_attempts {
            break;
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            last_error = PaymentError::UpstreamTimeout;
            break;
        }
        // pick: the channel may have filled up or been ejected since rank.
        let channel = &snap.channels[idx];
        let Some(ticket) = channel.live.breaker.admit() else {
            continue;
        };
        let Some(_slot) = channel.live.try_enter(channel.config.max_in_flight) else {
            continue;
        };
        if let Some((from, failure)) = failing_over.take() {
            from.metrics.failover(failure);
        }
        // The journal knows where the payment is before it leaves.
        if trail.attempts == 0 {
            match ledger::open(p, channel).await {
                Ok(journaled) => trail.journaled = journaled,
                Err(e) => return trail.end(Answer::Error(e)),
            }
        } else if trail.journaled {
            ledger::moved(p, channel).await;
        }
        trail.attempts += 1;

        let sent = match send(p.req, channel, remaining, Some(&p.trade_no)).await {
            Ok(sent) => sent,
            Err(e) => return trail.end(Answer::Error(e)),
        };
        trail.reached_acquirer |= !matches!(sent.result, AttemptResult::ConnectFailed(_));
        let v = verdict(
            &sent.result,
            snap.routing.failover_on,
            channel.config.outcome.as_deref(),
        );
        record(channel, snap, ticket, v, sent.elapsed);
        if trail.journaled {
            ledger::attempt(p, channel, v, sent.elapsed);
        }
        let Verdict::Failed { failure, fail_over } = v else {
            // A success, a decline, a pending payment or a 5xx passed on: the acquirer decided.
            return trail.end(answer(sent.result, channel, v));
        };
        tracing::info!(request_id = ?p.req.request_id, channel = %channel.config.id, ?failure, detail = %sent.result, fail_over, "attempt failed");
        last_error = upstream_error(&sent.result);
        if failure.ambiguous() {
            match resolve_ambiguity(p, channel, deadline, &mut trail).await {
                Resolved::Paid(paid) => return trail.end(paid),
                Resolved::NeverCharged | Resolved::Reversing => {}
                // Nothing proves the attempt harmless: no second charge elsewhere.
                Resolved::Unresolved => {
                    trail.unresolved = true;
                    break;
                }
            }
        }
        if !fail_over {
            break;
        }
        failing_over = Some((channel, failure));
    }
    // Every attempt failed (settle releases the reservation).
    trail.end(Answer::Error(last_error))
}

/// verdict: what an attempt's result means for the payment. The one place
/// that decides it. `rule` is the channel's `[channel.outcome]`: with one, a
/// 2xx is what its body states.
pub(super) fn verdict(result: &AttemptResult, policy: FailoverOn, rule: Option<&OutcomeRule>) -> Verdict {
    match result {
        AttemptResult::Answered { status, body, .. } if status.is_success() => {
            match rule.map(|r| stated::judge(r, body)) {
                None | Some(Stated::Paid) => Verdict::Success,
                Some(Stated::Pending) => Verdict::Pending,
                Some(Stated::Declined) => Verdict::Decline,
                Some(Stated::Unstated) => Verdict::Failed {
                    failure: Failure::Unstated,
                    fail_over: policy.status_5xx,
                },
            }
        }
        AttemptResult::Answered { status, .. } if status.is_server_error() => {
            if policy.status_5xx {
                Verdict::Failed {
                    failure: Failure::Upstream5xx,
                    fail_over: true,
                }
            } else {
                Verdict::PassFailure
            }
        }
        AttemptResult::Answered { .. } => Verdict::Decline,
        AttemptResult::ConnectFailed(_) => Verdict::Failed {
            failure: Failure::Connect,
            fail_over: policy.connect,
        },
        AttemptResult::TimedOut => Verdict::Failed {
            failure: Failure::Timeout,
            fail_over: policy.timeout,
        },
        // A broken exchange is a gateway-side error after sending: a 5xx in all but status.
        AttemptResult::Broken(_) => Verdict::Failed {
            failure: Failure::Upstream5xx,
            fail_over: policy.status_5xx,
        },
    }
}

/// What [`resolve_ambiguity`] established about an ambiguous attempt.
enum Resolved {
    /// Paid there: this answer ends the payment, sent nowhere else.
    Paid(Answer),
    /// The acquirer never charged it: failing over is safe.
    NeverCharged,
    /// Unknown, and a reversal is on its way: failing over is as safe as
    /// the channel's reversal makes it (the contract's rule).
    Reversing,
    /// Unknown, and nothing can undo it: the payment must stop here.
    Unresolved,
}

/// resolve_ambiguity: was the ambiguous attempt charged there after all?
/// Asked before anything else is tried (see [`Resolved`]). Anything short
/// of an answer names the channel in `X-Payroute-Ambiguous`.
async fn resolve_ambiguity(p: &Payment<'_>, channel: &Channel, deadline: Instant, trail: &mut Trail) -> Resolved {
    let req = p.req;
    let id = &channel.config.id;
    channel.metrics.ambiguous.inc();
    let budget = deadline.saturating_duration_since(Instant::now());
    let subject = Subject {
        order_id: &p.facts.order_id,
        trade_no: &p.trade_no,
    };
    match ambiguity::query(&channel.config, &channel.upstream, subject, req.request_id, budget).await {
        Resolution::Paid { status, headers, body } => {
            tracing::info!(request_id = ?req.request_id, channel = %id, "query: the ambiguous attempt was paid; no failover");
            trail.ambiguous(id);
            Resolved::Paid(Answer::Acquirer {
                outcome: Outcome::Success,
                status,
                headers,
                body,
                channel: id.clone(),
            })
        }
        Resolution::NeverArrived | Resolution::Declined => Resolved::NeverCharged,
        // Taken and undecided there: it is this channel's payment now.
        Resolution::Pending => {
            trail.ambiguous(id);
            Resolved::Unresolved
        }
        Resolution::Unknown => {
            trail.ambiguous(id);
            if channel.config.reversal.is_none() {
                return Resolved::Unresolved;
            }
            // Its end is journaled once this payment can no longer move by itself.
            let in_flight_for = deadline.saturating_duration_since(Instant::now());
            req.app.reversals.start(
                channel.config.clone(),
                channel.upstream.clone(),
                (p.facts.order_id.clone(), p.trade_no.clone()),
                req.body.clone(),
                req.request_id.clone(),
                req.app.metrics.reversals.clone(),
                crate::lifecycle::on_reversal_end(req.app, in_flight_for),
            );
            Resolved::Reversing
        }
    }
}

/// One request to one channel, and how long it took.
pub(super) struct Sent {
    pub result: AttemptResult,
    pub elapsed: Duration,
}

/// send: the merchant's request as `channel`'s acquirer gets it, within the
/// channel's timeout and `limit`, naming the payment by `trade_no`.
pub(super) async fn send(
    req: &Inbound<'_>,
    channel: &Channel,
    limit: Duration,
    trade_no: Option<&str>,
) -> Result<Sent, PaymentError> {
    let upstream_req = forward::request(
        &channel.config,
        req.parts.method.clone(),
        req.parts.uri.path_and_query().map_or("/", |p| p.as_str()),
        &req.parts.headers,
        req.body.clone(),
        req.request_id,
        trade_no,
    )
    .map_err(|e| PaymentError::InvalidRequest(format!("cannot forward this request: {e}")))?;
    let started = Instant::now();
    let result = channel
        .upstream
        .send(upstream_req, channel.config.timeout.min(limit))
        .await;
    Ok(Sent {
        result,
        elapsed: started.elapsed(),
    })
}

/// Feeds one attempt into the channel's statistics, breaker and metrics.
fn record(channel: &Channel, snap: &Snapshot, ticket: Ticket<'_>, v: Verdict, elapsed: Duration) {
    // A refused connection is fast; its time says nothing of the acquirer's speed.
    let connect = matches!(
        v,
        Verdict::Failed {
            failure: Failure::Connect,
            ..
        }
    );
    channel.live.record(v, (!connect).then_some(elapsed), &snap.routing);
    if let Some(time) = ticket.record(v.is_failure(), &snap.routing) {
        tracing::warn!(channel = %channel.config.id, ejected_for = ?time, "channel ejected after repeated failures");
    }
    channel.metrics.attempt(v, elapsed);
}

/// How an attempt that the verdict lets end the payment ends it: an answer
/// is passed on with the verdict's outcome; a result that is no answer
/// becomes the proxy's error.
pub(super) fn answer(result: AttemptResult, channel: &Channel, v: Verdict) -> Answer {
    match result {
        AttemptResult::Answered { status, headers, body } => Answer::Acquirer {
            outcome: v.outcome(),
            status,
            headers,
            body,
            channel: channel.config.id.clone(),
        },
        failed => Answer::Error(upstream_error(&failed)),
    }
}

/// The proxy's error for a failed attempt: 504 for a timeout, else 502
/// saying what happened.
fn upstream_error(result: &AttemptResult) -> PaymentError {
    match result {
        AttemptResult::TimedOut => PaymentError::UpstreamTimeout,
        other => PaymentError::UpstreamFailed(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::StatusCode;

    const ALL: FailoverOn = FailoverOn {
        connect: true,
        timeout: true,
        status_5xx: true,
    };

    fn answered(code: u16) -> AttemptResult {
        AttemptResult::Answered {
            status: StatusCode::from_u16(code).unwrap(),
            headers: Default::default(),
            body: Bytes::new(),
        }
    }

    #[test]
    fn declines_are_final_and_failures_follow_policy() {
        assert_eq!(verdict(&answered(201), ALL, None), Verdict::Success);
        assert_eq!(verdict(&answered(402), ALL, None), Verdict::Decline);
        assert_eq!(verdict(&answered(409), ALL, None), Verdict::Decline);
        assert_eq!(
            verdict(&answered(503), ALL, None),
            Verdict::Failed {
                failure: Failure::Upstream5xx,
                fail_over: true
            }
        );
        let no_5xx = FailoverOn {
            status_5xx: false,
            ..ALL
        };
        assert_eq!(verdict(&answered(500), no_5xx, None), Verdict::PassFailure);
        assert_eq!(
            verdict(&AttemptResult::Broken("reset".into()), no_5xx, None),
            Verdict::Failed {
                failure: Failure::Upstream5xx,
                fail_over: false
            }
        );
        let only_connect = FailoverOn {
            connect: true,
            timeout: false,
            status_5xx: false,
        };
        assert_eq!(
            verdict(&AttemptResult::TimedOut, only_connect, None),
            Verdict::Failed {
                failure: Failure::Timeout,
                fail_over: false
            }
        );
        assert!(!Failure::Connect.ambiguous());
        assert!(Failure::Unstated.ambiguous());
        assert!(Failure::Timeout.ambiguous() && Failure::Upstream5xx.ambiguous());
    }

    #[test]
    fn failed_attempts_become_the_contract_errors() {
        assert_eq!(upstream_error(&AttemptResult::TimedOut), PaymentError::UpstreamTimeout);
        assert_eq!(
            upstream_error(&AttemptResult::ConnectFailed("refused".into())),
            PaymentError::UpstreamFailed("connect failed: refused".into())
        );
        assert_eq!(
            upstream_error(&answered(503)),
            PaymentError::UpstreamFailed("acquirer answered 503 Service Unavailable".into())
        );
    }
}
