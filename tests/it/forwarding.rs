//! What is forwarded to the acquirer and what comes back: same method, path
//! and body bytes; channel headers added; merchant Authorization dropped;
//! upstream status and body returned; payroute headers; [request] knobs.

use http::Method;
use payroute_mock::{MockAcquirer, Reply};
use payroute_testkit::*;
use serde_json::json;

use crate::PAYROUTE;

/// A paying acquirer "a" behind channel `id` (at `path` on it), and
/// merchant m-1.
async fn one_channel(id: &str, path: &str) -> (MockAcquirer, Proxy) {
    let a = acquirer("a").await;
    let p = PAYROUTE.serve(Config::single(id, &format!("{}{path}", a.url()))).await;
    (a, p)
}

const KEY: &str = "merchant-key-123";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_path_and_method_pass_through_untouched() {
    let a = acquirer("a").await;
    let config = Config::new()
        .channel(
            "a",
            &a.url(),
            "headers = { \"authorization\" = \"Bearer chan-secret\", \"x-acq-key\" = \"k1\" }",
        )
        .merchant("m-1", &format!("api_key_sha256 = \"{}\"", sha256_hex(KEY)));
    let p = PAYROUTE.serve(config).await;
    // Odd spacing, key order, unicode, nested data, a float: byte for byte.
    let oid = order_id();
    let raw = format!(
        "{{ \"order_id\":\"{oid}\",  \"amount\" : 1234,\n\"currency\":\"CNY\",\"nested\":{{\"b\":1,\"a\":[1,2,{{\"z\":null}}]}},\"note\":\"支付 ✓ \\u00e9\",\"rate\":1.50 }}"
    );
    let auth = format!("Bearer {KEY}");
    let r = p
        .request(
            Method::POST,
            "/v1/payments",
            &[
                ("x-merchant-id", "m-1"),
                ("content-type", "application/json"),
                ("authorization", auth.as_str()),
            ],
            raw.clone(),
        )
        .await;
    r.assert_ok();
    let fwd = a.last_received().unwrap();
    assert_eq!(fwd.method, "POST");
    assert_eq!(fwd.path, "/v1/payments");
    assert_eq!(
        String::from_utf8_lossy(&fwd.body),
        raw,
        "the body was modified on the way"
    );
    // Channel headers added; the merchant's key never forwarded.
    let auths: Vec<_> = fwd.headers.get_all("authorization").iter().collect();
    assert_eq!(auths.len(), 1, "authorization headers: {auths:?}");
    assert_eq!(auths[0], "Bearer chan-secret");
    assert_eq!(fwd.header("x-acq-key").as_deref(), Some("k1"));
    assert!(
        !fwd.headers.values().any(|v| v.to_str().is_ok_and(|s| s.contains(KEY))),
        "the merchant key leaked to the acquirer: {:?}",
        fwd.headers
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merchant_authorization_is_dropped_even_without_channel_headers() {
    let (a, p) = one_channel("a", "").await;
    let r = p
        .post_payment(
            "m-1",
            &payment_body(100, "CNY"),
            &[("authorization", "Bearer whatever-the-merchant-sends")],
        )
        .await;
    r.assert_ok();
    assert!(a.last_received().unwrap().header("authorization").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_status_and_body_come_back_with_payroute_headers() {
    let (a, p) = one_channel("acq-one", "").await;
    a.set_behavior(Reply::status(201).with_body(r#"{"id":"pay_123","status":"authorized","amount":1234}"#));
    let r = p.pay("m-1", 1234).await;
    assert_eq!(r.status, 201);
    assert_eq!(r.text(), r#"{"id":"pay_123","status":"authorized","amount":1234}"#);
    assert_eq!(r.channel().as_deref(), Some("acq-one"));
    assert_eq!(r.attempts(), Some(1));
    assert!(r.request_id().is_some_and(|s| !s.is_empty()));
    assert_eq!(r.header("content-type").as_deref(), Some("application/json"));
}

/// Whether `s` looks like a trade number: 22 characters of `[0-9A-Za-z]`.
fn is_trade_no(s: &str) -> bool {
    s.len() == 22 && s.bytes().all(|c| c.is_ascii_alphanumeric())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_about_a_payment_carries_its_trade_number() {
    let (a, p) = one_channel("a", "").await;
    // A success; the merchant's own x-payroute-trade-no is not forwarded.
    let forged = "forgedByTheMerchant000";
    let body = payment_body(100, "CNY");
    let paid = p.post_payment("m-1", &body, &[("x-payroute-trade-no", forged)]).await;
    paid.assert_ok();
    let paid_no = paid.trade_no().expect("X-Payroute-Trade-No on a success");
    assert!(is_trade_no(&paid_no), "trade number {paid_no:?}");
    assert_eq!(paid.headers.get_all("x-payroute-trade-no").iter().count(), 1);
    let fwd = a.last_received().expect("the payment reached a");
    let sent: Vec<_> = fwd.headers.get_all("x-payroute-trade-no").iter().collect();
    assert_eq!(sent, [paid_no.as_str()], "what the acquirer got as x-payroute-trade-no");
    assert_ne!(paid_no, forged);

    // A decline: another payment, another number.
    a.set_behavior(Reply::status(402).with_body(r#"{"declined":true}"#));
    let declined_body = payment_body(100, "CNY");
    let declined = p.post_payment("m-1", &declined_body, &[]).await;
    assert_eq!(declined.status, 402, "{}", declined.text());
    let declined_no = declined.trade_no().expect("X-Payroute-Trade-No on a decline");
    assert!(is_trade_no(&declined_no), "trade number {declined_no:?}");
    assert_ne!(declined_no, paid_no, "two payments, one trade number");
    let fwd = a.last_received().expect("the payment reached a");
    assert_eq!(fwd.header("x-payroute-trade-no"), Some(declined_no.clone()));

    // Replays carry the first answer's number.
    let replay = p.post_payment("m-1", &body, &[]).await;
    assert_eq!(replay.header("x-payroute-replayed").as_deref(), Some("true"));
    assert_eq!(replay.trade_no(), Some(paid_no));
    let replay = p.post_payment("m-1", &declined_body, &[]).await;
    assert_eq!(replay.header("x-payroute-replayed").as_deref(), Some("true"));
    assert_eq!(replay.trade_no(), Some(declined_no));
    assert_eq!(a.hits(), 2, "a replay reached the acquirer");

    // A refusal is no payment: no number.
    let refused = p.pay("m-nobody", 100).await;
    refused.assert_error(403, "unknown_merchant");
    assert_eq!(refused.trade_no(), None, "a refusal carries a trade number");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acquirers_payroute_headers_never_reach_the_merchant() {
    let acq = headers_acquirer(&[
        ("x-payroute-channel", "evil"),
        ("x-payroute-ambiguous", "evil"),
        ("x-payroute-trade-no", "evil"),
        ("x-acquirer-note", "kept"),
    ])
    .await;
    let p = PAYROUTE.serve(Config::single("a", &acq.url())).await;
    let r = p.pay("m-1", 100).await;
    r.assert_ok();
    assert_eq!(acq.hits(), 1);
    let channels: Vec<_> = r.headers.get_all("x-payroute-channel").iter().collect();
    assert_eq!(channels, ["a"], "X-Payroute-Channel the merchant got");
    assert_eq!(r.ambiguous(), None, "the acquirer's X-Payroute-Ambiguous came through");
    let trade_nos: Vec<_> = r.headers.get_all("x-payroute-trade-no").iter().collect();
    assert_eq!(trade_nos.len(), 1, "{trade_nos:?}");
    assert_ne!(trade_nos[0], "evil", "the acquirer's X-Payroute-Trade-No came through");
    // Other headers of the acquirer's pass.
    assert_eq!(r.header("x-acquirer-note").as_deref(), Some("kept"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_url_path_is_a_prefix() {
    let (a, p) = one_channel("a", "/gateway").await;
    p.pay("m-1", 100).await.assert_ok();
    assert_eq!(a.last_received().unwrap().path, "/gateway/v1/payments");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_body_within_the_limit_passes_untouched() {
    let (a, p) = one_channel("a", "").await;
    let items: Vec<_> = (0..450)
        .map(|i| json!({"sku": format!("sku-{i:05}"), "qty": i, "name": "widget ".repeat(5)}))
        .collect();
    let body = json!({"amount": 100, "currency": "CNY", "order_id": order_id(), "items": items});
    let text = body.to_string();
    assert!(text.len() > 30_000 && text.len() < 65_536, "{}", text.len());
    p.post_payment("m-1", &body, &[]).await.assert_ok();
    assert_eq!(a.last_received().unwrap().body, text.as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_section_knobs_are_honoured() {
    let a = acquirer("a").await;
    let config = Config::new()
        .request(
            "merchant_header = \"x-shop\"\n\
             amount_pointer = \"/payment/amount_minor\"\n\
             currency_pointer = \"/payment/ccy\"\n\
             order_id_pointer = \"/ref\"\n\
             payment_paths = [\"/api/charge\", \"/api/v2/charge\"]",
        )
        .channel("a", &a.url(), "currencies = [\"USD\"]")
        .merchant("shop-9", "max_amount = 5000");
    let p = PAYROUTE.serve(config).await;
    let body = |amount: i64, ccy: &str| {
        json!({"ref": order_id(), "payment": {"amount_minor": amount, "ccy": ccy}}).to_string()
    };
    let h = [("x-shop", "shop-9"), ("content-type", "application/json")];
    for path in ["/api/charge", "/api/v2/charge"] {
        let r = p.request(Method::POST, path, &h, body(100, "USD")).await;
        r.assert_ok();
        assert_eq!(a.last_received().unwrap().path, path);
    }
    // The amount is read at the configured pointer.
    p.request(Method::POST, "/api/charge", &h, body(6000, "USD"))
        .await
        .assert_error(422, "amount_limit_exceeded");
    // ...and so is the currency.
    p.request(Method::POST, "/api/charge", &h, body(100, "CNY"))
        .await
        .assert_error(422, "no_eligible_channel");
    // Missing at the pointer: invalid.
    let missing = json!({"ref": order_id(), "amount": 100, "currency": "USD"}).to_string();
    p.request(Method::POST, "/api/charge", &h, missing)
        .await
        .assert_error(400, "invalid_request");
    // The default path is not a payment path any more.
    p.request(Method::POST, "/v1/payments", &h, body(100, "USD"))
        .await
        .assert_error(404, "unknown_route");
    // The merchant is read from the configured header only.
    let r = p
        .request(
            Method::POST,
            "/api/charge",
            &[("x-merchant-id", "shop-9"), ("content-type", "application/json")],
            body(100, "USD"),
        )
        .await;
    assert!(
        r.status >= 400 && r.status < 500,
        "merchant taken from the wrong header: {}",
        r.status
    );
    assert_eq!(a.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_client_can_send_many_payments() {
    let (a, p) = one_channel("a", "").await;
    // A pooling client: requests share connections to the proxy.
    let client: HttpClient =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    for i in 0..30 {
        let body = if i % 5 == 4 {
            "{broken".to_string() // an error answer must not break the connection
        } else {
            payment_body(100, "CNY").to_string()
        };
        let r = send(
            &client,
            Method::POST,
            &p.url("/v1/payments"),
            &[("x-merchant-id", "m-1"), ("content-type", "application/json")],
            body,
        )
        .await;
        if i % 5 == 4 {
            r.assert_error(400, "invalid_request");
        } else {
            r.assert_ok();
        }
    }
    assert_eq!(a.hits(), 24);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_channel_multiplexes_payments_over_one_connection() {
    let a = acquirer("a").await;
    let config = Config::single("a", &a.url())
        .server("workers = 2")
        .amend("a", "h2c = true");
    let p = PAYROUTE.serve(config).await;
    p.pay("m-1", 100).await.assert_ok(); // the connection is up
    let mut payments = tokio::task::JoinSet::new();
    for _ in 0..40 {
        let api = Api::clone(&p);
        payments.spawn(async move { api.pay("m-1", 100).await });
    }
    while let Some(r) = payments.join_next().await {
        r.unwrap().assert_ok();
    }
    let requests = a.received();
    assert_eq!(requests.len(), 41);
    assert!(
        requests.iter().all(|r| r.version == http::Version::HTTP_2),
        "an h2c channel got HTTP/1 requests"
    );
    // 41 payments, 40 of them concurrent: one multiplexed connection per
    // worker at most (a worker's payments use its own connections).
    let connections = a.counters().connections;
    assert!(
        connections <= 2,
        "payments were not multiplexed: {connections} connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_channel_speaks_http1() {
    let (a, p) = one_channel("a", "").await;
    p.pay("m-1", 100).await.assert_ok();
    assert_eq!(a.last_received().unwrap().version, http::Version::HTTP_11);
}
