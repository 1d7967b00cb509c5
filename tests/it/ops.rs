//! The operations files (contract part two, "Operations files"):
//! `ops/prometheus/alerts.yml` and `ops/grafana/payroute.json` query only
//! what payroute really exports, and the alert rules pass their unit tests.
//!
//! - Every metric, and every label and fixed label value, that an alert or a
//!   dashboard panel queries is looked up in the `/metrics` of a running
//!   payroute, after traffic that makes each labelled series appear (an
//!   ambiguous attempt whose reversal is given up, forged, wrong-amount and
//!   unknown notifications, a sweeper query, a refused reload). A renamed
//!   metric or label value fails here, not on a dashboard at 3 a.m.
//! - `promtool` checks the rules, runs `alerts.test.yml` (a firing and a
//!   quiet case per alert) and checks the syntax of every dashboard query.
//!   promtool comes from Debian's `prometheus` package; `.ci/services`
//!   installs it. Without it the test fails, saying how to get it: a
//!   skipped check would pass CI while proving nothing.
//!
//! Queries are read with a small PromQL scanner ([`selectors`]): it takes
//! what is a metric name (an identifier that is not a keyword, a function
//! or a label list) and the matchers in braces, and refuses functions it
//! does not know, so a typo cannot hide as "not a metric".

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use http::Method;
use payroute_mock::{Behavior, MockAcquirer, Reply};
use payroute_testkit::*;
use serde_json::{json, Value};

use crate::PAYROUTE;

/// The repository's ops/ directory.
fn ops_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("ops")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------
// The queries of the operations files
// ---------------------------------------------------------------------------

/// Label values a rule queries before payroute exports them, with why. The
/// test checks they are still absent, so an entry goes once it is not.
/// (Empty since routing policies brought `rolled_back`.)
const NOT_YET: &[(&str, &str, &str, &str)] = &[];

/// One rule of alerts.yml: its name (`alert` or `record`) and its `expr`.
#[derive(Debug)]
struct Rule {
    name: String,
    expr: String,
}

/// The rules of a Prometheus rule file, read line by line: `- alert:` or
/// `- record:` starts a rule, `expr:` is inline or a block scalar (`|`, `>`)
/// whose lines are indented below it. Enough for the files we write; the
/// count is checked against the rules promtool finds.
fn rules(yaml: &str) -> Vec<Rule> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out = Vec::new();
    let mut name = None;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let t = line.trim_start();
        i += 1;
        if let Some(n) = t.strip_prefix("- alert:").or_else(|| t.strip_prefix("- record:")) {
            name = Some(n.trim().to_string());
            continue;
        }
        let Some(rest) = t.strip_prefix("expr:") else {
            continue;
        };
        let rest = rest.trim();
        let expr = if rest.starts_with('|') || rest.starts_with('>') {
            let indent = line.len() - t.len();
            let mut body = String::new();
            while i < lines.len() {
                let l = lines[i];
                let li = l.len() - l.trim_start().len();
                if !l.trim().is_empty() && li <= indent {
                    break;
                }
                body.push_str(l.trim());
                body.push('\n');
                i += 1;
            }
            body
        } else {
            rest.trim_matches(|c| c == '"' || c == '\'').to_string()
        };
        let name = name
            .take()
            .unwrap_or_else(|| panic!("an expr before any rule name: {t}"));
        out.push(Rule { name, expr });
    }
    out
}

/// What the dashboard queries.
struct DashboardQueries {
    /// Every panel's `expr` (rows' nested panels included), with the
    /// panel's title.
    exprs: Vec<(String, String)>,
    /// Its template variables' `label_values(metric, label)`.
    label_values: Vec<(String, String)>,
}

