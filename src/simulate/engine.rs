//! One policy through the whole payment stream, in virtual time.
//!
//! The attempt loop mirrors the proxy's (`proxy::attempt::attempts`): try
//! the ranked channels in order, at most `max_attempts` of them and within
//! the server's `deadline`; a decline or a payment ends it, a channel
//! failure fails over when `failover_on` says so. For the `payroute`
//! policy the channels are real [`ChannelLive`]s fed exactly as the proxy
//! feeds them — `record_pick` for the first channel tried, `record` and
//! the breaker's ticket for every attempt, `note_day_used` for daily caps
//! — and ranked by [`routing::rank`] itself.
//!
//! Simplifications, each the same for every policy: an attempt's outcome
//! is learnt at its payment's arrival time (no attempts overlap, so
//! `max_in_flight` never binds); payments are JSON payments of one
//! merchant; an ambiguous failure (timeout, 5xx) is assumed proven
//! harmless by a query, so it fails over as the proxy does then.

use std::time::{Duration, Instant};

use super::policy::{Policy, Router, SimChannel};
use super::scenario::Scenario;
use super::world::{self, Arrival, Ending};
use crate::outcome::{Failure, Verdict};
use crate::routing::{self, Ask, ChannelLive, Moment};

/// What one policy did.
#[derive(Debug, Clone)]
pub(crate) struct Tally {
    pub policy: Policy,
    pub payments: u64,
    pub paid: u64,
    /// Fees of paid payments, minor units.
    pub fees: f64,
    /// Amount minus fee of paid payments, minor units.
    pub kept: f64,
    /// Attempts after a payment's first.
    pub failovers: u64,
    /// Payments no channel would take (all unavailable or capped).
    pub unroutable: u64,
    /// 99th percentile of a payment's time, all attempts together.
    pub p99_ms: u64,
    /// The largest change of a channel's share of first attempts between
    /// two consecutive swing windows after the warm-up, in points (0–100).
    pub max_swing: f64,
    /// Each complete swing window: its start (ms) and every channel's share (0–1).
    pub timeline: Vec<(u64, Vec<f64>)>,
}

