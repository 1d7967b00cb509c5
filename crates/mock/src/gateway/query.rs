//! `GET {base}/api.php?act=order&pid=&key=&trade_no=|out_trade_no=`: an
//! order's state, from the gateway's book.
//!
//! Answers, all HTTP 200: `code` 1 with the order (`status` 0 unpaid, 1
//! paid; `endtime` null until paid; `money` with two decimals, as the
//! gateway's database holds it), -1 no such order (also one the book was
//! too full to remember), -3 wrong `pid` or `key`, -4 neither order number
//! given, -5 an `act` other than `order`. The parameters may also come as a
//! POSTed form, as PHP's `$_REQUEST` would take them.
//!
//! Why it is built so: this is how payroute resolves a creation that timed
//! out and finds a payment whose notification was lost, so `code` -1 must
//! mean exactly "no order" (failover is safe) and nothing else: a query
//! that names no order gets a code of its own.

use http::request::Parts;
use http::Response;
use http_body_util::Full;
use serde::Serialize;

use super::page::{epay_json, refusal};
use crate::answer::EpayGateway;
use crate::epay::form;
use crate::epay::money::yuan;
use crate::orders::to_json;
use crate::state::State;

#[derive(Serialize)]
struct OrderAnswer<'a> {
    code: i32,
    msg: &'a str,
    trade_no: &'a str,
    out_trade_no: &'a str,
    #[serde(rename = "type")]
    pay_type: &'a str,
    pid: &'a str,
    addtime: &'a str,
    endtime: Option<&'a str>,
    name: &'a str,
    money: String,
    param: Option<&'a str>,
    status: u8,
}

pub(super) fn api(state: &State, account: &EpayGateway, parts: &Parts, body: &[u8]) -> Response<Full<bytes::Bytes>> {
    state.counters.queries.bump();
    let mut params = form::parse(parts.uri.query().unwrap_or_default().as_bytes());
    params.extend(form::parse(body));
    let get = |name: &str| params.get(name).map(String::as_str).filter(|v| !v.is_empty());
    if get("act") != Some("order") {
        return refusal(-5, "No Act!");
    }
    if get("pid") != Some(&*account.pid) || get("key") != Some(account.key.text()) {
        return refusal(-3, "KEY校验失败");
    }
    let (trade_no, out_trade_no) = (get("trade_no"), get("out_trade_no"));
    if trade_no.is_none() && out_trade_no.is_none() {
        return refusal(-4, "订单号不能为空");
    }
    let Some(found) = state.epay.find(trade_no, out_trade_no) else {
        return refusal(-1, "订单号不存在");
    };
    let o = &found.order;
    epay_json(to_json(&OrderAnswer {
        code: 1,
        msg: "succ",
        trade_no: &o.trade_no,
        out_trade_no: &o.out_trade_no,
        pay_type: &o.pay_type,
        pid: &account.pid,
        addtime: &o.addtime,
        endtime: found.endtime.as_deref(),
        name: &o.name,
        money: yuan(o.fen),
        param: Some(&*o.param).filter(|p| !p.is_empty()),
        status: u8::from(found.endtime.is_some()),
    }))
}
