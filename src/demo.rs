//! `payroute demo`: the real proxy, three fake acquirers and live traffic, in
//! one command, with no setup and no files.
//!
//! What it shows: payroute sends each payment to the channel with the best
//! expected outcome (success rate, latency and fee for that amount), moves
//! traffic away from a channel that starts failing or hanging (failover per
//! payment, ejection of the channel), and lets it back once it heals.
//!
//! How:
//!
//! 1. Three [`MockAcquirer`]s start on loopback ports, each with its own
//!    success rate, latency and fee ([`ACQUIRERS`]); failures answer 503.
//! 2. A config naming them is built as text, validated by [`Config::parse`]
//!    and started with [`crate::serve::start`]: the same proxy as
//!    `payroute serve`, listening on free loopback ports.
//! 3. [`CLIENTS`] client tasks post payments to it for the whole duration:
//!    log-uniform amounts from 1.00 to 2000.00 (so small payments, where a
//!    fixed fee weighs, and large ones both occur), mostly CNY, unique order
//!    ids, a few merchants.
//! 4. Every [`TICK`] a table of the proxy's own live state (its
//!    [`crate::app::App::snapshot`]) goes to stdout: each channel's share of
//!    the attempts in the last interval, success rate over the window,
//!    latency estimate, score and breaker state. The same proxy serves its
//!    web console (`/-/ui`, [`crate::ingress::console`]) at a printed URL,
//!    so the run can be watched in a browser too.
//! 5. A script degrades the busiest channel at 1/3 of the duration (80 % of
//!    payments answered 503), makes it hang at 1/2 (90 % never answered:
//!    timeouts), and heals it at 2/3.
//! 6. Traffic stops, everything shuts down, and a summary follows: payments,
//!    success rate, failovers, latency percentiles, fees paid against the fees
//!    had every payment gone to the most expensive channel.
//! 7. A second act speaks epay (易支付) both ways ([`epay_act`]): an epay
//!    shop ([`Merchant`]) posts signed orders to `/mapi.php`, payroute routes
//!    them over two fake epay gateways ([`EPAY_GATEWAYS`]) whose buyers pay
//!    after a delay and some of whose notifications are lost. At 1/3 of the
//!    act gateway B's buyers stop paying: B still creates every order, so
//!    only routing by payment (`[routing] unpaid_after_ms`) moves the traffic.
//!    Lost notifications are found by the sweeper, and the shop's notify
//!    endpoint ([`Receiver`]) verifies every notify payroute signs for it.
//!    The act is short beside the first ([`epay_duration`]) and ends with
//!    its own summary: orders, payments, share per gateway before and after,
//!    notifications lost against found.
//!
//! The statistics window and ejection times are scaled to the duration
//! ([`Timing`]) so that even a short run shows the whole story. The exit code
//! is success when both acts completed, more than [`MIN_SUCCESS`] of the
//! payments succeeded through the proxy, and the epay shop heard of its
//! payments. Proxy logs go to stderr as usual
//! (`RUST_LOG=warn` keeps the terminal to the table).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use payroute_mock::epay::{Merchant, Order, Receiver};
use payroute_mock::{Behavior, MockAcquirer};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::app::App;
use crate::config::{ChannelConfig, Config};
use crate::routing::score::REFERENCE_AMOUNT;

/// Concurrent client tasks posting payments.
const CLIENTS: usize = 16;
/// How often the live table is printed.
const TICK: Duration = Duration::from_secs(2);
/// Per-attempt timeout of every channel, in milliseconds.
const TIMEOUT_MS: u64 = 400;
/// Whole-payment deadline, in milliseconds.
const DEADLINE_MS: u64 = 3_000;
/// A client gives up on a payment after this long (the proxy answers sooner).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Share of payments that must succeed through the proxy for exit code 0.
const MIN_SUCCESS: f64 = 0.95;
/// The merchants sending payments (no API keys, generous rate limits).
const MERCHANTS: [&str; 3] = ["m-shop", "m-travel", "m-games"];
/// Amount range in minor units.
const MIN_AMOUNT: u64 = 100;
const MAX_AMOUNT: u64 = 200_000;
/// Share of payments in USD; the rest are CNY.
const USD_SHARE: f64 = 0.1;
/// What the degraded channel does in each bad phase.
const FAILING_SUCCESS_RATE: f64 = 0.2;
const HANG_RATE: f64 = 0.9;

/// One fake acquirer of the demo.
struct Acquirer {
    id: &'static str,
    success_rate: f64,
    latency_ms: u64,
    jitter_ms: u64,
    fee_percent: f64,
    fee_fixed: u64,
}

impl Acquirer {
    /// Its healthy behaviour.
    fn behavior(&self) -> Behavior {
        Behavior {
            success_rate: self.success_rate,
            latency_ms: self.latency_ms,
            jitter_ms: self.jitter_ms,
            hang_rate: 0.0,
            fail_status: 503,
            ..Behavior::default()
        }
    }
}

/// Cheap and fast; fastest but dearest and flakiest; the most reliable and
/// cheapest in percent, but slow and with a fixed fee. With these, the last
/// one should take most payments, and the smallest (where its fixed fee
/// weighs) go to the first.
const ACQUIRERS: [Acquirer; 3] = [
    Acquirer {
        id: "unionpay",
        success_rate: 0.98,
        latency_ms: 30,
        jitter_ms: 10,
        fee_percent: 0.38,
        fee_fixed: 0,
    },
    Acquirer {
        id: "alipay-sp",
        success_rate: 0.97,
        latency_ms: 15,
        jitter_ms: 5,
        fee_percent: 0.60,
        fee_fixed: 0,
    },
    Acquirer {
        id: "stripe-like",
        success_rate: 0.995,
        latency_ms: 80,
        jitter_ms: 20,
        fee_percent: 0.30,
        fee_fixed: 10,
    },
];

/// Routing knobs scaled to the run, so a short demo still shows ejection,
/// probing and recovery before it ends.
struct Timing {
    window: Duration,
    eject_base: Duration,
    eject_max: Duration,
}

