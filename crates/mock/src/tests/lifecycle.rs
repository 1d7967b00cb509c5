//! A payment's life at the mock: outcomes in the body, "processing" then a
//! signed notification, the notification faults with a seed, queries by
//! order id and trade number, retries, the statement — over real sockets,
//! with a real HTTP receiver that checks signatures on its own (the `hmac`
//! crate, not the mock's signing code).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::header::CONTENT_TYPE;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::{client, get, send, url, TestClient};
use crate::{Behavior, Counters, MockAcquirer};

const SECRET: &str = "whsec-test";
const AMOUNT: u64 = 100;
const SETTLE: Duration = Duration::from_secs(10);

/// One notification as the receiver saw it.
#[derive(Clone, Debug)]
struct Seen {
    json: Value,
    signed_ok: bool,
    answered: u16,
}

/// What payroute's `/notify/{channel}` does, reduced: checks the signature
/// (401 if wrong), answers 500 while told to fail, else 200; keeps all it saw.
struct Receiver {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn verify(secret: &str, body: &[u8], signature: Option<&str>) -> bool {
    let Some(sig) = signature.and_then(|s| hex::decode(s).ok()) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

impl Receiver {
    /// Answers 500 to its first `fail_first` requests (all of them with `usize::MAX`).
    async fn start(fail_first: usize) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind receiver");
        let addr = listener.local_addr().expect("receiver addr");
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let log = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let log = log.clone();
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let log = log.clone();
                    async move {
                        let sig = req
                            .headers()
                            .get("x-signature")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        let body = req.into_body().collect().await?.to_bytes();
                        let signed_ok = verify(SECRET, &body, sig.as_deref());
                        let mut log = log.lock().expect("receiver log");
                        let answered = if log.len() < fail_first {
                            500
                        } else if signed_ok {
                            200
                        } else {
                            401
                        };
                        log.push(Seen {
                            json: serde_json::from_slice(&body).unwrap_or_default(),
                            signed_ok,
                            answered,
                        });
                        let mut resp = Response::new(Full::new(Bytes::from_static(b"ok")));
                        *resp.status_mut() = StatusCode::from_u16(answered).expect("status");
                        Ok::<_, hyper::Error>(resp)
                    }
                });
                tokio::spawn(async move {
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver { addr, seen, task }
    }

    fn url(&self) -> String {
        format!("http://{}/notify/acq-a", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("receiver log").clone()
    }
}

/// A payment as payroute sends it: trade number in the header, amount,
/// currency and order id in the body.
async fn pay(c: &TestClient, mock: &MockAcquirer, order_id: &str, trade_no: &str) -> (StatusCode, Value) {
    let body = json!({"order_id": order_id, "amount": AMOUNT, "currency": "CNY", "note": "x"});
    let req = Request::post(url(mock, "/v1/payments"))
        .header(CONTENT_TYPE, "application/json")
        .header("x-payroute-trade-no", trade_no)
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    send(c, req).await
}

async fn query(c: &TestClient, mock: &MockAcquirer, id: &str) -> (StatusCode, Value) {
    send(c, get(&url(mock, &format!("/v1/payments/{id}")))).await
}

async fn start(behavior: Behavior) -> MockAcquirer {
    MockAcquirer::builder()
        .name("acq-a")
        .behavior(behavior)
        .start()
        .await
        .expect("start mock")
}

#[tokio::test]
async fn outcome_in_body_answers_200_and_says_everything() {
    let refusing = Behavior {
        success_rate: 0.0,
        fail_status: 402,
        ..Behavior::default()
    }
    .with_outcome_in_body();
    let mock = start(refusing.clone()).await;
    let c = client();

    let (status, body) = pay(&c, &mock, "o-1", "T1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"status": "declined", "id": body["id"], "order_id": "o-1", "trade_no": "T1",
               "amount": AMOUNT, "currency": "CNY", "acquirer": "acq-a"})
    );
    let port = mock.local_addr().port();
    assert_eq!(body["id"], format!("m{port}t1"));
    // A refused payment is not remembered: a query says "never charged".
    assert_eq!(query(&c, &mock, "T1").await.0, StatusCode::NOT_FOUND);

    mock.set_behavior(Behavior {
        fail_status: 503,
        ..refusing
    });
    let (status, body) = pay(&c, &mock, "o-2", "T2").await;
    assert_eq!((status, &body["status"]), (StatusCode::OK, &json!("failed")));

