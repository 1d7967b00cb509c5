//! The mock as an epay (易支付 V1) gateway (`Protocol::Epay`): which page a
//! request is for, and how epay answers.
//!
//! Pages, by the path's last segment, so the gateway can sit under any base
//! path (`{base}/mapi.php`): `mapi.php` creates an order ([`create`]),
//! `api.php` answers `act=order` ([`query`]), `pay/{trade_no}` is the
//! cashier a `payurl` points to (a small HTML page, so a browser following
//! a pay link lands somewhere). Buyers pay, or not, in their own tasks
//! ([`buyer`]), which send the notifications.
//!
//! Why it is built so: epay states every outcome in a JSON body answered
//! with HTTP 200 (`code` 1 or a refusal with a `msg`), which is exactly
//! what payroute must learn not to take at face value, so the gateway
//! never lets the HTTP status speak. The API pieces epay defines
//! (signature, forms, money, the order book) are [`crate::epay`]'s; this
//! folder is only the gateway's behaviour on top of them.

mod buyer;
mod create;
mod query;

use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::request::Parts;
use http::{Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;

use self::buyer::signed_url;
use crate::answer::{Behavior, Dice, EpayGateway};
use crate::epay::money::yuan;
use crate::orders::to_json;
use crate::state::{Answered, State};

/// The gateway's answer to one request.
pub(crate) async fn answer(
    state: &Arc<State>,
    b: &Behavior,
    account: &EpayGateway,
    dice: &Dice,
    parts: &Parts,
    body: &[u8],
) -> Answered {
    let mut segments = parts.uri.path().rsplit('/');
    match (segments.next(), segments.next()) {
        (Some("mapi.php"), _) => create::create(state, b, account, dice, body).await,
        (Some("api.php"), _) => Ok(query::api(state, account, parts, body)),
        (Some(trade_no), Some("pay")) if !trade_no.is_empty() => Ok(cashier(state, account, trade_no)),
        _ => Ok(not_found()),
    }
}

/// An epay refusal: HTTP 200, `code` and `msg`.
#[derive(Serialize)]
struct Refusal<'a> {
    code: i32,
    msg: &'a str,
}

pub(crate) fn refusal(code: i32, msg: &str) -> Response<Full<Bytes>> {
    epay_json(to_json(&Refusal { code, msg }))
}

/// Every epay answer is HTTP 200; only the body tells.
pub(crate) fn epay_json(body: Bytes) -> Response<Full<Bytes>> {
    respond(
        StatusCode::OK,
        HeaderValue::from_static("application/json; charset=utf-8"),
        body,
    )
}

fn respond(status: StatusCode, content_type: HeaderValue, body: Bytes) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, content_type);
    resp
}

fn not_found() -> Response<Full<Bytes>> {
    respond(
        StatusCode::NOT_FOUND,
        HeaderValue::from_static("application/json; charset=utf-8"),
        Bytes::from_static(br#"{"code":-1,"msg":"page not found"}"#),
    )
}

/// The page a `payurl` opens: the order, whether it is paid, and once it
/// is, the way back to the shop (`return_url` with the paid order's signed
/// parameters, as epay sends the browser back). Not a payment path: buyers
/// pay by their fate, not by visiting.
fn cashier(state: &State, account: &EpayGateway, trade_no: &str) -> Response<Full<Bytes>> {
    let Some(found) = state.epay.find(Some(trade_no), None) else {
        return not_found();
    };
    let o = &found.order;
    let back = match (&found.endtime, o.return_url.is_empty()) {
        (Some(_), false) => signed_url(&o.return_url, &account.pid, o, &yuan(o.fen), account.key.text())
            .map(|uri| format!("<p><a href=\"{}\">返回商户</a></p>", escape(&uri.to_string())))
            .unwrap_or_default(),
        _ => String::new(),
    };
    let paid = if found.endtime.is_some() {
        "已支付"
    } else {
        "待支付"
    };
    let page = format!(
        "<!doctype html><meta charset=\"utf-8\"><title>收银台</title>\
         <h1>收银台</h1><p>{}</p><p>¥{}</p><p>{} {}</p>{back}",
        escape(&o.name),
        yuan(o.fen),
        escape(&o.trade_no),
        paid
    );
    respond(
        StatusCode::OK,
        HeaderValue::from_static("text/html; charset=utf-8"),
        Bytes::from(page),
    )
}

/// Order names are the merchant's text: escaped before they reach HTML.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}
