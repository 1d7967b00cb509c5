//! The outside probe's findings (issue 18, part 4), each reproduced as the
//! probe sent it, end to end: the built binary, fake acquirers, real
//! sockets. RELIABILITY.md lists them with the answers asserted here.

use std::time::Duration;

use http::Method;
use payroute_mock::{MockAcquirer, Reply};
use payroute_testkit::*;
use serde_json::json;

use crate::PAYROUTE;

/// POSTs `body` as written (not re-serialised: the point is the bytes).
async fn post_raw(p: &Api, path: &str, merchant: &str, body: &str) -> Resp {
    p.request(
        Method::POST,
        path,
        &[("x-merchant-id", merchant), ("content-type", "application/json")],
        body.to_owned(),
    )
    .await
}

/// Finding 1: a duplicated member — first or last, escaped or not, of any
/// of the three facts — is `400 invalid_request` and reaches no acquirer; a
/// refund's doubled amount likewise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_json_members_are_refused_before_any_acquirer() {
    let a = acquirer("a").await;
    let p = PAYROUTE
        .serve(
            Config::new()
                .channel("a", &a.url(), "")
                .merchant("m-1", "max_amount = 1000"),
        )
        .await;
    let o = order_id();
    let bodies = [
        // The probe's body: the acquirer's parser might keep the first.
        format!(r#"{{"amount": 99999999, "currency": "CNY", "order_id": "{o}", "amount": 100}}"#),
        format!(r#"{{"\u0061mount": 99999999, "currency": "CNY", "order_id": "{o}", "amount": 100}}"#),
        format!(r#"{{"amount": 100, "currency": "\u0043NY", "order_id": "{o}", "currency": "USD"}}"#),
        format!(r#"{{"amount": 100, "currency": "CNY", "order_id": "{o}", "order_id": "{o}-other"}}"#),
        format!(r#"{{"amount": 100, "currency": "CNY", "order_id": "{o}", "order\u005fid": "{o}-x"}}"#),
    ];
    for body in &bodies {
        let r = post_raw(&p, "/v1/payments", "m-1", body).await;
        assert_eq!(r.status, 400, "{body} -> {} {}", r.status, r.text());
        r.assert_error(400, "invalid_request");
    }
    assert_eq!(a.hits(), 0, "a body with a doubled member reached the acquirer");

    // A refund's amount given twice never reaches the acquirer either.
    let paid = post_raw(
        &p,
        "/v1/payments",
        "m-1",
        &format!(r#"{{"amount": 100, "currency": "CNY", "order_id": "{o}"}}"#),
    )
    .await;
    paid.assert_ok();
    for body in [
        r#"{"amount": 99999999, "amount": 1}"#,
        r#"{"amount": 1, "\u0061mount": 99999999}"#,
    ] {
        let r = post_raw(&p, &format!("/v1/payments/{o}/refund"), "m-1", body).await;
        assert_eq!(r.status, 400, "{body} -> {} {}", r.status, r.text());
        r.assert_error(400, "invalid_request");
    }
    assert_eq!(
        a.count("POST", REFUND),
        0,
        "a refund with a doubled amount reached the acquirer"
    );
}

const FAST: &str = "timeout_ms = 300\nconnect_timeout_ms = 300";
const SOON: Duration = Duration::from_secs(10);

/// Merchant m-A's payment of order `o` on channel a, paid; then a hangs on
/// payments and answers every order query "paid" (about m-A's payment: it
/// knows no other under `o`).
async fn a_paid_then_hanging(a: &MockAcquirer, p: &Api, o: &str) {
    a.on("POST", PAY, Reply::ok());
    let body = json!({"amount": 500, "currency": "CNY", "order_id": o});
    p.post_payment("m-A", &body, &[]).await.assert_ok();
    a.on("POST", PAY, Reply::hang());
    a.on("GET", ORDER, Reply::ok().with_body(r#"{"status":"paid"}"#));
}

/// Finding 2: merchant m-B's ambiguous attempt under an order id m-A paid
/// on the same channel is never "resolved" by a query or reversal that
/// names the order id alone — it would be m-A's payment. m-B gets the
/// honest 504 with `X-Payroute-Ambiguous`; the sweeper does not ask either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_id_two_merchants_share_is_never_queried_or_reversed() {
    let a = acquirer("a").await;
    let config = Config::new()
        .channel("a", &a.url(), &format!("{FAST}\n{QUERY}\n{REVERSAL}"))
        .merchant("m-A", "")
        .merchant("m-B", "")
        // The sweeper's first visit waits for the payment's deadline.
        .server("deadline_ms = 1000")
        .sweeper("query_after_ms = [200]\nclose_after_ms = 600000");
    let p = PAYROUTE.serve(config).await;
    let o = order_id();
    a_paid_then_hanging(&a, &p, &o).await;

    let body = json!({"amount": 700, "currency": "CNY", "order_id": o});
    let r = p.post_payment("m-B", &body, &[]).await;
    r.assert_error(504, "upstream_timeout");
    assert_eq!(r.ambiguous().as_deref(), Some("a"));
    let logs = p.logs();
    assert!(
        logs.iter().any(|l| l.contains("query not sent")) && logs.iter().any(|l| l.contains("reversal not sent")),
        "{logs:#?}"
    );
    assert_eq!(a.count("GET", ORDER), 0, "m-B's fate was asked by m-A's order id");
    assert_eq!(a.count("POST", REVERSE), 0, "m-A's payment could have been reversed");

    // The sweeper visits m-B's pending payment and does not ask either.
    eventually("the sweeper visited m-B's payment", SOON, || async {
        p.metrics().await.get(
            "payroute_sweeper_queries_total",
            &[("channel", "a"), ("result", "unknown")],
        ) >= 1.0
    })
    .await;
    assert_eq!(a.count("GET", ORDER), 0, "the sweeper asked by a shared order id");
    assert_eq!(a.count("POST", REVERSE), 0);
}

/// Finding 2, the other way: a template naming `{trade_no}` names m-B's
/// payment alone, so it is used even though m-A shares the order id; the
/// payment itself carried the same trade number upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trade_number_template_names_this_payment_whoever_shares_its_order_id() {
    let a = acquirer("a").await;
    let by_trade = r#"query = { method = "GET", path = "/v1/trades/{trade_no}" }"#;
    let config = Config::new()
        .channel("a", &a.url(), &format!("{FAST}\n{by_trade}"))
        .merchant("m-A", "")
        .merchant("m-B", "");
    let p = PAYROUTE.serve(config).await;
    let o = order_id();
    a_paid_then_hanging(&a, &p, &o).await;
    a.on("GET", "/v1/trades/*", Reply::status(404));

    let body = json!({"amount": 700, "currency": "CNY", "order_id": o});
    let r = p.post_payment("m-B", &body, &[]).await;
    let trade_no = r.trade_no().expect("m-B's trade number");
    let queries = a.received_to("GET", "/v1/trades/*");
    assert_eq!(queries.len(), 1, "{}", r.text());
    assert_eq!(queries[0].path, format!("/v1/trades/{trade_no}"));
    let sent = a.received_to("POST", PAY).pop().expect("m-B's payment");
    assert_eq!(sent.header("x-payroute-trade-no").as_deref(), Some(trade_no.as_str()));
    assert_eq!(a.count("GET", ORDER), 0);
}
