//! The journal as a user sees it: every payment recorded with its state,
//! `payroute journal export`, and a record that survives `kill -9`.

use std::time::Duration;

use payroute_mock::Reply;

use payroute_testkit::*;
use serde_json::Value;

use crate::PAYROUTE;

/// `payroute journal export` of the proxy's journal, as JSON lines.
fn export(config: &std::path::Path, extra: &[&str]) -> Vec<Value> {
    let mut args = vec![
        "journal",
        "export",
        "--config",
        config.to_str().expect("utf-8 path"),
        "--format",
        "jsonl",
    ];
    args.extend_from_slice(extra);
    let out = PAYROUTE.run(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_payment_is_recorded_with_the_state_its_answer_means() {
    let a = acquirer("a").await;
    let p = PAYROUTE.serve(Config::single("a", &a.url())).await;
    let paid = p.pay("m-1", 1250).await;
    paid.assert_ok();
    a.set_behavior(Reply::status(402));
    let declined = p.pay("m-1", 990).await;
    assert_eq!(declined.status, 402);
    // Refused before any acquirer: no payment to record.
    p.pay("nobody", 100).await.assert_error(403, "unknown_merchant");

    let rows = export(p.config_path(), &[]);
    assert_eq!(rows.len(), 2, "{rows:?}");
    let row = |r: &Resp| {
        let t = r.header("x-payroute-trade-no").expect("trade number");
        rows.iter()
            .find(|row| row["trade_no"] == t.as_str())
            .cloned()
            .expect("exported")
    };
    let (p1, p2) = (row(&paid), row(&declined));
    assert_eq!(
        (p1["state"].as_str(), p1["amount"].as_i64()),
        (Some("paid"), Some(1250))
    );
    assert_eq!(
        (p1["merchant_id"].as_str(), p1["channel_id"].as_str()),
        (Some("m-1"), Some("a"))
    );
    assert_eq!(p2["state"], "declined");
    // The window is honoured.
    assert!(export(p.config_path(), &["--until", "2000-01-01"]).is_empty());
    // CSV has a header and one line per payment.
    let out = PAYROUTE.run(&["journal", "export", "--config", p.config_path().to_str().unwrap()]);
    let csv = String::from_utf8_lossy(&out.stdout);
    assert!(csv.lines().next().unwrap_or_default().contains("trade_no"), "{csv}");
    assert_eq!(csv.lines().count(), 3, "{csv}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_refuses_bad_input() {
    let out = PAYROUTE.run(&["journal", "export", "--config", "/nonexistent/routes.toml"]);
    assert!(!out.status.success());
    let out = PAYROUTE.run(&["journal", "export", "--since", "yesterday"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a time"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_was_answered_survives_kill_9() {
    let a = acquirer("a").await;
    let mut p = PAYROUTE.serve(Config::single("a", &a.url())).await;
    let mut trade_nos = Vec::new();
    for _ in 0..50 {
        let r = p.pay("m-1", 100).await;
        r.assert_ok();
        trade_nos.push(r.header("x-payroute-trade-no").expect("trade number"));
    }
    p.kill();
    assert!(p.wait_exit(Duration::from_secs(5)).await.is_some());
    let rows = export(p.config_path(), &[]);
    for t in &trade_nos {
        let row = rows.iter().find(|r| r["trade_no"] == t.as_str());
        assert_eq!(
            row.map(|r| r["state"].as_str()),
            Some(Some("paid")),
            "{t} lost or not paid"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_outage_refuses_payments_and_notifications_and_says_not_ready() {
    let Some(db) = PgDatabase::create().await else { return };
    let a = acquirer("a").await;
    let config = Config::single("a", &a.url())
        .amend(
            "a",
            r#"notify = { signature_header = "x-signature", secret = "whsec" }"#,
        )
        .journal(&db.journal());
    let p = PAYROUTE.serve(config).await;
    let paid = p.pay("m-1", 100).await;
    paid.assert_ok();
    assert_eq!(p.admin_get("/-/ready").await.status, 200);

    db.drop_now().await;
    // fail_closed (the default): refused before any acquirer, nothing charged.
    let before = a.hits();
    let r = p.pay("m-1", 100).await;
    r.assert_error(503, "state_unavailable");
    assert_eq!(a.hits(), before, "a payment reached an acquirer without a journal");
    eventually("/-/ready to say 503", Duration::from_secs(10), || async {
        p.admin_get("/-/ready").await.status == 503
    })
    .await;
    // A channel's notification cannot be committed: 503, so the channel keeps it.
    let body = format!(
        r#"{{"order_id":"{}","status":"paid"}}"#,
        paid.json()["order_id"].as_str().unwrap_or("o")
    );
    let sig = {
        use hmac::Mac;
        let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"whsec").expect("any key length");
        m.update(body.as_bytes());
        hex::encode(m.finalize().into_bytes())
    };
    let r = p
        .request(http::Method::POST, "/notify/a", &[("x-signature", sig.as_str())], body)
        .await;
    assert_eq!(r.status, 503, "{}", r.text());
    let m = p.metrics().await;
    assert!(m.get("payroute_journal_errors_total", &[]) >= 1.0, "{}", m.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_serves_payments_unrecorded_while_the_journal_is_down() {
    let Some(db) = PgDatabase::create().await else { return };
    let a = acquirer("a").await;
    let config = Config::single("a", &a.url())
        .state("on_unavailable = \"fail_open\"")
        .journal(&db.journal());
    let p = PAYROUTE.serve(config).await;
    db.drop_now().await;
    p.pay("m-1", 100).await.assert_ok();
}
