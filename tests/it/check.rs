//! `payroute check FILE`: exit 0 and a one-line summary, or exit 1 and every
//! error with its line and column. Also startup errors of `payroute serve`.

use std::path::Path;
use std::time::Duration;

use payroute_testkit::{error_locations, line_of, Config};

use crate::PAYROUTE;

const GOOD: &str = r#"[server]
listen = "127.0.0.1:18080"
admin_listen = "127.0.0.1:19090"
max_body_bytes = 65536
deadline_ms = 10000

[request]
merchant_header = "x-merchant-id"
amount_pointer = "/amount"
currency_pointer = "/currency"
order_id_pointer = "/order_id"
payment_paths = ["/v1/payments"]

[routing]
window_ms = 60000
max_attempts = 3
failover_on = ["connect", "timeout", "5xx"]

[[channel]]
id = "acq-a"
url = "http://127.0.0.1:9001"
fee_percent = 0.38
timeout_ms = 2000
connect_timeout_ms = 300
currencies = ["CNY"]
headers = { "authorization" = "Bearer abc" }

[[channel]]
id = "acq-b"
url = "http://127.0.0.1:9002"
fee_percent = 0.6
max_in_flight = 100

[[merchant]]
id = "m-001"
rate_per_sec = 100
burst = 20
max_amount = 500000
daily_limit = 10000000
day_starts = "00:00+08:00"
channels = ["acq-a", "acq-b"]
"#;

struct Checked {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    file: String,
}

fn check_text(text: &str) -> Checked {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.toml");
    std::fs::write(&path, text).unwrap();
    check_path(&path)
}

fn check_path(path: &Path) -> Checked {
    let file = path.to_str().unwrap().to_string();
    let out = PAYROUTE.run(&["check", &file]);
    Checked {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        file,
    }
}

