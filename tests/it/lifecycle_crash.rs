//! A payment's life across crashes: `kill -9` in the middle of
//! notifications in and out, and a fleet of two on one PostgreSQL journal.
//!
//! The parties are real: the fake acquirer answers "processing" and later
//! notifies (signed) through a [`NotifyTap`], which records which
//! notifications payroute acknowledged; a [`MerchantSink`] receives the
//! merchant's events and counts each `event_id`. The contract's promises
//! are checked one by one: an acknowledged notification is in the journal,
//! every merchant event is delivered, and a repeat happens at most once per
//! event (only a crash between a delivery and its record may cause one).
//! `loadtest/crash.sh` runs the first test's scenario with 10,000 payments.

use std::collections::HashMap;
use std::time::Duration;

use payroute_mock::{Behavior, MockAcquirer};
use payroute_testkit::rig::{MerchantSink, NotifyTap, Tapped};
use payroute_testkit::*;
use serde_json::Value;

use crate::PAYROUTE;

const CHANNEL_SECRET: &str = "whsec-crash";
const MERCHANT_SECRET: &str = "msec-crash";
/// The fake acquirer's words, as its channel's outcome rule reads them.
const LINES: &str = r#"outcome = { pointer = "/status", paid = ["paid"], pending = ["processing"], declined = ["declined", "failed"], trade_no_pointer = "/id" }
notify = { signature_header = "x-signature", secret = "whsec-crash", amount_pointer = "/amount" }
query = { method = "GET", path = "/v1/payments/{trade_no}" }"#;

/// A JSON merchant whose events go to `sink`.
fn merchant_lines(sink: &MerchantSink) -> String {
    format!("notify_url = \"{}\"\nnotify_secret = \"{MERCHANT_SECRET}\"", sink.url())
}

/// Everything but the journal and the listen address: one channel on
/// `acq`, merchant m-1 notified at `sink`, retries quick enough for a test,
/// and a sweeper that stays out of the way (only notifications settle).
fn config(acq: &MockAcquirer, sink: &MerchantSink, port: u16) -> Config {
    Config::new()
        .listen(&format!("127.0.0.1:{port}"))
        .notify("retry_ms = [0, 300, 1000, 2000, 3000, 5000, 10000]\ntimeout_ms = 2000")
        .sweeper("query_after_ms = [600000]")
        .channel("acq", &acq.url(), LINES)
        .merchant("m-1", &merchant_lines(sink))
}

/// The acquirer's behaviour: every payment "processing", decided after
/// `delay_ms` (70 % paid), notified through `tap`, insisting long enough
/// to outlast a restart.
fn pending_via(tap: &NotifyTap, delay_ms: u64) -> Behavior {
    Behavior {
        success_rate: 0.7,
        notify_attempts: 60,
        notify_backoff_ms: 50,
        ..Behavior::default()
    }
    .with_outcome_in_body()
    .with_pending(1.0, delay_ms)
    .notify_to(&tap.url("acq"), CHANNEL_SECRET)
}

/// `n` payments, `concurrency` at a time, on the proxies in turn; the trade
/// numbers of those answered "processing". A payment without an answer (a
/// proxy killed under it) is left out: nothing is retried.
async fn pay_many(apis: &[Api], n: usize, concurrency: usize) -> Vec<String> {
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (apis, next) = (apis.to_vec(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return mine;
                }
                let api = &apis[i % apis.len()];
                let body = payment_body(1250, "CNY").to_string();
                let headers = [("x-merchant-id", "m-1"), ("content-type", "application/json")];
                if let Ok(r) = try_send(
                    &api.client,
                    http::Method::POST,
                    &api.url("/v1/payments"),
                    &headers,
                    body,
                )
                .await
                {
                    assert_eq!(r.status, 200, "{}", r.text());
                    assert_eq!(r.json()["status"], "processing", "{}", r.text());
                    mine.push(r.trade_no().expect("a trade number"));
                }
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("payment task"));
    }
    all
}

/// The journal's payments by trade number, from `payroute journal export`.
fn exported(config: &std::path::Path) -> HashMap<String, Value> {
    let out = PAYROUTE.run(&[
        "journal",
        "export",
        "--config",
        config.to_str().expect("utf-8 path"),
        "--format",
        "jsonl",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("a JSON line"))
        .map(|v| (v["trade_no"].as_str().unwrap_or_default().to_owned(), v))
        .collect()
}

/// The state a payment must be in once the acquirer said `status`.
fn state_for(status: &str) -> &'static str {
    match status {
        "paid" => "paid",
        _ => "declined",
    }
}

