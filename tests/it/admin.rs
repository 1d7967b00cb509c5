//! Admin API and metrics: health, /-/channels, /metrics (names, labels, no
//! merchant or order ids), config version, admin token, graceful SIGTERM.

use std::time::Duration;

use http::Method;
use payroute_mock::{MockAcquirer, Reply};
use payroute_testkit::*;
use serde_json::Value;

use crate::PAYROUTE;

/// Paying acquirers "a" and "b" behind channels a (fee 0.38) and b (fee
/// 0.6), and merchant m-1. Both channels have a query, answered "no such
/// payment", so a failing one is failed over.
async fn two_channels() -> (MockAcquirer, MockAcquirer, Config) {
    let a = queried_acquirer("a", Reply::ok()).await;
    let b = queried_acquirer("b", Reply::ok()).await;
    let config = Config::new()
        .channel("a", &a.url(), &format!("fee_percent = 0.38\n{QUERY}"))
        .channel("b", &b.url(), &format!("fee_percent = 0.6\n{QUERY}"))
        .merchant("m-1", "");
    (a, b, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_200() {
    let (_a, _b, config) = two_channels().await;
    let p = PAYROUTE.serve(config).await;
    let r = p.admin_get("/-/health").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = p.admin_get("/-/no-such-thing").await;
    assert_eq!(r.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_is_not_served_on_the_payment_listener() {
    let (_a, _b, config) = two_channels().await;
    let p = PAYROUTE.serve(config).await;
    let v0 = p.config_version().await;
    let r = p.request(Method::POST, "/-/reload", &[], bytes::Bytes::new()).await;
    assert_ne!(r.status, 200, "/-/reload answered on the payment port");
    let r = p.request(Method::GET, "/metrics", &[], bytes::Bytes::new()).await;
    assert_ne!(r.status, 200, "/metrics answered on the payment port");
    assert_eq!(p.config_version().await, v0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_report_every_field() {
    let (a, b, config) = two_channels().await;
    let off = acquirer("off").await;
    let p = PAYROUTE
        .serve(config.channel("off", &off.url(), "enabled = false"))
        .await;
    for _ in 0..4 {
        p.pay("m-1", 1000).await.assert_ok();
    }
    let chans = p.channels().await;
    assert_eq!(chans.len(), 3, "{chans:?}");
    for c in &chans {
        for field in [
            "id",
            "state",
            "success_rate",
            "latency_ms",
            "fee_percent",
            "score",
            "in_flight",
            "requests",
        ] {
            assert!(c.get(field).is_some(), "field {field} missing in {c}");
        }
        let state = c["state"].as_str().expect("state string");
        assert!(
            ["healthy", "ejected", "probing", "disabled"].contains(&state),
            "state {state}"
        );
        assert!(c["fee_percent"].is_number(), "{c}");
        assert!(c["in_flight"].is_u64(), "in_flight must be an integer: {c}");
        assert!(c["requests"].is_u64(), "requests must be an integer: {c}");
    }
    let a_json = p.channel("a").await;
    assert_eq!(a_json["state"], "healthy");
    assert_eq!(a_json["fee_percent"].as_f64(), Some(0.38));
    assert_eq!(a_json["requests"].as_u64(), Some(4), "{a_json}");
    assert_eq!(a_json["in_flight"].as_u64(), Some(0));
    let sr = a_json["success_rate"].as_f64().expect("success_rate number");
    assert!((0.9..=1.0).contains(&sr), "4/4 successes: success_rate {sr}");
    let lat = a_json["latency_ms"].as_f64().expect("latency_ms number");
    assert!((0.0..1000.0).contains(&lat), "latency_ms {lat}");
    assert!(a_json["score"].as_f64().is_some(), "{a_json}");
    assert_eq!(p.channel("off").await["state"], "disabled");
    assert_eq!(p.channel("b").await["requests"].as_u64(), Some(0));

    // A failing channel shows a lower success rate.
    a.set_behavior(Reply::status(503));
    for _ in 0..2 {
        p.pay("m-1", 1000).await.assert_ok(); // fails over to b
    }
    let a_json = p.channel("a").await;
    let sr2 = a_json["success_rate"].as_f64().unwrap();
    assert!(sr2 < sr, "success rate {sr} -> {sr2} after failures");

    // in_flight counts a payment held by the acquirer.
    b.set_behavior(Reply::ok().with_delay(Duration::from_millis(1500)));
    let api = p.api.clone();
    let slow = tokio::spawn(async move { api.pay("m-1", 1000).await });
    assert!(
        b.wait_count("POST", PAY, 3, Duration::from_secs(5)).await,
        "the slow payment did not reach b"
    );
    eventually("in_flight of b to be 1", Duration::from_secs(5), || async {
        p.channel("b").await["in_flight"].as_u64() == Some(1)
    })
    .await;
    slow.await.unwrap().assert_ok();
    assert_eq!(p.channel("b").await["in_flight"].as_u64(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_have_the_contract_names_and_no_merchant_or_order_ids() {
    // a and b have a query, answered "no such payment": their 5xx are
    // failed over.
    let a = queried_acquirer("a", Reply::ok()).await;
    let b = queried_acquirer("b", Reply::ok()).await;
    let merchant_id = "merchant-zq7x";
    let config = Config::new()
        .routing("eject_consecutive_failures = 1000")
        // Fees far apart so a stays first after its one decline.
        .channel("a", &a.url(), &format!("fee_percent = 0.1\n{QUERY}"))
        .channel("b", &b.url(), &format!("fee_percent = 5.0\n{QUERY}"))
        .channel("dead", &refused_url(), "fee_percent = 9.0")
        .merchant(merchant_id, "");
    let p = PAYROUTE.serve(config).await;
    // Successes on a.
    for _ in 0..3 {
        p.pay(merchant_id, 100).await.assert_ok();
    }
    // A decline on a.
    a.set_behavior(Reply::status(402));
    assert_eq!(p.pay(merchant_id, 100).await.status, 402);
    // a fails with 5xx: failover to b.
    a.set_behavior(Reply::status(503));
    let r = p.pay(merchant_id, 100).await;
    r.assert_ok();
    // Everything fails: a 5xx, b 5xx, dead refused.
    b.set_behavior(Reply::status(503));
    p.pay(merchant_id, 100).await.assert_error(502, "upstream_failed");
    // A proxy refusal.
    p.pay("someone-else", 100).await.assert_error(403, "unknown_merchant");
    assert_eq!(p.reload().await.status, 200);

    let resp = p.admin_get("/metrics").await;
    assert_eq!(resp.status, 200);
    let ct = resp.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("text/plain"), "content-type {ct}");
    let m = Metrics(resp.text());

    let want = |name: &str, labels: &[(&str, &str)], min: f64| {
        let v = m.get(name, labels);
        assert!(
            v >= min,
            "{name}{labels:?} = {v}, want >= {min}\n--- metrics ---\n{}",
            m.0
        );
    };
    want("payroute_requests_total", &[("outcome", "success")], 4.0);
    want("payroute_requests_total", &[("outcome", "decline")], 1.0);
    want("payroute_requests_total", &[("outcome", "upstream_failed")], 1.0);
    want("payroute_requests_total", &[("outcome", "unknown_merchant")], 1.0);
    want(
        "payroute_attempts_total",
        &[("channel", "a"), ("result", "success")],
        3.0,
    );
    want(
        "payroute_attempts_total",
        &[("channel", "a"), ("result", "decline")],
        1.0,
    );
    want(
        "payroute_attempts_total",
        &[("channel", "a"), ("result", "upstream_5xx")],
        2.0,
    );
    want(
        "payroute_attempts_total",
        &[("channel", "b"), ("result", "success")],
        1.0,
    );
    want(
        "payroute_attempts_total",
        &[("channel", "dead"), ("result", "connect_error")],
        1.0,
    );
    want("payroute_upstream_latency_seconds_count", &[("channel", "a")], 6.0);
    // Every payment request, refusals included: 4 successes, a decline, a
    // failure, an unknown merchant.
    want("payroute_request_duration_seconds_count", &[], 7.0);
    want(
        "payroute_upstream_latency_seconds_bucket",
        &[("channel", "a"), ("le", "+Inf")],
        6.0,
    );
    want("payroute_failovers_total", &[("from_channel", "a")], 2.0);
    want("payroute_config_reloads_total", &[], 1.0);
    want("payroute_config_version", &[], 1.0);
    for ch in ["a", "b", "dead"] {
        assert!(
            m.sum("payroute_channel_score", &[("channel", ch)]).is_some(),
            "payroute_channel_score{{channel={ch}}} missing\n{}",
            m.0
        );
        assert!(
            m.sum("payroute_channel_success_rate", &[("channel", ch)]).is_some(),
            "payroute_channel_success_rate{{channel={ch}}} missing\n{}",
            m.0
        );
        // Exactly one state is set per channel.
        assert_eq!(
            m.get("payroute_channel_state", &[("channel", ch)]),
            1.0,
            "payroute_channel_state{{channel={ch}}} must sum to 1\n{}",
            m.0
        );
    }
    assert!(m
        .samples()
        .iter()
        .filter(|s| s.name == "payroute_failovers_total")
        .all(|s| s.labels.contains_key("reason")));

    // No merchant or order ids, anywhere.
    let order_prefix = format!("ord-{}-", std::process::id());
    assert!(
        !m.0.contains(merchant_id) && !m.0.contains("someone-else"),
        "a merchant id appears in /metrics"
    );
    assert!(!m.0.contains(&order_prefix), "an order id appears in /metrics");
    for s in m.samples() {
        assert!(s.name.starts_with("payroute_") || !s.name.contains("payroute"));
        for k in s.labels.keys() {
            assert!(
                !k.contains("merchant") && !k.contains("order"),
                "label {k} on {}",
                s.name
            );
        }
    }
    assert!(
        m.samples()
            .iter()
            .all(|s| !s.name.starts_with("payroute") || s.name.starts_with("payroute_")),
        "all payroute metrics are prefixed payroute_"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_version_increments_on_each_reload() {
    let (_a, _b, config) = two_channels().await;
    let cfg = config.to_string();
    let p = PAYROUTE.serve(&cfg).await;
    let v0 = p.config_version().await;
    assert!(v0 >= 1.0, "initial config version {v0}");
    p.replace_config(cfg.replace("fee_percent = 0.6", "fee_percent = 0.7"));
    let r = p.reload().await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v1 = p.config_version().await;
    assert!(v1 > v0, "{v0} -> {v1}");
    let body: Value = r.json();
    assert!(body.get("version").is_some(), "{body}");
    p.replace_config(cfg.replace("fee_percent = 0.6", "fee_percent = 0.8"));
    assert_eq!(p.reload().await.status, 200);
    let v2 = p.config_version().await;
    assert!(v2 > v1, "{v1} -> {v2}");
    // A refused reload leaves it alone.
    p.replace_config("[server]\nnot_a_key = 1\n");
    assert_eq!(p.reload().await.status, 400);
    assert_eq!(p.config_version().await, v2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_token_guards_reload() {
    let (_a, _b, config) = two_channels().await;
    let p = PAYROUTE.serve(config.server("admin_token = \"s3cret-admin\"")).await;
    let v0 = p.config_version().await;
    let r = p.admin_post("/-/reload", &[]).await;
    assert!(
        r.status == 401 || r.status == 403,
        "reload without token: {} {}",
        r.status,
        r.text()
    );
    let r = p.admin_post("/-/reload", &[("authorization", "Bearer wrong")]).await;
    assert!(r.status == 401 || r.status == 403, "wrong token: {}", r.status);
    assert_eq!(p.config_version().await, v0);
    let r = p
        .admin_post("/-/reload", &[("authorization", "Bearer s3cret-admin")])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(p.config_version().await > v0);
    // Read-only endpoints stay open.
    assert_eq!(p.admin_get("/-/health").await.status, 200);
    assert_eq!(p.admin_get("/-/channels").await.status, 200);
    assert_eq!(p.admin_get("/metrics").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_payment_and_exits_0() {
    let (a, _b, config) = two_channels().await;
    a.set_behavior(Reply::ok().with_delay(Duration::from_millis(1500)));
    let mut p = PAYROUTE.serve(config).await;
    let api = p.api.clone();
    let slow = tokio::spawn(async move { api.pay("m-1", 100).await });
    assert!(
        a.wait_hits(1, Duration::from_secs(5)).await,
        "the slow payment did not reach a"
    );
    p.sigterm();
    let r = slow.await.unwrap();
    r.assert_ok();
    assert_eq!(r.channel().as_deref(), Some("a"));
    let status = p
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("payroute did not exit within 10 s of SIGTERM");
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM: {status}");
    // Nothing listens any more.
    let res = try_send(
        &p.client,
        Method::GET,
        &p.admin_url("/-/health"),
        &[],
        bytes::Bytes::new(),
    )
    .await;
    assert!(res.is_err(), "admin still answers after exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_when_idle_exits_0_promptly() {
    let (_a, _b, config) = two_channels().await;
    let mut p = PAYROUTE.serve(config).await;
    p.pay("m-1", 100).await.assert_ok();
    let start = std::time::Instant::now();
    p.sigterm();
    let status = p
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("payroute did not exit within 10 s of SIGTERM");
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "idle shutdown took {:?}",
        start.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_reflect_latency_and_score() {
    let slow = acquirer_with("slow", Reply::ok().with_delay(Duration::from_millis(300))).await;
    let fast = acquirer("fast").await;
    let config = Config::new()
        .channel("slow", &slow.url(), "fee_percent = 0.3")
        .channel("fast", &fast.url(), "fee_percent = 0.3")
        .merchant("m-slow", "channels = [\"slow\"]")
        .merchant("m-fast", "channels = [\"fast\"]");
    let p = PAYROUTE.serve(config).await;
    for _ in 0..3 {
        p.pay("m-slow", 100).await.assert_ok();
        p.pay("m-fast", 100).await.assert_ok();
    }
    let s = p.channel("slow").await;
    let f = p.channel("fast").await;
    let (sl, fl) = (
        s["latency_ms"].as_f64().expect("latency_ms"),
        f["latency_ms"].as_f64().expect("latency_ms"),
    );
    assert!(sl >= 250.0, "slow channel latency_ms {sl}");
    assert!(fl < 150.0, "fast channel latency_ms {fl}");
    let (ss, fs) = (s["score"].as_f64().unwrap(), f["score"].as_f64().unwrap());
    assert!(fs > ss, "score fast {fs} must beat slow {ss}");
    let m = p.metrics().await;
    let ms = m.get("payroute_channel_score", &[("channel", "slow")]);
    let mf = m.get("payroute_channel_score", &[("channel", "fast")]);
    assert!(mf > ms, "payroute_channel_score fast {mf} vs slow {ms}");
}
