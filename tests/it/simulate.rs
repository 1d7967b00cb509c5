//! `payroute simulate`: the built binary on every scenario the repository
//! ships (at small payment counts), the table's shape, determinism, and
//! payroute's routing beating round robin where it must.

use std::path::{Path, PathBuf};

use crate::PAYROUTE;

const POLICIES: [&str; 5] = ["payroute", "round_robin", "cheapest_first", "sr_bucket", "oracle"];

fn scenarios() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("loadtest/scenarios");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("loadtest/scenarios")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    out.sort();
    out
}

/// Runs `payroute simulate ARGS`, asserting exit 0; returns stdout.
fn simulate(args: &[&str]) -> String {
    let mut all = vec!["simulate"];
    all.extend_from_slice(args);
    let out = PAYROUTE.run(&all);
    assert_eq!(
        out.status.code(),
        Some(0),
        "payroute {all:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 report")
}

/// One row of the table.
struct Row {
    payments: u64,
    success: f64,
    failovers: u64,
    p99_ms: u64,
    kept: f64,
    regret: f64,
}

/// The rows of a report, by policy name, checking the table's shape.
fn rows(report: &str) -> Vec<(String, Row)> {
    let mut lines = report.lines();
    assert!(lines.next().is_some_and(|l| l.starts_with("scenario ")), "{report}");
    let header: Vec<&str> = lines.next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "policy",
            "payments",
            "success",
            "fees",
            "failovers",
            "p99_ms",
            "kept",
            "regret",
            "max_swing"
        ],
        "{report}"
    );
    let pct = |s: &str| s.trim_end_matches('%').parse::<f64>().unwrap_or(f64::NAN);
    lines
        .take_while(|l| !l.is_empty() && !l.starts_with("payments no channel"))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 9, "{l}");
            assert!(f[8].ends_with("pp"), "{l}");
            let row = Row {
                payments: f[1].parse().unwrap_or(0),
                success: pct(f[2]),
                failovers: f[4].parse().unwrap_or(u64::MAX),
                p99_ms: f[5].parse().unwrap_or(u64::MAX),
                kept: f[6].parse().unwrap_or(f64::NAN),
                regret: pct(f[7]),
            };
            (f[0].to_owned(), row)
        })
        .collect()
}

#[test]
fn every_shipped_scenario_runs_and_prints_the_table() {
    let all = scenarios();
    assert!(all.len() >= 8, "{all:?}");
    for path in &all {
        let report = simulate(&[path.to_str().unwrap_or_default(), "--payments", "3000"]);
        let rows = rows(&report);
        let names: Vec<&str> = rows.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, POLICIES, "{}: {report}", path.display());
        for (name, r) in &rows {
            assert_eq!(r.payments, 3000, "{name}: {report}");
            assert!((0.0..=100.0).contains(&r.success), "{name}: {report}");
            assert!(r.kept > 0.0 && r.regret.is_finite() && r.p99_ms > 0, "{name}: {report}");
            let _ = r.failovers;
        }
        let oracle = &rows[4].1;
        assert_eq!(oracle.regret, 0.0, "{report}");
    }
}

#[test]
fn payroute_beats_round_robin_in_an_outage() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("loadtest/scenarios/outage.toml");
    let report = simulate(&[path.to_str().unwrap_or_default(), "--payments", "20000"]);
    let rows = rows(&report);
    let of = |name: &str| &rows.iter().find(|(n, _)| n == name).expect("policy row").1;
    let (ours, rr) = (of("payroute"), of("round_robin"));
    assert!(ours.kept > rr.kept && ours.regret < rr.regret, "{report}");
    // The breaker stops the timeouts: fewer failovers, a far shorter p99.
    assert!(ours.failovers * 3 < rr.failovers, "{report}");
    assert!(ours.p99_ms * 2 < rr.p99_ms, "{report}");
    assert!(ours.regret < 2.0, "{report}");
}

#[test]
fn same_seed_same_bytes_and_seed_and_policies_flags() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("loadtest/scenarios/flapping.toml");
    let path = path.to_str().unwrap_or_default();
    let args = [path, "--payments", "4000", "--seed", "42", "--timeline"];
    let first = simulate(&args);
    assert_eq!(first, simulate(&args));
    assert!(first.contains("\ntimeline: share of first attempts"), "{first}");
    let other = simulate(&[path, "--payments", "4000", "--seed", "43", "--timeline"]);
    assert_ne!(first, other);
    let two = simulate(&[path, "--payments", "4000", "--policies", "sr_bucket,payroute"]);
    let names: Vec<String> = rows(&two).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["sr_bucket", "payroute"], "{two}");
}

#[test]
fn bad_scenarios_and_arguments_are_refused_with_their_place() {
    let dir = std::env::temp_dir().join(format!("payroute-sim-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("bad.toml");
    let text = "[[channel]]\nid = \"a\"\nurl = \"http://127.0.0.1:1\"\n\n[simulation]\npayments = 10\n\n\
                [[simulation.channel]]\nid = \"a\"\nsuccess_rate = 1.2\n\n\
                [[simulation.event]]\nchannel = \"ghost\"\nat_ms = 1000\nlatency_ms = 5\n";
    std::fs::write(&file, text).expect("write scenario");
    let out = PAYROUTE.run(&["simulate", file.to_str().unwrap_or_default()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let shown = file.display().to_string();
    assert!(stderr.contains(&format!("{shown}:10:16: ")), "{stderr}");
    assert!(
        stderr.contains(&format!("{shown}:13:11: no [[channel]] has id \"ghost\"")),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
    // `check` refuses the same file: [simulation] is no routes.toml table.
    let checked = PAYROUTE.run(&["check", file.to_str().unwrap_or_default()]);
    assert_eq!(checked.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&checked.stderr).contains(&format!("{shown}:5:1: unknown table `simulation`")));
    let policies = PAYROUTE.run(&["simulate", file.to_str().unwrap_or_default(), "--policies", "best"]);
    assert_eq!(policies.status.code(), Some(1));
    let _ = std::fs::remove_dir_all(&dir);
}