fn dashboard_queries(dash: &Value) -> DashboardQueries {
    fn walk(panels: &Value, out: &mut Vec<(String, String)>) {
        for p in panels.as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or("?").to_string();
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(e) = t["expr"].as_str() {
                    out.push((title.clone(), e.to_string()));
                }
            }
            walk(&p["panels"], out);
        }
    }
    let mut exprs = Vec::new();
    walk(&dash["panels"], &mut exprs);
    let mut label_values = Vec::new();
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        let q = v["query"]["query"]
            .as_str()
            .or_else(|| v["query"].as_str())
            .unwrap_or("");
        if let Some(args) = q.trim().strip_prefix("label_values(").and_then(|a| a.strip_suffix(')')) {
            let (metric, label) = args
                .rsplit_once(',')
                .unwrap_or_else(|| panic!("variable {}: label_values needs a metric", v["name"]));
            label_values.push((metric.trim().to_string(), label.trim().to_string()));
        }
    }
    DashboardQueries { exprs, label_values }
}

/// A vector selector: a metric and its label matchers.
#[derive(Debug, PartialEq)]
struct Selector {
    metric: String,
    matchers: Vec<Matcher>,
}

#[derive(Debug, PartialEq)]
struct Matcher {
    label: String,
    op: &'static str,
    value: String,
}

const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];
const FUNCTIONS: &[&str] = &[
    "abs",
    "absent",
    "absent_over_time",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "days_in_month",
    "delta",
    "deriv",
    "exp",
    "floor",
    "histogram_quantile",
    "holt_winters",
    "hour",
    "idelta",
    "increase",
    "irate",
    "label_join",
    "label_replace",
    "ln",
    "log2",
    "log10",
    "minute",
    "month",
    "predict_linear",
    "rate",
    "resets",
    "round",
    "scalar",
    "sgn",
    "sort",
    "sort_desc",
    "sqrt",
    "time",
    "timestamp",
    "vector",
    "year",
    "avg_over_time",
    "min_over_time",
    "max_over_time",
    "sum_over_time",
    "count_over_time",
    "quantile_over_time",
    "stddev_over_time",
    "stdvar_over_time",
    "last_over_time",
    "present_over_time",
];
/// Keywords followed by a list of label names in parentheses.
const LABEL_LISTS: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];
const KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"];

