//! Selection: the order in which one payment tries channels.
//!
//! [`rank`] runs four phases, each a few lines below, in this order:
//!
//! 1. **rule** — the first `[[rule]]` whose `match` fits the payment names
//!    the candidates and the mode; none: every channel, by score
//!    (`X-Payroute-Route: default:score`).
//! 2. **gates** — a candidate must be eligible (currency, amount, the
//!    merchant's allow-list and the protocol: the caller's `allowed`) and
//!    available: enabled, not ejected, not full, and held back by no policy
//!    (a maintenance window, its `daily_cap`, a rolled-back ramp). A ramp's
//!    guardrail is judged here, where every channel's window is read anyway.
//! 3. **order** — by the mode: `score` (best first; see "no herding"
//!    below), `priority` (the rule's order) or `split` (the first drawn by
//!    weight, the rest by score, so a failover still goes to the best).
//! 4. **shares** — a channel at or over its `max_share` of the window's
//!    payments goes behind the others (still a failover target, and the
//!    choice when nothing else is available); a ramped channel goes first
//!    with the probability its ramp gives now, and last otherwise.
//!
//! **No herding.** Sending every payment to the single best score makes
//! traffic flip between channels whose scores are close: noise in a
//! success rate decides, and acquirers punish sudden volume with risk
//! controls. Channels within `share_margin` of the best score instead
//! share first places in proportion to closeness (weight `1 − gap /
//! margin`): equal channels split evenly, and a channel's share moves only
//! as fast as its score does, which the window smooths — unless it fails,
//! when the breaker takes it out at once. Beyond the margin the best wins
//! outright. The margin's default (1.5 points of score) and the window's
//! were chosen with `payroute simulate` (BENCHMARKS.md, "Session 8"),
//! against Thompson sampling too, which shared less smoothly between
//! twins and explored too much among 50 channels.
//!
//! Randomness comes from the caller's generator, so `payroute simulate` is
//! deterministic per seed.

use std::fmt;

use super::breaker::BreakerState;
use super::stats::WindowTotals;
use super::{score, ChannelLive, Moment, Unroutable};
use crate::config::{ChannelConfig, Mode, RoutingConfig, Rule};

/// What rank needs to know of a payment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ask<'a> {
    pub currency: &'a str,
    pub amount: u64,
    pub pay_type: Option<&'a str>,
    pub merchant: &'a str,
}

/// Which rule routed a payment and how: `X-Payroute-Route`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RouteTag {
    /// Position of the `[[rule]]` in the file, from 0; `None`: no rule matched.
    pub rule: Option<usize>,
    pub mode: Mode,
}

impl fmt::Display for RouteTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.rule {
            Some(i) => write!(f, "{i}:{}", self.mode.name()),
            None => write!(f, "default:{}", self.mode.name()),
        }
    }
}

/// Channels to try, best first (indices into the channel list), and the route.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ranked {
    pub order: Vec<usize>,
    pub route: RouteTag,
}

/// A channel that passed the gates.
struct Candidate {
    index: usize,
    totals: WindowTotals,
    score: f64,
}

/// The pooled prior (see [`score::prior`]) over these channels' windows.
pub(crate) fn prior_of(totals: impl Iterator<Item = WindowTotals>, cfg: &RoutingConfig) -> f64 {
    let (s, n) = totals.fold((0, 0), |(s, n), t| (s + t.successes, n + t.attempts()));
    score::prior(s, n, cfg)
}

