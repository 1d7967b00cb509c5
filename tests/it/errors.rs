//! Every error the proxy itself returns (contract table, minus the
//! idempotency/fleet rows): status, JSON `error.code`, request id, and that
//! a refusal never reaches an acquirer.

use std::time::Duration;

use http::Method;
use payroute_mock::{MockAcquirer, Reply};
use payroute_testkit::*;
use serde_json::json;

use crate::PAYROUTE;

const KEY: &str = "sk_test_4f8a1c";

/// One healthy acquirer behind channel "a" (CNY only), a merchant without
/// a key (plus `merchant_extra`) and one with a key.
async fn setup(merchant_extra: &str) -> (MockAcquirer, Proxy) {
    let acq = acquirer("a").await;
    let config = Config::new()
        .server("max_body_bytes = 1024")
        .channel("a", &acq.url(), "currencies = [\"CNY\"]")
        .merchant("m-1", merchant_extra)
        .merchant("m-key", &format!("api_key_sha256 = \"{}\"", sha256_hex(KEY)));
    let p = PAYROUTE.serve(config).await;
    (acq, p)
}

/// Posts each body for m-1: every one is 400 `invalid_request`, and none
/// reaches the acquirer.
async fn assert_invalid(p: &Proxy, acq: &MockAcquirer, bodies: &[serde_json::Value]) {
    for body in bodies {
        let r = p.post_payment("m-1", body, &[]).await;
        assert_eq!(r.status, 400, "body {body} -> {} {}", r.status, r.text());
        r.assert_error(400, "invalid_request");
    }
    assert_eq!(acq.hits(), 0, "acquirer must receive nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_json_is_400() {
    let (acq, p) = setup("").await;
    for body in ["{not json", "", "[1,2,3]", "\"just a string\""] {
        let r = p
            .request(
                Method::POST,
                "/v1/payments",
                &[("x-merchant-id", "m-1"), ("content-type", "application/json")],
                body.to_string(),
            )
            .await;
        r.assert_error(400, "invalid_request");
    }
    assert_eq!(acq.hits(), 0, "acquirer must receive nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_fields_are_400() {
    let (acq, p) = setup("").await;
    let bodies = [
        json!({"currency": "CNY", "order_id": order_id()}),
        json!({"amount": 100, "order_id": order_id()}),
        json!({"amount": 100, "currency": "CNY"}),
        json!({}),
    ];
    assert_invalid(&p, &acq, &bodies).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_types_are_400() {
    let (acq, p) = setup("").await;
    let bodies = [
        json!({"amount": "100", "currency": "CNY", "order_id": order_id()}),
        json!({"amount": 10.5, "currency": "CNY", "order_id": order_id()}),
        json!({"amount": null, "currency": "CNY", "order_id": order_id()}),
        json!({"amount": 100, "currency": 156, "order_id": order_id()}),
        json!({"amount": 100, "currency": "CNY", "order_id": {"id": 1}}),
        json!({"amount": 1e30, "currency": "CNY", "order_id": order_id()}),
        json!({"amount": [100], "currency": "CNY", "order_id": order_id()}),
    ];
    assert_invalid(&p, &acq, &bodies).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_positive_amount_is_400() {
    let (acq, p) = setup("").await;
    for amount in [0, -1, -5000] {
        let r = p.pay("m-1", amount).await;
        r.assert_error(400, "invalid_request");
    }
    assert_eq!(acq.hits(), 0, "acquirer must receive nothing");
    // Sanity: the same merchant with a positive amount goes through.
    p.pay("m-1", 1).await.assert_ok();
    assert_eq!(acq.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_given_twice_is_400() {
    // Which of the two an acquirer would read is its parser's choice: the
    // proxy and the acquirer could disagree on the amount.
    let (acq, p) = setup("").await;
    let oid = order_id();
    let bodies = [
        format!(r#"{{"amount":100,"amount":100000,"currency":"CNY","order_id":"{oid}"}}"#),
        format!(r#"{{"amount":100,"currency":"CNY","order_id":"{oid}","meta":{{"k":1,"k":2}}}}"#),
        format!(r#"{{"amount":100,"currency":"CNY","order_id":"{oid}","items":[{{"sku":"a","sku":"b"}}]}}"#),
        // The same name once escaped: twice after unescaping.
        format!(r#"{{"amount":100,"\u0061mount":100000,"currency":"CNY","order_id":"{oid}"}}"#),
    ];
    for body in bodies {
        let r = p
            .request(
                Method::POST,
                "/v1/payments",
                &[("x-merchant-id", "m-1"), ("content-type", "application/json")],
                body.clone(),
            )
            .await;
        assert_eq!(r.status, 400, "{body} -> {} {}", r.status, r.text());
        r.assert_error(400, "invalid_request");
    }
    assert_eq!(acq.hits(), 0, "acquirer must receive nothing");
    // The same payment, each member once, goes through.
    let body = format!(r#"{{"amount":100,"currency":"CNY","order_id":"{oid}","meta":{{"k":1}}}}"#);
    let r = p
        .request(
            Method::POST,
            "/v1/payments",
            &[("x-merchant-id", "m-1"), ("content-type", "application/json")],
            body,
        )
        .await;
    r.assert_ok();
    assert_eq!(acq.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_merchant_ids_or_idempotency_keys_are_400() {
    let (acq, p) = setup("").await;
    let cases: [&[(&str, &str)]; 3] = [
        &[("x-merchant-id", "m-1"), ("x-merchant-id", "m-key")],
        &[("x-merchant-id", "m-1"), ("x-merchant-id", "m-1")],
        &[
            ("x-merchant-id", "m-1"),
            ("idempotency-key", "k-1"),
            ("idempotency-key", "k-2"),
        ],
    ];
    for headers in cases {
        let mut h = vec![("content-type", "application/json")];
        h.extend_from_slice(headers);
        let r = p
            .request(Method::POST, "/v1/payments", &h, payment_body(100, "CNY").to_string())
            .await;
        assert_eq!(r.status, 400, "{headers:?} -> {} {}", r.status, r.text());
        r.assert_error(400, "invalid_request");
    }
    assert_eq!(acq.hits(), 0, "acquirer must receive nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_missing_or_wrong_is_401() {
    let (acq, p) = setup("").await;
    let body = payment_body(100, "CNY");
    let r = p.post_payment("m-key", &body, &[]).await;
    r.assert_error(401, "unauthorized");
    let wrong = format!("Bearer {KEY}x");
    let r = p
        .post_payment("m-key", &body, &[("authorization", wrong.as_str())])
        .await;
    r.assert_error(401, "unauthorized");
    let r = p.post_payment("m-key", &body, &[("authorization", KEY)]).await;
    r.assert_error(401, "unauthorized");
    assert_eq!(acq.hits(), 0, "acquirer must receive nothing");

    // The right key passes, and is never forwarded.
    let good = format!("Bearer {KEY}");
    let r = p
        .post_payment("m-key", &body, &[("authorization", good.as_str())])
        .await;
    r.assert_ok();
    assert_eq!(acq.hits(), 1);
    let fwd = acq.last_received().unwrap();
    assert!(
        fwd.header("authorization").is_none(),
        "merchant Authorization was forwarded: {:?}",
        fwd.header("authorization")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_merchant_is_403() {
    let (acq, p) = setup("").await;
    let r = p.pay("m-nobody", 100).await;
    r.assert_error(403, "unknown_merchant");
    assert_eq!(acq.hits(), 0, "acquirer must receive nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_merchant_header_is_refused() {
    let (acq, p) = setup("").await;
    let r = p
        .request(
            Method::POST,
            "/v1/payments",
            &[("content-type", "application/json")],
            payment_body(100, "CNY").to_string(),
        )
        .await;
    assert!(
        r.status == 400 || r.status == 401 || r.status == 403,
        "a payment without merchant id must be refused, got {} {}",
        r.status,
        r.text()
    );
    assert!(r.error_code().is_some(), "not a proxy error: {}", r.text());
    assert!(r.request_id().is_some());
    assert_eq!(acq.hits(), 0, "acquirer must receive nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_route_is_404() {
    let (acq, p) = setup("").await;
    let body = payment_body(100, "CNY").to_string();
    let h = [("x-merchant-id", "m-1"), ("content-type", "application/json")];
    for (method, path) in [
        (Method::POST, "/v1/other"),
        (Method::POST, "/"),
        (Method::GET, "/v1/payments"),
        (Method::DELETE, "/v1/payments"),
    ] {
        let r = p.request(method.clone(), path, &h, body.clone()).await;
        assert_eq!(r.status, 404, "{method} {path} -> {} {}", r.status, r.text());
        r.assert_error(404, "unknown_route");
    }
    assert_eq!(acq.hits(), 0, "acquirer must receive nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_max_body_bytes_is_413() {
    let (acq, p) = setup("").await;
    let body = json!({
        "amount": 100, "currency": "CNY", "order_id": order_id(),
        "padding": "x".repeat(4096),
    });
    let r = p.post_payment("m-1", &body, &[]).await;
    r.assert_error(413, "payload_too_large");
    assert_eq!(acq.hits(), 0, "acquirer must receive nothing");
    // Just under the limit is fine.
    let body = json!({
        "amount": 100, "currency": "CNY", "order_id": order_id(),
        "padding": "x".repeat(800),
    });
    assert!(body.to_string().len() < 1024);
    p.post_payment("m-1", &body, &[]).await.assert_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_body_over_max_body_bytes_is_413() {
    // No Content-Length: the limit must hold while streaming too.
    let (acq, p) = setup("").await;
    let body = json!({
        "amount": 100, "currency": "CNY", "order_id": order_id(),
        "padding": "x".repeat(4096),
    })
    .to_string();
    let mut req = format!(
        "POST /v1/payments HTTP/1.1\r\nhost: {}\r\nx-merchant-id: m-1\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\n\
         connection: close\r\n\r\n",
        p.listen
    );
    for chunk in body.as_bytes().chunks(500) {
        req.push_str(&format!("{:x}\r\n", chunk.len()));
        req.push_str(std::str::from_utf8(chunk).unwrap());
        req.push_str("\r\n");
    }
    req.push_str("0\r\n\r\n");
    let answer = raw_http(p.listen, req.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "chunked oversized body: {answer:?}");
    assert!(answer.contains("payload_too_large"), "{answer}");
    assert_eq!(acq.hits(), 0, "acquirer must receive nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amount_over_max_amount_is_422() {
    let (acq, p) = setup("max_amount = 1000").await;
    p.pay("m-1", 1001).await.assert_error(422, "amount_limit_exceeded");
    assert_eq!(acq.hits(), 0, "acquirer must receive nothing");
    p.pay("m-1", 1000).await.assert_ok();
    assert_eq!(acq.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_daily_limit_is_422() {
    let (acq, p) = setup("daily_limit = 1000").await;
    p.pay("m-1", 600).await.assert_ok();
    p.pay("m-1", 600).await.assert_error(422, "daily_limit_exceeded");
    assert_eq!(acq.hits(), 1, "the refused payment must not reach the acquirer");
    // Exactly up to the limit is accepted.
    p.pay("m-1", 400).await.assert_ok();
    p.pay("m-1", 1).await.assert_error(422, "daily_limit_exceeded");
    assert_eq!(acq.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_channel_takes_the_currency_is_422() {
    let (acq, p) = setup("").await;
    p.pay_ccy("m-1", 100, "EUR")
        .await
        .assert_error(422, "no_eligible_channel");
    assert_eq!(acq.hits(), 0, "acquirer must receive nothing");
    p.pay_ccy("m-1", 100, "CNY").await.assert_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_rate_is_429_with_retry_after() {
    let (acq, p) = setup("rate_per_sec = 1\nburst = 2").await;
    let mut ok = 0;
    let mut limited = Vec::new();
    for _ in 0..6 {
        let r = p.pay("m-1", 100).await;
        if r.status == 429 {
            limited.push(r);
        } else {
            r.assert_ok();
            ok += 1;
        }
    }
    assert!(!limited.is_empty(), "no 429 after 6 rapid payments at 1/s burst 2");
    assert!(ok >= 2, "the burst of 2 must pass, only {ok} did");
    for r in &limited {
        r.assert_error(429, "rate_limited");
        let ra = r.header("retry-after").expect("429 without Retry-After");
        let secs: u64 = ra
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("Retry-After is not whole seconds: {ra:?}"));
        assert!((1..=2).contains(&secs), "Retry-After {secs}s at 1 payment/s");
    }
    assert_eq!(acq.hits(), ok, "rate-limited payments must not reach the acquirer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_attempts_failed_is_502() {
    let (acq, p) = setup("").await;
    acq.set_behavior(Reply::status(503));
    let r = p.pay("m-1", 100).await;
    r.assert_error(502, "upstream_failed");
    assert_eq!(acq.hits(), 1, "one channel: exactly one attempt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connection_only_is_502() {
    let p = PAYROUTE.serve(Config::single("dead", &refused_url())).await;
    p.pay("m-1", 100).await.assert_error(502, "upstream_failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_channels_disabled_is_503() {
    let acq = acquirer("a").await;
    let p = PAYROUTE
        .serve(Config::single("a", &acq.url()).amend("a", "enabled = false"))
        .await;
    p.pay("m-1", 100).await.assert_error(503, "no_channel_available");
    assert_eq!(acq.hits(), 0, "acquirer must receive nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_attempt_timed_out_is_504() {
    let acq = acquirer_with("a", Reply::hang()).await;
    let p = PAYROUTE
        .serve(Config::single("a", &acq.url()).amend("a", "timeout_ms = 300"))
        .await;
    let r = p.pay("m-1", 100).await;
    r.assert_error(504, "upstream_timeout");
    assert_eq!(acq.hits(), 1);
    assert!(
        r.elapsed < Duration::from_secs(5),
        "a 300 ms timeout took {:?}",
        r.elapsed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_unique_on_every_response() {
    let (_acq, p) = setup("").await;
    let mut ids = std::collections::HashSet::new();
    for _ in 0..3 {
        let r = p.pay("m-1", 100).await;
        r.assert_ok();
        ids.insert(r.request_id().unwrap());
        let r = p.pay("m-nobody", 100).await;
        ids.insert(r.request_id().expect("request id on 403"));
        let r = p.request(Method::GET, "/nowhere", &[], bytes::Bytes::new()).await;
        ids.insert(r.request_id().expect("request id on 404"));
    }
    assert_eq!(ids.len(), 9, "request ids must be unique: {ids:?}");
}
