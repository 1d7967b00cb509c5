//! The outside probe's findings (issue 18, part 4), each reproduced as the
//! probe sent it, end to end: the built binary, fake acquirers, real
//! sockets. RELIABILITY.md lists them with the answers asserted here.

use std::time::Duration;

use http::Method;
use payroute_mock::{MockAcquirer, Reply};
use payroute_testkit::*;
use serde_json::json;

use crate::PAYROUTE;

/// POSTs `body` as written (not re-serialised: the point is the bytes).
async fn post_raw(p: &Api, path: &str, merchant: &str, body: &str) -> Resp {
    p.request(
        Method::POST,
        path,
        &[("x-merchant-id", merchant), ("content-type", "application/json")],
        body.to_owned(),
    )
    .await
}

/// Finding 1: a duplicated member — first or last, escaped or not, of any
/// of the three facts — is `400 invalid_request` and reaches no acquirer; a
/// refund's doubled amount likewise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_json_members_are_refused_before_any_acquirer() {
    let a = acquirer("a").await;
    let p = PAYROUTE
        .serve(
            Config::new()
                .channel("a", &a.url(), "")
                .merchant("m-1", "max_amount = 1000"),
        )
        .await;
    let o = order_id();
    let bodies = [
        // The probe's body: the acquirer's parser might keep the first.
        format!(r#"{{"amount": 99999999, "currency": "CNY", "order_id": "{o}", "amount": 100}}"#),
        format!(r#"{{"\u0061mount": 99999999, "currency": "CNY", "order_id": "{o}", "amount": 100}}"#),
        format!(r#"{{"amount": 100, "currency": "\u0043NY", "order_id": "{o}", "currency": "USD"}}"#),
        format!(r#"{{"amount": 100, "currency": "CNY", "order_id": "{o}", "order_id": "{o}-other"}}"#),
        format!(r#"{{"amount": 100, "currency": "CNY", "order_id": "{o}", "order\u005fid": "{o}-x"}}"#),
    ];
    for body in &bodies {
        let r = post_raw(&p, "/v1/payments", "m-1", body).await;
        assert_eq!(r.status, 400, "{body} -> {} {}", r.status, r.text());
        r.assert_error(400, "invalid_request");
    }
    assert_eq!(a.hits(), 0, "a body with a doubled member reached the acquirer");

    // A refund's amount given twice never reaches the acquirer either.
    let paid = post_raw(
        &p,
        "/v1/payments",
        "m-1",
        &format!(r#"{{"amount": 100, "currency": "CNY", "order_id": "{o}"}}"#),
    )
    .await;
    paid.assert_ok();
    for body in [
        r#"{"amount": 99999999, "amount": 1}"#,
        r#"{"amount": 1, "\u0061mount": 99999999}"#,
    ] {
        let r = post_raw(&p, &format!("/v1/payments/{o}/refund"), "m-1", body).await;
        assert_eq!(r.status, 400, "{body} -> {} {}", r.status, r.text());
        r.assert_error(400, "invalid_request");
    }
    assert_eq!(
        a.count("POST", REFUND),
        0,
        "a refund with a doubled amount reached the acquirer"
    );
}

const FAST: &str = "timeout_ms = 300\nconnect_timeout_ms = 300";
const SOON: Duration = Duration::from_secs(10);

/// Merchant m-A's payment of order `o` on channel a, paid; then a hangs on
/// payments and answers every order query "paid" (about m-A's payment: it
/// knows no other under `o`).
async fn a_paid_then_hanging(a: &MockAcquirer, p: &Api, o: &str) {
    a.on("POST", PAY, Reply::ok());
    let body = json!({"amount": 500, "currency": "CNY", "order_id": o});
    p.post_payment("m-A", &body, &[]).await.assert_ok();
    a.on("POST", PAY, Reply::hang());
    a.on("GET", ORDER, Reply::ok().with_body(r#"{"status":"paid"}"#));
}

/// Finding 2: merchant m-B's ambiguous attempt under an order id m-A paid
/// on the same channel is never "resolved" by a query or reversal that
/// names the order id alone — it would be m-A's payment. m-B gets the
/// honest 504 with `X-Payroute-Ambiguous`; the sweeper does not ask either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_id_two_merchants_share_is_never_queried_or_reversed() {
    let a = acquirer("a").await;
    let config = Config::new()
        .channel("a", &a.url(), &format!("{FAST}\n{QUERY}\n{REVERSAL}"))
        .merchant("m-A", "")
        .merchant("m-B", "")
        // The sweeper's first visit waits for the payment's deadline.
        .server("deadline_ms = 1000")
        .sweeper("query_after_ms = [200]\nclose_after_ms = 600000");
    let p = PAYROUTE.serve(config).await;
    let o = order_id();
    a_paid_then_hanging(&a, &p, &o).await;

    let body = json!({"amount": 700, "currency": "CNY", "order_id": o});
    let r = p.post_payment("m-B", &body, &[]).await;
    r.assert_error(504, "upstream_timeout");
    assert_eq!(r.ambiguous().as_deref(), Some("a"));
    // Logged before the answer; the reader of the proxy's stderr may trail
    // on a loaded machine (a bound, not a timing claim).
    let both = || {
        let logs = p.logs();
        logs.iter().any(|l| l.contains("query not sent")) && logs.iter().any(|l| l.contains("reversal not sent"))
    };
    eventually(
        "the query and the reversal logged as not sent",
        Duration::from_secs(10),
        || async { both() },
    )
    .await;
    assert_eq!(a.count("GET", ORDER), 0, "m-B's fate was asked by m-A's order id");
    assert_eq!(a.count("POST", REVERSE), 0, "m-A's payment could have been reversed");

    // The sweeper visits m-B's pending payment and does not ask either.
    eventually("the sweeper visited m-B's payment", SOON, || async {
        p.metrics().await.get(
            "payroute_sweeper_queries_total",
            &[("channel", "a"), ("result", "unknown")],
        ) >= 1.0
    })
    .await;
    assert_eq!(a.count("GET", ORDER), 0, "the sweeper asked by a shared order id");
    assert_eq!(a.count("POST", REVERSE), 0);
}

/// Finding 2, the other way: a template naming `{trade_no}` names m-B's
/// payment alone, so it is used even though m-A shares the order id; the
/// payment itself carried the same trade number upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trade_number_template_names_this_payment_whoever_shares_its_order_id() {
    let a = acquirer("a").await;
    let by_trade = r#"query = { method = "GET", path = "/v1/trades/{trade_no}" }"#;
    let config = Config::new()
        .channel("a", &a.url(), &format!("{FAST}\n{by_trade}"))
        .merchant("m-A", "")
        .merchant("m-B", "");
    let p = PAYROUTE.serve(config).await;
    let o = order_id();
    a_paid_then_hanging(&a, &p, &o).await;
    a.on("GET", "/v1/trades/*", Reply::status(404));

    let body = json!({"amount": 700, "currency": "CNY", "order_id": o});
    let r = p.post_payment("m-B", &body, &[]).await;
    let trade_no = r.trade_no().expect("m-B's trade number");
    let queries = a.received_to("GET", "/v1/trades/*");
    assert_eq!(queries.len(), 1, "{}", r.text());
    assert_eq!(queries[0].path, format!("/v1/trades/{trade_no}"));
    let sent = a.received_to("POST", PAY).pop().expect("m-B's payment");
    assert_eq!(sent.header("x-payroute-trade-no").as_deref(), Some(trade_no.as_str()));
    assert_eq!(a.count("GET", ORDER), 0);
}

/// Finding 5, as the probe sent it: with the merchant's daily limit used up
/// by one paid order, `POST /v1/payments/{order}` stating 99999999 (three
/// times) is `422 amount_limit_exceeded` and reaches no acquirer; a refund
/// within the payment goes through, is journaled, and moves it to
/// `refunded`; nothing more can be refunded after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_ups_never_move_more_than_the_payment_still_has() {
    let a = acquirer("a").await;
    let p = PAYROUTE
        .serve(
            Config::new()
                .channel("a", &a.url(), "")
                .merchant("m-1", "daily_limit = 1000"),
        )
        .await;
    let o = order_id();
    let body = json!({"amount": 1000, "currency": "CNY", "order_id": o});
    let paid = p.post_payment("m-1", &body, &[]).await;
    paid.assert_ok();
    let trade_no = paid.trade_no().expect("trade number");
    p.pay("m-1", 1).await.assert_error(422, "daily_limit_exceeded");
    for _ in 0..3 {
        let r = post_raw(&p, &format!("/v1/payments/{o}"), "m-1", r#"{"amount": 99999999}"#).await;
        r.assert_error(422, "amount_limit_exceeded");
    }
    let refund = |amount: u64| {
        let p = &p;
        let o = &o;
        async move {
            post_raw(
                p,
                &format!("/v1/payments/{o}/refund"),
                "m-1",
                &format!(r#"{{"amount": {amount}}}"#),
            )
            .await
        }
    };
    refund(1001).await.assert_error(422, "amount_limit_exceeded");
    assert_eq!(
        a.count("POST", ORDER),
        0,
        "a follow-up over the payment reached the acquirer"
    );
    assert_eq!(a.count("POST", REFUND), 0);

    assert_eq!(refund(400).await.status, 200);
    assert_eq!(refund(600).await.status, 200);
    refund(1).await.assert_error(422, "amount_limit_exceeded");
    assert_eq!(a.count("POST", REFUND), 2);
    let record = p.admin_get(&format!("/-/payments/{trade_no}")).await;
    assert_eq!(record.status, 200, "{}", record.text());
    let record = record.json();
    assert_eq!(record["state"], "refunded", "{record}");
    assert_eq!(record["refunded_amount"], 1000, "{record}");
    let refunds: Vec<_> = record["adjustments"]
        .as_array()
        .expect("adjustments")
        .iter()
        .filter(|a| a["kind"] == "refund")
        .map(|a| (a["amount"].as_i64(), a["result"].as_str().map(str::to_owned)))
        .collect();
    assert_eq!(refunds.len(), 2, "{record}");
}

/// Finding 5, the gap: a fleet sharing Redis but not its journal (each
/// instance on its own SQLite file). Instance 2 knows the order's channel
/// from Redis but not the payment: a refund stating an amount there has
/// nothing to be checked against, so it is refused, not sent unchecked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_of_a_payment_the_journal_does_not_hold_is_refused() {
    let a = acquirer("a").await;
    let prefix = format!("payroute-e2e-{:x}:", fastrand::u64(..));
    let config = Config::new()
        .state(&format!("backend = \"redis\"\nkey_prefix = \"{prefix}\""))
        .channel("a", &a.url(), "")
        .merchant("m-1", "");
    let (one, two) = (PAYROUTE.serve(&config).await, PAYROUTE.serve(&config).await);
    let o = order_id();
    one.post_payment("m-1", &json!({"amount": 1000, "currency": "CNY", "order_id": o}), &[])
        .await
        .assert_ok();
    let r = post_raw(
        &two,
        &format!("/v1/payments/{o}/refund"),
        "m-1",
        r#"{"amount": 99999999}"#,
    )
    .await;
    r.assert_error(422, "amount_limit_exceeded");
    assert_eq!(a.count("POST", REFUND), 0, "an unchecked refund reached the acquirer");
    // Where the payment is journaled, the same refund is checked as usual.
    let r = post_raw(&one, &format!("/v1/payments/{o}/refund"), "m-1", r#"{"amount": 1000}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Finding 7: two `X-Merchant-Id` or two `Idempotency-Key` headers are
/// `400 invalid_request` on payments and on follow-ups of any method, and
/// nothing reaches the acquirer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_merchant_ids_or_idempotency_keys_are_refused_everywhere() {
    let a = acquirer("a").await;
    let p = PAYROUTE
        .serve(
            Config::new()
                .channel("a", &a.url(), "")
                .merchant("m-1", "")
                .merchant("m-2", ""),
        )
        .await;
    let o = order_id();
    let body = json!({"amount": 100, "currency": "CNY", "order_id": o});
    p.post_payment("m-1", &body, &[]).await.assert_ok();
    let hits = a.hits();
    let json = ("content-type", "application/json");
    /// Method, path, headers, body.
    type Case<'a> = (Method, String, Vec<(&'a str, &'a str)>, String);
    let cases: [Case; 5] = [
        (
            Method::POST,
            "/v1/payments".into(),
            vec![("x-merchant-id", "m-2"), ("x-merchant-id", "m-1"), json],
            payment_body(100, "CNY").to_string(),
        ),
        (
            Method::POST,
            "/v1/payments".into(),
            vec![
                ("x-merchant-id", "m-1"),
                ("idempotency-key", "k1"),
                ("idempotency-key", "k2"),
                json,
            ],
            payment_body(100, "CNY").to_string(),
        ),
        (
            Method::GET,
            format!("/v1/payments/{o}"),
            vec![("x-merchant-id", "m-1"), ("x-merchant-id", "m-2")],
            String::new(),
        ),
        (
            Method::GET,
            format!("/v1/payments/{o}"),
            vec![
                ("x-merchant-id", "m-1"),
                ("idempotency-key", "k1"),
                ("idempotency-key", "k2"),
            ],
            String::new(),
        ),
        (
            Method::POST,
            format!("/v1/payments/{o}/refund"),
            vec![
                ("x-merchant-id", "m-1"),
                ("idempotency-key", "r1"),
                ("idempotency-key", "r2"),
                json,
            ],
            r#"{"amount": 10}"#.into(),
        ),
    ];
    for (method, path, headers, body) in cases {
        let r = p.request(method.clone(), &path, &headers, body).await;
        assert_eq!(
            r.status,
            400,
            "{method} {path} {headers:?} -> {} {}",
            r.status,
            r.text()
        );
        r.assert_error(400, "invalid_request");
    }
    assert_eq!(
        a.hits(),
        hits,
        "a request with a doubled security header reached the acquirer"
    );
}

/// Finding 6: `.` and `..` (plain or `%2e`) are no order ids, in a payment
/// body or in a follow-up path; nothing reaches the acquirer, whose router
/// would resolve `/v1/payments/../refund` to `/v1/refund`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_segment_order_ids_are_refused() {
    let a = acquirer("a").await;
    let p = PAYROUTE
        .serve(
            Config::new()
                .channel("a", &a.url(), &format!("{QUERY}\n{REVERSAL}"))
                .merchant("m-1", ""),
        )
        .await;
    for o in [".", "..", "%2e%2e", ".%2E"] {
        let r = p
            .post_payment("m-1", &json!({"amount": 100, "currency": "CNY", "order_id": o}), &[])
            .await;
        assert_eq!(r.status, 400, "order id {o:?} -> {} {}", r.status, r.text());
        r.assert_error(400, "invalid_request");
    }
    for (method, path) in [
        (Method::POST, "/v1/payments/../refund"),
        (Method::POST, "/v1/payments/./refund"),
        (Method::POST, "/v1/payments/%2e%2e/refund"),
        (Method::GET, "/v1/payments/.."),
        (Method::GET, "/v1/payments/%2E"),
    ] {
        let r = p
            .request(
                method.clone(),
                path,
                &[("x-merchant-id", "m-1"), ("content-type", "application/json")],
                r#"{"amount": 1}"#,
            )
            .await;
        assert_eq!(r.status, 400, "{method} {path} -> {} {}", r.status, r.text());
        r.assert_error(400, "invalid_request");
    }
    assert_eq!(a.hits(), 0, "a dot-segment order id reached the acquirer");
    // An id with dots that is no dot segment is an ordinary id.
    let r = p
        .post_payment(
            "m-1",
            &json!({"amount": 100, "currency": "CNY", "order_id": format!("{}...", order_id())}),
            &[],
        )
        .await;
    r.assert_ok();
}

/// Finding 9: an acquirer's `X-Payroute-Replayed` / `X-Payroute-Ambiguous`
/// (any `X-Payroute-*`) never reach the merchant: not on a first answer,
/// not on a follow-up's; payroute's own are the only ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acquirer_cannot_impersonate_payroutes_headers() {
    let acq = headers_acquirer(&[
        ("X-Payroute-Replayed", "true"),
        ("X-Payroute-Ambiguous", "a"),
        ("x-payroute-request-id", "forged"),
        ("x-payroute-attempts", "9"),
        ("x-payroute-anything", "1"),
    ])
    .await;
    let p = PAYROUTE.serve(Config::single("a", &acq.url())).await;
    let body = payment_body(100, "CNY");
    let first = p.post_payment("m-1", &body, &[]).await;
    first.assert_ok();
    let o = body["order_id"].as_str().expect("order id");
    let follow = p
        .request(
            Method::GET,
            &format!("/v1/payments/{o}"),
            &[("x-merchant-id", "m-1")],
            "",
        )
        .await;
    assert_eq!(follow.status, 200, "{}", follow.text());
    for r in [&first, &follow] {
        assert_eq!(r.header("x-payroute-replayed"), None, "a first answer marked replayed");
        assert_eq!(r.ambiguous(), None);
        assert_eq!(r.header("x-payroute-anything"), None);
        assert_eq!(r.headers.get_all("x-payroute-request-id").iter().count(), 1);
        assert_ne!(r.request_id().as_deref(), Some("forged"));
        assert_eq!(r.headers.get_all("x-payroute-attempts").iter().count(), 1);
        assert_eq!(r.attempts(), Some(1));
    }
    // The replay is payroute's, and says so once.
    let replay = p.post_payment("m-1", &body, &[]).await;
    assert_eq!(replay.headers.get_all("x-payroute-replayed").iter().count(), 1);
    assert_eq!(acq.hits(), 2);
}

/// Finding 8: card numbers grouped by `.`, `_` or `+` as order ids: the
/// query and reversal lines (warn) log them masked, never whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn card_numbers_with_any_separator_are_masked_in_query_and_reversal_lines() {
    let a = acquirer_with("a", Reply::hang()).await;
    a.on("GET", ORDER, Reply::status(500));
    a.on("POST", REVERSE, Reply::status(500));
    let p = PAYROUTE
        .serve(
            Config::new()
                .channel("a", &a.url(), &format!("{FAST}\n{QUERY}\n{REVERSAL}"))
                .merchant("m-1", ""),
        )
        .await;
    let pans = [
        ("4111.1111.1111.1111", "4111.11**.****.1111"),
        ("4111_1111_1111_1111", "4111_11**_****_1111"),
        ("4111+1111+1111+1111", "4111+11**+****+1111"),
    ];
    for (pan, _) in pans {
        let r = p
            .post_payment("m-1", &json!({"amount": 100, "currency": "CNY", "order_id": pan}), &[])
            .await;
        assert_eq!(r.ambiguous().as_deref(), Some("a"), "{} {}", r.status, r.text());
    }
    eventually("a query line and a reversal line for each", SOON, || async {
        let logs = p.logs();
        pans.iter().all(|(_, masked)| {
            let about = |what: &str| logs.iter().any(|l| l.contains(what) && l.contains(masked));
            about("query left the payment's fate unknown") && about("reversal failed")
        })
    })
    .await;
    let logs = p.logs().join("\n");
    for (pan, _) in pans {
        assert!(!logs.contains(pan), "{pan} logged in full:\n{logs}");
    }
}

/// Finding 10: the probe's `eject_base_ms = eject_max_ms =
/// 9223372036854775807` is refused by `check` (and so by serve and reload)
/// at both values; a reload that lowers `eject_max_ms` ends an ejection
/// made under the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durations_are_bounded_and_a_lower_eject_max_frees_an_ejected_channel() {
    let huge = "9223372036854775807";
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("routes.toml");
    let probe = Config::new()
        .routing(&format!("eject_base_ms = {huge}\neject_max_ms = {huge}"))
        .channel("a", "http://127.0.0.1:1", "")
        .merchant("m-1", "")
        .to_string();
    std::fs::write(&path, &probe).expect("write routes.toml");
    let file = path.to_str().expect("utf-8 path");
    let out = PAYROUTE.run(&["check", file]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let lines: Vec<usize> = error_locations(&stderr, file).into_iter().map(|(l, _)| l).collect();
    let expected = [line_of(&probe, "eject_base_ms", 0), line_of(&probe, "eject_max_ms", 0)];
    assert_eq!(lines, expected, "{stderr}");
    assert!(stderr.contains("eject_max_ms must be at most 86400000"), "{stderr}");

    // At the ceiling (a day), a failure ejects channel a; a reload lowering
    // eject_max_ms to 200 ms gives it back.
    let down = refused_url();
    let day = |max: &str| {
        Config::new()
            .routing(&format!(
                "eject_consecutive_failures = 1\neject_base_ms = {max}\neject_max_ms = {max}"
            ))
            .channel("a", &down, "")
            .merchant("m-1", "")
    };
    let p = PAYROUTE.serve(day("86400000")).await;
    p.pay("m-1", 100).await.assert_error(502, "upstream_failed");
    assert_eq!(p.channel_state("a").await, "ejected");
    p.pay("m-1", 100).await.assert_error(503, "no_channel_available");
    p.replace_config(day("200"));
    assert_eq!(p.reload().await.status, 200);
    eventually("channel a out of its day-long ejection", SOON, || async {
        p.channel_state("a").await != "ejected"
    })
    .await;
}

/// `payroute check` on `text`: (exit code, stderr).
fn check(text: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("routes.toml");
    std::fs::write(&path, text).expect("write routes.toml");
    let out = PAYROUTE.run(&["check", path.to_str().expect("utf-8 path")]);
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Finding 11: headers a merchant names in `Connection:` are its hop's and
/// stay there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_named_in_connection_are_not_forwarded() {
    let a = acquirer("a").await;
    let p = PAYROUTE.serve(Config::single("a", &a.url())).await;
    let body = payment_body(100, "CNY").to_string();
    let req = format!(
        "POST /v1/payments HTTP/1.1\r\nhost: x\r\nx-merchant-id: m-1\r\ncontent-type: application/json\r\n\
         connection: close, X-Hop\r\nx-hop: secret-of-this-hop\r\nx-end: kept\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let answer = raw_http(p.listen, req.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let got = a.last_received().expect("the payment reached the acquirer");
    assert_eq!(got.header("x-hop"), None, "a header named in Connection was forwarded");
    assert_eq!(got.header("x-end").as_deref(), Some("kept"));
}

/// Finding 11: `check` and the reload's 400 echo a 1 MB merchant id cut,
/// not whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_value_in_the_config_is_echoed_cut() {
    let huge = "m".repeat(1 << 20);
    let bad = Config::single("a", "http://127.0.0.1:1")
        .merchant(&huge, "")
        .to_string();
    let (code, stderr) = check(&bad);
    assert_eq!(code, Some(1), "{}", &stderr[..stderr.len().min(500)]);
    assert!(stderr.len() < 4096, "check echoed {} bytes", stderr.len());
    assert!(stderr.contains("(1048576 bytes)"), "{stderr}");

    let p = PAYROUTE.serve(Config::single("a", "http://127.0.0.1:1")).await;
    p.replace_config(&bad);
    let r = p.reload().await;
    assert_eq!(r.status, 400);
    assert!(r.body.len() < 4096, "the reload's 400 echoed {} bytes", r.body.len());
    assert!(r.text().contains("(1048576 bytes)"), "{}", r.text());
}

/// Finding 11: a merchant header with a meaning of its own, and a `#` in a
/// reversal path, are config errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merchant_header_of_http_and_a_fragment_in_a_path_are_refused() {
    for name in ["authorization", "content-length", "connection", "transfer-encoding"] {
        let text = Config::single("a", "http://127.0.0.1:1")
            .request(&format!("merchant_header = \"{name}\""))
            .to_string();
        let (code, stderr) = check(&text);
        assert_eq!(code, Some(1), "merchant_header = {name}: {stderr}");
        assert!(stderr.contains("merchant_header"), "{stderr}");
    }
    let text = Config::new()
        .channel(
            "a",
            "http://127.0.0.1:1",
            r#"reversal = { method = "POST", path = "/v1/payments/{order_id}/reverse#x" }"#,
        )
        .merchant("m-1", "")
        .to_string();
    let (code, stderr) = check(&text);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("reversal.path"), "{stderr}");
}

/// Finding 11: the admin API reads `Authorization` as merchant auth does:
/// the scheme in any case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_takes_a_bearer_token_in_any_case() {
    let p = PAYROUTE
        .serve(Config::single("a", "http://127.0.0.1:1").server("admin_token = \"t0ken\""))
        .await;
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let r = p
            .admin_post("/-/reload", &[("authorization", &format!("{scheme} t0ken"))])
            .await;
        assert_eq!(r.status, 200, "{scheme}: {}", r.text());
    }
    let r = p.admin_post("/-/reload", &[("authorization", "bearer wrong")]).await;
    assert_eq!(r.status, 401);
}

