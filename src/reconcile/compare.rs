//! The comparison itself: a channel's statement against the journal, one
//! trade number at a time, free of I/O so every rule is tested on its own.
//!
//! The journal's side is the channel's business day: every payment of the
//! channel paid that day, held in a vector sorted by trade number (the one
//! thing kept whole, since statement rows come in any order; ~100 bytes a
//! payment, where a hash map's power-of-two table and its doubling held
//! three times that at a million). Statement rows are folded into it
//! as they stream by; rows for trade numbers outside the day (paid on
//! another day, another channel's, unknown) are set aside and looked up in
//! the journal by number at the end. Then each trade number is judged once
//! by [`judge`], which reports at most one difference per trade number —
//! the most telling: a payment missing or in another state, then a wrong
//! amount, then a wrong fee (a fee is only meaningful on the right amount).

use std::collections::HashMap;

use super::statement::{Row, RowKind};
use crate::journal::{ReconRow, State};

/// The five kinds of difference (contract: "Reconciliation").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Kind {
    /// 长款: the channel collected a payment payroute has no record of.
    MissingInJournal,
    /// 短款: payroute says paid; the statement has no row for it.
    MissingAtChannel,
    AmountMismatch,
    /// Both have it, in different states (paid at the channel, declined or
    /// pending or reversed in the journal; or the other way round).
    StatusMismatch,
    /// The fee charged differs from the expected one by more than one fen.
    FeeMismatch,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::MissingInJournal,
        Kind::MissingAtChannel,
        Kind::AmountMismatch,
        Kind::StatusMismatch,
        Kind::FeeMismatch,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::MissingInJournal => "missing_in_journal",
            Kind::MissingAtChannel => "missing_at_channel",
            Kind::AmountMismatch => "amount_mismatch",
            Kind::StatusMismatch => "status_mismatch",
            Kind::FeeMismatch => "fee_mismatch",
        }
    }
}

/// One difference, with both sides' facts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Difference {
    pub kind: Kind,
    pub trade_no: String,
    /// The statement line of its first row; `None` when the statement has none.
    pub line: Option<u64>,
    /// `None`: not in the journal.
    pub journal_state: Option<&'static str>,
    /// What the statement says: `paid`, `refund`, the row's status, or nothing.
    pub channel_status: Option<String>,
    pub journal_amount: Option<i64>,
    pub channel_amount: Option<i64>,
    pub expected_fee: Option<i64>,
    pub channel_fee: Option<i64>,
    pub detail: String,
}

/// What the statement says about one trade number, all its rows together.
/// `first_line` 0: no row yet.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    first_line: u64,
    paid_rows: u32,
    has_fee: bool,
    paid_amount: i64,
    fee: i64,
    refunded: i64,
    /// The status of a row that is neither paid nor refund.
    other: Option<Box<str>>,
}

impl Seen {
    fn add(&mut self, row: &Row) {
        if self.first_line == 0 {
            self.first_line = row.line;
        }
        match &row.kind {
            RowKind::Paid => {
                self.paid_rows += 1;
                self.paid_amount += row.amount;
                if let Some(fee) = row.fee {
                    self.has_fee = true;
                    self.fee += fee;
                }
            }
            RowKind::Refund => self.refunded += row.amount,
            RowKind::Other(status) => {
                if self.other.is_none() {
                    self.other = Some(status.as_str().into());
                }
            }
        }
    }

    fn any(&self) -> bool {
        self.first_line != 0
    }

    fn fee(&self) -> Option<i64> {
        self.has_fee.then_some(self.fee)
    }

    fn status(&self) -> String {
        match (&self.other, self.paid_rows, self.refunded) {
            (_, n, _) if n > 0 => "paid".into(),
            (_, _, r) if r > 0 => "refund".into(),
            (Some(other), _, _) => other.to_string(),
            _ => String::new(),
        }
    }
}

/// What the journal says of one payment: all a judgement needs, kept
/// small (a day may hold millions; its trade number is the map's key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Journaled {
    amount: i64,
    expected_fee: i64,
    refunded_amount: i64,
    state: State,
}

impl From<&ReconRow> for Journaled {
    fn from(p: &ReconRow) -> Journaled {
        Journaled {
            amount: p.amount,
            expected_fee: p.expected_fee,
            refunded_amount: p.refunded_amount,
            state: p.state,
        }
    }
}