/// The selectors of a PromQL expression (Grafana's `$variables` allowed).
fn selectors(expr: &str) -> Result<Vec<Selector>, String> {
    let s: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let skip_ws = |mut i: usize| {
        while i < s.len() && s[i].is_whitespace() {
            i += 1;
        }
        i
    };
    let ident_start = |c: char| c.is_ascii_alphabetic() || c == '_' || c == ':';
    let ident_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    while i < s.len() {
        let c = s[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '#' {
            while i < s.len() && s[i] != '\n' {
                i += 1;
            }
        } else if c == '"' || c == '\'' || c == '`' {
            i = string(&s, i)?.1;
        } else if c == '[' {
            while i < s.len() && s[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c == '{' {
            return Err(format!("a selector without a metric name at {i}: name the metric"));
        } else if c == '$' {
            // A Grafana variable: `$name` or `${name}`.
            i += 1;
            if i < s.len() && s[i] == '{' {
                while i < s.len() && s[i] != '}' {
                    i += 1;
                }
                i += 1;
            }
            while i < s.len() && ident_char(s[i]) {
                i += 1;
            }
        } else if c.is_ascii_digit() || (c == '.' && s.get(i + 1).is_some_and(char::is_ascii_digit)) {
            // A number or a duration (0.995, 1e3, 30m).
            while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == '.' || s[i] == '_') {
                i += 1;
            }
        } else if ident_start(c) {
            let start = i;
            while i < s.len() && ident_char(s[i]) {
                i += 1;
            }
            let word: String = s[start..i].iter().collect();
            let next = skip_ws(i);
            let lower = word.to_ascii_lowercase();
            if LABEL_LISTS.contains(&lower.as_str()) {
                if next < s.len() && s[next] == '(' {
                    i = next;
                    while i < s.len() && s[i] != ')' {
                        i += 1;
                    }
                    i += 1;
                }
            } else if KEYWORDS.contains(&lower.as_str()) || AGGREGATIONS.contains(&word.as_str()) {
            } else if next < s.len() && s[next] == '(' {
                if !FUNCTIONS.contains(&word.as_str()) {
                    return Err(format!("unknown function {word}"));
                }
            } else {
                let mut matchers = Vec::new();
                if next < s.len() && s[next] == '{' {
                    i = self::matchers(&s, next, &mut matchers)?;
                }
                out.push(Selector { metric: word, matchers });
            }
        } else {
            i += 1;
        }
    }
    Ok(out)
}

/// The string literal at `s[i]`: its value and the index after it.
fn string(s: &[char], i: usize) -> Result<(String, usize), String> {
    let quote = s[i];
    let mut value = String::new();
    let mut j = i + 1;
    while j < s.len() {
        match s[j] {
            '\\' if quote != '`' => {
                if let Some(&n) = s.get(j + 1) {
                    value.push(n);
                }
                j += 2;
            }
            c if c == quote => return Ok((value, j + 1)),
            c => {
                value.push(c);
                j += 1;
            }
        }
    }
    Err(format!("unterminated string at {i}"))
}

/// The matchers of the braces at `s[open]`, into `out`; the index after `}`.
fn matchers(s: &[char], open: usize, out: &mut Vec<Matcher>) -> Result<usize, String> {
    let mut i = open + 1;
    loop {
        while i < s.len() && (s[i].is_whitespace() || s[i] == ',') {
            i += 1;
        }
        match s.get(i) {
            None => return Err("unterminated {".into()),
            Some('}') => return Ok(i + 1),
            _ => {}
        }
        let start = i;
        while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == '_') {
            i += 1;
        }
        let label: String = s[start..i].iter().collect();
        while i < s.len() && s[i].is_whitespace() {
            i += 1;
        }
        let rest: String = s[i..s.len().min(i + 2)].iter().collect();
        let op = ["=~", "!~", "!=", "="]
            .into_iter()
            .find(|op| rest.starts_with(op))
            .ok_or_else(|| format!("no matcher operator after label {label:?}"))?;
        i += op.len();
        while i < s.len() && s[i].is_whitespace() {
            i += 1;
        }
        if label.is_empty() || !matches!(s.get(i), Some('"' | '\'' | '`')) {
            return Err(format!("bad matcher at {start}"));
        }
        let (value, after) = string(s, i)?;
        out.push(Matcher { label, op, value });
        i = after;
    }
}

/// The scraped series: each sample name's label sets.
type Series = HashMap<String, Vec<HashMap<String, String>>>;

/// What is wrong with `expr` (from `whence`) against the scraped series:
/// metrics that are not exported, matchers on labels they do not have, and
/// fixed label values no series has.
fn check_query(whence: &str, expr: &str, series: &Series) -> Vec<String> {
    let selectors = match selectors(expr) {
        Ok(s) if s.is_empty() => return vec![format!("{whence}: queries no metric: {expr}")],
        Ok(s) => s,
        Err(e) => return vec![format!("{whence}: {e}: {expr}")],
    };
    let mut problems = Vec::new();
    for sel in selectors {
        let Some(samples) = series.get(&sel.metric) else {
            problems.push(format!("{whence}: {} is not in /metrics", sel.metric));
            continue;
        };
        for m in &sel.matchers {
            if !samples.iter().any(|l| l.contains_key(&m.label)) {
                problems.push(format!("{whence}: {} has no label {}", sel.metric, m.label));
                continue;
            }
            // `!=`, `!~` and Grafana variables select nothing fixed.
            if !matches!(m.op, "=" | "=~") || m.value.contains('$') {
                continue;
            }
            let words: Vec<&str> = if m.op == "=" {
                vec![m.value.as_str()]
            } else {
                m.value.split('|').collect()
            };
            for w in words {
                if m.op == "=~" && !w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    problems.push(format!(
                        "{whence}: {}{{{}=~{:?}}}: write the regex as a list of values (a|b|c) so they can be checked",
                        sel.metric, m.label, m.value
                    ));
                    break;
                }
                let pending = NOT_YET
                    .iter()
                    .find(|(metric, label, value, _)| *metric == sel.metric && *label == m.label && *value == w);
                let found = samples.iter().any(|l| l.get(&m.label).map(String::as_str) == Some(w));
                match (found, pending) {
                    (false, None) => problems.push(format!(
                        "{whence}: no series {}{{{}=\"{w}\"}} in /metrics",
                        sel.metric, m.label
                    )),
                    (true, Some((_, _, _, why))) => problems.push(format!(
                        "{whence}: {}{{{}=\"{w}\"}} is exported now: remove it from NOT_YET in tests/it/ops.rs ({why})",
                        sel.metric, m.label
                    )),
                    _ => {}
                }
            }
        }
    }
    problems
}

