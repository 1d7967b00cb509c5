//! Statement files of real payments, over real sockets: JSON payments and
//! epay orders paid at times a test clock sets, written by
//! `POST /-/statement/write` and by the handle, then read back as a
//! reconciler would — decoded (GBK, BOM), parsed with the `csv` crate,
//! compared line by line with what was paid — and the faults files held
//! against the differences found that way.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};

use super::{client, send, url, TestClient};
use crate::epay::{Merchant, Order, Receiver};
use crate::{faults_path, AmountUnit, Behavior, MockAcquirer, StatementEncoding, StatementSpec};

/// 2026-12-01 00:00:00 in China (UTC+8), Unix milliseconds.
const DEC_1_CN: i64 = 1_796_054_400_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
const SETTLE: Duration = Duration::from_secs(10);

/// A directory of its own under the system's temp dir, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("payroute-mock-{name}-{}", std::process::id()));
        // Left over from a killed run of this same process id: start clean.
        let _ = std::fs::remove_dir_all(&dir);
        Scratch(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A settable clock for the mock.
#[derive(Clone)]
struct TestClock(Arc<AtomicI64>);

impl TestClock {
    fn at(ms: i64) -> TestClock {
        TestClock(Arc::new(AtomicI64::new(ms)))
    }

    fn set(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst);
    }

    fn source(&self) -> impl Fn() -> i64 + Send + Sync + 'static {
        let now = self.0.clone();
        move || now.load(Ordering::SeqCst)
    }
}

/// A JSON payment, with payroute's trade number when given.
async fn pay(c: &TestClient, mock: &MockAcquirer, trade_no: Option<&str>, amount: Value) -> (StatusCode, Value) {
    let body = json!({"order_id": format!("o-{}", trade_no.unwrap_or("none")), "amount": amount, "currency": "CNY"});
    let mut req = Request::post(url(mock, "/v1/payments")).header(CONTENT_TYPE, "application/json");
    if let Some(t) = trade_no {
        req = req.header("x-payroute-trade-no", t);
    }
    send(c, req.body(Full::new(Bytes::from(body.to_string()))).expect("request")).await
}

/// A statement file as a reconciler reads it.
#[derive(Debug)]
struct Read {
    /// The `#` lines before the header.
    preamble: Vec<String>,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    total: Vec<String>,
}

fn decode(bytes: &[u8], encoding: StatementEncoding) -> String {
    match encoding {
        StatementEncoding::Utf8 => {
            assert!(!bytes.starts_with(b"\xEF\xBB\xBF"), "no BOM unless asked");
            String::from_utf8(bytes.to_vec()).expect("UTF-8")
        }
        StatementEncoding::Utf8Bom => {
            let rest = bytes.strip_prefix(b"\xEF\xBB\xBF").expect("a BOM first");
            String::from_utf8(rest.to_vec()).expect("UTF-8 after the BOM")
        }
        StatementEncoding::Gbk => {
            assert!(
                std::str::from_utf8(bytes).is_err(),
                "GBK Chinese is not UTF-8: the file is not UTF-8 by mistake"
            );
            let (text, malformed) = encoding_rs::GBK.decode_without_bom_handling(bytes);
            assert!(!malformed, "every byte is GBK");
            text.into_owned()
        }
    }
}

fn read(path: &Path, encoding: StatementEncoding) -> Read {
    let text = decode(&std::fs::read(path).expect("statement"), encoding);
    let mut records = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes())
        .into_records()
        .map(|r| {
            r.expect("a CSV record")
                .iter()
                .map(str::to_owned)
                .collect::<Vec<String>>()
        });
    let mut preamble = Vec::new();
    let header = loop {
        let record = records.next().expect("a header");
        if record[0].starts_with('#') {
            preamble.push(record.join(","));
        } else {
            break record;
        }
    };
    let mut rows: Vec<Vec<String>> = records.collect();
    let total = rows.pop().expect("a totals row");
    assert_eq!(total[0], "合计");
    assert!(rows.iter().all(|r| r.len() == 6), "{rows:?}");
    Read {
        preamble,
        header,
        rows,
        total,
    }
}

