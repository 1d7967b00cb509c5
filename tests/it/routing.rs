//! Channel choice: preference by success rate, latency and fee; allow-lists,
//! currency and amount eligibility; max_in_flight.

use std::time::Duration;

use payroute_mock::{MockAcquirer, Reply};
use payroute_testkit::*;

use crate::PAYROUTE;

/// Paying acquirers "a" and "b" behind channels a and b (with these lines),
/// and merchant m-1.
async fn a_and_b(a_lines: &str, b_lines: &str) -> (MockAcquirer, MockAcquirer, Config) {
    let a = acquirer("a").await;
    let b = acquirer("b").await;
    let config = Config::new()
        .channel("a", &a.url(), a_lines)
        .channel("b", &b.url(), b_lines)
        .merchant("m-1", "");
    (a, b, config)
}

/// Sends `n` sequential CNY payments of `amount` for `merchant`, asserting
/// each succeeds; returns the responses.
async fn pay_n(p: &Proxy, merchant: &str, amount: i64, n: usize) -> Vec<Resp> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let r = p.pay(merchant, amount).await;
        r.assert_ok();
        out.push(r);
    }
    out
}

#[track_caller]
fn assert_majority(resps: &[Resp], channel: &str, share: f64) {
    let counts = count_channels(resps);
    let got = counts.get(channel).copied().unwrap_or(0);
    assert!(
        got as f64 >= share * resps.len() as f64,
        "expected channel {channel} to serve >= {:.0}% of {} payments, got {counts:?}",
        share * 100.0,
        resps.len()
    );
}

