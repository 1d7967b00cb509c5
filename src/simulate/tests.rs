use std::path::Path;

use super::*;

/// Two channels, one of which is down for the middle third.
const OUTAGE: &str = r#"
[routing]
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
duration_ms = 600000
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
