//! What a merchant is told when a payment's state changes after its answer:
//! the outbox event, built at the moment of the move so it is committed
//! with it (`Journal::transition` takes it).
//!
//! The body is fixed when the event is made and never rebuilt, so a repeat
//! (a retry, a re-send by hand) carries the same `event_id` and the same
//! facts, and the merchant can drop it. The signature is made when sending
//! (it carries the time), with the merchant's `notify_secret` as configured
//! then.

use std::time::Duration;

use serde::Serialize;

use crate::config::MerchantConfig;
use crate::epay::merchant::{self, MerchantData};
use crate::journal::{self, NewEvent, Payment, Protocol, State};
use crate::snapshot::Snapshot;

/// The `kind` of an event for a JSON merchant.
pub(crate) const JSON: &str = "json";
/// The `kind` of an event for an epay merchant: `GET target?body&sign=…`,
/// the body being the unsigned parameters, URL-encoded.
pub(crate) const EPAY: &str = "epay";

#[derive(Serialize)]
struct Body<'a> {
    event_id: &'a str,
    trade_no: &'a str,
    order_id: &'a str,
    state: State,
    amount: i64,
    currency: &'a str,
    channel: Option<&'a str>,
    /// When the state changed, RFC 3339 in UTC.
    at: String,
}

/// The event telling `merchant` that `payment` is now `state`, first sent
/// `first_try` from now. `None`: the merchant has no `notify_url`.
pub(crate) fn for_json_merchant(
    merchant: &MerchantConfig,
    payment: &Payment,
    state: State,
    first_try: Duration,
    now_ms: i64,
) -> Option<NewEvent> {
    let notify = merchant.notify()?;
    let event_id = journal::new_event_id();
    let body = Body {
        event_id: &event_id,
        trade_no: &payment.trade_no,
        order_id: &payment.order_id,
        state,
        amount: payment.amount,
        currency: &payment.currency,
        channel: payment.channel_id.as_deref(),
        at: rfc3339(now_ms),
    };
    let body = serde_json::to_string(&body).ok()?;
    Some(NewEvent {
        event_id,
        merchant_id: merchant.id.clone(),
        kind: JSON.into(),
        target: notify.url.to_string(),
        method: "POST".into(),
        body,
        next_at_ms: now_ms + first_try.as_millis() as i64,
    })
}

/// The event telling an epay merchant that `payment` is paid, as epay
/// gateways tell it: `GET notify_url` with `pid`, `trade_no` (payroute's),
/// `out_trade_no`, `type`, `name`, `money` (the merchant's own string),
/// `trade_status=TRADE_SUCCESS` and `param`; signed with the merchant's
/// `epay_key` when sent. epay notifies successes only: `None` for any other
/// state, and for a payment without its epay data.
pub(crate) fn for_epay_merchant(payment: &Payment, state: State, first_try: Duration, now_ms: i64) -> Option<NewEvent> {
    if state != State::Paid {
        return None;
    }
    let data = MerchantData::from_json(&payment.merchant_data)?;
    let params = merchant::result_params(
        &payment.merchant_id,
        &payment.trade_no,
        &payment.order_id,
        payment.pay_type.as_deref().unwrap_or(""),
        &data,
        "TRADE_SUCCESS",
    );
    Some(NewEvent {
        event_id: journal::new_event_id(),
        merchant_id: payment.merchant_id.as_str().into(),
        kind: EPAY.into(),
        target: data.notify_url,
        method: "GET".into(),
        body: params.encode(),
        next_at_ms: now_ms + first_try.as_millis() as i64,
    })
}

/// The event telling `payment`'s merchant, as configured in `snap`, that it
/// is now `state`, first sent `[notify] retry_ms[0]` from `now_ms`. `None`:
/// nobody to tell (the merchant left the config, has no `notify_url`, or is
/// an epay merchant and the payment is not paid).
pub(crate) fn for_payment(snap: &Snapshot, payment: &Payment, state: State, now_ms: i64) -> Option<NewEvent> {
    let merchant = snap.merchant(&payment.merchant_id)?;
    let first_try = snap.notify.retry.first().copied().unwrap_or(Duration::ZERO);
    match payment.protocol {
        Protocol::Http => for_json_merchant(&merchant.config, payment, state, first_try, now_ms),
        Protocol::Epay => for_epay_merchant(payment, state, first_try, now_ms),
    }
}

