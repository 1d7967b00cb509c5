//! Never twice: idempotency (concurrent duplicates, replays, reused keys,
//! refusals that store nothing, expiry, daily limits), follow-ups pinned to
//! the channel that gave the order's final answer, and ambiguous attempts
//! resolved by query and reversal — including shutdown with a reversal
//! still pending. Everything runs against the built binary and real fake
//! acquirers that record what reached them.

use std::fmt::Display;
use std::time::{Duration, Instant};

use http::Method;
use payroute_mock::{MockAcquirer, Reply};
use payroute_testkit::*;
use serde_json::{json, Value};

use crate::PAYROUTE;

// Paths as the fake acquirers see them (PAY, ORDER, REFUND, REVERSE) and
// the channel lines QUERY and REVERSAL come from the test kit.

/// A short attempt timeout (connect_timeout_ms may not exceed timeout_ms).
const FAST: &str = "timeout_ms = 300\nconnect_timeout_ms = 300";

/// Generous bound for anything that should happen "soon" on a noisy CI box.
const SOON: Duration = Duration::from_secs(10);
/// How long to keep watching before concluding that something did not happen.
const QUIET: Duration = Duration::from_millis(800);

/// Lines joined into one config fragment.
fn lines(parts: &[&str]) -> String {
    parts.join("\n")
}

/// Replaces the config file and reloads through the admin API (synchronous).
async fn reconfigure(p: &Proxy, cfg: impl Display) {
    p.replace_config(cfg);
    let r = p.reload().await;
    assert_eq!(r.status, 200, "reload refused: {}", r.text());
}

fn order_of(body: &Value) -> String {
    body["order_id"].as_str().expect("order_id").to_string()
}

fn is_replay(r: &Resp) -> bool {
    r.header("x-payroute-replayed").as_deref() == Some("true")
}

/// A replay: the original's status, body and channel, marked replayed.
#[track_caller]
fn assert_replay_of(r: &Resp, original: &Resp) {
    assert_eq!(
        r.header("x-payroute-replayed").as_deref(),
        Some("true"),
        "not marked as a replay: {} {:?} headers={:?}",
        r.status,
        r.text(),
        r.headers
    );
    assert_eq!(r.status, original.status, "replayed status; body {:?}", r.text());
    assert_eq!(r.text(), original.text(), "replayed body");
    assert_eq!(r.channel(), original.channel(), "replayed X-Payroute-Channel");
    assert_eq!(
        r.header("x-payroute-ambiguous"),
        original.header("x-payroute-ambiguous"),
        "replayed X-Payroute-Ambiguous"
    );
    assert!(r.request_id().is_some(), "X-Payroute-Request-Id missing on a replay");
}

/// A response produced by this request, not replayed from an earlier one.
#[track_caller]
fn assert_fresh(r: &Resp) {
    assert!(
        r.header("x-payroute-replayed").is_none(),
        "unexpected X-Payroute-Replayed on {} {:?}",
        r.status,
        r.text()
    );
}

#[track_caller]
fn assert_not_ambiguous(r: &Resp) {
    assert!(
        r.header("x-payroute-ambiguous").is_none(),
        "unexpected X-Payroute-Ambiguous: {:?}",
        r.header("x-payroute-ambiguous")
    );
}

/// How many payment requests for `order` the acquirer received.
fn payments_for(acq: &MockAcquirer, order: &str) -> usize {
    acq.received_to("POST", PAY)
        .iter()
        .filter(|r| r.json()["order_id"].as_str() == Some(order))
        .count()
}

/// A follow-up request from `merchant` (any method).
async fn follow_up(p: &Api, method: Method, path: &str, merchant: &str, headers: &[(&str, &str)], body: &str) -> Resp {
    let mut h = vec![("x-merchant-id", merchant), ("content-type", "application/json")];
    h.extend_from_slice(headers);
    p.request(method, path, &h, body.to_string()).await
}

