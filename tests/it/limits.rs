//! Merchant limits: rate limit with Retry-After, max_amount, daily_limit
//! (atomic under concurrency, released when a payment fails).

use std::time::Duration;

use payroute_mock::{MockAcquirer, Reply};
use payroute_testkit::*;

use crate::PAYROUTE;

/// One channel to `acq`, merchant m-1 with `merchant_lines` and m-2 at 1/s.
fn cfg_with(acq: &MockAcquirer, merchant_lines: &str) -> Config {
    Config::new()
        .channel("a", &acq.url(), "")
        .merchant("m-1", merchant_lines)
        .merchant("m-2", "rate_per_sec = 1\nburst = 1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_refuses_then_recovers() {
    let acq = acquirer("a").await;
    let p = PAYROUTE.serve(cfg_with(&acq, "rate_per_sec = 2\nburst = 3")).await;
    let mut ok = 0usize;
    let mut retry_after = None;
    for _ in 0..10 {
        let r = p.pay("m-1", 100).await;
        match r.status {
            429 => {
                r.assert_error(429, "rate_limited");
                let ra = r.header("retry-after").expect("429 without Retry-After");
                let secs: u64 = ra.trim().parse().expect("Retry-After in whole seconds");
                assert!((1..=2).contains(&secs), "Retry-After {secs} at 2/s");
                retry_after = Some(secs);
            }
            _ => {
                r.assert_ok();
                ok += 1;
            }
        }
    }
    let retry_after = retry_after.expect("10 rapid payments at 2/s burst 3: no 429");
    // The burst passes; little more can (10 requests take well under 2 s).
    assert!((3..=7).contains(&ok), "{ok} of 10 passed at 2/s burst 3");
    assert_eq!(acq.hits(), ok, "a rate-limited payment reached the acquirer");

    // Another merchant has its own bucket.
    p.pay("m-2", 100).await.assert_ok();

    // After Retry-After, the merchant is served again.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    p.pay("m-1", 100).await.assert_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_refill_rate() {
    // 5/s, burst 1: over ~1.2 s of continuous sending about 5-7 pass.
    let acq = acquirer("a").await;
    let p = PAYROUTE.serve(cfg_with(&acq, "rate_per_sec = 5\nburst = 1")).await;
    let start = std::time::Instant::now();
    let mut ok = 0;
    let mut refused = 0;
    while start.elapsed() < Duration::from_millis(1200) {
        let r = p.pay("m-1", 100).await;
        if r.status == 429 {
            refused += 1;
        } else {
            r.assert_ok();
            ok += 1;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let max = (1.0 + 5.0 * secs).ceil() as usize + 1;
    assert!(refused > 0, "nothing refused at 5/s");
    assert!(
        (4..=max).contains(&ok),
        "{ok} payments passed in {secs:.2}s at 5/s burst 1 (max {max})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_amount_boundary() {
    let acq = acquirer("a").await;
    let p = PAYROUTE.serve(cfg_with(&acq, "max_amount = 5000")).await;
    p.pay("m-1", 5000).await.assert_ok();
    p.pay("m-1", 5001).await.assert_error(422, "amount_limit_exceeded");
    p.pay("m-1", 1_000_000).await.assert_error(422, "amount_limit_exceeded");
    assert_eq!(acq.hits(), 1);
    // max_amount = 0 means no limit.
    let p2 = PAYROUTE.serve(cfg_with(&acq, "max_amount = 0\ndaily_limit = 0")).await;
    p2.pay("m-1", 900_000_000).await.assert_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_limit_holds_under_concurrency() {
    // 20 concurrent payments of 100 against a limit of 1000: exactly 10 pass.
    let acq = acquirer("a").await;
    acq.set_behavior(Reply::ok().with_delay(Duration::from_millis(200)));
    let p = PAYROUTE.serve(cfg_with(&acq, "daily_limit = 1000")).await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let api = p.api.clone();
        tasks.push(tokio::spawn(async move { api.pay("m-1", 100).await }));
    }
    let mut ok = 0;
    let mut refused = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            200 => ok += 1,
            _ => {
                r.assert_error(422, "daily_limit_exceeded");
                refused += 1;
            }
        }
    }
    assert_eq!((ok, refused), (10, 10));
    assert_eq!(acq.hits(), 10);
    assert!(acq.max_in_flight() > 1, "payments did not overlap");
    p.pay("m-1", 1).await.assert_error(422, "daily_limit_exceeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_payment_releases_its_reservation() {
    let acq = acquirer("a").await;
    never_charged(&acq);
    let p = PAYROUTE
        .serve(cfg_with(&acq, "daily_limit = 1000").amend("a", QUERY))
        .await;
    // Fails upstream (503 on the only channel, which its query proves
    // uncharged): nothing was accepted.
    acq.set_behavior(Reply::ok().failing_first(1, 503));
    p.pay("m-1", 1000).await.assert_error(502, "upstream_failed");
    // The full limit is still available.
    p.pay("m-1", 1000).await.assert_ok();
    p.pay("m-1", 1).await.assert_error(422, "daily_limit_exceeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declined_payment_releases_its_reservation() {
    let acq = acquirer("a").await;
    let p = PAYROUTE.serve(cfg_with(&acq, "daily_limit = 1000")).await;
    acq.set_behavior(Reply::status(402));
    let r = p.pay("m-1", 800).await;
    assert_eq!(r.status, 402);
    acq.set_behavior(Reply::ok());
    p.pay("m-1", 1000).await.assert_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_failures_release_and_successes_count() {
    // 10 concurrent payments of 100 against 500; the acquirer fails every
    // other one (and its query proves them uncharged). Failures release, so
    // 5 successes fit eventually.
    let acq = acquirer("a").await;
    acq.set_behavior(Reply::ok().with_delay(Duration::from_millis(100)).failing(0.5, 503));
    never_charged(&acq);
    let p = PAYROUTE
        .serve(cfg_with(&acq, "daily_limit = 500").amend("a", QUERY))
        .await;
    let mut accepted = 0;
    for _round in 0..10 {
        if accepted == 5 {
            break;
        }
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let api = p.api.clone();
            tasks.push(tokio::spawn(async move { api.pay("m-1", 100).await }));
        }
        for t in tasks {
            let r = t.await.unwrap();
            match r.status {
                200 => accepted += 1,
                422 => r.assert_error(422, "daily_limit_exceeded"),
                _ => r.assert_error(502, "upstream_failed"),
            }
        }
        assert!(accepted <= 5, "accepted {accepted} x 100 over a limit of 500");
    }
    assert_eq!(accepted, 5, "released reservations must be reusable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_that_may_have_been_charged_keeps_its_reservation() {
    // A 503 nothing can resolve (no query, no reversal): the payment stays
    // pending, possibly charged, so it still counts against the day.
    let acq = acquirer_with("a", Reply::status(503)).await;
    let p = PAYROUTE.serve(cfg_with(&acq, "daily_limit = 1000")).await;
    let r = p.pay("m-1", 1000).await;
    r.assert_error(502, "upstream_failed");
    assert_eq!(r.header("x-payroute-ambiguous").as_deref(), Some("a"));
    acq.set_behavior(Reply::ok());
    p.pay("m-1", 1).await.assert_error(422, "daily_limit_exceeded");
}
