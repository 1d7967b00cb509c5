//! `payroute reconcile` (对账) as an operator runs it: a journal filled by
//! real payments through the proxy, the fake acquirer's real statement of
//! what it charged (GBK or UTF-8, with injected differences), and the
//! differences payroute finds — exactly the injected ones — on SQLite and
//! on PostgreSQL; bad input exits 2 and changes nothing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;

use payroute_mock::{Behavior, MockAcquirer, StatementEncoding, StatementSpec};
use payroute_testkit::*;
use serde_json::Value;

use crate::PAYROUTE;

const PAYMENTS: usize = 300;

/// A day-cut twelve hours away from now (UTC offset 0): every charge of the
/// test and its record in the journal fall in one business day.
fn far_cut() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let at = (now + 12 * 3600) % 86_400;
    format!("{:02}:{:02}Z", at / 3600, at / 60 % 60)
}

fn statement_mapping(cut: &str) -> String {
    format!(
        "fee_percent = 0.6\nstatement = {{ trade_no = \"商户订单号\", amount = \"金额\", fee = \"手续费\", \
         status = \"状态\", paid_values = [\"成功\"], day_starts = \"{cut}\" }}"
    )
}

fn spec(cut: &str, name: &str) -> StatementSpec {
    StatementSpec {
        name: name.into(),
        day_starts: cut.into(),
        fee_percent: 0.6,
        seed: 7,
        ..StatementSpec::default()
    }
}

/// The statement the mock wrote for this spec: one business day.
fn write_one(acquirer: &MockAcquirer, dir: &Path, spec: &StatementSpec) -> (PathBuf, String) {
    let paths = acquirer.write_statements(dir, spec).expect("statement written");
    assert_eq!(paths.len(), 1, "one business day: {paths:?}");
    let path = paths[0].clone();
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    // `<name>-YYYY-MM-DD.csv`
    let date = name[name.len() - 14..name.len() - 4].to_owned();
    (path, date)
}

fn reconcile(config: &Path, statement: &Path, date: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "reconcile",
        "--config",
        config.to_str().expect("utf-8 path"),
        "--channel",
        "a",
        "--statement",
        statement.to_str().expect("utf-8 path"),
        "--date",
        date,
    ];
    args.extend_from_slice(extra);
    PAYROUTE.run(&args)
}

fn code(out: &Output) -> Option<i32> {
    out.status.code()
}

