//! `mock-acquirer`: runs a fake acquirer ([`payroute_mock`]) as its own
//! process, for the demo and load tests.
//!
//! ```text
//! mock-acquirer --listen 127.0.0.1:9001 --success-rate 0.9 --latency-ms 20 --jitter-ms 10
//! mock-acquirer --listen 127.0.0.1:9002 --outcome-in-body --pending-rate 0.3 \
//!     --notify-url http://127.0.0.1:8080/notify/acq-b --notify-secret env:ACQ_B_SECRET \
//!     --notify-loss 0.05 --notify-repeat 0.1 --seed 7
//! ```
//!
//! Every flag is a field of [`Behavior`]; `--help` and the `payroute_mock`
//! crate documentation describe the answers and notifications. The
//! statement of paid payments is at `GET /-/statement`. Runs until SIGINT or
//! SIGTERM, then logs its counters and exits 0.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use payroute_mock::{Behavior, MockAcquirer};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::EnvFilter;

/// A fake payment acquirer with configurable success rate, latency and hangs,
/// outcomes in the body, and pending payments announced later by signed
/// notifications (with lost, repeated, forged and wrong-amount ones).
///
/// Payments are answered JSON {"status","id","order_id","amount","currency",
/// "acquirer"} (plus "trade_no" when the request carried X-Payroute-Trade-No);
/// status is paid, declined (a 4xx --status), failed or processing. GET
/// .../{order_id or trade_no} answers the payment's current state (404
/// unknown); POST .../{id}/reverse forgets it; GET /-/statement lists the
/// paid payments; GET /-/health answers ok.
#[derive(Debug, Parser)]
#[command(name = "mock-acquirer", version)]
struct Args {
    /// Address to listen on, e.g. 127.0.0.1:9001 (port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,

    /// Share of payments paid (and of pending payments later decided paid), between 0 and 1.
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

    /// Answer every payment, and every query of a known payment, with HTTP 200:
    /// the outcome is only in the body's "status". Without it the HTTP status
    /// says it too: 200 paid, 202 processing, --status refused (and a query of
    /// a payment decided failed: 404).
    #[arg(long)]
    outcome_in_body: bool,

    /// Share of payments answered {"status":"processing"} (HTTP 202, or 200
    /// with --outcome-in-body), between 0 and 1. Each is decided after
    /// --notify-delay-ms (paid at --success-rate, else failed) and then
    /// announced to --notify-url; a query says "processing" until then.
    #[arg(long, value_name = "F", default_value_t = 0.0, value_parser = parse_rate)]
    pending_rate: f64,

    /// How long a pending payment stays "processing", in milliseconds.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    notify_delay_ms: u64,

    /// Where decided pending payments are announced: a POST of JSON
    /// {"order_id","trade_no","id","amount","currency","status":"paid"|"failed"}
    /// (trade_no: payroute's, from X-Payroute-Trade-No). Plain http:// only.
    /// Without it, pending payments are decided silently (only a query finds out).
    #[arg(long, value_name = "URL", value_parser = parse_http_url)]
    notify_url: Option<String>,

    /// Signs each notification: header x-signature, the lowercase hex
    /// HMAC-SHA256 of the raw body with this key. `env:NAME` reads the key
    /// from the environment variable NAME (keeps it out of the process list).
    /// Without it, notifications are unsigned.
    #[arg(long, value_name = "S")]
    notify_secret: Option<String>,

    /// Share of decided payments never announced (only a query finds them), 0..1.
    #[arg(long, value_name = "F", default_value_t = 0.0, value_parser = parse_rate)]
    notify_loss: f64,

    /// Share of announced payments whose notification is sent twice, 0..1.
    #[arg(long, value_name = "F", default_value_t = 0.0, value_parser = parse_rate)]
    notify_repeat: f64,

    /// Share of announced payments preceded by a forged copy (wrong signature,
    /// status "paid", sent once), 0..1. A receiver must refuse it.
    #[arg(long, value_name = "F", default_value_t = 0.0, value_parser = parse_rate)]
    notify_forge: f64,

