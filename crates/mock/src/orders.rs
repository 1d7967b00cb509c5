//! The simulation's order book: what each payment said (order id, amount,
//! currency, payroute's trade number), what the mock made of it
//! (`processing`, `paid`, `failed`) and when, for queries, reversals,
//! notifications and the statements.
//!
//! Why it is built so:
//!
//! * Payments are keyed by payroute's trade number when they carry
//!   `x-payroute-trade-no` (two merchants may share an order id, a trade
//!   number names one payment), else by order id; a second, smaller map
//!   finds a trade-numbered payment by its order id. Both are sharded
//!   `DashMap`s, and the size is tracked in an atomic (asking a `DashMap`
//!   for its length locks every shard).
//! * What a payment said never changes once answered, so it is shared as an
//!   `Arc<Facts>` between the book and a pending payment's notification task;
//!   only its state changes, in the book.
//! * Memory is bounded: past [`ORDERS_CAP`] new payments are answered but not
//!   remembered (a query for them answers 404), which matters more in a long
//!   load test than perfect recall. A refused payment is never remembered:
//!   the acquirer has nothing to say about it later (a query answers 404,
//!   "never charged").
//! * A payment is charged when it becomes paid: at its answer when paid at
//!   once, at its decision when pending. Each entry keeps the time it
//!   entered its state, which for a paid one is that charge time
//!   ([`Charge`], the statement files). A reversal forgets the payment, so
//!   it is on no statement, as a channel that voided it the same day lists
//!   nothing.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use dashmap::DashMap;
use http::request::Parts;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Most payments remembered.
const ORDERS_CAP: usize = 100_000;

/// The header payroute names its payment with on every upstream request.
const TRADE_NO_HEADER: &str = "x-payroute-trade-no";

/// What the mock made of a payment, as its queries say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    Processing,
    Paid,
    Failed,
}

impl Status {
    pub fn word(self) -> &'static str {
        match self {
            Status::Processing => "processing",
            Status::Paid => "paid",
            Status::Failed => "failed",
        }
    }
}

/// An order id as the payment sent it: echoed back with its JSON type,
/// looked up as text (so `42` and `"42"` are the same order for a query,
/// whose id comes from the path).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum OrderId {
    Str(String),
    Num(serde_json::Number),
}

impl OrderId {
    fn text(&self) -> Cow<'_, str> {
        match self {
            OrderId::Str(s) => Cow::Borrowed(s),
            OrderId::Num(n) => Cow::Owned(n.to_string()),
        }
    }

    fn to_value(&self) -> Value {
        match self {
            OrderId::Str(s) => Value::String(s.clone()),
            OrderId::Num(n) => Value::Number(n.clone()),
        }
    }
}

impl Serialize for OrderId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            OrderId::Str(v) => s.serialize_str(v),
            OrderId::Num(v) => v.serialize(s),
        }
    }
}

/// What one payment said, and the id the mock gave it.
#[derive(Debug)]
pub(crate) struct Facts {
    /// Order of arrival: sorts the statement.
    pub seq: u64,
    /// The acquirer's own id for the payment (`"id"` in every answer).
    pub id: Box<str>,
    pub order_id: Option<OrderId>,
    /// payroute's trade number, from `x-payroute-trade-no`.
    pub trade_no: Option<Box<str>>,
    /// A JSON number or string, as sent.
    pub amount: Option<Value>,
    pub currency: Option<Box<str>>,
}

#[derive(Deserialize)]
struct PaymentBody {
    // Other fields are skipped by serde without being materialised.
    #[serde(default)]
    order_id: Option<Value>,
    #[serde(default)]
    amount: Option<Value>,
    #[serde(default)]
    currency: Option<Value>,
}

impl Facts {
    /// Reads a payment. Anything unexpected (not JSON, a field missing or of
    /// another type) leaves that fact out, never an error: a bad body is
    /// still a payment.
    pub fn read(seq: u64, port: u16, parts: &Parts, body: &[u8]) -> Facts {
        let parsed: Option<PaymentBody> = serde_json::from_slice(body).ok();
        let (order_id, amount, currency) = match parsed {
            Some(p) => (
                match p.order_id {
                    Some(Value::String(s)) => Some(OrderId::Str(s)),
                    Some(Value::Number(n)) => Some(OrderId::Num(n)),
                    _ => None,
                },
                p.amount.filter(|a| a.is_number() || a.is_string()),
                match p.currency {
                    Some(Value::String(c)) => Some(c.into_boxed_str()),
                    _ => None,
                },
            ),
            None => (None, None, None),
        };
        let trade_no = parts
            .headers
            .get(TRADE_NO_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(Box::from);
        Facts {
            seq,
            id: format!("m{port}t{seq}").into_boxed_str(),
            order_id,
            trade_no,
            amount,
            currency,
        }
    }

    /// The order id as text (a number as it was written).
    pub fn order_id_text(&self) -> Option<String> {
        self.order_id.as_ref().map(|o| o.text().into_owned())
    }

    /// The key it is remembered under: trade number, else order id.
    fn key(&self) -> Option<Cow<'_, str>> {
        match (&self.trade_no, &self.order_id) {
            (Some(t), _) => Some(Cow::Borrowed(t)),
            (None, Some(o)) => Some(o.text()),
            (None, None) => None,
        }
    }