/// `(kind, trade_no)` of the differences in a `--format json` report.
fn found(out: &Output) -> BTreeSet<(String, String)> {
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    doc["differences"]
        .as_array()
        .expect("differences")
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap_or("").to_owned(),
                d["trade_no"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// The faults the mock injected, as it listed them.
fn injected(statement: &Path) -> BTreeSet<(String, String)> {
    let mut reader = csv::Reader::from_path(payroute_mock::faults_path(statement)).expect("faults file");
    reader
        .records()
        .map(|r| {
            let r = r.expect("a faults line");
            (r[0].to_owned(), r[1].to_owned())
        })
        .collect()
}

fn export(config: &Path) -> Vec<u8> {
    let out = PAYROUTE.run(&["journal", "export", "--config", config.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

async fn a_day_reconciles_to_exactly_the_injected_differences(journal: Option<String>) {
    let cut = far_cut();
    let a = MockAcquirer::builder()
        .name("a")
        .behavior(Behavior {
            success_rate: 1.0,
            ..Behavior::default()
        })
        .start()
        .await
        .expect("mock listens");
    let mut config = Config::single("a", &a.url()).amend("a", &statement_mapping(&cut));
    if let Some(j) = &journal {
        config = config.journal(j);
    }
    let mut p = PAYROUTE.serve(config).await;
    for i in 0..PAYMENTS {
        p.pay("m-1", 100 + 37 * i as i64).await.assert_ok();
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let config = p.config_path().to_owned();

    // A clean statement (UTF-8 with a BOM): everything matches, exit 0.
    let clean = StatementSpec {
        encoding: StatementEncoding::Utf8Bom,
        ..spec(&cut, "clean")
    };
    let (path, date) = write_one(&a, dir.path(), &clean);
    let out = reconcile(&config, &path, &date, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(code(&out), Some(0), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(&format!("trade numbers matched {PAYMENTS}")), "{text}");
    assert!(text.contains("differences 0"), "{text}");

    // GBK, a share of every kind of difference: found exactly, no false ones.
    let faulty = StatementSpec {
        encoding: StatementEncoding::Gbk,
        drop: 0.05,
        wrong_amount: 0.05,
        wrong_status: 0.05,
        wrong_fee: 0.05,
        phantom: 0.05,
        ..spec(&cut, "faulty")
    };
    let (path, date) = write_one(&a, dir.path(), &faulty);
    let want = injected(&path);
    let kinds: BTreeSet<&str> = want.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds.len(), 5, "every kind injected: {want:?}");
    let out_csv = dir.path().join("differences.csv");
    let out = reconcile(
        &config,
        &path,
        &date,
        &["--format", "json", "--out", out_csv.to_str().unwrap()],
    );
    assert_eq!(code(&out), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(found(&out), want);
    let written = std::fs::read_to_string(&out_csv).expect("--out written");
    assert!(written.starts_with("kind,trade_no,line,"), "{written}");
    assert_eq!(written.lines().count(), want.len() + 1, "{written}");

    // A hidden mark-up: 0.9 % charged where 0.6 % is configured. Every row
    // is a fee difference, and the effective rate reaches the metrics.
    let marked_up = StatementSpec {
        fee_percent: 0.9,
        ..spec(&cut, "markup")
    };
    let (path, date) = write_one(&a, dir.path(), &marked_up);
    let out = reconcile(&config, &path, &date, &["--format", "json"]);
    assert_eq!(code(&out), Some(1));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("json report");
    let effective = doc["effective_fee_percent"].as_f64().expect("a rate");
    assert!((effective - 0.9).abs() < 0.01, "{doc}");
    let fee_rows = found(&out).iter().filter(|(k, _)| k == "fee_mismatch").count();
    // Small amounts' fees round to within a fen of each other.
    assert!(fee_rows > PAYMENTS / 2, "{fee_rows} fee differences");
    p.restart().await; // the metric is read from the journal at start, then every 30 s
    eventually(
        "the effective fee exported",
        std::time::Duration::from_secs(10),
        || async {
            let exported = p
                .metrics()
                .await
                .get("payroute_channel_effective_fee_percent", &[("channel", "a")]);
            (exported - effective).abs() < 1e-9
        },
    )
    .await;

    // Bad input: exit 2 with the file, line and reason; the journal unchanged.
    let before = export(&config);
    let broken = dir.path().join("broken.csv");
    std::fs::write(&broken, "交易时间,商户订单号,金额,状态\n2026-12-01,T1,1.00,成功\n").expect("write");
    let out = reconcile(&config, &broken, &date, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code(&out), Some(2), "{err}");
    assert!(err.contains("broken.csv:1") && err.contains("\"手续费\""), "{err}");
    let quote = dir.path().join("quote.csv");
    std::fs::write(
        &quote,
        "商户订单号,金额,手续费,状态\nT1,\"1.00,0.01,成功\nT2,1.00,0.01,成功\n",
    )
    .expect("write");
    let out = reconcile(&config, &quote, &date, &[]);
    assert_eq!(code(&out), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("quote.csv:2"));
    let out = reconcile(&config, &path, "1999-01-01", &[]);
    assert_eq!(code(&out), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds no payment"));
    let out = reconcile(&config, &path, "not-a-date", &[]);
    assert_eq!(code(&out), Some(2));
    let mut args = vec!["reconcile", "--config", config.to_str().unwrap(), "--channel", "zzz"];
    args.extend(["--statement", path.to_str().unwrap()]);
    let out = PAYROUTE.run(&args);
    assert_eq!(code(&out), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no channel \"zzz\""));
    assert_eq!(export(&config), before, "bad input changed the journal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_reconciles_on_sqlite() {
    a_day_reconciles_to_exactly_the_injected_differences(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_reconciles_on_postgres() {
    let Some(db) = PgDatabase::create().await else { return };
    a_day_reconciles_to_exactly_the_injected_differences(Some(db.journal())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_in_the_wrong_encoding_is_refused_with_its_line() {
    let a = acquirer("a").await;
    let cut = far_cut();
    let mapping = statement_mapping(&cut).replace("day_starts", "encoding = \"utf-8\", day_starts");
    let p = PAYROUTE.serve(Config::single("a", &a.url()).amend("a", &mapping)).await;
    p.pay("m-1", 100).await.assert_ok();
    let dir = tempfile::tempdir().expect("tempdir");
    let gbk = dir.path().join("gbk.csv");
    let (bytes, _, _) = encoding_rs::GBK.encode("商户订单号,金额,手续费,状态\n");
    std::fs::write(&gbk, bytes).expect("write");
    let date = "2030-01-01";
    let out = reconcile(p.config_path(), &gbk, date, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code(&out), Some(2), "{err}");
    assert!(err.contains("gbk.csv:1") && err.contains("not UTF-8 text"), "{err}");

    // A config whose journal does not exist: refused, and none created.
    let text = std::fs::read_to_string(p.config_path()).expect("config");
    assert!(!text.contains("[journal]"), "{text}");
    let elsewhere = dir.path().join("routes.toml");
    std::fs::write(&elsewhere, format!("{text}\n[journal]\npath = \"absent.db\"\n")).expect("write");
    let empty = dir.path().join("empty.csv");
    std::fs::write(&empty, "商户订单号,金额,手续费,状态\n").expect("write");
    let out = reconcile(&elsewhere, &empty, date, &[]);
    assert_eq!(code(&out), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no journal at"));
    assert!(!dir.path().join("absent.db").exists(), "a journal was created");
}