/// Orders the channels for one payment (see the module doc).
///
/// It takes any channel that shows its config and live state through
/// `AsRef`: a snapshot's channels in the proxy, the simulator's, plain
/// pairs in the tests below.
pub(crate) fn rank<C: AsRef<ChannelConfig> + AsRef<ChannelLive>>(
    channels: &[C],
    rules: &[Rule],
    allowed: impl Fn(usize) -> bool,
    ask: &Ask<'_>,
    cfg: &RoutingConfig,
    now: Moment,
    rng: &mut fastrand::Rng,
) -> Result<Ranked, Unroutable> {
    let config = |i: usize| -> &ChannelConfig { channels[i].as_ref() };
    let live = |i: usize| -> &ChannelLive { channels[i].as_ref() };

    // 1. rule
    let rule = rules
        .iter()
        .position(|r| r.matcher.matches(ask.pay_type, ask.currency, ask.amount, ask.merchant));
    let rule = rule.map(|i| (i, &rules[i]));
    let route = RouteTag {
        rule: rule.map(|(i, _)| i),
        mode: rule.map_or(Mode::Score, |(_, r)| r.mode),
    };

    // 2. gates, reading every channel's window once (the pooled figures
    // cover all channels, candidates or not).
    let mut eligible = false;
    let mut candidates: Vec<Candidate> = Vec::with_capacity(channels.len());
    let (mut pooled_s, mut pooled_n, mut picks) = (0u64, 0u64, 0u64);
    for i in 0..channels.len() {
        let totals = live(i).totals_at(now.at);
        pooled_s += totals.successes;
        pooled_n += totals.attempts();
        picks += totals.picks;
        let in_rule = rule.is_none_or(|(_, r)| r.channels.contains(&i));
        if !in_rule || !config(i).accepts(ask.currency, ask.amount) || !allowed(i) {
            continue;
        }
        eligible = true;
        if live(i).available(config(i), now.at) && live(i).held(config(i), ask.amount, now).is_none() {
            candidates.push(Candidate {
                index: i,
                totals,
                score: 0.0,
            });
        }
    }
    candidates.retain(|c| !guardrail_trips(config(c.index), live(c.index), c.totals, (pooled_s, pooled_n)));
    if candidates.is_empty() {
        return Err(if eligible {
            Unroutable::NoneAvailable
        } else {
            Unroutable::NoEligible
        });
    }

    // 3. order
    let prior = score::prior(pooled_s, pooled_n, cfg);
    for c in &mut candidates {
        let (config, live) = (config(c.index), live(c.index));
        c.score = match live.breaker.state(now.at) {
            // One payment at a time is how a probing channel earns its way back.
            BreakerState::Probing => f64::INFINITY,
            _ => score::score(
                c.totals,
                prior,
                live.latency_ms(),
                config.fee(ask.amount),
                ask.amount,
                cfg,
            ),
        };
    }
    // Stable: equal scores keep config order, so ties are predictable.
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
    match (route.mode, rule) {
        (Mode::Priority, Some((_, r))) => {
            candidates.sort_by_key(|c| r.channels.iter().position(|&i| i == c.index));
        }
        (Mode::Split, Some((_, r))) => {
            let weight = |c: &Candidate| {
                let at = r.channels.iter().position(|&i| i == c.index);
                at.and_then(|at| r.weights.get(at)).map_or(0.0, |w| f64::from(*w))
            };
            let weights: Vec<f64> = candidates.iter().map(weight).collect();
            if let Some(first) = draw(&weights, rng) {
                candidates[..=first].rotate_right(1);
            }
        }
        _ => {
            share_close_scores(&mut candidates, cfg.share_margin, rng);
            if candidates.len() > 1 && cfg.explore_share > 0.0 && rng.f64() < cfg.explore_share {
                let pick = rng.usize(1..candidates.len());
                candidates[..=pick].rotate_right(1);
            }
        }
    }

    // 4. shares
    if picks > 0 {
        let over = |c: &Candidate| {
            let max = config(c.index).policy.max_share;
            max.is_some_and(|max| c.totals.picks as f64 >= max * picks as f64)
        };
        // Stable: those under their share keep their order, ahead of those over it.
        if candidates.iter().any(|c| !over(c)) {
            candidates.sort_by_key(over);
        }
    }
    let mut order: Vec<usize> = candidates.iter().map(|c| c.index).collect();
    let ramped: Vec<usize> = order
        .iter()
        .copied()
        .filter(|&i| config(i).policy.ramp.is_some())
        .collect();
    for i in ramped {
        let share = config(i).policy.ramp.as_ref().map_or(0.0, |r| r.share_at(now.unix_ms));
        order.retain(|&j| j != i);
        if rng.f64() < share {
            order.insert(0, i);
        } else {
            order.push(i);
        }
    }
    Ok(Ranked { order, route })
}

/// Draws an index with probability proportional to `weights`; `None` when
/// they sum to nothing.
fn draw(weights: &[f64], rng: &mut fastrand::Rng) -> Option<usize> {
    let total: f64 = weights.iter().sum();
    if total <= 0.0 {
        return None;
    }
    let mut x = rng.f64() * total;
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return Some(i);
        }
        x -= w;
    }
    weights.iter().rposition(|w| *w > 0.0)
}

/// No herding (module doc): the first place goes to one of the channels
/// within `margin` of the best score, drawn with weight `1 − gap / margin`.
/// `candidates` is sorted best first.
fn share_close_scores(candidates: &mut [Candidate], margin: f64, rng: &mut fastrand::Rng) {
    let Some(best) = candidates.first().map(|c| c.score) else {
        return;
    };
    if margin <= 0.0 || !best.is_finite() {
        return;
    }
    let close = candidates.iter().take_while(|c| best - c.score < margin).count();
    if close < 2 {
        return;
    }
    let weights: Vec<f64> = candidates[..close]
        .iter()
        .map(|c| 1.0 - (best - c.score) / margin)
        .collect();
    if let Some(first) = draw(&weights, rng) {
        candidates[..=first].rotate_right(1);
    }
}

/// A ramped channel doing worse than the others by more than its
/// guardrail, with `min_samples` seen on both sides, is rolled back (and
/// stays so until a reload changes its ramp) — once the shortfall beyond
/// the guardrail is more than chance: the check runs on every payment, and
/// a bare comparison of 200 samples would roll back a canary that is as
/// good as the others every so often (`payroute simulate` did, with a
/// channel truly better). One-sided 95 %: the shortfall beyond the
/// guardrail is at least 1.645 standard errors of the difference.
fn guardrail_trips(config: &ChannelConfig, live: &ChannelLive, own: WindowTotals, pooled: (u64, u64)) -> bool {
    let Some(ramp) = &config.policy.ramp else {
        return false;
    };
    let (others_s, others_n) = (pooled.0 - own.successes, pooled.1 - own.attempts());
    if own.attempts() < ramp.min_samples || others_n < ramp.min_samples {
        return false;
    }
    let own_rate = own.successes as f64 / own.attempts() as f64;
    let others_rate = others_s as f64 / others_n as f64;
    let se = (own_rate * (1.0 - own_rate) / own.attempts() as f64
        + others_rate * (1.0 - others_rate) / others_n as f64)
        .sqrt();
    if others_rate - ramp.guardrail - own_rate < 1.645 * se.max(f64::EPSILON) {
        return false;
    }
    if live.roll_back() {
        tracing::warn!(
            channel = %config.id,
            success_rate = own_rate,
            others = others_rate,
            guardrail_pp = ramp.guardrail * 100.0,
            "ramp rolled back: the channel did worse than the others by more than its guardrail; \
             it takes no payments until a reload changes its ramp"
        );
    }
    true
}

#[cfg(test)]
mod tests;