/// The merchant events the journal holds for `trade_nos`, by `event_id`:
/// (trade number, state of the event).
async fn journal_events(api: &Api, trade_nos: &[String]) -> HashMap<String, (String, String)> {
    let mut events = HashMap::new();
    for t in trade_nos {
        let r = api.admin_get(&format!("/-/payments/{t}")).await;
        assert_eq!(r.status, 200, "/-/payments/{t}: {}", r.text());
        for e in r.json()["notifications_out"].as_array().cloned().unwrap_or_default() {
            let id = e["event_id"].as_str().unwrap_or_default().to_owned();
            events.insert(id, (t.clone(), e["state"].as_str().unwrap_or_default().to_owned()));
        }
    }
    events
}

/// Waits until the journal has no event left to deliver.
async fn outbox_empty(api: &Api, timeout: Duration) {
    eventually("no merchant event pending", timeout, || async {
        let r = api.admin_get("/-/notifications?state=pending").await;
        r.status == 200 && r.json().as_array().is_some_and(Vec::is_empty)
    })
    .await;
}

/// Every event the journal holds was delivered, the merchant got exactly
/// those, and none more than twice; the number of repeats.
fn check_events(journal: &HashMap<String, (String, String)>, sink: &MerchantSink, expected: usize) -> u64 {
    assert_eq!(journal.len(), expected, "one merchant event per settled payment");
    let seen = sink.events();
    for (id, (trade_no, state)) in journal {
        assert_eq!(state, "delivered", "event {id} of {trade_no}");
        let got = seen
            .get(id)
            .unwrap_or_else(|| panic!("event {id} of {trade_no} never reached the merchant"));
        assert_eq!(&got.trade_no, trade_no);
        assert!(got.deliveries <= 2, "event {id} delivered {} times", got.deliveries);
    }
    for id in seen.keys() {
        assert!(
            journal.contains_key(id),
            "the merchant got {id}, which the journal does not hold"
        );
    }
    let stats = sink.stats();
    assert_eq!(stats.bad, 0, "every delivery is signed with the merchant's secret");
    stats.repeats
}

