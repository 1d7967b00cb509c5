//! A created order's buyer: after `notify_delay_ms` pays (at
//! `success_rate`) or never does, and the gateway then announces the
//! payment to the order's `notify_url`.
//!
//! The announcement is epay's: `GET {notify_url}?pid&trade_no&out_trade_no
//! &type&name&money&trade_status=TRADE_SUCCESS&param(if set)&sign
//! &sign_type=MD5`, encoded as PHP's `http_build_query` does, acknowledged
//! when the answer's body contains `success`. Only payments are announced:
//! an unpaid order stays `status` 0, and only a query says so. Copies, in
//! this order, as the order's fate says: a forged one (signed with another
//! key, `TRADE_SUCCESS` — for paid and unpaid orders alike, sent once), one
//! stating `money` 0.01 more (correctly signed), the genuine one, a repeat.
//! Loss suppresses every copy of a paid order.
//!
//! Why it is built so: it is the JSON API's pending payment in epay's
//! words — one task per order, its fate drawn at creation (so a seeded run
//! pays and notifies the same way every time), the copies sent by
//! [`crate::delivery`] — so the two protocols' notifications cannot drift
//! apart in how they retry, count or shut down.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Uri};

use crate::answer::{Behavior, EpayGateway, Secret};
use crate::delivery::{self, deliver, http_uri, send, Ack, Message, Retries};
use crate::epay::book::Booked;
use crate::epay::form;
use crate::epay::money::{float, yuan};
use crate::epay::sign;
use crate::fate::Faults;
use crate::state::State;

/// Everything a buyer's task needs, taken when the order is created, so a
/// later `set_behavior` does not change it.
pub(super) struct Buyer {
    order: Arc<Booked>,
    /// Whether the book has the order (it may have been full).
    remembered: bool,
    paid: bool,
    faults: Faults,
    delay: Duration,
    retries: Retries,
    pid: Box<str>,
    key: Secret,
    money_as_float: bool,
}

impl Buyer {
    pub fn new(
        b: &Behavior,
        account: &EpayGateway,
        order: Arc<Booked>,
        remembered: bool,
        paid: bool,
        faults: Faults,
    ) -> Buyer {
        Buyer {
            order,
            remembered,
            paid,
            faults,
            delay: Duration::from_millis(b.notify_delay_ms),
            retries: Retries::of(b),
            pid: account.pid.clone(),
            key: account.key.clone(),
            money_as_float: account.money_as_float,
        }
    }

    /// `money` as this gateway writes it.
    fn money(&self, fen: u64) -> String {
        if self.money_as_float {
            float(fen)
        } else {
            yuan(fen)
        }
    }

    /// A notification's URL: the order's `notify_url` with the parameters
    /// appended, `money` stating `fen`, signed with `key`.
    fn notification(&self, fen: u64, key: &str) -> Option<Uri> {
        signed_url(&self.order.notify_url, &self.pid, &self.order, &self.money(fen), key)
    }
}

/// `base` with a paid order's parameters appended, signed with `key`: a
/// notification's URL, or the browser's way back to `return_url`.
pub(super) fn signed_url(base: &str, pid: &str, o: &Booked, money: &str, key: &str) -> Option<Uri> {
    let mut params: Vec<(&str, &str)> = vec![
        ("pid", pid),
        ("trade_no", &o.trade_no),
        ("out_trade_no", &o.out_trade_no),
        ("type", &o.pay_type),
        ("name", &o.name),
        ("money", money),
        ("trade_status", "TRADE_SUCCESS"),
    ];
    if !o.param.is_empty() {
        params.push(("param", &o.param));
    }
    let signature = sign(params.iter().copied(), key);
    params.push(("sign", &signature));
    params.push(("sign_type", "MD5"));
    let joint = match base.find('?') {
        None => "?",
        Some(q) if q + 1 == base.len() || base.ends_with('&') => "",
        Some(_) => "&",
    };
    format!("{base}{joint}{}", form::encode(params)).parse().ok()
}

/// Starts the buyer's task.
pub(super) fn schedule(state: &Arc<State>, buyer: Buyer) {
    delivery::spawn(state, |state| async move { run(&state, buyer).await });
}