    mock.set_behavior(Behavior::default().with_outcome_in_body());
    let (status, body) = pay(&c, &mock, "o-3", "T3").await;
    assert_eq!((status, &body["status"]), (StatusCode::OK, &json!("paid")));
    // By trade number and by order id alike.
    for id in ["T3", "o-3"] {
        let (status, q) = query(&c, &mock, id).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            (&q["status"], &q["id"], &q["trade_no"]),
            (&json!("paid"), &body["id"], &json!("T3"))
        );
    }
    let c = mock.counters();
    assert_eq!((c.requests, c.successes, c.failures, c.queries), (3, 1, 2, 3));
    assert_eq!((c.paid(), c.refused()), (1, 2));
}

#[tokio::test]
async fn two_merchants_one_order_id_are_two_payments() {
    let mock = start(Behavior::default()).await;
    let c = client();
    let (_, first) = pay(&c, &mock, "o-1", "TA").await;
    let (_, second) = pay(&c, &mock, "o-1", "TB").await;
    assert_ne!(first["id"], second["id"]);
    assert_eq!(query(&c, &mock, "TA").await.1["id"], first["id"]);
    assert_eq!(query(&c, &mock, "TB").await.1["id"], second["id"]);
    // The order id alone finds the latest.
    assert_eq!(query(&c, &mock, "o-1").await.1["id"], second["id"]);
    // Reversing one trade number leaves the other.
    send(&c, super::post(&url(&mock, "/v1/payments/TA/reverse"), "")).await;
    assert_eq!(query(&c, &mock, "TA").await.0, StatusCode::NOT_FOUND);
    assert_eq!(query(&c, &mock, "TB").await.0, StatusCode::OK);
    assert_eq!(mock.statement().len(), 1);
}

#[tokio::test]
async fn processing_then_a_signed_notification() {
    let receiver = Receiver::start(0).await;
    let mock = start(
        Behavior::default()
            .with_pending(1.0, 300)
            .notify_to(&receiver.url(), SECRET),
    )
    .await;
    let c = client();

    let (status, body) = pay(&c, &mock, "o-1", "T1").await;
    assert_eq!(status, StatusCode::ACCEPTED, "processing, HTTP status speaking");
    assert_eq!(
        (&body["status"], &body["trade_no"]),
        (&json!("processing"), &json!("T1"))
    );
    let id = body["id"].clone();
    for q in ["o-1", "T1"] {
        let (status, now) = query(&c, &mock, q).await;
        assert_eq!((status, &now["status"]), (StatusCode::ACCEPTED, &json!("processing")));
    }
    assert!(receiver.seen().is_empty(), "notified before the delay");
    assert!(mock.statement().is_empty(), "not paid yet");

    assert!(mock.wait_settled(SETTLE).await);
    let seen = receiver.seen();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].signed_ok, "signature must verify: {:?}", seen[0]);
    assert_eq!(
        seen[0].json,
        json!({"order_id": "o-1", "trade_no": "T1", "id": id, "amount": AMOUNT,
               "currency": "CNY", "status": "paid"})
    );
    let (status, now) = query(&c, &mock, "T1").await;
    assert_eq!((status, &now["status"]), (StatusCode::OK, &json!("paid")));
    let statement = mock.statement();
    assert_eq!(statement.len(), 1);
    assert_eq!(
        (statement[0].trade_no.as_deref(), &statement[0].amount),
        (Some("T1"), &json!(AMOUNT))
    );
    assert_eq!(Some(statement[0].id.as_str()), id.as_str());
    let c = mock.counters();
    assert_eq!((c.requests, c.pending, c.successes, c.settled_paid), (1, 1, 0, 1));
    assert_eq!(
        (
            c.notify_sent,
            c.notify_attempts,
            c.notify_delivered,
            c.notify_undelivered
        ),
        (1, 1, 1, 0)
    );
}

