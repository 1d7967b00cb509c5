//! epay (易支付 V1) toward merchants: payroute answers a shop as its epay
//! gateway would, so the shop switches by changing the gateway URL.
//!
//! ```text
//! POST /mapi.php, GET|POST /submit.php:
//!   read_body → params (form; a name twice or bytes not UTF-8: refused)
//!   → identify (pid, sign with its epay_key, MD5 only, constant-time)
//!   → order (epay's own checks: out_trade_no, money in fen, name cut at 127 bytes)
//!   → check_amount → rank → admit → attempts → close → settle    (the payment's phases)
//!   → render (JSON, or for submit.php a 302 to the pay page)
//! GET /api.php?act=order    the order, from the journal
//! GET /return/{channel}     the buyer back from a channel → the merchant's return_url
//! ```
//!
//! An epay payment is a payment like a JSON one, on the same machinery:
//! the same rate, amount and daily limits, the idempotency store (keyed by
//! `out_trade_no`, scoped to the merchant, fingerprinted by `type` and the
//! amount in fen, so the same order twice gets the same trade number and
//! pay link, and another amount is `idempotency_key_reused`), the same
//! attempts and "never twice" rules (`attempt.rs`, which also builds the
//! merchant's answer from the channel's), the journal (protocol `epay`,
//! `pay_type`, and the merchant's fields as `merchant_data`) and the
//! outbox. Only epay channels take epay payments (`intake::rank`).
//!
//! Every refusal is HTTP 200 with `code` ≠ 1 and a `msg` that begins with
//! payroute's error code (`invalid_request: …`, `unauthorized: …`), as the
//! contract says; nothing refused reaches a channel or changes anything.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, LOCATION};
use http::request::Parts;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::respond::{self, Answer, Ended};
use super::{intake, Inbound, Payment};
use crate::app::App;
use crate::epay::form::Params;
use crate::epay::gateway::PayLink;
use crate::epay::merchant::{self, MerchantData, OrderView};
use crate::epay::order::PayOrder;
use crate::error::{Body, PaymentError};
use crate::journal::{self, Protocol, State};
use crate::payment::facts::Facts;
use crate::payment::trade_no;
use crate::snapshot::{Merchant, Snapshot};

/// The epay paths on `listen`.
const MAPI: &str = "/mapi.php";
const SUBMIT: &str = "/submit.php";
const API: &str = "/api.php";
const RETURN: &str = "/return/";

/// `code` of a refused `api.php` key (epay's).
const WRONG_KEY: i32 = -3;

/// Which epay endpoint a request is for.
pub(super) enum Endpoint {
    /// `mapi.php` (`browser: false`) or `submit.php`.
    Pay { browser: bool },
    /// `api.php`.
    Order,
    /// `return/{channel}` of an epay channel.
    Return(Arc<str>),
}

/// The epay endpoint `req` is for, if the config serves epay at all.
pub(super) fn endpoint(snap: &Snapshot, req: &Request<Incoming>) -> Option<Endpoint> {
    if !snap.epay {
        return None;
    }
    let (method, path) = (req.method(), req.uri().path());
    let get_or_post = *method == Method::GET || *method == Method::POST;
    match path {
        MAPI if *method == Method::POST => Some(Endpoint::Pay { browser: false }),
        SUBMIT if get_or_post => Some(Endpoint::Pay { browser: true }),
        API if get_or_post => Some(Endpoint::Order),
        _ if *method == Method::GET => {
            let id = path.strip_prefix(RETURN)?;
            let ch = snap
                .channels
                .iter()
                .find(|c| &*c.config.id == id && c.config.is_epay())?;
            Some(Endpoint::Return(ch.config.id.clone()))
        }
        _ => None,
    }
}