/// Warms up with 15 payments of `amount`, then asserts that "b" took at least
/// 80 % of the next 15, by `X-Payroute-Channel` and by the acquirers' counters.
async fn assert_b_wins_later_half(p: &Proxy, a: &MockAcquirer, b: &MockAcquirer, amount: i64) {
    pay_n(p, "m-1", amount, 15).await;
    let (a0, b0) = (a.hits(), b.hits());
    let later = pay_n(p, "m-1", amount, 15).await;
    let (a1, b1) = (a.hits() - a0, b.hits() - b0);
    assert_majority(&later, "b", 0.8);
    assert!(
        b1 as f64 >= 0.8 * (a1 + b1) as f64,
        "acquirer counters in the later half: a={a1} b={b1}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefers_higher_success_rate_over_lower_fee() {
    // A is cheaper but fails half its payments with 503 (proven harmless by
    // its query, so they fail over); B always succeeds.
    let (a, b, config) = a_and_b(&format!("fee_percent = 0.3\n{QUERY}"), "fee_percent = 0.6").await;
    a.set_behavior(Reply::ok().failing(0.5, 503));
    never_charged(&a);
    // No ejection in this test: success rate alone must decide.
    let p = PAYROUTE
        .serve(config.routing("eject_consecutive_failures = 1000"))
        .await;
    let first = pay_n(&p, "m-1", 10_000, 20).await;
    let (a0, b0) = (payments(&a), payments(&b));
    let later = pay_n(&p, "m-1", 10_000, 20).await;
    let (a1, b1) = (payments(&a) - a0, payments(&b) - b0);
    assert_majority(&later, "b", 0.8);
    assert!(
        b1 as f64 >= 0.8 * (a1 + b1) as f64,
        "acquirer counters in the later half: a={a1} b={b1}"
    );
    // Every payment succeeded even when A failed (failover to B).
    assert!(first.iter().chain(&later).all(|r| r.status == 200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefers_lower_latency() {
    let (a, b, config) = a_and_b("fee_percent = 0.3", "fee_percent = 0.3").await;
    a.set_behavior(Reply::ok().with_delay(Duration::from_millis(400)));
    let p = PAYROUTE.serve(config).await;
    assert_b_wins_later_half(&p, &a, &b, 10_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefers_lower_fee() {
    // Identical acquirers; only the fee differs.
    let (a, b, config) = a_and_b("fee_percent = 1.5", "fee_percent = 0.3").await;
    let p = PAYROUTE.serve(config).await;
    assert_b_wins_later_half(&p, &a, &b, 10_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_fee_counts_against_the_amount() {
    // On 1000 minor units, a fixed fee of 50 (5%) loses to 0.5%; on
    // 1_000_000 it is 0.005% and wins against 0.5%.
    let a = acquirer("a").await;
    let b = acquirer("b").await;
    let config = Config::new()
        .channel("a", &a.url(), "fee_percent = 0.0\nfee_fixed = 50")
        .channel("b", &b.url(), "fee_percent = 0.5")
        .merchant("m-1", "max_amount = 0\ndaily_limit = 0");
    let p = PAYROUTE.serve(config).await;
    let small = pay_n(&p, "m-1", 1_000, 10).await;
    assert_majority(&small, "b", 0.8);
    let large = pay_n(&p, "m-1", 1_000_000, 10).await;
    assert_majority(&large, "a", 0.8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merchant_allow_list_is_respected() {
    // B is cheaper, but m-a may only use A, m-b only B; m-all uses either.
    let (a, b, config) = a_and_b("fee_percent = 0.9", "fee_percent = 0.1").await;
    let config = config
        .merchant("m-a", "channels = [\"a\"]")
        .merchant("m-b", "channels = [\"b\"]")
        .merchant("m-all", "channels = []");
    let p = PAYROUTE.serve(config).await;
    let ra = pay_n(&p, "m-a", 500, 8).await;
    assert_majority(&ra, "a", 1.0);
    assert_eq!((a.hits(), b.hits()), (8, 0));
    let rb = pay_n(&p, "m-b", 500, 8).await;
    assert_majority(&rb, "b", 1.0);
    assert_eq!((a.hits(), b.hits()), (8, 8));
    let rall = pay_n(&p, "m-all", 500, 8).await;
    assert_majority(&rall, "b", 0.8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_list_holds_during_failover() {
    // m-a may only use A; A fails: B must not be tried.
    let (a, b, config) = a_and_b("fee_percent = 0.1", "fee_percent = 0.9").await;
    a.set_behavior(Reply::status(503));
    let p = PAYROUTE.serve(config.merchant("m-a", "channels = [\"a\"]")).await;
    p.pay("m-a", 500).await.assert_error(502, "upstream_failed");
    assert_eq!(a.hits(), 1);
    assert_eq!(b.hits(), 0, "channel outside the allow-list was tried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn currency_eligibility() {
    let cny = acquirer("cny").await;
    let usd = acquirer("usd").await;
    let any = acquirer("any").await;
    let config = Config::new()
        .channel("cny", &cny.url(), "fee_percent = 0.1\ncurrencies = [\"CNY\"]")
        .channel("usd", &usd.url(), "fee_percent = 0.1\ncurrencies = [\"USD\", \"EUR\"]")
        // Expensive catch-all: used only when nothing cheaper takes the currency.
        .channel("any", &any.url(), "fee_percent = 2.0")
        .merchant("m-1", "");
    let p = PAYROUTE.serve(config).await;
    for _ in 0..3 {
        let r = p.pay_ccy("m-1", 100, "CNY").await;
        r.assert_ok();
        assert_eq!(r.channel().as_deref(), Some("cny"));
        let r = p.pay_ccy("m-1", 100, "USD").await;
        r.assert_ok();
        assert_eq!(r.channel().as_deref(), Some("usd"));
        let r = p.pay_ccy("m-1", 100, "EUR").await;
        r.assert_ok();
        assert_eq!(r.channel().as_deref(), Some("usd"));
        let r = p.pay_ccy("m-1", 100, "JPY").await;
        r.assert_ok();
        assert_eq!(r.channel().as_deref(), Some("any"));
    }
    assert_eq!((cny.hits(), usd.hits(), any.hits()), (3, 6, 3));
    for rec in usd.received() {
        let c = rec.json()["currency"].as_str().unwrap().to_string();
        assert!(c == "USD" || c == "EUR", "usd channel got {c}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn currency_without_channel_is_422() {
    let a = acquirer("a").await;
    let p = PAYROUTE
        .serve(Config::single("a", &a.url()).amend("a", "currencies = [\"CNY\"]"))
        .await;
    p.pay_ccy("m-1", 100, "USD")
        .await
        .assert_error(422, "no_eligible_channel");
    assert_eq!(a.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amount_bounds_eligibility() {
    // small: up to 1000 (cheap); large: from 1001 (expensive).
    let small = acquirer("small").await;
    let large = acquirer("large").await;
    let config = Config::new()
        .channel(
            "small",
            &small.url(),
            "fee_percent = 0.1\nmin_amount = 0\nmax_amount = 1000",
        )
        .channel("large", &large.url(), "fee_percent = 1.0\nmin_amount = 1001")
        .merchant("m-1", "");
    let p = PAYROUTE.serve(config).await;
    for (amount, want) in [
        (1, "small"),
        (999, "small"),
        (1000, "small"),
        (1001, "large"),
        (250_000, "large"),
    ] {
        let r = p.pay("m-1", amount).await;
        r.assert_ok();
        assert_eq!(r.channel().as_deref(), Some(want), "amount {amount}");
    }
    assert_eq!((small.hits(), large.hits()), (3, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amount_outside_every_channel_is_422() {
    let a = acquirer("a").await;
    let p = PAYROUTE
        .serve(Config::single("a", &a.url()).amend("a", "min_amount = 100\nmax_amount = 1000"))
        .await;
    p.pay("m-1", 99).await.assert_error(422, "no_eligible_channel");
    p.pay("m-1", 1001).await.assert_error(422, "no_eligible_channel");
    assert_eq!(a.hits(), 0);
    p.pay("m-1", 100).await.assert_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_list_and_currency_combine_to_422() {
    // m-a may only use "a", which does not take USD; "b" does but is not allowed.
    let a = acquirer("a").await;
    let b = acquirer("b").await;
    let config = Config::new()
        .channel("a", &a.url(), "currencies = [\"CNY\"]")
        .channel("b", &b.url(), "currencies = [\"USD\"]")
        .merchant("m-a", "channels = [\"a\"]");
    let p = PAYROUTE.serve(config).await;
    p.pay_ccy("m-a", 100, "USD")
        .await
        .assert_error(422, "no_eligible_channel");
    assert_eq!((a.hits(), b.hits()), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_channel_is_never_used() {
    let (a, _b, config) = a_and_b("fee_percent = 0.1\nenabled = false", "fee_percent = 0.9").await;
    let p = PAYROUTE.serve(config).await;
    let rs = pay_n(&p, "m-1", 100, 5).await;
    assert_majority(&rs, "b", 1.0);
    assert_eq!(a.hits(), 0);
    assert_eq!(p.channel_state("a").await, "disabled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_channel_is_skipped() {
    // A is cheaper but takes one payment at a time.
    let (a, _b, config) = a_and_b("fee_percent = 0.1\nmax_in_flight = 1", "fee_percent = 0.9").await;
    a.set_behavior(Reply::ok().with_delay(Duration::from_millis(1500)));
    let p = PAYROUTE.serve(config).await;
    let api = p.api.clone();
    let slow = tokio::spawn(async move { api.pay("m-1", 100).await });
    assert!(
        a.wait_hits(1, Duration::from_secs(5)).await,
        "the slow payment did not reach a"
    );
    // A is full now: the next payments go to B at once.
    for _ in 0..3 {
        let r = p.pay("m-1", 100).await;
        r.assert_ok();
        assert_eq!(r.channel().as_deref(), Some("b"));
        assert!(r.elapsed < Duration::from_millis(1200), "{:?}", r.elapsed);
    }
    let r = slow.await.unwrap();
    r.assert_ok();
    assert_eq!(r.channel().as_deref(), Some("a"));
    assert_eq!(a.max_in_flight(), 1);
    assert_eq!(a.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_channel_full_is_503() {
    let a = acquirer_with("a", Reply::ok().with_delay(Duration::from_millis(1500))).await;
    let p = PAYROUTE
        .serve(Config::single("a", &a.url()).amend("a", "max_in_flight = 2"))
        .await;
    let mut slow = Vec::new();
    for _ in 0..2 {
        let api = p.api.clone();
        slow.push(tokio::spawn(async move { api.pay("m-1", 100).await }));
    }
    assert!(
        a.wait_hits(2, Duration::from_secs(5)).await,
        "the slow payments did not reach a"
    );
    let r = p.pay("m-1", 100).await;
    r.assert_error(503, "no_channel_available");
    for s in slow {
        s.await.unwrap().assert_ok();
    }
    assert_eq!(a.hits(), 2);
    assert_eq!(a.max_in_flight(), 2);
    // Capacity is back once they finished.
    p.pay("m-1", 100).await.assert_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_payment_frees_its_slot() {
    // The merchant hangs up while its payment is at the acquirer: once the
    // acquirer answers, the channel's in-flight slot must be free again.
    let a = acquirer_with("a", Reply::ok().with_delay(Duration::from_millis(800))).await;
    let p = PAYROUTE
        .serve(Config::single("a", &a.url()).amend("a", "max_in_flight = 1"))
        .await;
    // Raw TCP so that hanging up really closes the connection.
    let body = payment_body(100, "CNY").to_string();
    let req = format!(
        "POST /v1/payments HTTP/1.1\r\nhost: x\r\nx-merchant-id: m-1\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut conn = tokio::net::TcpStream::connect(p.listen).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut conn, req.as_bytes())
        .await
        .unwrap();
    assert!(
        a.wait_hits(1, Duration::from_secs(5)).await,
        "the payment did not reach a"
    );
    drop(conn);
    eventually("in_flight back to 0", Duration::from_secs(10), || async {
        p.channel("a").await["in_flight"].as_u64() == Some(0)
    })
    .await;
    a.set_behavior(Reply::ok());
    let r = p.pay("m-1", 100).await;
    r.assert_ok();
    assert_eq!(r.channel().as_deref(), Some("a"));
}
