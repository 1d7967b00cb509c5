//! Failover: which outcomes move a payment to the next channel, how many
//! channels are tried, the whole-payment deadline, ejection and recovery.
//!
//! A channel is failed over on an ambiguous attempt (timeout, 5xx) only if
//! it can prove the attempt harmless, so the channels here have a `query`
//! that their acquirers answer "no such payment" ([`never_charged`]), and
//! acquirers are asked how many *payments* reached them ([`payments`]),
//! queries aside. What happens without a query is `never_twice`'s subject.

use std::time::Duration;

use payroute_mock::{MockAcquirer, Reply};
use payroute_testkit::*;

use crate::PAYROUTE;

/// Acquirer "a" answering payments with `a_reply` and a paying acquirer
/// "b", behind channels a (fee 0.1) and b (fee 0.9), with merchant m-1: a is
/// tried first. Both channels have a query, which both acquirers answer
/// "no such payment".
async fn a_then_b(a_reply: Reply) -> (MockAcquirer, MockAcquirer, Config) {
    let a = queried_acquirer("a", a_reply).await;
    let b = queried_acquirer("b", Reply::ok()).await;
    let config = Config::pair(("a", &a.url()), ("b", &b.url()))
        .amend("a", QUERY)
        .amend("b", QUERY);
    (a, b, config)
}