/// A journal payment of the day, with what the statement said of it.
struct Booked {
    trade_no: Box<str>,
    payment: Journaled,
    seen: Seen,
}

/// The comparison of one business day.
pub(crate) struct Books {
    /// Sorted by trade number once the first row comes.
    day: Vec<Booked>,
    sorted: bool,
    /// Rows whose trade number is not among the day's payments.
    strays: HashMap<Box<str>, Seen>,
    totals: Totals,
}

/// The day's money, for the summary and the effective fee.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Totals {
    /// Statement data rows.
    pub rows: u64,
    /// Trade numbers that matched in every respect.
    pub matched: u64,
    /// Sum of paid rows' amounts.
    pub paid_amount: i64,
    /// Of the paid rows that state a fee: their amounts and their fees.
    pub fee_base: i64,
    pub fees_charged: i64,
    /// What the journal expected those payments to cost.
    pub fees_expected: i64,
}

impl Books {
    /// The day's payments, as the journal has them.
    pub fn new() -> Books {
        Books {
            day: Vec::new(),
            sorted: false,
            strays: HashMap::new(),
            totals: Totals::default(),
        }
    }

    pub fn book(&mut self, payment: ReconRow) {
        self.sorted = false;
        self.day.push(Booked {
            payment: Journaled::from(&payment),
            trade_no: payment.trade_no.into_boxed_str(),
            seen: Seen::default(),
        });
    }

    pub fn booked(&self) -> usize {
        self.day.len()
    }

    /// Folds in one statement row.
    pub fn row(&mut self, row: &Row) {
        self.totals.rows += 1;
        if row.kind == RowKind::Paid {
            self.totals.paid_amount += row.amount;
            if let Some(fee) = row.fee {
                self.totals.fee_base += row.amount;
                self.totals.fees_charged += fee;
            }
        }
        if !self.sorted {
            self.day.sort_unstable_by(|a, b| a.trade_no.cmp(&b.trade_no));
            self.sorted = true;
        }
        match self.day.binary_search_by(|b| (*b.trade_no).cmp(row.trade_no.as_str())) {
            Ok(i) => self.day[i].seen.add(row),
            Err(_) => self.strays.entry(row.trade_no.as_str().into()).or_default().add(row),
        }
    }

    /// Trade numbers to look up in the journal before [`finish`](Self::finish).
    pub fn strays(&self) -> impl Iterator<Item = &str> {
        self.strays.keys().map(|k| &**k)
    }

    /// Judges every trade number; `found` holds the journal's rows for the
    /// strays it has. Differences in statement order, then the journal's
    /// payments the statement lacks, by trade number.
    pub fn finish(mut self, found: Vec<ReconRow>) -> (Vec<Difference>, Totals) {
        let mut found: HashMap<String, Journaled> = found
            .into_iter()
            .map(|p| (Journaled::from(&p), p.trade_no))
            .map(|(j, t)| (t, j))
            .collect();
        let mut out = Vec::new();
        let mut matched = 0u64;
        let mut judge_one = |trade_no: &str, payment: Option<Journaled>, seen: Option<&Seen>, in_day: bool| match judge(
            trade_no, payment, seen, in_day,
        ) {
            Some(d) => out.push(d),
            None if seen.is_some() => matched += 1,
            None => {}
        };
        for booked in &self.day {
            let seen = booked.seen.any().then_some(&booked.seen);
            judge_one(&booked.trade_no, Some(booked.payment), seen, true);
        }
        for (trade_no, seen) in &self.strays {
            judge_one(trade_no, found.remove(&**trade_no), Some(seen), false);
        }
        out.sort_by(|a, b| {
            (a.line.is_none(), a.line, &a.trade_no, a.kind).cmp(&(b.line.is_none(), b.line, &b.trade_no, b.kind))
        });
        self.totals.matched = matched;
        self.totals.fees_expected = self
            .day
            .iter()
            .filter(|b| b.seen.has_fee)
            .map(|b| b.payment.expected_fee)
            .sum();
        (out, self.totals)
    }
}

