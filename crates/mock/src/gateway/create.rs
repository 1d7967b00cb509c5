//! `POST {base}/mapi.php`: an order created, or refused with `code` -1.
//!
//! Checked as 彩虹易支付 checks, in its order, each failure its own `msg`:
//! `pid` known, signature, the required fields (`out_trade_no`,
//! `notify_url`, `name`, `money`, `type`, `clientip`), money (yuan, at most
//! two decimals, above 0), `out_trade_no` (`^[a-zA-Z0-9._\-|]+$`), `type`
//! one the gateway has, `out_trade_no` not already an order. Then the
//! order's fate is drawn: hang, latency, refused at `refuse_rate`, else
//! created, with its buyer's decision scheduled.
//!
//! Why it is built so: a request the gateway refuses for what it says is
//! answered at once and draws no dice, so a seeded run's fates depend only
//! on the valid orders sent, whatever bad input a test mixes in.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::buyer::{self, Buyer};
use super::page::{epay_json, refusal};
use crate::answer::{Behavior, Dice, EpayGateway};
use crate::epay::book::{Booked, Refused};
use crate::epay::clock::Stamp;
use crate::epay::form::{self, Params};
use crate::epay::money::fen;
use crate::epay::verify;
use crate::fate::{Fate, Outcome};
use crate::orders::to_json;
use crate::state::{Answered, State};

/// The payment types the gateway offers.
const PAY_TYPES: [&str; 5] = ["alipay", "wxpay", "qqpay", "bank", "jdpay"];

/// The gateway's database keeps this many bytes of a name.
const NAME_BYTES: usize = 127;

/// What a valid creation asked for.
struct Asked<'a> {
    out_trade_no: &'a str,
    pay_type: &'a str,
    notify_url: &'a str,
    return_url: &'a str,
    name: &'a str,
    fen: u64,
    param: &'a str,
}

pub(super) async fn create(
    state: &Arc<State>,
    b: &Behavior,
    account: &EpayGateway,
    dice: &Dice,
    body: &[u8],
) -> Answered {
    let c = &state.counters;
    c.requests.bump();
    let params = form::parse(body);
    let asked = match check(&params, account) {
        Ok(asked) if state.epay.find(None, Some(asked.out_trade_no)).is_none() => asked,
        Ok(_) => return Ok(invalid(state, TAKEN)),
        Err(msg) => return Ok(invalid(state, msg)),
    };
    let fate = Fate::draw(b, dice);
    if fate.hang {
        c.hangs.bump();
        return Err(state.released().await);
    }
    if fate.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(fate.delay_ms)).await;
    }
    let paid = match fate.outcome {
        Outcome::Refused => {
            c.failures.bump();
            return Ok(refusal(-1, "支付通道维护中，请稍后再试"));
        }
        Outcome::Pending { paid } => paid,
        Outcome::Paid => true,
    };
    let seq = state.orders.next_seq();
    let now = Stamp::at_ms(state.clock.now_ms());
    let order = Arc::new(Booked {
        seq,
        trade_no: format!("{}{seq:05}", now.compact()).into(),
        out_trade_no: asked.out_trade_no.into(),
        pay_type: asked.pay_type.into(),
        name: cut(asked.name, NAME_BYTES).into(),
        fen: asked.fen,
        notify_url: asked.notify_url.into(),
        return_url: asked.return_url.into(),
        param: asked.param.into(),
        addtime: now.text().into(),
    });
    let remembered = match state.epay.create(&order) {
        Ok(remembered) => remembered,
        // The same out_trade_no created meanwhile by a concurrent request.
        Err(Refused::Exists) => return Ok(invalid(state, TAKEN)),
    };
    c.pending.bump();
    buyer::schedule(
        state,
        Buyer::new(b, account, order.clone(), remembered, paid, fate.faults),
    );

    let (payurl, qrcode) = match &*order.pay_type {
        "wxpay" => (None, Some(format!("weixin://wxpay/bizpayurl?pr={}", order.trade_no))),
        _ => (
            Some(format!("http://{}/pay/{}", state.local_addr, order.trade_no)),
            None,
        ),
    };
    Ok(epay_json(to_json(&Created {
        code: 1,
        msg: "succ",
        trade_no: &order.trade_no,
        payurl,
        qrcode,
    })))
}

const TAKEN: &str = "订单号(out_trade_no)已存在";