/// Unix milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub(crate) fn rfc3339(ms: i64) -> String {
    const UTC_MILLIS: &[time::format_description::BorrowedFormatItem<'_>] =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    format_at(ms, time::UtcOffset::UTC, UTC_MILLIS)
}

/// Unix milliseconds as wall-clock time at `offset`, in `format`; a time
/// out of the calendar's range (never a payment's) is written as the epoch.
pub(crate) fn format_at(
    ms: i64,
    offset: time::UtcOffset,
    format: &[time::format_description::BorrowedFormatItem<'_>],
) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .to_offset(offset);
    at.format(format).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_449_599_123), "2026-11-23T15:59:59.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn an_event_names_the_payment_and_only_merchants_with_a_url_get_one() {
        let text = "[[channel]]\nid = \"a\"\nurl = \"http://127.0.0.1:1\"\n\
                    [[merchant]]\nid = \"m-1\"\nnotify_url = \"http://127.0.0.1:7/hook\"\nnotify_secret = \"s\"\n\
                    [[merchant]]\nid = \"m-2\"\n";
        let c = Config::parse(text, "t.toml".as_ref()).unwrap();
        let payment = Payment {
            trade_no: "T1".into(),
            merchant_id: "m-1".into(),
            order_id: "o-1".into(),
            amount: 1250,
            currency: "CNY".into(),
            pay_type: None,
            protocol: Protocol::Http,
            channel_id: Some("a".into()),
            channel_trade_no: None,
            state: State::Pending,
            expected_fee: 0,
            refunded_amount: 0,
            refund_held: 0,
            merchant_data: "{}".into(),
            created_at_ms: 0,
            updated_at_ms: 0,
            next_query_at_ms: None,
            query_count: 0,
        };
        let e = for_json_merchant(&c.merchants[0], &payment, State::Paid, Duration::ZERO, 1_000).unwrap();
        assert_eq!(
            (e.kind.as_str(), e.method.as_str(), e.next_at_ms),
            ("json", "POST", 1_000)
        );
        assert_eq!(e.target, "http://127.0.0.1:7/hook");
        let body: serde_json::Value = serde_json::from_str(&e.body).unwrap();
        assert_eq!(body["event_id"], e.event_id.as_str());
        assert_eq!(
            (body["trade_no"].as_str(), body["state"].as_str()),
            (Some("T1"), Some("paid"))
        );
        assert_eq!(
            (body["amount"].as_i64(), body["channel"].as_str()),
            (Some(1250), Some("a"))
        );
        assert!(for_json_merchant(&c.merchants[1], &payment, State::Paid, Duration::ZERO, 0).is_none());

        let epay = Payment {
            protocol: Protocol::Epay,
            order_id: "shop-1".into(),
            pay_type: Some("alipay".into()),
            merchant_data:
                r#"{"notify_url":"http://shop/n.php","name":"VIP","money":"12.5","param":"x","device":"pc"}"#.into(),
            ..payment
        };
        let e = for_epay_merchant(&epay, State::Paid, Duration::ZERO, 5).unwrap();
        assert_eq!((e.kind.as_str(), e.method.as_str()), ("epay", "GET"));
        assert_eq!(e.target, "http://shop/n.php");
        let p = crate::epay::form::Params::parse(e.body.as_bytes()).unwrap();
        assert_eq!(
            (p.get("trade_no"), p.get("out_trade_no"), p.get("money")),
            (Some("T1"), Some("shop-1"), Some("12.5"))
        );
        assert_eq!(
            (p.get("trade_status"), p.get("param")),
            (Some("TRADE_SUCCESS"), Some("x"))
        );
        assert_eq!(p.get("sign"), None, "signed when sent");
        for state in [State::Declined, State::Closed, State::Refunded] {
            assert!(for_epay_merchant(&epay, state, Duration::ZERO, 5).is_none(), "{state}");
        }
    }
}
