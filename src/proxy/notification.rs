//! Notifications in: a channel says what happened to a payment
//! (`POST /notify/{channel_id}` on the payment listener).
//!
//! A notification goes through the same steps every time, each of which can
//! only refuse it, and nothing is acknowledged before its effect is
//! committed:
//!
//! 1. **verified** — the channel's HMAC over the raw body
//!    ([`crate::notify::inbound`]). A bad signature changes nothing and is
//!    answered 401; the payment it names is asked about instead: its next
//!    sweeper query is brought forward to now, so the channel itself says
//!    what happened, through the sweeper's bounded queries (a forger cannot
//!    make payroute flood a channel);
//! 2. **matched** to a payment this channel served (404 otherwise);
//! 3. **checked** — the amount it states equals the payment's; a mismatch
//!    changes nothing, is answered 200 (the channel would only repeat it)
//!    and counted as an anomaly (`amount_mismatch`);
//! 4. **deduplicated** and **committed** in one journal transaction with the
//!    move of state and the merchant's notification;
//! 5. then **acknowledged** (200). If the journal cannot be written, 503:
//!    the channel keeps the notification and tries again.
//!
//! A notification that states "processing" is acknowledged and changes
//! nothing; one whose outcome cannot be read is 400 (the channel's
//! problem, not a payment's).

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;

use crate::app::App;
use crate::error::{Body, PaymentError};
use crate::journal::{self, Accept, Moved, NotificationIn, NotifyResult, Payment, State, TransitionFacts};
use crate::notify::event;
use crate::notify::inbound::{self, Reading, Unread};
use crate::snapshot::{Channel, Snapshot};
use crate::upstream::stated::Stated;

/// The path prefix of notifications; the rest is the channel id.
pub(super) const PREFIX: &str = "/notify/";

/// Why a notification was not taken, as the channel is answered.
enum Refused {
    Error(PaymentError),
    /// 200, nothing changed (the channel should stop sending it).
    Ignored(&'static str),
}

impl From<PaymentError> for Refused {
    fn from(e: PaymentError) -> Refused {
        Refused::Error(e)
    }
}

/// Receives one notification for `channel_id`.
pub(super) async fn receive(
    app: &App,
    snap: &Snapshot,
    channel_id: &str,
    parts: http::request::Parts,
    body: Bytes,
) -> Response<Body> {
    match handle(app, snap, channel_id, &parts, &body).await {
        Ok(what) => ok(what),
        Err(Refused::Ignored(why)) => ok(why),
        Err(Refused::Error(e)) => e.into_response(),
    }
}

fn ok(what: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(format!(
        "{{\"received\":true,\"result\":\"{what}\"}}"
    ))));
    *r.status_mut() = StatusCode::OK;
    r.headers_mut()
        .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

