//! Routing policies end to end: `[[rule]]` modes, a fleet-wide `daily_cap`,
//! a canary `ramp` and its guardrail, `maintenance` windows, and what
//! `/-/channels`, `/metrics` and `X-Payroute-Route` say about them.

use std::time::Duration;

use payroute_mock::{MockAcquirer, Reply};
use payroute_testkit::*;
use serde_json::json;
use time::OffsetDateTime;

use crate::PAYROUTE;

/// Sends `n` payments of `amount` for m-1, `parallel` at a time; every one
/// must succeed. Returns the answers.
async fn pay_many(p: &Proxy, n: usize, parallel: usize, amount: i64) -> Vec<Resp> {
    let mut out = Vec::with_capacity(n);
    let mut left = n;
    while left > 0 {
        let batch = left.min(parallel);
        let sends: Vec<_> = (0..batch)
            .map(|_| {
                let api = p.api.clone();
                tokio::spawn(async move { api.pay("m-1", amount).await })
            })
            .collect();
        for s in sends {
            let r = s.await.expect("payment task");
            r.assert_ok();
            out.push(r);
        }
        left -= batch;
    }
    out
}

fn share_of(resps: &[Resp], channel: &str) -> f64 {
    count_channels(resps).get(channel).copied().unwrap_or(0) as f64 / resps.len() as f64
}

