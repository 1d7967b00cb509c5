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
//!
//! An epay channel's notification (`GET`, or a `POST` form) takes the same
//! steps; only reading it differs ([`read`]): it is verified with the MD5
//! key and `pid` of the channel its URL names, never another's, names its
//! payment by payroute's trade number (the `out_trade_no` payroute sent),
//! and matches only a payment of that channel; its `money` is compared in
//! fen (`"1"` equals `"1.00"`). The gateway is answered as epay gateways
//! expect: `success` once committed (or for a copy already taken, or a
//! signed word that is not `TRADE_SUCCESS`), `fail` for everything else —
//! a bad signature, an unknown or other channel's payment, a wrong amount —
//! so nothing is acknowledged that payroute did not take.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;

use crate::app::App;
use crate::epay::form::Params;
use crate::epay::gateway::{self, BadNotice};
use crate::error::{Body, PaymentError};
use crate::journal::{self, Accept, Moved, NotificationIn, NotifyResult, Payment, State, TransitionFacts};
use crate::notify::event;
use crate::notify::inbound::{self, Unread};
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
    let epay = snap
        .channels
        .iter()
        .any(|c| &*c.config.id == channel_id && c.config.is_epay());
    let result = handle(app, snap, channel_id, &parts, &body).await;
    if epay {
        let taken = matches!(result, Ok("accepted" | "duplicate" | "pending"));
        return text(if taken { "success" } else { "fail" });
    }
    match result {
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

/// An epay gateway's answer: the word, as text, HTTP 200.
fn text(word: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(word.as_bytes())));
    r.headers_mut()
        .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// How a notification names its payment.
enum Names {
    /// The merchant's order id, as forwarded (JSON channels).
    Order(String),
    /// payroute's trade number (epay channels).
    Trade(String),
}

/// A verified notification, whichever protocol it came in.
struct Heard {
    names: Names,
    /// Minor units, when the notification states an amount.
    amount: Option<u64>,
    stated: Stated,
    dedupe_key: String,
    /// The channel's own id for the payment, when it says.
    channel_trade_no: Option<String>,
}

/// Why a notification was not heard.
enum Unheard {
    BadSignature { hint: Option<Names> },
    Malformed(String),
}

/// 1. verified: by the channel's protocol.
fn read(channel: &Channel, parts: &http::request::Parts, body: &[u8]) -> Result<Heard, Unheard> {
    if let Some(account) = &channel.config.epay {
        // epay gateways notify by GET; a few POST a form.
        let raw = match parts.method {
            http::Method::GET | http::Method::HEAD => parts.uri.query().unwrap_or("").as_bytes(),
            _ => body,
        };
        let params = Params::parse(raw).map_err(|e| Unheard::Malformed(e.to_string()))?;
        return match gateway::read_notice(&params, &account.pid, account.key.expose()) {
            Ok(paid) => Ok(Heard {
                names: Names::Trade(paid.trade_no),
                amount: Some(paid.amount_fen),
                stated: Stated::Paid,
                dedupe_key: paid.dedupe_key,
                channel_trade_no: paid.gateway_trade_no,
            }),
            Err(BadNotice::BadSignature { trade_hint }) => Err(Unheard::BadSignature {
                hint: trade_hint.map(Names::Trade),
            }),
            Err(BadNotice::Malformed(why)) => Err(Unheard::Malformed(why)),
            // Signed, and not a payment: epay notifies successes only.
            Err(BadNotice::NotSuccess) => Ok(Heard {
                names: Names::Trade(String::new()),
                amount: None,
                stated: Stated::Pending,
                dedupe_key: String::new(),
                channel_trade_no: None,
            }),
        };
    }
    let Some(notify) = channel.config.notify.as_deref() else {
        // Unreachable: `handle` refuses such a channel first.
        return Err(Unheard::Malformed("the channel has no [channel.notify]".into()));
    };
    match inbound::read(notify, channel.config.outcome.as_deref(), &parts.headers, body) {
        Ok(r) => Ok(Heard {
            names: Names::Order(r.order_id),
            amount: r.amount,
            stated: r.stated,
            dedupe_key: r.dedupe_key,
            channel_trade_no: None,
        }),
        Err(Unread::BadSignature { order_hint }) => Err(Unheard::BadSignature {
            hint: order_hint.map(Names::Order),
        }),
        Err(Unread::Malformed(why)) => Err(Unheard::Malformed(why)),
    }
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
    if channel.config.notify.is_none() && !channel.config.is_epay() {
        // A channel without [channel.notify] sends no notifications payroute can verify.
        return Err(PaymentError::UnknownRoute.into());
    }
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
    let reading = match read(channel, parts, body) {
        Ok(r) => r,
        Err(Unheard::BadSignature { hint }) => {
            count(NotifyResult::BadSignature.as_str());
            let payment = match &hint {
                Some(names) => matched(app, channel, names, None).await.ok().flatten(),
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
        Err(Unheard::Malformed(why)) => {
            count("malformed");
            return Err(PaymentError::InvalidRequest(format!("notification: {why}")).into());
        }
    };
    if reading.stated == Stated::Pending {
        return Ok("pending");
    }

    // 2. matched
    let payment = matched(app, channel, &reading.names, reading.amount)
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
        // Answered above; kept total.
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
                if to == State::Paid {
                    crate::lifecycle::paid_on(snap, Some(channel_id), &payment.trade_no);
                }
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

/// The payment `channel` served that the notification names. By trade
/// number: that payment, if this channel holds it. By order id (two
/// merchants may use one on a channel): the one whose amount the
/// notification states, else the newest still pending, else the newest.
async fn matched(
    app: &App,
    channel: &Channel,
    names: &Names,
    amount: Option<u64>,
) -> Result<Option<Payment>, journal::JournalError> {
    let order_id = match names {
        Names::Trade(trade_no) => {
            if trade_no.is_empty() || trade_no.len() > 64 {
                return Ok(None);
            }
            let found = app.journal.payment_row(trade_no).await?;
            return Ok(found.filter(|p| p.channel_id.as_deref() == Some(&*channel.config.id)));
        }
        Names::Order(order_id) => order_id,
    };
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
    reading: &Heard,
    to: State,
) -> Result<Accept, journal::JournalError> {
    let now = journal::now_ms();
    let event = event::for_payment(snap, payment, to, now);
    let facts = TransitionFacts {
        at_ms: now,
        channel: Some(channel.config.id.clone()),
        channel_trade_no: reading.channel_trade_no.clone(),
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