    /// The JSON the mock says about this payment: an answer (with `acquirer`)
    /// or a notification (without). `amount` replaces the payment's own
    /// (a wrong-amount notification). Absent facts are `null`, so every
    /// answer keeps its shape; `trade_no` only appears when payroute sent one.
    pub fn to_json(&self, status: &str, acquirer: Option<&str>, amount: Option<&Value>) -> Bytes {
        to_json(&Wire {
            status,
            id: &self.id,
            order_id: self.order_id.as_ref(),
            trade_no: self.trade_no.as_deref(),
            amount: amount.or(self.amount.as_ref()),
            currency: self.currency.as_deref(),
            acquirer,
        })
    }
}

#[derive(Serialize)]
struct Wire<'a> {
    status: &'a str,
    id: &'a str,
    order_id: Option<&'a OrderId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trade_no: Option<&'a str>,
    amount: Option<&'a Value>,
    currency: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    acquirer: Option<&'a str>,
}

pub(crate) fn to_json<T: Serialize + ?Sized>(value: &T) -> Bytes {
    // Serialising these plain structs into a Vec cannot fail; an empty
    // object is a harmless fallback rather than a panic path.
    serde_json::to_vec(value).map_or_else(|_| Bytes::from_static(b"{}"), Bytes::from)
}

/// One paid payment on the acquirer's statement (`GET /-/statement`,
/// [`crate::MockAcquirer::statement`]), oldest first.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StatementLine {
    /// When the acquirer charged it, Unix milliseconds (a JSON payment: paid
    /// at its answer, or at its decision when pending; an epay order: when
    /// its buyer paid).
    pub charged_ms: i64,
    /// The acquirer's id for the payment.
    pub id: String,
    /// As the payment sent it (string or number); `null` if it had none.
    pub order_id: Value,
    /// payroute's trade number (`x-payroute-trade-no`), if it sent one.
    pub trade_no: Option<String>,
    /// As the payment sent it (number or string); `null` if it had none.
    pub amount: Value,
    pub currency: Option<String>,
    /// Always `"paid"`: only paid payments are on the statement.
    pub status: &'static str,
}

/// One charge as the statement files list it: payroute's trade number and
/// the amount in fen, read from what the payment said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Charge {
    /// Order of arrival: breaks ties between charges of the same millisecond.
    pub seq: u64,
    pub charged_ms: i64,
    /// The acquirer's id for it.
    pub id: String,
    /// payroute's trade number.
    pub trade_no: String,
    pub fen: u64,
}

/// Fen in a JSON payment's amount: minor units, as a JSON integer or a
/// string of digits. Anything else (a fraction, a sign, a float) is not an
/// amount a statement can list.
pub(crate) fn fen_of(amount: &Value) -> Option<u64> {
    match amount {
        Value::Number(n) => n.as_u64(),
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s.parse().ok(),
        _ => None,
    }
}

struct Entry {
    facts: Arc<Facts>,
    status: Status,
    /// When it entered `status`, Unix milliseconds: for a paid payment, when
    /// it was charged.
    since_ms: i64,
}

#[derive(Default)]
pub(crate) struct Orders {
    by_key: DashMap<Box<str>, Entry>,
    /// Order id → key, for payments keyed by their trade number.
    by_order: DashMap<Box<str>, Box<str>>,
    len: AtomicUsize,
    seq: AtomicU64,
}

