//! `mock-acquirer`: runs a fake acquirer ([`payroute_mock`]) as its own
//! process, for the demo and load tests.
//!
//! ```text
//! mock-acquirer --listen 127.0.0.1:9001 --success-rate 0.9 --latency-ms 20 --jitter-ms 10
//! mock-acquirer --listen 127.0.0.1:9002 --outcome-in-body --pending-rate 0.3 \
//!     --notify-url http://127.0.0.1:8080/notify/acq-b --notify-secret env:ACQ_B_SECRET \
//!     --notify-loss 0.05 --notify-repeat 0.1 --seed 7
//! mock-acquirer --listen 127.0.0.1:9101 --protocol epay --pid 2001 --key env:EPAY_A_KEY \
//!     --success-rate 0.9 --notify-delay-ms 3000 --refuse-rate 0.05 --money-as-float
//! mock-acquirer --listen 127.0.0.1:9001 --seed 7 --statement-dir /tmp/bills --statement-name acq-a \
//!     --statement-fee-percent 0.8 --statement-encoding gbk --statement-drop 0.01 --statement-phantom 0.01
//! ```
//!
//! Every flag is a field of [`Behavior`] (the epay ones of [`EpayGateway`],
//! the `--statement-*` ones of [`StatementSpec`]); `--help` and the
//! `payroute_mock` crate documentation describe the answers, notifications
//! and statement files. The statement of paid payments is at
//! `GET /-/statement`; with `--statement-dir`, statement files (one CSV per
//! business day, faults listed beside) are written there by
//! `POST /-/statement/write` (answered with the paths written) and at
//! shutdown. Runs until SIGINT or SIGTERM, then writes the statements (if
//! asked), logs its counters and exits 0 (1 if the statements could not be
//! written).

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use payroute_mock::{AmountUnit, Behavior, EpayGateway, MockAcquirer, Protocol, StatementEncoding, StatementSpec};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::EnvFilter;

/// A fake payment acquirer with configurable success rate, latency and hangs,
/// outcomes in the body, and pending payments announced later by signed
/// notifications (with lost, repeated, forged and wrong-amount ones) — or,
/// with --protocol epay, a fake epay (易支付) gateway.
///
/// JSON (default): payments are answered JSON {"status","id","order_id",
/// "amount","currency","acquirer"} (plus "trade_no" when the request carried
/// X-Payroute-Trade-No); status is paid, declined (a 4xx --status), failed
/// or processing. GET .../{order_id or trade_no} answers the payment's
/// current state (404 unknown); POST .../{id}/reverse forgets it.
///
/// epay: POST {base}/mapi.php (form: pid, type, out_trade_no, notify_url,
/// return_url, name, money, clientip, device, param, sign, sign_type=MD5)
/// answers HTTP 200 {"code":1,"msg":"succ","trade_no","payurl"} ("qrcode"
/// instead of "payurl" for type wxpay) or {"code":-1,"msg"} (bad signature,
/// unknown pid, missing field, bad money or out_trade_no, unknown type,
/// out_trade_no taken, --refuse-rate).
/// GET {base}/api.php?act=order&pid&key&out_trade_no (or &trade_no) answers
/// {"code":1,...,"money","status":0|1}, code -1 unknown order, -3 wrong pid/key.
/// A share of created orders (--success-rate) is paid after --notify-delay-ms
/// and announced by a GET to the order's notify_url with
/// pid&trade_no&out_trade_no&type&name&money&trade_status=TRADE_SUCCESS&param&sign&sign_type=MD5
/// retried until the answer contains "success". Sign: MD5 of the non-empty
/// parameters but sign/sign_type, sorted by name, joined k=v with &, the key appended.
///
/// Both: GET /-/statement lists the paid payments; GET /-/health answers ok.
///
/// Statements (--statement-dir): what the acquirer charged, one CSV per
/// business day (--statement-day-starts), DIR/NAME-YYYY-MM-DD.csv, written at
/// shutdown and on POST /-/statement/write (answered with a JSON list of the
/// paths): two "#" lines, then 交易时间,商户订单号,渠道流水号,金额,手续费,状态
/// rows (商户订单号: payroute's trade number; 状态 成功), then
/// 合计,<rows>,,<amounts>,<fees>,. Differences injected on purpose
/// (--statement-drop etc., chosen per trade number by --seed) are listed in
/// DIR/NAME-YYYY-MM-DD.csv.faults.csv as kind,trade_no.
#[derive(Debug, Parser)]
#[command(name = "mock-acquirer", version)]
struct Args {
    /// Address to listen on, e.g. 127.0.0.1:9001 (port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,