/// Acquirers answering payments with `reply`, named `prefix`1, `prefix`2,
/// ..., behind channels of the same names with `lines` and a query (answered
/// "no such payment").
async fn acquirers(
    prefix: &str,
    n: usize,
    reply: Reply,
    lines: &str,
    mut config: Config,
) -> (Vec<MockAcquirer>, Config) {
    let mut acqs = Vec::with_capacity(n);
    for i in 1..=n {
        let id = format!("{prefix}{i}");
        let a = queried_acquirer(&id, reply.clone()).await;
        config = config.channel(&id, &a.url(), lines).amend(&id, QUERY);
        acqs.push(a);
    }
    (acqs, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connection_fails_over() {
    let b = acquirer("b").await;
    // The dead channel is cheaper, so it is tried first.
    let p = PAYROUTE
        .serve(Config::pair(("dead", &refused_url()), ("b", &b.url())))
        .await;
    let r = p.pay("m-1", 100).await;
    r.assert_ok();
    assert_eq!(r.channel().as_deref(), Some("b"));
    assert_eq!(r.attempts(), Some(2));
    assert_eq!(b.hits(), 1);
    let m = p.metrics().await;
    assert!(
        m.get(
            "payroute_attempts_total",
            &[("channel", "dead"), ("result", "connect_error")]
        ) >= 1.0,
        "connect_error attempt not counted:\n{}",
        m.0
    );
    assert!(
        m.get("payroute_failovers_total", &[("from_channel", "dead")]) >= 1.0,
        "failover not counted:\n{}",
        m.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_fails_over() {
    let (a, b, config) = a_then_b(Reply::hang()).await;
    let p = PAYROUTE.serve(config.amend("a", "timeout_ms = 300")).await;
    let r = p.pay("m-1", 100).await;
    r.assert_ok();
    assert_eq!(r.channel().as_deref(), Some("b"));
    assert_eq!(r.attempts(), Some(2));
    assert_eq!((payments(&a), payments(&b)), (1, 1));
    assert_eq!(a.count("GET", ORDER), 1, "a was not asked about the timed-out payment");
    assert_eq!(r.ambiguous(), None, "a proved the timeout harmless");
    assert!(
        r.elapsed >= Duration::from_millis(250) && r.elapsed < Duration::from_secs(3),
        "one 300 ms timeout then a fast success took {:?}",
        r.elapsed
    );
    let m = p.metrics().await;
    assert!(
        m.get("payroute_attempts_total", &[("channel", "a"), ("result", "timeout")]) >= 1.0,
        "timeout attempt not counted:\n{}",
        m.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decline_is_returned_as_is_and_not_retried() {
    let declined = Reply::status(402).with_body(r#"{"declined":true,"reason":"insufficient_funds"}"#);
    let (a, b, config) = a_then_b(declined).await;
    let p = PAYROUTE.serve(config).await;
    let r = p.pay("m-1", 100).await;
    assert_eq!(r.status, 402, "{}", r.text());
    assert_eq!(r.text(), r#"{"declined":true,"reason":"insufficient_funds"}"#);
    assert_eq!(r.channel().as_deref(), Some("a"));
    assert_eq!(r.attempts(), Some(1));
    assert!(r.request_id().is_some());
    assert_eq!(b.hits(), 0, "a decline must not be failed over");
    // Whichever channel the scores pick now, a decline is final: exactly
    // one attempt per payment.
    for (i, status) in [400, 403, 404, 409, 422].into_iter().enumerate() {
        a.set_behavior(Reply::status(status));
        b.set_behavior(Reply::status(status));
        let r = p.pay("m-1", 100).await;
        assert_eq!(r.status, status, "{}", r.text());
        assert_eq!(r.attempts(), Some(1));
        assert_eq!(a.hits() + b.hits(), i + 2, "a decline was failed over");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_5xx_fails_over() {
    let (a, b, config) = a_then_b(Reply::status(500)).await;
    let p = PAYROUTE.serve(config).await;
    let r = p.pay("m-1", 100).await;
    r.assert_ok();
    assert_eq!(r.channel().as_deref(), Some("b"));
    assert_eq!(r.attempts(), Some(2));
    assert_eq!((payments(&a), payments(&b)), (1, 1));
    assert_eq!(a.count("GET", ORDER), 1, "a was not asked about the 5xx");
    // B received the same payment A did.
    let sent = |acq: &MockAcquirer| acq.received_to("POST", PAY).pop().expect("a payment").body;
    assert_eq!(sent(&a), sent(&b));
    let m = p.metrics().await;
    assert!(
        m.get(
            "payroute_attempts_total",
            &[("channel", "a"), ("result", "upstream_5xx")]
        ) >= 1.0,
        "upstream_5xx attempt not counted:\n{}",
        m.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_5xx_failover_unless_listed() {
    let (a, b, config) = a_then_b(Reply::status(503)).await;
    let p = PAYROUTE
        .serve(config.routing("failover_on = [\"connect\", \"timeout\"]"))
        .await;
    let r = p.pay("m-1", 100).await;
    assert_eq!(b.hits(), 0, "5xx is not in failover_on: no failover");
    assert_eq!(a.hits(), 1);
    // Not a channel failure: the upstream's answer is returned as-is.
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.channel().as_deref(), Some("a"));
    assert_eq!(r.attempts(), Some(1));
    assert_eq!(r.json()["acquirer"], "a", "not the upstream body: {}", r.text());
    assert!(r.request_id().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_timeout_failover_unless_listed() {
    let (_a, b, config) = a_then_b(Reply::hang()).await;
    let config = config
        .amend("a", "timeout_ms = 300")
        .routing("failover_on = [\"connect\", \"5xx\"]");
    let p = PAYROUTE.serve(config).await;
    p.pay("m-1", 100).await.assert_error(504, "upstream_timeout");
    assert_eq!(b.hits(), 0, "timeout is not in failover_on: no failover");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_attempts_one_means_no_failover() {
    let (a, b, config) = a_then_b(Reply::status(503)).await;
    let p = PAYROUTE.serve(config.routing("max_attempts = 1")).await;
    p.pay("m-1", 100).await.assert_error(502, "upstream_failed");
    assert_eq!((payments(&a), b.hits()), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_and_timeouts_eject_too() {
    let slow = acquirer_with("slow", Reply::hang()).await;
    let config = Config::new()
        .routing("eject_consecutive_failures = 2\neject_base_ms = 5000")
        .channel("dead", &refused_url(), "")
        .channel("slow", &slow.url(), "timeout_ms = 300")
        .merchant("m-dead", "channels = [\"dead\"]")
        .merchant("m-slow", "channels = [\"slow\"]");
    let p = PAYROUTE.serve(config).await;
    for _ in 0..2 {
        p.pay("m-dead", 100).await.assert_error(502, "upstream_failed");
        p.pay("m-slow", 100).await.assert_error(504, "upstream_timeout");
    }
    assert_eq!(p.channel_state("dead").await, "ejected");
    assert_eq!(p.channel_state("slow").await, "ejected");
    p.pay("m-dead", 100).await.assert_error(503, "no_channel_available");
    p.pay("m-slow", 100).await.assert_error(503, "no_channel_available");
    assert_eq!(slow.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_success_resets_the_consecutive_failure_count() {
    // fail, fail, ok, fail, fail, ok ...: never 3 in a row.
    let a = acquirer("a").await;
    let config = Config::single("a", &a.url()).routing("eject_consecutive_failures = 3\neject_base_ms = 5000");
    let p = PAYROUTE.serve(config).await;
    for _ in 0..3 {
        a.set_behavior(Reply::ok().failing_first(2, 503));
        p.pay("m-1", 100).await.assert_error(502, "upstream_failed");
        p.pay("m-1", 100).await.assert_error(502, "upstream_failed");
        p.pay("m-1", 100).await.assert_ok();
    }
    assert_eq!(p.channel_state("a").await, "healthy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statistics_expire_after_the_window() {
    // A (cheap) fails once and loses to B; once the failure leaves the
    // 1 s window, A looks good again and wins back the traffic.
    let a = queried_acquirer("a", Reply::ok().failing_first(1, 503)).await;
    let b = acquirer("b").await;
    let config = Config::new()
        .routing("window_ms = 1000\neject_consecutive_failures = 1000")
        .channel("a", &a.url(), &format!("fee_percent = 0.1\n{QUERY}"))
        .channel("b", &b.url(), "fee_percent = 0.5")
        .merchant("m-1", "");
    let p = PAYROUTE.serve(config).await;
    let r = p.pay("m-1", 100).await;
    r.assert_ok();
    assert_eq!(r.channel().as_deref(), Some("b"), "A failed, B served");
    let r = p.pay("m-1", 100).await;
    assert_eq!(r.channel().as_deref(), Some("b"), "A's failure counts");
    let start = std::time::Instant::now();
    eventually("A to win traffic back", Duration::from_secs(10), || async {
        let r = p.pay("m-1", 100).await;
        r.assert_ok();
        tokio::time::sleep(Duration::from_millis(100)).await;
        r.channel().as_deref() == Some("a")
    })
    .await;
    assert!(
        start.elapsed() >= Duration::from_millis(500),
        "A came back after {:?}, before its failure could leave a 1 s window",
        start.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_the_same_channel_twice() {
    // Two failing channels, three attempts allowed: each is tried once.
    let (a, b, config) = a_then_b(Reply::status(503)).await;
    b.set_behavior(Reply::status(503));
    let p = PAYROUTE
        .serve(config.routing("max_attempts = 3\neject_consecutive_failures = 1000"))
        .await;
    for i in 1..=3 {
        let r = p.pay("m-1", 100).await;
        r.assert_error(502, "upstream_failed");
        assert_eq!(
            (payments(&a), payments(&b)),
            (i, i),
            "each channel exactly once per payment"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_attempts_bounds_the_channels_tried() {
    let routing = Config::new().routing("max_attempts = 2\neject_consecutive_failures = 1000");
    let (acqs, config) = acquirers("c", 4, Reply::status(503), "", routing).await;
    let p = PAYROUTE.serve(config.merchant("m-1", "")).await;
    p.pay("m-1", 100).await.assert_error(502, "upstream_failed");
    let hits: Vec<usize> = acqs.iter().map(payments).collect();
    assert_eq!(hits.iter().sum::<usize>(), 2, "max_attempts = 2: {hits:?}");
    assert!(hits.iter().all(|h| *h <= 1), "a channel tried twice: {hits:?}");

    // With 3 attempts the third channel gets a chance and succeeds.
    let ok = acquirer("ok").await;
    let config = Config::new()
        .routing("max_attempts = 3")
        .channel("x1", &acqs[0].url(), &format!("fee_percent = 0.1\n{QUERY}"))
        .channel("x2", &acqs[1].url(), &format!("fee_percent = 0.2\n{QUERY}"))
        .channel("ok", &ok.url(), "fee_percent = 0.9")
        .merchant("m-1", "");
    let p = PAYROUTE.serve(config).await;
    let r = p.pay("m-1", 100).await;
    r.assert_ok();
    assert_eq!(r.channel().as_deref(), Some("ok"));
    assert_eq!(r.attempts(), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_failure_decides_502_or_504() {
    // First a timeout, then a 5xx: the last was not a timeout -> 502.
    const SHORT: &str = "timeout_ms = 200\nconnect_timeout_ms = 100";
    let slow = queried_acquirer("slow", Reply::hang()).await;
    let bad = queried_acquirer("bad", Reply::status(503)).await;
    let config = Config::pair(("slow", &slow.url()), ("bad", &bad.url()))
        .amend("slow", &format!("{SHORT}\n{QUERY}"))
        .amend("bad", QUERY)
        .routing("eject_consecutive_failures = 1000");
    let p = PAYROUTE.serve(config).await;
    p.pay("m-1", 100).await.assert_error(502, "upstream_failed");
    assert_eq!((payments(&slow), payments(&bad)), (1, 1));

    // First a refused connection, then a timeout -> 504.
    let slow2 = acquirer_with("slow2", Reply::hang()).await;
    let config = Config::pair(("dead", &refused_url()), ("slow2", &slow2.url())).amend("slow2", SHORT);
    let p = PAYROUTE.serve(config).await;
    p.pay("m-1", 100).await.assert_error(504, "upstream_timeout");
    assert_eq!(payments(&slow2), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_bounds_the_whole_payment() {
    // Three hanging channels, 500 ms per attempt, 700 ms for the payment:
    // the first attempt times out (and is found harmless by its query), the
    // second is cut by the deadline, the third never starts.
    let limits = Config::new().server("deadline_ms = 700").routing("max_attempts = 3");
    let (acqs, config) = acquirers("h", 3, Reply::hang(), "timeout_ms = 500", limits).await;
    let p = PAYROUTE.serve(config.merchant("m-1", "")).await;
    let r = p.pay("m-1", 100).await;
    r.assert_error(504, "upstream_timeout");
    let hits: Vec<usize> = acqs.iter().map(payments).collect();
    assert_eq!(hits.iter().sum::<usize>(), 2, "attempts made: {hits:?}");
    assert!(
        r.elapsed >= Duration::from_millis(600) && r.elapsed < Duration::from_millis(1500),
        "deadline 700 ms, answered after {:?}",
        r.elapsed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_cuts_a_single_long_attempt() {
    let a = acquirer_with("a", Reply::hang()).await;
    let config = Config::single("a", &a.url())
        .server("deadline_ms = 400")
        .amend("a", "timeout_ms = 5000");
    let p = PAYROUTE.serve(config).await;
    let r = p.pay("m-1", 100).await;
    r.assert_error(504, "upstream_timeout");
    assert!(
        r.elapsed < Duration::from_millis(2000),
        "deadline 400 ms, answered after {:?}",
        r.elapsed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_channel_is_ejected_then_probed_then_healthy() {
    // A is cheap and fails; B is the fallback. m-a may only use A.
    let (a, _b, config) = a_then_b(Reply::status(503)).await;
    let config = config
        .routing("eject_consecutive_failures = 3\neject_base_ms = 2000\neject_max_ms = 60000")
        .merchant("m-a", "channels = [\"a\"]");
    let p = PAYROUTE.serve(config).await;
    assert_eq!(p.channel_state("a").await, "healthy");
    // m-a can only use A: three channel failures in a row.
    for _ in 0..3 {
        p.pay("m-a", 100).await.assert_error(502, "upstream_failed");
    }
    assert_eq!(payments(&a), 3);

    // Ejected: not tried at all, even by a merchant that has no other channel.
    assert_eq!(p.channel_state("a").await, "ejected");
    p.pay("m-a", 100).await.assert_error(503, "no_channel_available");
    for _ in 0..3 {
        let r = p.pay("m-1", 100).await;
        r.assert_ok();
        assert_eq!(r.channel().as_deref(), Some("b"));
        assert_eq!(r.attempts(), Some(1), "the ejected channel was tried");
    }
    assert_eq!(payments(&a), 3, "an ejected channel got traffic");
    let m = p.metrics().await;
    assert_eq!(
        m.get("payroute_channel_state", &[("channel", "a"), ("state", "ejected")]),
        1.0,
        "payroute_channel_state for an ejected channel:\n{}",
        m.0
    );

    // The acquirer heals (slowly); after the ejection the channel is probed.
    a.set_behavior(Reply::ok().with_delay(Duration::from_millis(800)));
    eventually("a to leave the ejected state", Duration::from_secs(10), || async {
        p.channel_state("a").await != "ejected"
    })
    .await;
    assert_eq!(p.channel_state("a").await, "probing");

    // One probe at a time: while it runs, A takes nothing else.
    let api = p.api.clone();
    let probe = tokio::spawn(async move { api.pay("m-a", 100).await });
    assert!(
        a.wait_count("POST", PAY, 4, Duration::from_secs(5)).await,
        "the probe did not reach a"
    );
    p.pay("m-a", 100).await.assert_error(503, "no_channel_available");
    let r = probe.await.unwrap();
    r.assert_ok();
    assert_eq!(r.channel().as_deref(), Some("a"));
    assert_eq!(payments(&a), 4);
    assert_eq!(a.max_in_flight(), 1);

    // The successful probe makes it healthy again.
    assert_eq!(p.channel_state("a").await, "healthy");
    a.set_behavior(Reply::ok());
    for _ in 0..3 {
        let r = p.pay("m-a", 100).await;
        r.assert_ok();
        assert_eq!(r.channel().as_deref(), Some("a"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_probe_ejects_again() {
    let a = acquirer_with("a", Reply::status(503)).await;
    let config = Config::single("a", &a.url())
        .routing("eject_consecutive_failures = 2\neject_base_ms = 500\neject_max_ms = 60000");
    let p = PAYROUTE.serve(config).await;
    for _ in 0..2 {
        p.pay("m-1", 100).await.assert_error(502, "upstream_failed");
    }
    // Ejected, then probing after ~500 ms.
    eventually("a to be probing", Duration::from_secs(10), || async {
        p.channel_state("a").await == "probing"
    })
    .await;
    // The probe fails: ejected again (for longer: 1 s).
    p.pay("m-1", 100).await.assert_error(502, "upstream_failed");
    assert_eq!(a.hits(), 3);
    assert_eq!(p.channel_state("a").await, "ejected");
    p.pay("m-1", 100).await.assert_error(503, "no_channel_available");
    assert_eq!(a.hits(), 3);
    // It heals; the next probe succeeds and it is healthy.
    a.set_behavior(Reply::ok());
    eventually("a to be probing again", Duration::from_secs(10), || async {
        p.channel_state("a").await == "probing"
    })
    .await;
    p.pay("m-1", 100).await.assert_ok();
    assert_eq!(p.channel_state("a").await, "healthy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declines_never_eject() {
    let a = acquirer_with("a", Reply::status(402)).await;
    let config = Config::single("a", &a.url()).routing("eject_consecutive_failures = 2\neject_base_ms = 5000");
    let p = PAYROUTE.serve(config).await;
    for _ in 0..6 {
        let r = p.pay("m-1", 100).await;
        assert_eq!(r.status, 402, "{}", r.text());
    }
    assert_eq!(a.hits(), 6);
    assert_eq!(p.channel_state("a").await, "healthy");
}
