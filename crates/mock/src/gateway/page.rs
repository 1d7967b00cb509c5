//! How the gateway answers: epay's JSON (HTTP 200, the outcome in `code`
//! and `msg`), the cashier page a `payurl` opens, and a 404 for any other
//! path.
//!
//! Why a file of its own: the pages that create and query orders all
//! answer in these shapes, so the shapes sit below them, where each can
//! reach them and none reaches back into the dispatch above.

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;

use super::buyer::signed_url;
use crate::answer::EpayGateway;
use crate::epay::money::yuan;
use crate::orders::to_json;
use crate::state::State;

/// An epay refusal: HTTP 200, `code` and `msg`.
#[derive(Serialize)]
struct Refusal<'a> {
    code: i32,
    msg: &'a str,
}

pub(super) fn refusal(code: i32, msg: &str) -> Response<Full<Bytes>> {
    epay_json(to_json(&Refusal { code, msg }))
}

/// Every epay answer is HTTP 200; only the body tells.
pub(super) fn epay_json(body: Bytes) -> Response<Full<Bytes>> {
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

pub(super) fn not_found() -> Response<Full<Bytes>> {
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
pub(super) fn cashier(state: &State, account: &EpayGateway, trade_no: &str) -> Response<Full<Bytes>> {
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
