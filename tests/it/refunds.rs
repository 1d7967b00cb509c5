//! Follow-ups that move money: a refund honours `Idempotency-Key` (409 /
//! replay / 422 like a payment) and may never exceed what its payment still
//! has, even when two race.

use http::Method;
use payroute_mock::Reply;
use payroute_testkit::*;

use crate::PAYROUTE;

async fn refund(p: &Api, order: &str, amount: i64, key: Option<&str>) -> Resp {
    let mut h = vec![("x-merchant-id", "m-1"), ("content-type", "application/json")];
    if let Some(k) = key {
        h.push(("idempotency-key", k));
    }
    let body = format!(r#"{{"amount": {amount}}}"#);
    p.request(Method::POST, &format!("/v1/payments/{order}/refund"), &h, body)
        .await
}

/// A paid payment of 1000 on acquirer "a"; its order id.
async fn paid(p: &Api) -> (String, String) {
    let body = payment_body(1000, "CNY");
    let r = p.post_payment("m-1", &body, &[]).await;
    r.assert_ok();
    let order = body["order_id"].as_str().expect("order id").to_owned();
    (order, r.header("x-payroute-trade-no").expect("trade number"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_refund_reaches_the_acquirer_once() {
    let a = acquirer("a").await;
    let p = PAYROUTE.serve(Config::single("a", &a.url())).await;
    let (order, trade_no) = paid(&p).await;
    let first = refund(&p, &order, 400, Some("rf-1")).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.header("x-payroute-trade-no").as_deref(), Some(trade_no.as_str()));
    let again = refund(&p, &order, 400, Some("rf-1")).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.header("x-payroute-replayed").as_deref(), Some("true"));
    assert_eq!(
        a.count("POST", REFUND),
        1,
        "a retried refund reached the acquirer twice"
    );
    // The same key with another body is refused, reaching nobody.
    refund(&p, &order, 300, Some("rf-1"))
        .await
        .assert_error(422, "idempotency_key_reused");
    assert_eq!(a.count("POST", REFUND), 1);
    // The acquirer saw the payment's trade number.
    let got = a.received_to("POST", REFUND);
    assert_eq!(got[0].header("x-payroute-trade-no").as_deref(), Some(trade_no.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_never_exceed_the_payment() {
    let a = acquirer("a").await;
    let p = PAYROUTE.serve(Config::single("a", &a.url())).await;
    let (order, _) = paid(&p).await;
    refund(&p, &order, 1001, None)
        .await
        .assert_error(422, "amount_limit_exceeded");
    assert_eq!(
        a.count("POST", REFUND),
        0,
        "a refund over the payment reached the acquirer"
    );
    assert_eq!(refund(&p, &order, 600, None).await.status, 200);
    // 400 left: 500 is too much, 400 empties it.
    refund(&p, &order, 500, None)
        .await
        .assert_error(422, "amount_limit_exceeded");
    assert_eq!(refund(&p, &order, 400, None).await.status, 200);
    refund(&p, &order, 1, None)
        .await
        .assert_error(422, "amount_limit_exceeded");
    let m = p.metrics().await;
    assert_eq!(
        m.get("payroute_payments_total", &[("state", "refunded")]),
        1.0,
        "{}",
        m.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_refunds_together_stay_within_the_payment() {
    let a = acquirer("a").await;
    a.on(
        "POST",
        REFUND,
        Reply::ok().with_delay(std::time::Duration::from_millis(100)),
    );
    let p = PAYROUTE.serve(Config::single("a", &a.url())).await;
    let (order, _) = paid(&p).await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let api = p.api.clone();
        let order = order.clone();
        tasks.push(tokio::spawn(
            async move { refund(&api, &order, 300, None).await.status },
        ));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.expect("task") {
            200 => ok += 1,
            422 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(ok, 3, "3 x 300 fit in 1000, a fourth does not");
    assert_eq!(a.count("POST", REFUND), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_refund_gives_its_amount_back() {
    let a = acquirer("a").await;
    let p = PAYROUTE.serve(Config::single("a", &a.url())).await;
    let (order, _) = paid(&p).await;
    a.on("POST", REFUND, Reply::status(402));
    assert_eq!(refund(&p, &order, 1000, None).await.status, 402);
    a.on("POST", REFUND, Reply::ok());
    assert_eq!(
        refund(&p, &order, 1000, None).await.status,
        200,
        "the refused hold was released"
    );
}