/// Reads `s` until the server closes it; `None` if it stays open for 10 s
/// (far longer than any timeout these tests configure: not a threshold).
async fn read_until_closed(s: &mut tokio::net::TcpStream) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    closed.ok().map(|()| String::from_utf8_lossy(&out).into_owned())
}

const SHORT: &str = "header_timeout_ms = 200\nidle_timeout_ms = 200\nbody_timeout_ms = 200";

/// Finding 3: a connection that says nothing is closed after
/// `idle_timeout_ms`; so is one idle after a request (keep-alive).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed() {
    use tokio::io::AsyncWriteExt;
    let a = acquirer("a").await;
    let p = PAYROUTE.serve(Config::single("a", &a.url()).server(SHORT)).await;
    let mut silent = tokio::net::TcpStream::connect(p.listen).await.expect("connect");
    assert_eq!(
        read_until_closed(&mut silent).await.as_deref(),
        Some(""),
        "a silent connection stayed open"
    );

    let mut kept = tokio::net::TcpStream::connect(p.listen).await.expect("connect");
    let body = payment_body(100, "CNY").to_string();
    let req = format!(
        "POST /v1/payments HTTP/1.1\r\nhost: x\r\nx-merchant-id: m-1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    kept.write_all(req.as_bytes()).await.expect("write");
    let answer = read_until_closed(&mut kept)
        .await
        .expect("an idle keep-alive connection stayed open");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // The admin listener closes idle connections too.
    let mut admin = tokio::net::TcpStream::connect(p.admin).await.expect("connect");
    assert!(
        read_until_closed(&mut admin).await.is_some(),
        "an idle admin connection stayed open"
    );
}

