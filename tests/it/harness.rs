//! Self-test of the test harness (fake acquirer, parsers), so that a failing
//! end-to-end test points at the proxy, not at the tools.

mod common;

use std::time::Duration;

use common::*;
use http::Method;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_acquirer_behaviours() {
    let a = Acquirer::start("a").await;
    let c = http_client();
    let url = format!("{}/v1/x?q=1", a.url());
    let r = send(&c, Method::POST, &url, &[("x-h", "v")], "hello").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["acquirer"], "a");
    let rec = a.last_request();
    assert_eq!((rec.method.as_str(), rec.path.as_str()), ("POST", "/v1/x?q=1"));
    assert_eq!(rec.header("x-h").as_deref(), Some("v"));
    assert_eq!(&rec.body[..], b"hello");

    a.fail_first(2, 502);
    let statuses: Vec<u16> = futures_seq(&c, &url, 3).await;
    assert_eq!(statuses, [502, 502, 200]);

    a.heal();
    a.fail_ratio(0.5, 503);
    let statuses = futures_seq(&c, &url, 6).await;
    assert_eq!(statuses, [200, 503, 200, 503, 200, 503]);

    a.heal();
    a.set_status(402);
    a.set_body("{\"declined\":true}");
    let r = send(&c, Method::POST, &url, &[], "").await;
    assert_eq!((r.status, r.text().as_str()), (402, "{\"declined\":true}"));

    a.heal();
    a.set_delay(Duration::from_millis(200));
    let r = send(&c, Method::POST, &url, &[], "").await;
    assert!(r.elapsed >= Duration::from_millis(190));

    a.heal();
    a.set_hang(true);
    let hung = tokio::time::timeout(Duration::from_millis(300), send(&c, Method::POST, &url, &[], "")).await;
    assert!(hung.is_err(), "a hanging acquirer answered");
    assert_eq!(a.hits(), 13);
}

async fn futures_seq(c: &HttpClient, url: &str, n: usize) -> Vec<u16> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(send(c, Method::POST, url, &[], "").await.status);
    }
    v
}

#[test]
fn refused_url_refuses() {
    let url = refused_url();
    let addr = url.trim_start_matches("http://");
    assert!(std::net::TcpStream::connect(addr).is_err());
}

#[test]
fn parses_ready_line() {
    let l = "2025-01-01T00:00:00Z  INFO payroute::serve: payroute ready listen=127.0.0.1:4000 admin=127.0.0.1:4001 version=1";
    let (a, b) = parse_ready(l).unwrap();
    assert_eq!(a.port(), 4000);
    assert_eq!(b.port(), 4001);
    assert!(parse_ready("payroute starting listen=127.0.0.1:1").is_none());
}

#[test]
fn parses_metrics() {
    let m = Metrics(
        "# HELP x y\n# TYPE payroute_requests_total counter\n\
         payroute_requests_total{outcome=\"success\"} 4\n\
         payroute_requests_total{outcome=\"decline\"} 1\n\
         payroute_attempts_total{channel=\"a,b\",result=\"success\"} 2\n\
         payroute_upstream_latency_seconds_bucket{channel=\"a\",le=\"+Inf\"} 6\n\
         payroute_config_version 3\n"
            .to_string(),
    );
    assert_eq!(m.get("payroute_requests_total", &[]), 5.0);
    assert_eq!(m.get("payroute_requests_total", &[("outcome", "success")]), 4.0);
    assert_eq!(m.get("payroute_attempts_total", &[("channel", "a,b")]), 2.0);
    assert_eq!(
        m.get("payroute_upstream_latency_seconds_bucket", &[("le", "+Inf")]),
        6.0
    );
    assert_eq!(m.sum("payroute_config_version", &[]), Some(3.0));
    assert_eq!(m.sum("payroute_nope", &[]), None);
}

#[test]
fn parses_error_locations() {
    let err = "/tmp/x/routes.toml:12:5: unknown field `fee_percnt`\n\
               /tmp/x/routes.toml:30:1: duplicate channel id \"a\"\n\
               error at line 7, column 3: zero timeout";
    let locs = error_locations(err, "/tmp/x/routes.toml");
    assert_eq!(locs, [(12, 5), (30, 1), (7, 3)]);
}
