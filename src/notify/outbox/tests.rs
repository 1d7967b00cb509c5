//! The outbox against real merchants: local hyper servers that check the
//! signature the way a merchant would (an HMAC computed here, not with
//! payroute's own signing code), a real journal (SQLite in a temporary
//! directory; PostgreSQL for two instances sharing one database), and, for
//! the admin API, the whole proxy started by `serve::start`.
//!
//! Events are produced as the proxy produces them: a payment recorded
//! pending, then moved by `Journal::transition` with the event
//! `notify::event` builds.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use hmac::{Hmac, Mac};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::*;
use crate::config::{Config, JournalConfig, Synchronous};
use crate::journal::{EventState, NewEvent, NewPayment, Protocol, State, TransitionFacts};

const SECRET: &str = "whsec-merchant-one";

// ---- a merchant's notify endpoint ----

/// What the merchant answers to its `n`th request (from 0): status, delay,
/// and a `Location` header.
type Answer = Arc<dyn Fn(usize) -> (u16, Duration, Option<String>) + Send + Sync>;

/// One request as the merchant saw it.
#[derive(Clone, Debug)]
struct Seen {
    at: std::time::Instant,
    signature: Option<String>,
    body: Bytes,
}

#[derive(Clone)]
struct Merchant {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    in_flight: Arc<AtomicUsize>,
    most_in_flight: Arc<AtomicUsize>,
}

