//! `payroute reconcile` (对账): the journal against a channel's statement.
//!
//! A run is a pipeline that never holds the statement whole: open the
//! statement and find its header (so a wrong file fails before anything
//! else), select the channel's business day from the journal into
//! [`compare::Books`], stream the statement's rows through it, look up the
//! trade numbers that were not among the day's payments, judge each trade
//! number once, report. Memory is the day's payments (a sorted vector), not
//! the file.
//!
//! The business day is the channel's, by its day-cut (`[channel.statement]
//! day_starts`), and a payment belongs to the day it was *paid* (the
//! journal's `paid_at_ms`): the time a channel dates a charge by. A payment
//! created at 23:59 and paid at 00:01 is on the next day's statement, and
//! is looked for there.
//!
//! Reconciliation only reads money state: nothing in the journal changes
//! but one row in `reconciliations` after a statement was read to its end
//! (its fee figures become `payroute_channel_effective_fee_percent`). Exit
//! codes: 0 everything matches, 1 differences, 2 bad input (the file, line
//! and reason on stderr; nothing written).

mod compare;
mod report;
pub(crate) mod statement;

use std::path::PathBuf;
use std::process::ExitCode;

use compare::Books;
use statement::{Statement, StatementError};

#[cfg(test)]
use crate::config::DayCut;
use crate::config::{ChannelConfig, Config, JournalConfig};
use crate::journal::{Journal, JournalError, ReconDay, Reconciled};

pub(crate) use report::Format;

/// What the command line asked for (`payroute reconcile`).
#[derive(clap::Args)]
pub(crate) struct Request {
    /// routes.toml: the channel's `[channel.statement]` and the journal.
    #[arg(long, default_value = "routes.toml")]
    pub config: PathBuf,
    /// The channel whose statement it is.
    #[arg(long)]
    pub channel: String,
    /// The statement: CSV, UTF-8 or GBK.
    #[arg(long)]
    pub statement: PathBuf,
    /// The business day (YYYY-MM-DD) in the channel's day-cut; default: its previous day.
    #[arg(long)]
    pub date: Option<String>,
    /// Also writes the differences to this file as CSV.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// What stdout gets: text (differences and a summary), csv or json.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// Why a reconciliation could not be done (exit code 2).
#[derive(Debug, thiserror::Error)]
enum ReconcileError {
    /// The config's own located errors, one per line.
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Statement(#[from] StatementError),
    #[error("journal: {0}")]
    Journal(#[from] JournalError),
    #[error("cannot write {file}: {reason}")]
    Output { file: String, reason: String },
}

/// Trade numbers per journal lookup of the rows outside the day.
const LOOKUP_CHUNK: usize = 500;
/// Beyond the sweeper's `close_after`, how much earlier than its day a paid
/// payment may have been created (a last query or notification in flight).
const LOOKBACK_SLACK_MS: i64 = 3_600_000;

/// Runs a reconciliation; the exit code the contract gives.
pub(crate) async fn run(req: Request) -> ExitCode {
    match reconcile(&req).await {
        Ok(0) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("payroute reconcile: {e}");
            ExitCode::from(2)
        }
    }
}

/// The number of differences found.
async fn reconcile(req: &Request) -> Result<usize, ReconcileError> {
    let config = Config::load(&req.config).map_err(|e| ReconcileError::Config(e.lines().join("\n")))?;
    let channel = channel(&config, &req.channel)?;
    let Some(columns) = channel.statement.as_deref() else {
        return Err(ReconcileError::Input(format!(
            "channel {:?} has no [channel.statement]: say which columns hold the trade number and the amount",
            req.channel
        )));
    };
    let cut = columns.day_cut;
    let day_index = match &req.date {
        Some(date) => parse_date(date)?,
        None => cut.today() - 1,
    };
    let date = date_name(day_index);
    let mut statement = Statement::open(&req.statement, columns)?;

    if let JournalConfig::Sqlite { path, .. } = &config.journal {
        // Opening would create an empty one: reading changes nothing.
        if !path.exists() {
            return Err(ReconcileError::Input(format!("no journal at {}", path.display())));
        }
    }
    let journal = Journal::open(&config.journal).await?;
    let close_after_ms = i64::try_from(config.sweeper.close_after.as_millis()).unwrap_or(i64::MAX / 4);
    let day = ReconDay {
        channel: req.channel.clone(),
        paid_from_ms: cut.day_ends(day_index - 1) * 1000,
        paid_until_ms: cut.day_ends(day_index) * 1000,
        created_from_ms: cut.day_ends(day_index - 1) * 1000 - close_after_ms - LOOKBACK_SLACK_MS,
    };
    if !journal.any_created(day.paid_from_ms, day.paid_until_ms).await? {
        return Err(ReconcileError::Input(format!(
            "the journal ({}) holds no payment created on {date} (from {}): wrong --date, or another journal?",
            journal.describe(),
            report::utc(day.paid_from_ms)
        )));
    }

    let mut books = journal.recon_day(&day, Books::new(), Books::book).await?;
    let booked = books.booked();
    while let Some(row) = statement.next_row()? {
        books.row(&row);
    }
    let strays: Vec<&str> = books.strays().collect();
    let mut found = Vec::new();
    for chunk in strays.chunks(LOOKUP_CHUNK) {
        found.extend(journal.recon_lookup(chunk).await?);
    }
    drop(strays);
    let (differences, totals) = books.finish(found);

    let summary = report::Summary {
        channel: &req.channel,
        date: &date,
        from_ms: day.paid_from_ms,
        statement: &req.statement,
        booked,
        totals,
        fee_percent: channel.fee_percent,
        fee_fixed: channel.fee_fixed,
    };
    report::write(&differences, &summary, req.format).map_err(|e| ReconcileError::Output {
        file: "stdout".into(),
        reason: e.to_string(),
    })?;
    if let Some(out) = &req.out {
        report::write_csv_file(out, &differences).map_err(|e| ReconcileError::Output {
            file: out.display().to_string(),
            reason: e.to_string(),
        })?;
    }
    journal
        .record_reconciliation(Reconciled {
            channel_id: req.channel.clone(),
            business_day: date,
            statement_lines: totals.rows as i64,
            matched: totals.matched as i64,
            differences: differences.len() as i64,
            fee_base: totals.fee_base,
            fees_charged: totals.fees_charged,
            at_ms: crate::journal::now_ms(),
        })
        .await?;
    Ok(differences.len())
}

fn channel<'c>(config: &'c Config, id: &str) -> Result<&'c ChannelConfig, ReconcileError> {
    config.channels.iter().find(|c| &*c.id == id).ok_or_else(|| {
        let known: Vec<&str> = config.channels.iter().map(|c| &*c.id).collect();
        ReconcileError::Input(format!(
            "no channel {id:?} in the config (channels: {})",
            known.join(", ")
        ))
    })
}