impl Checked {
    #[track_caller]
    fn assert_ok(&self) {
        assert_eq!(
            self.code,
            Some(0),
            "check failed:\nstdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        let lines: Vec<&str> = self.stdout.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "one-line summary expected: {:?}", self.stdout);
    }

    /// Asserts exit 1 and returns the reported (line, column) pairs.
    #[track_caller]
    fn assert_failed(&self) -> Vec<(usize, usize)> {
        assert_eq!(
            self.code,
            Some(1),
            "check must exit 1:\nstdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        let locs = error_locations(&self.stderr, &self.file);
        assert!(
            !locs.is_empty(),
            "no error with line and column in stderr:\n{}",
            self.stderr
        );
        assert!(
            locs.iter().all(|(l, c)| *l >= 1 && *c >= 1),
            "lines and columns are 1-based: {locs:?}"
        );
        locs
    }

    /// Asserts that some error points at a line in `lines`.
    #[track_caller]
    fn assert_error_at(&self, lines: std::ops::RangeInclusive<usize>, what: &str) {
        let locs = self.assert_failed();
        assert!(
            locs.iter().any(|(l, _)| lines.contains(l)),
            "expected an error about {what} on line(s) {lines:?}; got {locs:?}:\n{}",
            self.stderr
        );
    }
}

#[test]
fn good_config_passes_with_a_one_line_summary() {
    check_text(GOOD).assert_ok();
}

#[test]
fn minimal_config_passes() {
    let cfg = "[[channel]]\nid = \"a\"\nurl = \"http://127.0.0.1:9001\"\n\n[[merchant]]\nid = \"m\"\n";
    check_text(cfg).assert_ok();
}

#[test]
fn repo_routes_toml_passes() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("routes.toml");
    assert!(path.exists(), "the repo has no routes.toml at {path:?}");
    check_path(&path).assert_ok();
}

#[test]
fn unknown_key_is_reported_with_its_line() {
    let cfg = GOOD.replace("fee_percent = 0.6", "fee_percnt = 0.6");
    let line = line_of(&cfg, "fee_percnt", 1);
    let c = check_text(&cfg);
    c.assert_error_at(line..=line, "unknown key fee_percnt");
    assert!(c.stderr.contains("fee_percnt"), "{}", c.stderr);
    let locs = c.assert_failed();
    assert!(
        locs.contains(&(line, 1)),
        "unknown key at column 1 of line {line}: {locs:?}"
    );
}

#[test]
fn unknown_key_in_server_is_reported() {
    let cfg = GOOD.replace("deadline_ms = 10000", "deadline_ms = 10000\nlisten_adress = \"x\"");
    let line = line_of(&cfg, "listen_adress", 1);
    check_text(&cfg).assert_error_at(line..=line, "unknown key listen_adress");
}

#[test]
fn duplicate_channel_ids_are_reported() {
    let cfg = GOOD.replace("id = \"acq-b\"", "id = \"acq-a\"");
    // Somewhere in the second [[channel]] table.
    let first = line_of(&cfg, "[[channel]]", 1);
    let start = line_of(&cfg, "[[channel]]", first + 1);
    let end = line_of(&cfg, "max_in_flight", start);
    let c = check_text(&cfg);
    c.assert_error_at(start..=end, "duplicate channel id");
    assert!(c.stderr.contains("acq-a"), "{}", c.stderr);
}

#[test]
fn unknown_channel_in_allow_list_is_reported() {
    let cfg = GOOD.replace(
        "channels = [\"acq-a\", \"acq-b\"]",
        "channels = [\"acq-a\", \"acq-zz\"]",
    );
    let line = line_of(&cfg, "acq-zz", 1);
    let c = check_text(&cfg);
    c.assert_error_at(line..=line, "unknown channel acq-zz");
    assert!(c.stderr.contains("acq-zz"), "{}", c.stderr);
}

#[test]
fn listen_equal_to_admin_listen_is_reported() {
    let cfg = GOOD.replace("127.0.0.1:19090", "127.0.0.1:18080");
    let l1 = line_of(&cfg, "listen = ", 1);
    let l2 = line_of(&cfg, "admin_listen", 1);
    check_text(&cfg).assert_error_at(l1.min(l2)..=l1.max(l2), "listen == admin_listen");
}

#[test]
fn zero_timeouts_are_reported() {
    let cfg = GOOD.replace("timeout_ms = 2000", "timeout_ms = 0");
    let line = line_of(&cfg, "timeout_ms = 0", 1);
    check_text(&cfg).assert_error_at(line..=line, "timeout_ms = 0");

    let cfg = GOOD.replace("connect_timeout_ms = 300", "connect_timeout_ms = 0");
    let line = line_of(&cfg, "connect_timeout_ms = 0", 1);
    check_text(&cfg).assert_error_at(line..=line, "connect_timeout_ms = 0");

    let cfg = GOOD.replace("deadline_ms = 10000", "deadline_ms = 0");
    let line = line_of(&cfg, "deadline_ms = 0", 1);
    check_text(&cfg).assert_error_at(line..=line, "deadline_ms = 0");
}

#[test]
fn every_error_is_reported() {
    let cfg = GOOD
        .replace("timeout_ms = 2000", "timeout_ms = 0")
        .replace("channels = [\"acq-a\", \"acq-b\"]", "channels = [\"acq-zz\"]")
        .replace("127.0.0.1:19090", "127.0.0.1:18080");
    let l_timeout = line_of(&cfg, "timeout_ms = 0", 1);
    let l_allow = line_of(&cfg, "acq-zz", 1);
    let l_listen = line_of(&cfg, "listen = ", 1);
    let l_admin = line_of(&cfg, "admin_listen", 1);
    let c = check_text(&cfg);
    let locs = c.assert_failed();
    let lines: Vec<usize> = locs.iter().map(|(l, _)| *l).collect();
    assert!(
        lines.contains(&l_timeout),
        "timeout error missing: {locs:?}\n{}",
        c.stderr
    );
    assert!(
        lines.contains(&l_allow),
        "allow-list error missing: {locs:?}\n{}",
        c.stderr
    );
    assert!(
        lines.contains(&l_listen) || lines.contains(&l_admin),
        "listen error missing: {locs:?}\n{}",
        c.stderr
    );
}

#[test]
fn toml_syntax_error_is_reported() {
    let cfg = GOOD.replace("max_attempts = 3", "max_attempts = = 3");
    let line = line_of(&cfg, "max_attempts", 1);
    check_text(&cfg).assert_error_at(line..=line, "syntax error");
}

#[test]
fn wrong_value_type_is_reported() {
    let cfg = GOOD.replace("max_attempts = 3", "max_attempts = \"three\"");
    let line = line_of(&cfg, "max_attempts", 1);
    check_text(&cfg).assert_error_at(line..=line, "max_attempts must be an integer");
}

#[test]
fn non_loopback_admin_without_token_is_refused() {
    let cfg = GOOD.replace("127.0.0.1:19090", "0.0.0.0:19090");
    let line = line_of(&cfg, "admin_listen", 1);
    check_text(&cfg).assert_error_at(line..=line, "non-loopback admin_listen without token");
    // With a token it is fine.
    let cfg = cfg.replace(
        "admin_listen = \"0.0.0.0:19090\"",
        "admin_listen = \"0.0.0.0:19090\"\nadmin_token = \"t0ken\"",
    );
    check_text(&cfg).assert_ok();
}

#[test]
fn missing_file_fails() {
    let out = PAYROUTE.run(&["check", "/nonexistent/dir/routes.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!out.stderr.is_empty(), "no error message");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_invalid_config_exits_nonzero_with_a_cause() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.toml");
    std::fs::write(&path, GOOD.replace("fee_percent = 0.6", "fee_percnt = 0.6")).unwrap();
    let out = PAYROUTE
        .run_within(&["serve", "--config", path.to_str().unwrap()], Duration::from_secs(10))
        .await;
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("fee_percnt"), "cause not given:\n{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_port_taken_exits_nonzero() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.toml");
    let cfg = Config::single("a", "http://127.0.0.1:9").listen(&format!("127.0.0.1:{port}"));
    std::fs::write(&path, cfg.to_string()).unwrap();
    let out = PAYROUTE
        .run_within(&["serve", "--config", path.to_str().unwrap()], Duration::from_secs(10))
        .await;
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&port.to_string()),
        "cause should name the address:\n{stderr}"
    );
    drop(taken);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_without_config_file_exits_nonzero() {
    let out = PAYROUTE
        .run_within(
            &["serve", "--config", "/nonexistent/dir/routes.toml"],
            Duration::from_secs(10),
        )
        .await;
    assert_ne!(out.status.code(), Some(0));
    assert!(!out.stderr.is_empty());
}

