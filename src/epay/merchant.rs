//! payroute as an epay gateway to its merchants: the answers and signed
//! parameter sets a shop built for epay expects.
//!
//! Everything here is plain data in, bytes or [`Params`] out, so the shapes
//! are tested without a server. The rules the shapes keep:
//!
//! - every answer is a JSON object with `code` (1 = ok) and `msg`; a refusal
//!   carries payroute's error code first in `msg` (`invalid_request: …`), so
//!   a shop's log says which of payroute's rules refused it;
//! - the merchant sees payroute's trade number as `trade_no` and its own
//!   `out_trade_no` and `money` exactly as it sent them (a shop compares
//!   strings), never a channel's;
//! - what the merchant needs later (its notify and return URLs, the name,
//!   its money string, `param`) is kept with the payment as
//!   [`MerchantData`], since a notification or a browser's return may come
//!   long after the request, from a config that changed meanwhile.

use serde::{Deserialize, Serialize};

use super::form::Params;
use super::gateway::PayLink;
use super::order::PayOrder;

/// The merchant's own fields of an epay payment, kept in the journal
/// (`merchant_data`) as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MerchantData {
    pub notify_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_url: Option<String>,
    pub name: String,
    /// The merchant's `money` string as sent ("1" stays "1").
    pub money: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clientip: Option<String>,
    pub device: String,
}