// ---------------------------------------------------------------------------
// Against a running payroute
// ---------------------------------------------------------------------------

const SECRET: &str = "whsec-ops";
/// Channel `notify`: outcomes in the body, signed notifications, queries.
const NOTIFY_LINES: &str = r#"currencies = ["USD"]
outcome = { pointer = "/status", paid = ["paid"], pending = ["processing"], declined = ["declined", "failed"], trade_no_pointer = "/id" }
notify = { signature_header = "x-signature", secret = "whsec-ops", amount_pointer = "/amount" }
query = { method = "GET", path = "/v1/payments/{trade_no}" }"#;

fn hmac_hex(body: &str) -> String {
    use hmac::Mac;
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key length");
    m.update(body.as_bytes());
    hex::encode(m.finalize().into_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_alerts_and_the_dashboard_query_is_exported() {
    // flaky (cheapest, tried first for CNY) answers 503: an ambiguous
    // attempt, reversed in the background; its reversals answer 503 too, so
    // the reversal is given up after its tries (~6 s). pay takes the payment.
    let flaky = acquirer_with("flaky", Reply::status(503)).await;
    flaky.on("POST", REVERSE, Reply::status(503));
    let pay = acquirer("pay").await;
    // notify (USD) answers "processing" and decides 2.5 s later, after the
    // sweeper's first query; its notification comes with a forged and a
    // wrong-amount copy.
    let notify = MockAcquirer::builder()
        .name("notify")
        .record()
        .behavior(Behavior::default())
        .start()
        .await
        .expect("mock starts");
    let config = Config::new()
        .server("deadline_ms = 1000")
        .routing("eject_consecutive_failures = 1")
        .sweeper("query_after_ms = [300]")
        .channel(
            "flaky",
            &flaky.url(),
            &format!("fee_percent = 0.1\ncurrencies = [\"CNY\"]\n{REVERSAL}"),
        )
        .channel("pay", &pay.url(), "fee_percent = 0.9\ncurrencies = [\"CNY\"]")
        .channel("notify", &notify.url(), NOTIFY_LINES)
        .merchant("m-1", "");
    let p = PAYROUTE.serve(config).await;
    notify.set_behavior(
        Behavior {
            success_rate: 0.0,
            notify_forge: 1.0,
            notify_wrong_amount: 1.0,
            ..Behavior::default()
        }
        .with_outcome_in_body()
        .with_pending(1.0, 2_500)
        .notify_to(&p.url("/notify/notify"), SECRET),
    );

    let r = p.pay("m-1", 1000).await;
    r.assert_ok();
    assert_eq!(
        r.header("x-payroute-ambiguous").as_deref(),
        Some("flaky"),
        "{}",
        r.text()
    );
    p.pay("m-1", 1000).await.assert_ok();
    let r = p.pay_ccy("m-1", 1250, "USD").await;
    assert_eq!(r.json()["status"], "processing", "{}", r.text());
    // A correctly signed notification of a payment nobody made.
    let unknown = json!({"order_id": "no-such-order", "amount": 1, "status": "paid"}).to_string();
    let sig = hmac_hex(&unknown);
    let headers = [("content-type", "application/json"), ("x-signature", sig.as_str())];
    let r = p.request(Method::POST, "/notify/notify", &headers, unknown).await;
    assert_eq!(r.status, 404, "{}", r.text());

    eventually(
        "a reversal given up, every anomaly, a sweeper query",
        Duration::from_secs(30),
        || async {
            let m = p.metrics().await;
            let notified = |result| m.get("payroute_notifications_in_total", &[("result", result)]) >= 1.0;
            m.get("payroute_reversals_total", &[("result", "gave_up")]) >= 1.0
                && notified("bad_signature")
                && notified("amount_mismatch")
                && notified("unknown_payment")
                && m.get("payroute_sweeper_queries_total", &[]) >= 1.0
        },
    )
    .await;
    // A refused reload: the old config keeps serving.
    p.write_config("[server\nnot toml");
    assert_eq!(p.reload().await.status, 400);

    let metrics = p.metrics().await;
    let mut series = Series::new();
    for s in metrics.samples() {
        series.entry(s.name).or_default().push(s.labels);
    }

    let mut problems = Vec::new();
    let alerts = rules(&read(&ops_dir().join("prometheus/alerts.yml")));
    assert_eq!(alerts.len(), 8, "the rules read from alerts.yml: {alerts:?}");
    for rule in &alerts {
        problems.extend(check_query(&format!("alerts.yml {}", rule.name), &rule.expr, &series));
    }
    let dash: Value = serde_json::from_str(&read(&ops_dir().join("grafana/payroute.json"))).expect("dashboard is JSON");
    let DashboardQueries { exprs, label_values } = dashboard_queries(&dash);
    assert!(exprs.len() >= 20, "the dashboard's queries: {exprs:?}");
    for (title, expr) in &exprs {
        problems.extend(check_query(&format!("payroute.json panel {title:?}"), expr, &series));
    }
    assert!(!label_values.is_empty(), "the dashboard has a channel variable");
    for (metric, label) in &label_values {
        let has = series
            .get(metric)
            .is_some_and(|s| s.iter().any(|l| l.contains_key(label)));
        if !has {
            problems.push(format!(
                "payroute.json variable: label_values({metric}, {label}) finds nothing"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "the operations files query what payroute does not export:\n  {}\n\n/metrics:\n{}",
        problems.join("\n  "),
        metrics.0
    );
}

// ---------------------------------------------------------------------------
// promtool
// ---------------------------------------------------------------------------

/// promtool from `$PROMTOOL` or the PATH.
///
/// # Panics
/// If there is none, saying how to install it.
fn promtool() -> PathBuf {
    if let Some(p) = std::env::var_os("PROMTOOL") {
        return PathBuf::from(p);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("promtool"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "promtool not found: the alert rules' unit tests need it. Install Debian's prometheus \
                 package (`apt-get install --no-install-recommends prometheus`; `bash .ci/services` does it), \
                 or set PROMTOOL=/path/to/promtool"
            )
        })
}

fn run_promtool(args: &[&str], dir: &Path) -> String {
    let out = Command::new(promtool())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {}:\n{text}", args.join(" "));
    text
}

#[test]
fn alert_rules_pass_promtool() {
    let dir = ops_dir().join("prometheus");
    let checked = run_promtool(&["check", "rules", "alerts.yml"], &dir);
    let count = rules(&read(&dir.join("alerts.yml"))).len();
    assert!(
        checked.contains(&format!("SUCCESS: {count} rules found")),
        "promtool found other rules than this test reads ({count}):\n{checked}"
    );
    let tested = run_promtool(&["test", "rules", "alerts.test.yml"], &dir);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[test]
fn dashboard_queries_are_valid_promql() {
    // Each query as a recording rule, with Grafana's variables as Grafana
    // would substitute them, for promtool to parse.
    let dash: Value = serde_json::from_str(&read(&ops_dir().join("grafana/payroute.json"))).expect("dashboard is JSON");
    let exprs = dashboard_queries(&dash).exprs;
    let rules: Vec<Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, (_, e))| {
            let e = e.replace("$__rate_interval", "1m").replace("$channel", ".*");
            json!({"record": format!("dashboard:query_{i}"), "expr": e})
        })
        .collect();
    let tmp = tempfile::tempdir().expect("temp dir");
    // JSON is YAML.
    let file = json!({"groups": [{"name": "dashboard", "rules": rules}]});
    std::fs::write(tmp.path().join("dashboard.yml"), file.to_string()).expect("write");
    let checked = run_promtool(&["check", "rules", "dashboard.yml"], tmp.path());
    assert!(
        checked.contains(&format!("SUCCESS: {} rules found", exprs.len())),
        "{checked}"
    );
}

// ---------------------------------------------------------------------------
// The files themselves
// ---------------------------------------------------------------------------

#[test]
fn every_alert_has_a_severity_says_what_to_look_at_first_and_is_tested_both_ways() {
    let dir = ops_dir().join("prometheus");
    let yaml = read(&dir.join("alerts.yml"));
    // Each alert's block of lines, up to the next rule.
    let mut blocks: Vec<(String, Vec<&str>)> = Vec::new();
    for line in yaml.lines() {
        if let Some(name) = line.trim_start().strip_prefix("- alert:") {
            blocks.push((name.trim().to_string(), Vec::new()));
        } else if let Some((_, block)) = blocks.last_mut() {
            block.push(line.trim());
        }
    }
    assert_eq!(blocks.len(), rules(&yaml).len(), "every rule is an alert");
    let tests = read(&dir.join("alerts.test.yml"));
    let test_lines: Vec<&str> = tests.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let mut problems = Vec::new();
    for (name, block) in &blocks {
        let has = |key: &str| block.iter().any(|l| l.starts_with(key) && l.len() > key.len() + 10);
        if !block
            .iter()
            .any(|l| matches!(*l, "severity: critical" | "severity: warning"))
        {
            problems.push(format!("{name}: no severity label (critical or warning)"));
        }
        for key in ["summary:", "description:", "runbook:"] {
            if !has(key) {
                problems.push(format!("{name}: no {key} annotation"));
            }
        }
        let runbook = block.iter().find(|l| l.starts_with("runbook:")).copied().unwrap_or("");
        if !runbook.contains("First:") {
            problems.push(format!("{name}: its runbook does not start with what to look at first"));
        }
        // In the tests: `alertname: NAME` then `exp_alerts: []` (quiet) or
        // `exp_alerts:` and a list (firing).
        let mut firing = false;
        let mut quiet = false;
        for w in test_lines.windows(2) {
            if w[0] == format!("alertname: {name}") {
                match w[1] {
                    "exp_alerts: []" => quiet = true,
                    "exp_alerts:" => firing = true,
                    other => problems.push(format!("alerts.test.yml: {name}: unexpected {other:?}")),
                }
            }
        }
        if !(firing && quiet) {
            problems.push(format!(
                "{name}: alerts.test.yml needs a firing and a quiet case (firing {firing}, quiet {quiet})"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_dashboard_imports_as_is() {
    let dash: Value = serde_json::from_str(&read(&ops_dir().join("grafana/payroute.json"))).expect("dashboard is JSON");
    // The datasource is asked for on import (`__inputs`) and every panel and
    // variable uses it: no datasource uid of someone's Grafana.
    let inputs = dash["__inputs"].as_array().expect("__inputs");
    assert!(
        inputs
            .iter()
            .any(|i| i["name"] == "DS_PROMETHEUS" && i["type"] == "datasource" && i["pluginId"] == "prometheus"),
        "{inputs:?}"
    );
    assert!(dash["id"].is_null(), "an exported dashboard has no id");
    assert_eq!(dash["uid"], "payroute");
    let ds = json!({"type": "prometheus", "uid": "${DS_PROMETHEUS}"});
    let mut ids = BTreeSet::new();
    let mut panels = 0;
    for p in dash["panels"].as_array().expect("panels") {
        assert!(ids.insert(p["id"].as_u64().expect("a panel id")), "panel id twice: {p}");
        let pos = &p["gridPos"];
        let x = pos["x"].as_u64().expect("gridPos.x");
        let w = pos["w"].as_u64().expect("gridPos.w");
        assert!(x + w <= 24, "panel {} wider than the grid", p["title"]);
        if p["type"] == "row" {
            continue;
        }
        panels += 1;
        assert_eq!(p["datasource"], ds, "panel {}", p["title"]);
        assert!(
            p["title"].as_str().is_some_and(|t| !t.is_empty()),
            "a panel without a title: {p}"
        );
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} queries nothing", p["title"]);
        for t in targets {
            assert_eq!(t["datasource"], ds, "panel {}", p["title"]);
        }
    }
    assert!(panels >= 20, "{panels} panels");
    let vars = dash["templating"]["list"].as_array().expect("templating.list");
    let channel = vars
        .iter()
        .find(|v| v["name"] == "channel")
        .expect("a channel variable");
    assert_eq!(channel["datasource"], ds);
    assert_eq!(channel["includeAll"], true);
    assert_eq!(channel["multi"], true);
    // The alerts' own numbers are on it: success rate, p99, abnormal share.
    let text = dash.to_string();
    for needle in [
        "Success rate",
        "p99 payment time",
        "Abnormal payments",
        "Failovers",
        "Share of attempts per channel",
    ] {
        assert!(text.contains(needle), "no {needle:?} on the dashboard");
    }
}

#[test]
fn the_promql_scanner_reads_metrics_and_matchers() {
    let s = selectors(
        "sum by (channel) (rate(payroute_attempts_total{channel=~\"$channel\", result=\"success\"}[5m]))\n\
         / ignoring (channel) group_left sum(rate(payroute_attempts_total[$__rate_interval]))",
    )
    .unwrap();
    assert_eq!(
        s,
        vec![
            Selector {
                metric: "payroute_attempts_total".into(),
                matchers: vec![
                    Matcher {
                        label: "channel".into(),
                        op: "=~",
                        value: "$channel".into()
                    },
                    Matcher {
                        label: "result".into(),
                        op: "=",
                        value: "success".into()
                    },
                ],
            },
            Selector {
                metric: "payroute_attempts_total".into(),
                matchers: vec![]
            },
        ]
    );
    let names = |e: &str| -> Vec<String> { selectors(e).unwrap().into_iter().map(|s| s.metric).collect() };
    assert_eq!(
        names("histogram_quantile(0.99, sum by (le) (rate(a_bucket[5m]))) > 0.5 and on () sum(increase(a_count[5m])) >= 1e2"),
        ["a_bucket", "a_count"]
    );
    assert_eq!(
        names("sum by (channel) (x{r=\"g\"} unless x{r='g'} offset 30m) > 0 or vector(0) # a comment naming y"),
        ["x", "x"]
    );
    assert_eq!(
        names("max without (instance) (deriv(b[10m])) > bool 0 and topk(3, c)"),
        ["b", "c"]
    );
    assert!(selectors("rat(x[5m])").unwrap_err().contains("unknown function rat"));
    assert!(selectors("{__name__=\"x\"}").is_err());
    assert!(selectors("x{a=\"b\"").is_err());
}

#[test]
fn rule_files_are_read_inline_and_in_blocks() {
    let yaml = "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up == 0\n        for: 1m\n\
                \x20     - record: r:b\n        expr: |\n          sum(\n            b\n          )\n        labels:\n          x: y\n\
                \x20     - alert: C\n        expr: \"c > 1\"\n";
    let r = rules(yaml);
    assert_eq!(r.len(), 3, "{r:?}");
    assert_eq!((r[0].name.as_str(), r[0].expr.as_str()), ("A", "up == 0"));
    assert_eq!((r[1].name.as_str(), r[1].expr.as_str()), ("r:b", "sum(\nb\n)\n"));
    assert_eq!((r[2].name.as_str(), r[2].expr.as_str()), ("C", "c > 1"));
}
