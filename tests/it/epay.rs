//! epay (易支付) both ways, against the real binary: an epay shop
//! (`payroute_mock::epay::Merchant`) in front, fake epay gateways
//! (`payroute-mock` with `Behavior::epay`, or scripted answers) behind.
//! One test signs with Python's hashlib, an implementation payroute did not
//! write.

use std::time::Duration;

use payroute_mock::epay::{Merchant, Order, Params};
use payroute_mock::{Behavior, MockAcquirer, Reply};
use payroute_testkit::*;
use serde_json::Value;

use crate::PAYROUTE;

/// payroute's account at every gateway.
const PID: &str = "2001";
const KEY_A: &str = "gateway-key-a";
const KEY_B: &str = "gateway-key-b";
/// The shop's account at payroute.
const SHOP: &str = "1001";
const SHOP_KEY: &str = "shop-key-1001";

/// A fake epay gateway for payroute's account, signing with `key`, whose
/// buyers pay at `paid` after `delay_ms`.
async fn gateway(name: &str, key: &str, paid: f64, delay_ms: u64) -> MockAcquirer {
    MockAcquirer::builder()
        .name(name)
        .record()
        .behavior(Behavior {
            success_rate: paid,
            notify_delay_ms: delay_ms,
            ..Behavior::epay(PID, key)
        })
        .start()
        .await
        .expect("the epay gateway starts")
}

/// A scripted gateway: every request answered by `reply` unless a rule says otherwise.
async fn scripted(name: &str) -> MockAcquirer {
    MockAcquirer::builder()
        .name(name)
        .record()
        .behavior(Reply::status(404))
        .start()
        .await
        .expect("the scripted gateway starts")
}

/// A config on a port known in advance, so `public_url` reaches payroute.
fn config(port: u16) -> Config {
    Config::new()
        .listen(&format!("127.0.0.1:{port}"))
        .server(&format!("public_url = \"http://127.0.0.1:{port}/\""))
        .notify("retry_ms = [0, 200, 400]")
        .merchant(SHOP, &format!("epay_key = \"{SHOP_KEY}\""))
}

fn epay_channel(config: Config, id: &str, url: &str, key: &str, lines: &str) -> Config {
    config.channel(
        id,
        &format!("{url}/"),
        &format!("protocol = \"epay\"\npid = \"{PID}\"\nkey = \"{key}\"\n{lines}"),
    )
}

fn base(p: &Proxy) -> String {
    format!("http://{}/", p.listen)
}

fn shop() -> Merchant {
    Merchant::new(SHOP, SHOP_KEY)
}

fn order(money: &str) -> Order {
    Order::new(&order_id(), money)
        .with_notify_url("http://127.0.0.1:9/shop-notify")
        .with_return_url("http://shop.example/return.php")
}

/// `api.php?act=order` at payroute, by the shop's out_trade_no.
async fn query(p: &Proxy, out_trade_no: &str) -> Value {
    shop().query(&base(p), out_trade_no).await.expect("api.php answers")
}