/// Fen in an amount as written: yuan (`"1,234.56"`) or fen.
fn fen(text: &str, unit: AmountUnit) -> i64 {
    match unit {
        AmountUnit::Fen => text.parse().expect("fen"),
        AmountUnit::Yuan => {
            let plain = text.replace(',', "");
            let (whole, cents) = plain.split_once('.').expect("two decimals");
            assert_eq!(cents.len(), 2, "{text}");
            whole.parse::<i64>().expect("yuan") * 100 + cents.parse::<i64>().expect("cents")
        }
    }
}

/// 0.6 % rounded half up, computed apart from the mock's code.
fn fee_06(fen: u64) -> i64 {
    i64::try_from((fen * 6 + 500) / 1000).expect("small")
}

/// The faults file's lines, without its header.
fn faults(statement: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(faults_path(statement)).expect("faults file");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("kind,trade_no"));
    lines
        .map(|l| {
            let (kind, trade_no) = l.split_once(',').expect("kind,trade_no");
            (kind.to_owned(), trade_no.to_owned())
        })
        .collect()
}

/// What payroute would find: each row against what was paid (trade number
/// → fen), then what was paid and is on no row.
fn differences(paid: &BTreeMap<String, u64>, rows: &[Vec<String>], unit: AmountUnit) -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    let mut seen = BTreeSet::new();
    for r in rows {
        let trade_no = r[1].clone();
        let kind = match paid.get(&trade_no) {
            None => Some("missing_in_journal"),
            Some(&want) => {
                seen.insert(trade_no.clone());
                if fen(&r[3], unit) != i64::try_from(want).expect("small") {
                    Some("amount_mismatch")
                } else if r[5] != "成功" {
                    Some("status_mismatch")
                } else if fen(&r[4], unit) != fee_06(want) {
                    Some("fee_mismatch")
                } else {
                    None
                }
            }
        };
        if let Some(kind) = kind {
            found.insert((kind.to_owned(), trade_no));
        }
    }
    for trade_no in paid.keys().filter(|t| !seen.contains(*t)) {
        found.insert(("missing_at_channel".to_owned(), trade_no.clone()));
    }
    found
}

/// The checks every statement must pass: its preamble and header, its rows
/// oldest first, its totals row the sum of its rows.
fn check_shape(s: &Read, day: &str, next: &str, unit: AmountUnit) {
    assert_eq!(
        s.preamble,
        [
            "#模拟收单机构 交易明细".to_owned(),
            format!("#起始日期：[{day} 00:00:00]  终止日期：[{next} 00:00:00]"),
        ]
    );
    assert_eq!(
        s.header,
        ["交易时间", "商户订单号", "渠道流水号", "金额", "手续费", "状态"]
    );
    let times: Vec<&str> = s.rows.iter().map(|r| r[0].as_str()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "oldest first: {times:?}");
    assert!(times.iter().all(|t| t.starts_with(day)), "{times:?}");
    let sum = |col: usize| s.rows.iter().map(|r| fen(&r[col], unit)).sum::<i64>();
    assert_eq!(s.total[1], s.rows.len().to_string());
    assert_eq!(s.total[2], "");
    assert_eq!(fen(&s.total[3], unit), sum(3));
    assert_eq!(fen(&s.total[4], unit), sum(4));
}

