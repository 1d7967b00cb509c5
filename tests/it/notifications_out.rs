//! Notifications out and the admin API's journal views, through the built
//! binary: a payment left pending by an acquirer that states outcomes in its
//! body, its record on `GET /-/payments/{trade_no}`, and an event for it
//! delivered (signed), retried, given up, listed and re-sent.
//!
//! The event is put into the running proxy's journal (its SQLite file) by
//! the test, as the move that causes it would (notifications in and the
//! sweeper are tested on their own): what is tested here is the binary's
//! outbox and admin API, with the config the binary loaded.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use payroute_mock::Behavior;
use payroute_testkit::*;
use serde_json::json;
use tokio::net::TcpListener;

use crate::PAYROUTE;

const NOTIFY_SECRET: &str = "m1-notify-secret-e2e";
const ADMIN_TOKEN: &str = "admin-e2e-token";

/// Each request's `X-Payroute-Signature` and body.
type Received = Arc<Mutex<Vec<(Option<String>, Bytes)>>>;

/// A merchant's notify endpoint: answers 500 to its first `refuse`
/// requests, then 204; keeps every request's signature header and body.
struct Shop {
    addr: SocketAddr,
    seen: Received,
}

impl Shop {
    async fn start(refuse: usize) -> Shop {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen: Received = Arc::default();
        let count = Arc::new(AtomicUsize::new(0));
        let record = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (record, count) = (record.clone(), count.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: http::Request<Incoming>| {
                        let (record, count) = (record.clone(), count.clone());
                        async move {
                            let signature = req
                                .headers()
                                .get("x-payroute-signature")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned);
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            record.lock().expect("lock").push((signature, body));
                            let status = if count.fetch_add(1, Ordering::SeqCst) < refuse {
                                500
                            } else {
                                204
                            };
                            let mut r = http::Response::new(Full::new(Bytes::new()));
                            *r.status_mut() = http::StatusCode::from_u16(status).expect("status");
                            Ok::<_, Infallible>(r)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Shop { addr, seen }
    }

    fn url(&self) -> String {
        format!("http://{}/payroute/notify", self.addr)
    }

    fn seen(&self) -> Vec<(Option<String>, Bytes)> {
        self.seen.lock().expect("lock").clone()
    }
}

/// What a merchant checks: `t=T,v1=HEX` with HEX = HMAC-SHA256(secret, "T.body").
fn signed_by(secret: &str, header: Option<&str>, body: &[u8]) -> bool {
    let Some((t, v1)) = header.and_then(|h| h.split_once(',')) else {
        return false;
    };
    let (Some(t), Some(v1)) = (t.strip_prefix("t="), v1.strip_prefix("v1=")) else {
        return false;
    };
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes()) == v1
}

/// An acquirer that answers every payment 200 `{"status": "processing"}`
/// and decides nothing within the test; channel `acq` reads it; merchant
/// m-1 hears at `shop`.
async fn pending_setup(shop: &Shop) -> (payroute_mock::MockAcquirer, Config) {
    let acq = acquirer_with(
        "acq",
        Behavior::default().with_outcome_in_body().with_pending(1.0, 600_000),
    )
    .await;
    let config = Config::new()
        .server(&format!("admin_token = \"{ADMIN_TOKEN}\""))
        .channel(
            "acq",
            &acq.url(),
            "outcome = { pointer = \"/status\", paid = [\"paid\"], pending = [\"processing\"], declined = [\"declined\", \"failed\"] }",
        )
        .merchant(
            "m-1",
            &format!("notify_url = \"{}\"\nnotify_secret = \"{NOTIFY_SECRET}\"", shop.url()),
        );
    (acq, config)
}

/// A `[notify]` table: the test kit's builder has none, so it goes before the first table.
fn with_notify(config: &Config, notify: &str) -> String {
    format!("[notify]\n{notify}\n{config}")
}

async fn pending_payment(p: &Proxy) -> String {
    let r = p.pay("m-1", 1250).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.header("x-payroute-trade-no").expect("X-Payroute-Trade-No")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_record_and_the_notification_lists_on_the_admin_api() {
    let shop = Shop::start(0).await;
    let (_acq, config) = pending_setup(&shop).await;
    let p = PAYROUTE.serve(config).await;
    assert_eq!(p.admin_get("/-/ready").await.status, 200);
    let trade_no = pending_payment(&p).await;

    let r = p.admin_get(&format!("/-/payments/{trade_no}")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let record = r.json();
    assert_eq!(record["trade_no"], trade_no.as_str());
    assert_eq!(record["state"], "pending");
    assert_eq!(
        (record["amount"].as_i64(), record["currency"].as_str()),
        (Some(1250), Some("CNY"))
    );
    assert_eq!(record["merchant_id"], "m-1");
    assert_eq!(record["channel_id"], "acq");
    assert!(
        record["notifications_out"].as_array().is_some_and(Vec::is_empty),
        "{record}"
    );
    assert!(!r.text().contains(NOTIFY_SECRET), "a secret in {}", r.text());
    // Attempts are history, written behind the answer.
    eventually("the attempt is in the record", Duration::from_secs(5), || async {
        let r = p.admin_get(&format!("/-/payments/{trade_no}")).await;
        r.json()["attempts"].as_array().is_some_and(|a| a.len() == 1)
    })
    .await;

    for unknown in [
        "/-/payments/Tnosuchtrade",
        "/-/payments/not-a-trade-no!",
        "/-/payments/",
    ] {
        let r = p.admin_get(unknown).await;
        assert_eq!(r.status, 404, "{unknown}: {}", r.text());
    }
    for state in ["pending", "failed"] {
        let r = p.admin_get(&format!("/-/notifications?state={state}")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json(), json!([]));
    }
    for bad in [
        "/-/notifications?state=delivered",
        "/-/notifications?state=nope",
        "/-/notifications",
    ] {
        let r = p.admin_get(bad).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        assert_eq!(r.error_code().as_deref(), Some("invalid_request"));
    }
    let resend = "/-/notifications/evtnosuchevent/resend";
    assert_eq!(p.admin_post(resend, &[]).await.status, 401);
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    assert_eq!(p.admin_post(resend, &[("authorization", &bearer)]).await.status, 404);
    assert!(shop.seen().is_empty(), "nothing to notify yet");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_delivers_signed_retries_gives_up_and_resends_by_hand() {
    // Two refusals, then taken.
    let shop = Shop::start(2).await;
    let (_acq, config) = pending_setup(&shop).await;
    let p = PAYROUTE
        .serve(with_notify(&config, "retry_ms = [0, 200]\ntimeout_ms = 2000"))
        .await;
    let trade_no = pending_payment(&p).await;

    // The event the move to `paid` would queue, written into the proxy's journal.
    let event_id = format!("evt{:026x}", fastrand::u128(..) >> 24);
    let body = json!({
        "event_id": event_id, "trade_no": trade_no, "order_id": "o-e2e", "state": "paid",
        "amount": 1250, "currency": "CNY", "channel": "acq", "at": "2026-01-01T00:00:00.000Z"
    })
    .to_string();
    insert_event(&p.dir().join("payroute.db"), &event_id, &trade_no, &body).await;
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let resend = format!("/-/notifications/{event_id}/resend");

    eventually("given up after two refusals", Duration::from_secs(10), || async {
        let r = p.admin_get("/-/notifications?state=failed").await;
        r.json()
            .as_array()
            .is_some_and(|a| a.iter().any(|e| e["event_id"] == event_id.as_str()))
    })
    .await;
    let failed = p.admin_get(&format!("/-/payments/{trade_no}")).await.json();
    let out = &failed["notifications_out"][0];
    assert_eq!(
        (out["state"].as_str(), out["attempts"].as_i64()),
        (Some("failed"), Some(2)),
        "{failed}"
    );
    assert!(out["last_error"].as_str().is_some_and(|e| e.contains("500")), "{out}");
    assert_eq!(shop.seen().len(), 2);

    assert_eq!(
        p.admin_post(&resend, &[]).await.status,
        401,
        "re-send needs the admin token"
    );
    assert_eq!(shop.seen().len(), 2);
    let r = p.admin_post(&resend, &[("authorization", &bearer)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["event_id"], event_id.as_str());
    eventually("delivered after the re-send", Duration::from_secs(10), || async {
        let r = p.admin_get(&format!("/-/payments/{trade_no}")).await;
        r.json()["notifications_out"][0]["state"] == "delivered"
    })
    .await;

    let seen = shop.seen();
    assert_eq!(seen.len(), 3);
    for (signature, got) in &seen {
        assert_eq!(got, body.as_bytes(), "the body as queued");
        assert!(signed_by(NOTIFY_SECRET, signature.as_deref(), got), "{signature:?}");
        assert!(!signed_by("another secret", signature.as_deref(), got));
    }
    let m = p.metrics().await;
    for (result, n) in [("retry", 1.0), ("failed", 1.0), ("delivered", 1.0)] {
        assert_eq!(
            m.get("payroute_notifications_out_total", &[("result", result)]),
            n,
            "{result}"
        );
    }
    eventually("the backlog is empty", Duration::from_secs(5), || async {
        p.metrics().await.sum("payroute_notification_backlog", &[]) == Some(0.0)
    })
    .await;
}

/// Queues a JSON event for merchant m-1, due now, in the proxy's SQLite journal.
async fn insert_event(db: &std::path::Path, event_id: &str, trade_no: &str, body: &str) {
    use sqlx::ConnectOptions;
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .busy_timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("open the proxy's journal");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    sqlx::query(
        "INSERT INTO events (event_id, trade_no, merchant_id, kind, target, method, body, state, attempts, \
         next_at_ms, created_at_ms) VALUES ($1, $2, 'm-1', 'json', 'http://queued.example/', 'POST', $3, 'pending', 0, $4, $4)",
    )
    .bind(event_id)
    .bind(trade_no)
    .bind(body)
    .bind(now)
    .execute(&mut conn)
    .await
    .expect("insert the event");
}
