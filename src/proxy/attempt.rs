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
//! - a connect failure sent nothing, so it is never ambiguous;
//! - a failover is a compare-and-set on the journal's `pending`
//!   ([`ledger::moved`]): a payment a notification or the sweeper settled
//!   while its last attempt was being resolved goes nowhere else — and is
//!   not reversed either ([`ledger::settled`]): what settled it is its fate.
//!
//! An epay channel ([`Reading::Epay`]) is judged the same way, by what its
//! `mapi.php` answer states whatever the HTTP status: `code` 1 with a pay
//! link is an order made — the payment is `pending` until its buyer pays,
//! and the merchant gets payroute's own answer with that link (never a
//! second one: the payment ends there); any other `code` is a stated
//! refusal, nothing was made, so it fails over like a connect failure; an
//! answer that is not epay's (or a timeout, a 5xx) is ambiguous and asked
//! about with the gateway's `api.php?act=order` before anything else.
//!
//! [`send`] and [`answer`] are shared with follow-ups.

use std::time::{Duration, Instant};

use super::ledger;
use super::respond::{Answer, Ended, Trail};
use super::{Inbound, Payment};
use crate::config::{ChannelConfig, EpayChannel, FailoverOn, OutcomeRule};
use crate::epay::gateway::{self, Creation};
use crate::epay::merchant;
use crate::error::PaymentError;
use crate::outcome::{Failure, Outcome, Verdict};
use crate::routing::breaker::Ticket;
use crate::routing::{ChannelLive, Ranked};
use crate::snapshot::{Channel, Snapshot};
use crate::state::{CapCheck, CapHold, Capped};
use crate::upstream::ambiguity::{self, Resolution, Subject};
use crate::upstream::client::AttemptResult;
use crate::upstream::forward;
use crate::upstream::stated::{self, Stated};