impl MerchantData {
    pub fn of(order: &PayOrder) -> MerchantData {
        MerchantData {
            notify_url: order.notify_url.clone(),
            return_url: order.return_url.clone(),
            name: order.name.clone(),
            money: order.money.clone(),
            param: order.param.clone(),
            clientip: order.clientip.clone(),
            device: order.device.clone(),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    /// `None`: not an epay payment's data (or written by something else).
    pub fn from_json(s: &str) -> Option<MerchantData> {
        serde_json::from_str(s).ok()
    }
}

/// `mapi.php`'s answer for an order a channel created.
pub(crate) fn created(trade_no: &str, link: &PayLink) -> Vec<u8> {
    let (field, value) = link.field();
    let mut m = serde_json::Map::new();
    m.insert("code".into(), 1.into());
    m.insert("msg".into(), "succ".into());
    m.insert("trade_no".into(), trade_no.into());
    m.insert(field.into(), value.into());
    serde_json::Value::Object(m).to_string().into_bytes()
}

/// `mapi.php`'s answer for an order found already paid (an ambiguous
/// creation the channel's order query showed paid): no link to pay again.
pub(crate) fn already_paid(trade_no: &str) -> Vec<u8> {
    serde_json::json!({"code": 1, "msg": "succ", "trade_no": trade_no, "status": 1})
        .to_string()
        .into_bytes()
}

/// The pay link of a [`created`] answer (a first answer or its replay).
pub(crate) fn link_of(answer: &[u8]) -> Option<PayLink> {
    let v: serde_json::Value = serde_json::from_slice(answer).ok()?;
    let text = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
    text("payurl")
        .map(PayLink::Url)
        .or_else(|| text("qrcode").map(PayLink::Qrcode))
        .or_else(|| text("urlscheme").map(PayLink::Urlscheme))
}

/// A refusal: `{"code": code, "msg": "<error code>: <message>"}`.
pub(crate) fn refusal(code: i32, error: &str, message: &str) -> Vec<u8> {
    serde_json::json!({"code": code, "msg": format!("{error}: {message}")})
        .to_string()
        .into_bytes()
}

/// One order as `api.php?act=order` tells it.
pub(crate) struct OrderView<'a> {
    pub trade_no: &'a str,
    pub out_trade_no: &'a str,
    pub pay_type: &'a str,
    pub pid: &'a str,
    /// `YYYY-MM-DD HH:MM:SS`.
    pub addtime: &'a str,
    /// When it was paid; `None` while unpaid.
    pub endtime: Option<&'a str>,
    pub data: &'a MerchantData,
    pub paid: bool,
}

/// `api.php?act=order`'s answer for a found order.
pub(crate) fn order_answer(o: &OrderView<'_>) -> Vec<u8> {
    serde_json::json!({
        "code": 1,
        "msg": "succ",
        "trade_no": o.trade_no,
        "out_trade_no": o.out_trade_no,
        "type": o.pay_type,
        "pid": o.pid,
        "addtime": o.addtime,
        "endtime": o.endtime,
        "name": o.data.name,
        "money": o.data.money,
        "param": o.data.param.as_deref().unwrap_or(""),
        "status": i32::from(o.paid),
    })
    .to_string()
    .into_bytes()
}

/// The parameters epay sends a merchant about a paid order, in its
/// notification and on the buyer's return, unsigned (the key is the
/// merchant's as configured when they are sent).
pub(crate) fn result_params(
    pid: &str,
    trade_no: &str,
    out_trade_no: &str,
    pay_type: &str,
    data: &MerchantData,
    trade_status: &str,
) -> Params {
    let mut p = Params::from_pairs([
        ("pid", pid),
        ("trade_no", trade_no),
        ("out_trade_no", out_trade_no),
        ("type", pay_type),
        ("name", data.name.as_str()),
        ("money", data.money.as_str()),
        ("trade_status", trade_status),
    ]);
    if let Some(param) = &data.param {
        p.set("param", param.as_str());
    }
    p
}

/// `url` with `params` appended as its query (after `&` if it has one).
pub(crate) fn with_query(url: &str, params: &Params) -> String {
    let (base, sep) = match url.split_once('#') {
        Some((b, _)) => (b, if b.contains('?') { '&' } else { '?' }),
        None => (url, if url.contains('?') { '&' } else { '?' }),
    };
    let base = base.trim_end_matches(['?', '&']);
    format!("{base}{sep}{}", params.encode())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> MerchantData {
        MerchantData {
            notify_url: "http://shop/notify.php".into(),
            return_url: Some("http://shop/return.php?x=1".into()),
            name: "VIP 会员".into(),
            money: "1".into(),
            param: Some("p&q".into()),
            clientip: None,
            device: "pc".into(),
        }
    }

    #[test]
    fn answers_carry_payroutes_trade_number_and_the_channels_link() {
        let a = created("T1", &PayLink::Qrcode("weixin://wxpay/x".into()));
        let v: serde_json::Value = serde_json::from_slice(&a).unwrap();
        assert_eq!((v["code"].as_i64(), v["trade_no"].as_str()), (Some(1), Some("T1")));
        assert_eq!(v["qrcode"], "weixin://wxpay/x");
        assert_eq!(link_of(&a), Some(PayLink::Qrcode("weixin://wxpay/x".into())));
        assert_eq!(link_of(&already_paid("T1")), None);
        let r: serde_json::Value = serde_json::from_slice(&refusal(-1, "invalid_request", "bad money")).unwrap();
        assert_eq!(
            (r["code"].as_i64(), r["msg"].as_str()),
            (Some(-1), Some("invalid_request: bad money"))
        );
    }

    #[test]
    fn merchant_data_round_trips_and_results_keep_the_merchants_strings() {
        let d = data();
        assert_eq!(MerchantData::from_json(&d.to_json()), Some(d.clone()));
        assert_eq!(MerchantData::from_json("{}"), None);
        let p = result_params("1001", "T1", "o-1", "alipay", &d, "TRADE_SUCCESS").signed("mkey");
        assert_eq!(p.get("money"), Some("1"));
        assert_eq!(p.get("param"), Some("p&q"));
        assert!(p.verify("mkey"));
        let url = with_query(d.return_url.as_deref().unwrap(), &p);
        assert!(url.starts_with("http://shop/return.php?x=1&pid=1001&"), "{url}");
        let back = Params::parse(url.split_once('?').unwrap().1.as_bytes()).unwrap();
        assert_eq!(back.get("param"), Some("p&q"));
        assert_eq!(
            with_query("http://a/b", &Params::from_pairs([("k", "v")])),
            "http://a/b?k=v"
        );
    }

    #[test]
    fn an_order_answer_says_paid_as_1() {
        let d = data();
        let view = OrderView {
            trade_no: "T1",
            out_trade_no: "o-1",
            pay_type: "alipay",
            pid: "1001",
            addtime: "2026-01-01 08:00:00",
            endtime: None,
            data: &d,
            paid: false,
        };
        let v: serde_json::Value = serde_json::from_slice(&order_answer(&view)).unwrap();
        assert_eq!((v["status"].as_i64(), v["money"].as_str()), (Some(0), Some("1")));
        assert!(v["endtime"].is_null());
    }
}
