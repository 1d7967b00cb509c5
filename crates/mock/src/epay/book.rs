//! The gateway's order book: what each created order said, and whether its
//! buyer has paid — for `api.php?act=order`, the notifications and the
//! statement.
//!
//! Why it is built so: epay names an order by the merchant's `out_trade_no`
//! (unique per merchant: a second creation with the same one is refused) or
//! by the gateway's own `trade_no`, so the book is a sharded map by
//! `out_trade_no` and a second one from `trade_no` to it, like the JSON
//! simulation's order book. What an order said never changes and is shared
//! (`Arc`) with its buyer's task; only its payment time changes, in the
//! book: kept as the Unix millisecond the buyer paid (the statements' charge
//! time) and as the `endtime` text `api.php` answers, made from it. It is bounded the same way: past [`BOOK_CAP`] orders are created
//! but not remembered (a query answers `code` -1).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::mapref::entry::Entry as Slot;
use dashmap::DashMap;
use serde_json::Value;

use super::clock::Stamp;
use super::money::yuan;
use crate::orders::{Charge, StatementLine};

/// Most orders remembered.
const BOOK_CAP: usize = 100_000;

/// One order as the gateway created it.
#[derive(Debug)]
pub(crate) struct Booked {
    /// Order of arrival, shared with the JSON simulation's payments.
    pub seq: u64,
    /// The gateway's number for it.
    pub trade_no: Box<str>,
    pub out_trade_no: Box<str>,
    /// epay's `type`: `alipay`, `wxpay`, …
    pub pay_type: Box<str>,
    /// As received, cut at 127 bytes as the gateway's database does.
    pub name: Box<str>,
    pub fen: u64,
    pub notify_url: Box<str>,
    pub return_url: Box<str>,
    /// Empty when the merchant sent none.
    pub param: Box<str>,
    /// `YYYY-MM-DD HH:MM:SS`, Beijing time.
    pub addtime: Box<str>,
}

/// An order and, once its buyer paid, when (`endtime`, and `paid_ms`).
#[derive(Clone, Debug)]
pub(crate) struct Found {
    pub order: Arc<Booked>,
    /// `YYYY-MM-DD HH:MM:SS`, Beijing time.
    pub endtime: Option<Box<str>>,
    /// Unix milliseconds.
    pub paid_ms: Option<i64>,
}

/// Why an order was not created.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Its `out_trade_no` is already an order.
    Exists,
}

#[derive(Default)]
pub(crate) struct Book {
    by_out: DashMap<Box<str>, Found>,
    /// `trade_no` → `out_trade_no`.
    by_trade: DashMap<Box<str>, Box<str>>,
    len: AtomicUsize,
}