async fn handle(
    app: &App,
    snap: &Snapshot,
    channel_id: &str,
    parts: &http::request::Parts,
    body: &[u8],
) -> Result<&'static str, Refused> {
    let channel = snap
        .channels
        .iter()
        .find(|c| &*c.config.id == channel_id)
        .ok_or(PaymentError::UnknownRoute)?;
    let Some(notify) = channel.config.notify.as_deref() else {
        // A channel without [channel.notify] sends no notifications payroute can verify.
        return Err(PaymentError::UnknownRoute.into());
    };
    let count = |result: &str| {
        app.metrics
            .notifications_in
            .with_label_values(&[channel_id, result])
            .inc()
    };
    let note = |trade_no: Option<String>, dedupe_key: Option<String>| NotificationIn {
        channel: channel.config.id.clone(),
        dedupe_key,
        trade_no,
        at_ms: journal::now_ms(),
    };

    // 1. verified
    let reading = match inbound::read(notify, channel.config.outcome.as_deref(), &parts.headers, body) {
        Ok(r) => r,
        Err(Unread::BadSignature { order_hint }) => {
            count(NotifyResult::BadSignature.as_str());
            let payment = match &order_hint {
                Some(order) => matched(app, channel, order, None).await.ok().flatten(),
                None => None,
            };
            app.journal.record_notification(
                note(payment.as_ref().map(|p| p.trade_no.clone()), None),
                NotifyResult::BadSignature,
            );
            if let Some(p) = payment.filter(|p| p.state == State::Pending) {
                ask_now(app, &p.trade_no).await;
            }
            return Err(PaymentError::Unauthorized("notification signature missing or wrong").into());
        }
        Err(Unread::Malformed(why)) => {
            count("malformed");
            return Err(PaymentError::InvalidRequest(format!("notification: {why}")).into());
        }
    };

    // 2. matched
    let payment = matched(app, channel, &reading.order_id, reading.amount)
        .await
        .map_err(|_| PaymentError::StateUnavailable)?;
    let Some(payment) = payment else {
        count(NotifyResult::UnknownPayment.as_str());
        app.journal.record_notification(
            note(None, Some(reading.dedupe_key.clone())),
            NotifyResult::UnknownPayment,
        );
        return Err(PaymentError::UnknownOrder.into());
    };

    // 3. checked
    if reading.amount.is_some_and(|a| a as i64 != payment.amount) {
        count(NotifyResult::AmountMismatch.as_str());
        tracing::warn!(channel = channel_id, trade_no = %payment.trade_no, "notification amount differs from the payment's: ignored");
        app.journal.record_notification(
            note(Some(payment.trade_no.clone()), Some(reading.dedupe_key.clone())),
            NotifyResult::AmountMismatch,
        );
        return Err(Refused::Ignored("amount_mismatch"));
    }
    let to = match reading.stated {
        Stated::Paid => State::Paid,
        Stated::Declined => State::Declined,
        Stated::Pending => return Ok("pending"),
        Stated::Unstated => {
            count("malformed");
            return Err(
                PaymentError::InvalidRequest("notification: no outcome the channel's rule lists".into()).into(),
            );
        }
    };

    // 4. deduplicated and committed, with the merchant's notification
    let accepted = commit(app, snap, channel, &payment, &reading, to).await.map_err(|e| {
        app.metrics.journal_errors.inc();
        tracing::warn!(error = %e, channel = channel_id, "journal unavailable: notification not taken (503, the channel will retry)");
        PaymentError::StateUnavailable
    })?;

    // 5. acknowledged
    Ok(match accepted {
        Accept::Accepted(moved) => {
            count(NotifyResult::Accepted.as_str());
            if let Moved::Applied { .. } = moved {
                app.metrics.payment_state(to);
                app.outbox.ring();
            }
            "accepted"
        }
        Accept::Duplicate => {
            count(NotifyResult::Duplicate.as_str());
            "duplicate"
        }
        Accept::UnknownPayment => {
            count(NotifyResult::UnknownPayment.as_str());
            "unknown_payment"
        }
    })
}

/// The payment `channel` served under the merchant's `order_id`. Two
/// merchants may use one order id on a channel: then the one whose amount
/// the notification states, else the newest still pending, else the newest.
async fn matched(
    app: &App,
    channel: &Channel,
    order_id: &str,
    amount: Option<u64>,
) -> Result<Option<Payment>, journal::JournalError> {
    let mut found = app.journal.find_for_channel(&channel.config.id, order_id).await?;
    if found.len() <= 1 {
        return Ok(found.pop());
    }
    let by_amount = amount.and_then(|a| found.iter().position(|p| p.amount == a as i64));
    let pending = found.iter().position(|p| p.state == State::Pending);
    let at = by_amount.or(pending).unwrap_or(0);
    Ok(Some(found.swap_remove(at)))
}

async fn commit(
    app: &App,
    snap: &Snapshot,
    channel: &Channel,
    payment: &Payment,
    reading: &Reading,
    to: State,
) -> Result<Accept, journal::JournalError> {
    let now = journal::now_ms();
    let event = event::for_payment(snap, payment, to, now);
    let facts = TransitionFacts {
        at_ms: now,
        channel: Some(channel.config.id.clone()),
        ..TransitionFacts::default()
    };
    let note = NotificationIn {
        channel: channel.config.id.clone(),
        dedupe_key: Some(reading.dedupe_key.clone()),
        trade_no: Some(payment.trade_no.clone()),
        at_ms: now,
    };
    app.journal.accept_notification(note, to, facts, event).await
}

/// Brings the payment's next sweeper query forward to now.
async fn ask_now(app: &App, trade_no: &str) {
    if let Err(e) = app.journal.reschedule(trade_no, Some(journal::now_ms())).await {
        app.metrics.journal_errors.inc();
        tracing::warn!(error = %e, trade_no, "cannot schedule a query after a bad notification");
    }
}