#[tokio::test]
async fn decided_failed_is_queried_as_failed() {
    let receiver = Receiver::start(0).await;
    let failing = Behavior {
        success_rate: 0.0,
        ..Behavior::default()
    }
    .with_outcome_in_body()
    .with_pending(1.0, 0)
    .notify_to(&receiver.url(), SECRET);
    let mock = start(failing.clone()).await;
    let c = client();
    let (status, body) = pay(&c, &mock, "o-1", "T1").await;
    assert_eq!((status, &body["status"]), (StatusCode::OK, &json!("processing")));
    assert!(mock.wait_settled(SETTLE).await);
    let seen = receiver.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!((&seen[0].json["status"], seen[0].signed_ok), (&json!("failed"), true));

    let (status, now) = query(&c, &mock, "T1").await;
    assert_eq!((status, &now["status"]), (StatusCode::OK, &json!("failed")));
    // With the HTTP status speaking, decided failed reads "never charged".
    mock.set_behavior(Behavior {
        outcome_in_body: false,
        ..failing
    });
    let (status, now) = query(&c, &mock, "T1").await;
    assert_eq!((status, &now["status"]), (StatusCode::NOT_FOUND, &json!("failed")));
    assert!(mock.statement().is_empty());
    assert_eq!((mock.counters().settled_failed, mock.counters().refused()), (1, 1));
}

