//! A fleet: several proxies sharing merchants' limits, idempotency records
//! and order memory through Redis, and what happens when Redis goes away.
//!
//! Tests share the machine's Redis (127.0.0.1:6379, started by `.ci/run`),
//! each under a random `key_prefix`; outage tests start a Redis of their own
//! on a free port, so the machine's Redis is never touched.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use payroute_mock::{MockAcquirer, Reply};
use payroute_testkit::*;
use serde_json::json;

use crate::PAYROUTE;

/// A unique key prefix: tests never see each other's keys.
fn prefix() -> String {
    format!("payroute-e2e-{:x}:", fastrand::u64(..))
}

/// A config on Redis under `prefix`, with one channel "acq" at `url`.
fn on_redis(prefix: &str, url: &str) -> Config {
    Config::new()
        .state(&format!("backend = \"redis\"\nkey_prefix = \"{prefix}\""))
        .channel("acq", url, "")
}

/// Two proxies sharing one Redis namespace, in front of the same acquirer.
async fn fleet(acq: &MockAcquirer, merchant_lines: &str) -> (Proxy, Proxy) {
    let config = on_redis(&prefix(), &acq.url()).merchant("m-1", merchant_lines);
    (PAYROUTE.serve(&config).await, PAYROUTE.serve(&config).await)
}

#[tokio::test]
async fn two_instances_share_one_rate_limit() {
    let acq = acquirer("acq").await;
    let (a, b) = fleet(&acq, "rate_per_sec = 1\nburst = 5").await;
    let sends = (0..10).map(|i| {
        let api = if i % 2 == 0 { a.api.clone() } else { b.api.clone() };
        async move { api.pay("m-1", 100).await }
    });
    let answers = futures_join_all(sends).await;
    let accepted = answers.iter().filter(|r| r.status == 200).count();
    let limited: Vec<_> = answers.iter().filter(|r| r.status == 429).collect();
    assert_eq!(accepted, 5, "one bucket of 5 for the whole fleet");
    assert_eq!(limited.len(), 5);
    for r in limited {
        r.assert_error(429, "rate_limited");
        let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=2).contains(&wait), "Retry-After {wait}");
    }
    assert_eq!(acq.hits(), 5);
}

#[tokio::test]
async fn two_instances_share_one_daily_limit() {
    let acq = acquirer_with("acq", Reply::ok().with_delay(Duration::from_millis(50))).await;
    let (a, b) = fleet(&acq, "daily_limit = 1000").await;
    let sends = (0..20).map(|i| {
        let api = if i % 2 == 0 { a.api.clone() } else { b.api.clone() };
        async move { api.pay("m-1", 100).await }
    });
    let answers = futures_join_all(sends).await;
    let accepted = answers.iter().filter(|r| r.status == 200).count();
    assert_eq!(accepted, 10, "exactly the limit, across both instances");
    for r in answers.iter().filter(|r| r.status != 200) {
        r.assert_error(422, "daily_limit_exceeded");
    }
    assert_eq!(acq.hits(), 10);
}

#[tokio::test]
async fn a_retry_on_the_other_instance_is_replayed_not_resent() {
    let acq = acquirer_with("acq", Reply::ok().with_delay(Duration::from_millis(400))).await;
    let (a, b) = fleet(&acq, "").await;
    let body = payment_body(700, "CNY");
    let first = {
        let (api, body) = (a.api.clone(), body.clone());
        tokio::spawn(async move { api.post_payment("m-1", &body, &[]).await })
    };
    assert!(
        acq.wait_hits(1, Duration::from_secs(5)).await,
        "the first payment did not reach acq"
    );
    // While the first runs on A, the same key on B is in flight.
    b.post_payment("m-1", &body, &[])
        .await
        .assert_error(409, "duplicate_in_flight");
    let first = first.await.unwrap();
    first.assert_ok();
    let again = b.post_payment("m-1", &body, &[]).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.header("x-payroute-replayed").as_deref(), Some("true"));
    assert_eq!(again.text(), first.text());
    assert_eq!(acq.hits(), 1, "the acquirer saw the payment once");
}

#[tokio::test]
async fn a_followup_on_the_other_instance_reaches_the_serving_channel() {
    let (x, y) = (acquirer("x").await, acquirer("y").await);
    let p = prefix();
    // A fleet shares its journal too: the refund's amount is checked
    // against the payment there (an instance that does not hold the
    // payment refuses a stated amount: tests/it/probe.rs).
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    let config = |x_fee: &str| {
        Config::new()
            .state(&format!("backend = \"redis\"\nkey_prefix = \"{p}\""))
            .journal(&db.journal())
            .channel("x", &x.url(), x_fee)
            .channel("y", &y.url(), "fee_percent = 0.5")
            .merchant("m-1", "")
    };
    // A prefers x; B (configured differently) would prefer y for new payments.
    let a = PAYROUTE.serve(config("fee_percent = 0.1")).await;
    let b = PAYROUTE.serve(config("fee_percent = 0.9")).await;
    let body = payment_body(1_000, "CNY");
    let order = body["order_id"].as_str().unwrap().to_owned();
    let paid = a.post_payment("m-1", &body, &[]).await;
    paid.assert_ok();
    assert_eq!(paid.channel().as_deref(), Some("x"));
    let refund = b
        .post_payment_to(
            &format!("/v1/payments/{order}/refund"),
            "m-1",
            &json!({"amount": 1000}),
            &[],
        )
        .await;
    assert_eq!(refund.status, 200, "{}", refund.text());
    assert_eq!(refund.channel().as_deref(), Some("x"));
    assert_eq!(x.count("POST", &format!("/v1/payments/{order}/refund")), 1);
    assert_eq!(y.hits(), 0);
}

