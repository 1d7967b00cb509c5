//! The command line: `serve`, `check`, `demo`, `journal export`, `reconcile`,
//! `simulate`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;

#[derive(Parser)]
#[command(name = "payroute", version, about = "Smart-routing payment proxy")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve {
        /// Path of routes.toml.
        #[arg(long, default_value = "routes.toml")]
        config: PathBuf,
    },
    /// Validate a config: exit 0 with a summary, or 1 with every error.
    Check { file: PathBuf },
    /// The embedded showcase: mock acquirers, the proxy, traffic, a live table.
    Demo {
        /// How long the traffic runs, in seconds.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
    },
    /// The journal: the durable record of payments.
    Journal {
        #[command(subcommand)]
        command: JournalCommand,
    },
    /// Compares the journal with a channel's statement (对账). Exit 0: all
    /// matches; 1: differences; 2: bad input.
    Reconcile(crate::reconcile::Request),
    /// Runs routing policies against a scenario's simulated channels in
    /// virtual time and prints a table per policy (docs/SIMULATION.md).
    /// Exit 0: done; 1: bad scenario or arguments.
    Simulate(crate::simulate::Request),
}

#[derive(Subcommand)]
enum JournalCommand {
    /// Writes the payments created in a period to stdout, oldest first.
    Export {
        /// routes.toml, whose `[journal]` says where the journal is.
        #[arg(long, default_value = "routes.toml")]
        config: PathBuf,
        /// From this time on (inclusive): RFC 3339, a date (UTC midnight), or Unix milliseconds.
        #[arg(long, value_parser = parse_time)]
        since: Option<i64>,
        /// Before this time (exclusive), in the same forms.
        #[arg(long, value_parser = parse_time)]
        until: Option<i64>,
        /// `csv` or `jsonl`.
        #[arg(long, default_value = "csv", value_parser = ["csv", "jsonl"])]
        format: String,
    },
}

/// Entry point of the `payroute` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Check { file } => check(&file),
        Command::Serve { config } => runtime().block_on(serve(config)),
        Command::Demo { seconds } => runtime().block_on(crate::demo::run(std::time::Duration::from_secs(seconds))),
        Command::Journal {
            command:
                JournalCommand::Export {
                    config,
                    since,
                    until,
                    format,
                },
        } => runtime().block_on(export(&config, since, until, &format)),
        Command::Reconcile(request) => runtime().block_on(crate::reconcile::run(request)),
        Command::Simulate(request) => simulate(&request),
    }
}

/// `payroute journal export`: opens the journal the config names (running
/// its migrations, as `serve` would) and streams the period out.
async fn export(path: &std::path::Path, since: Option<i64>, until: Option<i64>, format: &str) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            for line in e.lines() {
                eprintln!("{line}");
            }
            return ExitCode::FAILURE;
        }
    };
    let Some(format) = crate::journal::ExportFormat::parse(format) else {
        eprintln!("payroute: --format must be csv or jsonl");
        return ExitCode::FAILURE;
    };
    let journal = match crate::journal::Journal::open(&config.journal).await {
        Ok(j) => j,
        Err(e) => {
            eprintln!("payroute: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let written = journal.export(since, until, format, &mut out).await;
    let flushed = std::io::Write::flush(&mut out);
    match (written, flushed) {
        (Ok(n), Ok(())) => {
            eprintln!("payroute: exported {n} payments from {}", journal.describe());
            ExitCode::SUCCESS
        }
        (Err(e), _) => {
            eprintln!("payroute: {e}");
            ExitCode::FAILURE
        }
        (_, Err(e)) => {
            eprintln!("payroute: cannot write the export: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A point in time for `--since`/`--until`, as Unix milliseconds (to the
/// second): `1764547200000`, `2026-12-01` (UTC midnight),
/// `2026-12-01T08:00:00Z` or `2026-12-01T08:00:00+08:00`.
fn parse_time(s: &str) -> Result<i64, String> {
    use time::format_description::well_known::Rfc3339;
    const DATE: &[time::format_description::BorrowedFormatItem<'_>] =
        time::macros::format_description!("[year]-[month]-[day]");
    let bad = || format!("{s:?} is not a time: use RFC 3339 (2026-12-01T08:00:00+08:00), a date or Unix milliseconds");
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map_err(|_| bad());
    }
    let at = match time::Date::parse(s, DATE) {
        Ok(date) => date.midnight().assume_utc(),
        Err(_) => time::OffsetDateTime::parse(&s.replacen(' ', "T", 1), &Rfc3339).map_err(|_| bad())?,
    };
    Ok(at.unix_timestamp() * 1000)
}

/// The main runtime (see `runtime`: payments run on the worker threads).
fn runtime() -> tokio::runtime::Runtime {
    match crate::runtime::main_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("payroute: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    }
}

fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// `payroute simulate`: the report on stdout, its wall time on stderr
/// (stdout stays byte-identical for a seed).
fn simulate(request: &crate::simulate::Request) -> ExitCode {
    let started = std::time::Instant::now();
    match crate::simulate::run(request) {
        Ok(report) => {
            print!("{report}");
            eprintln!("payroute: simulated in {:.2} s", started.elapsed().as_secs_f64());
            ExitCode::SUCCESS
        }
        Err(crate::simulate::Refused(lines)) => {
            for line in lines {
                eprintln!("{line}");
            }
            ExitCode::FAILURE
        }
    }
}

fn check(file: &std::path::Path) -> ExitCode {
    match Config::load(file) {
        Ok(config) => {
            for w in config.warnings() {
                eprintln!("{}: warning: {w}", file.display());
            }
            println!("{}: ok: {}", file.display(), config.summary());
            ExitCode::SUCCESS
        }
        Err(e) => {
            for line in e.lines() {
                eprintln!("{line}");
            }
            ExitCode::FAILURE
        }
    }
}

async fn serve(path: PathBuf) -> ExitCode {
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("payroute: cannot read {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    let config = match Config::parse(&text, &path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("payroute: invalid config: {e}");
            for line in e.lines().iter().skip(1) {
                eprintln!("{line}");
            }
            return ExitCode::FAILURE;
        }
    };
    let summary = config.summary();
    for w in config.warnings() {
        tracing::warn!("{w}");
    }
    let running = match crate::serve::start(config, text, Some(path)).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("payroute: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        "payroute ready listen={} admin={} ({summary})",
        running.payments,
        running.admin
    );
    wait_for_termination().await;
    running.shutdown().await;
    ExitCode::SUCCESS
}

async fn wait_for_termination() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_every_documented_form() {
        assert_eq!(parse_time("1764547200000"), Ok(1_764_547_200_000));
        assert_eq!(parse_time("1970-01-01"), Ok(0));
        assert_eq!(parse_time("2026-11-23T15:59:59Z"), Ok(1_795_449_599_000));
        assert_eq!(parse_time("2026-11-23T23:59:59+08:00"), Ok(1_795_449_599_000));
        assert_eq!(parse_time("2000-02-29T00:00:00.500Z"), Ok(951_782_400_000));
        for bad in [
            "",
            "yesterday",
            "2026-13-01",
            "2026-11-23T25:00:00Z",
            "2026-11-23T10:00:00",
            "2026-11-23T10:00:00+8",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }
}