/// Serves one epay request.
pub(super) async fn serve(
    app: &App,
    snap: &Snapshot,
    endpoint: Endpoint,
    req: Request<Incoming>,
    request_id: &HeaderValue,
) -> Response<Body> {
    match endpoint {
        Endpoint::Pay { browser } => {
            let started = Instant::now();
            let (Ok(ended) | Err(ended)) = pay(app, snap, req, request_id, browser).await;
            app.metrics.outcome(ended.outcome());
            let response = render(ended, browser, request_id);
            app.metrics.request_duration.observe(started.elapsed().as_secs_f64());
            response
        }
        Endpoint::Order => match read(req, snap).await {
            Ok((_, params)) => order(app, snap, &params).await,
            Err(e) => json(refusal(&e)),
        },
        Endpoint::Return(channel) => match read(req, snap).await {
            Ok((_, params)) => back(app, snap, &channel, &params).await,
            Err(e) => page(StatusCode::BAD_REQUEST, &format!("{}: {e}", e.outcome().as_str())),
        },
    }
}

/// The request's parameters: a POST's form body, else the query string.
async fn read(req: Request<Incoming>, snap: &Snapshot) -> Result<(Parts, Params), PaymentError> {
    let (parts, body) = intake::read_body(req, snap).await?;
    let params = params_of(&parts, &body)?;
    Ok((parts, params))
}

fn params_of(parts: &Parts, body: &[u8]) -> Result<Params, PaymentError> {
    let raw = if parts.method == Method::POST {
        let multipart = parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("multipart/"));
        if multipart {
            return Err(PaymentError::InvalidRequest(
                "send the parameters as application/x-www-form-urlencoded".into(),
            ));
        }
        body
    } else {
        parts.uri.query().unwrap_or("").as_bytes()
    };
    Params::parse(raw).map_err(|e| PaymentError::InvalidRequest(e.to_string()))
}

/// `mapi.php` / `submit.php`: the payment's phases, with epay's reading of
/// the request in front. `Err`: ended before any channel was asked.
async fn pay(
    app: &App,
    snap: &Snapshot,
    req: Request<Incoming>,
    request_id: &HeaderValue,
    browser: bool,
) -> Result<Ended, Ended> {
    let (parts, body) = intake::read_body(req, snap).await?;
    let params = params_of(&parts, &body)?;
    let merchant = identify(snap, &params)?;
    let order = PayOrder::from_params(&params, browser).map_err(|e| PaymentError::InvalidRequest(e.0))?;
    let req = Inbound {
        app,
        snap,
        request_id,
        merchant,
        parts,
        body,
    };
    let payment = Payment {
        req: &req,
        facts: Facts {
            amount: order.amount_fen,
            currency: "CNY".into(),
            order_id: order.out_trade_no.clone(),
            pay_type: Some(order.pay_type.clone()),
        },
        key_header: None,
        fingerprint: fingerprint(&order),
        trade_no: trade_no::mint(),
        epay: Some(Box::new(order)),
    };
    super::pay(&payment).await
}

/// identify: the merchant by `pid`, proven by its `sign` (MD5 with its
/// `epay_key`, compared in constant time). A merchant without an
/// `epay_key` is not an epay merchant.
fn identify<'s>(snap: &'s Snapshot, p: &Params) -> Result<&'s Merchant, PaymentError> {
    let pid = p
        .get("pid")
        .ok_or_else(|| PaymentError::InvalidRequest("missing parameter pid".into()))?;
    let merchant = snap.merchant(pid).ok_or(PaymentError::UnknownMerchant)?;
    let key = merchant.config.epay_key().ok_or(PaymentError::UnknownMerchant)?;
    if p.get("sign_type").is_some_and(|t| !t.eq_ignore_ascii_case("MD5")) {
        return Err(PaymentError::Unauthorized("sign_type must be MD5"));
    }
    if p.get("sign").is_none() {
        return Err(PaymentError::Unauthorized("missing parameter sign"));
    }
    if !p.verify(key.expose()) {
        return Err(PaymentError::Unauthorized("sign is not valid for this pid's key"));
    }
    Ok(merchant)
}