#[derive(Serialize)]
struct Created<'a> {
    code: i32,
    msg: &'a str,
    trade_no: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    payurl: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    qrcode: Option<String>,
}

fn invalid(state: &State, msg: &str) -> http::Response<http_body_util::Full<bytes::Bytes>> {
    state.counters.invalid.bump();
    state.counters.failures.bump();
    refusal(-1, msg)
}

/// The creation's checks, in the gateway's order; the refusal's `msg`.
fn check<'a>(params: &'a Params, account: &EpayGateway) -> Result<Asked<'a>, &'static str> {
    let get = |name: &str| params.get(name).map_or("", String::as_str);
    match get("pid") {
        "" => return Err("PID不存在"),
        pid if pid != &*account.pid => return Err("商户不存在"),
        _ => {}
    }
    if !verify(form::pairs(params), account.key.text()) {
        return Err("签名校验失败");
    }
    for (name, msg) in [
        ("out_trade_no", "订单号(out_trade_no)不能为空"),
        ("notify_url", "通知地址(notify_url)不能为空"),
        ("name", "商品名称(name)不能为空"),
        ("money", "金额(money)不能为空"),
        ("type", "支付方式(type)不能为空"),
        ("clientip", "用户IP地址(clientip)不能为空"),
    ] {
        if get(name).is_empty() {
            return Err(msg);
        }
    }
    let fen = match fen(get("money")) {
        Some(fen) if fen > 0 => fen,
        _ => return Err("金额不合法"),
    };
    let out_trade_no = get("out_trade_no");
    if !out_trade_no
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-|".contains(&b))
    {
        return Err("订单号(out_trade_no)格式不正确");
    }
    let pay_type = get("type");
    if !PAY_TYPES.contains(&pay_type) {
        return Err("支付方式(type)不存在");
    }
    Ok(Asked {
        out_trade_no,
        pay_type,
        notify_url: get("notify_url"),
        return_url: get("return_url"),
        name: get("name"),
        fen,
        param: get("param"),
    })
}

/// At most `max` bytes of `text`, never splitting a character.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::epay::sign;

    fn signed(pairs: &[(&str, &str)], key: &str) -> Params {
        let mut params: Params = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let s = sign(pairs.iter().copied(), key);
        params.insert("sign".into(), s);
        params
    }

    #[test]
    fn checks_in_the_gateways_order() {
        let account = EpayGateway::new("1001", "KEY");
        let good = [
            ("pid", "1001"),
            ("type", "alipay"),
            ("out_trade_no", "T-1.a|b_c"),
            ("notify_url", "http://shop/n"),
            ("name", "商品"),
            ("money", "1.5"),
            ("clientip", "1.2.3.4"),
        ];
        let params = signed(&good, "KEY");
        let asked = check(&params, &account).map(|a| (a.fen, a.out_trade_no));
        assert_eq!(asked.ok(), Some((150, "T-1.a|b_c")));
        let refused = |change: (&str, &str), key: &str| {
            let mut pairs = good.to_vec();
            pairs.retain(|(k, _)| *k != change.0);
            pairs.push(change);
            check(&signed(&pairs, key), &account).err()
        };
        assert_eq!(refused(("pid", "9"), "KEY"), Some("商户不存在"));
        assert_eq!(refused(("pid", ""), "KEY"), Some("PID不存在"));
        assert_eq!(refused(("money", "1.5"), "WRONG"), Some("签名校验失败"));
        assert_eq!(refused(("clientip", ""), "KEY"), Some("用户IP地址(clientip)不能为空"));
        assert_eq!(refused(("money", "1.505"), "KEY"), Some("金额不合法"));
        assert_eq!(refused(("money", "0.00"), "KEY"), Some("金额不合法"));
        assert_eq!(
            refused(("out_trade_no", "T 1"), "KEY"),
            Some("订单号(out_trade_no)格式不正确")
        );
        assert_eq!(refused(("type", "paypal"), "KEY"), Some("支付方式(type)不存在"));
    }

    #[test]
    fn cuts_names_on_character_boundaries() {
        assert_eq!(cut("abc", 127), "abc");
        let long = "商".repeat(50); // 150 bytes
        let kept = cut(&long, NAME_BYTES);
        assert_eq!((kept.len(), kept.chars().count()), (126, 42));
    }
}
