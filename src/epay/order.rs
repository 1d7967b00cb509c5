//! An epay payment request from a merchant (`/mapi.php`, `/submit.php`),
//! checked field by field as epay gateways check it.
//!
//! The signature is checked by the caller first (it needs the merchant's
//! key); this module turns the verified parameters into an order with money
//! in fen, and refuses what a gateway would refuse — with messages that are
//! safe to return, since they become epay's `msg`.

use super::form::Params;
use super::money;

/// epay's `out_trade_no` alphabet (`^[a-zA-Z0-9._\-|]+$`), at most 64 long.
pub(crate) fn valid_out_trade_no(s: &str) -> bool {
    // Never a dot segment either: order ids end up in paths (`.` or `..`).
    (1..=64).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-|".contains(&b))
        && !matches!(s, "." | "..")
}

/// An epay `type` value (alipay, wxpay, qqpay, …): 1-32 of `[A-Za-z0-9_]`.
pub(crate) fn valid_type(s: &str) -> bool {
    (1..=32).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Where the buyer is paying from; epay's default is `pc`.
const DEVICES: &[&str] = &["pc", "mobile", "qq", "wechat", "alipay", "jump"];

/// epay cuts `name` at 127 bytes; payroute cuts at a character boundary.
const NAME_BYTES: usize = 127;

/// A merchant's verified payment request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PayOrder {
    pub pid: String,
    /// epay `type`: alipay, wxpay, qqpay, …
    pub pay_type: String,
    pub out_trade_no: String,
    pub notify_url: String,
    pub return_url: Option<String>,
    pub name: String,
    /// The merchant's own string, sent back as is in its notification.
    pub money: String,
    pub amount_fen: u64,
    pub clientip: Option<String>,
    pub device: String,
    pub param: Option<String>,
}

/// Why a request is refused; shown to the merchant after `invalid_request: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct BadOrder(pub String);

impl PayOrder {
    /// `browser`: `submit.php` (a `return_url` is needed to bring the buyer back).
    pub fn from_params(p: &Params, browser: bool) -> Result<PayOrder, BadOrder> {
        let need = |name: &str| p.get(name).ok_or_else(|| BadOrder(format!("missing parameter {name}")));
        let pid = need("pid")?.to_owned();
        let pay_type = need("type")?;
        if !valid_type(pay_type) {
            return Err(BadOrder("type must be a payment type such as alipay or wxpay".into()));
        }
        let out_trade_no = need("out_trade_no")?;
        if !valid_out_trade_no(out_trade_no) {
            return Err(BadOrder(
                "out_trade_no must be 1-64 characters of a-z A-Z 0-9 . _ - |".into(),
            ));
        }
        let notify_url = url(need("notify_url")?, "notify_url")?;
        let return_url = match p.get("return_url") {
            Some(u) => Some(url(u, "return_url")?),
            None if browser => return Err(BadOrder("missing parameter return_url".into())),
            None => None,
        };
        let name = cut(need("name")?, NAME_BYTES).to_owned();
        let money = need("money")?.to_owned();
        let amount_fen = money::parse_yuan(&money).map_err(|e| BadOrder(e.to_string()))?;
        if amount_fen == 0 {
            return Err(BadOrder("money must be greater than 0".into()));
        }
        let device = p.get("device").unwrap_or("pc");
        if !DEVICES.contains(&device) {
            return Err(BadOrder(format!("device must be one of {}", DEVICES.join(", "))));
        }
        Ok(PayOrder {
            pid,
            pay_type: pay_type.to_owned(),
            out_trade_no: out_trade_no.to_owned(),
            notify_url,
            return_url,
            name,
            money,
            amount_fen,
            clientip: p.get("clientip").map(str::to_owned),
            device: device.to_owned(),
            param: p.get("param").map(str::to_owned),
        })
    }
}

/// An absolute http(s) URL, as a merchant's notify and return URLs must be.
fn url(s: &str, key: &str) -> Result<String, BadOrder> {
    let ok = s
        .parse::<http::Uri>()
        .is_ok_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some());
    if ok && s.len() <= 512 {
        Ok(s.to_owned())
    } else {
        Err(BadOrder(format!("{key} must be an http(s) URL")))
    }
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Params {
        Params::from_pairs([
            ("pid", "1001"),
            ("type", "alipay"),
            ("out_trade_no", "20261201-0001|a.b_c"),
            ("notify_url", "https://shop.example/notify.php"),
            ("return_url", "https://shop.example/return.php"),
            ("name", "VIP 会员"),
            ("money", "12.5"),
            ("clientip", "203.0.113.9"),
        ])
    }

    #[test]
    fn a_good_order_reads_in_fen_and_keeps_the_merchants_strings() {
        let o = PayOrder::from_params(&base(), true).unwrap();
        assert_eq!(o.amount_fen, 1250);
        assert_eq!(o.money, "12.5");
        assert_eq!(o.device, "pc");
        assert_eq!(o.name, "VIP 会员");
        assert_eq!(o.param, None);
    }

    #[test]
    fn what_epay_refuses_is_refused() {
        for (key, value, needle) in [
            ("out_trade_no", "has space", "out_trade_no"),
            ("out_trade_no", "订单1", "out_trade_no"),
            ("out_trade_no", "..", "out_trade_no"),
            ("out_trade_no", ".", "out_trade_no"),
            ("money", "1.505", "money"),
            ("money", "-1", "money"),
            ("money", "0", "greater than 0"),
            ("notify_url", "javascript:alert(1)", "notify_url"),
            ("device", "fridge", "device"),
            ("type", "ali pay", "type"),
        ] {
            let mut p = base();
            p.set(key, value);
            let err = PayOrder::from_params(&p, false).unwrap_err();
            assert!(err.0.contains(needle), "{key}={value}: {err}");
        }
        let mut p = base();
        p.set("return_url", "");
        assert!(PayOrder::from_params(&p, false).is_ok());
        assert!(PayOrder::from_params(&p, true).unwrap_err().0.contains("return_url"));
        p.set("pid", "");
        assert!(PayOrder::from_params(&p, false).unwrap_err().0.contains("pid"));
    }

    #[test]
    fn long_names_are_cut_at_a_character() {
        let mut p = base();
        p.set("name", "商".repeat(60));
        let o = PayOrder::from_params(&p, false).unwrap();
        assert!(o.name.len() <= NAME_BYTES && o.name.chars().all(|c| c == '商'));
    }
}
