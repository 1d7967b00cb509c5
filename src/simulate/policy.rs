//! The policies payroute is compared with, and the oracle.
//!
//! Every policy obeys what the operator configured as a limit — a
//! channel's `enabled`, currencies and amounts, maintenance windows,
//! `daily_cap`, the candidates of the `[[rule]]` a payment matches, and a
//! ramp's share (the ramped channel goes first with the probability its
//! ramp gives now and last otherwise, as `rank` does) — because an
//! acquirer refuses what is outside them, and an operator who ramps a new
//! channel wants every router to ramp it. The oracle too: it is the best
//! possible router under the same limits, so regret measures choices, not
//! the operator's caution. Beyond that the baselines are what they are
//! named: no breaker, no score, no `max_share`, no guardrail. `payroute`
//! itself is not here: it is `routing::rank`, called by the engine.
//!
//! `sr_bucket` is a success-rate router as juspay's decision-engine builds
//! one: each channel's success rate over its last [`SR_BUCKET`] attempts
//! (a fixed-size bucket, not a time window), best first; a channel whose
//! last [`ELIMINATION_BUCKET`] attempts hold [`ELIMINATION_FAILURES`] or
//! more channel failures is eliminated (sent last); and [`HEDGING`] of
//! payments go first to a random other channel so every bucket stays
//! fresh (decision-engine's hedging percent). The values are fixed: they
//! are the baseline, not a thing to tune per scenario.

use super::scenario::Behaviour;
use super::world::Ending;
use crate::config::{ChannelConfig, Rule};
use crate::routing::{Ask, ChannelLive, Moment};

/// A channel of the simulation: its config and live state side by side,
/// as `rank` wants them.
pub(crate) struct SimChannel {
    pub config: ChannelConfig,
    pub live: ChannelLive,
}

impl AsRef<ChannelConfig> for SimChannel {
    fn as_ref(&self) -> &ChannelConfig {
        &self.config
    }
}

impl AsRef<ChannelLive> for SimChannel {
    fn as_ref(&self) -> &ChannelLive {
        &self.live
    }
}

/// Outcomes per channel the success rate is computed over.
const SR_BUCKET: usize = 100;
/// Recent attempts elimination looks at, and how many failures eliminate.
const ELIMINATION_BUCKET: usize = 10;
const ELIMINATION_FAILURES: usize = 5;
/// Share of payments explored away from the best channel.
const HEDGING: f64 = 0.02;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Policy {
    Payroute,
    RoundRobin,
    CheapestFirst,
    SrBucket,
    Oracle,
}

impl Policy {
    pub const ALL: [Policy; 5] = [
        Policy::Payroute,
        Policy::RoundRobin,
        Policy::CheapestFirst,
        Policy::SrBucket,
        Policy::Oracle,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Policy::Payroute => "payroute",
            Policy::RoundRobin => "round_robin",
            Policy::CheapestFirst => "cheapest_first",
            Policy::SrBucket => "sr_bucket",
            Policy::Oracle => "oracle",
        }
    }

    pub fn parse(s: &str) -> Option<Policy> {
        Policy::ALL.into_iter().find(|p| p.name() == s)
    }

    /// Mixed into the seed, so each policy's own draws (payroute's
    /// exploration, sr_bucket's hedging) are its own stream.
    pub fn salt(self) -> u64 {
        (self as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407)
    }
}

/// A baseline's state between payments.
pub(crate) enum Router {
    Stateless(Policy),
    RoundRobin { next: usize },
    SrBucket(Vec<Bucket>),
}

/// sr_bucket's memory of one channel: two rings of recent outcomes with
/// running counts, so ranking reads two numbers per channel.
#[derive(Default, Clone)]
pub(crate) struct Bucket {
    /// Last [`SR_BUCKET`] outcomes: paid or not; `paid_count` of them paid.
    paid: Vec<bool>,
    paid_at: usize,
    paid_count: usize,
    /// Last [`ELIMINATION_BUCKET`] outcomes: channel failure or not.
    failed: Vec<bool>,
    failed_at: usize,
    failed_count: usize,
}

/// Pushes `x` into a ring of `cap`, keeping `count` of its `true`s.
fn push(ring: &mut Vec<bool>, at: &mut usize, count: &mut usize, cap: usize, x: bool) {
    if ring.len() < cap {
        ring.push(x);
    } else {
        *count -= usize::from(ring[*at]);
        ring[*at] = x;
    }
    *count += usize::from(x);
    *at = (*at + 1) % cap;
}

impl Bucket {
    fn push(&mut self, paid: bool, failed: bool) {
        push(&mut self.paid, &mut self.paid_at, &mut self.paid_count, SR_BUCKET, paid);
        push(
            &mut self.failed,
            &mut self.failed_at,
            &mut self.failed_count,
            ELIMINATION_BUCKET,
            failed,
        );
    }

