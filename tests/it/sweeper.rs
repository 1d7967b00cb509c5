//! The sweeper: pending payments nobody announced are found by query,
//! moved (paid, declined, failed), closed and reversed after
//! `close_after_ms`, and no channel is ever flooded with queries.
//!
//! The fake acquirer leaves payments `processing` and decides them later
//! without notifying anyone (no `notify_to`): exactly the lost notification
//! the sweeper exists for. What the journal holds is read through the
//! metrics (`payroute_payments_total{state}`,
//! `payroute_sweeper_queries_total{channel,result}`) and what reached the
//! acquirer through its recording.

use std::time::{Duration, Instant};

use payroute_mock::{Behavior, MockAcquirer, Reply};
use payroute_testkit::*;

use crate::PAYROUTE;

const OUTCOME: &str = r#"outcome = { pointer = "/status", paid = ["paid"], pending = ["processing"], declined = ["declined", "failed"] }"#;
const QUERY: &str = r#"query = { method = "GET", path = "/v1/payments/{trade_no}" }"#;
const REVERSAL: &str = r#"reversal = { method = "POST", path = "/v1/payments/{trade_no}/reverse" }"#;
const QUERIES: &str = "/v1/payments/*";
const REVERSALS: &str = "/v1/payments/*/reverse";

/// The sweeper's bounds per channel (`src/sweeper/mod.rs`).
const CONCURRENCY: usize = 4;
const RATE: f64 = 20.0;

/// An acquirer that answers every payment `processing` and decides it
/// `decide_ms` later (paid at `success_rate`), telling nobody.
async fn deciding_later(name: &str, success_rate: f64, decide_ms: u64, in_body: bool) -> MockAcquirer {
    let mut b = Behavior {
        success_rate,
        ..Behavior::default()
    }
    .with_pending(1.0, decide_ms);
    if in_body {
        b = b.with_outcome_in_body();
    }
    acquirer_with(name, b).await
}

/// Channel `id` at `url` with the outcome rule and `lines`; a 500 ms payment
/// deadline (the sweeper waits that long before a first query); `[sweeper]`
/// asking every `step_ms` and closing at `close_ms`.
fn config(id: &str, url: &str, lines: &str, step_ms: u64, close_ms: u64) -> Config {
    Config::single(id, url)
        .amend(id, OUTCOME)
        .amend(id, lines)
        .server("deadline_ms = 500")
        .sweeper(&format!("query_after_ms = [{step_ms}]\nclose_after_ms = {close_ms}"))
}

fn sweeps(m: &Metrics, channel: &str, result: &str) -> f64 {
    m.get(
        "payroute_sweeper_queries_total",
        &[("channel", channel), ("result", result)],
    )
}

fn payments(m: &Metrics, state: &str) -> f64 {
    m.get("payroute_payments_total", &[("state", state)])
}

/// Pays `amount` and checks the acquirer's answer is passed on as pending.
async fn pay_pending(p: &Proxy, amount: i64) -> String {
    let r = p.pay("m-1", amount).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "processing", "{}", r.text());
    r.header("x-payroute-trade-no").expect("a trade number")
}

