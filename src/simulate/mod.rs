//! `payroute simulate`: routing policies against simulated channels, in
//! virtual time, with payroute's own ranking code.
//!
//! A scenario ([`scenario`]) is a routes.toml — validated by the same
//! code as `payroute check` — plus a `[simulation]` table: how many
//! payments, over how long, and how each channel behaves (success rate,
//! failures versus declines, latency) and changes (events: outages,
//! declines, flapping). [`world`] turns that into a payment stream and
//! each attempt's outcome; [`engine`] runs one policy through the stream;
//! [`policy`] holds the baselines and the oracle; this file runs them all
//! and prints the table (docs/SIMULATION.md explains every column).
//!
//! Built so for three reasons. **The real code**: the `payroute` policy
//! is `routing::rank` over real `ChannelLive`s (windows, Peak-EWMA,
//! breaker, daily caps, ramps, shares), driven through `Moment`, so what
//! the study measures is what the proxy runs, not a model of it.
//! **Deterministic**: every draw comes from a generator seeded by the
//! scenario's seed (never the global one), windows are cut from the
//! virtual origin, and nothing reads the clock into the output, so the
//! same seed prints the same bytes. **Fair**: every policy faces the same
//! arrivals and, for the same choice, the same outcome (common random
//! numbers, see [`world::luck`]), so regret measures choices, not luck.
//! Policies run on their own threads (they share nothing).

mod engine;
mod policy;
mod scenario;
mod world;

use std::fmt::Write as _;
use std::path::Path;

use engine::Tally;
use policy::Policy;
pub(crate) use scenario::Scenario;

/// What `payroute simulate` was asked.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Request {
    /// The scenario: a routes.toml with a `[simulation]` table.
    pub scenario: std::path::PathBuf,
    /// Policies to show, comma-separated (payroute, round_robin,
    /// cheapest_first, sr_bucket, oracle); all by default.
    #[arg(long)]
    pub policies: Option<String>,
    /// Overrides the scenario's seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Overrides the scenario's payment count (same duration: a higher or
    /// lower rate).
    #[arg(long)]
    pub payments: Option<u64>,
    /// Also prints each policy's share of first attempts per channel for
    /// every swing window, as CSV.
    #[arg(long)]
    pub timeline: bool,
}

/// Why a simulation could not run: the lines to print.
#[derive(Debug)]
pub(crate) struct Refused(pub Vec<String>);

/// Runs a request; the report on success.
pub(crate) fn run(req: &Request) -> Result<String, Refused> {
    let policies = match &req.policies {
        None => Policy::ALL.to_vec(),
        Some(list) => parse_policies(list)?,
    };
    let sc = Scenario::load(&req.scenario).map_err(|e| Refused(e.lines()))?;
    let payments = match req.payments {
        Some(n) if n == 0 || n > scenario::MAX_PAYMENTS => {
            return Err(Refused(vec![format!(
                "payroute: --payments must be between 1 and {}",
                scenario::MAX_PAYMENTS
            )]))
        }
        Some(n) => n,
        None => sc.sim.payments,
    };
    let seed = req.seed.unwrap_or(sc.sim.seed);
    Ok(simulate(&sc, &req.scenario, &policies, payments, seed, req.timeline))
}

fn parse_policies(list: &str) -> Result<Vec<Policy>, Refused> {
    let mut out = Vec::new();
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some(p) = Policy::parse(name) else {
            let known: Vec<&str> = Policy::ALL.iter().map(|p| p.name()).collect();
            return Err(Refused(vec![format!(
                "payroute: unknown policy {name:?} (known: {})",
                known.join(", ")
            )]));
        };
        if !out.contains(&p) {
            out.push(p);
        }
    }
    if out.is_empty() {
        return Err(Refused(vec!["payroute: --policies names no policy".to_owned()]));
    }
    Ok(out)
}

/// Runs `policies` (and the oracle, which regret needs) and renders the report.
pub(crate) fn simulate(
    sc: &Scenario,
    path: &Path,
    policies: &[Policy],
    payments: u64,
    seed: u64,
    timeline: bool,
) -> String {
    let arrivals = world::arrivals(&sc.sim, payments, seed);
    let mut runs: Vec<Policy> = policies.to_vec();
    if !runs.contains(&Policy::Oracle) {
        runs.push(Policy::Oracle);
    }
    let tallies: Vec<Tally> = std::thread::scope(|s| {
        let handles: Vec<_> = runs
            .iter()
            .map(|&p| {
                let arrivals = &arrivals;
                s.spawn(move || engine::run(sc, arrivals, seed, p))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect()
    });
    render(sc, path, policies, payments, seed, &tallies, timeline)
}

fn render(
    sc: &Scenario,
    path: &Path,
    policies: &[Policy],
    payments: u64,
    seed: u64,
    tallies: &[Tally],
    timeline: bool,
) -> String {
    let oracle_kept = tallies
        .iter()
        .find(|t| t.policy == Policy::Oracle)
        .map_or(0.0, |t| t.kept);
    let minutes = sc.sim.duration_ms / 60_000;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "scenario {}: {payments} payments over {}h{:02}m, {} channels, seed {seed}",
        path.display(),
        minutes / 60,
        minutes % 60,
        sc.config.channels.len(),
    );
    let _ = writeln!(
        out,
        "{:<15} {:>9} {:>8} {:>14} {:>9} {:>7} {:>16} {:>8} {:>9}",
        "policy", "payments", "success", "fees", "failovers", "p99_ms", "kept", "regret", "max_swing"
    );
    for p in policies {
        let Some(t) = tallies.iter().find(|t| t.policy == *p) else {
            continue;
        };
        let regret = if oracle_kept > 0.0 {
            format!("{:.2}%", (oracle_kept - t.kept) / oracle_kept * 100.0)
        } else {
            "-".to_owned()
        };
        let _ = writeln!(
            out,
            "{:<15} {:>9} {:>7.2}% {:>14.2} {:>9} {:>7} {:>16.2} {:>8} {:>7.1}pp",
            p.name(),
            t.payments,
            t.paid as f64 / t.payments.max(1) as f64 * 100.0,
            t.fees / 100.0,
            t.failovers,
            t.p99_ms,
            t.kept / 100.0,
            regret,
            t.max_swing,
        );
    }
    let unroutable: Vec<String> = policies
        .iter()
        .filter_map(|p| tallies.iter().find(|t| t.policy == *p))
        .filter(|t| t.unroutable > 0)
        .map(|t| format!("{} {}", t.policy.name(), t.unroutable))
        .collect();
    if !unroutable.is_empty() {
        let _ = writeln!(out, "payments no channel could take: {}", unroutable.join(", "));
    }
    if timeline {
        let ids: Vec<&str> = sc.config.channels.iter().map(|c| &*c.id).collect();
        let _ = writeln!(
            out,
            "\ntimeline: share of first attempts per {} s window\npolicy,start_s,{}",
            sc.sim.swing_window_ms / 1000,
            ids.join(",")
        );
        for p in policies {
            let Some(t) = tallies.iter().find(|t| t.policy == *p) else {
                continue;
            };
            for (start, shares) in &t.timeline {
                let shares: Vec<String> = shares.iter().map(|s| format!("{s:.3}")).collect();
                let _ = writeln!(out, "{},{},{}", p.name(), start / 1000, shares.join(","));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