/// What "the same order" means for an epay payment: its `type` and amount
/// in fen (so `"1"` and `"1.00"` are the same order), under its
/// `out_trade_no` (the idempotency key).
fn fingerprint(order: &PayOrder) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"epay\0");
    h.update(order.pay_type.as_bytes());
    h.update([0]);
    h.update(order.amount_fen.to_be_bytes());
    h.finalize().into()
}

/// The merchant's answer: payroute's epay JSON (from the answer itself, a
/// replay of it, or a refusal), or for `submit.php` the way to pay.
fn render(ended: Ended, browser: bool, request_id: &HeaderValue) -> Response<Body> {
    let answer: Result<Bytes, Vec<u8>> = match &ended.answer {
        Answer::Acquirer { status, body, .. } | Answer::Replay { status, body, .. } if *status == StatusCode::OK => {
            Ok(body.clone())
        }
        Answer::Error(e) => Err(refusal(e)),
        Answer::Acquirer { body, .. } | Answer::Replay { body, .. } => Err(stored_refusal(body)),
    };
    // The X-Payroute-* headers (trade number, channel, attempts, replayed) as for JSON.
    let mut r = respond::respond(ended, request_id);
    r.headers_mut().remove(http::header::RETRY_AFTER);
    *r.status_mut() = StatusCode::OK;
    let body = match answer {
        Ok(body) if browser => return way_to_pay(r, &body),
        Ok(body) => body,
        Err(refused) => Bytes::from(refused),
    };
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    *r.body_mut() = Full::new(body);
    r
}

/// `submit.php`: a 302 to the pay page (or app), or a page with the QR
/// code's content, or, for an order already paid, a page saying so.
fn way_to_pay(mut r: Response<Body>, answer: &[u8]) -> Response<Body> {
    let html = match merchant::link_of(answer) {
        Some(PayLink::Url(url) | PayLink::Urlscheme(url)) => match HeaderValue::from_str(&url) {
            Ok(location) => {
                *r.status_mut() = StatusCode::FOUND;
                r.headers_mut().insert(LOCATION, location);
                r.headers_mut().remove(CONTENT_TYPE);
                *r.body_mut() = Full::new(Bytes::new());
                return r;
            }
            Err(_) => format!("<p><a href=\"{0}\">{0}</a></p>", escape(&url)),
        },
        // payroute draws no QR image: the page carries the code, which the
        // buyer's wallet opens as a link (or a shop's page renders).
        Some(PayLink::Qrcode(code)) => format!(
            "<p>请扫码支付 / scan to pay</p><p><a href=\"{0}\">{0}</a></p><pre id=\"qrcode\">{0}</pre>",
            escape(&code)
        ),
        None => "<p>已支付 / paid</p>".to_owned(),
    };
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    *r.body_mut() = Full::new(Bytes::from(format!(
        "<!doctype html><meta charset=\"utf-8\"><title>pay</title>{html}"
    )));
    r
}

/// A refusal in epay's words: `code` -1, `msg` "<payroute code>: <why>".
fn refusal(e: &PaymentError) -> Vec<u8> {
    merchant::refusal(-1, e.outcome().as_str(), &e.to_string())
}

/// A stored refusal (`{"error": {"code", "message"}}`) in epay's words.
fn stored_refusal(stored: &[u8]) -> Vec<u8> {
    let v: serde_json::Value = serde_json::from_slice(stored).unwrap_or_default();
    let text = |k: &str| v["error"][k].as_str().unwrap_or("").to_owned();
    let (code, message) = (text("code"), text("message"));
    if code.is_empty() {
        merchant::refusal(
            -1,
            PaymentError::Internal.outcome().as_str(),
            "the stored answer is unreadable",
        )
    } else {
        merchant::refusal(-1, &code, &message)
    }
}