/// Finding 3: a head sent a byte at a time is cut at `header_timeout_ms`,
/// long before it is complete, and never answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_dribbled_byte_by_byte_is_cut() {
    use tokio::io::AsyncWriteExt;
    let a = acquirer("a").await;
    // Idle time is long: only the head's own bound can cut it.
    let p = PAYROUTE
        .serve(Config::single("a", &a.url()).server("header_timeout_ms = 200\nidle_timeout_ms = 60000"))
        .await;
    let stream = tokio::net::TcpStream::connect(p.listen).await.expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let head = format!(
        "POST /v1/payments HTTP/1.1\r\nhost: x\r\nx-merchant-id: m-1\r\nx-pad: {}\r\n\r\n",
        "p".repeat(300)
    );
    let writer = tokio::spawn(async move {
        for (sent, b) in head.bytes().enumerate() {
            if wr.write_all(&[b]).await.is_err() {
                return sent;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        head.len()
    });
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), rd.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the dribbled head was never cut");
    assert!(
        out.is_empty(),
        "a cut head was answered: {}",
        String::from_utf8_lossy(&out)
    );
    assert!(
        !writer.is_finished(),
        "the connection was cut only after the whole head"
    );
    writer.abort();
    assert_eq!(a.hits(), 0);
}