    /// Share of announced payments preceded by a correctly signed copy whose
    /// amount is one more than the payment's, 0..1. A receiver must refuse it.
    #[arg(long, value_name = "F", default_value_t = 0.0, value_parser = parse_rate)]
    notify_wrong_amount: f64,

    /// Tries per notification while the receiver does not answer 2xx (forged
    /// copies: one try).
    #[arg(long, value_name = "N", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    notify_attempts: u32,

    /// Wait before the second try, doubled before each further one (at most
    /// 5 s), in milliseconds.
    #[arg(long, value_name = "N", default_value_t = 100)]
    notify_backoff_ms: u64,

    /// Seed for every random choice: payments sent one at a time get the
    /// same outcomes, delays and notification faults on every run.
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
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

/// A notification URL must be plain HTTP with a host (the mock speaks no TLS
/// as a client).
fn parse_http_url(s: &str) -> Result<String, String> {
    match s.parse::<http::Uri>() {
        Ok(uri) if uri.scheme_str() == Some("http") && uri.authority().is_some() => Ok(s.to_owned()),
        Ok(_) => Err(format!("`{s}` is not an http:// URL with a host")),
        Err(e) => Err(format!("`{s}` is not a URL: {e}")),
    }
}

/// The signing key: as given, or from the environment with `env:NAME`.
fn resolve_secret(s: &str) -> Result<String, String> {
    match s.strip_prefix("env:") {
        Some(name) => {
            std::env::var(name).map_err(|_| format!("--notify-secret: environment variable {name} is not set"))
        }
        None => Ok(s.to_owned()),
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
    let notify_secret = match args.notify_secret.as_deref().map(resolve_secret).transpose() {
        Ok(secret) => secret,
        Err(e) => {
            eprintln!("mock-acquirer: {e}");
            return ExitCode::FAILURE;
        }
    };
    let behavior = Behavior {
        success_rate: args.success_rate,
        latency_ms: args.latency_ms,
        jitter_ms: args.jitter_ms,
        hang_rate: args.hang_rate,
        fail_status: args.status,
        outcome_in_body: args.outcome_in_body,
        pending_rate: args.pending_rate,
        notify_delay_ms: args.notify_delay_ms,
        notify_url: args.notify_url.as_deref().map(Into::into),
        notify_secret: notify_secret.map(Into::into),
        notify_loss: args.notify_loss,
        notify_repeat: args.notify_repeat,
        notify_forge: args.notify_forge,
        notify_wrong_amount: args.notify_wrong_amount,
        notify_attempts: args.notify_attempts,
        notify_backoff_ms: args.notify_backoff_ms,
        seed: args.seed,
    };
    if behavior.pending_rate > 0.0 && behavior.notify_url.is_none() {
        tracing::warn!("--pending-rate without --notify-url: pending payments are decided but never announced");
    }
    let mock = match MockAcquirer::bind(args.listen, behavior.clone()).await {
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
        outcome_in_body = behavior.outcome_in_body,
        pending_rate = behavior.pending_rate,
        notify_delay_ms = behavior.notify_delay_ms,
        notify_url = behavior.notify_url.as_deref().unwrap_or("-"),
        signed = behavior.notify_secret.is_some(),
        notify_loss = behavior.notify_loss,
        notify_repeat = behavior.notify_repeat,
        notify_forge = behavior.notify_forge,
        notify_wrong_amount = behavior.notify_wrong_amount,
        seed = behavior.seed,
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
        pending = c.pending,
        settled_paid = c.settled_paid,
        settled_failed = c.settled_failed,
        notify_sent = c.notify_sent,
        notify_lost = c.notify_lost,
        notify_repeated = c.notify_repeated,
        notify_forged = c.notify_forged,
        notify_wrong_amount = c.notify_wrong_amount,
        notify_delivered = c.notify_delivered,
        notify_undelivered = c.notify_undelivered,
        forged_accepted = c.forged_accepted,
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