/// attempts: ( pick → send → verdict → [resolve_ambiguity] )*, until an
/// answer, a failure that may not fail over, or no channel, attempt or time
/// is left.
pub(super) async fn attempts(p: &Payment<'_>, ranked: &Ranked) -> Ended {
    let snap = p.req.snap;
    let deadline = Instant::now() + snap.server.deadline;
    let mut trail = Trail {
        trade_no: Some(p.trade_no.clone()),
        route: Some(ranked.route),
        ..Trail::default()
    };
    // What the merchant gets when no attempt ends the payment.
    let mut last_error = PaymentError::NoChannelAvailable;
    // Counted once the next channel is really tried.
    let mut failing_over: Option<(&Channel, Failure)> = None;
    for &idx in &ranked.order {
        if trail.attempts as usize == snap.routing.max_attempts {
            break;
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            last_error = PaymentError::UpstreamTimeout;
            break;
        }
        // pick: the channel may have filled up, been ejected or reached its
        // daily cap (here or on another instance) since rank.
        let channel = &snap.channels[idx];
        let now = Instant::now();
        let Some(ticket) = channel.live.breaker.admit(now) else {
            continue;
        };
        let Some(_slot) = channel.live.try_enter(channel.config.max_in_flight) else {
            continue;
        };
        let Ok(cap) = hold_cap(p, channel).await else {
            continue;
        };
        // The journal knows where the payment is before it leaves.
        if trail.attempts == 0 {
            channel.live.record_pick(now);
            match ledger::open(p, channel).await {
                Ok(journaled) => trail.journaled = journaled,
                Err(e) => return trail.end(Answer::Error(e)),
            }
        } else if trail.journaled && !ledger::moved(p, channel).await {
            // A notification (or the sweeper) settled the payment while its
            // last attempt was being resolved: that acquirer decided it, and
            // a second channel would charge what the journal already counts
            // (or has declined) on the first. It stops here, as an
            // unresolved attempt does: the journal keeps its state, and the
            // merchant hears it from the event that move queued.
            if let Some(hold) = cap {
                p.req.app.store.end_cap(hold, false).await;
            }
            trail.unresolved = true;
            break;
        }
        if let Some((from, failure)) = failing_over.take() {
            from.metrics.failover(failure);
        }
        trail.attempts += 1;

        let sent = match (&channel.config.epay, &p.epay) {
            (Some(account), Some(order)) => send_epay(p, channel, account, order, remaining).await,
            (None, None) => send(p.req, channel, remaining, Some(&p.trade_no)).await,
            // rank keeps protocols apart; should it ever not, nothing is sent.
            _ => Err(PaymentError::NoEligibleChannel),
        };
        let sent = match sent {
            Ok(sent) => sent,
            Err(e) => return trail.end(Answer::Error(e)),
        };
        let reading = Reading::of(&channel.config);
        let v = verdict(&sent.result, snap.routing.failover_on, reading);
        // Kept for a repeat unless every channel is known to hold nothing of it.
        trail.reached_acquirer |= !matches!(v, Verdict::Failed { failure, .. } if failure.nothing_held());
        record(p, channel, snap, ticket, v, sent.elapsed);
        if let Some(hold) = cap {
            end_cap(p, channel, hold, v).await;
        }
        if trail.journaled {
            ledger::attempt(p, channel, v, sent.elapsed);
        }
        let Verdict::Failed { failure, fail_over } = v else {
            // A success, a decline, a pending payment or a 5xx passed on: the acquirer decided.
            let answer = match reading {
                Reading::Epay => epay_answer(p, channel, &sent.result),
                _ => answer(sent.result, channel, v),
            };
            return trail.end(answer);
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

/// A channel's `daily_cap` has no room for the payment (or cannot be
/// checked: the shared state is down): the channel is skipped.
struct CapFull;

/// pick, for a channel with a `daily_cap`: holds the payment's amount on
/// the channel's day (see `state::cap`).
async fn hold_cap(p: &Payment<'_>, channel: &Channel) -> Result<Option<CapHold>, CapFull> {
    let Some(cap) = channel.config.policy.daily_cap else {
        return Ok(None);
    };
    let day = ChannelLive::day_of(&channel.config, crate::journal::now_ms());
    let check = CapCheck {
        channel: &channel.config.id,
        day,
        amount: p.facts.amount,
        cap,
        day_ends: channel.config.day_cut.day_ends(day),
    };
    match p.req.app.store.reserve_cap(check).await {
        Ok(Capped::Held(hold, used)) => {
            channel.live.note_day_used(day, used);
            Ok(Some(hold))
        }
        Ok(Capped::Full(used)) => {
            channel.live.note_day_used(day, used);
            Err(CapFull)
        }
        Err(e) => {
            tracing::debug!(channel = %channel.config.id, error = %e, "daily cap cannot be checked: channel skipped");
            Err(CapFull)
        }
    }
}

/// Keeps the cap's hold when the channel may have taken the money (paid,
/// pending, ambiguous), releases it when it certainly did not.
async fn end_cap(p: &Payment<'_>, channel: &Channel, hold: CapHold, v: Verdict) {
    let taken = match v {
        Verdict::Decline => false,
        Verdict::Failed { failure, .. } => !failure.nothing_held(),
        Verdict::Success | Verdict::Pending | Verdict::PassFailure => true,
    };
    if let Some(used) = p.req.app.store.end_cap(hold, taken).await {
        let day = ChannelLive::day_of(&channel.config, crate::journal::now_ms());
        channel.live.note_day_used(day, used);
    }
}

/// How a channel states what an attempt did.
#[derive(Debug, Clone, Copy)]
pub(super) enum Reading<'a> {
    /// By the HTTP status.
    Status,
    /// A 2xx by what its body states (`[channel.outcome]`).
    Rule(&'a OutcomeRule),
    /// An epay gateway: by `code` in its body, whatever the status.
    Epay,
}

impl Reading<'_> {
    pub fn of(config: &ChannelConfig) -> Reading<'_> {
        match (&config.epay, config.outcome.as_deref()) {
            (Some(_), _) => Reading::Epay,
            (None, Some(rule)) => Reading::Rule(rule),
            (None, None) => Reading::Status,
        }
    }
}

/// verdict: what an attempt's result means for the payment. The one place
/// that decides it. `reading` is how the channel states it: by status, by
/// its `[channel.outcome]` (a 2xx is what its body states), or as an epay
/// gateway (see the module doc).
pub(super) fn verdict(result: &AttemptResult, policy: FailoverOn, reading: Reading<'_>) -> Verdict {
    let rule = match reading {
        Reading::Rule(rule) => Some(rule),
        Reading::Status | Reading::Epay => None,
    };
    match result {
        AttemptResult::Answered { status, body, .. } if matches!(reading, Reading::Epay) => {
            match gateway::read_creation(body) {
                Creation::Created(_) => Verdict::Pending,
                Creation::Refused(_) => Verdict::Failed {
                    failure: Failure::Refused,
                    fail_over: true,
                },
                Creation::Unreadable if status.is_server_error() => Verdict::Failed {
                    failure: Failure::Upstream5xx,
                    fail_over: policy.status_5xx,
                },
                Creation::Unreadable => Verdict::Failed {
                    failure: Failure::Unstated,
                    fail_over: policy.status_5xx,
                },
            }
        }
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
        amount: Some(p.facts.amount),
    };
    // An endpoint naming the order id alone could be about another payment
    // under the same order id on this channel: then it is not used.
    let shared = crate::lifecycle::order_shared(req.app, &channel.config, &p.facts.order_id, &p.trade_no).await;
    let ask = !(shared && channel.config.query.as_ref().is_some_and(ambiguity::by_order_only));
    let resolution = if ask {
        ambiguity::query(&channel.config, &channel.upstream, subject, req.request_id, budget).await
    } else {
        tracing::warn!(request_id = ?req.request_id, channel = %id, trade_no = %p.trade_no, "query not sent: another payment uses this order id on the channel, and the query names the order id alone");
        Resolution::Unknown
    };
    match resolution {
        Resolution::Paid { status, headers, body } => {
            tracing::info!(request_id = ?req.request_id, channel = %id, "query: the ambiguous attempt was paid; no failover");
            trail.ambiguous(id);
            if channel.config.is_epay() {
                // The merchant hears payroute's epay answer, and its notification.
                return Resolved::Paid(epay_json(Outcome::Success, merchant::already_paid(&p.trade_no), id));
            }
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
            let Some(reversal) = &channel.config.reversal else {
                return Resolved::Unresolved;
            };
            if shared && ambiguity::by_order_only(reversal) {
                tracing::warn!(request_id = ?req.request_id, channel = %id, trade_no = %p.trade_no, "reversal not sent: another payment uses this order id on the channel, and the reversal names the order id alone");
                return Resolved::Unresolved;
            }
            if ledger::settled(p).await {
                // The acquirer's own notification decided it while the
                // attempt ran: that is the payment's fate; undoing it would
                // tell the merchant "paid" and then "reversed".
                tracing::info!(request_id = ?req.request_id, channel = %id, trade_no = %p.trade_no, "query unanswered, but a notification has settled the payment: not reversed");
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
                crate::lifecycle::may_name(req.app, &channel.config, &p.facts.order_id, &p.trade_no),
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

/// send (epay): `{url}mapi.php` with payroute's own signed form for the
/// merchant's order — payroute's trade number as `out_trade_no`, its `pid`
/// and key at this channel, its notify and return URLs — over the channel's
/// client, with the merchant's headers forwarded as for a JSON payment.
async fn send_epay(
    p: &Payment<'_>,
    channel: &Channel,
    account: &EpayChannel,
    order: &crate::epay::order::PayOrder,
    limit: Duration,
) -> Result<Sent, PaymentError> {
    let req = p.req;
    let base = req.snap.server.public_url.as_deref().unwrap_or_default();
    let id = &channel.config.id;
    // Gateways want the buyer's IP; a browser's submit.php rarely states it,
    // a reverse proxy in front of payroute does.
    let with_ip;
    let order = match (&order.clientip, forwarded_for(&req.parts.headers)) {
        (None, Some(ip)) => {
            with_ip = crate::epay::order::PayOrder {
                clientip: Some(ip),
                ..order.clone()
            };
            &with_ip
        }
        _ => order,
    };
    let form = gateway::create_form(
        &account.pid,
        account.key.expose(),
        &p.trade_no,
        order,
        &format!("{base}/notify/{id}"),
        &format!("{base}/return/{id}"),
    );
    let mut upstream_req = forward::request(
        &channel.config,
        http::Method::POST,
        "/mapi.php",
        &req.parts.headers,
        bytes::Bytes::from(form.encode()),
        req.request_id,
        Some(&p.trade_no),
    )
    .map_err(|e| PaymentError::InvalidRequest(format!("cannot forward this request: {e}")))?;
    upstream_req.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
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

/// The client's IP as a reverse proxy states it (`X-Forwarded-For`'s first
/// entry, or `X-Real-IP`), if it is one.
fn forwarded_for(headers: &http::HeaderMap) -> Option<String> {
    let first = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .and_then(|ip| ip.parse::<std::net::IpAddr>().ok())
    };
    first("x-forwarded-for")
        .or_else(|| first("x-real-ip"))
        .map(|ip| ip.to_string())
}

/// The merchant's answer for an order an epay channel made: payroute's
/// trade number and the channel's pay link, nothing of the channel's own.
fn epay_answer(p: &Payment<'_>, channel: &Channel, result: &AttemptResult) -> Answer {
    let link = match result {
        AttemptResult::Answered { body, .. } => match gateway::read_creation(body) {
            Creation::Created(created) => Some(created.link),
            _ => None,
        },
        _ => None,
    };
    match link {
        Some(link) => epay_json(
            Outcome::Pending,
            merchant::created(&p.trade_no, &link),
            &channel.config.id,
        ),
        // verdict calls only a creation Pending; kept total without a panic.
        None => Answer::Error(PaymentError::UpstreamFailed(
            "the channel's answer has no pay link".into(),
        )),
    }
}

/// payroute's own epay JSON as an acquirer's answer, so it is kept and
/// replayed like one.
fn epay_json(outcome: Outcome, body: Vec<u8>, channel: &std::sync::Arc<str>) -> Answer {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Answer::Acquirer {
        outcome,
        status: http::StatusCode::OK,
        headers,
        body: bytes::Bytes::from(body),
        channel: channel.clone(),
    }
}

/// Feeds one attempt into the channel's statistics, breaker and metrics. An
/// order an epay channel made counts neither way yet: whether it gets paid
/// decides (`routing::unpaid`).
fn record(p: &Payment<'_>, channel: &Channel, snap: &Snapshot, ticket: Ticket<'_>, v: Verdict, elapsed: Duration) {
    // A refused connection is fast; its time says nothing of the acquirer's speed.
    let connect = matches!(
        v,
        Verdict::Failed {
            failure: Failure::Connect,
            ..
        }
    );
    let now = Instant::now();
    if channel.config.is_epay() && v == Verdict::Pending {
        let due = crate::journal::now_ms() + snap.routing.unpaid_after.as_millis() as i64;
        channel
            .live
            .record_created(elapsed, &p.trade_no, due, now, &snap.routing);
    } else {
        channel
            .live
            .record(v, (!connect).then_some(elapsed), now, &snap.routing);
    }
    if let Some(time) = ticket.record(v.is_failure(), now, &snap.routing) {
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
        assert_eq!(verdict(&answered(201), ALL, Reading::Status), Verdict::Success);
        assert_eq!(verdict(&answered(402), ALL, Reading::Status), Verdict::Decline);
        assert_eq!(verdict(&answered(409), ALL, Reading::Status), Verdict::Decline);
        assert_eq!(
            verdict(&answered(503), ALL, Reading::Status),
            Verdict::Failed {
                failure: Failure::Upstream5xx,
                fail_over: true
            }
        );
        let no_5xx = FailoverOn {
            status_5xx: false,
            ..ALL
        };
        assert_eq!(verdict(&answered(500), no_5xx, Reading::Status), Verdict::PassFailure);
        assert_eq!(
            verdict(&AttemptResult::Broken("reset".into()), no_5xx, Reading::Status),
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
            verdict(&AttemptResult::TimedOut, only_connect, Reading::Status),
            Verdict::Failed {
                failure: Failure::Timeout,
                fail_over: false
            }
        );
        assert!(!Failure::Connect.ambiguous());
        assert!(Failure::Unstated.ambiguous());
        assert!(Failure::Timeout.ambiguous() && Failure::Upstream5xx.ambiguous());
    }

    fn answered_with(code: u16, body: &'static str) -> AttemptResult {
        AttemptResult::Answered {
            status: StatusCode::from_u16(code).unwrap(),
            headers: Default::default(),
            body: Bytes::from_static(body.as_bytes()),
        }
    }

    #[test]
    fn an_epay_gateway_is_judged_by_code_whatever_the_status() {
        let v = |code, body| verdict(&answered_with(code, body), ALL, Reading::Epay);
        let link = r#"{"code":1,"trade_no":"G1","payurl":"https://gw/pay/G1"}"#;
        assert_eq!(v(200, link), Verdict::Pending, "an order made: awaiting the buyer");
        let refused = Verdict::Failed {
            failure: Failure::Refused,
            fail_over: true,
        };
        assert_eq!(v(200, r#"{"code":-1,"msg":"closed"}"#), refused);
        assert_eq!(
            v(500, r#"{"code":0,"msg":"busy"}"#),
            refused,
            "a stated refusal, any status"
        );
        assert_eq!(
            v(502, "<html>bad gateway</html>"),
            Verdict::Failed {
                failure: Failure::Upstream5xx,
                fail_over: true
            }
        );
        assert_eq!(
            v(200, r#"{"code":1}"#),
            Verdict::Failed {
                failure: Failure::Unstated,
                fail_over: true
            },
            "an order without a link may exist: ambiguous"
        );
        assert_eq!(
            verdict(&AttemptResult::TimedOut, ALL, Reading::Epay),
            Verdict::Failed {
                failure: Failure::Timeout,
                fail_over: true
            }
        );
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