/// Finding 3: the probe's body of 169 bytes sent over (here) seconds is
/// refused at `body_timeout_ms`: `400 invalid_request` with a request id,
/// the connection closed, nothing paid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_dribbled_byte_by_byte_is_refused() {
    use tokio::io::AsyncWriteExt;
    let a = acquirer("a").await;
    let p = PAYROUTE.serve(Config::single("a", &a.url()).server(SHORT)).await;
    let mut body = payment_body(100, "CNY").to_string();
    while body.len() < 169 {
        body.insert(body.len() - 1, ' ');
    }
    let stream = tokio::net::TcpStream::connect(p.listen).await.expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let head = format!(
        "POST /v1/payments HTTP/1.1\r\nhost: x\r\nx-merchant-id: m-1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    wr.write_all(head.as_bytes()).await.expect("write the head");
    let writer = tokio::spawn(async move {
        for b in body.bytes() {
            if wr.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), rd.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the connection stayed open");
    let answer = String::from_utf8_lossy(&out);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("\"invalid_request\""), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("x-payroute-request-id"),
        "{answer}"
    );
    assert!(!writer.is_finished(), "refused only after the whole body");
    writer.abort();
    assert_eq!(a.hits(), 0, "a dribbled body was paid");
}

/// Finding 3: at `max_connections` the payment listener stops accepting —
/// one log line for the episode however many connections wait and churn —
/// while the admin API answers; a closed connection lets the next one in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_keeps_admin_reachable_and_logs_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    let a = acquirer("a").await;
    let p = PAYROUTE
        .serve(Config::single("a", &a.url()).server("max_connections = 10\nidle_timeout_ms = 60000"))
        .await;
    let mut idle = Vec::new();
    for _ in 0..10 {
        idle.push(TcpStream::connect(p.listen).await.expect("connect"));
    }
    // First in the backlog: a payment; behind it, more idle connections.
    let mut waiting = TcpStream::connect(p.listen).await.expect("connect");
    let body = payment_body(100, "CNY").to_string();
    let req = format!(
        "POST /v1/payments HTTP/1.1\r\nhost: x\r\nx-merchant-id: m-1\r\nconnection: close\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    waiting.write_all(req.as_bytes()).await.expect("write");
    let mut queued = Vec::new();
    for _ in 0..5 {
        queued.push(TcpStream::connect(p.listen).await.expect("connect"));
    }
    eventually("the full listener said so", SOON, || async {
        p.logs().iter().any(|l| l.contains("payment listener full"))
    })
    .await;
    let health = p.admin_get("/-/health").await;
    assert_eq!(health.status, 200, "admin unreachable while payments are full");
    assert_eq!(a.hits(), 0, "a payment was served over the cap");

    // One closes: the payment gets in and is answered; the queued ones fill
    // the listener again — the same episode.
    drop(idle.pop());
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), waiting.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the waiting payment was never served");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(queued);
    drop(idle);
    eventually("the listener said it accepts again", SOON, || async {
        p.logs().iter().any(|l| l.contains("payment listener accepting again"))
    })
    .await;
    let full_lines = p.logs().iter().filter(|l| l.contains("payment listener full")).count();
    assert_eq!(full_lines, 1, "one episode, one line: {:#?}", p.logs());
}