    /// The API to speak: json (the JSON API above) or epay (an epay gateway
    /// for one merchant account, --pid and --key).
    #[arg(long, value_enum, default_value_t = ProtocolArg::Json)]
    protocol: ProtocolArg,

    /// epay: the merchant id (pid) the gateway accepts.
    #[arg(long, value_name = "ID", required_if_eq("protocol", "epay"))]
    pid: Option<String>,

    /// epay: that merchant's MD5 key. `env:NAME` reads it from the environment
    /// variable NAME (keeps it out of the process list).
    #[arg(long, value_name = "K", required_if_eq("protocol", "epay"))]
    key: Option<String>,

    /// epay: share of valid mapi.php creations refused with code -1 (the
    /// gateway's channel down), between 0 and 1. Nothing is created.
    #[arg(long, value_name = "F", default_value_t = 0.0, value_parser = parse_rate)]
    refuse_rate: f64,

    /// epay: notifications state money as PHP prints a float ("1" for 1.00,
    /// "1.5" for 1.50) instead of two decimals; receivers must compare amounts
    /// as numbers. api.php keeps two decimals.
    #[arg(long)]
    money_as_float: bool,

    /// Share of payments paid (and of pending payments later decided paid), between 0 and 1.
    /// epay: share of created orders whose buyer pays (0: buyers never pay, orders
    /// stay unpaid and are never announced).
    #[arg(long, value_name = "F", default_value_t = 1.0, value_parser = parse_rate)]
    success_rate: f64,

    /// Delay before answering, in milliseconds (epay: mapi.php).
    #[arg(long, value_name = "N", default_value_t = 0)]
    latency_ms: u64,

    /// Uniform extra delay in [0, N] milliseconds.
    #[arg(long, value_name = "N", default_value_t = 0)]
    jitter_ms: u64,

    /// Share of payments never answered (held until shutdown), between 0 and 1.
    /// epay: valid mapi.php creations; nothing is created.
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
    /// epay: how long a created order's buyer takes to pay (or not).
    #[arg(long, value_name = "N", default_value_t = 1000)]
    notify_delay_ms: u64,

    /// Where decided pending payments are announced: a POST of JSON
    /// {"order_id","trade_no","id","amount","currency","status":"paid"|"failed"}
    /// (trade_no: payroute's, from X-Payroute-Trade-No). Plain http:// only.
    /// Without it, pending payments are decided silently (only a query finds out).
    /// JSON only: an epay order names its own notify_url.
    #[arg(long, value_name = "URL", value_parser = parse_http_url)]
    notify_url: Option<String>,

    /// Signs each notification: header x-signature, the lowercase hex
    /// HMAC-SHA256 of the raw body with this key. `env:NAME` reads the key
    /// from the environment variable NAME (keeps it out of the process list).
    /// Without it, notifications are unsigned. JSON only: epay signs with --key.
    #[arg(long, value_name = "S")]
    notify_secret: Option<String>,

    /// Share of decided payments never announced (only a query finds them), 0..1.
    /// epay: of paid orders.
    #[arg(long, value_name = "F", default_value_t = 0.0, value_parser = parse_rate)]
    notify_loss: f64,

    /// Share of announced payments whose notification is sent twice, 0..1.
    #[arg(long, value_name = "F", default_value_t = 0.0, value_parser = parse_rate)]
    notify_repeat: f64,

    /// Share of announced payments preceded by a forged copy (wrong signature,
    /// status "paid", sent once), 0..1. A receiver must refuse it. epay: of
    /// created orders, paid or not (a TRADE_SUCCESS signed with another key).
    #[arg(long, value_name = "F", default_value_t = 0.0, value_parser = parse_rate)]
    notify_forge: f64,

    /// Share of announced payments preceded by a correctly signed copy whose
    /// amount is one more than the payment's, 0..1. A receiver must refuse it.
    /// epay: money 0.01 more.
    #[arg(long, value_name = "F", default_value_t = 0.0, value_parser = parse_rate)]
    notify_wrong_amount: f64,

    /// Tries per notification while the receiver does not answer 2xx (epay:
    /// an answer containing "success"; forged copies: one try).
    #[arg(long, value_name = "N", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    notify_attempts: u32,

    /// Wait before the second try, doubled before each further one (at most
    /// 5 s), in milliseconds.
    #[arg(long, value_name = "N", default_value_t = 100)]
    notify_backoff_ms: u64,

    /// Seed for every random choice: payments sent one at a time get the
    /// same outcomes, delays and notification faults on every run; and the
    /// statements' faults (0 without it).
    #[arg(long, value_name = "N")]
    seed: Option<u64>,