async fn two(a_lines: &str, b_lines: &str) -> (MockAcquirer, MockAcquirer, Config) {
    let (a, b) = (acquirer("a").await, acquirer("b").await);
    let config = Config::new()
        .channel("a", &a.url(), a_lines)
        .channel("b", &b.url(), b_lines)
        .merchant("m-1", "");
    (a, b, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_rule_shares_payments_by_weight() {
    let (a, b, config) = two("", "").await;
    let config = config.rule("channels = [\"a\", \"b\"]\nmode = \"split\"\nweights = { a = 80, b = 20 }");
    let p = PAYROUTE.serve(config).await;
    let answers = pay_many(&p, 10_000, 32, 100).await;
    let a_share = a.hits() as f64 / 10_000.0;
    assert!(
        (0.77..=0.83).contains(&a_share),
        "a took {a_share} of 10,000, b {}",
        b.hits()
    );
    assert_eq!(a.hits() + b.hits(), 10_000);
    assert!(answers
        .iter()
        .all(|r| r.header("x-payroute-route").as_deref() == Some("0:split")));
    // /-/channels shows the shares of the window's payments.
    let share = p.channel("a").await["share"].as_f64().unwrap();
    assert!((share - a_share).abs() < 0.01, "{share} vs {a_share}");
    let metrics = p.metrics().await;
    let gauge = metrics.get("payroute_channel_share", &[("channel", "b")]);
    assert!((gauge - (1.0 - a_share)).abs() < 0.01, "{gauge}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_match_by_pay_type_and_priority_keeps_its_order() {
    let (a, b, config) = two("fee_percent = 0.1", "fee_percent = 0.9").await;
    let config = config
        .request("pay_type_pointer = \"/type\"")
        .rule("match = { pay_types = [\"wxpay\"] }\nchannels = [\"b\", \"a\"]\nmode = \"priority\"");
    let p = PAYROUTE.serve(config).await;
    let typed = |t: &str| json!({"amount": 100, "currency": "CNY", "order_id": order_id(), "type": t});
    // wxpay: the rule's first channel, although it is the dearer.
    for _ in 0..5 {
        let r = p.post_payment("m-1", &typed("wxpay"), &[]).await;
        r.assert_ok();
        assert_eq!(
            (r.channel().as_deref(), r.header("x-payroute-route").as_deref()),
            (Some("b"), Some("0:priority"))
        );
    }
    // Another type, or none: no rule; the default ranking prefers the cheaper.
    let r = p.post_payment("m-1", &typed("alipay"), &[]).await;
    assert_eq!(
        (r.channel().as_deref(), r.header("x-payroute-route").as_deref()),
        (Some("a"), Some("default:score"))
    );
    let r = p.pay("m-1", 100).await;
    assert_eq!(r.channel().as_deref(), Some("a"));
    // b unreachable: priority moves on to a, still by the rule.
    drop(b);
    let r = p.post_payment("m-1", &typed("wxpay"), &[]).await;
    r.assert_ok();
    assert_eq!((r.channel().as_deref(), r.attempts()), (Some("a"), Some(2)));
    assert_eq!(r.header("x-payroute-route").as_deref(), Some("0:priority"));
    assert!(a.hits() >= 3);
    // A pay type that is not a string is a bad request, and reaches nobody.
    let bad = json!({"amount": 100, "currency": "CNY", "order_id": order_id(), "type": 7});
    p.post_payment("m-1", &bad, &[])
        .await
        .assert_error(400, "invalid_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daily_cap_is_reached_exactly_by_a_fleet() {
    // Both instances prefer the cheaper a until its cap; the rest goes to b.
    let a = acquirer_with("a", Reply::ok().with_delay(Duration::from_millis(30))).await;
    let b = acquirer("b").await;
    let prefix = format!("payroute-e2e-{:x}:", fastrand::u64(..));
    let config = Config::new()
        .state(&format!("backend = \"redis\"\nkey_prefix = \"{prefix}\""))
        .channel("a", &a.url(), "fee_percent = 0.1\ndaily_cap = 1000")
        .channel("b", &b.url(), "fee_percent = 0.9")
        .merchant("m-1", "");
    let (one, two) = (PAYROUTE.serve(&config).await, PAYROUTE.serve(&config).await);
    let sends: Vec<_> = (0..30)
        .map(|i| {
            let api = if i % 2 == 0 { one.api.clone() } else { two.api.clone() };
            tokio::spawn(async move { api.pay("m-1", 100).await })
        })
        .collect();
    let mut answers = Vec::new();
    for s in sends {
        answers.push(s.await.unwrap());
    }
    answers.iter().for_each(Resp::assert_ok);
    assert_eq!(a.hits(), 10, "exactly the cap: 10 × 100 = 1000, across both instances");
    assert_eq!(b.hits(), 20);
    // The next payment on either instance goes straight to b.
    for p in [&one, &two] {
        let r = p.pay("m-1", 100).await;
        assert_eq!((r.channel().as_deref(), r.attempts()), (Some("b"), Some(1)));
        assert_eq!(p.channel_state("a").await, "capped");
        assert_eq!(p.channel("a").await["daily_used"], 1000);
    }
    assert_eq!(
        one.metrics()
            .await
            .get("payroute_channel_daily_used", &[("channel", "a")]),
        1000.0
    );
    // A decline takes nothing: it leaves the cap's room.
    let c = acquirer_with("c", Reply::status(402)).await;
    let p = PAYROUTE
        .serve(
            Config::new()
                .channel("c", &c.url(), "daily_cap = 100")
                .merchant("m-1", ""),
        )
        .await;
    for _ in 0..3 {
        assert_eq!(p.pay("m-1", 100).await.status, 402);
    }
    assert_eq!(c.hits(), 3);
    assert_eq!(p.channel("c").await["daily_used"], 0);
}

/// RFC 3339 for `now + offset_s` (UTC).
fn rfc3339(offset_s: i64) -> String {
    let t = OffsetDateTime::now_utc() + time::Duration::seconds(offset_s);
    t.format(&time::format_description::well_known::Rfc3339).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ramp_gives_its_share_until_its_guardrail_rolls_it_back() {
    // Ramped from 10 % to 50 % over 100 days, started 50 days ago: 30 % now
    // (and for the rest of the test, within a millionth).
    let ramp = format!(
        "ramp = {{ from_percent = 10, to_percent = 50, start = \"{}\", over_ms = 8640000000, guardrail_pp = 5, min_samples = 100 }}",
        rfc3339(-50 * 86_400)
    );
    let (_a, b, config) = two("", &ramp).await;
    let p = PAYROUTE.serve(&config).await;
    let answers = pay_many(&p, 2_000, 16, 100).await;
    let share = share_of(&answers, "b");
    assert!((0.27..=0.33).contains(&share), "b took {share}");
    let row = p.channel("b").await;
    assert!((row["ramp_percent"].as_f64().unwrap() - 30.0).abs() < 0.01, "{row}");
    assert_eq!(row["state"], "healthy");
    // b now declines a quarter of its payments: 25 points below a, past the
    // 5-point guardrail once it has 100 more samples.
    b.set_behavior(Reply::ok().failing(0.25, 402));
    let before = b.hits();
    for _ in 0..2_000 {
        p.pay("m-1", 100).await;
        if p.channel_state("b").await == "rolled_back" {
            break;
        }
    }
    assert_eq!(p.channel_state("b").await, "rolled_back");
    assert!(b.hits() - before >= 20, "judged on samples, not at once");
    assert_eq!(p.channel("b").await["ramp_percent"], 0.0);
    let stopped = b.hits();
    pay_many(&p, 200, 8, 100).await;
    assert_eq!(b.hits(), stopped, "a rolled-back channel takes nothing");
    assert!(p.logs().iter().any(|l| l.contains("ramp rolled back")));
    // The same ramp after a reload stays rolled back; a new ramp starts afresh.
    p.write_config(config.clone().routing("window_ms = 59000"));
    assert_eq!(p.reload().await.status, 200);
    assert_eq!(p.channel_state("b").await, "rolled_back");
    let new_ramp = ramp.replace("to_percent = 50", "to_percent = 40");
    p.write_config(config.to_string().replace(&ramp, &new_ramp));
    assert_eq!(p.reload().await.status, 200);
    assert_eq!(p.channel_state("b").await, "healthy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_in_maintenance_is_skipped() {
    // A window of two hours around now, written in UTC+8 (its local time).
    let local = OffsetDateTime::now_utc().to_offset(time::macros::offset!(+8)) - time::Duration::hours(1);
    let end = local + time::Duration::hours(2);
    let window = format!(
        "maintenance = [\"{} {:02}:{:02}-{:02}:{:02}+08:00\"]",
        &local.weekday().to_string()[..3],
        local.hour(),
        local.minute(),
        end.hour(),
        end.minute()
    );
    let (a, b, config) = two(&format!("fee_percent = 0.1\n{window}"), "fee_percent = 0.9").await;
    let p = PAYROUTE.serve(config).await;
    for _ in 0..5 {
        assert_eq!(p.pay("m-1", 100).await.channel().as_deref(), Some("b"));
    }
    assert_eq!((a.hits(), b.hits()), (0, 5));
    assert_eq!(p.channel_state("a").await, "maintenance");
    let metrics = p.metrics().await;
    assert_eq!(
        metrics.get("payroute_channel_state", &[("channel", "a"), ("state", "maintenance")]),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_share_holds_a_preferred_channel_to_its_share() {
    let (a, b, config) = two("fee_percent = 0.1\nmax_share = 0.6", "fee_percent = 0.9").await;
    let p = PAYROUTE.serve(config).await;
    let answers = pay_many(&p, 1_000, 8, 100).await;
    let share = share_of(&answers, "a");
    // The cheaper a would take every payment; it takes its 60 % and b the rest.
    assert!((0.57..=0.63).contains(&share), "a took {share}");
    assert_eq!(a.hits() + b.hits(), 1_000);
    // Over its share is a preference, not a refusal: with b gone, a takes all.
    drop(b);
    for _ in 0..20 {
        assert_eq!(p.pay("m-1", 100).await.channel().as_deref(), Some("a"));
    }
}