/// Notifications payroute acknowledged, per trade number: the stated outcome.
fn acknowledged(log: &[Tapped]) -> HashMap<String, String> {
    log.iter()
        .filter(|t| (200..300).contains(&t.answer))
        .map(|t| (t.trade_no.clone(), t.status.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_amid_notifications_in_and_out_loses_nothing() {
    const N: usize = 300;
    let sink = MerchantSink::start(MERCHANT_SECRET).await;
    let port = free_port();
    let tap = NotifyTap::start(&[format!("http://127.0.0.1:{port}")]).await;
    let acq = MockAcquirer::builder()
        .name("acq")
        .behavior(Behavior::default())
        .start()
        .await
        .expect("mock starts");
    let mut p = PAYROUTE.serve(config(&acq, &sink, port)).await;
    acq.set_behavior(pending_via(&tap, 500));

    let payments = pay_many(&[p.api.clone()], N, 16).await;
    assert_eq!(payments.len(), N, "no proxy died yet");
    // kill -9 once about a third of the notifications in were acknowledged:
    // deliveries out are under way by then too (the poll overshoots a bit).
    eventually(
        "a third of the notifications acknowledged",
        Duration::from_secs(30),
        || async { tap.acknowledged() >= N / 3 },
    )
    .await;
    p.kill();
    assert!(p.wait_exit(Duration::from_secs(5)).await.is_some());
    let (acked_at_kill, delivered_at_kill) = (tap.acknowledged(), sink.stats().delivered);
    tokio::time::sleep(Duration::from_millis(300)).await;
    p.restart().await;

    // Quiet: the acquirer has nothing left to say, the outbox nothing to
    // send. Events the killed process had in flight are leased to it: the
    // restarted one (another lease owner) sends them when the leases run
    // out, (4 + 2) timeouts of 2 s plus 30 s after they were taken.
    assert!(
        acq.wait_settled(Duration::from_secs(60)).await,
        "the acquirer gave up notifying"
    );
    outbox_empty(&p, Duration::from_secs(90)).await;

    let journal = exported(p.config_path());
    let log = tap.log();
    let acked = acknowledged(&log);
    assert_eq!(
        acked.len(),
        N,
        "every payment's notification was acknowledged in the end"
    );
    for (trade_no, status) in &acked {
        let row = journal
            .get(trade_no)
            .unwrap_or_else(|| panic!("{trade_no}: acknowledged, not in the journal"));
        assert_eq!(row["state"], state_for(status), "{trade_no}: {row}");
    }
    let c = acq.counters();
    assert_eq!(c.notify_undelivered, 0);
    assert_eq!(c.settled_paid + c.settled_failed, N as u64);
    let events = journal_events(&p, &payments).await;
    let repeats = check_events(&events, &sink, N);
    let acked_twice = log.iter().filter(|t| (200..300).contains(&t.answer)).count() - acked.len();
    eprintln!(
        "kill -9 after {acked_at_kill} of {N} notifications in acknowledged and {delivered_at_kill} events delivered; \
         in the end: {} acknowledged ({acked_twice} twice), {} events delivered, {repeats} repeated to the merchant",
        acked.len(),
        events.len()
    );
}

// ---- two instances, one PostgreSQL journal ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_postgres_deliver_each_event_once_and_outlive_each_other() {
    let Some(db) = PgDatabase::create().await else { return };
    let sink = MerchantSink::start(MERCHANT_SECRET).await;
    let (port_a, port_b) = (free_port(), free_port());
    let tap = NotifyTap::start(&[
        format!("http://127.0.0.1:{port_a}"),
        format!("http://127.0.0.1:{port_b}"),
    ])
    .await;
    let acq = MockAcquirer::builder()
        .name("acq")
        .behavior(Behavior::default())
        .start()
        .await
        .expect("mock starts");
    let a = PAYROUTE.serve(config(&acq, &sink, port_a).journal(&db.journal())).await;
    let b = PAYROUTE.serve(config(&acq, &sink, port_b).journal(&db.journal())).await;
    acq.set_behavior(pending_via(&tap, 200));

    // Both serve payments and take notifications (the tap alternates), and
    // both deliver: every event exactly once between them.
    let first = pay_many(&[a.api.clone(), b.api.clone()], 60, 8).await;
    assert_eq!(first.len(), 60);
    assert!(acq.wait_settled(Duration::from_secs(30)).await);
    outbox_empty(&a, Duration::from_secs(30)).await;
    let log = tap.log();
    assert!(
        log.iter().any(|t| t.target == 0 && t.answer == 200) && log.iter().any(|t| t.target == 1 && t.answer == 200),
        "both instances took notifications"
    );
    let events = journal_events(&b, &first).await;
    assert_eq!(check_events(&events, &sink, first.len()), 0, "no crash, so no repeat");

    // The merchant hangs: both instances keep trying its new events (each
    // try held until it times out, the merchant soon counted as slow). A
    // dies in the middle, holding leases on the tries it had in flight. B
    // delivers everything once the merchant answers again — what A left
    // pending at once, what A held leased once the leases run out — and
    // still each event exactly once.
    sink.hold(true);
    let second = pay_many(&[a.api.clone(), b.api.clone()], 40, 8).await;
    assert_eq!(second.len(), 40);
    assert!(acq.wait_settled(Duration::from_secs(30)).await);
    eventually("deliveries held by the merchant", Duration::from_secs(30), || async {
        sink.held() >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut a = a;
    a.kill();
    assert!(a.wait_exit(Duration::from_secs(5)).await.is_some());
    sink.hold(false);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let pending = b.admin_get("/-/notifications?state=pending").await.json();
    let leased_by_the_dead = pending.as_array().map_or(0, |a| {
        a.iter()
            .filter(|e| e["lease_until_ms"].as_i64().is_some_and(|t| t > now_ms))
            .count()
    });
    // A's leases: (4 + 2) timeouts of 2 s, plus 30 s of margin.
    outbox_empty(&b, Duration::from_secs(90)).await;
    let all: Vec<String> = first.iter().chain(&second).cloned().collect();
    let events = journal_events(&b, &all).await;
    assert_eq!(
        check_events(&events, &sink, all.len()),
        0,
        "held deliveries were never taken, so none repeats"
    );
    for (trade_no, status) in acknowledged(&tap.log()) {
        let r = b.admin_get(&format!("/-/payments/{trade_no}")).await;
        assert_eq!(r.json()["state"], state_for(&status), "{trade_no}: {}", r.text());
    }
    eprintln!("fleet: {} events delivered once each; {leased_by_the_dead} were still leased by the killed instance and taken over", events.len());
}