/// Runs `policy` over `arrivals`.
pub(crate) fn run(sc: &Scenario, arrivals: &[Arrival], seed: u64, policy: Policy) -> Tally {
    let cfg = &sc.config.routing;
    // Virtual time 0. An hour ahead of the clock so every breaker and
    // latency estimate made below started before it (their offsets then
    // cancel); windows are cut from it exactly (`ChannelLive::starting`).
    let base = Instant::now() + Duration::from_secs(3_600);
    let chs: Vec<SimChannel> = sc
        .config
        .channels
        .iter()
        .map(|c| {
            let live = ChannelLive::starting(cfg.window, base);
            live.adopt(cfg.window, c.policy.ramp.as_ref());
            SimChannel {
                config: c.clone(),
                live,
            }
        })
        .collect();
    let n = chs.len();
    let mut rng = fastrand::Rng::with_seed(seed ^ policy.salt());
    let mut router = Router::new(policy, n);
    let mut day_used: Vec<(i64, u64)> = vec![(i64::MIN, 0); n];
    let mut latencies: Vec<u64> = Vec::with_capacity(arrivals.len());
    let warm_up_ms = cfg.window.as_millis() as u64;
    let mut swing = Swing::new(n, sc.sim.swing_window_ms, warm_up_ms, sc.sim.duration_ms);
    let deadline_ms = sc.config.server.deadline.as_millis() as u64;
    let mut t = Tally {
        policy,
        payments: arrivals.len() as u64,
        paid: 0,
        fees: 0.0,
        kept: 0.0,
        failovers: 0,
        unroutable: 0,
        p99_ms: 0,
        max_swing: 0.0,
        timeline: Vec::new(),
    };
    let mut behaviours = Vec::with_capacity(n);
    let mut order = Vec::with_capacity(n);
    for (i, a) in arrivals.iter().enumerate() {
        let now = Moment {
            at: base + Duration::from_millis(a.t_ms),
            unix_ms: sc.sim.start_ms + a.t_ms as i64,
        };
        let ask = Ask {
            currency: &sc.sim.currency,
            amount: a.amount,
            pay_type: sc.sim.pay_type.as_deref(),
            merchant: &sc.sim.merchant,
        };
        order.clear();
        if policy == Policy::Payroute {
            // JSON payments: epay channels are another protocol's.
            let allowed = |c: usize| !chs[c].config.is_epay();
            if let Ok(ranked) = routing::rank(&chs, &sc.config.rules, allowed, &ask, cfg, now, &mut rng) {
                order.extend(ranked.order);
            }
        } else {
            if policy == Policy::Oracle {
                behaviours.clear();
                behaviours.extend((0..n).map(|c| sc.sim.behaviour(c, a.t_ms)));
            }
            router.order(&chs, &sc.config.rules, &ask, now, &behaviours, &mut rng, &mut order);
        }
        if order.is_empty() {
            t.unroutable += 1;
        }
        let mut elapsed = 0u64;
        let mut tried = 0usize;
        for &c in &order {
            if tried == cfg.max_attempts || elapsed >= deadline_ms {
                break;
            }
            let ch = &chs[c];
            // pick: only payroute has a breaker; the baselines try what they ranked.
            let ticket = match policy {
                Policy::Payroute => match ch.live.breaker.admit(now.at) {
                    Some(ticket) => Some(ticket),
                    None => continue,
                },
                _ => None,
            };
            if tried == 0 {
                swing.pick(c, a.t_ms);
                ch.live.record_pick(now.at);
            } else {
                t.failovers += 1;
            }
            tried += 1;
            let timeout_ms = (ch.config.timeout.as_millis() as u64).min(deadline_ms - elapsed);
            let b = sc.sim.behaviour(c, a.t_ms);
            let attempt = world::attempt(&b, world::luck(seed, i as u64, c), timeout_ms);
            elapsed += attempt.latency_ms;
            let verdict = match attempt.ending {
                Ending::Paid => Verdict::Success,
                Ending::Declined => Verdict::Decline,
                Ending::Failed5xx => Verdict::Failed {
                    failure: Failure::Upstream5xx,
                    fail_over: cfg.failover_on.status_5xx,
                },
                Ending::TimedOut => Verdict::Failed {
                    failure: Failure::Timeout,
                    fail_over: cfg.failover_on.timeout,
                },
            };
            if let Some(ticket) = ticket {
                let now = now.at;
                ch.live
                    .record(verdict, Some(Duration::from_millis(attempt.latency_ms)), now, cfg);
                ticket.record(verdict.is_failure(), now, cfg);
            }
            router.learn(c, attempt.ending);
            match verdict {
                Verdict::Success => {
                    let fee = ch.config.fee(a.amount);
                    t.paid += 1;
                    t.fees += fee;
                    t.kept += a.amount as f64 - fee;
                    // The day's use, as the state store would report it.
                    let day = ChannelLive::day_of(&ch.config, now.unix_ms);
                    let used = &mut day_used[c];
                    if used.0 != day {
                        *used = (day, 0);
                    }
                    used.1 = used.1.saturating_add(a.amount);
                    ch.live.note_day_used(day, used.1);
                    break;
                }
                Verdict::Failed { fail_over: true, .. } => {}
                _ => break,
            }
        }
        latencies.push(elapsed);
    }
    if !latencies.is_empty() {
        let k = (latencies.len() * 99).div_ceil(100) - 1;
        t.p99_ms = *latencies.select_nth_unstable(k).1;
    }
    (t.max_swing, t.timeline) = swing.finish();
    t
}

/// Shares of first attempts per window, and the largest change between
/// consecutive windows (the "no herding" figure). Judged once the first
/// `window_ms` of routing statistics has passed: before, every router is
/// still learning (a start, like a restart, is its own story).
struct Swing {
    window_ms: u64,
    warm_up_ms: u64,
    /// Windows ending after this are partial and not judged.
    end_ms: u64,
    current: u64,
    counts: Vec<u64>,
    previous: Option<Vec<f64>>,
    max: f64,
    timeline: Vec<(u64, Vec<f64>)>,
}

impl Swing {
    fn new(channels: usize, window_ms: u64, warm_up_ms: u64, end_ms: u64) -> Swing {
        Swing {
            window_ms,
            warm_up_ms,
            end_ms,
            current: 0,
            counts: vec![0; channels],
            previous: None,
            max: 0.0,
            timeline: Vec::new(),
        }
    }

    fn pick(&mut self, channel: usize, t_ms: u64) {
        let w = t_ms / self.window_ms;
        if w != self.current {
            self.close();
            self.current = w;
        }
        self.counts[channel] += 1;
    }

    fn close(&mut self) {
        let total: u64 = self.counts.iter().sum();
        let complete = (self.current + 1) * self.window_ms <= self.end_ms;
        if total > 0 && complete {
            let shares: Vec<f64> = self.counts.iter().map(|&c| c as f64 / total as f64).collect();
            let warm = self.current * self.window_ms >= self.warm_up_ms;
            if let (Some(prev), true) = (&self.previous, warm) {
                let swing = shares.iter().zip(prev).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
                self.max = self.max.max(swing * 100.0);
            }
            self.timeline.push((self.current * self.window_ms, shares.clone()));
            self.previous = Some(shares);
        } else if total > 0 {
            self.previous = None;
        }
        self.counts.iter_mut().for_each(|c| *c = 0);
    }

    fn finish(mut self) -> (f64, Vec<(u64, Vec<f64>)>) {
        self.close();
        (self.max, self.timeline)
    }
}
