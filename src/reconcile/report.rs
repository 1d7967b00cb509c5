//! What a reconciliation prints: one line per difference and a summary
//! (text), or the differences as CSV or JSON; `--out` always CSV. Amounts
//! are minor units in CSV and JSON (exact, as the journal stores them) and
//! yuan in text (for people).

use std::io::{self, Write};
use std::path::Path;

use super::compare::{Difference, Kind, Totals};

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    Text,
    Csv,
    Json,
}

/// The run's figures, for the summary.
pub(super) struct Summary<'a> {
    pub channel: &'a str,
    pub date: &'a str,
    /// When the business day starts (Unix ms).
    pub from_ms: i64,
    pub statement: &'a Path,
    /// The journal's payments of the day.
    pub booked: usize,
    pub totals: Totals,
    pub fee_percent: f64,
    pub fee_fixed: u64,
}

impl Summary<'_> {
    /// The fee the channel charged, as a percent of the amounts that state one.
    fn effective_percent(&self) -> Option<f64> {
        (self.totals.fee_base > 0).then(|| self.totals.fees_charged as f64 * 100.0 / self.totals.fee_base as f64)
    }

    fn lines(&self, differences: &[Difference]) -> Vec<String> {
        let t = &self.totals;
        let by_kind: Vec<String> = Kind::ALL
            .iter()
            .map(|k| format!("{} {}", k.as_str(), differences.iter().filter(|d| d.kind == *k).count()))
            .collect();
        let mut lines = vec![
            format!(
                "channel {}, business day {} (from {}), statement {}",
                self.channel,
                self.date,
                utc(self.from_ms),
                self.statement.display()
            ),
            format!(
                "statement rows {}, journal payments paid that day {}, trade numbers matched {}",
                t.rows, self.booked, t.matched
            ),
            format!("differences {}: {}", differences.len(), by_kind.join(", ")),
            format!("collected {}", yuan(t.paid_amount)),
        ];
        let configured = format!(
            "configured {:.2} %{}",
            self.fee_percent,
            if self.fee_fixed > 0 {
                format!(" + {} per payment", yuan(self.fee_fixed as i64))
            } else {
                String::new()
            }
        );
        lines.push(match self.effective_percent() {
            Some(pct) => format!(
                "effective fee {pct:.3} % ({} on {}), {configured}; expected {}",
                yuan(t.fees_charged),
                yuan(t.fee_base),
                yuan(t.fees_expected)
            ),
            None => format!("effective fee: the statement states no fees; {configured}"),
        });
        lines
    }
}

/// Writes the report to stdout (the summary to stderr for csv and json,
/// so stdout stays one machine-readable document).
pub(super) fn write(differences: &[Difference], summary: &Summary<'_>, format: Format) -> io::Result<()> {
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    match format {
        Format::Text => {
            for d in differences {
                writeln!(out, "{}", text_line(d))?;
            }
            for line in summary.lines(differences) {
                writeln!(out, "{line}")?;
            }
        }
        Format::Csv => {
            write_csv(&mut out, differences)?;
            summary.lines(differences).iter().for_each(|l| eprintln!("{l}"));
        }
        Format::Json => {
            let doc = serde_json::json!({
                "channel": summary.channel,
                "business_day": summary.date,
                "statement_rows": summary.totals.rows,
                "journal_payments": summary.booked,
                "matched": summary.totals.matched,
                "fee_base": summary.totals.fee_base,
                "fees_charged": summary.totals.fees_charged,
                "fees_expected": summary.totals.fees_expected,
                "effective_fee_percent": summary.effective_percent(),
                "configured_fee_percent": summary.fee_percent,
                "differences": differences,
            });
            serde_json::to_writer_pretty(&mut out, &doc)?;
            writeln!(out)?;
            summary.lines(differences).iter().for_each(|l| eprintln!("{l}"));
        }
    }
    out.flush()
}

/// `--out FILE`: the differences as CSV.
pub(super) fn write_csv_file(path: &Path, differences: &[Difference]) -> io::Result<()> {
    let mut out = io::BufWriter::new(std::fs::File::create(path)?);
    write_csv(&mut out, differences)?;
    out.flush()
}

const COLUMNS: [&str; 10] = [
    "kind",
    "trade_no",
    "line",
    "journal_state",
    "channel_status",
    "journal_amount",
    "channel_amount",
    "expected_fee",
    "channel_fee",
    "detail",
];

fn write_csv(out: &mut dyn Write, differences: &[Difference]) -> io::Result<()> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record(COLUMNS)?;
    let opt = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
    for d in differences {
        w.write_record([
            d.kind.as_str(),
            &d.trade_no,
            &opt(d.line.map(|l| l as i64)),
            d.journal_state.unwrap_or(""),
            d.channel_status.as_deref().unwrap_or(""),
            &opt(d.journal_amount),
            &opt(d.channel_amount),
            &opt(d.expected_fee),
            &opt(d.channel_fee),
            &d.detail,
        ])?;
    }
    w.flush()
}

fn text_line(d: &Difference) -> String {
    let side = |state: Option<&str>, amount: Option<i64>| match (state, amount) {
        (Some(s), Some(a)) if !s.is_empty() => format!("{s} {}", yuan(a)),
        _ => "nothing".to_owned(),
    };
    let fee = match (d.kind, d.channel_fee, d.expected_fee) {
        (Kind::FeeMismatch, Some(charged), Some(expected)) => {
            format!(", fee {} charged, {} expected", yuan(charged), yuan(expected))
        }
        _ => String::new(),
    };
    format!(
        "{:<18} {}  line {}: channel {}, journal {}{fee}: {}",
        d.kind.as_str(),
        d.trade_no,
        d.line.map_or_else(|| "-".to_owned(), |l| l.to_string()),
        side(d.channel_status.as_deref(), d.channel_amount),
        side(d.journal_state, d.journal_amount),
        d.detail
    )
}

/// Minor units as yuan: `1234567` → `12,345.67`.
pub(super) fn yuan(minor: i64) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let m = minor.unsigned_abs();
    let whole = (m / 100).to_string();
    let mut grouped = String::with_capacity(whole.len() + whole.len() / 3);
    for (i, ch) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(ch);
    }
    format!("{sign}{grouped}.{:02}", m % 100)
}

/// Unix milliseconds as RFC 3339 UTC.
pub(super) fn utc(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuan_groups_thousands() {
        assert_eq!(yuan(0), "0.00");
        assert_eq!(yuan(5), "0.05");
        assert_eq!(yuan(123_456), "1,234.56");
        assert_eq!(yuan(-100_000_000), "-1,000,000.00");
    }
}
