//! Self-test of the test kit's parsers and helpers, so that a failing
//! end-to-end test points at the proxy, not at the tools. (The fake
//! acquirer tests itself: `payroute-mock`'s own tests.)

use payroute_testkit::{error_locations, parse_ready, refused_url, Metrics};

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