/// JSON payments at a mock whose statements have every fault: GBK, yuan;
/// read back, the differences are exactly the faults files', the same on
/// every write, others under another seed.
#[tokio::test]
async fn json_payments_statements_with_faults_read_back() {
    let scratch = Scratch::new("stmt-faults");
    let spec = StatementSpec {
        name: "acq-a".into(),
        fee_percent: 0.6,
        encoding: StatementEncoding::Gbk,
        unit: AmountUnit::Yuan,
        seed: 42,
        drop: 0.1,
        wrong_amount: 0.1,
        wrong_status: 0.1,
        wrong_fee: 0.1,
        phantom: 0.1,
        ..StatementSpec::default()
    };
    let clock = TestClock::at(DEC_1_CN);
    let mock = MockAcquirer::builder()
        .behavior(Behavior::default())
        .clock(clock.source())
        .statement_dir(scratch.path().join("endpoint"), spec.clone())
        .start()
        .await
        .expect("start mock");
    let c = client();

    // trade number -> fen, as payroute's journal would have them.
    let mut paid: BTreeMap<String, u64> = BTreeMap::new();
    for i in 0..80u64 {
        let trade_no = format!("T{i:03}");
        // From 1.00 to about 3,600 yuan: thousands separators from the 22nd on.
        let amount = 100 + i * 4_567;
        clock.set(DEC_1_CN + 8 * HOUR + i64::try_from(i).expect("small") * 1000);
        // Fen as a JSON number or as a string of digits.
        let stated = if i % 2 == 0 {
            json!(amount)
        } else {
            json!(amount.to_string())
        };
        let (status, _) = pay(&c, &mock, Some(&trade_no), stated).await;
        assert_eq!(status, StatusCode::OK);
        paid.insert(trade_no, amount);
    }
    // Not listed: no trade number; not a whole number of fen; reversed.
    pay(&c, &mock, None, json!(500)).await;
    pay(&c, &mock, Some("TFRAC"), json!("5.50")).await;
    pay(&c, &mock, Some("TREV"), json!(700)).await;
    let (status, _) = send(
        &c,
        Request::post(url(&mock, "/v1/payments/TREV/reverse"))
            .body(Full::default())
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // Charged when decided, pending first.
    mock.set_behavior(Behavior::default().with_pending(1.0, 0));
    clock.set(DEC_1_CN + 12 * HOUR);
    let (status, _) = pay(&c, &mock, Some("TPEND"), json!(900)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(mock.wait_settled(SETTLE).await);
    paid.insert("TPEND".into(), 900);
    mock.set_behavior(Behavior::default());
    // Either side of midnight in China.
    clock.set(DEC_1_CN + DAY - 1000);
    pay(&c, &mock, Some("TLATE"), json!(1_000)).await;
    clock.set(DEC_1_CN + DAY + 1000);
    pay(&c, &mock, Some("TEARLY"), json!(2_000)).await;
    paid.insert("TLATE".into(), 1_000);
    paid.insert("TEARLY".into(), 2_000);

    let (status, listed) = send(
        &c,
        Request::post(url(&mock, "/-/statement/write"))
            .body(Full::default())
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let dir = scratch.path().join("endpoint");
    let want = [dir.join("acq-a-2026-12-01.csv"), dir.join("acq-a-2026-12-02.csv")];
    assert_eq!(
        listed,
        json!(want.iter().map(|p| p.display().to_string()).collect::<Vec<_>>())
    );

    let mut rows = Vec::new();
    let mut injected = BTreeSet::new();
    for (path, (day, next)) in want
        .iter()
        .zip([("2026-12-01", "2026-12-02"), ("2026-12-02", "2026-12-03")])
    {
        let s = read(path, StatementEncoding::Gbk);
        check_shape(&s, day, next, AmountUnit::Yuan);
        let in_file: BTreeSet<&str> = s.rows.iter().map(|r| r[1].as_str()).collect();
        for (kind, trade_no) in faults(path) {
            // A fault is listed with its day: the row is in this file, or
            // was left out of it.
            assert_eq!(
                in_file.contains(trade_no.as_str()),
                kind != "missing_at_channel",
                "{kind} {trade_no} in {}",
                path.display()
            );
            assert!(injected.insert((kind, trade_no)), "listed once");
        }
        rows.extend(s.rows);
    }
    // Every kind was injected (the seed makes this exact), and nothing else differs.
    let kinds: BTreeSet<&str> = injected.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "amount_mismatch",
            "fee_mismatch",
            "missing_at_channel",
            "missing_in_journal",
            "status_mismatch"
        ])
    );
    assert_eq!(differences(&paid, &rows, AmountUnit::Yuan), injected);
    // Phantoms are 1.00 for trade numbers payroute never issued.
    for r in rows.iter().filter(|r| !paid.contains_key(&r[1])) {
        assert!(r[1].starts_with("PHANTOM") && r[1].len() == 26, "{r:?}");
        assert_eq!((r[3].as_str(), r[5].as_str()), ("1.00", "成功"));
    }
    // Rows over a thousand yuan have their separators, unquoted by the reader.
    let big: Vec<&Vec<String>> = rows
        .iter()
        .filter(|r| paid.get(&r[1]).is_some_and(|&fen| fen >= 100_000))
        .collect();
    assert!(big.len() > 40, "{}", big.len());
    assert!(big.iter().all(|r| r[3].contains(',')), "{big:?}");
    let t079 = rows.iter().find(|r| r[1] == "T079").map(|r| r[3].as_str());
    assert!(matches!(t079, None | Some("3,608.93") | Some("3,609.93")), "{t079:?}");

    // The same payments, the same seed: the same bytes; another seed, other faults.
    let again = mock
        .write_statements(&scratch.path().join("again"), &spec)
        .expect("write");
    for (a, b) in want.iter().zip(&again) {
        assert_eq!(std::fs::read(a).expect("a"), std::fs::read(b).expect("b"));
        assert_eq!(faults(a), faults(b));
    }
    let other = mock
        .write_statements(
            &scratch.path().join("other"),
            &StatementSpec {
                seed: 43,
                ..spec.clone()
            },
        )
        .expect("write");
    assert_ne!(faults(&want[0]), faults(&other[0]));
}