/// Finding 11: heads payroute will not read get the contract's JSON error
/// with a request id (hyper's own bare answers only far beyond).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_get_json_answers_with_a_request_id() {
    let a = acquirer("a").await;
    let p = PAYROUTE.serve(Config::single("a", &a.url())).await;
    let long_target = format!("/v1/payments?pad={}", "x".repeat(10_000));
    let r = p
        .request(Method::POST, &long_target, &[("x-merchant-id", "m-1")], "{}")
        .await;
    r.assert_error(414, "invalid_request");
    let many: Vec<(String, String)> = (0..150).map(|i| (format!("x-h{i}"), "v".into())).collect();
    let mut headers: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    headers.push(("x-merchant-id", "m-1"));
    let r = p
        .request(
            Method::POST,
            "/v1/payments",
            &headers,
            payment_body(100, "CNY").to_string(),
        )
        .await;
    r.assert_error(431, "invalid_request");
    let big = "b".repeat(40_000);
    let r = p
        .request(
            Method::POST,
            "/v1/payments",
            &[("x-merchant-id", "m-1"), ("x-big", &big)],
            "{}",
        )
        .await;
    r.assert_error(431, "invalid_request");
    assert_eq!(a.hits(), 0);
}

/// Finding 4: answers of 1 MB are not kept whole for replay. The first
/// answer is the acquirer's, whole; a replay has the status, channel and
/// trade number, no body, and says how large it was. 300 such payments
/// (the probe took RSS from 16 to 307 MiB with them) leave payroute's
/// memory far below what keeping them would take.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_answers_are_not_kept_whole_for_replay() {
    const BODY: usize = 1_000_000;
    let big = format!("{{\"status\":\"paid\",\"pad\":\"{}\"}}", "p".repeat(BODY - 30));
    let a = acquirer_with("a", Reply::ok().with_body(big.clone())).await;
    let p = PAYROUTE.serve(Config::single("a", &a.url())).await;
    let body = payment_body(100, "CNY");
    let first = p.post_payment("m-1", &body, &[]).await;
    first.assert_ok();
    assert_eq!(first.body.len(), big.len(), "the first answer is the acquirer's, whole");
    let replay = p.post_payment("m-1", &body, &[]).await;
    assert_eq!(replay.status, 200);
    assert_eq!(replay.header("x-payroute-replayed").as_deref(), Some("true"));
    assert_eq!(replay.header("x-payroute-body-omitted"), Some(big.len().to_string()));
    assert!(replay.body.is_empty(), "{} bytes replayed", replay.body.len());
    assert_eq!(replay.trade_no(), first.trade_no());
    assert_eq!(replay.channel().as_deref(), Some("a"));
    assert_eq!(a.count("POST", PAY), 1, "a replay reached the acquirer");

    let Some(before) = p.rss_kib() else {
        return; // not Linux: no /proc to read
    };
    let api = p.api.clone();
    let sends = (0..4).map(|_| {
        let api = api.clone();
        tokio::spawn(async move {
            for _ in 0..75 {
                api.pay("m-1", 100).await.assert_ok();
            }
        })
    });
    for s in sends {
        s.await.expect("payments");
    }
    assert_eq!(a.count("POST", PAY), 301);
    let after = p.rss_kib().expect("RSS");
    let grown_mib = after.saturating_sub(before) / 1024;
    // Kept whole, 300 answers of 1 MB are 286 MiB.
    assert!(
        grown_mib < 100,
        "RSS grew {grown_mib} MiB over 300 answers of 1 MB ({before} -> {after} KiB)"
    );
    eprintln!("RSS {before} -> {after} KiB over 300 answers of 1 MB");
}