/// What a seeded run with every fault at 0.3 produced: the counters, and
/// per trade number the copies the receiver saw, in order.
async fn faulty_run(
    seed: u64,
    payments: usize,
) -> (Counters, BTreeMap<String, Vec<(String, bool, Value)>>, MockAcquirer) {
    let receiver = Receiver::start(0).await;
    let mock = start(
        Behavior {
            success_rate: 0.5,
            notify_loss: 0.3,
            notify_repeat: 0.3,
            notify_forge: 0.3,
            notify_wrong_amount: 0.3,
            notify_backoff_ms: 10,
            ..Behavior::default()
        }
        .with_pending(1.0, 0)
        .notify_to(&receiver.url(), SECRET)
        .with_seed(seed),
    )
    .await;
    let c = client();
    for i in 0..payments {
        let (status, _) = pay(&c, &mock, &format!("o-{i}"), &format!("T{i}")).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    assert!(mock.wait_settled(SETTLE).await, "notifications still running");
    let mut by_trade: BTreeMap<String, Vec<(String, bool, Value)>> = BTreeMap::new();
    for s in receiver.seen() {
        let trade = s.json["trade_no"].as_str().unwrap_or_default().to_owned();
        let status = s.json["status"].as_str().unwrap_or_default().to_owned();
        by_trade
            .entry(trade)
            .or_default()
            .push((status, s.signed_ok, s.json["amount"].clone()));
        // The receiver refuses exactly the badly signed ones.
        assert_eq!(s.answered, if s.signed_ok { 200 } else { 401 });
    }
    (mock.counters(), by_trade, mock)
}

#[tokio::test]
async fn seeded_faults_are_exact_and_reproducible() {
    const N: usize = 40;
    let (c, by_trade, mock) = faulty_run(7, N).await;
    let n = N as u64;
    assert_eq!((c.requests, c.pending), (n, n));
    assert_eq!(c.settled_paid + c.settled_failed, n);
    assert_eq!(c.notify_sent + c.notify_lost, n);
    for (name, count) in [
        ("lost", c.notify_lost),
        ("repeated", c.notify_repeated),
        ("forged", c.notify_forged),
        ("wrong amount", c.notify_wrong_amount),
        ("paid", c.settled_paid),
    ] {
        assert!(count > 0 && count < n, "{name}: {count} of {n}");
    }

    // What the receiver saw matches what the mock says it did, copy for copy.
    let all: Vec<&(String, bool, Value)> = by_trade.values().flatten().collect();
    let genuine = |(_, ok, amount): &(String, bool, Value)| *ok && *amount == json!(AMOUNT);
    let forged = all.iter().filter(|(_, ok, _)| !ok).count() as u64;
    let wrong = all.iter().filter(|(_, ok, a)| *ok && *a == json!(AMOUNT + 1)).count() as u64;
    let genuine_copies = all.iter().filter(|x| genuine(x)).count() as u64;
    assert_eq!(forged, c.notify_forged);
    assert!(
        all.iter().filter(|(_, ok, _)| !ok).all(|(s, _, _)| s == "paid"),
        "forged copies say paid"
    );
    assert_eq!(wrong, c.notify_wrong_amount);
    assert_eq!(genuine_copies, c.notify_sent + c.notify_repeated);
    assert_eq!(forged + wrong + genuine_copies, all.len() as u64);
    let announced = by_trade.values().filter(|v| v.iter().any(genuine)).count() as u64;
    assert_eq!(announced, c.notify_sent);
    let twice = by_trade
        .values()
        .filter(|v| v.iter().filter(|x| genuine(x)).count() == 2)
        .count() as u64;
    assert_eq!(twice, c.notify_repeated);
    assert_eq!(c.notify_delivered, wrong + genuine_copies, "forged ones were refused");
    assert_eq!((c.forged_accepted, c.notify_undelivered), (0, 0));
    assert_eq!(c.notify_attempts, all.len() as u64);

    // A lost notification: only a query finds the decision.
    let client = client();
    let mut lost = 0;
    for i in 0..N {
        let trade = format!("T{i}");
        let (_, now) = query(&client, &mock, &trade).await;
        let decided = now["status"].as_str().unwrap_or_default().to_owned();
        assert!(decided == "paid" || decided == "failed", "{trade}: {now}");
        match by_trade.get(&trade).and_then(|v| v.iter().find(|x| genuine(x))) {
            Some((said, _, _)) => assert_eq!(*said, decided, "{trade}: notified and queried alike"),
            None => lost += 1,
        }
    }
    assert_eq!(lost, c.notify_lost);
    assert_eq!(mock.statement().len() as u64, c.settled_paid);

    // The same seed, the same run, notification for notification.
    let (again, by_trade_again, _) = faulty_run(7, N).await;
    let timing_free = |c: &Counters| Counters {
        connections: 0,
        queries: 0,
        ..c.clone()
    };
    assert_eq!(timing_free(&again), timing_free(&c));
    assert_eq!(by_trade_again, by_trade);
    let (other, _, _) = faulty_run(8, N).await;
    assert_ne!(timing_free(&other), timing_free(&c), "another seed, another run");
}

#[tokio::test]
async fn certain_faults_come_in_order() {
    let receiver = Receiver::start(0).await;
    let every_fault = Behavior {
        notify_repeat: 1.0,
        notify_forge: 1.0,
        notify_wrong_amount: 1.0,
        success_rate: 0.0,
        ..Behavior::default()
    }
    .with_pending(1.0, 0)
    .notify_to(&receiver.url(), SECRET);
    let mock = start(every_fault.clone()).await;
    let c = client();
    pay(&c, &mock, "o-1", "T1").await;
    assert!(mock.wait_settled(SETTLE).await);
    let seen: Vec<(Value, bool, Value, u16)> = receiver
        .seen()
        .into_iter()
        .map(|s| {
            (
                s.json["status"].clone(),
                s.signed_ok,
                s.json["amount"].clone(),
                s.answered,
            )
        })
        .collect();
    // Forged (a "paid" for a failed payment), wrong amount, genuine, repeat.
    assert_eq!(
        seen,
        [
            (json!("paid"), false, json!(AMOUNT), 401),
            (json!("failed"), true, json!(AMOUNT + 1), 200),
            (json!("failed"), true, json!(AMOUNT), 200),
            (json!("failed"), true, json!(AMOUNT), 200),
        ]
    );

    // Loss wins over everything: nothing is sent.
    mock.set_behavior(Behavior {
        notify_loss: 1.0,
        ..every_fault
    });
    pay(&c, &mock, "o-2", "T2").await;
    assert!(mock.wait_settled(SETTLE).await);
    assert_eq!(receiver.seen().len(), 4);
    assert_eq!(query(&c, &mock, "T2").await.1["status"], "failed");
    let c = mock.counters();
    assert_eq!((c.notify_sent, c.notify_lost, c.settled_failed), (1, 1, 2));
}

#[tokio::test]
async fn retries_until_acknowledged_then_gives_up() {
    let receiver = Receiver::start(2).await;
    let behavior = Behavior {
        notify_backoff_ms: 50,
        notify_attempts: 4,
        ..Behavior::default()
    }
    .with_pending(1.0, 0)
    .notify_to(&receiver.url(), SECRET);
    let mock = start(behavior.clone()).await;
    let c = client();
    let begun = tokio::time::Instant::now();
    pay(&c, &mock, "o-1", "T1").await;
    assert!(mock.wait_settled(SETTLE).await);
    // Two refusals, then delivered: 50 + 100 ms of back-off.
    assert!(begun.elapsed() >= Duration::from_millis(150), "{:?}", begun.elapsed());
    let answered: Vec<u16> = receiver.seen().iter().map(|s| s.answered).collect();
    assert_eq!(answered, [500, 500, 200]);
    assert!(
        receiver.seen().iter().all(|s| s.json == receiver.seen()[0].json),
        "the same notification"
    );
    let counts = mock.counters();
    assert_eq!(
        (
            counts.notify_sent,
            counts.notify_attempts,
            counts.notify_delivered,
            counts.notify_undelivered
        ),
        (1, 3, 1, 0)
    );

    // A receiver that never acknowledges: bounded tries, then given up.
    let down = Receiver::start(usize::MAX).await;
    let mock = start(
        Behavior {
            notify_attempts: 3,
            notify_backoff_ms: 10,
            ..behavior
        }
        .notify_to(&down.url(), SECRET),
    )
    .await;
    pay(&c, &mock, "o-2", "T2").await;
    assert!(mock.wait_settled(SETTLE).await);
    assert_eq!(down.seen().len(), 3);
    let counts = mock.counters();
    assert_eq!(
        (
            counts.notify_attempts,
            counts.notify_delivered,
            counts.notify_undelivered
        ),
        (3, 0, 1)
    );
    // Undelivered does not mean undecided.
    assert_eq!(query(&c, &mock, "T2").await.1["status"], "paid");
}

#[tokio::test]
async fn reversing_a_processing_payment_cancels_it() {
    let receiver = Receiver::start(0).await;
    let mock = start(
        Behavior::default()
            .with_pending(1.0, 200)
            .notify_to(&receiver.url(), SECRET),
    )
    .await;
    let c = client();
    pay(&c, &mock, "o-1", "T1").await;
    send(&c, super::post(&url(&mock, "/v1/payments/T1/reverse"), "")).await;
    assert!(mock.wait_settled(SETTLE).await);
    assert!(receiver.seen().is_empty(), "a reversed payment is never announced");
    let counts = mock.counters();
    assert_eq!((counts.pending, counts.settled_paid, counts.notify_sent), (1, 0, 0));
    assert_eq!(query(&c, &mock, "T1").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn statement_lists_paid_payments() {
    let now = Arc::new(AtomicI64::new(1_000));
    let clock = now.clone();
    let mock = MockAcquirer::builder()
        .behavior(Behavior::default())
        .clock(move || clock.load(Ordering::SeqCst))
        .start()
        .await
        .expect("start mock");
    let c = client();
    pay(&c, &mock, "o-1", "T1").await;
    now.store(2_000, Ordering::SeqCst);
    mock.set_behavior(Behavior {
        success_rate: 0.0,
        ..Behavior::default()
    });
    pay(&c, &mock, "o-2", "T2").await;
    mock.set_behavior(Behavior::default().with_pending(1.0, 0));
    now.store(3_000, Ordering::SeqCst);
    pay(&c, &mock, "o-3", "T3").await;
    assert!(mock.wait_settled(SETTLE).await);
    // Numeric order ids and no trade number are kept as sent.
    mock.set_behavior(Behavior::default());
    now.store(4_000, Ordering::SeqCst);
    let body = r#"{"order_id":4,"amount":"12.50","currency":"USD"}"#;
    send(&c, super::post(&url(&mock, "/v1/payments"), body)).await;

    let (status, listed) = send(&c, get(&url(&mock, "/-/statement"))).await;
    assert_eq!(status, StatusCode::OK);
    let port = mock.local_addr().port();
    assert_eq!(
        listed,
        json!([
            {"id": format!("m{port}t1"), "order_id": "o-1", "trade_no": "T1", "amount": AMOUNT,
             "currency": "CNY", "status": "paid", "charged_ms": 1_000},
            {"id": format!("m{port}t3"), "order_id": "o-3", "trade_no": "T3", "amount": AMOUNT,
             "currency": "CNY", "status": "paid", "charged_ms": 3_000},
            {"id": format!("m{port}t4"), "order_id": 4, "trade_no": null, "amount": "12.50",
             "currency": "USD", "status": "paid", "charged_ms": 4_000},
        ])
    );
    assert_eq!(serde_json::to_value(mock.statement()).expect("statement json"), listed);
    // The statement is the mock's own page: not a query.
    assert_eq!(mock.counters().queries, 0);
}