/// Without faults, every charge is listed once, on the day its cut says:
/// 23:59:59 and 00:00:01 in China are two files, and under a cut at 23:00
/// UTC+8 they share one. JSON and epay charges alike; UTF-8 with a BOM, fen.
#[tokio::test]
async fn every_charge_on_its_business_day() {
    let scratch = Scratch::new("stmt-days");
    let clock = TestClock::at(DEC_1_CN);
    let mock = MockAcquirer::builder()
        .behavior(Behavior::default())
        .clock(clock.source())
        .start()
        .await
        .expect("start mock");
    let c = client();
    for (trade_no, at, amount) in [
        ("TNOON", DEC_1_CN + 12 * HOUR, 123_456u64),
        ("TLATE", DEC_1_CN + DAY - 1000, 100),
        ("TEARLY", DEC_1_CN + DAY + 1000, 250),
    ] {
        clock.set(at);
        assert_eq!(pay(&c, &mock, Some(trade_no), json!(amount)).await.0, StatusCode::OK);
    }

    // An epay gateway, its buyers paying at once: charged when they pay.
    let receiver = Receiver::start("k", 0).await.expect("receiver");
    let gateway = MockAcquirer::builder()
        .behavior(Behavior {
            notify_delay_ms: 0,
            ..Behavior::epay("2001", "k")
        })
        .clock(clock.source())
        .start()
        .await
        .expect("start gateway");
    let base = format!("{}/", gateway.url());
    let shop = Merchant::new("2001", "k");
    let mut gateway_ids = Vec::new();
    for (out_trade_no, at, money) in [
        ("E1", DEC_1_CN + 9 * HOUR, "1234.5"),
        ("E2", DEC_1_CN + DAY + 2000, "0.01"),
    ] {
        clock.set(at);
        let order = Order::new(out_trade_no, money).with_notify_url(&receiver.url());
        let created = shop.mapi(&base, &order).await.expect("mapi");
        assert!(created.ok(), "{created:?}");
        gateway_ids.push(created.trade_no.expect("trade_no"));
        assert!(gateway.wait_settled(SETTLE).await);
    }

    let spec = StatementSpec {
        fee_percent: 0.6,
        fee_fixed: 2,
        encoding: StatementEncoding::Utf8Bom,
        unit: AmountUnit::Fen,
        ..StatementSpec::default()
    };
    let json_files = mock
        .write_statements(&scratch.path().join("json"), &spec)
        .expect("write");
    let epay_files = gateway
        .write_statements(&scratch.path().join("epay"), &spec)
        .expect("write");
    let names = |files: &[PathBuf]| {
        files
            .iter()
            .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(&json_files),
        ["statement-2026-12-01.csv", "statement-2026-12-02.csv"]
    );
    assert_eq!(names(&epay_files), names(&json_files));

    let port = mock.local_addr().port();
    let rows = |path: &Path| read(path, StatementEncoding::Utf8Bom).rows;
    // 123456 × 0.6 % = 740.736 → 741, + 2.
    assert_eq!(
        rows(&json_files[0]),
        [
            [
                "2026-12-01 12:00:00",
                "TNOON",
                format!("m{port}t1").as_str(),
                "123456",
                "743",
                "成功"
            ],
            [
                "2026-12-01 23:59:59",
                "TLATE",
                format!("m{port}t2").as_str(),
                "100",
                "3",
                "成功"
            ],
        ]
    );
    assert_eq!(
        rows(&json_files[1]),
        [[
            "2026-12-02 00:00:01",
            "TEARLY",
            format!("m{port}t3").as_str(),
            "250",
            "4",
            "成功"
        ]]
    );
    // epay: out_trade_no is payroute's trade number, money exact in fen.
    assert_eq!(
        rows(&epay_files[0]),
        [[
            "2026-12-01 09:00:00",
            "E1",
            gateway_ids[0].as_str(),
            "123450",
            "743",
            "成功"
        ]]
    );
    assert_eq!(
        rows(&epay_files[1]),
        [["2026-12-02 00:00:02", "E2", gateway_ids[1].as_str(), "1", "2", "成功"]]
    );
    for path in json_files.iter().chain(&epay_files) {
        check_shape(
            &read(path, StatementEncoding::Utf8Bom),
            if path.ends_with("statement-2026-12-01.csv") {
                "2026-12-01"
            } else {
                "2026-12-02"
            },
            if path.ends_with("statement-2026-12-01.csv") {
                "2026-12-02"
            } else {
                "2026-12-03"
            },
            AmountUnit::Fen,
        );
        assert!(faults(path).is_empty(), "no faults asked for");
    }

    // A cut at 23:00 in China: 23:59:59 and 00:00:01 are one business day,
    // Dec 1's, which noon is not (Nov 30's). Times stay China's.
    let late_cut = mock
        .write_statements(
            &scratch.path().join("late"),
            &StatementSpec {
                name: "late".into(),
                day_starts: "23:00+08:00".into(),
                encoding: StatementEncoding::Utf8,
                ..spec.clone()
            },
        )
        .expect("write");
    assert_eq!(names(&late_cut), ["late-2026-11-30.csv", "late-2026-12-01.csv"]);
    let dec_1 = read(&late_cut[1], StatementEncoding::Utf8);
    assert_eq!(
        dec_1.preamble[1],
        "#起始日期：[2026-12-01 23:00:00]  终止日期：[2026-12-02 23:00:00]"
    );
    assert_eq!(
        dec_1
            .rows
            .iter()
            .map(|r| (r[0].as_str(), r[1].as_str()))
            .collect::<Vec<_>>(),
        [("2026-12-01 23:59:59", "TLATE"), ("2026-12-02 00:00:01", "TEARLY")]
    );
}

#[tokio::test]
async fn the_write_endpoint_needs_a_directory_and_a_post() {
    let mock = MockAcquirer::builder()
        .behavior(Behavior::default())
        .start()
        .await
        .expect("start mock");
    let c = client();
    let (status, body) = send(
        &c,
        Request::post(url(&mock, "/-/statement/write"))
            .body(Full::default())
            .expect("request"),
    )
    .await;
    assert_eq!((status, &body["status"]), (StatusCode::NOT_FOUND, &json!("error")));
    let (status, _) = send(
        &c,
        Request::get(url(&mock, "/-/statement/write"))
            .body(Full::default())
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    // Neither is a payment.
    assert_eq!(mock.counters().requests, 0);

    // A spec that does not check is refused at start.
    let bad = MockAcquirer::builder()
        .statement_dir(
            std::env::temp_dir(),
            StatementSpec {
                day_starts: "midnight".into(),
                ..StatementSpec::default()
            },
        )
        .start()
        .await;
    let err = bad.err().expect("refused");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("midnight"), "{err}");
}
