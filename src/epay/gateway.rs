//! Talking to an epay gateway as its merchant: what payroute sends and how
//! it reads the answers.
//!
//! Every gateway answer is HTTP 200; the outcome is in `code`. The readings
//! below are deliberately strict in one direction: only an explicit
//! `code: 1` creates an order, only `status: 1` is paid, only `code: -1`
//! proves there is no order. Anything else is unknown, and unknown is
//! resolved by asking again, never by assuming.

use serde_json::Value;

use super::form::Params;
use super::money;
use super::order::PayOrder;

/// The gateway accepted the order: where the buyer pays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Created {
    /// The gateway's own trade number.
    pub gateway_trade_no: Option<String>,
    pub link: PayLink,
}

/// How the buyer pays, as the gateway gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PayLink {
    Url(String),
    Qrcode(String),
    Urlscheme(String),
}

impl PayLink {
    /// The epay answer field that carries it.
    pub fn field(&self) -> (&'static str, &str) {
        match self {
            PayLink::Url(v) => ("payurl", v),
            PayLink::Qrcode(v) => ("qrcode", v),
            PayLink::Urlscheme(v) => ("urlscheme", v),
        }
    }
}

/// What a `mapi.php` answer says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Creation {
    Created(Created),
    /// `code` ≠ 1: no order was made; failing over is safe.
    Refused(String),
    /// Not an epay answer at all: the order's fate is unknown.
    Unreadable,
}

/// What `api.php?act=order` says about one order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Queried {
    /// `status: 1`, with the amount the gateway says was paid (fen).
    Paid {
        amount_fen: Option<u64>,
    },
    /// The order exists and is not paid (yet).
    Unpaid,
    /// `code: -1`: the gateway has no such order.
    NoOrder,
    Unknown,
}

/// The signed `mapi.php` form for `order`, sent as payroute's own merchant
/// `pid` under payroute's `trade_no`.
pub(crate) fn create_form(
    pid: &str,
    key: &str,
    trade_no: &str,
    order: &PayOrder,
    notify_url: &str,
    return_url: &str,
) -> Params {
    let mut p = Params::from_pairs([
        ("pid", pid),
        ("type", order.pay_type.as_str()),
        ("out_trade_no", trade_no),
        ("notify_url", notify_url),
        ("return_url", return_url),
        ("name", order.name.as_str()),
        ("money", &money::format_yuan(order.amount_fen)),
        ("device", order.device.as_str()),
    ]);
    if let Some(ip) = &order.clientip {
        p.set("clientip", ip.as_str());
    }
    p.signed(key)
}

/// The `api.php?act=order` query string for payroute's `trade_no`.
pub(crate) fn order_query(pid: &str, key: &str, trade_no: &str) -> String {
    Params::from_pairs([("act", "order"), ("pid", pid), ("key", key), ("out_trade_no", trade_no)]).encode()
}

fn code(v: &Value) -> Option<i64> {
    match v.get("code")? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn text(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Reads a `mapi.php` answer.
pub(crate) fn read_creation(body: &[u8]) -> Creation {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return Creation::Unreadable;
    };
    match code(&v) {
        Some(1) => {
            let link = text(&v, "payurl")
                .map(PayLink::Url)
                .or_else(|| text(&v, "qrcode").map(PayLink::Qrcode))
                .or_else(|| text(&v, "urlscheme").map(PayLink::Urlscheme));
            match link {
                Some(link) => Creation::Created(Created {
                    gateway_trade_no: text(&v, "trade_no"),
                    link,
                }),
                // An order without a way to pay it: treat as unknown, it may exist.
                None => Creation::Unreadable,
            }
        }
        Some(_) => Creation::Refused(text(&v, "msg").unwrap_or_else(|| "refused".into())),
        None => Creation::Unreadable,
    }
}

/// Reads an `api.php?act=order` answer.
pub(crate) fn read_order(body: &[u8]) -> Queried {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return Queried::Unknown;
    };
    match code(&v) {
        Some(-1) => Queried::NoOrder,
        Some(1) => match text(&v, "status").as_deref() {
            Some("1") => Queried::Paid {
                amount_fen: text(&v, "money").and_then(|m| money::parse_yuan(&m).ok()),
            },
            Some("0") => Queried::Unpaid,
            _ => Queried::Unknown,
        },
        _ => Queried::Unknown,
    }
}

/// A gateway's payment notification, verified with the channel's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Paid {
    /// payroute's trade number (the `out_trade_no` payroute sent).
    pub trade_no: String,
    pub gateway_trade_no: Option<String>,
    pub amount_fen: u64,
    /// The same notification twice has the same key.
    pub dedupe_key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BadNotice {
    /// Wrong or missing signature, or not payroute's `pid`; `trade_hint` is unverified.
    #[error("signature missing or wrong")]
    BadSignature { trade_hint: Option<String> },
    #[error("{0}")]
    Malformed(String),
    /// Signed, but not a success (epay notifies only successes).
    #[error("trade_status is not TRADE_SUCCESS")]
    NotSuccess,
}

