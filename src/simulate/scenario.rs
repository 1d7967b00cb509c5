//! A scenario: a routes.toml plus a `[simulation]` table, read and checked.
//!
//! The routes.toml part goes through [`Config::parse_scenario`], the very
//! validation `payroute check` runs, so a scenario's `[routing]`,
//! `[[channel]]` and `[[rule]]` mean exactly what they mean in production.
//! The `[simulation]` table is read here from the same text with spans, so
//! an impossible value (a success rate above 1, a negative latency, an
//! event at a channel the file does not have) is reported as
//! `FILE:LINE:COLUMN: message`, merged with the config's own issues.

use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use crate::config::{Config, ConfigError, Issues};

type Opt<T> = Option<Spanned<T>>;

/// The longest scenario: a week of virtual time.
const MAX_DURATION_MS: u64 = 7 * 24 * 3_600_000;
/// The most payments one run simulates.
pub(crate) const MAX_PAYMENTS: u64 = 100_000_000;
/// Latencies above ten minutes are certainly a typo.
const MAX_LATENCY_MS: f64 = 600_000.0;

/// The scenario's file, as far as the simulator reads it: `[simulation]`
/// and the channel ids (everything else is the config's, checked there).
#[derive(Deserialize)]
struct Doc {
    simulation: Option<Spanned<RawSimulation>>,
    #[serde(default, rename = "channel")]
    channels: Vec<ChannelId>,
}

/// Only a channel's id (serde skips its other keys here).
#[derive(Deserialize)]
struct ChannelId {
    id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSimulation {
    payments: Opt<u64>,
    duration_ms: Opt<u64>,
    start: Opt<String>,
    seed: Opt<u64>,
    currency: Opt<String>,
    merchant: Opt<String>,
    pay_type: Opt<String>,
    amount_min: Opt<u64>,
    amount_max: Opt<u64>,
    swing_window_ms: Opt<u64>,
    #[serde(default)]
    channel: Vec<Spanned<RawBehaviour>>,
    #[serde(default)]
    event: Vec<Spanned<RawEvent>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBehaviour {
    id: Spanned<String>,
    success_rate: Opt<f64>,
    failure_share: Opt<f64>,
    timeout_share: Opt<f64>,
    latency_ms: Opt<f64>,
    latency_jitter: Opt<f64>,
}

/// The behaviour values of a `[[simulation.channel]]` or an event (serde's
/// `flatten` would lose toml's spans, so both tables list them and lend
/// them out through this trait).
trait RawValues {
    fn fields(&self) -> [&Opt<f64>; 5];
}

macro_rules! raw_values {
    ($($t:ty),*) => {$(
        impl RawValues for $t {
            fn fields(&self) -> [&Opt<f64>; 5] {
                [&self.success_rate, &self.failure_share, &self.timeout_share, &self.latency_ms, &self.latency_jitter]
            }
        }
    )*};
}
raw_values!(RawBehaviour, RawEvent);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    channel: Spanned<String>,
    at_ms: Spanned<u64>,
    until_ms: Opt<u64>,
    over_ms: Opt<u64>,
    flap_ms: Opt<u64>,
    success_rate: Opt<f64>,
    failure_share: Opt<f64>,
    timeout_share: Opt<f64>,
    latency_ms: Opt<f64>,
    latency_jitter: Opt<f64>,
}

/// How a channel behaves at a moment: the simulated acquirer's truth.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Behaviour {
    /// Probability that an attempt is paid.
    pub success_rate: f64,
    /// Of the attempts not paid, the share that are channel failures
    /// (failed over); the rest are declines (the payment ends).
    pub failure_share: f64,
    /// Of the failures, the share that are timeouts (they take the
    /// channel's `timeout_ms`); the rest are 5xx answers.
    pub timeout_share: f64,
    /// Mean latency of an answer.
    pub latency_ms: f64,
    /// Latency is uniform in `latency_ms × (1 ± latency_jitter)`.
    pub latency_jitter: f64,
}

/// The five behaviour values in one order, so events can set any subset.
const KEYS: [&str; 5] = [
    "success_rate",
    "failure_share",
    "timeout_share",
    "latency_ms",
    "latency_jitter",
];

impl Behaviour {
    const DEFAULT: Behaviour = Behaviour {
        success_rate: 0.95,
        failure_share: 0.2,
        timeout_share: 0.5,
        latency_ms: 200.0,
        latency_jitter: 0.5,
    };

    fn get(&self, k: usize) -> f64 {
        [
            self.success_rate,
            self.failure_share,
            self.timeout_share,
            self.latency_ms,
            self.latency_jitter,
        ][k]
    }

    fn set(&mut self, k: usize, v: f64) {
        match k {
            0 => self.success_rate = v,
            1 => self.failure_share = v,
            2 => self.timeout_share = v,
            3 => self.latency_ms = v,
            _ => self.latency_jitter = v,
        }
    }
}