async fn run(state: &State, buyer: Buyer) {
    tokio::time::sleep(buyer.delay).await;
    let c = &state.counters;
    let o = &buyer.order;
    if buyer.paid {
        // An order the book never held (it was full) is still paid, and announced.
        if buyer.remembered {
            state.epay.pay(o, state.clock.now_ms());
        }
        c.settled_paid.bump();
    } else {
        c.settled_failed.bump();
    }
    if buyer.paid && buyer.faults.lost {
        c.notify_lost.bump();
        return;
    }
    if !buyer.paid && !buyer.faults.forged {
        return;
    }
    if http_uri(&o.notify_url).is_none() {
        tracing::warn!(url = %o.notify_url, "mock epay gateway: notify_url is not an http:// URL; not notifying");
        c.notify_undelivered.bump();
        return;
    }
    let key = buyer.key.text();

    if buyer.faults.forged {
        c.notify_forged.bump();
        let forged_key = format!("{key}-forged");
        if let Some(uri) = buyer.notification(o.fen, &forged_key) {
            if send(state, &message(uri), buyer.retries.once()).await {
                c.forged_accepted.bump();
            }
        }
    }
    if !buyer.paid {
        return;
    }
    if buyer.faults.wrong_amount {
        c.notify_wrong_amount.bump();
        if let Some(uri) = buyer.notification(o.fen.saturating_add(1), key) {
            deliver(state, &message(uri), buyer.retries).await;
        }
    }
    c.notify_sent.bump();
    let Some(uri) = buyer.notification(o.fen, key) else {
        c.notify_undelivered.bump();
        return;
    };
    let genuine = message(uri);
    deliver(state, &genuine, buyer.retries).await;
    if buyer.faults.repeated {
        c.notify_repeated.bump();
        deliver(state, &genuine, buyer.retries).await;
    }
}

fn message(uri: Uri) -> Message {
    Message {
        method: Method::GET,
        uri,
        headers: HeaderMap::new(),
        body: Bytes::new(),
        acknowledged_by: Ack::BodySaysSuccess,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buyer(notify_url: &str, param: &str, money_as_float: bool) -> Buyer {
        let order = Arc::new(Booked {
            seq: 1,
            trade_no: "2024010100000000001".into(),
            out_trade_no: "T1".into(),
            pay_type: "alipay".into(),
            name: "商品 a&b".into(),
            fen: 150,
            notify_url: notify_url.into(),
            return_url: "".into(),
            param: param.into(),
            addtime: "2024-01-01 00:00:00".into(),
        });
        let account = EpayGateway {
            money_as_float,
            ..EpayGateway::new("1001", "KEY")
        };
        Buyer::new(&Behavior::default(), &account, order, true, true, Faults::default())
    }

    #[test]
    fn notifications_are_signed_get_urls() {
        let b = buyer("http://shop/n", "", false);
        let uri = b.notification(150, "KEY").expect("uri");
        let query = uri.query().expect("query");
        assert!(query.starts_with("pid=1001&trade_no=2024010100000000001&out_trade_no=T1&type=alipay&name=%E5%95%86%E5%93%81+a%26b&money=1.50&trade_status=TRADE_SUCCESS&sign="), "{query}");
        assert!(query.ends_with("&sign_type=MD5"));
        let params = form::parse(query.as_bytes());
        assert!(!params.contains_key("param"), "no param when the order had none");
        assert!(crate::epay::verify(form::pairs(&params), "KEY"));
        assert!(!crate::epay::verify(form::pairs(&params), "OTHER"));

        let float = buyer("http://shop/n?shop=1", "p=1", true);
        let uri = float.notification(100, "KEY").expect("uri");
        let params = form::parse(uri.query().unwrap_or_default().as_bytes());
        assert_eq!((params["money"].as_str(), params["param"].as_str()), ("1", "p=1"));
        assert_eq!(params["shop"], "1", "the URL's own query is kept");
        let trailing = buyer("http://shop/n?", "", true).notification(100, "KEY").expect("uri");
        assert!(trailing.query().unwrap_or_default().starts_with("pid=1001&"));
    }
}
