//! Faults switched at run time (`POST /-/fault`) and the charge ledger
//! (`GET /-/charges`), over real sockets.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};

use super::{client, get, post, send, url};
use crate::{Behavior, Fault, FaultKind, MockAcquirer};

async fn ledger_mock(behavior: Behavior) -> MockAcquirer {
    MockAcquirer::builder()
        .behavior(behavior)
        .ledger()
        .start()
        .await
        .expect("bind mock")
}

fn paid_with_trade_no(mock: &MockAcquirer, order: &str, trade_no: &str) -> Request<Full<Bytes>> {
    Request::post(url(mock, "/v1/payments"))
        .header("x-payroute-trade-no", trade_no)
        .body(Full::new(Bytes::from(format!(
            r#"{{"order_id":"{order}","amount":1250,"currency":"CNY"}}"#
        ))))
        .expect("request")
}

#[tokio::test]
async fn the_ledger_lists_every_charge_and_marks_reversals() {
    let mock = ledger_mock(Behavior::default()).await;
    let client = client();
    assert_eq!(
        send(&client, paid_with_trade_no(&mock, "o-1", "T1")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        send(&client, paid_with_trade_no(&mock, "o-2", "T2")).await.0,
        StatusCode::OK
    );
    // The same order charged again under the same trade number: the book
    // keeps one entry, the ledger both charges.
    assert_eq!(
        send(&client, paid_with_trade_no(&mock, "o-1", "T1")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        send(&client, post(&url(&mock, "/v1/payments/T2/reverse"), "")).await.0,
        StatusCode::OK
    );
    let (status, rows) = send(&client, get(&url(&mock, "/-/charges"))).await;
    assert_eq!(status, StatusCode::OK);
    let rows = rows.as_array().expect("a list").clone();
    let seen: Vec<(&str, &str, bool)> = rows
        .iter()
        .map(|r| {
            (
                r["order_id"].as_str().unwrap_or_default(),
                r["trade_no"].as_str().unwrap_or_default(),
                r["reversed_ms"].is_i64(),
            )
        })
        .collect();
    assert_eq!(seen, [("o-1", "T1", false), ("o-2", "T2", true), ("o-1", "T1", false)]);
    assert_eq!(rows[0]["amount"], 1250);
    assert_eq!(mock.charges().len(), 3);
    // Without a ledger: 404, nothing kept.
    let plain = super::mock(Behavior::default()).await;
    assert_eq!(
        send(&client, get(&url(&plain, "/-/charges"))).await.0,
        StatusCode::NOT_FOUND
    );
    assert!(plain.charges().is_empty());
}

#[tokio::test]
async fn a_pending_payment_is_charged_when_decided_paid() {
    let mock = ledger_mock(Behavior::default().with_outcome_in_body().with_pending(1.0, 50)).await;
    let client = client();
    let (_, body) = send(&client, paid_with_trade_no(&mock, "o-p", "TP")).await;
    assert_eq!(body["status"], "processing");
    assert!(mock.charges().is_empty(), "not charged while processing");
    assert!(mock.wait_settled(Duration::from_secs(5)).await);
    let charges = mock.charges();
    assert_eq!(charges.len(), 1);
    assert_eq!(charges[0].trade_no.as_deref(), Some("TP"));
}

#[tokio::test]
async fn storms_and_hangs_charge_nothing_and_count() {
    let mock = ledger_mock(Behavior::default()).await;
    let client = client();
    let (status, _) = send(
        &client,
        Request::post(url(&mock, "/-/fault"))
            .body(Full::new(Bytes::from_static(br#"{"kind":"storm"}"#)))
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = send(&client, paid_with_trade_no(&mock, "o-s", "TS")).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("failed"))
    );
    // Queries and reversals are not faulted unless asked.
    assert_eq!(
        send(&client, get(&url(&mock, "/v1/payments/TS"))).await.0,
        StatusCode::NOT_FOUND
    );
    mock.set_fault(Fault {
        kind: FaultKind::Hang,
        hold_ms: 100,
        ..Fault::default()
    })
    .expect("a valid fault");
    let hung = client.request(paid_with_trade_no(&mock, "o-h", "TH")).await;
    assert!(hung.is_err(), "held, then dropped unanswered");
    assert!(mock.charges().is_empty());
    let (_, state) = send(&client, get(&url(&mock, "/-/fault"))).await;
    assert_eq!(state["fault"]["kind"], "hang");
    assert_eq!(
        (state["faulted"]["storm"].as_u64(), state["faulted"]["hang"].as_u64()),
        (Some(1), Some(1))
    );
    // Off again: paid.
    mock.set_fault(Fault::default()).expect("none");
    assert_eq!(
        send(&client, paid_with_trade_no(&mock, "o-ok", "TOK")).await.0,
        StatusCode::OK
    );
    assert_eq!(mock.charges().len(), 1);
    // A bad fault is refused and changes nothing.
    let (status, _) = send(
        &client,
        Request::post(url(&mock, "/-/fault"))
            .body(Full::new(Bytes::from_static(br#"{"kind":"late","rate":2}"#)))
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(mock
        .set_fault(Fault {
            rate: -1.0,
            ..Fault::default()
        })
        .is_err());
}

#[tokio::test]
async fn a_reset_charges_then_cuts_the_answer() {
    let mock = ledger_mock(Behavior::default()).await;
    mock.set_fault(Fault {
        kind: FaultKind::Reset,
        ..Fault::default()
    })
    .expect("a valid fault");
    let client = client();
    // The head arrives; the body is cut off.
    let cut = match client.request(paid_with_trade_no(&mock, "o-r", "TR")).await {
        Ok(resp) => resp.into_body().collect().await.is_err(),
        Err(_) => true,
    };
    assert!(cut, "the answer never arrives whole");
    assert_eq!(mock.charges().len(), 1, "charged all the same");
    // The query (not faulted) says it was paid.
    let (status, body) = send(&client, get(&url(&mock, "/v1/payments/TR"))).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("paid")));
}

#[tokio::test]
async fn a_late_answer_comes_after_the_charge() {
    let mock = ledger_mock(Behavior::default()).await;
    // Far later than this test lasts: the answer cannot come while it runs.
    mock.set_fault(Fault {
        kind: FaultKind::Late,
        late_ms: 600_000,
        ..Fault::default()
    })
    .expect("a valid fault");
    let client = client();
    let late = tokio::spawn({
        let client = client.clone();
        let request = paid_with_trade_no(&mock, "o-l", "TL");
        async move { client.request(request).await.map(|r| r.status()) }
    });
    // Charged first (waited for, not timed)...
    while mock.charges().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // ...answered later: not yet.
    assert!(!late.is_finished());
    late.abort();
    // The fault off, the next payment is answered at once.
    mock.set_fault(Fault::default()).expect("none");
    let (status, body) = send(&client, paid_with_trade_no(&mock, "o-l2", "TL2")).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("paid")));
    assert_eq!(mock.charges().len(), 2);
}