/// A change of one channel's behaviour (see docs/SIMULATION.md).
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub at_ms: u64,
    /// The change is undone from then on.
    pub until_ms: Option<u64>,
    /// The values move linearly from the previous ones over this long.
    pub over_ms: Option<u64>,
    /// The channel alternates between the new and the previous values,
    /// this long each, starting with the new.
    pub flap_ms: Option<u64>,
    /// The values it sets, by [`KEYS`] position.
    pub set: [Option<f64>; 5],
}

/// A validated scenario.
#[derive(Debug, Clone)]
pub(crate) struct Scenario {
    pub config: Config,
    pub sim: Simulation,
}

/// The `[simulation]` table, validated.
#[derive(Debug, Clone)]
pub(crate) struct Simulation {
    pub payments: u64,
    pub duration_ms: u64,
    /// Unix ms of virtual time 0.
    pub start_ms: i64,
    pub seed: u64,
    pub currency: String,
    pub merchant: String,
    pub pay_type: Option<String>,
    pub amount_min: u64,
    pub amount_max: u64,
    pub swing_window_ms: u64,
    /// Per channel (the config's order): the behaviour at time 0 and its events, by time.
    pub base: Vec<Behaviour>,
    pub events: Vec<Vec<Event>>,
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Scenario::parse(&text, path)
    }

    /// Checks scenario text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Scenario, ConfigError> {
        let mut issues = Issues::new(text, crate::config::base_of(origin));
        let config = match Config::parse_scenario(text, origin) {
            Ok(c) => Some(c),
            Err(ConfigError::Invalid { issues: found, .. }) => {
                issues.list = found;
                None
            }
            Err(e) => return Err(e),
        };
        let simulation = match toml::from_str::<Doc>(text) {
            Ok(doc) => simulation(doc, &mut issues),
            // The config's parse has reported a syntax error already.
            Err(e) if issues.list.is_empty() => {
                issues.at(e.span().unwrap_or(0..0), e.message().trim_end());
                None
            }
            Err(_) => None,
        };
        match (config, simulation) {
            (Some(config), Some(sim)) if issues.list.is_empty() => Ok(Scenario { config, sim }),
            _ => {
                issues.list.sort_by_key(|i| (i.line, i.column));
                issues.list.dedup();
                Err(ConfigError::Invalid {
                    path: origin.to_owned(),
                    issues: issues.list,
                })
            }
        }
    }
}

impl Simulation {
    /// Channel `ch`'s behaviour at virtual time `t_ms`.
    pub fn behaviour(&self, ch: usize, t_ms: u64) -> Behaviour {
        let mut b = self.base[ch];
        for e in &self.events[ch] {
            if t_ms < e.at_ms {
                break;
            }
            if e.until_ms.is_some_and(|u| t_ms >= u) {
                continue;
            }
            let since = (t_ms - e.at_ms) as f64;
            let before = b;
            for (k, v) in e.set.iter().enumerate() {
                let Some(v) = *v else { continue };
                let from = before.get(k);
                let now = match (e.over_ms, e.flap_ms) {
                    (Some(over), _) => from + (v - from) * (since / over as f64).min(1.0),
                    (None, Some(flap)) if (since as u64 / flap) % 2 == 1 => from,
                    _ => v,
                };
                b.set(k, now);
            }
        }
        b
    }
}

impl Issues<'_> {
    /// One behaviour value: a probability, or a latency in ms.
    fn value(&mut self, v: &Spanned<f64>, key: &str, table: &str) -> Option<f64> {
        let x = *v.get_ref();
        let (ok, range) = if key.starts_with("latency_ms") {
            (
                (0.0..=MAX_LATENCY_MS).contains(&x),
                format!("between 0 and {MAX_LATENCY_MS}"),
            )
        } else {
            ((0.0..=1.0).contains(&x), "between 0 and 1".to_owned())
        };
        if ok && x.is_finite() {
            Some(x)
        } else {
            self.at(
                v.span(),
                format!("{table} {key} = {x} is impossible: it must be {range}"),
            );
            None
        }
    }

    fn values(&mut self, raw: &impl RawValues, table: &str) -> [Option<f64>; 5] {
        let mut out = [None; 5];
        for (k, field) in raw.fields().into_iter().enumerate() {
            if let Some(v) = field {
                out[k] = self.value(v, KEYS[k], table);
            }
        }
        out
    }
}