impl Orders {
    /// The next payment's sequence number (from 1).
    pub fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Remembers a payment in `status` since `now_ms` (replacing an earlier
    /// one under the same key); whether it is remembered (not when it has no
    /// key, or the book is full).
    pub fn remember(&self, facts: &Arc<Facts>, status: Status, now_ms: i64) -> bool {
        let Some(key) = facts.key() else {
            return false;
        };
        // Exact up to races between the check and the insert (a few over).
        if self.len.load(Ordering::Relaxed) >= ORDERS_CAP && !self.by_key.contains_key(&*key) {
            return false;
        }
        let key: Box<str> = key.into();
        if let (Some(_), Some(order)) = (&facts.trade_no, &facts.order_id) {
            self.by_order.insert(order.text().into(), key.clone());
        }
        let entry = Entry {
            facts: facts.clone(),
            status,
            since_ms: now_ms,
        };
        if self.by_key.insert(key, entry).is_none() {
            self.len.fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    /// A payment by trade number or order id (a path segment), with its state.
    pub fn find(&self, segment: &str) -> Option<(Arc<Facts>, Status)> {
        let read = |key: &str| self.by_key.get(key).map(|e| (e.facts.clone(), e.status));
        read(segment).or_else(|| {
            // Cloned out first: never hold a guard of one map while reading the other.
            let key = self.by_order.get(segment).map(|k| k.value().clone())?;
            read(&key)
        })
    }

    /// Moves a remembered payment to its decided state at `now_ms`; `false`
    /// if it is no longer in the book (reversed meanwhile). A newer payment
    /// under the same key is left alone.
    pub fn settle(&self, facts: &Facts, status: Status, now_ms: i64) -> bool {
        let Some(key) = facts.key() else {
            return false;
        };
        match self.by_key.get_mut(&*key) {
            Some(mut entry) => {
                if entry.facts.seq == facts.seq {
                    entry.status = status;
                    entry.since_ms = now_ms;
                }
                true
            }
            None => false,
        }
    }

    /// Forgets a payment named by trade number or order id; the sequence
    /// number of the payment forgotten, if there was one.
    pub fn forget(&self, segment: &str) -> Option<u64> {
        let removed = match self.by_key.remove(segment) {
            Some(removed) => Some(removed),
            None => match self.by_order.remove(segment) {
                Some((_, key)) => self.by_key.remove(&key),
                None => None,
            },
        };
        let (key, entry) = removed?;
        self.len.fetch_sub(1, Ordering::Relaxed);
        if let (Some(_), Some(order)) = (&entry.facts.trade_no, &entry.facts.order_id) {
            self.by_order.remove_if(&*order.text(), |_, k| *k == key);
        }
        Some(entry.facts.seq)
    }

    /// The paid payments with their charge times, in order of arrival.
    fn paid(&self) -> Vec<(Arc<Facts>, i64)> {
        let mut paid: Vec<(Arc<Facts>, i64)> = self
            .by_key
            .iter()
            .filter(|e| e.status == Status::Paid)
            .map(|e| (e.facts.clone(), e.since_ms))
            .collect();
        paid.sort_by_key(|(f, _)| f.seq);
        paid
    }

    /// The paid payments, oldest first.
    pub fn statement(&self) -> Vec<StatementLine> {
        self.paid()
            .iter()
            .map(|(f, charged_ms)| StatementLine {
                charged_ms: *charged_ms,
                id: f.id.to_string(),
                order_id: f.order_id.as_ref().map_or(Value::Null, OrderId::to_value),
                trade_no: f.trade_no.as_deref().map(str::to_owned),
                amount: f.amount.clone().unwrap_or(Value::Null),
                currency: f.currency.as_deref().map(str::to_owned),
                status: "paid",
            })
            .collect()
    }

    /// The paid payments a statement file can list: those with a trade
    /// number and an amount in fen.
    pub fn charges(&self) -> Vec<Charge> {
        self.paid()
            .into_iter()
            .filter_map(|(f, charged_ms)| {
                Some(Charge {
                    seq: f.seq,
                    charged_ms,
                    id: f.id.to_string(),
                    trade_no: f.trade_no.as_deref()?.to_owned(),
                    fen: fen_of(f.amount.as_ref()?)?,
                })
            })
            .collect()
    }
}

/// One more than `amount`, keeping its JSON type (and a decimal string's
/// number of decimals); `1` when the payment stated none.
pub(crate) fn plus_one(amount: Option<&Value>) -> Value {
    match amount {
        Some(Value::Number(n)) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => Value::from(u.saturating_add(1)),
            (None, Some(i), _) => Value::from(i.saturating_add(1)),
            (None, None, Some(f)) => Value::from(f + 1.0),
            _ => Value::from(1),
        },
        Some(Value::String(s)) => {
            let decimals = s.split_once('.').map_or(0, |(_, d)| d.len());
            match s.trim().parse::<f64>() {
                Ok(f) => Value::String(format!("{:.*}", decimals, f + 1.0)),
                Err(_) => Value::String(format!("{s}1")),
            }
        }
        _ => Value::from(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn facts(seq: u64, trade_no: Option<&str>, body: &str) -> Arc<Facts> {
        let mut req = Request::post("/pay");
        if let Some(t) = trade_no {
            req = req.header(TRADE_NO_HEADER, t);
        }
        let (parts, ()) = req.body(()).expect("request").into_parts();
        Arc::new(Facts::read(seq, 9001, &parts, body.as_bytes()))
    }

    #[test]
    fn reads_what_a_payment_says() {
        let f = facts(
            7,
            Some("T1"),
            r#"{"order_id":42,"amount":"10.50","currency":"CNY","x":[1]}"#,
        );
        assert_eq!(&*f.id, "m9001t7");
        assert_eq!(f.order_id, Some(OrderId::Num(42.into())));
        assert_eq!(f.amount, Some(Value::from("10.50")));
        assert_eq!(
            (f.currency.as_deref(), f.trade_no.as_deref()),
            (Some("CNY"), Some("T1"))
        );
        let odd = facts(1, None, r#"{"order_id":[1],"amount":true,"currency":3}"#);
        assert!(odd.order_id.is_none() && odd.amount.is_none() && odd.currency.is_none());
        let wire: Value = serde_json::from_slice(&f.to_json("paid", Some("a"), None)).expect("json");
        assert_eq!(
            wire,
            serde_json::json!({"status":"paid","id":"m9001t7","order_id":42,"trade_no":"T1",
                               "amount":"10.50","currency":"CNY","acquirer":"a"})
        );
    }

    #[test]
    fn finds_by_trade_number_or_order_id_and_forgets() {
        let book = Orders::default();
        let a = facts(1, Some("T1"), r#"{"order_id":"o-1","amount":5}"#);
        let b = facts(2, None, r#"{"order_id":"o-2","amount":6}"#);
        assert!(book.remember(&a, Status::Processing, 1_000));
        assert!(book.remember(&b, Status::Paid, 2_000));
        assert!(
            !book.remember(&facts(3, None, "{}"), Status::Paid, 3_000),
            "nothing to key it by"
        );
        assert_eq!(book.find("T1").map(|(f, s)| (f.seq, s)), Some((1, Status::Processing)));
        assert_eq!(book.find("o-1").map(|(f, _)| f.seq), Some(1));
        assert_eq!(book.find("o-2").map(|(_, s)| s), Some(Status::Paid));
        assert!(book.settle(&a, Status::Paid, 4_000));
        let lines = book.statement();
        assert_eq!(
            lines.iter().map(|l| (l.id.as_str(), l.charged_ms)).collect::<Vec<_>>(),
            [("m9001t1", 4_000), ("m9001t2", 2_000)],
            "charged when decided paid, listed in order of arrival"
        );
        assert_eq!(lines[0].trade_no.as_deref(), Some("T1"));
        assert_eq!(lines[1].amount, Value::from(6));
        // Only the one with a trade number can be listed in a statement file.
        assert_eq!(
            book.charges(),
            [Charge {
                seq: 1,
                charged_ms: 4_000,
                id: "m9001t1".into(),
                trade_no: "T1".into(),
                fen: 5
            }]
        );
        book.forget("o-1");
        assert!(book.find("T1").is_none() && book.find("o-1").is_none());
        assert!(!book.settle(&a, Status::Failed, 5_000), "a forgotten payment is gone");
        assert!(book.charges().is_empty());
        assert_eq!(book.len.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn amounts_in_fen_are_whole_numbers() {
        assert_eq!(fen_of(&Value::from(1234)), Some(1234));
        assert_eq!(fen_of(&Value::from("1234")), Some(1234));
        assert_eq!(fen_of(&Value::from("007")), Some(7));
        for not_fen in [
            Value::from(-3),
            Value::from(10.5),
            Value::from("10.50"),
            Value::from(""),
            Value::from("-1"),
            Value::from(" 1"),
            Value::from("99999999999999999999"),
            Value::Null,
        ] {
            assert_eq!(fen_of(&not_fen), None, "{not_fen}");
        }
    }

    #[test]
    fn amounts_plus_one_keep_their_type() {
        assert_eq!(plus_one(Some(&Value::from(1234))), Value::from(1235));
        assert_eq!(plus_one(Some(&Value::from(-3))), Value::from(-2));
        assert_eq!(plus_one(Some(&Value::from(1.5))), Value::from(2.5));
        assert_eq!(plus_one(Some(&Value::from("10.50"))), Value::from("11.50"));
        assert_eq!(plus_one(Some(&Value::from("7"))), Value::from("8"));
        assert_eq!(plus_one(None), Value::from(1));
    }
}