/// Repeats `request` every 100 ms until its response satisfies `done`;
/// returns that response. Panics after [`SOON`].
async fn retry_until<F, Fut>(what: &str, mut request: F, done: impl Fn(&Resp) -> bool) -> Resp
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Resp>,
{
    let deadline = Instant::now() + SOON;
    loop {
        let r = request().await;
        if done(&r) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {SOON:?} waiting for {what}; last answer {} {:?}",
            r.status,
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `n` identical payment requests from m-1, all sent at once.
async fn send_concurrently(p: &Proxy, n: usize, body: &Value, headers: &[(&str, &str)]) -> Vec<Resp> {
    let owned: Vec<(String, String)> = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let api = p.api.clone();
            let body = body.clone();
            let owned = owned.clone();
            tokio::spawn(async move {
                let h: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                api.post_payment("m-1", &body, &h).await
            })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for h in handles {
        out.push(h.await.expect("request task"));
    }
    out
}

/// A with fee 0.1 (preferred), B with fee 0.9, and merchant m-1.
fn a_then_b(a: &MockAcquirer, b: &MockAcquirer) -> Config {
    Config::pair(("A", &a.url()), ("B", &b.url()))
}

/// Acquirers A and B behind [`a_then_b`]; A answers payments with `pay`
/// and status queries with `query`, and channel A gets `a_lines`.
async fn a_answering(pay: Reply, query: Reply, a_lines: &[&str]) -> (MockAcquirer, MockAcquirer, Config) {
    let a = acquirer("A").await;
    let b = acquirer("B").await;
    a.on("POST", PAY, pay);
    a.on("GET", ORDER, query);
    let config = a_then_b(&a, &b).amend("A", &lines(a_lines));
    (a, b, config)
}

/// Channel A alone, with these lines, and these merchants `(id, lines)`.
fn only_a(a: &MockAcquirer, lines: &str, merchants: &[(&str, &str)]) -> Config {
    let mut config = Config::new().channel("A", &a.url(), lines);
    for (id, lines) in merchants {
        config = config.merchant(id, lines);
    }
    config
}

// ---------------------------------------------------------------------------
// Idempotency
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicates_reach_one_acquirer_once() {
    let a = acquirer_with("A", Reply::ok().with_delay(Duration::from_millis(300))).await;
    let b = acquirer_with("B", Reply::ok().with_delay(Duration::from_millis(300))).await;
    let p = PAYROUTE.serve(a_then_b(&a, &b)).await;

    let key = format!("key-{}", order_id());
    // First with an Idempotency-Key header, then with the order id as the key.
    let rounds: [Vec<(&str, &str)>; 2] = [vec![("idempotency-key", key.as_str())], vec![]];
    let mut in_flight_refusals = 0;
    for (round, headers) in rounds.iter().enumerate() {
        let body = payment_body(1000, "CNY");
        let resps = send_concurrently(&p, 50, &body, headers).await;

        let originals: Vec<usize> = (0..resps.len())
            .filter(|&i| resps[i].status != 409 && !is_replay(&resps[i]))
            .collect();
        let statuses: Vec<(u16, bool)> = resps.iter().map(|r| (r.status, is_replay(r))).collect();
        assert_eq!(
            originals.len(),
            1,
            "round {round}: exactly one request may run the payment; (status, replayed): {statuses:?}"
        );
        let original = &resps[originals[0]];
        original.assert_ok();
        let mut dup = 0;
        for (i, r) in resps.iter().enumerate() {
            if i == originals[0] {
                continue;
            }
            if r.status == 409 {
                r.assert_error(409, "duplicate_in_flight");
                dup += 1;
            } else {
                assert_replay_of(r, original);
            }
        }
        assert!(
            dup >= 1,
            "round {round}: 50 concurrent duplicates of a 300 ms payment and none got 409: {statuses:?}"
        );
        in_flight_refusals += dup;
        assert_eq!(
            a.hits() + b.hits(),
            round + 1,
            "round {round}: a duplicate reached an acquirer"
        );
        assert_eq!(a.max_in_flight().max(b.max_in_flight()), 1);

        // Once it finished, the same request is a replay.
        let r = p.post_payment("m-1", &body, headers).await;
        assert_replay_of(&r, original);
        assert_eq!(a.hits() + b.hits(), round + 1, "a replay reached an acquirer");
    }
    let m = p.metrics().await;
    assert_eq!(
        m.get("payroute_requests_total", &[("outcome", "duplicate_in_flight")]),
        in_flight_refusals as f64,
        "{}",
        m.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_after_success_and_decline_without_contacting_acquirers() {
    let a = acquirer("A").await;
    let b = acquirer("B").await;
    let p = PAYROUTE.serve(a_then_b(&a, &b)).await;

    // Success, keyed by an Idempotency-Key header.
    let body = payment_body(1200, "CNY");
    let key = format!("key-{}", order_id());
    let first = p.post_payment("m-1", &body, &[("idempotency-key", &key)]).await;
    first.assert_ok();
    assert_fresh(&first);
    assert_eq!(first.channel().as_deref(), Some("A"));
    for _ in 0..2 {
        let r = p.post_payment("m-1", &body, &[("idempotency-key", &key)]).await;
        assert_replay_of(&r, &first);
        assert_eq!(r.attempts(), Some(1));
        assert_eq!(r.header("content-type").as_deref(), Some("application/json"));
    }
    assert_eq!((a.hits(), b.hits()), (1, 0), "a replay reached an acquirer");

    // Success, keyed by the order id (no header).
    let body = payment_body(1300, "CNY");
    let first = p.post_payment("m-1", &body, &[]).await;
    first.assert_ok();
    assert_fresh(&first);
    let r = p.post_payment("m-1", &body, &[]).await;
    assert_replay_of(&r, &first);
    assert_eq!((a.hits(), b.hits()), (2, 0), "a replay reached an acquirer");

    // A decline (4xx) is stored and replayed as well.
    a.on(
        "POST",
        PAY,
        Reply::status(402).with_body(r#"{"declined":true,"reason":"insufficient_funds"}"#),
    );
    let body = payment_body(1400, "CNY");
    let declined = p.post_payment("m-1", &body, &[]).await;
    assert_eq!(declined.status, 402, "{}", declined.text());
    assert_fresh(&declined);
    for _ in 0..2 {
        let r = p.post_payment("m-1", &body, &[]).await;
        assert_replay_of(&r, &declined);
        assert_eq!(r.text(), r#"{"declined":true,"reason":"insufficient_funds"}"#);
    }
    assert_eq!((a.hits(), b.hits()), (3, 0), "a replayed decline reached an acquirer");

    // Replays count under the original outcome and in payroute_replays_total.
    let m = p.metrics().await;
    assert_eq!(m.get("payroute_replays_total", &[]), 5.0, "{}", m.0);
    assert_eq!(
        m.get("payroute_requests_total", &[("outcome", "success")]),
        5.0,
        "{}",
        m.0
    );
    assert_eq!(
        m.get("payroute_requests_total", &[("outcome", "decline")]),
        3.0,
        "{}",
        m.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_after_reaching_an_acquirer_are_replayed_not_retried() {
    // A 5xx and a timeout may have charged: the same key must never reach an
    // acquirer again, even though the payment failed.
    let a = acquirer("A").await;
    let p = PAYROUTE.serve(only_a(&a, FAST, &[("m-1", "")])).await;

    a.on("POST", PAY, Reply::status(503));
    let body = payment_body(100, "CNY");
    let first = p.post_payment("m-1", &body, &[]).await;
    first.assert_error(502, "upstream_failed");
    assert_fresh(&first);
    let r = p.post_payment("m-1", &body, &[]).await;
    assert_replay_of(&r, &first);
    assert_eq!(r.error_code().as_deref(), Some("upstream_failed"));
    assert_eq!(a.hits(), 1, "a payment that reached an acquirer was sent again");

    a.on("POST", PAY, Reply::hang());
    let body = payment_body(100, "CNY");
    let first = p.post_payment("m-1", &body, &[]).await;
    first.assert_error(504, "upstream_timeout");
    let r = p.post_payment("m-1", &body, &[]).await;
    assert_replay_of(&r, &first);
    assert_eq!(a.hits(), 2, "a timed-out payment was sent again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_scoped_per_merchant() {
    let a = acquirer("A").await;
    let p = PAYROUTE.serve(only_a(&a, "", &[("m-1", ""), ("m-2", "")])).await;

    // Same order id (the default key), same body, two merchants: two payments.
    let body = payment_body(500, "CNY");
    let order = order_of(&body);
    let r1 = p.post_payment("m-1", &body, &[]).await;
    r1.assert_ok();
    let r2 = p.post_payment("m-2", &body, &[]).await;
    r2.assert_ok();
    assert_fresh(&r2);
    assert_eq!(
        payments_for(&a, &order),
        2,
        "merchant m-2's payment was taken for m-1's"
    );
    assert_replay_of(&p.post_payment("m-1", &body, &[]).await, &r1);
    assert_replay_of(&p.post_payment("m-2", &body, &[]).await, &r2);

    // Same Idempotency-Key header, two merchants: two payments.
    let key = format!("key-{}", order_id());
    let b1 = payment_body(600, "CNY");
    let b2 = payment_body(700, "CNY");
    let r1 = p.post_payment("m-1", &b1, &[("idempotency-key", &key)]).await;
    r1.assert_ok();
    let r2 = p.post_payment("m-2", &b2, &[("idempotency-key", &key)]).await;
    r2.assert_ok();
    assert_fresh(&r2);
    assert_eq!(a.hits(), 4);

    // The header, when present, is the key: the same order under another key
    // is another payment (the merchant asked for it).
    let r = p
        .post_payment("m-1", &body, &[("idempotency-key", &format!("{order}-again"))])
        .await;
    r.assert_ok();
    assert_fresh(&r);
    assert_eq!(payments_for(&a, &order), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_key_with_another_body_is_refused() {
    let a = acquirer("A").await;
    let config = only_a(&a, "", &[("m-1", "")]).request(r#"payment_paths = ["/v1/payments", "/v2/payments"]"#);
    let p = PAYROUTE.serve(config).await;

    // After the first finished: header key.
    let key = format!("key-{}", order_id());
    let body = payment_body(100, "CNY");
    let first = p.post_payment("m-1", &body, &[("idempotency-key", &key)]).await;
    first.assert_ok();
    let other = payment_body(100, "CNY");
    p.post_payment("m-1", &other, &[("idempotency-key", &key)])
        .await
        .assert_error(422, "idempotency_key_reused");
    // The fingerprint includes the path: same key and body on another payment path.
    p.post_payment_to("/v2/payments", "m-1", &body, &[("idempotency-key", &key)])
        .await
        .assert_error(422, "idempotency_key_reused");
    // The refusal did not disturb the stored answer.
    assert_replay_of(
        &p.post_payment("m-1", &body, &[("idempotency-key", &key)]).await,
        &first,
    );
    assert_eq!(a.hits(), 1);

    // Order id as the key: same order, another amount.
    let body = payment_body(100, "CNY");
    p.post_payment("m-1", &body, &[]).await.assert_ok();
    let mut changed = body.clone();
    changed["amount"] = json!(200);
    p.post_payment("m-1", &changed, &[])
        .await
        .assert_error(422, "idempotency_key_reused");
    assert_eq!(a.hits(), 2);

    // While the first is still running: another body is 422, the same 409.
    a.set_behavior(Reply::ok().with_delay(Duration::from_millis(1500)));
    let body = payment_body(300, "CNY");
    let api = p.api.clone();
    let b2 = body.clone();
    let running = tokio::spawn(async move { api.post_payment("m-1", &b2, &[]).await });
    assert!(a.wait_hits(3, SOON).await, "the running payment did not reach A");
    let mut changed = body.clone();
    changed["description"] = json!("changed");
    p.post_payment("m-1", &changed, &[])
        .await
        .assert_error(422, "idempotency_key_reused");
    p.post_payment("m-1", &body, &[])
        .await
        .assert_error(409, "duplicate_in_flight");
    let first = running.await.unwrap();
    first.assert_ok();
    assert_fresh(&first);
    assert_eq!(a.hits(), 3, "a refused duplicate reached the acquirer");
}

// ---------------------------------------------------------------------------
// Refusals store nothing
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_store_nothing_and_succeed_once_the_cause_is_fixed() {
    let a = acquirer("A").await;
    let off = acquirer("off").await;
    let cfg = |fixed: bool| {
        let (currencies, m1) = if fixed {
            (
                r#"currencies = ["CNY", "USD"]"#,
                "max_amount = 10000\ndaily_limit = 100000\nchannels = [\"A\"]",
            )
        } else {
            (
                r#"currencies = ["CNY"]"#,
                "max_amount = 1000\ndaily_limit = 1500\nchannels = [\"A\"]",
            )
        };
        let m3 = format!("api_key_sha256 = \"{}\"\nchannels = [\"A\"]", sha256_hex("key-3"));
        only_a(
            &a,
            currencies,
            &[("m-1", m1), ("m-2", "channels = [\"off\"]"), ("m-3", &m3)],
        )
        .channel("off", &off.url(), &format!("currencies = [\"CNY\"]\nenabled = {fixed}"))
    };
    let p = PAYROUTE.serve(cfg(false)).await;

    let big = payment_body(5000, "CNY");
    let usd = payment_body(100, "USD");
    let first = payment_body(1000, "CNY");
    let over = payment_body(600, "CNY");
    let unavailable = payment_body(100, "CNY");
    let authed = payment_body(100, "CNY");

    p.post_payment("m-1", &first, &[]).await.assert_ok();
    // Each refusal twice: the second is refused afresh, not replayed.
    for _ in 0..2 {
        let r = p.post_payment("m-1", &big, &[]).await;
        r.assert_error(422, "amount_limit_exceeded");
        assert_fresh(&r);
        let r = p.post_payment("m-1", &usd, &[]).await;
        r.assert_error(422, "no_eligible_channel");
        assert_fresh(&r);
        let r = p.post_payment("m-1", &over, &[]).await;
        r.assert_error(422, "daily_limit_exceeded");
        assert_fresh(&r);
        let r = p.post_payment("m-2", &unavailable, &[]).await;
        r.assert_error(503, "no_channel_available");
        assert_fresh(&r);
        let r = p
            .post_payment("m-3", &authed, &[("authorization", "Bearer wrong")])
            .await;
        r.assert_error(401, "unauthorized");
        assert_fresh(&r);
    }
    assert_eq!((a.hits(), off.hits()), (1, 0), "a refusal reached an acquirer");

    reconfigure(&p, cfg(true)).await;
    for (merchant, body, headers, acq) in [
        ("m-1", &big, &[][..], &a),
        ("m-1", &usd, &[][..], &a),
        ("m-1", &over, &[][..], &a),
        ("m-2", &unavailable, &[][..], &off),
        ("m-3", &authed, &[("authorization", "Bearer key-3")][..], &a),
    ] {
        let r = p.post_payment(merchant, body, headers).await;
        r.assert_ok();
        assert_fresh(&r);
        assert_eq!(
            payments_for(acq, &order_of(body)),
            1,
            "order {} of {merchant}",
            order_of(body)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_payment_can_be_retried() {
    let a = acquirer("A").await;
    let p = PAYROUTE
        .serve(only_a(&a, "", &[("m-1", "rate_per_sec = 1\nburst = 1")]))
        .await;
    p.pay("m-1", 100).await.assert_ok();
    let body = payment_body(100, "CNY");
    let r = p.post_payment("m-1", &body, &[]).await;
    r.assert_error(429, "rate_limited");
    assert!(r.header("retry-after").is_some(), "429 without Retry-After");

    let r = retry_until(
        "the rate-limited payment to be served",
        || p.post_payment("m-1", &body, &[]),
        |r| r.status != 429,
    )
    .await;
    r.assert_ok();
    assert_fresh(&r);
    assert_eq!(payments_for(&a, &order_of(&body)), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_whose_every_connect_was_refused_can_be_retried() {
    let a = acquirer("A").await;
    let (x, y) = (refused_url(), refused_url());
    let cfg = |x: &str| Config::pair(("X", x), ("Y", &y));
    let p = PAYROUTE.serve(cfg(&x)).await;
    let body = payment_body(100, "CNY");
    for _ in 0..2 {
        let r = p.post_payment("m-1", &body, &[]).await;
        r.assert_error(502, "upstream_failed");
        assert_fresh(&r);
        assert_eq!(r.attempts(), Some(2), "both channels tried afresh");
        assert_not_ambiguous(&r);
    }
    // A channel comes up (X now points at a live acquirer).
    reconfigure(&p, cfg(&a.url())).await;
    let r = p.post_payment("m-1", &body, &[]).await;
    r.assert_ok();
    assert_fresh(&r);
    assert_eq!(r.channel().as_deref(), Some("X"));
    assert_eq!(payments_for(&a, &order_of(&body)), 1);
    assert_replay_of(&p.post_payment("m-1", &body, &[]).await, &r);
}

// ---------------------------------------------------------------------------
// Expiry and limits
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_and_orders_expire_after_the_ttl() {
    const TTL: Duration = Duration::from_millis(800);
    let a = acquirer("A").await;
    let ttl = format!("idempotency_ttl_ms = {}", TTL.as_millis());
    let p = PAYROUTE.serve(only_a(&a, "", &[("m-1", "")]).request(&ttl)).await;

    let body = payment_body(100, "CNY");
    let order = order_of(&body);
    let first = p.post_payment("m-1", &body, &[]).await;
    first.assert_ok();
    assert_replay_of(&p.post_payment("m-1", &body, &[]).await, &first);
    follow_up(&p, Method::GET, &format!("/v1/payments/{order}"), "m-1", &[], "")
        .await
        .assert_ok();

    // The idempotency record expires: the same key is a new payment. (Not
    // polled: every request for the key would touch the record.)
    tokio::time::sleep(TTL + Duration::from_millis(400)).await;
    let fresh = p.post_payment("m-1", &body, &[]).await;
    fresh.assert_ok();
    assert_fresh(&fresh);
    assert_eq!(
        payments_for(&a, &order),
        2,
        "after expiry the payment reaches the acquirer again"
    );
    assert_replay_of(&p.post_payment("m-1", &body, &[]).await, &fresh);

    // The order-to-channel memory expires too.
    let body = payment_body(100, "CNY");
    let order = order_of(&body);
    let started = Instant::now();
    p.post_payment("m-1", &body, &[]).await.assert_ok();
    let path = format!("/v1/payments/{order}");
    retry_until(
        "the remembered order to expire",
        || follow_up(&p, Method::GET, &path, "m-1", &[], ""),
        |r| r.status == 404,
    )
    .await
    .assert_error(404, "unknown_order");
    assert!(
        started.elapsed() >= TTL - Duration::from_millis(100),
        "order forgotten after {:?}, before its {TTL:?} ttl",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_do_not_extend_a_records_ttl() {
    // "idempotency_ttl_ms: how long a finished payment's response is kept
    // for replay": counted from when the payment finished, not slid forward
    // by every repeat (the store's own model is Redis `SET NX PX`, which
    // leaves an existing key's expiry alone).
    const TTL: Duration = Duration::from_millis(1000);
    let a = acquirer("A").await;
    let ttl = format!("idempotency_ttl_ms = {}", TTL.as_millis());
    let p = PAYROUTE.serve(only_a(&a, "", &[("m-1", "")]).request(&ttl)).await;
    let body = payment_body(100, "CNY");
    let first = p.post_payment("m-1", &body, &[]).await;
    first.assert_ok();
    let finished = Instant::now();
    let limit = TTL * 3;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let r = p.post_payment("m-1", &body, &[]).await;
        let since = finished.elapsed();
        if !is_replay(&r) {
            r.assert_ok();
            assert!(
                since >= TTL - Duration::from_millis(100),
                "record forgotten {since:?} after the payment, before its {TTL:?} ttl"
            );
            break;
        }
        assert_replay_of(&r, &first);
        assert!(
            since < limit,
            "still replayed {since:?} after the payment finished, with idempotency_ttl_ms = {}: \
             each replay extended the record's life",
            TTL.as_millis()
        );
    }
    assert_eq!(payments_for(&a, &order_of(&body)), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_do_not_charge_the_daily_limit_again() {
    let a = acquirer("A").await;
    let p = PAYROUTE.serve(only_a(&a, "", &[("m-1", "daily_limit = 1500")])).await;
    let body = payment_body(1000, "CNY");
    let first = p.post_payment("m-1", &body, &[]).await;
    first.assert_ok();
    for _ in 0..3 {
        assert_replay_of(&p.post_payment("m-1", &body, &[]).await, &first);
    }
    // 1000 + 500 fits 1500 only if the replays were not charged.
    p.pay("m-1", 500).await.assert_ok();
    // Now the day is full: a new payment is refused, a replay is not.
    p.pay("m-1", 1).await.assert_error(422, "daily_limit_exceeded");
    assert_replay_of(&p.post_payment("m-1", &body, &[]).await, &first);
    assert_eq!(a.hits(), 2);
}

// ---------------------------------------------------------------------------
// Follow-ups
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followups_go_to_the_serving_channel_whatever_the_scores() {
    let a = acquirer("A").await;
    let b = acquirer("B").await;
    let cfg = |a_extra: &str| {
        only_a(&a, "headers = { \"x-acq-key\" = \"key-a\" }", &[("m-1", "")])
            .amend("A", a_extra)
            .channel(
                "B",
                &b.url(),
                "fee_percent = 0.9\nheaders = { \"x-acq-key\" = \"key-b\" }",
            )
    };
    let p = PAYROUTE.serve(cfg("fee_percent = 0.1")).await;
    let body = payment_body(1000, "CNY");
    let order = order_of(&body);
    let r = p.post_payment("m-1", &body, &[]).await;
    r.assert_ok();
    assert_eq!(r.channel().as_deref(), Some("A"));

    // A becomes the dearest: new payments go to B...
    reconfigure(&p, cfg("fee_percent = 5.0")).await;
    let r = p.pay("m-1", 1000).await;
    r.assert_ok();
    assert_eq!(r.channel().as_deref(), Some("B"), "reload did not make B preferred");

    // ...but the order's follow-ups still go to A, with A's headers.
    a.on("GET", ORDER, Reply::ok().with_body(r#"{"status":"paid","by":"A"}"#));
    let path = format!("/v1/payments/{order}");
    let r = follow_up(&p, Method::GET, &path, "m-1", &[], "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), r#"{"status":"paid","by":"A"}"#);
    assert_eq!(r.channel().as_deref(), Some("A"));
    let got = a.received_to("GET", ORDER);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].path, path);
    assert_eq!(got[0].header("x-acq-key").as_deref(), Some("key-a"));

    let refund_path = format!("/v1/payments/{order}/refund");
    let refund = r#"{"amount":400,"reason":"customer"}"#;
    let r = follow_up(&p, Method::POST, &refund_path, "m-1", &[], refund).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.channel().as_deref(), Some("A"));
    let got = a.received_to("POST", REFUND);
    assert_eq!(got.len(), 1, "refund did not reach A");
    assert_eq!(got[0].path, refund_path);
    assert_eq!(got[0].body, refund.as_bytes());
    assert_eq!(got[0].header("x-acq-key").as_deref(), Some("key-a"));

    // Even a disabled channel gets its orders' follow-ups.
    reconfigure(&p, cfg("fee_percent = 0.1\nenabled = false")).await;
    p.pay("m-1", 1000).await.assert_ok();
    let r = follow_up(&p, Method::GET, &path, "m-1", &[], "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.channel().as_deref(), Some("A"));
    assert_eq!(a.count("GET", ORDER), 2);

    assert_eq!(b.count("POST", PAY), 2, "B serves new payments");
    assert_eq!(b.hits(), 2, "a follow-up of A's order reached B");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followups_go_to_the_channel_of_the_final_answer() {
    let a = acquirer("A").await;
    let b = acquirer("B").await;
    let p = PAYROUTE
        .serve(
            a_then_b(&a, &b)
                .amend("A", REVERSAL)
                .merchant("m-2", "channels = [\"A\"]"),
        )
        .await;

    // A fails (5xx, reversed, so it may be failed over): B gives the final
    // answer.
    a.on("POST", PAY, Reply::status(503));
    let body = payment_body(1000, "CNY");
    let r = p.post_payment("m-1", &body, &[]).await;
    r.assert_ok();
    assert_eq!(r.channel().as_deref(), Some("B"));
    let path = format!("/v1/payments/{}", order_of(&body));
    let r = follow_up(&p, Method::GET, &path, "m-1", &[], "").await;
    assert_eq!((r.status, r.channel().as_deref()), (200, Some("B")), "{}", r.text());
    assert_eq!((a.count("GET", ORDER), b.count("GET", ORDER)), (0, 1));

    // A declines: the order is A's.
    a.on("POST", PAY, Reply::status(402));
    let body = payment_body(1000, "CNY");
    let r = p.post_payment("m-2", &body, &[]).await;
    assert_eq!(r.status, 402, "{}", r.text());
    let path = format!("/v1/payments/{}", order_of(&body));
    let r = follow_up(&p, Method::GET, &path, "m-2", &[], "").await;
    assert_eq!((r.status, r.channel().as_deref()), (200, Some("A")), "{}", r.text());
    assert_eq!((a.count("GET", ORDER), b.count("GET", ORDER)), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followups_for_unknown_or_foreign_orders_are_404() {
    let a = acquirer("A").await;
    let p = PAYROUTE.serve(only_a(&a, "", &[("m-1", ""), ("m-2", "")])).await;
    let body = payment_body(1000, "CNY");
    let order = order_of(&body);
    p.post_payment("m-1", &body, &[]).await.assert_ok();

    let never = order_id();
    for (merchant, method, path) in [
        ("m-1", Method::GET, format!("/v1/payments/{never}")),
        ("m-1", Method::POST, format!("/v1/payments/{never}/refund")),
        ("m-2", Method::GET, format!("/v1/payments/{order}")),
        ("m-2", Method::POST, format!("/v1/payments/{order}/refund")),
    ] {
        let r = follow_up(&p, method.clone(), &path, merchant, &[], r#"{"amount":1}"#).await;
        r.assert_error(404, "unknown_order");
        assert!(
            r.channel().is_none(),
            "{merchant} {method} {path}: a 404 names a channel"
        );
    }
    assert_eq!(a.hits(), 1, "a follow-up for an unknown order reached an acquirer");
    // The owner still reaches it.
    let r = follow_up(&p, Method::GET, &format!("/v1/payments/{order}"), "m-1", &[], "").await;
    assert_eq!((r.status, r.channel().as_deref()), (200, Some("A")), "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followups_are_never_failed_over() {
    let a = acquirer("A").await;
    let b = acquirer("B").await;
    let cfg = |a_url: &str| Config::pair(("A", a_url), ("B", &b.url())).amend("A", FAST);
    let p = PAYROUTE.serve(cfg(&a.url())).await;
    let body = payment_body(1000, "CNY");
    let path = format!("/v1/payments/{}", order_of(&body));
    let r = p.post_payment("m-1", &body, &[]).await;
    assert_eq!(r.channel().as_deref(), Some("A"));

    // A 5xx answer is returned as-is.
    a.on("GET", ORDER, Reply::status(503));
    let r = follow_up(&p, Method::GET, &path, "m-1", &[], "").await;
    assert_eq!((r.status, r.channel().as_deref()), (503, Some("A")), "{}", r.text());
    assert_eq!(a.count("GET", ORDER), 1, "a follow-up was retried");

    // A timeout is 504.
    a.on("GET", ORDER, Reply::hang());
    let r = follow_up(&p, Method::GET, &path, "m-1", &[], "").await;
    r.assert_error(504, "upstream_timeout");
    assert_eq!(a.count("GET", ORDER), 2, "a follow-up was retried");

    // Refused connections are 502.
    reconfigure(&p, cfg(&refused_url())).await;
    let r = follow_up(&p, Method::GET, &path, "m-1", &[], "").await;
    r.assert_error(502, "upstream_failed");
    let r = follow_up(&p, Method::POST, &format!("{path}/refund"), "m-1", &[], "{}").await;
    r.assert_error(502, "upstream_failed");

    assert_eq!(b.hits(), 0, "a follow-up was failed over to B");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followups_need_auth_and_count_against_the_rate_limit() {
    let a = acquirer("A").await;
    let m1 = format!(
        "api_key_sha256 = \"{}\"\nrate_per_sec = 1\nburst = 2",
        sha256_hex("key-1")
    );
    let p = PAYROUTE.serve(only_a(&a, "", &[("m-1", &m1)])).await;
    let auth = ("authorization", "Bearer key-1");
    let body = payment_body(1000, "CNY");
    let path = format!("/v1/payments/{}", order_of(&body));
    p.post_payment("m-1", &body, &[auth]).await.assert_ok();

    follow_up(&p, Method::GET, &path, "m-1", &[], "")
        .await
        .assert_error(401, "unauthorized");
    follow_up(&p, Method::GET, &path, "m-1", &[("authorization", "Bearer wrong")], "")
        .await
        .assert_error(401, "unauthorized");
    assert_eq!(a.count("GET", ORDER), 0, "an unauthenticated follow-up was forwarded");

    let mut served = 0;
    let mut limited = 0;
    for _ in 0..5 {
        let r = follow_up(&p, Method::GET, &path, "m-1", &[auth], "").await;
        if r.status == 429 {
            r.assert_error(429, "rate_limited");
            assert!(r.header("retry-after").is_some(), "429 without Retry-After");
            limited += 1;
        } else {
            assert_eq!((r.status, r.channel().as_deref()), (200, Some("A")), "{}", r.text());
            served += 1;
        }
    }
    assert!(
        limited >= 1,
        "5 quick follow-ups at 1/s burst 2 and none was rate limited"
    );
    assert!(served >= 1, "no follow-up served");
    let got = a.received_to("GET", ORDER);
    assert_eq!(got.len(), served, "a rate-limited follow-up was forwarded");
    assert!(
        got.iter().all(|r| r.header("authorization").is_none()),
        "the merchant's API key was forwarded"
    );
}

// ---------------------------------------------------------------------------
// Ambiguous attempts
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_timeout_found_paid_by_query_ends_there() {
    let paid = r#"{"status":"paid","via":"query"}"#;
    let key_a = r#"headers = { "x-acq-key" = "key-a" }"#;
    let (a, b, config) = a_answering(
        Reply::hang(),
        Reply::ok().with_body(paid),
        &[FAST, QUERY, REVERSAL, key_a],
    )
    .await;
    let p = PAYROUTE.serve(config).await;

    let body = payment_body(1000, "CNY");
    let order = order_of(&body);
    let r = p.post_payment("m-1", &body, &[]).await;
    r.assert_ok();
    assert_eq!(r.channel().as_deref(), Some("A"));
    assert_eq!(r.header("x-payroute-ambiguous").as_deref(), Some("A"));
    assert_eq!(r.text(), paid, "the query's answer is the payment's answer");
    assert_eq!(b.hits(), 0, "a payment found paid on A was sent to B");

    let queries = a.received_to("GET", ORDER);
    assert_eq!(queries.len(), 1);
    assert_eq!(queries[0].path, format!("/v1/payments/{order}"));
    assert_eq!(queries[0].header("x-acq-key").as_deref(), Some("key-a"));
    let m = p.metrics().await;
    assert!(m.get("payroute_ambiguous_total", &[("channel", "A")]) >= 1.0, "{}", m.0);

    // A replay carries the stored ambiguity and reaches nobody.
    let before = a.hits();
    let replay = p.post_payment("m-1", &body, &[]).await;
    assert_replay_of(&replay, &r);
    assert_eq!(replay.header("x-payroute-ambiguous").as_deref(), Some("A"));

    // The order is A's.
    let f = follow_up(&p, Method::GET, &format!("/v1/payments/{order}"), "m-1", &[], "").await;
    assert_eq!((f.status, f.channel().as_deref()), (200, Some("A")), "{}", f.text());
    assert_eq!(a.hits(), before + 1);

    tokio::time::sleep(QUIET).await;
    assert_eq!(a.count("POST", REVERSE), 0, "a paid payment was reversed");
    assert_eq!(b.hits(), 0);
    let m = p.metrics().await;
    assert_eq!(m.get("payroute_reversals_total", &[("channel", "A")]), 0.0, "{}", m.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_timeout_unknown_to_query_fails_over_without_reversal() {
    let (a, b, config) = a_answering(Reply::hang(), Reply::status(404), &[FAST, QUERY, REVERSAL]).await;
    let p = PAYROUTE.serve(config).await;

    let body = payment_body(1000, "CNY");
    let r = p.post_payment("m-1", &body, &[]).await;
    r.assert_ok();
    assert_eq!(r.channel().as_deref(), Some("B"));
    assert_eq!(r.attempts(), Some(2));
    assert_not_ambiguous(&r);
    assert_eq!(a.count("GET", ORDER), 1, "A was not asked");
    assert_eq!(payments_for(&b, &order_of(&body)), 1);

    tokio::time::sleep(QUIET).await;
    assert_eq!(a.count("POST", REVERSE), 0, "a payment A never saw was reversed");
    let m = p.metrics().await;
    assert_eq!(m.get("payroute_reversals_total", &[("channel", "A")]), 0.0, "{}", m.0);
    assert_not_ambiguous(&p.post_payment("m-1", &body, &[]).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_5xx_is_reversed_and_failed_over() {
    let key_a = r#"headers = { "x-acq-key" = "key-a" }"#;
    let (a, b, config) = a_answering(Reply::status(503), Reply::ok(), &[FAST, REVERSAL, key_a]).await;
    let p = PAYROUTE.serve(config).await;

    let body = payment_body(1000, "CNY");
    let order = order_of(&body);
    let r = p.post_payment("m-1", &body, &[]).await;
    r.assert_ok();
    assert_eq!(r.channel().as_deref(), Some("B"));
    assert_eq!(r.header("x-payroute-ambiguous").as_deref(), Some("A"));
    assert_eq!(payments_for(&b, &order), 1);

    assert!(a.wait_count("POST", REVERSE, 1, SOON).await, "no reversal reached A");
    let original = a.received_to("POST", PAY).pop().expect("A got the payment");
    let reversal = a.received_to("POST", REVERSE).pop().unwrap();
    assert_eq!(reversal.path, format!("/v1/payments/{order}/reverse"));
    assert_eq!(reversal.body, original.body, "the reversal carries the original body");
    assert_eq!(reversal.header("x-acq-key").as_deref(), Some("key-a"));
    assert_eq!(a.count("GET", ORDER), 0, "no query is configured");

    eventually("reversal counted as success", SOON, || async {
        p.metrics()
            .await
            .get("payroute_reversals_total", &[("channel", "A"), ("result", "success")])
            == 1.0
    })
    .await;
    let m = p.metrics().await;
    assert!(m.get("payroute_ambiguous_total", &[("channel", "A")]) >= 1.0, "{}", m.0);

    // A replay carries X-Payroute-Ambiguous too, and sends nothing anywhere.
    let replay = p.post_payment("m-1", &body, &[]).await;
    assert_replay_of(&replay, &r);
    assert_eq!(replay.header("x-payroute-ambiguous").as_deref(), Some("A"));
    tokio::time::sleep(QUIET).await;
    assert_eq!(a.count("POST", REVERSE), 1, "a reversal was sent twice");
    assert_eq!((a.count("POST", PAY), b.count("POST", PAY)), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_query_unclear_then_reversal() {
    // The query answers neither 2xx nor 404: still unknown, so reverse.
    let (a, _b, config) = a_answering(Reply::hang(), Reply::status(500), &[FAST, QUERY, REVERSAL]).await;
    let p = PAYROUTE.serve(config).await;

    let body = payment_body(1000, "CNY");
    let r = p.post_payment("m-1", &body, &[]).await;
    r.assert_ok();
    assert_eq!(r.channel().as_deref(), Some("B"));
    assert_eq!(r.header("x-payroute-ambiguous").as_deref(), Some("A"));
    assert_eq!(a.count("GET", ORDER), 1);
    assert!(a.wait_count("POST", REVERSE, 1, SOON).await, "no reversal reached A");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reversals_are_retried_with_backoff() {
    let (a, _b, config) = a_answering(Reply::status(503), Reply::ok(), &[FAST, REVERSAL]).await;
    a.on("POST", REVERSE, Reply::ok().failing_first(2, 503));
    let p = PAYROUTE.serve(config).await;

    let r = p.pay("m-1", 1000).await;
    r.assert_ok();
    assert_eq!(r.header("x-payroute-ambiguous").as_deref(), Some("A"));
    let started = Instant::now();
    assert!(
        a.wait_count("POST", REVERSE, 3, SOON).await,
        "fewer than 3 reversals reached A"
    );
    // Back-off 0.2 s then 0.4 s between the three tries.
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "three reversal tries within {:?}: no back-off",
        started.elapsed()
    );
    eventually("reversal metrics: 2 retries, 1 success", SOON, || async {
        let m = p.metrics().await;
        m.get("payroute_reversals_total", &[("channel", "A"), ("result", "retry")]) == 2.0
            && m.get("payroute_reversals_total", &[("channel", "A"), ("result", "success")]) == 1.0
    })
    .await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(a.count("POST", REVERSE), 3, "reversal tried again after it succeeded");
    let m = p.metrics().await;
    assert_eq!(
        m.get("payroute_reversals_total", &[("channel", "A"), ("result", "gave_up")]),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_errors_are_never_ambiguous() {
    let b = acquirer("B").await;
    let cfg = Config::pair(("A", &refused_url()), ("B", &b.url()))
        .amend("A", &lines(&[FAST, QUERY, REVERSAL]))
        .amend("B", &lines(&[QUERY, REVERSAL]));
    let p = PAYROUTE.serve(cfg).await;
    let r = p.pay("m-1", 1000).await;
    r.assert_ok();
    assert_eq!(r.channel().as_deref(), Some("B"));
    assert_eq!(r.attempts(), Some(2));
    assert_not_ambiguous(&r);

    tokio::time::sleep(QUIET).await;
    assert_eq!(b.hits(), 1, "B received more than the payment: {:?}", b.received());
    let m = p.metrics().await;
    assert_eq!(m.get("payroute_ambiguous_total", &[]), 0.0, "{}", m.0);
    assert_eq!(m.get("payroute_reversals_total", &[]), 0.0, "{}", m.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_5xx_without_query_or_reversal_is_named_and_not_failed_over() {
    // Nothing can prove A's 5xx harmless: trying B could charge twice.
    let (a, b, config) = a_answering(Reply::status(503), Reply::ok(), &[FAST]).await;
    let p = PAYROUTE.serve(config).await;
    let body = payment_body(1000, "CNY");
    let r = p.post_payment("m-1", &body, &[]).await;
    r.assert_error(502, "upstream_failed");
    assert_eq!(r.ambiguous().as_deref(), Some("A"));
    assert_eq!(a.hits(), 1, "A got something besides the payment");
    tokio::time::sleep(QUIET).await;
    assert_eq!(b.hits(), 0, "an unresolved ambiguous attempt was failed over");
    let m = p.metrics().await;
    assert!(m.get("payroute_ambiguous_total", &[("channel", "A")]) >= 1.0, "{}", m.0);
    assert_eq!(m.get("payroute_failovers_total", &[]), 0.0, "{}", m.0);
    // The answer is kept: a repeat reaches nobody.
    assert_replay_of(&p.post_payment("m-1", &body, &[]).await, &r);
    assert_eq!((a.hits(), b.hits()), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_timeout_without_query_or_reversal_stops_with_504() {
    let (a, b, config) = a_answering(Reply::hang(), Reply::ok(), &[FAST]).await;
    let p = PAYROUTE.serve(config).await;
    let r = p.pay("m-1", 1000).await;
    r.assert_error(504, "upstream_timeout");
    assert_eq!(r.ambiguous().as_deref(), Some("A"));
    assert_eq!(a.hits(), 1, "A got something besides the payment");
    tokio::time::sleep(QUIET).await;
    assert_eq!(b.hits(), 0, "an unresolved ambiguous timeout was failed over");
    let m = p.metrics().await;
    assert!(m.get("payroute_ambiguous_total", &[("channel", "A")]) >= 1.0, "{}", m.0);
    assert_eq!(m.get("payroute_failovers_total", &[]), 0.0, "{}", m.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_answering_5xx_without_reversal_stops_the_payment() {
    // The query cannot tell (5xx), and there is no reversal: A's timeout
    // stays unresolved, so B is not tried.
    let (a, b, config) = a_answering(Reply::hang(), Reply::status(503), &[FAST, QUERY]).await;
    let p = PAYROUTE.serve(config).await;
    let r = p.pay("m-1", 1000).await;
    r.assert_error(504, "upstream_timeout");
    assert_eq!(r.ambiguous().as_deref(), Some("A"));
    assert_eq!(a.count("GET", ORDER), 1, "A was not asked");
    tokio::time::sleep(QUIET).await;
    assert_eq!(b.hits(), 0, "an unresolved ambiguous timeout was failed over");
    assert_eq!(
        a.count("POST", REVERSE),
        0,
        "a reversal was sent without one configured"
    );
    assert_eq!((payments(&a), a.hits()), (1, 2), "A got {:?}", a.received());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_template_can_name_the_trade_number() {
    // Two merchants may use one order id on one channel; the trade number
    // names this payment and no other.
    let by_trade = r#"query = { method = "GET", path = "/v1/trades/{trade_no}" }"#;
    let paid = r#"{"status":"paid","via":"query"}"#;
    let (a, b, config) = a_answering(Reply::hang(), Reply::status(404), &[FAST, by_trade]).await;
    a.on("GET", "/v1/trades/*", Reply::ok().with_body(paid));
    let p = PAYROUTE.serve(config).await;

    let r = p.pay("m-1", 1000).await;
    r.assert_ok();
    assert_eq!(r.text(), paid, "the query's answer is the payment's answer");
    let trade_no = r.trade_no().expect("X-Payroute-Trade-No on the answer");
    let queries = a.received_to("GET", "/v1/trades/*");
    assert_eq!(queries.len(), 1, "A got {:?}", a.received());
    assert_eq!(queries[0].path, format!("/v1/trades/{trade_no}"));
    assert_eq!(
        queries[0].header("x-payroute-trade-no").as_deref(),
        Some(trade_no.as_str())
    );
    let payment = a.received_to("POST", PAY).pop().expect("A got the payment");
    assert_eq!(
        payment.header("x-payroute-trade-no").as_deref(),
        Some(trade_no.as_str())
    );
    assert_eq!(a.count("GET", ORDER), 0, "the template was not used");
    assert_eq!(b.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_not_failed_over_is_returned_as_is_and_not_ambiguous() {
    let (a, b, config) = a_answering(Reply::status(503), Reply::ok(), &[FAST, QUERY, REVERSAL]).await;
    let p = PAYROUTE
        .serve(config.routing(r#"failover_on = ["connect", "timeout"]"#))
        .await;
    let r = p.pay("m-1", 1000).await;
    assert_eq!((r.status, r.channel().as_deref()), (503, Some("A")), "{}", r.text());
    assert_not_ambiguous(&r);
    tokio::time::sleep(QUIET).await;
    assert_eq!(a.hits(), 1, "A was queried or reversed: {:?}", a.received());
    assert_eq!(b.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ambiguous_timeout_not_failed_over_is_still_resolved() {
    // failover_on without "timeout": no failover, but the attempt is still
    // asked about and reversed.
    let (a, b, config) = a_answering(Reply::hang(), Reply::status(500), &[FAST, QUERY, REVERSAL]).await;
    let p = PAYROUTE
        .serve(config.routing(r#"failover_on = ["connect", "5xx"]"#))
        .await;
    let body = payment_body(1000, "CNY");
    let r = p.post_payment("m-1", &body, &[]).await;
    r.assert_error(504, "upstream_timeout");
    assert_eq!(r.header("x-payroute-ambiguous").as_deref(), Some("A"));
    assert_eq!(a.count("GET", ORDER), 1);
    assert!(a.wait_count("POST", REVERSE, 1, SOON).await, "no reversal reached A");
    assert_eq!(b.hits(), 0, "a timeout was failed over against failover_on");
    let replay = p.post_payment("m-1", &body, &[]).await;
    assert_replay_of(&replay, &r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_query_is_bounded_by_the_payment_deadline() {
    // Attempt timeout 2 s, deadline 2.5 s, A hangs on payment and query: the
    // query may only use what is left of the deadline (~0.5 s), not 2 s more.
    let (a, _b, config) = a_answering(Reply::hang(), Reply::hang(), &["timeout_ms = 2000", QUERY]).await;
    let p = PAYROUTE.serve(config.server("deadline_ms = 2500")).await;
    let r = p.pay("m-1", 1000).await;
    assert_eq!(a.count("GET", ORDER), 1, "A was not asked");
    assert!(
        r.elapsed < Duration::from_millis(3600),
        "deadline 2.5 s, answered after {:?}: the query outlived the deadline",
        r.elapsed
    );
    assert!(
        r.status == 504 || (200..300).contains(&r.status),
        "{} {}",
        r.status,
        r.text()
    );
    assert_eq!(r.header("x-payroute-ambiguous").as_deref(), Some("A"));
}

/// The fault soak's finding (RELIABILITY.md, "Fault soak"): acquirer A
/// charges, notifies "paid" at once, but answers the payment — and its
/// status query — after payroute's timeout. The attempt stays unknown, so a
/// reversal goes out and payroute would fail over; but the notification has
/// already settled the payment on A in the journal. Failing over charged B
/// for a payment the journal counted on A (and later marked reversed):
/// money at B that no record knew of. It must stop at A instead, and keep
/// A's payment: the notification settled it, so no reversal undoes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_a_notification_settled_mid_attempt_is_never_failed_over() {
    const SECRET: &str = "whsec-race";
    let a = MockAcquirer::builder()
        .name("A")
        .record()
        .ledger()
        .start()
        .await
        .expect("mock A starts");
    let b = acquirer("B").await;
    let lines_a = lines(&[
        "timeout_ms = 1000\nconnect_timeout_ms = 300",
        r#"outcome = { pointer = "/status", paid = ["paid"], pending = ["processing"], declined = ["declined", "failed"] }"#,
        r#"notify = { signature_header = "x-signature", secret = "whsec-race", amount_pointer = "/amount" }"#,
        r#"query = { method = "GET", path = "/v1/payments/{trade_no}" }"#,
        r#"reversal = { method = "POST", path = "/v1/payments/{trade_no}/reverse" }"#,
    ]);
    let p = PAYROUTE
        .serve(
            a_then_b(&a, &b)
                .amend("A", &lines_a)
                .sweeper("query_after_ms = [600000]"),
        )
        .await;
    // Decided (paid) and announced 20 ms after the payment arrives; the
    // answer and every query come ten minutes late.
    a.set_behavior(
        payroute_mock::Behavior::default()
            .with_outcome_in_body()
            .with_pending(1.0, 20)
            .notify_to(&p.url("/notify/A"), SECRET),
    );
    a.set_fault(payroute_mock::Fault {
        kind: payroute_mock::FaultKind::Late,
        late_ms: 600_000,
        queries: true,
        ..payroute_mock::Fault::default()
    })
    .expect("a valid fault");

    let r = p.pay("m-1", 1250).await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.header("x-payroute-ambiguous").as_deref(), Some("A"), "{}", r.text());
    assert_eq!(payments(&b), 0, "a payment the journal settled on A must never reach B");
    let m = p.metrics().await;
    assert_eq!(
        m.get(
            "payroute_notifications_in_total",
            &[("channel", "A"), ("result", "accepted")]
        ),
        1.0,
        "the notification settled it first: {}",
        m.0
    );
    // The notification is the payment's fate: paid on A, and kept — no
    // reversal undoes it (the merchant was told "paid" by its event).
    tokio::time::sleep(QUIET).await;
    assert_eq!(a.count("POST", REVERSE), 0, "a settled payment is not reversed");
    let charges = a.charges();
    assert_eq!(charges.len(), 1);
    assert!(charges[0].reversed_ms.is_none(), "{charges:?}");
    let m = p.metrics().await;
    assert_eq!(m.get("payroute_payments_total", &[("state", "paid")]), 1.0, "{}", m.0);
    assert_eq!(
        m.get("payroute_payments_total", &[("state", "reversed")]),
        0.0,
        "{}",
        m.0
    );
}

// ---------------------------------------------------------------------------
// Shutdown
// ---------------------------------------------------------------------------

/// Pays once through `p` (A answers 503 and is reversed, B serves), waits
/// for A's first reversal try, then stops the proxy with SIGTERM: it must
/// exit 0 within 16 s. The order, and how long the exit took.
async fn pay_then_stop(p: &mut Proxy, a: &MockAcquirer) -> (String, Duration) {
    let body = payment_body(1000, "CNY");
    let r = p.post_payment("m-1", &body, &[]).await;
    r.assert_ok();
    assert_eq!(r.header("x-payroute-ambiguous").as_deref(), Some("A"));
    assert!(a.wait_count("POST", REVERSE, 1, SOON).await, "no reversal reached A");

    let started = Instant::now();
    p.sigterm();
    let status = p
        .wait_exit(Duration::from_secs(30))
        .await
        .unwrap_or_else(|| panic!("still running 30 s after SIGTERM:\n{}", p.logs().join("\n")));
    let took = started.elapsed();
    assert!(status.success(), "exit status {status}:\n{}", p.logs().join("\n"));
    (order_of(&body), took)
}

/// Whether a log line names `order`. Its random part may read as a card
/// number (digits split by single letters, Luhn-valid) and be masked, as
/// every log line's is: so the line is matched on the order id's fixed
/// prefix and its last segment, which no mask touches.
fn names(line: &str, order: &str) -> bool {
    let prefix = order.rsplitn(3, '-').last().unwrap_or(order);
    let last = order.rsplit('-').next().unwrap_or(order);
    line.contains(order) || (line.contains(prefix) && line.contains(&format!("-{last}")))
}

/// The error line `wanted` picks from the proxy's output; it must name
/// channel A. Waits up to 10 s: the line is written just before the
/// process exits, and on a loaded machine the reader of its stderr may
/// trail behind (a bound, not a timing claim).
async fn error_logged(p: &Proxy, what: &str, wanted: impl Fn(&String) -> bool) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !p.logs().iter().any(|l| l.contains("ERROR") && wanted(l)) {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after 10s waiting for: {what}; the proxy logged:\n{}",
            p.logs().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let line = p.logs().into_iter().find(|l| l.contains("ERROR") && wanted(l)).unwrap();
    assert!(
        line.contains("channel=A") || line.contains("channel=\"A\""),
        "channel not named: {line}"
    );
    line
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_logs_reversals_left_pending() {
    let (a, _b, config) = a_answering(Reply::status(503), Reply::ok(), &[FAST, REVERSAL]).await;
    a.on("POST", REVERSE, Reply::status(503));
    let mut p = PAYROUTE.serve(config).await;
    let (order, took) = pay_then_stop(&mut p, &a).await;
    let line = error_logged(&p, "an error log naming the order and channel", |l| {
        names(l, &order) && l.contains("A") && (l.contains("gave up") || l.contains("unfinished"))
    })
    .await;
    eprintln!("shutdown took {took:?}; logged: {line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_at_most_10s_for_reversals_then_logs_them() {
    // The reversal endpoint hangs and each try may take 2 s: the tries
    // outlast the 10 s shutdown allowance, so the reversal is left unfinished.
    let (a, _b, config) = a_answering(Reply::status(503), Reply::ok(), &["timeout_ms = 2000", REVERSAL]).await;
    a.on("POST", REVERSE, Reply::hang());
    let mut p = PAYROUTE.serve(config).await;
    let (order, took) = pay_then_stop(&mut p, &a).await;
    assert!(
        took >= Duration::from_secs(8),
        "exited after {took:?}: the pending reversal was not given its time"
    );
    error_logged(&p, "an error log naming the unfinished reversal", |l| {
        names(l, &order) && l.contains("unfinished")
    })
    .await;
}