fn json(body: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn page(status: StatusCode, text: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(format!(
        "<!doctype html><meta charset=\"utf-8\"><title>payroute</title><p>{}</p>",
        escape(text)
    ))));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    r
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `api.php?act=order`: `pid` and `key` (the merchant's epay_key, as epay
/// sends it), `trade_no` (payroute's) or `out_trade_no` (the merchant's);
/// the order from the journal. `code` -3 for a wrong pid or key, -1 for an
/// unknown order. Rate-limited like the merchant's payments (this
/// instance's bucket: it moves no money).
async fn order(app: &App, snap: &Snapshot, p: &Params) -> Response<Body> {
    if p.get("act") != Some("order") {
        return json(refusal(&PaymentError::InvalidRequest(
            "act=order is the only api.php query payroute answers".into(),
        )));
    }
    let merchant = p.get("pid").and_then(|pid| snap.merchant(pid));
    let key = merchant.and_then(|m| m.config.epay_key());
    let (Some(merchant), Some(key), Some(given)) = (merchant, key, p.get("key")) else {
        return json(merchant::refusal(WRONG_KEY, "unauthorized", "pid or key is wrong"));
    };
    if !bool::from(key.expose().as_bytes().ct_eq(given.as_bytes())) {
        return json(merchant::refusal(WRONG_KEY, "unauthorized", "pid or key is wrong"));
    }
    if let Err(retry_after) = merchant.limiter.check(&merchant.config.id) {
        return json(refusal(&PaymentError::RateLimited { retry_after }));
    }
    let pid = &*merchant.config.id;
    let found = match (p.get("trade_no"), p.get("out_trade_no")) {
        (Some(t), _) if t.len() <= 64 => app
            .journal
            .payment(t)
            .await
            .map(|r| r.map(|r| r.payment).filter(|p| p.merchant_id == pid)),
        (None, Some(o)) if o.len() <= 64 => app.journal.find_for_merchant(pid, o).await,
        (Some(_), _) | (None, Some(_)) => Ok(None),
        (None, None) => {
            return json(refusal(&PaymentError::InvalidRequest(
                "trade_no or out_trade_no is required".into(),
            )))
        }
    };
    let payment = match found {
        Ok(p) => p.filter(|p| p.protocol == Protocol::Epay),
        Err(e) => {
            app.metrics.journal_errors.inc();
            tracing::warn!(error = %e, "journal unavailable: epay order query refused");
            return json(refusal(&PaymentError::StateUnavailable));
        }
    };
    let Some((payment, data)) = payment.and_then(|p| MerchantData::from_json(&p.merchant_data).map(|d| (p, d))) else {
        return json(refusal(&PaymentError::UnknownOrder));
    };
    let paid = payment.state == State::Paid;
    let addtime = china_time(payment.created_at_ms);
    let endtime = paid.then(|| china_time(payment.updated_at_ms));
    json(merchant::order_answer(&OrderView {
        trade_no: &payment.trade_no,
        out_trade_no: &payment.order_id,
        pay_type: payment.pay_type.as_deref().unwrap_or(""),
        pid,
        addtime: &addtime,
        endtime: endtime.as_deref(),
        data: &data,
        paid,
    }))
}

/// `YYYY-MM-DD HH:MM:SS` in China's time (UTC+8), as epay gateways write it.
fn china_time(ms: i64) -> String {
    const WALL_CLOCK: &[time::format_description::BorrowedFormatItem<'_>] =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    crate::notify::event::format_at(ms, time::macros::offset!(+8), WALL_CLOCK)
}

/// `GET /return/{channel}`: the buyer's browser back from the channel.
/// Verified with that channel's `pid` and key, matched to its payment, then
/// sent on to the merchant's `return_url` with the merchant's parameters
/// signed with its key (302). The return moves nothing (the notification
/// and the sweeper do), but a pending payment's next query is brought
/// forward: the buyer says it is done.
async fn back(app: &App, snap: &Snapshot, channel_id: &str, p: &Params) -> Response<Body> {
    let Some(account) = snap
        .channels
        .iter()
        .find(|c| &*c.config.id == channel_id)
        .and_then(|c| c.config.epay.as_deref())
    else {
        return page(StatusCode::NOT_FOUND, "unknown_route: no such epay channel");
    };
    if !p.verify(account.key.expose()) || p.get("pid") != Some(account.pid.as_str()) {
        return page(
            StatusCode::BAD_REQUEST,
            "unauthorized: the return is not signed by this channel",
        );
    }
    let trade_no = p.get("out_trade_no").filter(|t| t.len() <= 64).unwrap_or("");
    let payment = match app.journal.payment_row(trade_no).await {
        Ok(found) => found.filter(|p| p.protocol == Protocol::Epay && p.channel_id.as_deref() == Some(channel_id)),
        Err(e) => {
            app.metrics.journal_errors.inc();
            tracing::warn!(error = %e, "journal unavailable: an epay return cannot be relayed");
            return page(StatusCode::SERVICE_UNAVAILABLE, "state_unavailable: try again");
        }
    };
    let found = payment.and_then(|pay| {
        let data = MerchantData::from_json(&pay.merchant_data)?;
        let key = snap.merchant(&pay.merchant_id)?.config.epay_key()?;
        Some((pay, data, key))
    });
    let Some((payment, data, key)) = found else {
        return page(StatusCode::NOT_FOUND, "unknown_order: no such payment on this channel");
    };
    if payment.state == State::Pending {
        if let Err(e) = app.journal.reschedule(&payment.trade_no, Some(journal::now_ms())).await {
            app.metrics.journal_errors.inc();
            tracing::debug!(error = %e, "cannot bring an epay payment's query forward");
        }
    }
    let status = p.get("trade_status").unwrap_or("TRADE_SUCCESS");
    let params = merchant::result_params(
        &payment.merchant_id,
        &payment.trade_no,
        &payment.order_id,
        payment.pay_type.as_deref().unwrap_or(""),
        &data,
        status,
    )
    .signed(key.expose());
    let Some(url) = data.return_url.as_deref() else {
        return page(StatusCode::OK, "支付完成 / payment complete");
    };
    match HeaderValue::from_str(&merchant::with_query(url, &params)) {
        Ok(location) => {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::FOUND;
            r.headers_mut().insert(LOCATION, location);
            r
        }
        Err(_) => page(StatusCode::OK, "支付完成 / payment complete"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_chinas() {
        assert_eq!(china_time(0), "1970-01-01 08:00:00");
        assert_eq!(china_time(1_795_449_599_000), "2026-11-23 23:59:59");
    }

    #[test]
    fn the_same_order_is_its_amount_in_fen_and_type() {
        let p = |money: &str, ty: &str| {
            let params = Params::from_pairs([
                ("pid", "1"),
                ("type", ty),
                ("out_trade_no", "o-1"),
                ("notify_url", "http://shop/n"),
                ("name", "x"),
                ("money", money),
            ]);
            fingerprint(&PayOrder::from_params(&params, false).unwrap())
        };
        assert_eq!(p("1", "alipay"), p("1.00", "alipay"));
        assert_ne!(p("1", "alipay"), p("1.01", "alipay"));
        assert_ne!(p("1", "alipay"), p("1", "wxpay"));
    }

    #[test]
    fn stored_refusals_keep_their_code() {
        let stored = PaymentError::NoEligibleChannel.json_body();
        let v: serde_json::Value = serde_json::from_slice(&stored_refusal(&stored)).unwrap();
        assert_eq!(v["code"], -1);
        assert!(v["msg"].as_str().unwrap().starts_with("no_eligible_channel: "), "{v}");
        assert_eq!(escape("<a href=\"x\">&"), "&lt;a href=&quot;x&quot;&gt;&amp;");
    }
}