impl Merchant {
    async fn start(answer: Answer) -> Merchant {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let m = Merchant {
            addr: listener.local_addr().unwrap(),
            seen: Arc::default(),
            in_flight: Arc::default(),
            most_in_flight: Arc::default(),
        };
        let server = m.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (m, answer) = (server.clone(), answer.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (m, answer) = (m.clone(), answer.clone());
                        async move {
                            let now = m.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                            m.most_in_flight.fetch_max(now, Ordering::SeqCst);
                            let signature = req
                                .headers()
                                .get("x-payroute-signature")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned);
                            // A copy: what was received may share a larger read buffer.
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let body = Bytes::copy_from_slice(&body);
                            let n = {
                                let mut seen = m.seen.lock().unwrap();
                                seen.push(Seen {
                                    at: std::time::Instant::now(),
                                    signature,
                                    body,
                                });
                                seen.len() - 1
                            };
                            let (status, delay, location) = answer(n);
                            tokio::time::sleep(delay).await;
                            m.in_flight.fetch_sub(1, Ordering::SeqCst);
                            let mut r = Response::new(Full::new(Bytes::from_static(b"ok")));
                            *r.status_mut() = StatusCode::from_u16(status).unwrap();
                            if let Some(l) = location {
                                r.headers_mut().insert("location", l.parse().unwrap());
                            }
                            Ok::<_, Infallible>(r)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        m
    }

    async fn answering(status: u16) -> Merchant {
        Merchant::start(Arc::new(move |_| (status, Duration::ZERO, None))).await
    }

    fn url(&self) -> String {
        format!("http://{}/payroute/notify", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The event ids of the requests seen, in order.
    fn event_ids(&self) -> Vec<String> {
        self.seen().iter().map(|s| body_event_id(&s.body)).collect()
    }
}

fn body_event_id(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap();
    v["event_id"].as_str().unwrap().to_owned()
}

/// What a merchant does with `X-Payroute-Signature`: recompute
/// HMAC-SHA256(secret, "{t}.{body}") and compare; `t` must be recent.
fn verify(secret: &str, seen: &Seen) -> bool {
    let Some(header) = &seen.signature else { return false };
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", x)) => t = Some(x),
            Some(("v1", x)) => v1 = Some(x),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else { return false };
    let Ok(ts) = t.parse::<i64>() else { return false };
    if (ts - journal::now_ms() / 1000).abs() > 300 {
        return false;
    }
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(&seen.body);
    hex::encode(mac.finalize().into_bytes()) == v1
}

// ---- a journal, a config, an outbox ----

/// `[notify]` and merchants `(id, notify_url)` (each signs with [`SECRET`]).
fn config_text(notify: &str, merchants: &[(&str, &str)]) -> String {
    let mut text = format!("[notify]\n{notify}\n[[channel]]\nid = \"acq\"\nurl = \"http://127.0.0.1:1\"\n");
    for (id, url) in merchants {
        text.push_str(&format!(
            "[[merchant]]\nid = \"{id}\"\nnotify_url = \"{url}\"\nnotify_secret = \"{SECRET}\"\n"
        ));
    }
    text
}

fn snapshot(text: &str) -> Arc<Snapshot> {
    let config = Config::parse(text, Path::new("routes.toml")).unwrap_or_else(|e| panic!("{e}"));
    Arc::new(Snapshot::build(config, 1, None, &Metrics::new(), 1))
}

async fn sqlite(dir: &Path) -> Journal {
    let cfg = JournalConfig::Sqlite {
        path: dir.join("journal.db"),
        synchronous: Synchronous::Normal,
    };
    Journal::open(&cfg).await.unwrap()
}

/// One outbox over `journal` and a fixed config, with metrics of its own.
fn outbox(journal: &Journal, snapshot: &Arc<Snapshot>) -> (Outbox, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let snap = snapshot.clone();
    let o = Outbox::new(
        journal.clone(),
        Arc::new(move || snap.clone()),
        OutboxMetrics::new(&metrics),
        Doorbell::default(),
    );
    (o, metrics)
}

fn count(m: &Metrics, result: &str) -> u64 {
    m.notifications_out.with_label_values(&[result]).get()
}

static TRADE_SEQ: AtomicUsize = AtomicUsize::new(0);

/// A payment of `merchant` recorded pending, then paid with the event
/// `notify::event` makes for it; the event's id.
async fn paid_with_event(journal: &Journal, snapshot: &Snapshot, merchant: &str) -> String {
    let trade_no = format!(
        "T{:x}n{}",
        fastrand::u64(..) >> 20,
        TRADE_SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let now = journal::now_ms();
    journal
        .open_payment(NewPayment {
            trade_no: trade_no.clone(),
            merchant_id: Arc::from(merchant),
            order_id: format!("o-{trade_no}"),
            amount: 1250,
            currency: "CNY".into(),
            pay_type: None,
            protocol: Protocol::Http,
            channel_id: Some(Arc::from("acq")),
            channel_trade_no: None,
            state: State::Pending,
            expected_fee: 0,
            merchant_data: "{}".into(),
            created_at_ms: now,
            next_query_at_ms: None,
        })
        .await
        .unwrap();
    let payment = journal.payment(&trade_no).await.unwrap().unwrap().payment;
    let config = &snapshot.merchant(merchant).expect("merchant configured").config;
    let event = event::for_json_merchant(config, &payment, State::Paid, Duration::ZERO, now).expect("notify_url");
    let event_id = event.event_id.clone();
    let facts = TransitionFacts {
        at_ms: now,
        channel: Some(Arc::from("acq")),
        ..TransitionFacts::default()
    };
    let moved = journal
        .transition(&trade_no, State::Paid, facts, Some(event))
        .await
        .unwrap();
    assert!(matches!(moved, journal::Moved::Applied { .. }), "{moved:?}");
    event_id
}

/// `n` of them at once.
async fn queue(journal: &Journal, snapshot: &Arc<Snapshot>, merchant: &str, n: usize) -> Vec<String> {
    let mut tasks = JoinSet::new();
    let per = n.div_ceil(64).max(1);
    for start in (0..n).step_by(per) {
        let (j, s, m) = (journal.clone(), snapshot.clone(), merchant.to_owned());
        tasks.spawn(async move {
            let mut ids = Vec::new();
            for _ in start..(start + per).min(n) {
                ids.push(paid_with_event(&j, &s, &m).await);
            }
            ids
        });
    }
    let mut ids = Vec::new();
    while let Some(batch) = tasks.join_next().await {
        ids.extend(batch.unwrap());
    }
    ids
}

async fn event_state(journal: &Journal, id: &str) -> Event {
    journal.event(id).await.unwrap().expect("event in the journal")
}

/// Polls `cond` every 20 ms until it holds; panics after `within`.
async fn eventually<F, Fut>(what: &str, within: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !cond().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---- the schedule and the letter (pure) ----

#[test]
fn the_schedule_counts_from_the_state_change_and_keeps_its_gaps() {
    let retry: Vec<Duration> = [0, 60_000, 180_000].map(Duration::from_millis).to_vec();
    // On time: try k at created + retry[k].
    assert_eq!(next_try(&retry, 1, 1_000, 1_050), Some(61_000));
    assert_eq!(next_try(&retry, 2, 1_000, 61_100), Some(181_000));
    // The third try was the last.
    assert_eq!(next_try(&retry, 3, 1_000, 181_000), None);
    assert_eq!(next_try(&retry, 9, 1_000, 181_000), None);
    // Late (an outage's backlog, a re-send by hand): the schedule's gap
    // still separates two tries.
    assert_eq!(next_try(&retry, 1, 1_000, 900_000), Some(960_000));
    assert_eq!(next_try(&retry, 2, 1_000, 900_000), Some(1_020_000));
    // A schedule that is not increasing never schedules into the past.
    let odd: Vec<Duration> = [5_000, 1_000].map(Duration::from_millis).to_vec();
    assert_eq!(next_try(&odd, 1, 0, 7_000), Some(7_000));
}

#[test]
fn json_events_are_signed_with_the_current_secret_and_unknown_kinds_refused() {
    let text = config_text("", &[("m-1", "http://127.0.0.1:9/hook")])
        .replace("[[channel]]", "[[merchant]]\nid = \"m-bare\"\n[[channel]]");
    let snap = snapshot(&text);
    let mut e = Event {
        event_id: "evt1".into(),
        trade_no: "T1".into(),
        merchant_id: "m-1".into(),
        kind: "json".into(),
        target: "http://old.example/hook".into(),
        method: "POST".into(),
        body: "{\"event_id\":\"evt1\"}".into(),
        state: EventState::Pending,
        attempts: 1,
        next_at_ms: 0,
        lease_owner: None,
        lease_until_ms: None,
        last_error: None,
        created_at_ms: 0,
        delivered_at_ms: None,
    };
    let Ok(Letter::Json { url, body, signature }) = letter(&snap, &mut e.clone()) else {
        panic!("a JSON letter")
    };
    assert_eq!(url.to_string(), "http://127.0.0.1:9/hook", "the notify_url in force");
    let seen = Seen {
        at: std::time::Instant::now(),
        signature: Some(signature),
        body,
    };
    assert!(verify(SECRET, &seen));
    assert!(!verify("another", &seen));

    for (merchant, kind, why) in [
        ("m-gone", "json", "not in the config"),
        ("m-bare", "json", "no notify_url"),
        ("m-1", "carrier-pigeon", "unknown event kind"),
    ] {
        e.merchant_id = merchant.into();
        e.kind = kind.into();
        match letter(&snap, &mut e) {
            Err(e) => assert!(e.contains(why), "{e}"),
            Ok(l) => panic!("{merchant}/{kind}: {l:?}"),
        }
    }
}

fn claimed(merchant: &str, n: usize, lease_until_ms: i64) -> Vec<Event> {
    (0..n)
        .map(|i| Event {
            event_id: format!("evt{merchant}{i}"),
            trade_no: format!("T{i}"),
            merchant_id: merchant.into(),
            kind: "json".into(),
            target: String::new(),
            method: "POST".into(),
            body: "{}".into(),
            state: EventState::Pending,
            attempts: 1,
            next_at_ms: 0,
            lease_owner: Some("me".into()),
            lease_until_ms: Some(lease_until_ms),
            last_error: None,
            created_at_ms: 0,
            delivered_at_ms: None,
        })
        .collect()
}

fn done(merchant: &str, slow_failure: bool) -> Done {
    Done {
        merchant: Arc::from(merchant),
        slow_failure,
    }
}

#[test]
fn queues_take_merchants_in_turn_within_their_caps() {
    let now = Instant::now();
    let mut q = Queues::default();
    assert_eq!(q.claim_limit(), PAGE);
    assert!(q.admit(claimed("big", PAGE, 10_000), now).is_empty());
    assert!(q.admit(claimed("small", 2, 10_000), now).is_empty());
    let skip = q.skip(now);
    assert_eq!(skip.len(), 2, "merchants with events waiting are not claimed for");

    let (send, expired) = q.next(now, 0);
    assert!(expired.is_empty());
    let count_of = |m: &str| send.iter().filter(|e| e.merchant_id == m).count();
    assert_eq!((count_of("big"), count_of("small")), (PER_MERCHANT, 2));
    assert_eq!(
        &send[..2].iter().map(|e| e.merchant_id.as_str()).collect::<Vec<_>>(),
        &["big", "small"],
        "in turn"
    );
    assert_eq!((q.in_flight, q.waiting), (PER_MERCHANT + 2, PAGE - PER_MERCHANT));
    // "small" has nothing left waiting: a claim may look for more of its events.
    assert!(q.done(&done("small", false), now));
    assert!(!q.skip(now).iter().any(|m| &**m == "small"));
    // Nothing more for "big" until one of its deliveries ends.
    assert!(q.next(now, 0).0.is_empty());
    assert!(!q.done(&done("big", false), now));
    assert_eq!(q.next(now, 0).0.len(), 1);

    // Held events bound the next claim: a small room is not worth a claim.
    let mut full = Queues::default();
    full.admit(claimed("a", PER_MERCHANT * QUEUE_ROUNDS, 10_000), now);
    full.admit(
        claimed("b", MAX_HELD - PER_MERCHANT * QUEUE_ROUNDS - MIN_CLAIM + 1, 10_000),
        now,
    );
    assert_eq!(full.claim_limit(), 0);
}

#[test]
fn a_slow_failure_makes_a_merchant_sick_and_its_queue_short() {
    let now = Instant::now();
    let mut q = Queues::default();
    q.admit(claimed("hang", 20, 10_000), now);
    let (send, _) = q.next(now, 0);
    assert_eq!(send.len(), 20);
    for _ in 0..19 {
        q.done(&done("hang", true), now);
    }
    // Sick: 4 at most in flight, so with one still hanging, 3 more.
    let back = q.admit(claimed("hang", 40, 10_000), now);
    assert_eq!(
        back.len(),
        40 - PER_SICK_MERCHANT * QUEUE_ROUNDS,
        "beyond its queue: given back"
    );
    assert_eq!(q.next(now, 0).0.len(), PER_SICK_MERCHANT - 1);
    assert!(q.skip(now).iter().any(|m| &**m == "hang"));
    // Healthy again after SICK_FOR without a slow failure.
    let later = now + SICK_FOR + Duration::from_secs(1);
    assert_eq!(
        q.next(later, 0).0.len(),
        PER_SICK_MERCHANT * QUEUE_ROUNDS - (PER_SICK_MERCHANT - 1)
    );
    // Forgotten once idle.
    let waiting = q.drain();
    assert!(waiting.is_empty());
    while q.in_flight > 0 {
        q.done(&done("hang", false), later);
    }
    q.tidy(later);
    assert!(q.merchants.is_empty());
}

#[test]
fn waiting_events_whose_lease_runs_short_are_given_back_not_sent() {
    let now = Instant::now();
    let mut q = Queues::default();
    q.admit(claimed("m", 3, 5_000), now);
    q.admit(claimed("n", 2, 50_000), now);
    let (send, expired) = q.next(now, 10_000);
    assert_eq!(expired.len(), 3);
    assert!(send.iter().all(|e| e.merchant_id == "n") && send.len() == 2);
    assert_eq!(q.waiting, 0);
    // At shutdown, whatever waits is given back.
    q.admit(claimed("p", 5, 50_000), now);
    assert_eq!(q.drain().len(), 5);
    assert_eq!((q.waiting, q.turn.len()), (0, 0));
}

// ---- deliveries ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_delivered_signed_once_each() {
    let dir = tempfile::tempdir().unwrap();
    let journal = sqlite(dir.path()).await;
    let shop = Merchant::answering(204).await;
    let snap = snapshot(&config_text("", &[("m-1", &shop.url())]));
    let ids = queue(&journal, &snap, "m-1", 3).await;
    let (o, metrics) = outbox(&journal, &snap);
    let task = o.spawn();

    eventually("three deliveries recorded", Duration::from_secs(10), || async {
        count(&metrics, "delivered") == 3
    })
    .await;
    for id in &ids {
        let e = event_state(&journal, id).await;
        assert_eq!((e.state, e.attempts), (EventState::Delivered, 1), "{e:?}");
    }
    let mut got = shop.event_ids();
    got.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(got, want, "each event once");
    for seen in shop.seen() {
        assert!(verify(SECRET, &seen), "bad signature: {seen:?}");
        let body: Value = serde_json::from_slice(&seen.body).unwrap();
        assert_eq!(
            (
                body["state"].as_str(),
                body["amount"].as_i64(),
                body["currency"].as_str()
            ),
            (Some("paid"), Some(1250), Some("CNY"))
        );
    }
    eventually("the backlog gauge drops to 0", Duration::from_secs(5), || async {
        metrics.notification_backlog.get() == 0
    })
    .await;
    assert_eq!((count(&metrics, "retry"), count(&metrics, "failed")), (0, 0));
    task.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_is_retried_on_schedule_then_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let journal = sqlite(dir.path()).await;
    let shop = Merchant::start(Arc::new(|n| (if n == 0 { 500 } else { 200 }, Duration::ZERO, None))).await;
    let snap = snapshot(&config_text("retry_ms = [0, 400, 5000]", &[("m-1", &shop.url())]));
    let id = paid_with_event(&journal, &snap, "m-1").await;
    let created = event_state(&journal, &id).await.created_at_ms;
    let (o, metrics) = outbox(&journal, &snap);
    let task = o.spawn();

    eventually("delivered on the second try", Duration::from_secs(10), || async {
        count(&metrics, "delivered") == 1
    })
    .await;
    let e = event_state(&journal, &id).await;
    assert_eq!((e.state, e.attempts), (EventState::Delivered, 2), "{e:?}");
    assert_eq!(shop.event_ids(), [id.clone(), id.clone()], "the same event twice");
    let seen = shop.seen();
    assert!(seen.iter().all(|s| verify(SECRET, s)));
    let second_at = e.delivered_at_ms.unwrap();
    assert!(second_at >= created + 400, "the retry waited for retry_ms[1]: {e:?}");
    assert!(
        seen[1].at.duration_since(seen[0].at) >= Duration::from_millis(300),
        "{seen:?}"
    );
    assert_eq!(count(&metrics, "retry"), 1);
    task.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_merchant_delays_no_other() {
    let dir = tempfile::tempdir().unwrap();
    let journal = sqlite(dir.path()).await;
    let hangs = Merchant::start(Arc::new(|_| (200, Duration::from_secs(3600), None))).await;
    let quick = Merchant::answering(200).await;
    let timeout = Duration::from_secs(3);
    let snap = snapshot(&config_text(
        &format!("retry_ms = [0, 600000]\ntimeout_ms = {}", timeout.as_millis()),
        &[("m-hang", &hangs.url()), ("m-quick", &quick.url())],
    ));
    // The hanging merchant's events are older: due first, more than a page.
    queue(&journal, &snap, "m-hang", PAGE + 44).await;
    let id = paid_with_event(&journal, &snap, "m-quick").await;
    let (o, metrics) = outbox(&journal, &snap);
    let started = std::time::Instant::now();
    let task = o.spawn();

    eventually(
        "the quick merchant's event delivered",
        Duration::from_secs(20),
        || async { count(&metrics, "delivered") == 1 },
    )
    .await;
    // Causal, not timed (a loaded CI box is slow): delivered while every
    // try at the hanging merchant was still hanging, none timed out yet.
    assert_eq!(
        count(&metrics, "retry"),
        0,
        "the quick event waited for the hanging merchant's tries to time out"
    );
    assert_eq!(quick.event_ids(), [id]);
    // Its tries may still be connecting on a loaded box: they all arrive,
    // and no more than its half of the slots.
    eventually(
        "the hanging merchant's tries arrive",
        Duration::from_secs(20),
        || async { hangs.seen().len() >= PER_MERCHANT },
    )
    .await;
    assert_eq!(hangs.seen().len(), PER_MERCHANT, "half the slots for one merchant");

    // Its first tries time out: it is sick, and gets 4 at a time from then on.
    eventually("the first tries time out", Duration::from_secs(20), || async {
        count(&metrics, "retry") >= PER_MERCHANT as u64
    })
    .await;
    let pending = journal.events(EventState::Pending, 1_000).await.unwrap();
    assert!(
        pending
            .iter()
            .any(|e| e.attempts == 1 && e.last_error.as_deref().is_some_and(|w| w.contains("no answer"))),
        "a timed-out try is recorded"
    );
    tokio::time::sleep_until((started + timeout * 7 / 4).into()).await;
    let asked = hangs.seen().len();
    assert!(
        (PER_MERCHANT + 1..=PER_MERCHANT + PER_SICK_MERCHANT).contains(&asked),
        "{asked} requests to the hanging merchant by {:?}",
        started.elapsed()
    );
    task.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_not_followed_and_the_last_refusal_fails_the_event() {
    let dir = tempfile::tempdir().unwrap();
    let journal = sqlite(dir.path()).await;
    let elsewhere = Merchant::answering(200).await;
    let target = elsewhere.url();
    let bouncer = Merchant::start(Arc::new(move |_| (302, Duration::ZERO, Some(target.clone())))).await;
    let snap = snapshot(&config_text("retry_ms = [0, 200]", &[("m-1", &bouncer.url())]));
    let id = paid_with_event(&journal, &snap, "m-1").await;
    let (o, metrics) = outbox(&journal, &snap);
    let task = o.spawn();

    eventually("failed after two refusals", Duration::from_secs(10), || async {
        count(&metrics, "failed") == 1
    })
    .await;
    let e = event_state(&journal, &id).await;
    assert_eq!((e.state, e.attempts), (EventState::Failed, 2), "{e:?}");
    assert!(e.last_error.as_deref().is_some_and(|w| w.contains("302")), "{e:?}");
    assert_eq!(bouncer.seen().len(), 2);
    assert!(elsewhere.seen().is_empty(), "the redirect was followed");
    assert_eq!((count(&metrics, "retry"), count(&metrics, "delivered")), (1, 0));
    let failed = journal.events(EventState::Failed, 10).await.unwrap();
    assert!(failed.iter().any(|f| f.event_id == id));
    task.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_nobody_can_send_are_refused_tries() {
    let dir = tempfile::tempdir().unwrap();
    let journal = sqlite(dir.path()).await;
    let shop = Merchant::answering(200).await;
    let snap = snapshot(&config_text("retry_ms = [0]", &[("m-1", &shop.url())]));
    let gone = snapshot(&config_text("retry_ms = [0]", &[("m-gone", &shop.url())]));
    let orphan = paid_with_event(&journal, &gone, "m-gone").await;
    // A kind this version does not know (a newer fleet member's).
    let trade = paid_with_event(&journal, &snap, "m-1").await;
    let odd = journal::new_event_id();
    let facts = TransitionFacts {
        at_ms: journal::now_ms(),
        ..TransitionFacts::default()
    };
    let trade_no = event_state(&journal, &trade).await.trade_no;
    journal.event_delivered(&trade, 1).await.unwrap();
    journal.hold_refund(&trade_no, 1).await.unwrap();
    journal
        .settle_refund(
            &trade_no,
            1,
            true,
            facts,
            String::new(),
            Some(NewEvent {
                event_id: odd.clone(),
                merchant_id: Arc::from("m-1"),
                kind: "carrier-pigeon".into(),
                target: shop.url(),
                method: "POST".into(),
                body: "{}".into(),
                next_at_ms: 0,
            }),
        )
        .await
        .unwrap();
    let (o, metrics) = outbox(&journal, &snap);
    let task = o.spawn();

    eventually("both failed", Duration::from_secs(10), || async {
        count(&metrics, "failed") == 2
    })
    .await;
    let e = event_state(&journal, &orphan).await;
    assert!(
        e.last_error.as_deref().is_some_and(|w| w.contains("not in the config")),
        "{e:?}"
    );
    let e = event_state(&journal, &odd).await;
    assert!(
        e.last_error
            .as_deref()
            .is_some_and(|w| w.contains("unknown event kind")),
        "{e:?}"
    );
    assert!(shop.seen().is_empty());
    task.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_sends_at_once_and_stop_waits_for_deliveries_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let journal = sqlite(dir.path()).await;
    let shop = Merchant::start(Arc::new(|_| (200, Duration::from_millis(500), None))).await;
    let snap = snapshot(&config_text("", &[("m-1", &shop.url())]));
    let (o, metrics) = outbox(&journal, &snap);
    let doorbell = o.doorbell.clone();
    let task = o.spawn();
    // Let the loop go idle, then queue and ring.
    tokio::time::sleep(POLL * 2).await;
    let queued = std::time::Instant::now();
    paid_with_event(&journal, &snap, "m-1").await;
    doorbell.ring();
    eventually("the merchant is asked", Duration::from_secs(5), || async {
        !shop.seen().is_empty()
    })
    .await;
    assert!(
        shop.seen()[0].at.duration_since(queued) < POLL,
        "sent {:?} after the ring",
        shop.seen()[0].at.duration_since(queued)
    );
    // Stopped while the merchant is still answering: the delivery ends and is recorded.
    task.stop().await;
    assert_eq!(count(&metrics, "delivered"), 1);
}

// ---- a fleet: two instances on one PostgreSQL ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_postgres_never_deliver_an_event_twice() {
    let Some(db) = crate::journal::tests::PgDatabase::create().await else {
        return;
    };
    let a = Journal::open(&crate::journal::tests::pg_config(&db)).await.unwrap();
    let b = Journal::open(&crate::journal::tests::pg_config(&db)).await.unwrap();
    let shop = Merchant::start(Arc::new(|_| (200, Duration::from_millis(2), None))).await;
    let snap = snapshot(&config_text("", &[("m-1", &shop.url())]));
    let n = 1_000;
    let ids = queue(&a, &snap, "m-1", n).await;
    let (first, ma) = outbox(&a, &snap);
    let (second, mb) = outbox(&b, &snap);
    assert_ne!(first.owner(), second.owner());
    let (x, y) = (first.spawn(), second.spawn());

    eventually("every event delivered", Duration::from_secs(60), || async {
        count(&ma, "delivered") + count(&mb, "delivered") >= n as u64
    })
    .await;
    // Give a double delivery, if any, time to show.
    tokio::time::sleep(POLL * 3).await;
    x.stop().await;
    y.stop().await;
    let got = shop.event_ids();
    let unique: std::collections::HashSet<&String> = got.iter().collect();
    assert_eq!(got.len(), n, "{} deliveries for {n} events", got.len());
    assert_eq!(unique.len(), n);
    assert!(ids.iter().all(|id| unique.contains(id)));
    let (da, db_) = (count(&ma, "delivered"), count(&mb, "delivered"));
    assert_eq!(da + db_, n as u64);
    assert!(da > 0 && db_ > 0, "both instances delivered: {da} / {db_}");
    assert_eq!(a.backlog().await.unwrap(), 0);
}

// ---- through the whole proxy: the admin API ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_notifications_are_listed_and_resent_through_the_admin_api() {
    let dir = tempfile::tempdir().unwrap();
    let accept = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let open = accept.clone();
    let shop = Merchant::start(Arc::new(move |_| {
        (
            if open.load(Ordering::SeqCst) { 200 } else { 500 },
            Duration::ZERO,
            None,
        )
    }))
    .await;
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nworkers = 1\nadmin_token = \"adm-token\"\n{}",
        config_text("retry_ms = [0, 100]", &[("m-1", &shop.url())])
    );
    let config = Config::parse(&text, &dir.path().join("routes.toml")).unwrap();
    let running = crate::serve::start(config, text.clone(), None).await.unwrap();
    let app = running.app.clone();
    let admin = running.admin;
    let id = paid_with_event(&app.journal, &app.snapshot(), "m-1").await;
    app.outbox.ring();
    let trade_no = event_state(&app.journal, &id).await.trade_no;

    let failed = || async {
        let (status, v) = get(admin, "/-/notifications?state=failed").await;
        assert_eq!(status, 200, "{v}");
        v.as_array().unwrap().iter().any(|e| e["event_id"] == id.as_str())
    };
    eventually("listed as failed", Duration::from_secs(10), failed).await;
    assert_eq!(shop.seen().len(), 2);
    let (status, v) = get(admin, "/-/notifications?state=pending").await;
    assert_eq!(status, 200);
    assert!(v.as_array().unwrap().is_empty(), "{v}");
    for bad in [
        "/-/notifications?state=delivered",
        "/-/notifications",
        "/-/notifications?state=",
    ] {
        let (status, v) = get(admin, bad).await;
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (400, Some("invalid_request")),
            "{bad}"
        );
    }

    // The payment's record: its state and its notification, no secret.
    let (status, record) = get(admin, &format!("/-/payments/{trade_no}")).await;
    assert_eq!(status, 200, "{record}");
    assert_eq!(record["state"], "paid");
    assert_eq!(record["notifications_out"][0]["event_id"], id.as_str());
    assert_eq!(record["notifications_out"][0]["state"], "failed");
    assert!(!record.to_string().contains(SECRET));
    assert_eq!(get(admin, "/-/payments/Tnosuchpayment").await.0, 404);
    assert_eq!(get(admin, "/-/payments/not-a-trade-no!").await.0, 404);

    // Re-sending needs the token.
    let path = format!("/-/notifications/{id}/resend");
    assert_eq!(post(admin, &path, None).await.0, 401);
    assert_eq!(post(admin, &path, Some("wrong")).await.0, 401);
    assert_eq!(
        post(admin, "/-/notifications/evtnosuchevent/resend", Some("adm-token"))
            .await
            .0,
        404
    );
    assert_eq!(shop.seen().len(), 2, "nothing sent by refused re-sends");
    accept.store(true, Ordering::SeqCst);
    let (status, e) = post(admin, &path, Some("adm-token")).await;
    assert_eq!(status, 200, "{e}");
    assert_eq!(e["event_id"], id.as_str());
    eventually("delivered after the re-send", Duration::from_secs(5), || async {
        event_state(&app.journal, &id).await.state == EventState::Delivered
    })
    .await;
    assert_eq!(shop.event_ids(), [id.clone(), id.clone(), id.clone()]);
    assert!(shop.seen().iter().all(|s| verify(SECRET, s)));

    let (status, text) = raw(admin, http::Method::GET, "/metrics", None).await;
    assert_eq!(status, 200);
    for line in [
        "payroute_notifications_out_total{result=\"retry\"} 1",
        "payroute_notifications_out_total{result=\"failed\"} 1",
        "payroute_notifications_out_total{result=\"delivered\"} 1",
    ] {
        assert!(text.contains(line), "{line} not in\n{text}");
    }
    assert_eq!(get(admin, "/-/ready").await.0, 200);
    running.shutdown().await;
}

async fn raw(admin: SocketAddr, method: http::Method, path: &str, token: Option<&str>) -> (u16, String) {
    let client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = Request::builder().method(method).uri(format!("http://{admin}{path}"));
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = client
        .request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn get(admin: SocketAddr, path: &str) -> (u16, Value) {
    let (status, body) = raw(admin, http::Method::GET, path, None).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

async fn post(admin: SocketAddr, path: &str, token: Option<&str>) -> (u16, Value) {
    let (status, body) = raw(admin, http::Method::POST, path, token).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

// ---- throughput (by hand: cargo test --lib notify::outbox::tests::throughput -- --ignored --nocapture) ----

/// Deliveries a second from a standing backlog to a local merchant that
/// answers at once (`PAYROUTE_OUTBOX_EVENTS`, default 20,000), on SQLite
/// and, when it answers, PostgreSQL. Prints; asserts only that all arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing, by hand"]
async fn throughput() {
    let n: usize = std::env::var("PAYROUTE_OUTBOX_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let dir = tempfile::tempdir().unwrap();
    let sqlite = sqlite(dir.path()).await;
    measure("sqlite", &sqlite, n).await;
    if let Some(db) = crate::journal::tests::PgDatabase::create().await {
        let pg = Journal::open(&crate::journal::tests::pg_config(&db)).await.unwrap();
        measure("postgres", &pg, n).await;
    }
}

async fn measure(name: &str, journal: &Journal, n: usize) {
    let shop = Merchant::answering(200).await;
    let snap = snapshot(&config_text("", &[("m-1", &shop.url())]));
    let queued = std::time::Instant::now();
    queue(journal, &snap, "m-1", n).await;
    let queued = queued.elapsed();
    let rss_queued = rss_mib();
    let (o, metrics) = outbox(journal, &snap);
    let started = std::time::Instant::now();
    let task = o.spawn();
    eventually("all delivered", Duration::from_secs(600), || async {
        count(&metrics, "delivered") >= n as u64
    })
    .await;
    let took = started.elapsed();
    task.stop().await;
    assert_eq!(shop.seen().len(), n);
    println!(
        "{name:>9}: {n} events queued in {queued:.2?}; delivered in {took:.2?} = {:.0} deliveries/s \
         (test process RSS {rss_queued} MiB queued, {} MiB drained)",
        n as f64 / took.as_secs_f64(),
        rss_mib()
    );
}

/// This process's resident memory (the merchant's record of every request included).
fn rss_mib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096 / (1 << 20)
}

// ---- the journal's database goes away ----

/// The proxy on PostgreSQL loses its database: `/-/ready` says 503, the
/// admin views answer 503 instead of hanging, the outbox counts journal
/// errors and keeps trying, and shutdown still ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_outage_is_answered_503_and_counted() {
    let Some(db) = crate::journal::tests::PgDatabase::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nworkers = 1\n\
         [journal]\nbackend = \"postgres\"\nurl = \"postgres://postgres@127.0.0.1:5432/{}\"\n{}",
        db.name(),
        config_text("", &[("m-1", "http://127.0.0.1:9/hook")])
    );
    let config = Config::parse(&text, &dir.path().join("routes.toml")).unwrap();
    let running = crate::serve::start(config, text.clone(), None).await.unwrap();
    let (app, admin) = (running.app.clone(), running.admin);
    assert_eq!(get(admin, "/-/ready").await.0, 200);

    db.drop_now().await;
    let (status, v) = get(admin, "/-/ready").await;
    assert_eq!((status, v["status"].as_str()), (503, Some("journal_unavailable")));
    let (status, v) = get(admin, "/-/notifications?state=failed").await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (503, Some("journal_unavailable"))
    );
    eventually(
        "the outbox counts its failed claims",
        Duration::from_secs(15),
        || async { app.metrics.journal_errors.get() >= 6 },
    )
    .await;
    let stopping = std::time::Instant::now();
    running.shutdown().await;
    assert!(stopping.elapsed() < Duration::from_secs(30), "{:?}", stopping.elapsed());
}