#[tokio::test]
async fn key_prefixes_isolate_fleets() {
    let acq = acquirer("acq").await;
    let fleet_config = |p: &str| on_redis(p, &acq.url()).merchant("m-1", "daily_limit = 100");
    let a = PAYROUTE.serve(fleet_config(&prefix())).await;
    let b = PAYROUTE.serve(fleet_config(&prefix())).await;
    let body = payment_body(100, "CNY");
    a.post_payment("m-1", &body, &[]).await.assert_ok();
    // Same merchant, same order id, other fleet: a new payment under its own limit.
    let other = b.post_payment("m-1", &body, &[]).await;
    other.assert_ok();
    assert_eq!(other.header("x-payroute-replayed"), None);
    assert_eq!(acq.hits(), 2);
}

/// A Redis server of the test's own, on a free port.
struct OwnRedis {
    port: u16,
    child: Option<Child>,
}

impl OwnRedis {
    async fn start() -> OwnRedis {
        let mut r = OwnRedis {
            port: free_port(),
            child: None,
        };
        r.restart().await;
        r
    }

    async fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (.ci/run installs it)");
        self.child = Some(child);
        let port = self.port;
        eventually("own redis answers", Duration::from_secs(10), || async move {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
        .await;
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn outage_proxy(redis: &OwnRedis, acq: &MockAcquirer, policy: &str) -> Proxy {
    let lines = format!(
        "redis_url = \"{}\"\non_unavailable = \"{policy}\"\nredis_timeout_ms = 200",
        redis.url()
    );
    let config = on_redis(&prefix(), &acq.url())
        .state(&lines)
        .merchant("m-1", "daily_limit = 100000000");
    PAYROUTE.serve(config).await
}

async fn wait_ready(p: &Proxy, status: u16) {
    let api = p.api.clone();
    eventually(&format!("/-/ready answers {status}"), Duration::from_secs(10), || {
        let api = api.clone();
        async move { api.admin_get("/-/ready").await.status == status }
    })
    .await;
}

#[tokio::test]
async fn redis_down_fail_closed_refuses_then_recovers() {
    let mut redis = OwnRedis::start().await;
    let acq = acquirer("acq").await;
    let p = outage_proxy(&redis, &acq, "fail_closed").await;
    p.pay("m-1", 100).await.assert_ok();
    wait_ready(&p, 200).await;

    redis.stop();
    p.pay("m-1", 100).await.assert_error(503, "state_unavailable");
    wait_ready(&p, 503).await;
    assert_eq!(p.admin_get("/-/health").await.status, 200, "health stays 200");
    let hits = acq.hits();
    for _ in 0..5 {
        p.pay("m-1", 100).await.assert_error(503, "state_unavailable");
    }
    assert_eq!(acq.hits(), hits, "no payment reaches an acquirer without its state");

    redis.restart().await;
    wait_ready(&p, 200).await;
    p.pay("m-1", 100).await.assert_ok();
    let logs = p.logs().join("\n");
    assert_eq!(
        logs.matches("Redis unavailable").count(),
        1,
        "logged once per episode:\n{logs}"
    );
    assert!(logs.contains("reachable again"), "{logs}");
}

#[tokio::test]
async fn redis_down_fail_open_serves_locally_then_returns() {
    let mut redis = OwnRedis::start().await;
    let acq = acquirer("acq").await;
    let p = outage_proxy(&redis, &acq, "fail_open").await;
    p.pay("m-1", 100).await.assert_ok();

    redis.stop();
    for _ in 0..5 {
        p.pay("m-1", 100).await.assert_ok();
    }
    assert!(p.metrics().await.get("payroute_state_fallback_total", &[]) >= 5.0);
    // Ready: fail_open keeps serving, so the load balancer should keep sending.
    assert_eq!(p.admin_get("/-/ready").await.status, 200);

    redis.restart().await;
    let api = p.api.clone();
    eventually("back on Redis", Duration::from_secs(10), || {
        let api = api.clone();
        async move { api.metrics().await.get("payroute_state_up", &[]) == 1.0 }
    })
    .await;
    let before = p.metrics().await.get("payroute_state_fallback_total", &[]);
    p.pay("m-1", 100).await.assert_ok();
    assert_eq!(
        p.metrics().await.get("payroute_state_fallback_total", &[]),
        before,
        "no fallback once Redis is back"
    );
    let logs = p.logs().join("\n");
    assert_eq!(
        logs.matches("Redis unavailable").count(),
        1,
        "logged once per episode:\n{logs}"
    );
}

#[tokio::test]
async fn serve_fails_fast_when_redis_is_unreachable() {
    let config =
        on_redis(&prefix(), &refused_url()).state(&format!("redis_url = \"redis://127.0.0.1:{}/0\"", refused_port()));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.toml");
    std::fs::write(&path, config.to_string()).unwrap();
    let out = PAYROUTE
        .command()
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Redis"), "{err}");
}

#[tokio::test]
async fn check_refuses_a_bad_redis_url_without_echoing_it() {
    let config = on_redis(&prefix(), &refused_url()).state("redis_url = \"http://user:hunter2@example\"");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.toml");
    std::fs::write(&path, config.to_string()).unwrap();
    let out = PAYROUTE.command().arg("check").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("redis_url"), "{err}");
    assert!(!err.contains("hunter2"), "the password must not be echoed: {err}");
}

/// Runs futures concurrently and collects their outputs in order.
async fn futures_join_all<F: std::future::Future + Send + 'static>(fs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = fs.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}