impl Book {
    /// Books an order, unless its `out_trade_no` is taken. `Ok(false)`: created
    /// but not remembered (the book is full).
    pub fn create(&self, order: &Arc<Booked>) -> Result<bool, Refused> {
        // Exact up to races between the check and the insert (a few over).
        if self.len.load(Ordering::Relaxed) >= BOOK_CAP {
            return match self.by_out.contains_key(&order.out_trade_no) {
                true => Err(Refused::Exists),
                false => Ok(false),
            };
        }
        match self.by_out.entry(order.out_trade_no.clone()) {
            Slot::Occupied(_) => return Err(Refused::Exists),
            Slot::Vacant(slot) => {
                slot.insert(Found {
                    order: order.clone(),
                    endtime: None,
                    paid_ms: None,
                });
            }
        }
        // The other map only after the first's guard is gone: never hold both.
        self.by_trade.insert(order.trade_no.clone(), order.out_trade_no.clone());
        self.len.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// An order by the gateway's `trade_no` (preferred) or the merchant's
    /// `out_trade_no`.
    pub fn find(&self, trade_no: Option<&str>, out_trade_no: Option<&str>) -> Option<Found> {
        let out: Box<str> = match (trade_no, out_trade_no) {
            (Some(t), _) => self.by_trade.get(t)?.value().clone(),
            (None, Some(o)) => o.into(),
            (None, None) => return None,
        };
        self.by_out.get(&out).map(|f| f.value().clone())
    }

    /// Marks an order paid at `paid_ms` (Unix milliseconds); whether the
    /// book has it.
    pub fn pay(&self, order: &Booked, paid_ms: i64) -> bool {
        match self.by_out.get_mut(&order.out_trade_no) {
            Some(mut found) if found.order.seq == order.seq => {
                found.endtime = Some(Stamp::at_ms(paid_ms).text().into());
                found.paid_ms = Some(paid_ms);
                true
            }
            _ => false,
        }
    }

    /// The paid orders, oldest first, as statement lines: `id` the
    /// gateway's `trade_no`, `order_id` and `trade_no` the `out_trade_no`
    /// (payroute's trade number), `amount` the money in yuan (`"1.00"`),
    /// currency CNY.
    pub fn statement(&self) -> Vec<StatementLine> {
        self.paid()
            .iter()
            .map(|(o, paid_ms)| StatementLine {
                charged_ms: *paid_ms,
                id: o.trade_no.to_string(),
                order_id: Value::String(o.out_trade_no.to_string()),
                trade_no: Some(o.out_trade_no.to_string()),
                amount: Value::String(yuan(o.fen)),
                currency: Some("CNY".to_owned()),
                status: "paid",
            })
            .collect()
    }

    /// The paid orders as charges: the `out_trade_no` is payroute's trade
    /// number, the money exact in fen.
    pub fn charges(&self) -> Vec<Charge> {
        self.paid()
            .into_iter()
            .map(|(o, paid_ms)| Charge {
                seq: o.seq,
                charged_ms: paid_ms,
                id: o.trade_no.to_string(),
                trade_no: o.out_trade_no.to_string(),
                fen: o.fen,
            })
            .collect()
    }

    /// The paid orders with their payment times, in order of creation.
    fn paid(&self) -> Vec<(Arc<Booked>, i64)> {
        let mut paid: Vec<(Arc<Booked>, i64)> = self
            .by_out
            .iter()
            .filter_map(|f| Some((f.order.clone(), f.paid_ms?)))
            .collect();
        paid.sort_by_key(|(o, _)| o.seq);
        paid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(seq: u64, out: &str) -> Arc<Booked> {
        Arc::new(Booked {
            seq,
            trade_no: format!("G{seq}").into(),
            out_trade_no: out.into(),
            pay_type: "alipay".into(),
            name: "n".into(),
            fen: 150,
            notify_url: "".into(),
            return_url: "".into(),
            param: "".into(),
            addtime: "2024-01-01 00:00:00".into(),
        })
    }

    #[test]
    fn books_finds_pays_and_lists() {
        let book = Book::default();
        let (a, b) = (order(1, "T1"), order(2, "T2"));
        assert_eq!(book.create(&a), Ok(true));
        assert_eq!(book.create(&b), Ok(true));
        assert_eq!(book.create(&order(3, "T1")), Err(Refused::Exists));
        let by_trade = book.find(Some("G1"), None).map(|f| f.order.seq);
        let by_out = book.find(None, Some("T1")).map(|f| f.order.seq);
        assert_eq!((by_trade, by_out), (Some(1), Some(1)));
        // trade_no wins when both are given.
        assert_eq!(book.find(Some("G2"), Some("T1")).map(|f| f.order.seq), Some(2));
        assert!(book.find(Some("nope"), Some("T1")).is_none());
        assert!(book.find(None, None).is_none());
        assert!(book.statement().is_empty());
        // 2024-01-01 00:00:09.250 in Beijing.
        let paid_ms = 1_704_038_409_250;
        assert!(book.pay(&b, paid_ms));
        assert!(!book.pay(&order(9, "T9"), paid_ms), "not in the book");
        let found = book.find(None, Some("T2")).expect("T2");
        assert_eq!(found.endtime.as_deref(), Some("2024-01-01 00:00:09"));
        let lines = book.statement();
        assert_eq!(lines.len(), 1);
        assert_eq!(
            (lines[0].id.as_str(), lines[0].trade_no.as_deref(), &lines[0].amount),
            ("G2", Some("T2"), &Value::from("1.50"))
        );
        assert_eq!(lines[0].charged_ms, paid_ms);
        assert_eq!(
            book.charges(),
            [Charge {
                seq: 2,
                charged_ms: paid_ms,
                id: "G2".into(),
                trade_no: "T2".into(),
                fen: 150
            }]
        );
    }
}