const DATE: &[time::format_description::BorrowedFormatItem<'_>] =
    time::macros::format_description!("[year]-[month]-[day]");

/// A business day's index (days since 1970-01-01) from `YYYY-MM-DD`.
fn parse_date(s: &str) -> Result<i64, ReconcileError> {
    let date = time::Date::parse(s, DATE)
        .map_err(|_| ReconcileError::Input(format!("--date {s:?} is not a date (YYYY-MM-DD)")))?;
    Ok(i64::from(date.to_julian_day()) - EPOCH_JULIAN_DAY)
}

/// 1970-01-01 as a Julian day number.
const EPOCH_JULIAN_DAY: i64 = 2_440_588;

/// The name of a business day: the calendar date it is in its day-cut's offset.
fn date_name(day_index: i64) -> String {
    i32::try_from(EPOCH_JULIAN_DAY + day_index)
        .ok()
        .and_then(|j| time::Date::from_julian_day(j).ok())
        .and_then(|d| d.format(DATE).ok())
        .unwrap_or_else(|| format!("day {day_index}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_day_indexes_round_trip() {
        let d = parse_date("2026-12-01").unwrap();
        assert_eq!(date_name(d), "2026-12-01");
        assert_eq!(parse_date("1970-01-02").unwrap(), 1);
        assert!(parse_date("2026-13-01").is_err());
        assert!(parse_date("yesterday").is_err());
    }

    #[test]
    fn the_day_follows_the_channels_cut() {
        // Beijing midnight: 2026-12-01 00:00+08:00 is 2026-11-30T16:00Z.
        let cut = DayCut::parse("00:00+08:00").unwrap();
        let d = parse_date("2026-12-01").unwrap();
        let start = cut.day_ends(d - 1);
        assert_eq!(start, 1_796_054_400); // 2026-11-30T16:00:00Z
        assert_eq!(cut.day_index(start - 60), d - 1, "23:59 is the day before");
        assert_eq!(cut.day_index(start + 60), d, "00:01 is the day");
    }
}