#[test]
fn other_invalid_values_are_reported_with_their_line() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "id = \"m-001\"",
            "id = \"m-001\"\n[[merchant]]\nid = \"m-001\"",
            "duplicate merchant id",
        ),
        (
            "failover_on = [\"connect\", \"timeout\", \"5xx\"]",
            "failover_on = [\"connect\", \"teapot\"]",
            "unknown failover_on value",
        ),
        (
            "url = \"http://127.0.0.1:9002\"",
            "url = \"not a url\"",
            "bad channel url",
        ),
        (
            "amount_pointer = \"/amount\"",
            "amount_pointer = \"amount\"",
            "JSON pointer without /",
        ),
        (
            "day_starts = \"00:00+08:00\"",
            "day_starts = \"25:00+08:00\"",
            "bad day_starts",
        ),
        ("max_attempts = 3", "max_attempts = 0", "max_attempts = 0"),
        ("fee_percent = 0.6", "fee_percent = -1.0", "negative fee"),
        (
            "listen = \"127.0.0.1:18080\"",
            "listen = \"not-an-address\"",
            "bad listen address",
        ),
    ];
    for (from, to, what) in cases {
        assert!(GOOD.contains(from), "{from}");
        let cfg = GOOD.replacen(from, to, 1);
        let first = line_of(&cfg, to.lines().next().unwrap(), 1);
        let last = first + to.lines().count() - 1;
        check_text(&cfg).assert_error_at(first..=last, what);
    }
}
