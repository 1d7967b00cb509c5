use std::path::Path;

use super::*;

/// Two channels, the better one down from 200 s to 400 s of 20 minutes. (A 1-minute
/// window: with the 5-minute default a channel's outage failures would
/// weigh on its score for half of this short scenario after it recovered.)
const OUTAGE: &str = r#"
[routing]
window_ms = 60000
eject_base_ms = 5000

[[channel]]
id = "a"
url = "http://127.0.0.1:1"
fee_percent = 0.6

[[channel]]
id = "b"
url = "http://127.0.0.1:2"
fee_percent = 0.3

[simulation]
payments = 3000
duration_ms = 1200000
seed = 5

[[simulation.channel]]
id = "a"
success_rate = 0.97

[[simulation.channel]]
id = "b"
success_rate = 0.93

[[simulation.event]]
channel = "a"
at_ms = 200000
until_ms = 400000
success_rate = 0
failure_share = 1
"#;

fn scenario(text: &str) -> Scenario {
    Scenario::parse(text, Path::new("s.toml")).unwrap_or_else(|e| panic!("{}", e.lines().join("\n")))
}

fn errors(text: &str) -> Vec<String> {
    Scenario::parse(text, Path::new("s.toml"))
        .map(|_| ())
        .expect_err("scenario should be refused")
        .lines()
}

fn report(sc: &Scenario, seed: u64) -> String {
    simulate(sc, Path::new("s.toml"), &Policy::ALL, sc.sim.payments, seed, true)
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let sc = scenario(OUTAGE);
    let first = report(&sc, 5);
    assert_eq!(first, report(&sc, 5));
    assert_ne!(first, report(&sc, 6));
    for p in Policy::ALL {
        assert!(first.lines().any(|l| l.starts_with(p.name())), "{first}");
    }
}

/// The line and column of every issue, in order.
fn located(errors: &[String]) -> Vec<(usize, usize)> {
    errors
        .iter()
        .map(|e| {
            let mut parts = e.splitn(4, ':');
            let (_, line, col) = (parts.next(), parts.next(), parts.next());
            (
                line.and_then(|l| l.parse().ok()).unwrap_or(0),
                col.and_then(|c| c.parse().ok()).unwrap_or(0),
            )
        })
        .collect()
}

#[test]
fn impossible_values_are_located() {
    // Lines of OUTAGE's text (its first line is empty).
    let cases: &[(&str, &str, (usize, usize), &str)] = &[
        (
            "success_rate = 0.97",
            "success_rate = 1.5",
            (23, 16),
            "success_rate = 1.5 is impossible",
        ),
        (
            "success_rate = 0.93",
            "success_rate = 0.93\nlatency_ms = -20",
            (28, 14),
            "latency_ms = -20 is impossible",
        ),
        (
            "channel = \"a\"",
            "channel = \"zz\"",
            (30, 11),
            "no [[channel]] has id \"zz\"",
        ),
        (
            "until_ms = 400000",
            "until_ms = 100000",
            (32, 12),
            "until_ms must be after at_ms",
        ),
        (
            "payments = 3000",
            "payments = 3000\npaymets = 5",
            (18, 1),
            "unknown field `paymets`",
        ),
        (
            "at_ms = 200000\nuntil_ms = 400000",
            "at_ms = 1300000",
            (31, 9),
            "not before the scenario's end",
        ),
        ("seed = 5", "seed = 5\nstart = \"noon\"", (20, 9), "RFC 3339"),
        (
            "failure_share = 1",
            "failure_share = 1\nflap_ms = 1000\nover_ms = 5",
            (35, 11),
            "cannot both",
        ),
    ];
    for (from, to, at, message) in cases {
        assert!(OUTAGE.contains(from), "{from}");
        let list = errors(&OUTAGE.replacen(from, to, 1));
        assert_eq!(list.len(), 1, "{to}: {list:?}");
        assert_eq!(located(&list), vec![*at], "{to}: {list:?}");
        assert!(
            list[0].starts_with("s.toml:") && list[0].contains(message),
            "{to}: {list:?}"
        );
    }
}

#[test]
fn config_and_simulation_errors_come_together() {
    // A config error (fee_percent out of range) and a scenario error, both located.
    let text = OUTAGE.replacen("fee_percent = 0.6", "fee_percent = -3", 1).replacen(
        "success_rate = 0.97",
        "success_rate = 2",
        1,
    );
    let list = errors(&text);
    assert_eq!(located(&list), vec![(9, 15), (23, 16)], "{list:?}");
    // The same file without [simulation] is no scenario.
    let bare = &OUTAGE[..OUTAGE.find("[simulation]").unwrap_or(OUTAGE.len())];
    assert!(errors(bare)[0].contains("needs a [simulation] table"));
}

#[test]
fn events_change_behaviour_over_time() {
    let text = OUTAGE.replacen(
        "[[simulation.event]]",
        "[[simulation.event]]\nchannel = \"b\"\nat_ms = 0\nover_ms = 100000\nsuccess_rate = 0.53\n\n\
         [[simulation.event]]\nchannel = \"b\"\nat_ms = 450000\nflap_ms = 10000\nlatency_ms = 900\n\n[[simulation.event]]",
        1,
    );
    let sim = scenario(&text).sim;
    let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
    // a: down between 200 s and 400 s only.
    assert!(close(sim.behaviour(0, 199_999).success_rate, 0.97));
    assert!(close(sim.behaviour(0, 200_000).success_rate, 0.0));
    assert!(close(sim.behaviour(0, 200_000).failure_share, 1.0));
    assert!(close(sim.behaviour(0, 400_000).success_rate, 0.97));
    // b: 0.93 sliding to 0.53 over 100 s, then flapping latency every 10 s.
    assert!(close(sim.behaviour(1, 50_000).success_rate, 0.73));
    assert!(close(sim.behaviour(1, 300_000).success_rate, 0.53));
    assert!(close(sim.behaviour(1, 455_000).latency_ms, 900.0));
    assert!(close(sim.behaviour(1, 465_000).latency_ms, 200.0));
    assert!(close(sim.behaviour(1, 475_000).latency_ms, 900.0));
}

/// The routing code is payroute's own: with the best channel down for a
/// third of the time, it keeps more than round robin and stays close to
/// the oracle; and it ejects the dead channel, so its worst payments are
/// far faster than round robin's, which keeps waiting out timeouts.
#[test]
fn payroute_rides_out_the_outage() {
    let sc = scenario(OUTAGE);
    let arrivals = world::arrivals(&sc.sim, 6_000, 5);
    let run = |p| engine::run(&sc, &arrivals, 5, p);
    let (ours, rr, oracle) = (run(Policy::Payroute), run(Policy::RoundRobin), run(Policy::Oracle));
    assert!(ours.kept > rr.kept, "payroute {} round robin {}", ours.kept, rr.kept);
    assert!(
        ours.kept > oracle.kept * 0.98,
        "payroute {} oracle {}",
        ours.kept,
        oracle.kept
    );
    assert!(
        ours.p99_ms < rr.p99_ms,
        "p99: payroute {} round robin {}",
        ours.p99_ms,
        rr.p99_ms
    );
    assert!(
        ours.failovers * 3 < rr.failovers,
        "{} vs {}",
        ours.failovers,
        rr.failovers
    );
}

#[test]
fn policies_are_parsed_and_unknown_ones_refused() {
    assert_eq!(
        parse_policies("payroute, oracle,payroute").map(|p| p.len()).ok(),
        Some(2)
    );
    assert!(parse_policies("payroute,best").is_err());
    assert!(parse_policies(" , ").is_err());
}