    /// Keeps a ledger of every charge (reversed ones marked, never capped):
    /// GET /-/charges lists them. Faults can be switched at run time with
    /// POST /-/fault {"kind":"hang"|"storm"|"reset"|"late"|"none","rate",
    /// "late_ms","hold_ms","queries"}; GET /-/fault says which is on and
    /// how many requests met each kind.
    #[arg(long)]
    ledger: bool,

    /// Writes statement files of what the acquirer charged into DIR
    /// (created if missing): at shutdown and on POST /-/statement/write.
    #[arg(long, value_name = "DIR")]
    statement_dir: Option<PathBuf>,

    /// Statement file name prefix: DIR/NAME-YYYY-MM-DD.csv.
    #[arg(long, value_name = "NAME", default_value = "statement")]
    statement_name: String,

    /// The channel's day cut: local time of the cut, then its UTC offset
    /// (HH:MM+HH:MM, HH:MM-HH:MM or HH:MMZ). A charge belongs to the business
    /// day of its time shifted by the offset and back by the cut; times are
    /// written at that offset.
    #[arg(long, value_name = "HH:MM+HH:MM", default_value = "00:00+08:00")]
    statement_day_starts: String,

    /// The fee the channel really charges, percent of the amount (rounded
    /// half up to the fen).
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    statement_fee_percent: f64,

    /// A fixed fee per payment on top, in fen.
    #[arg(long, value_name = "N", default_value_t = 0, allow_negative_numbers = true)]
    statement_fee_fixed: i64,

    /// The statements' encoding: utf8, utf8-bom or gbk.
    #[arg(long, value_enum, default_value_t = EncodingArg::Utf8)]
    statement_encoding: EncodingArg,

    /// Amounts and fees in yuan ("1,234.56", two decimals, thousands
    /// separated) or fen (an integer).
    #[arg(long, value_enum, default_value_t = UnitArg::Yuan)]
    statement_unit: UnitArg,

    /// Share of charges left out of the statement (missing_at_channel), 0..1.
    #[arg(long, value_name = "F", default_value_t = 0.0, value_parser = parse_rate)]
    statement_drop: f64,

    /// Share of charges listed 1.00 more (amount_mismatch), 0..1.
    #[arg(long, value_name = "F", default_value_t = 0.0, value_parser = parse_rate)]
    statement_wrong_amount: f64,

    /// Share of charges listed 失败 (status_mismatch), 0..1.
    #[arg(long, value_name = "F", default_value_t = 0.0, value_parser = parse_rate)]
    statement_wrong_status: f64,

    /// Share of charges whose fee is listed 0.50 more (fee_mismatch), 0..1.
    #[arg(long, value_name = "F", default_value_t = 0.0, value_parser = parse_rate)]
    statement_wrong_fee: f64,

