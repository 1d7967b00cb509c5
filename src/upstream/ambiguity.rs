//! Asking a channel what became of a payment: after an ambiguous attempt,
//! and later by the sweeper.
//!
//! A timeout or a 5xx after the request was written leaves the payment's fate
//! unknown: the acquirer may have charged. Failing over blindly could charge
//! the customer twice, so the proxy first asks that channel (`query`): paid
//! there ends the payment as that success; never charged (a 404, or a body
//! its `[channel.outcome]` reads as declined — told apart, because the
//! sweeper records the two differently) makes failing over safe.
//! Anything else is still unknown, and the caller decides (see
//! `proxy::attempt`). A 2xx without an outcome rule counts as paid, as it
//! always has; with one, only a listed paid value does. The query is bounded
//! by the caller's budget.
//!
//! Queries and reversals name the payment by [`Subject`]: the merchant's
//! order id and payroute's trade number, either usable in the path
//! template, so that two merchants' equal order ids on one channel are
//! never confused when the template uses `{trade_no}`.
//!
//! An epay channel has no `query` template: it is asked with the gateway's
//! own `api.php?act=order` under payroute's trade number, and read strictly
//! (`epay::gateway::read_order`): `status` 1 is paid (and only if the
//! amount it states is the payment's), `code` -1 is "no such order" (never
//! charged), `status` 0 is an order that exists and may still be paid
//! (pending), anything else unknown.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};

use super::client::{AttemptResult, Upstream};
use super::forward;
use super::stated::{self, Stated};
use crate::config::{ChannelConfig, Endpoint, EpayChannel, OutcomeRule};
use crate::epay::gateway::{self, Queried};

/// Which payment a query or reversal is about.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Subject<'a> {
    /// The merchant's order id, as forwarded to the channel.
    pub order_id: &'a str,
    /// payroute's trade number.
    pub trade_no: &'a str,
    /// The payment's amount (minor units), where the answer states one to
    /// check (epay's `money`); `None`: nothing to check.
    pub amount: Option<u64>,
}

/// What the channel said about a payment.
#[derive(Debug)]
pub(crate) enum Resolution {
    /// The acquirer has the payment: its query answer ends the payment.
    Paid {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    },
    /// The acquirer never had it (404): failing over is safe.
    NeverArrived,
    /// The acquirer has it and states it declined (its outcome rule's
    /// `declined`): nothing was charged, failing over is as safe as after a
    /// 404, but the sweeper records a decline, not a payment nobody took.
    Declined,
    /// The acquirer has it and has not decided yet (a listed pending value).
    Pending,
    /// Still unknown (no query, or no clear answer).
    Unknown,
}

/// Asks the channel's `query` endpoint about `subject`, within `budget`.
pub(crate) async fn query(
    channel: &ChannelConfig,
    upstream: &Upstream,
    subject: Subject<'_>,
    request_id: &HeaderValue,
    budget: Duration,
) -> Resolution {
    if let Some(epay) = &channel.epay {
        return epay_query(channel, epay, upstream, subject, request_id, budget).await;
    }
    let Some(endpoint) = &channel.query else {
        return Resolution::Unknown;
    };
    if budget.is_zero() {
        return Resolution::Unknown;
    }
    let Ok(req) = endpoint_request(channel, endpoint, subject, Bytes::new(), request_id) else {
        return Resolution::Unknown;
    };
    let result = upstream.send(req, channel.timeout.min(budget)).await;
    let resolution = read(channel.outcome.as_deref(), result);
    if matches!(resolution, Resolution::Unknown) {
        tracing::warn!(channel = %channel.id, order_id = %crate::redact::mask_pans(subject.order_id), trade_no = subject.trade_no, "query left the payment's fate unknown");
    }
    resolution
}

/// `api.php?act=order` for the payment's trade number (payroute's
/// `out_trade_no` at the gateway). The request carries the channel's key in
/// its query, as epay's API wants: it is never logged.
async fn epay_query(
    channel: &ChannelConfig,
    epay: &EpayChannel,
    upstream: &Upstream,
    subject: Subject<'_>,
    request_id: &HeaderValue,
    budget: Duration,
) -> Resolution {
    if budget.is_zero() {
        return Resolution::Unknown;
    }
    let path = format!(
        "/api.php?{}",
        gateway::order_query(&epay.pid, epay.key.expose(), subject.trade_no)
    );
    let Ok(req) = forward::request(
        channel,
        http::Method::GET,
        &path,
        &HeaderMap::new(),
        Bytes::new(),
        request_id,
        Some(subject.trade_no),
    ) else {
        return Resolution::Unknown;
    };
    let result = upstream.send(req, channel.timeout.min(budget)).await;
    let resolution = read_epay(result, subject.amount);
    if matches!(resolution, Resolution::Unknown) {
        tracing::warn!(channel = %channel.id, trade_no = subject.trade_no, "epay order query left the payment's fate unknown");
    }
    resolution
}

/// What an epay order answer means (any HTTP status: epay answers 200 and
/// states the outcome in `code`).
fn read_epay(result: AttemptResult, amount: Option<u64>) -> Resolution {
    let AttemptResult::Answered { status, headers, body } = result else {
        return Resolution::Unknown;
    };
    match gateway::read_order(&body) {
        Queried::Paid { amount_fen } => {
            if let (Some(paid), Some(expected)) = (amount_fen, amount) {
                if paid != expected {
                    // Paid, but not this payment's amount: an anomaly for a human, not a move.
                    tracing::warn!(
                        paid,
                        expected,
                        "epay order query: paid amount differs from the payment's"
                    );
                    return Resolution::Unknown;
                }
            }
            Resolution::Paid { status, headers, body }
        }
        Queried::NoOrder => Resolution::NeverArrived,
        Queried::Unpaid => Resolution::Pending,
        Queried::Unknown => Resolution::Unknown,
    }
}