/// The rules for one trade number. `in_day`: the journal dates the payment
/// paid on this business day, so the statement must list it.
fn judge(trade_no: &str, payment: Option<Journaled>, seen: Option<&Seen>, in_day: bool) -> Option<Difference> {
    let was_paid = |p: Journaled| matches!(p.state, State::Paid | State::Refunded);
    let diff = |kind: Kind, detail: String| {
        Some(Difference {
            kind,
            trade_no: trade_no.to_owned(),
            line: seen.map(|s| s.first_line),
            journal_state: payment.map(|p| p.state.as_str()),
            channel_status: seen.map(Seen::status),
            journal_amount: payment.map(|p| p.amount),
            channel_amount: seen.map(|s| s.paid_amount.max(s.refunded)),
            expected_fee: payment.map(|p| p.expected_fee),
            channel_fee: seen.and_then(Seen::fee),
            detail,
        })
    };
    let Some(seen) = seen else {
        // Only the day's payments get here: the statement has nothing of it.
        let p = payment?;
        return if in_day && was_paid(p) {
            diff(
                Kind::MissingAtChannel,
                "paid in the journal; not on the statement".into(),
            )
        } else {
            None
        };
    };
    let Some(p) = payment else {
        let what = if seen.paid_rows > 0 { "collected" } else { "listed" };
        return if seen.paid_rows > 0 || seen.refunded > 0 {
            diff(
                Kind::MissingInJournal,
                format!("{what} by the channel; no such payment in the journal"),
            )
        } else {
            // A failed or closed row of a payment payroute never had: no money moved.
            None
        };
    };
    if seen.paid_rows > 0 {
        if !was_paid(p) {
            return diff(
                Kind::StatusMismatch,
                format!("paid at the channel; {} in the journal", p.state),
            );
        }
        if seen.paid_rows > 1 {
            return diff(
                Kind::AmountMismatch,
                format!("collected {} times by the channel", seen.paid_rows),
            );
        }
        if seen.paid_amount != p.amount {
            return diff(Kind::AmountMismatch, "the channel collected another amount".into());
        }
    } else if was_paid(p) && in_day {
        return match &seen.other {
            Some(status) => diff(
                Kind::StatusMismatch,
                format!("{status:?} at the channel; {} in the journal", p.state),
            ),
            None => diff(
                Kind::MissingAtChannel,
                "paid in the journal; the statement lists only a refund".into(),
            ),
        };
    }
    if seen.refunded > p.refunded_amount {
        return if p.refunded_amount == 0 {
            diff(
                Kind::StatusMismatch,
                format!("refunded at the channel; {} in the journal, nothing refunded", p.state),
            )
        } else {
            diff(
                Kind::AmountMismatch,
                "the channel refunded more than the journal".into(),
            )
        };
    }
    match seen.fee() {
        Some(fee) if seen.paid_rows > 0 && (fee - p.expected_fee).abs() > 1 => diff(
            Kind::FeeMismatch,
            "the fee charged differs from the configured one by more than one fen".into(),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payment(trade_no: &str, state: State, amount: i64) -> ReconRow {
        ReconRow {
            trade_no: trade_no.into(),
            amount,
            expected_fee: amount * 3 / 1000,
            state,
            refunded_amount: if state == State::Refunded { amount } else { 0 },
            created_at_ms: 0,
        }
    }

    fn row(line: u64, trade_no: &str, amount: i64, fee: Option<i64>, kind: RowKind) -> Row {
        Row {
            line,
            trade_no: trade_no.into(),
            amount,
            fee,
            kind,
        }
    }

    fn kinds(day: Vec<ReconRow>, rows: Vec<Row>, found: Vec<ReconRow>) -> Vec<(Kind, String)> {
        let mut books = Books::new();
        for p in day {
            books.book(p);
        }
        for r in &rows {
            books.row(r);
        }
        let (diffs, _) = books.finish(found);
        diffs.into_iter().map(|d| (d.kind, d.trade_no)).collect()
    }

    #[test]
    fn a_clean_day_has_no_difference_and_counts_matches() {
        let mut books = Books::new();
        books.book(payment("T1", State::Paid, 10_000));
        books.book(payment("T2", State::Paid, 500));
        books.row(&row(3, "T1", 10_000, Some(30), RowKind::Paid));
        books.row(&row(4, "T2", 500, Some(2), RowKind::Paid));
        let (diffs, totals) = books.finish(vec![]);
        assert_eq!(diffs, vec![]);
        assert_eq!(totals.matched, 2);
        assert_eq!(
            (totals.fee_base, totals.fees_charged, totals.fees_expected),
            (10_500, 32, 31)
        );
    }

    #[test]
    fn each_kind_is_found_and_named_once() {
        let day = vec![
            payment("SHORT", State::Paid, 100),
            payment("AMOUNT", State::Paid, 100),
            payment("FEE", State::Paid, 10_000),
            payment("FAILED", State::Paid, 100),
        ];
        let rows = vec![
            row(2, "AMOUNT", 200, Some(1), RowKind::Paid),
            row(3, "FEE", 10_000, Some(80), RowKind::Paid),
            row(4, "FAILED", 100, None, RowKind::Other("失败".into())),
            row(5, "LONG", 100, None, RowKind::Paid),
        ];
        assert_eq!(
            kinds(day, rows, vec![]),
            vec![
                (Kind::AmountMismatch, "AMOUNT".into()),
                (Kind::FeeMismatch, "FEE".into()),
                (Kind::StatusMismatch, "FAILED".into()),
                (Kind::MissingInJournal, "LONG".into()),
                (Kind::MissingAtChannel, "SHORT".into()),
            ]
        );
    }

    #[test]
    fn a_fee_within_one_fen_is_not_a_difference() {
        let day = vec![payment("T1", State::Paid, 10_000)]; // expects 30
        for fee in [29, 30, 31] {
            assert_eq!(
                kinds(
                    day.clone(),
                    vec![row(2, "T1", 10_000, Some(fee), RowKind::Paid)],
                    vec![]
                ),
                vec![]
            );
        }
        assert_eq!(
            kinds(day, vec![row(2, "T1", 10_000, Some(32), RowKind::Paid)], vec![]).len(),
            1
        );
    }

    #[test]
    fn rows_of_payments_paid_on_other_days_are_matched_by_lookup() {
        // Paid yesterday at 23:59 by the journal's clock, on today's statement.
        let rows = vec![row(2, "EARLY", 100, None, RowKind::Paid)];
        assert_eq!(
            kinds(vec![], rows.clone(), vec![payment("EARLY", State::Paid, 100)]),
            vec![]
        );
        // Unknown to the journal: 长款.
        assert_eq!(
            kinds(vec![], rows, vec![]),
            vec![(Kind::MissingInJournal, "EARLY".into())]
        );
    }

    #[test]
    fn a_paid_row_for_a_payment_the_journal_did_not_see_paid_is_a_status_mismatch() {
        for state in [
            State::Pending,
            State::Declined,
            State::Closed,
            State::Failed,
            State::Reversed,
        ] {
            let rows = vec![row(2, "T1", 100, None, RowKind::Paid)];
            assert_eq!(
                kinds(vec![], rows, vec![payment("T1", state, 100)]),
                vec![(Kind::StatusMismatch, "T1".into())],
                "{state}"
            );
        }
    }

    #[test]
    fn reversals_and_refunds_reconcile() {
        // Paid then reversed the same day: absent, or listed as reversed, is right.
        let reversed = payment("R", State::Reversed, 100);
        assert_eq!(kinds(vec![reversed.clone()], vec![], vec![]), vec![]);
        assert_eq!(
            kinds(
                vec![reversed],
                vec![row(2, "R", 100, None, RowKind::Other("已撤销".into()))],
                vec![]
            ),
            vec![]
        );
        // Refunded in full: its paid row and its refund row match.
        let refunded = payment("F", State::Refunded, 100);
        let rows = vec![
            row(2, "F", 100, Some(0), RowKind::Paid),
            row(3, "F", 100, None, RowKind::Refund),
        ];
        assert_eq!(kinds(vec![refunded], rows, vec![]), vec![]);
        // A refund the journal does not know of.
        let rows = vec![
            row(2, "P", 100, None, RowKind::Paid),
            row(3, "P", 40, None, RowKind::Refund),
        ];
        assert_eq!(
            kinds(vec![payment("P", State::Paid, 100)], rows, vec![]),
            vec![(Kind::StatusMismatch, "P".into())]
        );
    }

    #[test]
    fn a_payment_collected_twice_is_an_amount_mismatch() {
        let rows = vec![
            row(2, "T1", 100, None, RowKind::Paid),
            row(9, "T1", 100, None, RowKind::Paid),
        ];
        let out = kinds(vec![payment("T1", State::Paid, 100)], rows, vec![]);
        assert_eq!(out, vec![(Kind::AmountMismatch, "T1".into())]);
    }

    #[test]
    fn failed_rows_of_unknown_payments_move_no_money() {
        let rows = vec![row(2, "X", 100, None, RowKind::Other("失败".into()))];
        assert_eq!(kinds(vec![], rows, vec![]), vec![]);
    }
}