/// A form or query string as epay reads it.
fn parse(raw: &[u8]) -> Params {
    form_urlencoded::parse(raw)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shop_pays_through_an_epay_gateway_and_hears_it_paid() {
    let gw = gateway("gw-a", KEY_A, 1.0, 300).await;
    let receiver = payroute_mock::epay::Receiver::start(SHOP_KEY, 0).await.unwrap();
    let port = free_port();
    let p = PAYROUTE
        .serve(epay_channel(config(port), "epay-a", &gw.url(), KEY_A, ""))
        .await;
    let o = Order::new(&order_id(), "12.5")
        .with_notify_url(&receiver.url())
        .with_return_url("http://shop.example/return.php")
        .with_param("cart=7");
    let created = shop().mapi(&base(&p), &o).await.unwrap();
    assert_eq!(created.status, 200);
    assert_eq!(created.code, 1, "{:?}", created.json);
    let trade_no = created.trade_no.clone().expect("payroute's trade number");
    assert_eq!(trade_no.len(), 22, "payroute's own, not the gateway's: {trade_no}");
    assert!(
        created.payurl.as_deref().unwrap_or_default().starts_with(&gw.url()),
        "{:?}",
        created.json
    );

    // What the gateway saw: payroute's account, trade number and URLs, signed with its key.
    let sent = gw.received_to("POST", "/mapi.php");
    assert_eq!(sent.len(), 1);
    let form = parse(&sent[0].body);
    let get = |k: &str| form.get(k).cloned();
    assert_eq!(get("pid").as_deref(), Some(PID));
    assert_eq!(get("out_trade_no").as_deref(), Some(trade_no.as_str()));
    assert_eq!(get("money").as_deref(), Some("12.50"));
    assert_eq!(
        get("notify_url"),
        Some(format!("http://127.0.0.1:{port}/notify/epay-a"))
    );
    assert_eq!(get("param"), None, "the shop's param stays with payroute");
    assert!(Merchant::new(PID, KEY_A).verify(&form));

    // Pending until the buyer pays; then paid, and the shop is told, signed with its key.
    let before = query(&p, &o.out_trade_no).await;
    assert_eq!(
        (before["code"].as_i64(), before["trade_no"].as_str()),
        (Some(1), Some(trade_no.as_str()))
    );
    assert!(before["status"].as_i64().is_some());
    eventually("the gateway's notification taken", Duration::from_secs(10), || async {
        p.metrics().await.get(
            "payroute_notifications_in_total",
            &[("channel", "epay-a"), ("result", "accepted")],
        ) == 1.0
    })
    .await;
    let after = query(&p, &o.out_trade_no).await;
    assert_eq!(after["status"], 1, "{after}");
    assert_eq!(
        (after["money"].as_str(), after["param"].as_str()),
        (Some("12.5"), Some("cart=7"))
    );
    assert!(after["endtime"].is_string(), "{after}");
    assert!(gw.counters().notify_delivered >= 1, "payroute answered success");

    assert!(
        receiver.wait(1, Duration::from_secs(10)).await,
        "the shop's notification arrives"
    );
    let n = &receiver.notifications()[0];
    assert!(n.signature_valid, "signed with the shop's key: {:?}", n.params);
    assert_eq!(n.method, "GET");
    assert_eq!(n.trade_no(), Some(trade_no.as_str()));
    assert_eq!(n.out_trade_no(), Some(o.out_trade_no.as_str()));
    assert_eq!(
        (n.money(), n.trade_status(), n.param()),
        (Some("12.5"), Some("TRADE_SUCCESS"), Some("cart=7"))
    );
    assert_eq!(n.get("pid"), Some(SHOP));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_gateway_is_failed_over_and_a_timeout_is_asked_about_first() {
    // a refuses every creation; b hangs, then says it has no such order; c creates.
    let a = scripted("refuses").await;
    a.on(
        "POST",
        "/mapi.php",
        Reply::ok().with_body(r#"{"code":-1,"msg":"通道维护"}"#),
    );
    let b = scripted("hangs").await;
    b.on("POST", "/mapi.php", Reply::hang());
    b.on(
        "GET",
        "/api.php",
        Reply::ok().with_body(r#"{"code":-1,"msg":"订单号不存在"}"#),
    );
    let c = gateway("creates", KEY_B, 0.0, 60_000).await;
    let port = free_port();
    let cfg = epay_channel(config(port), "a", &a.url(), KEY_A, "fee_percent = 0.1");
    let cfg = epay_channel(cfg, "b", &b.url(), KEY_A, "fee_percent = 0.2\ntimeout_ms = 300");
    let cfg = epay_channel(cfg, "c", &c.url(), KEY_B, "fee_percent = 0.3");
    let p = PAYROUTE.serve(cfg).await;

    let created = shop().mapi(&base(&p), &order("3")).await.unwrap();
    assert_eq!(created.code, 1, "{:?}", created.json);
    assert!(created.payurl.as_deref().unwrap_or_default().starts_with(&c.url()));
    assert_eq!(a.count("POST", "/mapi.php"), 1);
    assert_eq!(b.count("POST", "/mapi.php"), 1);
    assert_eq!(b.count("GET", "/api.php"), 1, "the timeout was asked about before c");
    let q = &b.received_to("GET", "/api.php")[0];
    assert!(q.header("x-payroute-trade-no").is_some());
    assert_eq!(c.count("POST", "/mapi.php"), 1);
    let m = p.metrics().await;
    assert_eq!(
        m.get(
            "payroute_failovers_total",
            &[("from_channel", "a"), ("reason", "refused")]
        ),
        1.0,
        "{}",
        m.0
    );
    assert_eq!(m.get("payroute_ambiguous_total", &[("channel", "b")]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_a_timed_out_gateway_holds_stops_the_payment_there() {
    // The order exists at the gateway (status 0): its buyer could pay it, so no second link.
    let b = scripted("hangs").await;
    b.on("POST", "/mapi.php", Reply::hang());
    b.on(
        "GET",
        "/api.php",
        Reply::ok().with_body(r#"{"code":1,"status":0,"money":"3.00"}"#),
    );
    let c = gateway("creates", KEY_B, 0.0, 60_000).await;
    let port = free_port();
    let cfg = epay_channel(
        config(port),
        "b",
        &b.url(),
        KEY_A,
        "fee_percent = 0.1\ntimeout_ms = 300",
    );
    let p = PAYROUTE
        .serve(epay_channel(cfg, "c", &c.url(), KEY_B, "fee_percent = 0.3"))
        .await;
    let o = order("3");
    let created = shop().mapi(&base(&p), &o).await.unwrap();
    assert_eq!(created.code, -1, "{:?}", created.json);
    assert!(created.msg.starts_with("upstream_timeout: "), "{}", created.msg);
    assert_eq!(c.hits(), 0, "never sent anywhere else");
    let q = query(&p, &o.out_trade_no).await;
    assert_eq!(
        (q["code"].as_i64(), q["status"].as_i64()),
        (Some(1), Some(0)),
        "pending in the journal: {q}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_order_twice_gets_the_same_link_and_another_amount_is_refused() {
    let gw = gateway("gw", KEY_A, 0.0, 60_000).await;
    let p = PAYROUTE
        .serve(epay_channel(config(free_port()), "epay-a", &gw.url(), KEY_A, ""))
        .await;
    let o = order("1");
    let first = shop().mapi(&base(&p), &o).await.unwrap();
    let again = shop().mapi(&base(&p), &o).await.unwrap();
    assert_eq!(first.code, 1);
    assert_eq!(
        (first.trade_no.clone(), first.payurl.clone()),
        (again.trade_no, again.payurl)
    );
    // "1" and "1.00" are the same amount.
    let same = Order {
        money: "1.00".into(),
        ..o.clone()
    };
    assert_eq!(shop().mapi(&base(&p), &same).await.unwrap().trade_no, first.trade_no);
    assert_eq!(gw.count("POST", "/mapi.php"), 1, "replayed, not sent again");
    let other = Order {
        money: "2".into(),
        ..o.clone()
    };
    let refused = shop().mapi(&base(&p), &other).await.unwrap();
    assert_eq!(refused.code, -1);
    assert!(refused.msg.starts_with("idempotency_key_reused: "), "{}", refused.msg);
    assert_eq!(gw.count("POST", "/mapi.php"), 1);

    // submit.php: the browser is sent to the same pay page.
    let r = send(&p.client, http::Method::GET, &shop().submit_url(&base(&p), &o), &[], "").await;
    assert_eq!(r.status, 302, "{}", r.text());
    assert_eq!(r.header("location"), first.payurl);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_php_answers_found_unknown_and_wrong_key() {
    let gw = gateway("gw", KEY_A, 0.0, 60_000).await;
    let p = PAYROUTE
        .serve(epay_channel(config(free_port()), "epay-a", &gw.url(), KEY_A, ""))
        .await;
    let o = order("9.99").with_name("会员 VIP");
    let created = shop().mapi(&base(&p), &o).await.unwrap();
    let trade_no = created.trade_no.unwrap();
    let by_out = query(&p, &o.out_trade_no).await;
    let by_trade = shop().query_trade_no(&base(&p), &trade_no).await.unwrap();
    for v in [&by_out, &by_trade] {
        assert_eq!(v["code"], 1, "{v}");
        assert_eq!(v["trade_no"], trade_no.as_str());
        assert_eq!(v["out_trade_no"], o.out_trade_no.as_str());
        assert_eq!((v["type"].as_str(), v["pid"].as_str()), (Some("alipay"), Some(SHOP)));
        assert_eq!(
            (v["money"].as_str(), v["name"].as_str()),
            (Some("9.99"), Some("会员 VIP"))
        );
        assert_eq!(v["status"], 0);
        assert!(v["addtime"].as_str().is_some_and(|t| t.len() == 19), "{v}");
    }
    assert_eq!(query(&p, "no-such-order").await["code"], -1);
    let wrong = Merchant::new(SHOP, "not-the-key")
        .query(&base(&p), &o.out_trade_no)
        .await
        .unwrap();
    assert_eq!(wrong["code"], -3, "{wrong}");
    let stranger = Merchant::new("9999", SHOP_KEY)
        .query(&base(&p), &o.out_trade_no)
        .await
        .unwrap();
    assert_eq!(stranger["code"], -3, "{stranger}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_clear_epay_refusals_and_reach_no_gateway() {
    let gw = gateway("gw", KEY_A, 0.0, 60_000).await;
    let p = PAYROUTE
        .serve(epay_channel(
            config(free_port()),
            "epay-a",
            &gw.url(),
            KEY_A,
            "pay_types = [\"alipay\"]",
        ))
        .await;
    let good = shop().form(&order("5"));
    let encode = |pairs: &[(String, String)]| {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            s.append_pair(k, v);
        }
        s.finish()
    };
    let owned = |pairs: &[(&'static str, String)]| -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
    };
    let with = |k: &str, v: &str| {
        let mut f = owned(&good);
        if let Some(slot) = f.iter_mut().find(|(n, _)| n == k) {
            slot.1 = v.to_owned();
        }
        f
    };
    // Signed by the shop, as a shop would, with one field out of line.
    let resigned = |k: &str, v: &str| {
        let mut o = order("5");
        match k {
            "money" => o.money = v.into(),
            "out_trade_no" => o.out_trade_no = v.into(),
            "type" => o.pay_type = v.into(),
            _ => unreachable!(),
        }
        shop().encoded(&o)
    };
    let without = |k: &str| {
        let f: Vec<_> = owned(&good).into_iter().filter(|(n, _)| n != k).collect();
        encode(&f)
    };
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "wrong sign",
            encode(&with("sign", "0123456789abcdef0123456789abcdef")),
            "unauthorized: ",
        ),
        ("missing sign", without("sign"), "unauthorized: "),
        ("tampered money", encode(&with("money", "500")), "unauthorized: "),
        ("sign_type not MD5", encode(&with("sign_type", "RSA")), "unauthorized: "),
        ("unknown pid", encode(&with("pid", "4242")), "unknown_merchant: "),
        ("missing pid", without("pid"), "invalid_request: "),
        (
            "money with three decimals",
            resigned("money", "1.505"),
            "invalid_request: ",
        ),
        ("money not a number", resigned("money", "1e3"), "invalid_request: "),
        ("negative money", resigned("money", "-1"), "invalid_request: "),
        (
            "out_trade_no out of pattern",
            resigned("out_trade_no", "a b'c"),
            "invalid_request: ",
        ),
        (
            "a type the channel does not serve",
            resigned("type", "wxpay"),
            "no_eligible_channel: ",
        ),
        (
            "duplicate money",
            format!("{}&money=0.01", shop().encoded(&order("5"))),
            "invalid_request: ",
        ),
    ];
    for (what, body, prefix) in cases {
        let r = shop().mapi_raw(&base(&p), body).await.unwrap();
        assert_eq!(r.status, 200, "{what}");
        assert_ne!(r.code, 1, "{what}: {:?}", r.json);
        assert!(r.msg.starts_with(prefix), "{what}: {:?}", r.msg);
    }
    // Bytes that are not UTF-8.
    let raw = format!("{}&name=%FF%FE", without("name"));
    let r = p
        .request(
            http::Method::POST,
            "/mapi.php",
            &[("content-type", "application/x-www-form-urlencoded")],
            raw,
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(
        r.json()["msg"]
            .as_str()
            .unwrap_or_default()
            .starts_with("invalid_request: "),
        "{}",
        r.text()
    );
    // A 10 KB name is cut to 127 bytes, as epay does.
    let long = order("5").with_name(&"名".repeat(3_400));
    let r = shop().mapi(&base(&p), &long).await.unwrap();
    assert_eq!(r.code, 1, "{:?}", r.json);
    let sent = gw.received_to("POST", "/mapi.php");
    assert_eq!(sent.len(), 1, "nothing refused reached the gateway");
    let form = parse(&sent[0].body);
    let name = form["name"].len();
    assert!(name <= 127, "{name}");
    let m = p.metrics().await;
    assert!(
        m.get("payroute_requests_total", &[("outcome", "unauthorized")]) >= 4.0,
        "counted: {}",
        m.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_are_verified_with_the_channel_they_name() {
    let a = gateway("gw-a", KEY_A, 0.0, 60_000).await;
    let b = gateway("gw-b", KEY_B, 0.0, 60_000).await;
    let cfg = epay_channel(config(free_port()), "epay-a", &a.url(), KEY_A, "fee_percent = 0.1");
    let p = PAYROUTE
        .serve(epay_channel(cfg, "epay-b", &b.url(), KEY_B, "fee_percent = 0.5"))
        .await;
    let o = order("8");
    let trade_no = shop().mapi(&base(&p), &o).await.unwrap().trade_no.unwrap();
    assert_eq!(a.count("POST", "/mapi.php"), 1, "the payment is on epay-a");
    let notice = |key: &str, money: &str| {
        let pairs = [
            ("pid", PID),
            ("trade_no", "G0001"),
            ("out_trade_no", trade_no.as_str()),
            ("type", "alipay"),
            ("name", "x"),
            ("money", money),
            ("trade_status", "TRADE_SUCCESS"),
        ];
        let sign = payroute_mock::epay::sign(pairs.iter().copied(), key);
        let mut s = form_urlencoded::Serializer::new(String::new());
        s.extend_pairs(pairs);
        s.append_pair("sign", &sign);
        s.append_pair("sign_type", "MD5");
        s.finish()
    };
    let get = |path: String| {
        let p = &p;
        async move { p.request(http::Method::GET, &path, &[], "").await.text() }
    };
    // epay-b's own key, but the payment is epay-a's; epay-a's key sent as epay-b; a forgery; a wrong amount.
    assert_eq!(get(format!("/notify/epay-b?{}", notice(KEY_B, "8.00"))).await, "fail");
    assert_eq!(get(format!("/notify/epay-b?{}", notice(KEY_A, "8.00"))).await, "fail");
    assert_eq!(
        get(format!("/notify/epay-a?{}", notice("forged", "8.00"))).await,
        "fail"
    );
    assert_eq!(get(format!("/notify/epay-a?{}", notice(KEY_A, "0.08"))).await, "fail");
    assert_eq!(query(&p, &o.out_trade_no).await["status"], 0, "nothing changed");
    // The genuine one, money as the gateway's float ("8" for 8.00), twice.
    assert_eq!(get(format!("/notify/epay-a?{}", notice(KEY_A, "8"))).await, "success");
    assert_eq!(get(format!("/notify/epay-a?{}", notice(KEY_A, "8"))).await, "success");
    assert_eq!(query(&p, &o.out_trade_no).await["status"], 1);
    let m = p.metrics().await;
    let n = |ch: &str, r: &str| m.get("payroute_notifications_in_total", &[("channel", ch), ("result", r)]);
    assert_eq!(n("epay-b", "unknown_payment"), 1.0, "{}", m.0);
    assert_eq!(n("epay-b", "bad_signature"), 1.0);
    assert_eq!(n("epay-a", "bad_signature"), 1.0);
    assert_eq!(n("epay-a", "amount_mismatch"), 1.0);
    assert_eq!((n("epay-a", "accepted"), n("epay-a", "duplicate")), (1.0, 1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_buyers_return_is_relayed_signed_with_the_shops_key() {
    let gw = gateway("gw", KEY_A, 0.0, 60_000).await;
    let p = PAYROUTE
        .serve(epay_channel(config(free_port()), "epay-a", &gw.url(), KEY_A, ""))
        .await;
    let o = order("6.6").with_param("p1");
    let trade_no = shop().mapi(&base(&p), &o).await.unwrap().trade_no.unwrap();
    let pairs = [
        ("pid", PID),
        ("trade_no", "G77"),
        ("out_trade_no", trade_no.as_str()),
        ("type", "alipay"),
        ("name", "x"),
        ("money", "6.60"),
        ("trade_status", "TRADE_SUCCESS"),
    ];
    let sign = payroute_mock::epay::sign(pairs.iter().copied(), KEY_A);
    let mut s = form_urlencoded::Serializer::new(String::new());
    s.extend_pairs(pairs);
    s.append_pair("sign", &sign);
    let r = p
        .request(http::Method::GET, &format!("/return/epay-a?{}", s.finish()), &[], "")
        .await;
    assert_eq!(r.status, 302, "{}", r.text());
    let location = r.header("location").unwrap();
    let (url, query) = location.split_once('?').unwrap();
    assert_eq!(url, "http://shop.example/return.php");
    let params = parse(query.as_bytes());
    assert!(shop().verify(&params), "signed with the shop's key: {location}");
    let get = |k: &str| params.get(k).cloned();
    assert_eq!(get("trade_no"), Some(trade_no.clone()));
    assert_eq!(get("out_trade_no"), Some(o.out_trade_no.clone()));
    assert_eq!(
        (get("money").as_deref(), get("param").as_deref()),
        (Some("6.6"), Some("p1"))
    );
    let forged = p
        .request(
            http::Method::GET,
            &format!("/return/epay-a?pid={PID}&out_trade_no={trade_no}&sign=00"),
            &[],
            "",
        )
        .await;
    assert_eq!(forged.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_whose_buyers_never_pay_loses_its_traffic() {
    // "dead" is cheaper and creates every order, but nobody can pay there.
    let dead = gateway("dead", KEY_A, 0.0, 60_000).await;
    let live = gateway("live", KEY_B, 1.0, 50).await;
    let cfg = epay_channel(config(free_port()), "dead", &dead.url(), KEY_A, "fee_percent = 0.1")
        .routing("unpaid_after_ms = 400\nprior_weight = 2\nprior_success_rate = 0.5");
    let p = PAYROUTE
        .serve(epay_channel(cfg, "live", &live.url(), KEY_B, "fee_percent = 0.5"))
        .await;
    for _ in 0..6 {
        assert_eq!(shop().mapi(&base(&p), &order("1")).await.unwrap().code, 1);
    }
    assert_eq!(dead.count("POST", "/mapi.php"), 6, "the cheaper channel first");
    // Exploration is off: live is only tried once dead's unpaid orders count.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    for _ in 0..6 {
        assert_eq!(shop().mapi(&base(&p), &order("1")).await.unwrap().code, 1);
    }
    assert_eq!(
        dead.count("POST", "/mapi.php"),
        6,
        "no more orders to a gateway nobody pays"
    );
    assert_eq!(live.count("POST", "/mapi.php"), 6);
}

/// Signs an epay form with Python's hashlib: an implementation payroute did not write.
fn python_sign(pairs: &[(&str, &str)], key: &str) -> Option<String> {
    let script = r#"
import hashlib, json, sys
pairs, key = json.loads(sys.argv[1]), sys.argv[2]
signed = sorted((k, v) for k, v in pairs if v != "" and k not in ("sign", "sign_type"))
text = "&".join(f"{k}={v}" for k, v in signed) + key
print(hashlib.md5(text.encode("utf-8")).hexdigest())
"#;
    let pairs = serde_json::to_string(pairs).ok()?;
    let out = std::process::Command::new("python3")
        .args(["-c", script, &pairs, key])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shop_signing_with_python_hashlib_is_understood_both_ways() {
    let gw = gateway("gw", KEY_A, 1.0, 100).await;
    let receiver = payroute_mock::epay::Receiver::start(SHOP_KEY, 1).await.unwrap();
    let p = PAYROUTE
        .serve(epay_channel(config(free_port()), "epay-a", &gw.url(), KEY_A, ""))
        .await;
    let out_trade_no = order_id();
    let notify_url = receiver.url();
    let pairs = [
        ("pid", SHOP),
        ("type", "alipay"),
        ("out_trade_no", out_trade_no.as_str()),
        ("notify_url", notify_url.as_str()),
        ("return_url", "http://shop.example/r.php"),
        ("name", "商品 & more"),
        ("money", "0.5"),
        ("clientip", "198.51.100.7"),
    ];
    let Some(sign) = python_sign(&pairs, SHOP_KEY) else {
        panic!("python3 is needed for the interoperability test");
    };
    let mut s = form_urlencoded::Serializer::new(String::new());
    s.extend_pairs(pairs);
    s.append_pair("sign", &sign);
    s.append_pair("sign_type", "MD5");
    let created = shop().mapi_raw(&base(&p), s.finish()).await.unwrap();
    assert_eq!(created.code, 1, "{:?}", created.json);
    // The shop's notification (the first answered fail, so it is retried), checked by Python too.
    assert!(
        receiver.wait(2, Duration::from_secs(15)).await,
        "notified, and again after a fail"
    );
    let n = receiver.notifications().pop().unwrap();
    let got: Vec<(&str, &str)> = n.params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let expected = python_sign(&got, SHOP_KEY).unwrap();
    assert_eq!(n.get("sign"), Some(expected.as_str()), "{:?}", n.params);
    assert_eq!(n.get("money"), Some("0.5"));
    assert_eq!(n.get("name"), Some("商品 & more"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_notification_is_found_by_the_sweepers_order_query() {
    let gw = MockAcquirer::builder()
        .name("loses")
        .record()
        .behavior(Behavior {
            success_rate: 1.0,
            notify_delay_ms: 50,
            notify_loss: 1.0,
            ..Behavior::epay(PID, KEY_A)
        })
        .start()
        .await
        .unwrap();
    let receiver = payroute_mock::epay::Receiver::start(SHOP_KEY, 0).await.unwrap();
    let cfg = epay_channel(config(free_port()), "epay-a", &gw.url(), KEY_A, "")
        .server("deadline_ms = 1000")
        .sweeper("query_after_ms = [1500]");
    let p = PAYROUTE.serve(cfg).await;
    let o = order("2").with_notify_url(&receiver.url());
    assert_eq!(shop().mapi(&base(&p), &o).await.unwrap().code, 1);
    assert!(
        receiver.wait(1, Duration::from_secs(10)).await,
        "the shop hears it anyway"
    );
    assert!(receiver.notifications()[0].signature_valid);
    assert!(gw.count("GET", "/api.php") >= 1, "found by api.php?act=order");
    assert_eq!(gw.counters().notify_sent, 0, "the gateway never notified");
    assert_eq!(query(&p, &o.out_trade_no).await["status"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_apply_in_fen_and_an_order_nobody_made_may_be_tried_again() {
    let refuses = scripted("refuses").await;
    refuses.on(
        "POST",
        "/mapi.php",
        Reply::ok().with_body(r#"{"code":-1,"msg":"风控"}"#),
    );
    let port = free_port();
    let cfg = Config::new()
        .listen(&format!("127.0.0.1:{port}"))
        .server(&format!("public_url = \"http://127.0.0.1:{port}\""))
        .merchant(
            SHOP,
            &format!("epay_key = \"{SHOP_KEY}\"\nmax_amount = 1000\ndaily_limit = 1500"),
        );
    let p = PAYROUTE
        .serve(epay_channel(cfg, "epay-a", &refuses.url(), KEY_A, ""))
        .await;
    let over = shop().mapi(&base(&p), &order("10.01")).await.unwrap();
    assert!(over.msg.starts_with("amount_limit_exceeded: "), "{}", over.msg);
    assert_eq!(refuses.hits(), 0);
    // Every channel refused: no order exists anywhere, so the same order may be sent again.
    let o = order("10");
    for _ in 0..2 {
        let r = shop().mapi(&base(&p), &o).await.unwrap();
        assert!(r.msg.starts_with("upstream_failed: "), "{}", r.msg);
    }
    assert_eq!(refuses.count("POST", "/mapi.php"), 2, "not a replay");
    let q = query(&p, &o.out_trade_no).await;
    assert_eq!((q["code"].as_i64(), q["status"].as_i64()), (Some(1), Some(0)), "{q}");
    // A refused payment released its reservation: 10 + 6 would pass a limit of 15 only if it had not.
    let daily = shop().mapi(&base(&p), &order("6")).await.unwrap();
    assert!(daily.msg.starts_with("upstream_failed: "), "{}", daily.msg);
}