/// Reads `[simulation]`; `None` when anything is wrong (issues say what).
fn simulation(doc: Doc, issues: &mut Issues<'_>) -> Option<Simulation> {
    let Some(sim) = doc.simulation else {
        issues.at(0..0, "a scenario needs a [simulation] table (see docs/SIMULATION.md)");
        return None;
    };
    let before = issues.list.len();
    let s = sim.get_ref();
    let payments = issues.count(&s.payments, 100_000, "[simulation] payments", 1, MAX_PAYMENTS);
    let duration_ms = issues.count(
        &s.duration_ms,
        3_600_000,
        "[simulation] duration_ms",
        1_000,
        MAX_DURATION_MS,
    );
    let start_ms = match &s.start {
        Some(v) => {
            use time::format_description::well_known::Rfc3339;
            match time::OffsetDateTime::parse(v.get_ref(), &Rfc3339) {
                Ok(t) => (t.unix_timestamp_nanos() / 1_000_000) as i64,
                Err(_) => {
                    issues.at(
                        v.span(),
                        "[simulation] start must be an RFC 3339 time, e.g. \"2026-12-01T00:00:00+08:00\"",
                    );
                    0
                }
            }
        }
        // 2026-12-01T00:00:00+08:00, a Tuesday.
        None => 1_796_054_400_000,
    };
    let amount_min = issues.count(&s.amount_min, 10_000, "[simulation] amount_min", 1, u64::MAX / 4);
    let amount_max = issues.count(
        &s.amount_max,
        amount_min.max(10_000),
        "[simulation] amount_max",
        1,
        u64::MAX / 4,
    );
    if amount_max < amount_min {
        let span = s
            .amount_max
            .as_ref()
            .or(s.amount_min.as_ref())
            .map_or(0..0, Spanned::span);
        issues.at(span, "[simulation] amount_max must be at least amount_min");
    }
    let swing_window_ms = issues.count(
        &s.swing_window_ms,
        60_000,
        "[simulation] swing_window_ms",
        1_000,
        duration_ms,
    );
    let ids: Vec<&str> = doc.channels.iter().map(|c| c.id.as_str()).collect();
    let index = |id: &Spanned<String>, issues: &mut Issues<'_>| {
        let found = ids.iter().position(|&c| c == id.get_ref());
        if found.is_none() {
            issues.at(
                id.span(),
                format!(
                    "no [[channel]] has id {:?} (the scenario's channels: {})",
                    id.get_ref(),
                    ids.join(", ")
                ),
            );
        }
        found
    };

    let mut base = vec![Behaviour::DEFAULT; ids.len()];
    let mut seen = vec![false; ids.len()];
    for b in &s.channel {
        let b = b.get_ref();
        let values = issues.values(b, "[[simulation.channel]]");
        let Some(i) = index(&b.id, issues) else { continue };
        if std::mem::replace(&mut seen[i], true) {
            issues.at(b.id.span(), format!("channel {:?} is described twice", b.id.get_ref()));
        }
        for (k, v) in values.iter().enumerate() {
            if let Some(v) = v {
                base[i].set(k, *v);
            }
        }
    }

    let mut events: Vec<Vec<Event>> = vec![Vec::new(); ids.len()];
    for e in &s.event {
        let span = e.span();
        let e = e.get_ref();
        let set = issues.values(e, "[[simulation.event]]");
        let at_ms = *e.at_ms.get_ref();
        if at_ms >= duration_ms {
            issues.at(
                e.at_ms.span(),
                format!("[[simulation.event]] at_ms = {at_ms} is not before the scenario's end (duration_ms = {duration_ms})"),
            );
        }
        if let Some(u) = &e.until_ms {
            if *u.get_ref() <= at_ms {
                issues.at(u.span(), "[[simulation.event]] until_ms must be after at_ms");
            }
        }
        for v in [&e.over_ms, &e.flap_ms].into_iter().flatten() {
            if *v.get_ref() == 0 {
                issues.at(
                    v.span(),
                    "[[simulation.event]] over_ms and flap_ms must be greater than 0",
                );
            }
        }
        if let (Some(_), Some(flap)) = (&e.over_ms, &e.flap_ms) {
            issues.at(
                flap.span(),
                "[[simulation.event]] cannot both ramp (over_ms) and flap (flap_ms)",
            );
        }
        if e.fields().iter().all(|v| v.is_none()) {
            issues.at(
                span.clone(),
                format!("[[simulation.event]] changes nothing: set one of {}", KEYS.join(", ")),
            );
        }
        let Some(i) = index(&e.channel, issues) else { continue };
        events[i].push(Event {
            at_ms,
            until_ms: e.until_ms.as_ref().map(|v| *v.get_ref()),
            over_ms: e.over_ms.as_ref().map(|v| *v.get_ref()),
            flap_ms: e.flap_ms.as_ref().map(|v| *v.get_ref()),
            set,
        });
    }
    for list in &mut events {
        // Stable: events at the same time apply in file order.
        list.sort_by_key(|e| e.at_ms);
    }
    if issues.list.len() > before {
        return None;
    }
    let text = |v: &Opt<String>, default: &str| v.as_ref().map_or(default.to_owned(), |v| v.get_ref().clone());
    Some(Simulation {
        payments,
        duration_ms,
        start_ms,
        seed: s.seed.as_ref().map_or(1, |v| *v.get_ref()),
        currency: text(&s.currency, "CNY").to_ascii_uppercase(),
        merchant: text(&s.merchant, "sim"),
        pay_type: s.pay_type.as_ref().map(|v| v.get_ref().clone()),
        amount_min,
        amount_max,
        swing_window_ms,
        base,
        events,
    })
}
