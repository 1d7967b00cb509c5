//! The outside probe's findings (issue 18, part 4), each reproduced as the
//! probe sent it, end to end: the built binary, fake acquirers, real
//! sockets. RELIABILITY.md lists them with the answers asserted here.

use http::Method;
use payroute_testkit::*;

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