impl Timing {
    fn for_run(duration: Duration) -> Timing {
        let eject_base = (duration / 15).clamp(Duration::from_millis(500), Duration::from_secs(2));
        Timing {
            window: (duration / 5).clamp(Duration::from_secs(2), Duration::from_secs(8)),
            eject_base,
            eject_max: eject_base * 2,
        }
    }
}

/// Runs the demo for `duration` of traffic and reports how it went.
pub(crate) async fn run(duration: Duration) -> ExitCode {
    match demo(duration).await {
        Ok((summary, epay)) => {
            if !epay.ok() {
                eprintln!("payroute demo: FAILED: the epay act made no order the shop heard of as paid");
                return ExitCode::FAILURE;
            }
            summary.verdict()
        }
        Err(e) => {
            eprintln!("payroute demo: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn demo(duration: Duration) -> Result<(Summary, EpaySummary), String> {
    // The demo's journal lives in a directory of its own, gone afterwards:
    // the demo leaves nothing behind in the directory it was run from.
    let scratch = std::env::temp_dir().join(format!("payroute-demo-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).map_err(|e| format!("cannot create {}: {e}", scratch.display()))?;
    let result = both_acts(duration, &scratch).await;
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

async fn both_acts(duration: Duration, scratch: &Path) -> Result<(Summary, EpaySummary), String> {
    let summary = demo_in(duration, scratch).await?;
    let epay = epay_act(epay_duration(duration), scratch).await?;
    Ok((summary, epay))
}

async fn demo_in(duration: Duration, scratch: &Path) -> Result<Summary, String> {
    let timing = Timing::for_run(duration);
    let mocks = start_mocks().await?;
    let addrs: Vec<SocketAddr> = mocks.iter().map(MockAcquirer::local_addr).collect();
    let text = config_text(&addrs, &timing);
    let config = Config::parse(&text, &scratch.join("demo.toml"))
        .map_err(|e| format!("the demo's own config is invalid: {e}"))?;
    let channels: Arc<[ChannelConfig]> = config.channels.clone().into();
    let running = crate::serve::start(config, text, None)
        .await
        .map_err(|e| format!("cannot start the proxy: {e}"))?;
    say(&intro(&mocks, running.payments, duration, &timing));
    say(&console_line(running.admin));

    let start = Instant::now();
    let traffic = Traffic::start(running.payments, channels.clone(), start + duration);
    Monitor::new(&running.app, &mocks, traffic.counts.clone(), start)
        .run(duration)
        .await;
    let tally = traffic.finish().await;
    running.shutdown().await;
    for m in &mocks {
        m.shutdown();
    }
    let summary = tally.map(|t| Summary::new(t, &channels, start.elapsed()))?;
    say(&summary.render());
    Ok(summary)
}

/// Writes to stdout, ignoring a closed pipe (`payroute demo | head`).
fn say(text: &str) {
    if cfg!(test) {
        // The test harness captures only the print macros.
        print!("{text}");
        return;
    }
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

// ---------------------------------------------------------------- setup

async fn start_mocks() -> Result<Vec<MockAcquirer>, String> {
    let mut mocks = Vec::with_capacity(ACQUIRERS.len());
    for a in &ACQUIRERS {
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        let mock = MockAcquirer::bind(addr, a.behavior())
            .await
            .map_err(|e| format!("cannot start mock acquirer {}: {e}", a.id))?;
        mocks.push(mock);
    }
    Ok(mocks)
}

/// The proxy's config: one channel per mock (same order as [`ACQUIRERS`]).
/// Each channel has the mock's status query and reversal, so an attempt
/// that failed after being sent (5xx, timeout) is checked before failover.
fn config_text(addrs: &[SocketAddr], t: &Timing) -> String {
    let mut text = format!(
        r#"# payroute demo: generated in memory
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
deadline_ms = {DEADLINE_MS}
drain_ms = 2000

[routing]
window_ms = {window}
explore_share = 0.02
latency_decay_ms = 2000
eject_consecutive_failures = 5
eject_base_ms = {base}
eject_max_ms = {max}
"#,
        window = t.window.as_millis(),
        base = t.eject_base.as_millis(),
        max = t.eject_max.as_millis(),
    );
    for (a, addr) in ACQUIRERS.iter().zip(addrs) {
        text += &format!(
            r#"
[[channel]]
id = "{id}"
url = "http://{addr}"
fee_percent = {pct:?}
fee_fixed = {fixed}
timeout_ms = {TIMEOUT_MS}
query = {{ method = "GET", path = "/v1/payments/{{order_id}}" }}
reversal = {{ method = "POST", path = "/v1/payments/{{order_id}}/reverse" }}
"#,
            id = a.id,
            pct = a.fee_percent,
            fixed = a.fee_fixed,
        );
    }
    for m in MERCHANTS {
        text += &format!("\n[[merchant]]\nid = \"{m}\"\nrate_per_sec = 100000\nburst = 100000\n");
    }
    text
}

/// Where the act's proxy serves its web console (`/-/ui` on the admin
/// listener): the same routing as the table, in a browser, live while the
/// act runs (each act has its own proxy, so its own address).
fn console_line(admin: SocketAddr) -> String {
    format!(
        "console: http://{admin}{} (live while this act runs)\n\n",
        crate::ingress::console::PATH
    )
}

fn intro(mocks: &[MockAcquirer], proxy: SocketAddr, duration: Duration, t: &Timing) -> String {
    let mut s = format!(
        "payroute demo: {} s of traffic from {CLIENTS} clients through the proxy on {proxy}\n\n",
        duration.as_secs_f64()
    );
    s += "  acquirer      address              success  latency  fee\n";
    for (a, m) in ACQUIRERS.iter().zip(mocks) {
        let fee = match a.fee_fixed {
            0 => format!("{:.2}%", a.fee_percent),
            f => format!("{:.2}% + {f}", a.fee_percent),
        };
        s += &format!(
            "  {:<12}  {:<19}  {:>6.1}%  {:>4} ms  {fee}\n",
            a.id,
            m.local_addr().to_string(),
            a.success_rate * 100.0,
            a.latency_ms,
        );
    }
    s += &format!(
        "\nAt 1/3 of the run the busiest channel starts failing, at 1/2 it hangs, at 2/3 it heals.\n\
         share: attempts in the last interval; success: over the last {:.1} s; latency: Peak-EWMA;\n\
         score: expected value of a {}.{:02} payment (higher is better). Proxy logs go to stderr.\n\n",
        t.window.as_secs_f64(),
        REFERENCE_AMOUNT / 100,
        REFERENCE_AMOUNT % 100,
    );
    s
}

// ---------------------------------------------------------------- traffic

/// Live counters the client tasks bump and the table reads.
#[derive(Default)]
struct Counts {
    done: AtomicU64,
    paid: AtomicU64,
    failovers: AtomicU64,
    next_order: AtomicU64,
}

/// The running client tasks.
struct Traffic {
    tasks: JoinSet<Tally>,
    counts: Arc<Counts>,
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

impl Traffic {
    fn start(proxy: SocketAddr, channels: Arc<[ChannelConfig]>, until: Instant) -> Traffic {
        let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
        let uri: Uri = format!("http://{proxy}/v1/payments")
            .parse()
            .expect("a socket address makes a valid URI");
        let counts = Arc::new(Counts::default());
        let mut tasks = JoinSet::new();
        for _ in 0..CLIENTS {
            tasks.spawn(client_loop(
                client.clone(),
                uri.clone(),
                channels.clone(),
                counts.clone(),
                until,
            ));
        }
        Traffic { tasks, counts }
    }

    /// Waits for every client to finish its last payment.
    async fn finish(mut self) -> Result<Tally, String> {
        let mut total: Option<Tally> = None;
        while let Some(joined) = self.tasks.join_next().await {
            let tally = joined.map_err(|e| format!("a client task failed: {e}"))?;
            total = Some(match total {
                Some(t) => t.merge(tally),
                None => tally,
            });
        }
        total.ok_or_else(|| "no client task ran".to_owned())
    }
}

/// One payment a client sends.
struct Payment {
    order_id: String,
    amount: u64,
    currency: &'static str,
    merchant: &'static str,
}

impl Payment {
    fn random(seq: u64) -> Payment {
        Payment {
            order_id: format!("demo-{seq:06}"),
            amount: log_uniform(MIN_AMOUNT, MAX_AMOUNT),
            currency: if fastrand::f64() < USD_SHARE { "USD" } else { "CNY" },
            merchant: MERCHANTS[fastrand::usize(..MERCHANTS.len())],
        }
    }

    fn body(&self) -> Bytes {
        let json = serde_json::json!({
            "order_id": self.order_id,
            "amount": self.amount,
            "currency": self.currency,
        });
        Bytes::from(json.to_string())
    }
}

/// As many payments between 1 and 10 as between 100 and 1000.
fn log_uniform(lo: u64, hi: u64) -> u64 {
    let (a, b) = ((lo as f64).ln(), (hi as f64).ln());
    ((a + fastrand::f64() * (b - a)).exp().round() as u64).clamp(lo, hi)
}

/// What came back for one payment.
enum Outcome {
    /// 2xx: paid, by `channel` (index into the channels) after `attempts`.
    Paid { channel: Option<usize>, attempts: u32 },
    /// The acquirer answered with a refusal (4xx passed through).
    Declined { attempts: u32 },
    /// The proxy answered with an error of its own (this status).
    Failed(u16),
    /// No answer from the proxy.
    Error(String),
}

impl Outcome {
    fn failed_over(&self) -> bool {
        matches!(self, Outcome::Paid { attempts, .. } | Outcome::Declined { attempts } if *attempts > 1)
    }
}

async fn client_loop(
    client: HttpClient,
    uri: Uri,
    channels: Arc<[ChannelConfig]>,
    counts: Arc<Counts>,
    until: Instant,
) -> Tally {
    let mut tally = Tally::new(channels.len());
    while Instant::now() < until {
        let payment = Payment::random(counts.next_order.fetch_add(1, Relaxed));
        let started = Instant::now();
        let outcome = send(&client, &uri, &payment, &channels).await;
        counts.done.fetch_add(1, Relaxed);
        if matches!(outcome, Outcome::Paid { .. }) {
            counts.paid.fetch_add(1, Relaxed);
        }
        if outcome.failed_over() {
            counts.failovers.fetch_add(1, Relaxed);
        }
        tally.record(&payment, outcome, started.elapsed(), &channels);
    }
    tally
}

async fn send(client: &HttpClient, uri: &Uri, p: &Payment, channels: &[ChannelConfig]) -> Outcome {
    let request = Request::post(uri.clone())
        .header(CONTENT_TYPE, "application/json")
        .header("x-merchant-id", p.merchant)
        .body(Full::new(p.body()));
    let request = match request {
        Ok(r) => r,
        Err(e) => return Outcome::Error(format!("cannot build the request: {e}")),
    };
    let exchange = async {
        let response = client.request(request).await.map_err(|e| e.to_string())?;
        let (parts, body) = response.into_parts();
        // Read to the end so the connection goes back to the pool.
        body.collect().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(parts)
    };
    let parts = match tokio::time::timeout(CLIENT_TIMEOUT, exchange).await {
        Ok(Ok(parts)) => parts,
        Ok(Err(e)) => return Outcome::Error(e),
        Err(_) => return Outcome::Error("no answer from the proxy in time".into()),
    };
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let channel = header("x-payroute-channel").and_then(|id| channels.iter().position(|c| &*c.id == id));
    let attempts = header("x-payroute-attempts").and_then(|n| n.parse().ok()).unwrap_or(1);
    if parts.status.is_success() {
        Outcome::Paid { channel, attempts }
    } else if parts.status.is_client_error() && channel.is_some() {
        Outcome::Declined { attempts }
    } else {
        Outcome::Failed(parts.status.as_u16())
    }
}

/// What one client saw; merged at the end.
struct Tally {
    sent: u64,
    paid: u64,
    declined: u64,
    /// Proxy errors by status.
    failed: BTreeMap<u16, u64>,
    errors: u64,
    failovers: u64,
    /// Fees of the paid payments, on the channel that took each.
    fee_paid: f64,
    /// Per channel: the fees had every paid payment gone to it.
    fee_if_all: Vec<f64>,
    /// Per channel: payments it took.
    paid_by: Vec<u64>,
    latencies: Vec<Duration>,
    first_error: Option<String>,
}

impl Tally {
    fn new(channels: usize) -> Tally {
        Tally {
            sent: 0,
            paid: 0,
            declined: 0,
            failed: BTreeMap::new(),
            errors: 0,
            failovers: 0,
            fee_paid: 0.0,
            fee_if_all: vec![0.0; channels],
            paid_by: vec![0; channels],
            latencies: Vec::new(),
            first_error: None,
        }
    }

    fn record(&mut self, p: &Payment, outcome: Outcome, took: Duration, channels: &[ChannelConfig]) {
        self.sent += 1;
        self.failovers += u64::from(outcome.failed_over());
        match outcome {
            Outcome::Paid { channel, .. } => {
                self.paid += 1;
                if let Some(i) = channel {
                    self.fee_paid += channels[i].fee(p.amount);
                    self.paid_by[i] += 1;
                }
                for (all, c) in self.fee_if_all.iter_mut().zip(channels) {
                    *all += c.fee(p.amount);
                }
            }
            Outcome::Declined { .. } => self.declined += 1,
            Outcome::Failed(status) => *self.failed.entry(status).or_default() += 1,
            Outcome::Error(e) => {
                self.errors += 1;
                self.first_error.get_or_insert(e);
            }
        }
        self.latencies.push(took);
    }

    fn merge(mut self, other: Tally) -> Tally {
        self.sent += other.sent;
        self.paid += other.paid;
        self.declined += other.declined;
        for (status, n) in other.failed {
            *self.failed.entry(status).or_default() += n;
        }
        self.errors += other.errors;
        self.failovers += other.failovers;
        self.fee_paid += other.fee_paid;
        for (a, b) in self.fee_if_all.iter_mut().zip(&other.fee_if_all) {
            *a += b;
        }
        for (a, b) in self.paid_by.iter_mut().zip(&other.paid_by) {
            *a += b;
        }
        self.latencies.extend(other.latencies);
        self.first_error = self.first_error.or(other.first_error);
        self
    }
}

// ---------------------------------------------------------------- the show

/// A scripted change to the degraded channel.
#[derive(Clone, Copy)]
enum Step {
    Fail,
    Hang,
    Heal,
}

/// When each step happens, from the start of traffic.
fn script(duration: Duration) -> [(Duration, Step); 3] {
    [
        (duration / 3, Step::Fail),
        (duration / 2, Step::Hang),
        (duration * 2 / 3, Step::Heal),
    ]
}

/// Prints the table, plays the script.
struct Monitor<'a> {
    app: &'a App,
    mocks: &'a [MockAcquirer],
    counts: Arc<Counts>,
    start: Instant,
    last_tick: Instant,
    /// Per acquirer: the channel's attempts at the last tick.
    prev_requests: Vec<u64>,
    /// `done`, `paid`, `failovers` at the last tick.
    prev_counts: [u64; 3],
    phase: String,
    /// The acquirer the script degrades (index into [`ACQUIRERS`]).
    target: Option<usize>,
}

impl<'a> Monitor<'a> {
    fn new(app: &'a App, mocks: &'a [MockAcquirer], counts: Arc<Counts>, start: Instant) -> Monitor<'a> {
        Monitor {
            app,
            mocks,
            counts,
            start,
            last_tick: start,
            prev_requests: vec![0; ACQUIRERS.len()],
            prev_counts: [0; 3],
            phase: "steady".into(),
            target: None,
        }
    }

    async fn run(mut self, duration: Duration) {
        let end = self.start + duration;
        let mut steps = script(duration).into_iter().peekable();
        let mut next_tick = self.start + TICK;
        loop {
            let next_step = steps.peek().map_or(end, |(at, _)| self.start + *at);
            tokio::time::sleep_until(next_tick.min(next_step).min(end)).await;
            let now = Instant::now();
            // The table first: it describes the interval that just ended.
            if now >= next_tick {
                self.table(now);
                next_tick += TICK;
            }
            while let Some((_, step)) = steps.next_if(|(at, _)| self.start + *at <= now) {
                self.apply(step);
            }
            if now >= end {
                if now - self.last_tick >= TICK / 4 {
                    self.table(now);
                }
                return;
            }
        }
    }

    /// Attempts per acquirer since the start, from the proxy's live state.
    fn requests(&self) -> Vec<u64> {
        let snap = self.app.snapshot();
        ACQUIRERS
            .iter()
            .map(|a| {
                snap.channels
                    .iter()
                    .find(|c| &*c.config.id == a.id)
                    .map_or(0, |c| c.live.requests())
            })
            .collect()
    }

    /// The acquirer with the most attempts since the last tick.
    fn busiest(&self) -> usize {
        let now = self.requests();
        (0..ACQUIRERS.len())
            .max_by_key(|&i| now[i].saturating_sub(self.prev_requests[i]))
            .expect("the demo has acquirers")
    }

    fn apply(&mut self, step: Step) {
        let target = match self.target {
            Some(t) => t,
            None => *self.target.insert(self.busiest()),
        };
        let a = &ACQUIRERS[target];
        let (behavior, phase, news) = match step {
            Step::Fail => (
                Behavior {
                    success_rate: FAILING_SUCCESS_RATE,
                    ..a.behavior()
                },
                format!("{} failing", a.id),
                format!(
                    "{} (the busiest channel) starts failing: {:.0}% of its payments answered 503",
                    a.id,
                    (1.0 - FAILING_SUCCESS_RATE) * 100.0
                ),
            ),
            Step::Hang => (
                Behavior {
                    hang_rate: HANG_RATE,
                    ..a.behavior()
                },
                format!("{} hanging", a.id),
                format!(
                    "{} now hangs: {:.0}% of its payments never answered (timeout {TIMEOUT_MS} ms)",
                    a.id,
                    HANG_RATE * 100.0
                ),
            ),
            Step::Heal => (
                a.behavior(),
                format!("{} healed", a.id),
                format!(
                    "{} heals: back to {:.1}% success, {} ms",
                    a.id,
                    a.success_rate * 100.0,
                    a.latency_ms
                ),
            ),
        };
        self.mocks[target].set_behavior(behavior);
        self.phase = phase;
        say(&format!(">>> {:5.1}s  {news}\n\n", self.start.elapsed().as_secs_f64()));
    }

    fn table(&mut self, now: Instant) {
        let secs = (now - self.last_tick).as_secs_f64().max(1e-3);
        self.last_tick = now;
        let counts = [
            self.counts.done.load(Relaxed),
            self.counts.paid.load(Relaxed),
            self.counts.failovers.load(Relaxed),
        ];
        let [done, paid, failovers] = std::array::from_fn(|i| counts[i] - self.prev_counts[i]);
        self.prev_counts = counts;
        let ok = if done == 0 {
            "-".into()
        } else {
            percent(paid as f64 / done as f64)
        };
        let mut s = format!(
            "{:5.1}s  {:<22} {:>5.0} payments/s  ok {ok:>6}  failovers {failovers}\n",
            (now - self.start).as_secs_f64(),
            self.phase,
            done as f64 / secs,
        );
        s += "    channel      share   att/s  success  latency    score  state\n";

        let snap = self.app.snapshot();
        let requests = self.requests();
        let deltas: Vec<u64> = requests
            .iter()
            .zip(&self.prev_requests)
            .map(|(n, p)| n.saturating_sub(*p))
            .collect();
        self.prev_requests = requests;
        let total = deltas.iter().sum::<u64>().max(1);
        let views: Vec<_> = snap.channel_views().collect();
        for (a, delta) in ACQUIRERS.iter().zip(&deltas) {
            let Some(v) = views.iter().find(|v| &*v.channel.config.id == a.id) else {
                continue;
            };
            let success = match v.totals.attempts() {
                0 => "-".into(),
                n => percent(v.totals.successes as f64 / n as f64),
            };
            let latency = v.latency_ms.map_or("-".into(), |ms| format!("{ms:.0} ms"));
            s += &format!(
                "    {:<11} {:>5.0}%  {:>6.0}  {success:>7}  {latency:>7}  {:>7.4}  {}\n",
                a.id,
                *delta as f64 * 100.0 / total as f64,
                *delta as f64 / secs,
                v.score,
                v.state,
            );
        }
        s.push('\n');
        say(&s);
    }
}

fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

// ---------------------------------------------------------------- summary

/// The run in numbers.
struct Summary {
    tally: Tally,
    elapsed: Duration,
    /// Channel ids, in the order of the tally's per-channel vectors.
    ids: Vec<Arc<str>>,
}

impl Summary {
    fn new(mut tally: Tally, channels: &[ChannelConfig], elapsed: Duration) -> Summary {
        tally.latencies.sort_unstable();
        Summary {
            tally,
            elapsed,
            ids: channels.iter().map(|c| c.id.clone()).collect(),
        }
    }

    fn success_rate(&self) -> f64 {
        match self.tally.sent {
            0 => 0.0,
            n => self.tally.paid as f64 / n as f64,
        }
    }

    /// The latency below which `q` of the payments finished.
    fn latency(&self, q: f64) -> Duration {
        let l = &self.tally.latencies;
        if l.is_empty() {
            return Duration::ZERO;
        }
        l[((l.len() - 1) as f64 * q).round() as usize]
    }

    /// The channel that would have cost most, had it taken every paid payment.
    fn dearest(&self) -> Option<(&str, f64)> {
        self.ids
            .iter()
            .zip(&self.tally.fee_if_all)
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(id, fee)| (&**id, *fee))
    }

    fn render(&self) -> String {
        let t = &self.tally;
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let failed: u64 = t.failed.values().sum();
        let statuses: Vec<String> = t.failed.iter().map(|(status, n)| format!("{status}: {n}")).collect();
        let statuses = match statuses.len() {
            0 => String::new(),
            _ => format!(" [{}]", statuses.join(", ")),
        };
        let mut s = format!(
            "Summary ({:.1} s, {CLIENTS} clients)\n\
             \x20 payments sent     {:>9}   ({:.0}/s)\n\
             \x20 succeeded         {:>9}   ({:.2}%)\n\
             \x20 declined / failed {:>9}   ({} declined, {} failed{statuses}, {} without answer)\n\
             \x20 failovers         {:>9}   (payments that needed more than one attempt)\n\
             \x20 latency           p50 {:.0} ms, p99 {:.0} ms\n",
            self.elapsed.as_secs_f64(),
            t.sent,
            t.sent as f64 / self.elapsed.as_secs_f64().max(1e-3),
            t.paid,
            self.success_rate() * 100.0,
            t.declined + failed + t.errors,
            t.declined,
            failed,
            t.errors,
            t.failovers,
            ms(self.latency(0.50)),
            ms(self.latency(0.99)),
        );
        let by: Vec<String> = self
            .ids
            .iter()
            .zip(&t.paid_by)
            .map(|(id, n)| format!("{id} {n}"))
            .collect();
        s += &format!("  paid by           {}\n", by.join(", "));
        s += &format!("  fees paid         {:>12}   (major units)\n", money(t.fee_paid));
        if let Some((id, dearest)) = self.dearest() {
            let saved = dearest - t.fee_paid;
            let share = if dearest > 0.0 { saved / dearest } else { 0.0 };
            s += &format!(
                "  all via {id:<10}{:>12}   (the most expensive channel)\n",
                money(dearest)
            );
            s += &format!("  saved             {:>12}   ({})\n", money(saved), percent(share));
        }
        if let Some(e) = &t.first_error {
            s += &format!("  first client error: {e}\n");
        }
        s
    }

    fn verdict(&self) -> ExitCode {
        let rate = self.success_rate();
        if self.tally.sent > 0 && rate > MIN_SUCCESS {
            say(&format!(
                "\nok: {:.2}% of payments succeeded through the proxy.\n",
                rate * 100.0
            ));
            ExitCode::SUCCESS
        } else {
            eprintln!(
                "payroute demo: FAILED: {} of {} payments succeeded through the proxy (need more than {})",
                percent(rate),
                self.tally.sent,
                percent(MIN_SUCCESS)
            );
            ExitCode::FAILURE
        }
    }
}

/// Minor units as major units with two decimals.
fn money(minor: f64) -> String {
    format!("{:.2}", minor / 100.0)
}

// ---------------------------------------------------------------- act two: epay

/// The epay act's two gateways: payroute's account at each (`pid`, MD5
/// key), and its fee. The second is cheaper, so it takes most orders until
/// its buyers stop paying.
struct EpayGw {
    id: &'static str,
    pid: &'static str,
    key: &'static str,
    fee_percent: f64,
}

const EPAY_GATEWAYS: [EpayGw; 2] = [
    EpayGw {
        id: "epay-a",
        pid: "2001",
        key: "demo-gateway-key-a",
        fee_percent: 0.8,
    },
    EpayGw {
        id: "epay-b",
        pid: "3001",
        key: "demo-gateway-key-b",
        fee_percent: 0.5,
    },
];

/// The shop sending epay orders: its `pid` at payroute and its key.
const SHOP_PID: &str = "1001";
const SHOP_KEY: &str = "demo-shop-key-1001";
/// Concurrent shop tasks, and the pause between one's orders.
const SHOPPERS: usize = 4;
const ORDER_PAUSE: Duration = Duration::from_millis(120);
/// Share of buyers who pay, how long they take, and the share of
/// notifications the gateways lose.
const BUYERS_PAY: f64 = 0.97;
const PAY_DELAY_MS: u64 = 300;
const NOTIFY_LOSS: f64 = 0.15;
/// An order still unpaid this long counts as a failure of its gateway.
const UNPAID_AFTER_MS: u64 = 2_000;
/// How long the shop waits, after the last order, for payments and the
/// sweeper to catch up before the summary.
const EPAY_SETTLE: Duration = Duration::from_secs(4);

/// The epay act's length for a run of `duration`: short beside the first.
fn epay_duration(duration: Duration) -> Duration {
    (duration * 2 / 5).clamp(Duration::from_secs(4), Duration::from_secs(12))
}

/// Live counters of the shop tasks: orders created per gateway.
struct EpayCounts {
    orders: AtomicU64,
    refused: AtomicU64,
    /// Per gateway (index into [`EPAY_GATEWAYS`]), by the pay link's address.
    created: [AtomicU64; EPAY_GATEWAYS.len()],
    next_order: AtomicU64,
}

/// The second act: an epay shop, payroute speaking epay both ways, two
/// epay gateways; gateway B's buyers stop paying at 1/3 of the act.
async fn epay_act(duration: Duration, scratch: &Path) -> Result<EpaySummary, String> {
    let mut gateways = Vec::with_capacity(EPAY_GATEWAYS.len());
    for g in &EPAY_GATEWAYS {
        let mock = MockAcquirer::bind(SocketAddr::from(([127, 0, 0, 1], 0)), epay_behavior(g, BUYERS_PAY))
            .await
            .map_err(|e| format!("cannot start epay gateway {}: {e}", g.id))?;
        gateways.push(mock);
    }
    let receiver = Receiver::start(SHOP_KEY, 0)
        .await
        .map_err(|e| format!("cannot start the shop's notify endpoint: {e}"))?;
    // public_url must name the proxy's own address before it starts: bind a
    // free port and hand the listener to the proxy (a port closed and bound
    // again could be taken in between by another process on a busy machine).
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .map_err(|e| format!("cannot bind the epay proxy's port: {e}"))?;
    let port = listener
        .local_addr()
        .map_err(|e| format!("cannot read the epay proxy's port: {e}"))?
        .port();
    let urls: Vec<String> = gateways.iter().map(MockAcquirer::url).collect();
    let text = epay_config_text(port, &urls);
    let config = Config::parse(&text, &scratch.join("epay.toml"))
        .map_err(|e| format!("the demo's own epay config is invalid: {e}"))?;
    let running = crate::serve::start_with(config, text, None, Some(listener))
        .await
        .map_err(|e| format!("cannot start the epay proxy: {e}"))?;
    say(&epay_intro(&gateways, running.payments, duration));
    say(&console_line(running.admin));

    let counts = Arc::new(EpayCounts {
        orders: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        created: std::array::from_fn(|_| AtomicU64::new(0)),
        next_order: AtomicU64::new(0),
    });
    let start = Instant::now();
    let base = format!("http://{}/", running.payments);
    let mut shoppers = JoinSet::new();
    for _ in 0..SHOPPERS {
        shoppers.spawn(shop_loop(
            base.clone(),
            urls.clone(),
            receiver.url(),
            counts.clone(),
            start + duration,
        ));
    }

    let stop_at = start + duration / 3;
    // "After" counts from when B's unpaid orders have had time to count.
    let settled_at = stop_at + Duration::from_millis(UNPAID_AFTER_MS) + TICK / 2;
    let mut before = [0u64; EPAY_GATEWAYS.len()];
    let mut at_settled: Option<[u64; EPAY_GATEWAYS.len()]> = None;
    let mut prev = [0u64; EPAY_GATEWAYS.len()];
    let mut last = start;
    let mut phase = "steady";
    let mut next_tick = start + TICK;
    loop {
        let end = start + duration;
        let wake = match (phase, at_settled) {
            ("steady", _) => next_tick.min(stop_at),
            (_, None) => next_tick.min(settled_at),
            _ => next_tick,
        }
        .min(end);
        tokio::time::sleep_until(wake).await;
        let now = Instant::now();
        if now >= next_tick || now >= end {
            epay_table(
                &running.app,
                &counts,
                &gateways,
                &receiver,
                &mut prev,
                now - start,
                now - last,
                phase,
            );
            last = now;
            next_tick += TICK;
        }
        if phase == "steady" && now >= stop_at {
            before = created_now(&counts);
            let b = &EPAY_GATEWAYS[1];
            gateways[1].set_behavior(epay_behavior(b, 0.0));
            phase = "B unpaid";
            say(&format!(
                ">>> {:5.1}s  {}'s buyers stop paying: it still creates every order (code 1), none gets paid\n\n",
                (now - start).as_secs_f64(),
                b.id
            ));
        }
        if phase != "steady" && at_settled.is_none() && now >= settled_at {
            at_settled = Some(created_now(&counts));
        }
        if now >= end {
            break;
        }
    }
    while let Some(joined) = shoppers.join_next().await {
        joined.map_err(|e| format!("a shop task failed: {e}"))?;
    }
    // Orders made at the very end are paid, lost and found after it.
    let lost = |g: &[MockAcquirer]| g.iter().map(|m| m.counters().notify_lost).sum::<u64>();
    let settle = Instant::now() + EPAY_SETTLE;
    let paid = |g: &[MockAcquirer]| g.iter().map(|m| m.counters().settled_paid).sum::<u64>();
    while Instant::now() < settle
        && (sweeper_found(&running.app) < lost(&gateways) || (receiver.count() as u64) < paid(&gateways))
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = created_now(&counts);
    let from = at_settled.unwrap_or(before);
    let summary = EpaySummary {
        elapsed: start.elapsed(),
        orders: counts.orders.load(Relaxed),
        refused: counts.refused.load(Relaxed),
        before,
        after: std::array::from_fn(|i| after[i] - from[i]),
        // A run too short to reach settled_at measures from the stop.
        after_secs: (start + duration)
            .saturating_duration_since(if at_settled.is_some() { settled_at } else { stop_at })
            .as_secs_f64(),
        paid: paid(&gateways),
        lost: lost(&gateways),
        found: sweeper_found(&running.app),
        notified: receiver.notifications().iter().filter(|n| n.signature_valid).count() as u64,
    };
    running.shutdown().await;
    for m in &gateways {
        m.shutdown();
    }
    say(&summary.render());
    Ok(summary)
}

fn epay_behavior(g: &EpayGw, buyers_pay: f64) -> Behavior {
    Behavior {
        success_rate: buyers_pay,
        latency_ms: 10,
        jitter_ms: 5,
        notify_delay_ms: PAY_DELAY_MS,
        notify_loss: NOTIFY_LOSS,
        notify_attempts: 5,
        notify_backoff_ms: 100,
        ..Behavior::epay(g.pid, g.key)
    }
}

fn created_now(counts: &EpayCounts) -> [u64; EPAY_GATEWAYS.len()] {
    std::array::from_fn(|i| counts.created[i].load(Relaxed))
}

/// Payments the sweeper found paid: notifications that never came.
fn sweeper_found(app: &App) -> u64 {
    EPAY_GATEWAYS
        .iter()
        .map(|g| app.metrics.sweeper_queries.with_label_values(&[g.id, "paid"]).get())
        .sum()
}

/// payroute speaking epay both ways: the shop as an epay merchant, the two
/// gateways as epay channels, orders unpaid after [`UNPAID_AFTER_MS`]
/// counted as failures, and a sweeper that asks soon.
fn epay_config_text(port: u16, urls: &[String]) -> String {
    let mut text = format!(
        r#"# payroute demo, act two: generated in memory
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:{port}"
deadline_ms = {DEADLINE_MS}
drain_ms = 2000

[journal]
path = "epay.db"

[routing]
window_ms = 4000
explore_share = 0.05
unpaid_after_ms = {UNPAID_AFTER_MS}
eject_consecutive_failures = 5
eject_base_ms = 2000
eject_max_ms = 4000

[notify]
retry_ms = [0, 200, 400, 800]

[sweeper]
query_after_ms = [600, 1500]
close_after_ms = 4000

[[merchant]]
id = "{SHOP_PID}"
epay_key = "{SHOP_KEY}"
rate_per_sec = 100000
burst = 100000
"#
    );
    for (g, url) in EPAY_GATEWAYS.iter().zip(urls) {
        text += &format!(
            r#"
[[channel]]
id = "{id}"
protocol = "epay"
url = "{url}/"
pid = "{pid}"
key = "{key}"
pay_types = ["alipay", "wxpay"]
fee_percent = {pct:?}
timeout_ms = {TIMEOUT_MS}
"#,
            id = g.id,
            pid = g.pid,
            key = g.key,
            pct = g.fee_percent,
        );
    }
    text
}

fn epay_intro(gateways: &[MockAcquirer], proxy: SocketAddr, duration: Duration) -> String {
    let mut s = format!(
        "\nAct two, epay (易支付): {:.0} s of orders from an epay shop ({SHOPPERS} tasks) through /mapi.php on {proxy}\n\n",
        duration.as_secs_f64()
    );
    s += "  gateway   address              buyers pay  notify lost  fee\n";
    for (g, m) in EPAY_GATEWAYS.iter().zip(gateways) {
        s += &format!(
            "  {:<8}  {:<19}  {:>9.0}%  {:>10.0}%  {:.2}%\n",
            g.id,
            m.local_addr().to_string(),
            BUYERS_PAY * 100.0,
            NOTIFY_LOSS * 100.0,
            g.fee_percent,
        );
    }
    s += &format!(
        "\nAt 1/3 of the act {}'s buyers stop paying. A gateway answers code 1 either way, so payroute\n\
         routes by payment: an order unpaid after {:.1} s counts against its gateway. Lost\n\
         notifications are found by the sweeper (api.php?act=order); the shop gets a signed notify.\n\n",
        EPAY_GATEWAYS[1].id,
        UNPAID_AFTER_MS as f64 / 1000.0,
    );
    s
}

/// One shop task: signed orders through `/mapi.php` until `until`.
async fn shop_loop(base: String, urls: Vec<String>, notify_url: String, counts: Arc<EpayCounts>, until: Instant) {
    let shop = Merchant::new(SHOP_PID, SHOP_KEY);
    while Instant::now() < until {
        let seq = counts.next_order.fetch_add(1, Relaxed);
        let fen = log_uniform(100, 50_000);
        let order = Order::new(&format!("shop-{seq:06}"), &format!("{}.{:02}", fen / 100, fen % 100))
            .with_type(if seq.is_multiple_of(3) { "wxpay" } else { "alipay" })
            .with_name("demo card")
            .with_notify_url(&notify_url)
            .with_return_url("http://shop.example/return.php");
        counts.orders.fetch_add(1, Relaxed);
        match shop.mapi(&base, &order).await {
            Ok(created) if created.ok() => {
                let link = created.payurl.or(created.qrcode).unwrap_or_default();
                if let Some(i) = urls.iter().position(|u| link.starts_with(u.as_str())) {
                    counts.created[i].fetch_add(1, Relaxed);
                }
            }
            _ => {
                counts.refused.fetch_add(1, Relaxed);
            }
        }
        tokio::time::sleep(ORDER_PAUSE).await;
    }
}

#[allow(clippy::too_many_arguments)]
fn epay_table(
    app: &App,
    counts: &EpayCounts,
    gateways: &[MockAcquirer],
    receiver: &Receiver,
    prev: &mut [u64; EPAY_GATEWAYS.len()],
    at: Duration,
    interval: Duration,
    phase: &str,
) {
    let secs = interval.as_secs_f64().max(1e-3);
    let now = created_now(counts);
    let deltas: [u64; EPAY_GATEWAYS.len()] = std::array::from_fn(|i| now[i] - prev[i]);
    *prev = now;
    let total = deltas.iter().sum::<u64>();
    let lost: u64 = gateways.iter().map(|m| m.counters().notify_lost).sum();
    let paid: u64 = gateways.iter().map(|m| m.counters().settled_paid).sum();
    let mut s = format!(
        "{:5.1}s  {phase:<10} {:>5.0} orders/s  paid {paid}  notify lost {lost}  found by the sweeper {}  shop notified {}\n",
        at.as_secs_f64(),
        total as f64 / secs,
        sweeper_found(app),
        receiver.count(),
    );
    s += "    gateway   share  orders/s  success    score  state\n";
    let snap = app.snapshot();
    for (g, delta) in EPAY_GATEWAYS.iter().zip(deltas) {
        let Some(v) = snap.channel_views().find(|v| &*v.channel.config.id == g.id) else {
            continue;
        };
        let success = match v.totals.attempts() {
            0 => "-".into(),
            n => percent(v.totals.successes as f64 / n as f64),
        };
        s += &format!(
            "    {:<8} {:>5.0}%  {:>8.0}  {success:>7}  {:>7.4}  {}\n",
            g.id,
            delta as f64 * 100.0 / total.max(1) as f64,
            delta as f64 / secs,
            v.score,
            v.state,
        );
    }
    s.push('\n');
    say(&s);
}

/// The epay act in numbers.
struct EpaySummary {
    elapsed: Duration,
    orders: u64,
    refused: u64,
    /// Orders created per gateway before, and after, B's buyers stopped paying.
    before: [u64; EPAY_GATEWAYS.len()],
    after: [u64; EPAY_GATEWAYS.len()],
    /// The length of the "after" interval: the end of the act.
    after_secs: f64,
    /// Orders the gateways' buyers paid.
    paid: u64,
    lost: u64,
    found: u64,
    /// Signed notifications the shop received and verified.
    notified: u64,
}

impl EpaySummary {
    fn render(&self) -> String {
        let shares = |n: &[u64]| {
            let total = n.iter().sum::<u64>().max(1) as f64;
            EPAY_GATEWAYS
                .iter()
                .zip(n)
                .map(|(g, k)| format!("{} {:.0}%", g.id, *k as f64 * 100.0 / total))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "Summary, epay ({:.1} s)\n\
             \x20 orders sent       {:>9}   ({} refused)\n\
             \x20 paid by buyers    {:>9}\n\
             \x20 shop notified     {:>9}   (signed with its key, verified)\n\
             \x20 share before      {}\n\
             \x20 share after       {}   (the last {:.1} s, once {}'s unpaid orders counted)\n\
             \x20 notifies lost     {:>9}   (never sent by the gateways)\n\
             \x20 found by sweeper  {:>9}   (api.php?act=order answered status 1)\n",
            self.elapsed.as_secs_f64(),
            self.orders,
            self.refused,
            self.paid,
            self.notified,
            shares(&self.before),
            shares(&self.after),
            self.after_secs,
            EPAY_GATEWAYS[1].id,
            self.lost,
            self.found,
        )
    }

    /// The act worked: orders were made and the shop heard of payments.
    fn ok(&self) -> bool {
        self.orders > self.refused && self.notified > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_short_demo_runs_and_succeeds() {
        assert_eq!(run(Duration::from_secs(3)).await, ExitCode::SUCCESS);
    }

    #[test]
    fn the_demo_config_is_valid() {
        let t = Timing::for_run(Duration::from_secs(30));
        let addrs = [SocketAddr::from(([127, 0, 0, 1], 1)); 3];
        let text = config_text(&addrs, &t);
        let config = Config::parse(&text, Path::new("demo.toml")).expect("valid");
        assert_eq!(config.channels.len(), ACQUIRERS.len());
        assert_eq!(config.merchants.len(), MERCHANTS.len());
        assert_eq!(config.routing.window, Duration::from_secs(6));
    }

    #[test]
    fn the_epay_config_is_valid() {
        let urls = ["http://127.0.0.1:1".to_owned(), "http://127.0.0.1:2".to_owned()];
        let text = epay_config_text(8080, &urls);
        let config = Config::parse(&text, Path::new("epay.toml")).expect("valid");
        assert_eq!(config.channels.len(), EPAY_GATEWAYS.len());
        assert_eq!(config.merchants.len(), 1);
        assert_eq!(config.routing.unpaid_after, Duration::from_millis(UNPAID_AFTER_MS));
    }

    #[test]
    fn the_console_line_names_the_admin_listener() {
        let line = console_line(SocketAddr::from(([127, 0, 0, 1], 9001)));
        assert!(line.starts_with("console: http://127.0.0.1:9001/-/ui "), "{line}");
    }

    #[test]
    fn amounts_stay_in_range() {
        for _ in 0..10_000 {
            assert!((MIN_AMOUNT..=MAX_AMOUNT).contains(&log_uniform(MIN_AMOUNT, MAX_AMOUNT)));
        }
    }
}