/// The channel's own id for the payment in a paid query answer: an epay
/// gateway's `trade_no`, or where the channel's outcome rule points.
pub(crate) fn channel_trade_no(channel: &ChannelConfig, body: &[u8]) -> Option<String> {
    if channel.is_epay() {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        return stated::scalar_text(v.get("trade_no")?).filter(|t| !t.is_empty());
    }
    channel
        .outcome
        .as_deref()
        .and_then(|rule| stated::channel_trade_no(rule, body))
}

/// What a query's answer means, by the channel's outcome rule if it has one.
fn read(rule: Option<&OutcomeRule>, result: AttemptResult) -> Resolution {
    match result {
        AttemptResult::Answered { status, .. } if status == StatusCode::NOT_FOUND => Resolution::NeverArrived,
        AttemptResult::Answered { status, headers, body } if status.is_success() => {
            match rule.map_or(Stated::Paid, |r| stated::judge(r, &body)) {
                Stated::Paid => Resolution::Paid { status, headers, body },
                Stated::Declined => Resolution::Declined,
                Stated::Pending => Resolution::Pending,
                Stated::Unstated => Resolution::Unknown,
            }
        }
        _ => Resolution::Unknown,
    }
}

/// The request for a query or reversal endpoint: the channel's headers, the
/// order id and trade number filled into the path template.
pub(crate) fn endpoint_request(
    channel: &ChannelConfig,
    endpoint: &Endpoint,
    subject: Subject<'_>,
    body: Bytes,
    request_id: &HeaderValue,
) -> Result<http::Request<crate::error::Body>, http::Error> {
    let path = endpoint
        .path
        .replace("{order_id}", &percent_encode(subject.order_id))
        .replace("{trade_no}", &percent_encode(subject.trade_no));
    let mut headers = HeaderMap::new();
    if !body.is_empty() {
        headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    forward::request(
        channel,
        endpoint.method.clone(),
        &path,
        &headers,
        body,
        request_id,
        Some(subject.trade_no),
    )
}

/// Does `endpoint` name the payment by the merchant's order id alone? Two
/// merchants (or two keys of one) may use one order id on a channel, so such
/// an endpoint is used only while no other payment shares the order id
/// there (`lifecycle::order_shared`); `{trade_no}` names this payment only.
pub(crate) fn by_order_only(endpoint: &Endpoint) -> bool {
    !endpoint.path.contains("{trade_no}")
}

/// Everything but RFC 3986 unreserved characters is %-encoded.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(status: u16, body: &'static str) -> AttemptResult {
        AttemptResult::Answered {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderMap::new(),
            body: Bytes::from_static(body.as_bytes()),
        }
    }

    #[test]
    fn query_answers_are_read_by_status_or_by_the_outcome_rule() {
        let rule = OutcomeRule {
            pointer: "/status".into(),
            paid: vec!["paid".into()],
            pending: vec!["processing".into()],
            declined: vec!["failed".into()],
            trade_no_pointer: None,
        };
        let r = |rule, status, body| read(rule, answered(status, body));
        assert!(matches!(r(None, 200, "{}"), Resolution::Paid { .. }));
        assert!(matches!(r(None, 404, ""), Resolution::NeverArrived));
        assert!(matches!(r(None, 500, ""), Resolution::Unknown));
        assert!(matches!(
            r(Some(&rule), 200, r#"{"status":"paid"}"#),
            Resolution::Paid { .. }
        ));
        assert!(matches!(
            r(Some(&rule), 200, r#"{"status":"failed"}"#),
            Resolution::Declined
        ));
        assert!(matches!(
            r(Some(&rule), 200, r#"{"status":"processing"}"#),
            Resolution::Pending
        ));
        assert!(matches!(r(Some(&rule), 200, r#"{"status":"??"}"#), Resolution::Unknown));
        assert!(matches!(r(Some(&rule), 404, ""), Resolution::NeverArrived));
        assert!(matches!(
            read(Some(&rule), AttemptResult::TimedOut),
            Resolution::Unknown
        ));
    }

    #[test]
    fn epay_order_answers_are_read_strictly_and_amounts_checked() {
        let r = |body, amount| read_epay(answered(200, body), amount);
        assert!(matches!(
            r(r#"{"code":1,"status":1,"money":"1.5"}"#, Some(150)),
            Resolution::Paid { .. }
        ));
        assert!(matches!(
            r(r#"{"code":1,"status":1,"money":"1.49"}"#, Some(150)),
            Resolution::Unknown
        ));
        assert!(matches!(r(r#"{"code":1,"status":0}"#, Some(150)), Resolution::Pending));
        assert!(matches!(r(r#"{"code":-1,"msg":"no"}"#, None), Resolution::NeverArrived));
        assert!(matches!(r(r#"{"code":-3}"#, None), Resolution::Unknown));
        assert!(matches!(r("<html>", None), Resolution::Unknown));
        assert!(matches!(read_epay(AttemptResult::TimedOut, None), Resolution::Unknown));
        // A 500 whose body says "no such order" is still epay's word.
        assert!(matches!(
            read_epay(answered(500, r#"{"code":-1}"#), None),
            Resolution::NeverArrived
        ));
    }

    #[test]
    fn order_ids_cannot_escape_the_path() {
        assert_eq!(percent_encode("o-1_2.3~"), "o-1_2.3~");
        assert_eq!(percent_encode("a?b#c%"), "a%3Fb%23c%25");
    }
}
