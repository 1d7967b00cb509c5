//! `payroute journal export`: the payments of a period as CSV or JSON lines.
//!
//! Rows are read in pages by keyset (`created_at_ms`, `trade_no`), never in
//! one result set: an export of a year holds one page in memory, keeps no
//! long read transaction open against the writer, and sees each payment
//! exactly once even while new ones are being written. Both formats carry
//! the same columns, those of [`Payment`], times in Unix milliseconds and
//! amounts in minor units, exactly as stored.

use std::io::Write;

use super::model::{ExportFormat, Payment};
use super::{Journal, JournalError};

const PAGE: i64 = 1_000;

pub(super) async fn run(
    journal: &Journal,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
    format: ExportFormat,
    out: &mut dyn Write,
) -> Result<u64, JournalError> {
    let fail = |e: &dyn std::fmt::Display| JournalError::Export(e.to_string());
    let until = until_ms.unwrap_or(i64::MAX);
    // The keyset starts just before `since`: trade numbers are never empty.
    let mut after = (since_ms.unwrap_or(i64::MIN), String::new());
    let mut count = 0u64;
    match format {
        ExportFormat::Csv => {
            let mut w = csv::Writer::from_writer(out);
            let mut header_written = false;
            loop {
                let page = journal.export_page((after.0, &after.1), until, PAGE).await?;
                for payment in &page {
                    w.serialize(payment).map_err(|e| fail(&e))?;
                    header_written = true;
                }
                count += page.len() as u64;
                match next_key(&page) {
                    Some(key) => after = key,
                    None => break,
                }
            }
            if !header_written {
                // An empty period still says what its columns would be.
                w.write_record(COLUMNS).map_err(|e| fail(&e))?;
            }
            w.flush().map_err(|e| fail(&e))?;
        }
        ExportFormat::Jsonl => {
            loop {
                let page = journal.export_page((after.0, &after.1), until, PAGE).await?;
                for payment in &page {
                    serde_json::to_writer(&mut *out, payment).map_err(|e| fail(&e))?;
                    out.write_all(b"\n").map_err(|e| fail(&e))?;
                }
                count += page.len() as u64;
                match next_key(&page) {
                    Some(key) => after = key,
                    None => break,
                }
            }
            out.flush().map_err(|e| fail(&e))?;
        }
    }
    Ok(count)
}

/// The key after a full page; `None` after the last one.
fn next_key(page: &[Payment]) -> Option<(i64, String)> {
    match page.last() {
        Some(last) if page.len() as i64 == PAGE => Some((last.created_at_ms, last.trade_no.clone())),
        _ => None,
    }
}

/// The CSV header, as `csv` derives it from [`Payment`].
const COLUMNS: &[&str] = &[
    "trade_no",
    "merchant_id",
    "order_id",
    "amount",
    "currency",
    "pay_type",
    "protocol",
    "channel_id",
    "channel_trade_no",
    "state",
    "expected_fee",
    "refunded_amount",
    "refund_held",
    "merchant_data",
    "created_at_ms",
    "updated_at_ms",
    "next_query_at_ms",
    "query_count",
];

#[cfg(test)]
mod tests {
    use super::*;

    /// The empty-export header and the derived one must not drift apart.
    #[test]
    fn header_matches_the_payment_fields() {
        let p = Payment {
            trade_no: "T1".into(),
            merchant_id: "m".into(),
            order_id: "o".into(),
            amount: 1,
            currency: "CNY".into(),
            pay_type: None,
            protocol: super::super::Protocol::Http,
            channel_id: None,
            channel_trade_no: None,
            state: super::super::State::Pending,
            expected_fee: 0,
            refunded_amount: 0,
            refund_held: 0,
            merchant_data: "{}".into(),
            created_at_ms: 0,
            updated_at_ms: 0,
            next_query_at_ms: None,
            query_count: 0,
        };
        let mut w = csv::Writer::from_writer(Vec::new());
        w.serialize(&p).unwrap();
        let text = String::from_utf8(w.into_inner().unwrap()).unwrap();
        assert_eq!(text.lines().next().unwrap(), COLUMNS.join(","));
    }
}
