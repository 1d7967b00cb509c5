//! Notifications in: a channel's signed word on a payment it answered
//! "processing" — verified, matched, amount-checked, deduplicated, committed,
//! then acknowledged; forged, wrong-amount and unknown ones change nothing.

use std::time::Duration;

use payroute_mock::{Behavior, MockAcquirer};
use payroute_testkit::*;
use serde_json::json;

use crate::PAYROUTE;

const SECRET: &str = "whsec-test";
/// The fake acquirer's words, as its channel's outcome rule reads them.
const LINES: &str = r#"outcome = { pointer = "/status", paid = ["paid"], pending = ["processing"], declined = ["declined", "failed"], trade_no_pointer = "/id" }
notify = { signature_header = "x-signature", secret = "whsec-test", amount_pointer = "/amount" }
query = { method = "GET", path = "/v1/payments/{trade_no}" }"#;

/// An acquirer that answers every payment "processing" and decides 200 ms
/// later (paid with `success_rate`), and a proxy in front of it with its
/// notifications pointed back at the proxy.
async fn pending_acquirer(behavior: Behavior) -> (MockAcquirer, Proxy) {
    let acq = MockAcquirer::builder()
        .name("acq")
        .record()
        .behavior(Behavior::default())
        .start()
        .await
        .expect("mock starts");
    let config = Config::new()
        .sweeper("query_after_ms = [600000]")
        .channel("acq", &acq.url(), LINES)
        .merchant("m-1", "");
    let p = PAYROUTE.serve(config).await;
    let url = p.url("/notify/acq");
    acq.set_behavior(
        behavior
            .with_outcome_in_body()
            .with_pending(1.0, 200)
            .notify_to(&url, SECRET),
    );
    (acq, p)
}

fn notified(m: &Metrics, result: &str) -> f64 {
    m.get(
        "payroute_notifications_in_total",
        &[("channel", "acq"), ("result", result)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_notification_settles_a_pending_payment_once() {
    let (acq, p) = pending_acquirer(Behavior {
        success_rate: 1.0,
        notify_repeat: 1.0,
        ..Behavior::default()
    })
    .await;
    let r = p.pay("m-1", 1250).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "processing");
    let trade_no = r.header("x-payroute-trade-no").expect("a trade number");
    assert!(acq.wait_settled(Duration::from_secs(10)).await);
    eventually("the notification and its repeat", Duration::from_secs(10), || async {
        let m = p.metrics().await;
        notified(&m, "accepted") == 1.0 && notified(&m, "duplicate") == 1.0
    })
    .await;
    let m = p.metrics().await;
    assert_eq!(m.get("payroute_payments_total", &[("state", "paid")]), 1.0, "{}", m.0);
    assert_eq!(m.get("payroute_payments_total", &[("state", "pending")]), 1.0);
    let record = p.admin_get(&format!("/-/payments/{trade_no}")).await;
    if record.status == 200 {
        assert_eq!(record.json()["state"], "paid", "{}", record.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_wrong_amount_notifications_change_nothing() {
    let (acq, p) = pending_acquirer(Behavior {
        success_rate: 0.0,
        notify_forge: 1.0,
        notify_wrong_amount: 1.0,
        ..Behavior::default()
    })
    .await;
    let r = p.pay("m-1", 1250).await;
    assert_eq!(r.json()["status"], "processing", "{}", r.text());
    assert!(acq.wait_settled(Duration::from_secs(10)).await);
    // The forged copy says paid; the genuine one, sent last, says failed.
    eventually("every copy judged", Duration::from_secs(10), || async {
        let m = p.metrics().await;
        notified(&m, "bad_signature") == 1.0
            && notified(&m, "amount_mismatch") == 1.0
            && notified(&m, "accepted") == 1.0
    })
    .await;
    let m = p.metrics().await;
    assert_eq!(m.get("payroute_payments_total", &[("state", "paid")]), 0.0, "{}", m.0);
    assert_eq!(
        m.get("payroute_payments_total", &[("state", "declined")]),
        1.0,
        "{}",
        m.0
    );
    assert_eq!(acq.counters().forged_accepted, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_answer() {
    let (_acq, p) = pending_acquirer(Behavior::default()).await;
    let sign = |body: &str| {
        use hmac::Mac;
        let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        m.update(body.as_bytes());
        hex::encode(m.finalize().into_bytes())
    };
    let post = |path: &'static str, body: String, sig: Option<String>| {
        let p = &p;
        async move {
            let mut headers = vec![("content-type", "application/json".to_owned())];
            if let Some(s) = sig {
                headers.push(("x-signature", s));
            }
            let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            p.request(http::Method::POST, path, &headers, body).await
        }
    };
    let unknown = json!({"order_id": "nope", "amount": 1, "status": "paid"}).to_string();
    let r = post("/notify/acq", unknown.clone(), Some(sign(&unknown))).await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "unknown_order");
    let r = post("/notify/nobody", unknown.clone(), Some(sign(&unknown))).await;
    assert_eq!(r.status, 404, "{}", r.text());
    let r = post("/notify/acq", unknown.clone(), None).await;
    assert_eq!(r.status, 401, "{}", r.text());
    let r = post("/notify/acq", "{not json".into(), Some(sign("{not json"))).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let huge = format!("{{\"pad\":\"{}\"}}", "x".repeat(70_000));
    let r = post("/notify/acq", huge.clone(), Some(sign(&huge))).await;
    assert_eq!(r.status, 413, "{}", r.text());
    let m = p.metrics().await;
    assert_eq!(m.get("payroute_payments_total", &[("state", "paid")]), 0.0);
    assert_eq!(
        m.get("payroute_requests_total", &[]),
        0.0,
        "notifications are not payments"
    );
}