    /// Share of charges followed by a 1.00 charge for a trade number payroute
    /// never issued, PHANTOM and 19 digits (missing_in_journal), 0..1. The
    /// five shares add up to at most 1: a charge gets one fault at most.
    #[arg(long, value_name = "F", default_value_t = 0.0, value_parser = parse_rate)]
    statement_phantom: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum EncodingArg {
    Utf8,
    Utf8Bom,
    Gbk,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum UnitArg {
    Yuan,
    Fen,
}

/// The statement files the flags ask for, checked; `None` without
/// `--statement-dir`.
fn statements(args: &Args) -> Result<Option<(PathBuf, StatementSpec)>, String> {
    let Some(dir) = &args.statement_dir else {
        return Ok(None);
    };
    let spec = StatementSpec {
        name: args.statement_name.clone(),
        day_starts: args.statement_day_starts.clone(),
        fee_percent: args.statement_fee_percent,
        fee_fixed: args.statement_fee_fixed,
        encoding: match args.statement_encoding {
            EncodingArg::Utf8 => StatementEncoding::Utf8,
            EncodingArg::Utf8Bom => StatementEncoding::Utf8Bom,
            EncodingArg::Gbk => StatementEncoding::Gbk,
        },
        unit: match args.statement_unit {
            UnitArg::Yuan => AmountUnit::Yuan,
            UnitArg::Fen => AmountUnit::Fen,
        },
        seed: args.seed.unwrap_or(0),
        drop: args.statement_drop,
        wrong_amount: args.statement_wrong_amount,
        wrong_status: args.statement_wrong_status,
        wrong_fee: args.statement_wrong_fee,
        phantom: args.statement_phantom,
    };
    spec.check().map_err(|e| format!("--statement-*: {e}"))?;
    Ok(Some((dir.clone(), spec)))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ProtocolArg {
    Json,
    Epay,
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

/// A signing key given to `flag`: as given, or from the environment with `env:NAME`.
fn resolve_secret(flag: &str, s: &str) -> Result<String, String> {
    match s.strip_prefix("env:") {
        Some(name) => std::env::var(name).map_err(|_| format!("{flag}: environment variable {name} is not set")),
        None => Ok(s.to_owned()),
    }
}

/// The protocol the flags ask for; epay-only flags are refused with json,
/// and JSON-only ones are pointed out with epay.
fn protocol(args: &Args) -> Result<Protocol, String> {
    match args.protocol {
        ProtocolArg::Json => {
            if args.pid.is_some() || args.key.is_some() || args.refuse_rate > 0.0 || args.money_as_float {
                return Err("--pid, --key, --refuse-rate and --money-as-float need --protocol epay".into());
            }
            Ok(Protocol::Json)
        }
        ProtocolArg::Epay => {
            let (Some(pid), Some(key)) = (args.pid.as_deref(), args.key.as_deref()) else {
                return Err("--protocol epay needs --pid and --key".into());
            };
            if args.notify_url.is_some() || args.notify_secret.is_some() || args.pending_rate > 0.0 {
                tracing::warn!(
                    "--notify-url, --notify-secret and --pending-rate are JSON-only: an epay order names its own \
                     notify_url and is signed with --key"
                );
            }
            Ok(Protocol::Epay(EpayGateway {
                refuse_rate: args.refuse_rate,
                money_as_float: args.money_as_float,
                ..EpayGateway::new(pid, &resolve_secret("--key", key)?)
            }))
        }
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
    let notify_secret = match args
        .notify_secret
        .as_deref()
        .map(|s| resolve_secret("--notify-secret", s))
        .transpose()
    {
        Ok(secret) => secret,
        Err(e) => {
            eprintln!("mock-acquirer: {e}");
            return ExitCode::FAILURE;
        }
    };
    let protocol = match protocol(&args) {
        Ok(protocol) => protocol,
        Err(e) => {
            eprintln!("mock-acquirer: {e}");
            return ExitCode::FAILURE;
        }
    };
    let statements = match statements(&args) {
        Ok(statements) => statements,
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
        protocol,
    };
    let epay = matches!(behavior.protocol, Protocol::Epay(_));
    if !epay && behavior.pending_rate > 0.0 && behavior.notify_url.is_none() {
        tracing::warn!("--pending-rate without --notify-url: pending payments are decided but never announced");
    }
    let mut builder = MockAcquirer::builder().listen(args.listen).behavior(behavior.clone());
    if args.ledger {
        builder = builder.ledger();
    }
    if let Some((dir, spec)) = &statements {
        builder = builder.statement_dir(dir.clone(), spec.clone());
    }
    let mock = match builder.start().await {
        Ok(mock) => mock,
        Err(e) => {
            // One line on stderr, whatever RUST_LOG says (e.g. port taken).
            eprintln!("mock-acquirer: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let (pid, refuse_rate, money_as_float) = match &behavior.protocol {
        Protocol::Epay(g) => (Some(&*g.pid), g.refuse_rate, g.money_as_float),
        Protocol::Json => (None, 0.0, false),
    };
    tracing::info!(
        protocol = if epay { "epay" } else { "json" },
        pid,
        refuse_rate,
        money_as_float,
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
        statement_dir = statements
            .as_ref()
            .map_or("-".into(), |(dir, _)| dir.display().to_string()),
        "mock-acquirer listening on {}",
        mock.local_addr()
    );

    if let Err(e) = shutdown_signal().await {
        eprintln!("mock-acquirer: cannot wait for shutdown signals: {e}");
        mock.shutdown();
        return ExitCode::FAILURE;
    }
    mock.shutdown();
    let mut code = ExitCode::SUCCESS;
    if let Some((dir, spec)) = statements {
        // Blocking file I/O, off the runtime's threads.
        let writer = mock.clone();
        match tokio::task::spawn_blocking(move || writer.write_statements(&dir, &spec)).await {
            Ok(Ok(paths)) => tracing::info!(files = paths.len(), "mock-acquirer wrote its statements: {paths:?}"),
            Ok(Err(e)) => {
                eprintln!("mock-acquirer: cannot write the statements: {e}");
                code = ExitCode::FAILURE;
            }
            Err(e) => {
                eprintln!("mock-acquirer: writing the statements failed: {e}");
                code = ExitCode::FAILURE;
            }
        }
    }
    let c = mock.counters();
    tracing::info!(
        requests = c.requests,
        successes = c.successes,
        failures = c.failures,
        invalid = c.invalid,
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
    code
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
