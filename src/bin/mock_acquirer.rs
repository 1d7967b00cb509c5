//! `mock-acquirer`: runs a fake acquirer ([`payroute_mock`]) as its own
//! process, for the demo and load tests.
//!
//! ```text
//! mock-acquirer --listen 127.0.0.1:9001 --success-rate 0.9 --latency-ms 20 --jitter-ms 10
//! ```
//!
//! Runs until SIGINT or SIGTERM, then exits 0.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use payroute_mock::{Behavior, MockAcquirer};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::EnvFilter;

/// A fake payment acquirer with configurable success rate, latency and hangs.
#[derive(Debug, Parser)]
#[command(name = "mock-acquirer", version)]
struct Args {
    /// Address to listen on, e.g. 127.0.0.1:9001 (port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,

    /// Share of payments answered 200, between 0 and 1.
    #[arg(long, value_name = "F", default_value_t = 1.0, value_parser = parse_rate)]
    success_rate: f64,

    /// Delay before answering, in milliseconds.
    #[arg(long, value_name = "N", default_value_t = 0)]
    latency_ms: u64,

    /// Uniform extra delay in [0, N] milliseconds.
    #[arg(long, value_name = "N", default_value_t = 0)]
    jitter_ms: u64,

    /// Share of payments never answered (held until shutdown), between 0 and 1.
    #[arg(long, value_name = "F", default_value_t = 0.0, value_parser = parse_rate)]
    hang_rate: f64,

    /// HTTP status of a failed payment; a 4xx (e.g. 402) makes a declining acquirer.
    #[arg(long, value_name = "N", default_value_t = 503,
          value_parser = clap::value_parser!(u16).range(100..=599))]
    status: u16,
}

/// A rate must be a number within 0..=1 (NaN is rejected by the range check).
fn parse_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!("{rate} is not within 0..=1"))
    }
}

fn main() -> ExitCode {
    // Bad arguments: clap prints the cause and exits with status 2.
    let args = Args::parse();
    init_tracing();

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mock-acquirer: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(args))
}

async fn run(args: Args) -> ExitCode {
    let behavior = Behavior {
        success_rate: args.success_rate,
        latency_ms: args.latency_ms,
        jitter_ms: args.jitter_ms,
        hang_rate: args.hang_rate,
        fail_status: args.status,
    };
    let mock = match MockAcquirer::bind(args.listen, behavior).await {
        Ok(mock) => mock,
        Err(e) => {
            // One line on stderr, whatever RUST_LOG says (e.g. port taken).
            eprintln!("mock-acquirer: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        success_rate = behavior.success_rate,
        latency_ms = behavior.latency_ms,
        jitter_ms = behavior.jitter_ms,
        hang_rate = behavior.hang_rate,
        fail_status = behavior.fail_status,
        "mock-acquirer listening on {}",
        mock.local_addr()
    );

    if let Err(e) = shutdown_signal().await {
        eprintln!("mock-acquirer: cannot wait for shutdown signals: {e}");
        mock.shutdown();
        return ExitCode::FAILURE;
    }
    mock.shutdown();
    let c = mock.counters();
    tracing::info!(
        requests = c.requests,
        successes = c.successes,
        failures = c.failures,
        hangs = c.hangs,
        queries = c.queries,
        reversals = c.reversals,
        "mock-acquirer stopped"
    );
    // Returning drops the runtime, which cancels connections still open:
    // a mock has nothing worth draining.
    ExitCode::SUCCESS
}

/// Logs to stderr, filtered by RUST_LOG (default `info`), coloured only on a
/// terminal so that captured logs stay plain text.
fn init_tracing() {
    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .from_env_lossy();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Resolves on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
async fn shutdown_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            res = tokio::signal::ctrl_c() => res,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}