async fn wait_metric(p: &Proxy, what: &str, timeout: Duration, cond: impl Fn(&Metrics) -> bool) {
    eventually(what, timeout, || async { cond(&p.metrics().await) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_notification_is_found_by_query_and_the_payment_paid() {
    // Decided paid after 1.2 s: the first queries find it still processing.
    let a = deciding_later("A", 1.0, 1_200, true).await;
    let p = PAYROUTE.serve(config("A", &a.url(), QUERY, 300, 60_000)).await;
    let trade_no = pay_pending(&p, 1250).await;
    assert_eq!(payments(&p.metrics().await, "pending"), 1.0);

    wait_metric(&p, "the sweeper finds the payment paid", Duration::from_secs(10), |m| {
        payments(m, "paid") == 1.0
    })
    .await;
    let m = p.metrics().await;
    assert_eq!(sweeps(&m, "A", "paid"), 1.0, "{}", m.0);
    assert!(
        sweeps(&m, "A", "pending") >= 1.0,
        "asked before it was decided:\n{}",
        m.0
    );
    let queries = a.received_to("GET", QUERIES);
    assert_eq!(
        queries.len() as f64,
        sweeps(&m, "A", "pending") + 1.0,
        "every query counted once"
    );
    for q in &queries {
        assert_eq!(q.path, format!("/v1/payments/{trade_no}"), "asked by trade number");
        assert_eq!(q.header("x-payroute-trade-no").as_deref(), Some(trade_no.as_str()));
    }
    // Paid is final: the sweeper stops asking.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(a.count("GET", QUERIES), queries.len(), "asked again after it was paid");
    assert_eq!(payments(&p.metrics().await, "closed"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stated_decline_is_declined_and_a_404_is_failed() {
    // Stated in the body: the query answers 200 {"status":"failed"}, a decline.
    let a = deciding_later("A", 0.0, 100, true).await;
    let p = PAYROUTE.serve(config("A", &a.url(), QUERY, 300, 60_000)).await;
    pay_pending(&p, 100).await;
    wait_metric(&p, "declined by query", Duration::from_secs(10), |m| {
        payments(m, "declined") == 1.0
    })
    .await;
    let m = p.metrics().await;
    assert_eq!(sweeps(&m, "A", "declined"), 1.0, "{}", m.0);
    assert_eq!(payments(&m, "failed"), 0.0);

    // By status: a decided failure is 404, "never had it": no acquirer took it.
    let b = deciding_later("B", 0.0, 100, false).await;
    let p = PAYROUTE.serve(config("B", &b.url(), QUERY, 300, 60_000)).await;
    let r = p.pay("m-1", 100).await;
    assert_eq!((r.status, r.json()["status"].as_str()), (202, Some("processing")));
    wait_metric(&p, "failed by query", Duration::from_secs(10), |m| {
        payments(m, "failed") == 1.0
    })
    .await;
    let m = p.metrics().await;
    assert_eq!(sweeps(&m, "B", "failed"), 1.0, "{}", m.0);
    assert_eq!(payments(&m, "declined"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_never_decided_is_closed_then_reversed() {
    let a = deciding_later("A", 1.0, 600_000, true).await;
    let lines = format!("{QUERY}\n{REVERSAL}");
    let p = PAYROUTE.serve(config("A", &a.url(), &lines, 300, 1_500)).await;
    let trade_no = pay_pending(&p, 990).await;
    let started = Instant::now();

    wait_metric(&p, "closed and reversed", Duration::from_secs(15), |m| {
        payments(m, "reversed") == 1.0
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(1_400),
        "closed before close_after"
    );
    let m = p.metrics().await;
    assert_eq!(sweeps(&m, "A", "closed"), 1.0, "{}", m.0);
    assert_eq!(payments(&m, "closed"), 1.0, "closed first, then reversed");
    assert!(sweeps(&m, "A", "pending") >= 2.0, "asked at every step:\n{}", m.0);
    assert_eq!(
        m.get("payroute_reversals_total", &[("channel", "A"), ("result", "success")]),
        1.0
    );
    let reversals = a.received_to("POST", REVERSALS);
    assert_eq!(reversals.len(), 1);
    assert_eq!(reversals[0].path, format!("/v1/payments/{trade_no}/reverse"));
    // Closed is final: no more queries.
    let asked = a.count("GET", QUERIES);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(a.count("GET", QUERIES), asked);
    assert_eq!(payments(&p.metrics().await, "paid"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_without_query_is_only_closed() {
    let a = deciding_later("A", 1.0, 600_000, true).await;
    let p = PAYROUTE.serve(config("A", &a.url(), "", 200, 1_200)).await;
    pay_pending(&p, 100).await;
    wait_metric(&p, "closed", Duration::from_secs(10), |m| payments(m, "closed") == 1.0).await;
    let m = p.metrics().await;
    assert_eq!(sweeps(&m, "A", "closed"), 1.0, "{}", m.0);
    assert_eq!(a.count("GET", QUERIES), 0, "nothing to ask with");
    assert_eq!(a.count("POST", REVERSALS), 0, "nothing to reverse with");
    assert_eq!(payments(&m, "reversed"), 0.0);
}

/// `n` pending payments on channel A, whose queries answer `processing`
/// after `query_delay`, asked every `step_ms`.
async fn many_pending(n: usize, query_delay: Duration, step_ms: u64) -> (MockAcquirer, Proxy) {
    let a = deciding_later("A", 1.0, 600_000, true).await;
    let processing = Reply::ok()
        .with_body(r#"{"status":"processing"}"#)
        .with_delay(query_delay);
    a.on("GET", QUERIES, processing);
    let p = PAYROUTE.serve(config("A", &a.url(), QUERY, step_ms, 600_000)).await;
    for i in 0..n {
        pay_pending(&p, 100 + i as i64).await;
    }
    (a, p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_pending_payments_never_meet_more_than_the_bound_of_queries_at_once() {
    let n = 24;
    let (a, p) = many_pending(n, Duration::from_millis(250), 200).await;
    // Payments were sent one at a time: anything above one at once is the sweeper.
    assert!(a.wait_count("GET", QUERIES, 2 * n, Duration::from_secs(15)).await);
    let peak = a.max_in_flight();
    assert!(peak <= CONCURRENCY, "{peak} queries at once, bound {CONCURRENCY}");
    assert!(peak >= 2, "the sweeper asks in parallel (peak {peak})");
    // The last queries received may still be on their way back.
    wait_metric(&p, "the answers counted", Duration::from_secs(5), |m| {
        sweeps(m, "A", "pending") >= 2.0 * n as f64
    })
    .await;
    let m = p.metrics().await;
    assert_eq!(sweeps(&m, "A", "unknown"), 0.0, "every query answered in time");
}

/// Once the sweeper has begun asking A, the queries A receives in `window`,
/// and the most the bounds allow in it: the bucket's burst plus the rate
/// over the window, and a little for sampling.
async fn queries_in(a: &MockAcquirer, window: Duration) -> (f64, f64) {
    assert!(a.wait_count("GET", QUERIES, 1, Duration::from_secs(10)).await);
    let first = a.count("GET", QUERIES);
    tokio::time::sleep(window).await;
    let asked = (a.count("GET", QUERIES) - first) as f64;
    (asked, CONCURRENCY as f64 + RATE * window.as_secs_f64() + 2.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_pending_payments_are_asked_no_faster_than_the_rate() {
    // 40 payments due every 200 ms want 200 queries a second.
    let (a, _p) = many_pending(40, Duration::ZERO, 200).await;
    let window = Duration::from_secs(2);
    let (asked, most) = queries_in(&a, window).await;
    assert!(asked <= most, "{asked} queries in {window:?}, at most {most}");
    assert!(asked >= RATE, "the sweeper keeps asking ({asked} in {window:?})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_drains_at_the_rate_between_ticks() {
    // Steps of 2 s make the sweeper's tick 1 s; 80 payments due every 2 s
    // want 40 queries a second. The channel is asked at its rate, not at
    // the few a tick's burst lets through (about 3 a second, as it once
    // was: a lost notification then waited minutes behind unpaid orders).
    let (a, _p) = many_pending(80, Duration::ZERO, 2_000).await;
    let window = Duration::from_secs(3);
    let (asked, most) = queries_in(&a, window).await;
    let least = RATE * window.as_secs_f64() / 2.0;
    assert!(
        asked >= least,
        "{asked} queries in {window:?}: the backlog waits on the tick"
    );
    assert!(asked <= most, "{asked} queries in {window:?}, at most {most}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_channel_is_asked_less_and_less() {
    let a = deciding_later("A", 1.0, 600_000, true).await;
    a.on("GET", QUERIES, Reply::status(503));
    let p = PAYROUTE.serve(config("A", &a.url(), QUERY, 200, 600_000)).await;
    for i in 0..10 {
        pay_pending(&p, 100 + i).await;
    }
    assert!(a.wait_count("GET", QUERIES, 1, Duration::from_secs(10)).await);
    // Ten payments due every 200 ms: 150 queries in 3 s unpaused. The first
    // failures pause the channel 1 s, doubling with each one after.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let asked = a.count("GET", QUERIES);
    assert!(asked <= 2 * CONCURRENCY, "{asked} queries to a failing channel in 3 s");
    let m = p.metrics().await;
    assert_eq!(sweeps(&m, "A", "unknown"), asked as f64, "{}", m.0);
    assert_eq!(payments(&m, "pending"), 10.0, "nothing moved on an unclear answer");
    assert_eq!(payments(&m, "failed") + payments(&m, "closed"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_reversal_reverses_only_a_payment_nobody_else_took() {
    // A answers payments 503 (ambiguous) and reversals 200; no query.
    let a = acquirer("A").await;
    a.on("POST", "/v1/payments", Reply::status(503));
    let b = acquirer("B").await;
    let p = PAYROUTE
        .serve(Config::pair(("A", &a.url()), ("B", &b.url())).amend("A", REVERSAL))
        .await;
    let r = p.pay("m-1", 100).await;
    r.assert_ok();
    assert_eq!(r.channel().as_deref(), Some("B"));
    wait_metric(&p, "the reversal accepted", Duration::from_secs(10), |m| {
        m.get("payroute_reversals_total", &[("channel", "A"), ("result", "success")]) == 1.0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let m = p.metrics().await;
    assert_eq!(payments(&m, "paid"), 1.0, "{}", m.0);
    assert_eq!(
        payments(&m, "reversed"),
        0.0,
        "B's payment is not undone by A's reversal"
    );

    // The same with B refusing connections: nobody took it, so reversed.
    let p = PAYROUTE
        .serve(Config::pair(("A", &a.url()), ("B", &refused_url())).amend("A", REVERSAL))
        .await;
    let r = p.pay("m-1", 100).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.header("x-payroute-ambiguous").as_deref(), Some("A"));
    wait_metric(&p, "failed, then reversed", Duration::from_secs(10), |m| {
        payments(m, "reversed") == 1.0
    })
    .await;
    assert_eq!(payments(&p.metrics().await, "failed"), 1.0);
}