    /// Success rate over the bucket; an empty bucket is optimistic (1.0)
    /// so a new channel gets its first payments.
    fn rate(&self) -> f64 {
        if self.paid.is_empty() {
            return 1.0;
        }
        self.paid_count as f64 / self.paid.len() as f64
    }

    fn eliminated(&self) -> bool {
        self.failed_count >= ELIMINATION_FAILURES
    }
}

impl Router {
    pub fn new(policy: Policy, channels: usize) -> Router {
        match policy {
            Policy::RoundRobin => Router::RoundRobin { next: 0 },
            Policy::SrBucket => Router::SrBucket(vec![Bucket::default(); channels]),
            p => Router::Stateless(p),
        }
    }

    /// The baseline's order for one payment, into `order` (empty: none).
    /// `truth` is every channel's behaviour now (the oracle's only).
    #[allow(clippy::too_many_arguments)]
    pub fn order(
        &mut self,
        chs: &[SimChannel],
        rules: &[Rule],
        ask: &Ask<'_>,
        now: Moment,
        truth: &[Behaviour],
        rng: &mut fastrand::Rng,
        order: &mut Vec<usize>,
    ) {
        let rule = rules
            .iter()
            .find(|r| r.matcher.matches(ask.pay_type, ask.currency, ask.amount, ask.merchant));
        order.extend((0..chs.len()).filter(|&i| {
            let ch = &chs[i];
            rule.is_none_or(|r| r.channels.contains(&i))
                && ch.config.enabled
                && !ch.config.is_epay()
                && ch.config.accepts(ask.currency, ask.amount)
                && ch.live.held(&ch.config, ask.amount, now).is_none()
        }));
        if order.is_empty() {
            return;
        }
        let fee = |i: usize| chs[i].config.fee(ask.amount);
        match self {
            Router::RoundRobin { next } => {
                let len = order.len();
                order.rotate_left(*next % len);
                *next = next.wrapping_add(1);
            }
            // Keys computed once per channel (stable sorts: ties keep config order).
            Router::Stateless(Policy::CheapestFirst) => {
                order.sort_by_cached_key(|&i| total_key(fee(i)));
            }
            Router::Stateless(_) => {
                // The oracle: the expected amount kept, from the truth.
                order.sort_by_cached_key(|&i| total_key(-truth[i].success_rate * (ask.amount as f64 - fee(i))));
            }
            Router::SrBucket(buckets) => {
                order.sort_by_cached_key(|&i| (buckets[i].eliminated(), total_key(-buckets[i].rate())));
                if order.len() > 1 && rng.f64() < HEDGING {
                    let pick = rng.usize(1..order.len());
                    order[..=pick].rotate_right(1);
                }
            }
        }
        Router::ramp(chs, now, rng, order);
    }

    /// A ramp's limit, as `rank` applies it: each ramped channel goes
    /// first with the probability its ramp gives at `now`, else last.
    fn ramp(chs: &[SimChannel], now: Moment, rng: &mut fastrand::Rng, order: &mut Vec<usize>) {
        for (i, ch) in chs.iter().enumerate() {
            let Some(ramp) = &ch.config.policy.ramp else {
                continue;
            };
            let Some(at) = order.iter().position(|&c| c == i) else {
                continue;
            };
            order.remove(at);
            if rng.f64() < ramp.share_at(now.unix_ms) {
                order.insert(0, i);
            } else {
                order.push(i);
            }
        }
    }

    /// What an attempt taught the router (sr_bucket only learns).
    pub fn learn(&mut self, channel: usize, ending: Ending) {
        if let Router::SrBucket(buckets) = self {
            buckets[channel].push(
                ending == Ending::Paid,
                matches!(ending, Ending::Failed5xx | Ending::TimedOut),
            );
        }
    }
}

/// An integer that orders like `x` under `f64::total_cmp`.
fn total_key(x: f64) -> i64 {
    let bits = x.to_bits() as i64;
    bits ^ (((bits >> 63) as u64) >> 1) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_keeps_the_last_outcomes_and_eliminates_on_failures() {
        let mut b = Bucket::default();
        assert_eq!(b.rate(), 1.0);
        assert!(!b.eliminated());
        for _ in 0..SR_BUCKET {
            b.push(true, false);
        }
        for _ in 0..ELIMINATION_FAILURES {
            b.push(false, true);
        }
        assert!(b.eliminated());
        assert!((b.rate() - 0.95).abs() < 1e-9);
        for _ in 0..ELIMINATION_BUCKET {
            b.push(true, false);
        }
        assert!(!b.eliminated());
        assert_eq!(Policy::parse("sr_bucket"), Some(Policy::SrBucket));
        assert_eq!(Policy::parse("nope"), None);
        let mut xs = [0.5, -1.0, 3.0, -0.0, 0.0, -7.5];
        xs.sort_by_key(|&x| total_key(x));
        assert_eq!(xs, [-7.5, -1.0, -0.0, 0.0, 0.5, 3.0]);
    }
}
