//! Hot reload: by file change, rename, symlink swap, SIGHUP and
//! POST /-/reload; invalid configs refused; in-flight payments and channel
//! statistics survive; no request fails because of a reload.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use payroute_mock::Reply;
use payroute_testkit::*;
use serde_json::Value;

use crate::PAYROUTE;

const RELOAD_WAIT: Duration = Duration::from_secs(10);

/// Channels `(id, url, lines)` and merchant m-1 with `merchant_lines`.
fn config(channels: &[(&str, &str, &str)], merchant_lines: &str) -> Config {
    let mut config = Config::new();
    for (id, url, lines) in channels {
        config = config.channel(id, url, lines);
    }
    config.merchant("m-1", merchant_lines)
}

async fn wait_for_channel(p: &Proxy, id: &str) {
    eventually(&format!("channel {id} to appear after reload"), RELOAD_WAIT, || async {
        p.channel_opt(id).await.is_some()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_when_the_file_is_rewritten() {
    let a = acquirer("a").await;
    let b = acquirer("b").await;
    let p = PAYROUTE
        .serve(config(&[("a", &a.url(), "fee_percent = 0.5")], ""))
        .await;
    assert_eq!(p.channel_ids().await, ["a"]);
    p.pay("m-1", 100).await.assert_ok();

    p.write_config(config(
        &[
            ("a", &a.url(), "fee_percent = 0.5"),
            ("b", &b.url(), "fee_percent = 0.1"),
        ],
        "",
    ));
    wait_for_channel(&p, "b").await;
    let r = p.pay("m-1", 100).await;
    r.assert_ok();
    assert_eq!(r.channel().as_deref(), Some("b"));
    assert_eq!(b.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_when_the_file_is_replaced_by_rename_repeatedly() {
    let a = acquirer("a").await;
    let b = acquirer("b").await;
    let c = acquirer("c").await;
    let p = PAYROUTE.serve(config(&[("a", &a.url(), "")], "")).await;

    p.replace_config(config(&[("a", &a.url(), ""), ("b", &b.url(), "")], ""));
    wait_for_channel(&p, "b").await;
    // A second rename: the watcher must follow the new file, not the old inode.
    p.replace_config(config(&[("c", &c.url(), "")], ""));
    wait_for_channel(&p, "c").await;
    eventually("a and b to be gone", RELOAD_WAIT, || async {
        p.channel_ids().await == ["c"]
    })
    .await;
    let r = p.pay("m-1", 100).await;
    r.assert_ok();
    assert_eq!(r.channel().as_deref(), Some("c"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_on_symlink_swap() {
    // Kubernetes ConfigMap layout: routes.toml -> ..data/routes.toml,
    // ..data -> ..v1; an update swaps ..data to ..v2 by rename.
    let a = acquirer("a").await;
    let b = acquirer("b").await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("..v1")).unwrap();
    std::fs::write(
        d.join("..v1/routes.toml"),
        config(&[("a", &a.url(), "")], "").to_string(),
    )
    .unwrap();
    std::os::unix::fs::symlink("..v1", d.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/routes.toml", d.join("routes.toml")).unwrap();
    let path = d.join("routes.toml");
    let p = PAYROUTE.serve_in(dir, path, &[]).await;
    assert_eq!(p.channel_ids().await, ["a"]);

    let d = p.dir().to_path_buf();
    std::fs::create_dir(d.join("..v2")).unwrap();
    std::fs::write(
        d.join("..v2/routes.toml"),
        config(&[("a", &a.url(), ""), ("b", &b.url(), "")], "").to_string(),
    )
    .unwrap();
    std::os::unix::fs::symlink("..v2", d.join("..data_tmp")).unwrap();
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    std::fs::remove_dir_all(d.join("..v1")).unwrap();
    wait_for_channel(&p, "b").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_on_sighup() {
    let a = acquirer("a").await;
    let p = PAYROUTE.serve(config(&[("a", &a.url(), "")], "")).await;
    let (ok0, _) = p.metrics().await.reloads();
    let v0 = p.config_version().await;
    p.sighup();
    eventually("a reload after SIGHUP", RELOAD_WAIT, || async {
        let m = p.metrics().await;
        m.reloads().0 > ok0 || m.get("payroute_config_version", &[]) > v0
    })
    .await;
    // SIGHUP must not stop the process.
    assert_eq!(p.admin_get("/-/health").await.status, 200);
    p.pay("m-1", 100).await.assert_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_changed_file() {
    let a = acquirer("a").await;
    let p = PAYROUTE
        .serve(config(&[("a", &a.url(), "")], "max_amount = 1000"))
        .await;
    p.pay("m-1", 2000).await.assert_error(422, "amount_limit_exceeded");
    p.write_config(config(&[("a", &a.url(), "")], "max_amount = 5000"));
    p.sighup();
    eventually("the new max_amount to apply", RELOAD_WAIT, || async {
        p.pay("m-1", 2000).await.status == 200
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_endpoint_applies_at_once_and_returns_the_version() {
    let a = acquirer("a").await;
    let b = acquirer("b").await;
    let p = PAYROUTE.serve(config(&[("a", &a.url(), "")], "")).await;
    let v0 = p.config_version().await;

    p.replace_config(config(&[("a", &a.url(), ""), ("b", &b.url(), "")], ""));
    let r = p.reload().await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let version = v.get("version").unwrap_or_else(|| panic!("no version in {v}"));
    // Synchronous: the new config is in effect when the answer arrives.
    assert!(p.channel_opt("b").await.is_some(), "b missing right after reload");
    let v1 = p.config_version().await;
    assert!(v1 > v0, "config version {v0} -> {v1}");
    if let Some(n) = version.as_f64() {
        assert_eq!(n, v1, "reload answer version vs payroute_config_version");
    }

    // Again, unchanged file: still 200, version does not go backwards.
    let r = p.reload().await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(p.config_version().await >= v1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_config_is_refused_and_the_old_one_keeps_serving() {
    let a = acquirer("a").await;
    let b = acquirer("b").await;
    let p = PAYROUTE.serve(config(&[("a", &a.url(), "")], "")).await;
    let v0 = p.config_version().await;

    let bad_configs = [
        // Unknown key.
        config(&[("a", &a.url(), ""), ("b", &b.url(), "fee_percnt = 0.1")], "").to_string(),
        // Duplicate channel ids.
        config(&[("a", &a.url(), ""), ("a", &b.url(), "")], "").to_string(),
        // Unknown channel in an allow-list.
        config(&[("a", &a.url(), ""), ("b", &b.url(), "")], "channels = [\"zz\"]").to_string(),
        // Not TOML at all.
        "this is [not toml".to_string(),
        // Zero timeout.
        config(&[("a", &a.url(), ""), ("b", &b.url(), "timeout_ms = 0")], "").to_string(),
    ];
    for bad in &bad_configs {
        p.replace_config(bad);
        let r = p.reload().await;
        assert_eq!(r.status, 400, "invalid config accepted:\n{bad}\n-> {}", r.text());
        let v = r.json();
        let errors = v
            .get("errors")
            .and_then(Value::as_array)
            .unwrap_or_else(|| panic!("no errors array in {v}"));
        assert!(!errors.is_empty(), "empty errors for:\n{bad}");
        assert!(
            errors.iter().all(|e| e.as_str().is_some_and(|s| !s.is_empty())),
            "errors must be non-empty strings: {v}"
        );
        // The old config still serves.
        assert_eq!(p.channel_ids().await, ["a"]);
        let r = p.pay("m-1", 100).await;
        r.assert_ok();
        assert_eq!(r.channel().as_deref(), Some("a"));
    }
    assert_eq!(b.hits(), 0);
    assert_eq!(p.config_version().await, v0, "a refused config bumped the version");
    let m = p.metrics().await;
    assert!(
        m.reloads().1 >= bad_configs.len() as f64,
        "refused reloads not counted: {:?}\n{}",
        m.reloads(),
        m.0
    );
    assert_eq!(p.admin_get("/-/health").await.status, 200);

    // Fixed: it loads.
    p.replace_config(config(&[("a", &a.url(), ""), ("b", &b.url(), "")], ""));
    let r = p.reload().await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(p.channel_ids().await, ["a", "b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_file_change_is_ignored_by_the_watcher() {
    let a = acquirer("a").await;
    let b = acquirer("b").await;
    let p = PAYROUTE.serve(config(&[("a", &a.url(), "")], "")).await;
    let (_, failed0) = p.metrics().await.reloads();
    p.replace_config(config(&[("a", &a.url(), ""), ("b", &b.url(), "bogus_key = 1")], ""));
    eventually("the watcher to refuse the file", RELOAD_WAIT, || async {
        p.metrics().await.reloads().1 > failed0
    })
    .await;
    assert_eq!(p.channel_ids().await, ["a"]);
    p.pay("m-1", 100).await.assert_ok();
    // A later valid change still gets picked up.
    p.replace_config(config(&[("a", &a.url(), ""), ("b", &b.url(), "")], ""));
    wait_for_channel(&p, "b").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_stats_carry_over_by_id() {
    let a = acquirer("a").await;
    let b = acquirer("b").await;
    let p = PAYROUTE
        .serve(config(&[("a", &a.url(), "fee_percent = 0.3")], ""))
        .await;
    for _ in 0..10 {
        p.pay("m-1", 100).await.assert_ok();
    }
    let before = p.channel("a").await;
    assert_eq!(before["requests"].as_f64(), Some(10.0), "{before}");

    // Same id, new fee, plus a new channel: a keeps its statistics.
    p.replace_config(config(
        &[
            ("a", &a.url(), "fee_percent = 0.4"),
            ("b", &b.url(), "fee_percent = 0.4"),
        ],
        "",
    ));
    assert_eq!(p.reload().await.status, 200);
    let after = p.channel("a").await;
    assert_eq!(after["requests"], before["requests"], "{after}");
    assert_eq!(after["success_rate"], before["success_rate"], "{after}");
    assert_eq!(after["fee_percent"].as_f64(), Some(0.4), "{after}");
    assert_eq!(p.channel("b").await["requests"].as_f64(), Some(0.0));

    // A channel whose id changes starts fresh, even at the same URL.
    p.replace_config(config(&[("a2", &a.url(), "fee_percent = 0.4")], ""));
    assert_eq!(p.reload().await.status, 200);
    assert_eq!(p.channel("a2").await["requests"].as_f64(), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_payment_finishes_on_its_config() {
    let a = acquirer_with("a", Reply::ok().with_delay(Duration::from_millis(1000))).await;
    let b = acquirer("b").await;
    let p = PAYROUTE.serve(config(&[("a", &a.url(), "")], "")).await;
    let api = p.api.clone();
    let slow = tokio::spawn(async move { api.pay("m-1", 100).await });
    assert!(
        a.wait_hits(1, Duration::from_secs(5)).await,
        "the slow payment did not reach a"
    );

    // Channel a disappears while the payment is on it.
    p.replace_config(config(&[("b", &b.url(), "")], ""));
    assert_eq!(p.reload().await.status, 200);
    assert_eq!(p.channel_ids().await, ["b"]);

    let r = slow.await.unwrap();
    r.assert_ok();
    assert_eq!(r.channel().as_deref(), Some("a"));
    let r = p.pay("m-1", 100).await;
    r.assert_ok();
    assert_eq!(r.channel().as_deref(), Some("b"));
    assert_eq!((a.hits(), b.hits()), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merchants_change_on_reload() {
    let a = acquirer("a").await;
    let p = PAYROUTE
        .serve(config(&[("a", &a.url(), "")], "max_amount = 1000"))
        .await;
    p.pay("m-new", 100).await.assert_error(403, "unknown_merchant");
    p.pay("m-1", 3000).await.assert_error(422, "amount_limit_exceeded");
    p.replace_config(config(&[("a", &a.url(), "")], "max_amount = 5000").merchant("m-new", ""));
    assert_eq!(p.reload().await.status, 200);
    p.pay("m-new", 100).await.assert_ok();
    p.pay("m-1", 3000).await.assert_ok();
    // A merchant removed from the config is refused at once.
    p.replace_config(
        config(&[("a", &a.url(), "")], "")
            .to_string()
            .replace("id = \"m-1\"", "id = \"m-other\""),
    );
    assert_eq!(p.reload().await.status, 200);
    p.pay("m-1", 100).await.assert_error(403, "unknown_merchant");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_totals_survive_reload() {
    let a = acquirer("a").await;
    let p = PAYROUTE
        .serve(config(&[("a", &a.url(), "fee_percent = 0.3")], "daily_limit = 1000"))
        .await;
    p.pay("m-1", 800).await.assert_ok();
    // An unrelated change, and the same merchant limits.
    p.replace_config(config(&[("a", &a.url(), "fee_percent = 0.4")], "daily_limit = 1000"));
    assert_eq!(p.reload().await.status, 200);
    p.pay("m-1", 300).await.assert_error(422, "daily_limit_exceeded");
    p.pay("m-1", 200).await.assert_ok();
    // Raising the limit applies on top of what was already accepted.
    p.replace_config(config(&[("a", &a.url(), "fee_percent = 0.4")], "daily_limit = 1500"));
    assert_eq!(p.reload().await.status, 200);
    p.pay("m-1", 500).await.assert_ok();
    p.pay("m-1", 1).await.assert_error(422, "daily_limit_exceeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_state_survives_reload() {
    let a = acquirer("a").await;
    let merchant_extra = "rate_per_sec = 1\nburst = 2";
    let p = PAYROUTE
        .serve(config(&[("a", &a.url(), "fee_percent = 0.3")], merchant_extra))
        .await;
    p.pay("m-1", 100).await.assert_ok();
    p.pay("m-1", 100).await.assert_ok();
    p.pay("m-1", 100).await.assert_error(429, "rate_limited");
    // A reload that does not touch the merchant must not refill its bucket.
    p.replace_config(config(&[("a", &a.url(), "fee_percent = 0.4")], merchant_extra));
    assert_eq!(p.reload().await.status, 200);
    p.pay("m-1", 100).await.assert_error(429, "rate_limited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_config_keeps_serving_and_a_recreated_one_loads() {
    let a = acquirer("a").await;
    let b = acquirer("b").await;
    let p = PAYROUTE.serve(config(&[("a", &a.url(), "")], "")).await;
    std::fs::remove_file(p.config_path()).unwrap();
    // Give the watcher a moment to notice; the proxy must keep serving.
    tokio::time::sleep(Duration::from_millis(300)).await;
    p.pay("m-1", 100).await.assert_ok();
    assert_eq!(p.admin_get("/-/health").await.status, 200);
    let r = p.reload().await;
    assert_eq!(r.status, 400, "reload of a missing file: {}", r.text());
    assert_eq!(p.channel_ids().await, ["a"]);
    p.write_config(config(&[("a", &a.url(), ""), ("b", &b.url(), "")], ""));
    wait_for_channel(&p, "b").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_fails_during_reloads_under_load() {
    let a = acquirer("a").await;
    let b = acquirer("b").await;
    let c = acquirer("c").await;
    for acq in [&a, &b, &c] {
        acq.set_behavior(Reply::ok().with_delay(Duration::from_millis(20)));
    }
    let cfg_n = |n: usize| {
        // Alternate which channel is cheapest, and add/remove c.
        let (fa, fb) = if n.is_multiple_of(2) { (0.2, 0.6) } else { (0.6, 0.2) };
        let mut chans = vec![
            ("a", a.url(), format!("fee_percent = {fa}")),
            ("b", b.url(), format!("fee_percent = {fb}")),
        ];
        if n % 3 == 1 {
            chans.push(("c", c.url(), "fee_percent = 0.1".to_string()));
        }
        let chans: Vec<(&str, &str, &str)> = chans.iter().map(|(id, u, e)| (*id, u.as_str(), e.as_str())).collect();
        config(&chans, &format!("max_amount = {}", 100_000 + n))
    };
    let p = PAYROUTE.serve(cfg_n(0)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let api = p.api.clone();
        let (stop, sent, failures) = (stop.clone(), sent.clone(), failures.clone());
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let body = payment_body(100, "CNY");
                let r = try_send(
                    &api.client,
                    http::Method::POST,
                    &api.url("/v1/payments"),
                    &[("x-merchant-id", "m-1"), ("content-type", "application/json")],
                    body.to_string(),
                )
                .await;
                sent.fetch_add(1, Ordering::Relaxed);
                match r {
                    Ok(r) if r.status == 200 => {}
                    Ok(r) => failures.lock().unwrap().push(format!("{} {}", r.status, r.text())),
                    Err(e) => failures.lock().unwrap().push(format!("transport: {e}")),
                }
            }
        }));
    }

    for n in 1..=10 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        p.replace_config(cfg_n(n));
        if n % 2 == 0 {
            let r = p.reload().await;
            assert_eq!(r.status, 200, "reload {n}: {}", r.text());
        } else if n % 3 == 0 {
            p.sighup();
        }
        // Odd reloads rely on the file watcher / SIGHUP.
    }
    // The last reload (n = 10) went through the endpoint, so it is in effect.
    assert_eq!(p.channel("a").await["fee_percent"].as_f64(), Some(0.2));
    assert!(p.channel_opt("c").await.is_some());
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let sent = sent.load(Ordering::Relaxed);
    let failures = failures.lock().unwrap().clone();
    assert!(sent >= 40, "only {sent} payments sent during the reloads");
    assert!(
        failures.is_empty(),
        "{} of {sent} payments failed during reloads: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    let (ok, _) = p.metrics().await.reloads();
    assert!(ok >= 5.0, "only {ok} successful reloads counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_channel_url_headers_and_enabled_take_effect() {
    let old = acquirer("old").await;
    let new = acquirer("new").await;
    let other = acquirer("other").await;
    let p = PAYROUTE
        .serve(config(
            &[
                ("a", &old.url(), "fee_percent = 0.1\nheaders = { \"x-key\" = \"v1\" }"),
                ("o", &other.url(), "fee_percent = 0.9"),
            ],
            "",
        ))
        .await;
    for _ in 0..3 {
        p.pay("m-1", 100).await.assert_ok();
    }
    assert_eq!(old.hits(), 3);
    assert_eq!(old.last_received().unwrap().header("x-key").as_deref(), Some("v1"));

    // Same id, new URL and header: traffic moves, stats stay.
    p.replace_config(config(
        &[
            ("a", &new.url(), "fee_percent = 0.1\nheaders = { \"x-key\" = \"v2\" }"),
            ("o", &other.url(), "fee_percent = 0.9"),
        ],
        "",
    ));
    assert_eq!(p.reload().await.status, 200);
    for _ in 0..3 {
        let r = p.pay("m-1", 100).await;
        r.assert_ok();
        assert_eq!(r.channel().as_deref(), Some("a"));
    }
    assert_eq!((old.hits(), new.hits()), (3, 3), "old URL still used");
    assert_eq!(new.last_received().unwrap().header("x-key").as_deref(), Some("v2"));
    assert_eq!(p.channel("a").await["requests"].as_u64(), Some(6));

    // Disabled by reload: no more traffic, state disabled.
    p.replace_config(config(
        &[
            ("a", &new.url(), "fee_percent = 0.1\nenabled = false"),
            ("o", &other.url(), "fee_percent = 0.9"),
        ],
        "",
    ));
    assert_eq!(p.reload().await.status, 200);
    assert_eq!(p.channel_state("a").await, "disabled");
    let r = p.pay("m-1", 100).await;
    r.assert_ok();
    assert_eq!(r.channel().as_deref(), Some("o"));
    assert_eq!(new.hits(), 3);
}