/// Verifies and reads a gateway's notification (`GET /notify/{channel}`).
pub(crate) fn read_notice(p: &Params, pid: &str, key: &str) -> Result<Paid, BadNotice> {
    let trade_hint = p.get("out_trade_no").map(str::to_owned);
    if !p.verify(key) || p.get("pid") != Some(pid) {
        return Err(BadNotice::BadSignature { trade_hint });
    }
    if p.get("trade_status") != Some("TRADE_SUCCESS") {
        return Err(BadNotice::NotSuccess);
    }
    let trade_no = trade_hint.ok_or_else(|| BadNotice::Malformed("missing out_trade_no".into()))?;
    let money = p
        .get("money")
        .ok_or_else(|| BadNotice::Malformed("missing money".into()))?;
    let amount_fen = money::parse_yuan(money).map_err(|e| BadNotice::Malformed(e.to_string()))?;
    let gateway_trade_no = p.get("trade_no").map(str::to_owned);
    let dedupe_key = format!("{trade_no}\u{1f}{}", gateway_trade_no.as_deref().unwrap_or(""));
    Ok(Paid {
        trade_no,
        gateway_trade_no,
        amount_fen,
        dedupe_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order() -> PayOrder {
        let p = Params::from_pairs([
            ("pid", "1001"),
            ("type", "wxpay"),
            ("out_trade_no", "m-1"),
            ("notify_url", "http://shop/n"),
            ("name", "商品"),
            ("money", "1.5"),
            ("clientip", "1.2.3.4"),
            ("param", "merchant-private"),
        ]);
        PayOrder::from_params(&p, false).unwrap()
    }

    #[test]
    fn the_creation_form_is_payroutes_own_and_signed_with_the_channel_key() {
        let f = create_form(
            "2001",
            "chan-key",
            "T123",
            &order(),
            "https://pay/notify/epay-a",
            "https://pay/return/epay-a",
        );
        assert_eq!(f.get("pid"), Some("2001"));
        assert_eq!(f.get("out_trade_no"), Some("T123"));
        assert_eq!(f.get("money"), Some("1.50"));
        assert_eq!(f.get("type"), Some("wxpay"));
        assert_eq!(f.get("param"), None, "the merchant's param stays with payroute");
        assert!(f.verify("chan-key"));
        assert!(!f.verify("merchant-key"));
    }

    #[test]
    fn only_code_1_with_a_link_is_a_creation() {
        assert_eq!(
            read_creation(br#"{"code":1,"msg":"ok","trade_no":"G1","payurl":"https://gw/pay/G1"}"#),
            Creation::Created(Created {
                gateway_trade_no: Some("G1".into()),
                link: PayLink::Url("https://gw/pay/G1".into())
            })
        );
        assert!(matches!(
            read_creation(br#"{"code":"1","qrcode":"weixin://x"}"#),
            Creation::Created(Created {
                link: PayLink::Qrcode(_),
                ..
            })
        ));
        assert_eq!(
            read_creation(br#"{"code":-1,"msg":"channel closed"}"#),
            Creation::Refused("channel closed".into())
        );
        assert_eq!(read_creation(br#"{"code":0}"#), Creation::Refused("refused".into()));
        assert_eq!(read_creation(br#"{"code":1}"#), Creation::Unreadable);
        assert_eq!(read_creation(b"<html>502</html>"), Creation::Unreadable);
    }

    #[test]
    fn order_answers_are_read_strictly() {
        assert_eq!(
            read_order(br#"{"code":1,"status":1,"money":"1.50"}"#),
            Queried::Paid { amount_fen: Some(150) }
        );
        assert_eq!(read_order(br#"{"code":1,"status":"0"}"#), Queried::Unpaid);
        assert_eq!(read_order(br#"{"code":-1,"msg":"no order"}"#), Queried::NoOrder);
        assert_eq!(read_order(br#"{"code":-3,"msg":"bad key"}"#), Queried::Unknown);
        assert_eq!(read_order(br#"{"code":1}"#), Queried::Unknown);
        assert_eq!(read_order(b"oops"), Queried::Unknown);
    }

    #[test]
    fn notices_are_verified_and_deduplicated_by_both_numbers() {
        let notice = Params::from_pairs([
            ("pid", "2001"),
            ("trade_no", "G1"),
            ("out_trade_no", "T123"),
            ("type", "wxpay"),
            ("name", "商品"),
            ("money", "1.5"),
            ("trade_status", "TRADE_SUCCESS"),
        ])
        .signed("chan-key");
        let paid = read_notice(&notice, "2001", "chan-key").unwrap();
        assert_eq!((paid.trade_no.as_str(), paid.amount_fen), ("T123", 150));
        assert_eq!(
            read_notice(&notice, "2001", "chan-key").unwrap().dedupe_key,
            paid.dedupe_key
        );
        assert_eq!(
            read_notice(&notice, "2001", "other"),
            Err(BadNotice::BadSignature {
                trade_hint: Some("T123".into())
            })
        );
        assert!(matches!(
            read_notice(&notice, "9999", "chan-key"),
            Err(BadNotice::BadSignature { .. })
        ));
        let mut forged = notice.clone();
        forged.set("money", "100");
        assert!(matches!(
            read_notice(&forged, "2001", "chan-key"),
            Err(BadNotice::BadSignature { .. })
        ));
        let mut waiting = notice.clone();
        waiting.set("trade_status", "WAIT");
        let waiting = waiting.signed("chan-key");
        assert_eq!(read_notice(&waiting, "2001", "chan-key"), Err(BadNotice::NotSuccess));
    }
}
