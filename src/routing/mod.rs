//! Routing: which channel a payment should try first, second, third.
//!
//! Each channel carries a [`ChannelLive`]: its windowed outcomes, Peak-EWMA
//! latency, breaker, in-flight count and policy state (its day's use
//! against `daily_cap`, a ramp's rollback), shared by every config version
//! that keeps the channel's id, so statistics survive reloads.
//! [`select::rank`] turns the live state and the config's policies into an
//! order for one payment. Everything here reads atomics; nothing locks.
//!
//! Time is a parameter ([`Moment`]), never read inside: the proxy passes
//! the clock, `payroute simulate` passes virtual time, and both run the
//! same code.

pub(crate) mod breaker;
pub(crate) mod score;
pub(crate) mod select;
pub(crate) mod stats;
pub(crate) mod unpaid;

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;

use crate::config::{ChannelConfig, Ramp, RoutingConfig};
use crate::outcome::Verdict;
use breaker::{Breaker, BreakerState};
use stats::{PeakEwma, Window, WindowTotals};

pub(crate) use select::{prior_of, rank, Ask, Ranked, RouteTag};

/// When a routing decision is made: a monotonic instant for windows,
/// latencies and breakers; Unix milliseconds for what the calendar decides
/// (maintenance windows, ramps, the day of a daily cap).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Moment {
    pub at: Instant,
    pub unix_ms: i64,
}

impl Moment {
    pub fn now() -> Moment {
        Moment {
            at: Instant::now(),
            unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
        }
    }
}

/// The live, reload-surviving state of one channel.
pub(crate) struct ChannelLive {
    window: ArcSwap<Window>,
    latency: PeakEwma,
    pub breaker: Breaker,
    in_flight: AtomicU32,
    requests: AtomicU64,
    /// epay channels: created orders, followed until paid or due.
    unpaid: unpaid::Unpaid,
    /// The channel's use of its day against `daily_cap`, as last learnt
    /// from the state store (which holds the fleet's count): rank skips a
    /// channel this says is full without asking the store.
    day: AtomicI64,
    day_used: AtomicU64,
    /// The ramp this state belongs to (a hash), and whether its guardrail
    /// rolled it back: a reload that changes the ramp starts it afresh.
    ramp_id: AtomicU64,
    rolled_back: AtomicBool,
}

/// Which policy keeps a channel out of a payment's way right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Held {
    Maintenance,
    RolledBack,
    /// Its day's use plus this payment would pass `daily_cap`.
    Capped,
}

impl ChannelLive {
    pub fn new(window: Duration) -> ChannelLive {
        ChannelLive::starting(window, Instant::now())
    }

    /// A channel whose window buckets are cut from `started` (see
    /// [`Window::starting`]): `payroute simulate` passes its virtual origin.
    pub fn starting(window: Duration, started: Instant) -> ChannelLive {
        ChannelLive {
            window: ArcSwap::from_pointee(Window::starting(window, started)),
            latency: PeakEwma::new(),
            breaker: Breaker::new(),
            in_flight: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            unpaid: unpaid::Unpaid::default(),
            day: AtomicI64::new(i64::MIN),
            day_used: AtomicU64::new(0),
            ramp_id: AtomicU64::new(0),
            rolled_back: AtomicBool::new(false),
        }
    }

    /// Adopts a new config version: its `window_ms`, keeping the current
    /// totals; its ramp, forgetting a rollback if the ramp changed.
    pub fn adopt(&self, window: Duration, ramp: Option<&Ramp>) {
        let current = self.window.load();
        if current.window() != window {
            self.window.store(Arc::new(current.resized(window)));
        }
        let id = ramp.map_or(0, ramp_id);
        if self.ramp_id.swap(id, Relaxed) != id {
            self.rolled_back.store(false, Relaxed);
        }
    }

    pub fn totals(&self) -> WindowTotals {
        self.window.load().totals()
    }

    /// [`totals`](Self::totals) as of `now`: rank reads the clock once
    /// for all channels instead of once per channel, a cost that grows with
    /// the channel count (BENCHMARKS.md, "Figures behind the code").
    pub fn totals_at(&self, now: Instant) -> WindowTotals {
        self.window.load().totals_at(now)
    }

    pub fn latency_ms(&self) -> Option<f64> {
        self.latency.get()
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Relaxed)
    }

    /// Attempts sent to this channel since the process started.
    pub fn requests(&self) -> u64 {
        self.requests.load(Relaxed)
    }

    /// Counts a payment whose first attempt goes here (its share).
    pub fn record_pick(&self, now: Instant) {
        self.window.load().record_pick(now);
    }

    /// Records one attempt. `rtt` is `None` when the time says nothing about
    /// the acquirer's speed (a refused connection is fast, not healthy).
    /// A timeout's time is ignored too: it is the configured `timeout_ms`,
    /// not a measured speed, and the attempt already counts as a failure
    /// in the success rate. Fed to the Peak-EWMA, one timeout in a few
    /// hundred attempts held a healthy channel's estimate near its
    /// timeout, and with it a score several points low (BENCHMARKS.md,
    /// "Session 8").
    pub fn record(&self, verdict: Verdict, rtt: Option<Duration>, now: Instant, cfg: &RoutingConfig) {
        self.requests.fetch_add(1, Relaxed);
        self.window.load().record_at(verdict, now);
        let timed_out = matches!(
            verdict,
            Verdict::Failed {
                failure: crate::outcome::Failure::Timeout,
                ..
            }
        );
        if let Some(rtt) = rtt.filter(|_| !timed_out) {
            self.latency.observe(rtt, now, cfg.latency_decay);
        }
    }

    /// Records an attempt that created an epay order: an attempt for the
    /// request count and latency, but neither a success nor a failure until
    /// the order is paid or due at `due_ms` (see [`unpaid`]).
    pub fn record_created(&self, rtt: Duration, trade_no: &str, due_ms: i64, now: Instant, cfg: &RoutingConfig) {
        self.requests.fetch_add(1, Relaxed);
        self.latency.observe(rtt, now, cfg.latency_decay);
        self.unpaid.created(trade_no, due_ms);
    }

    /// An order of this channel was paid: a success, whenever it comes.
    pub fn record_paid(&self, trade_no: &str) {
        self.unpaid.paid(trade_no);
        self.window.load().record_settled(true, 1, Instant::now());
    }

    /// Counts the orders still unpaid when due by `now_ms` as failures;
    /// returns how many there were.
    pub fn record_unpaid(&self, now_ms: i64) -> u64 {
        let n = self.unpaid.expire(now_ms);
        if n > 0 {
            self.window.load().record_settled(false, n, Instant::now());
        }
        n
    }

    /// Takes an in-flight slot if the channel is under `max`.
    pub fn try_enter(&self, max: Option<u32>) -> Option<InFlight<'_>> {
        let before = self.in_flight.fetch_add(1, Relaxed);
        if max.is_some_and(|max| before >= max) {
            self.in_flight.fetch_sub(1, Relaxed);
            return None;
        }
        Some(InFlight(&self.in_flight))
    }

    /// What the store says the channel has taken on `day` (reserved and
    /// paid, by the whole fleet).
    pub fn note_day_used(&self, day: i64, used: u64) {
        self.day.store(day, Relaxed);
        self.day_used.store(used, Relaxed);
    }

    /// The channel's use of `day` as last learnt (0 for a day not seen yet).
    pub fn day_used(&self, day: i64) -> u64 {
        if self.day.load(Relaxed) == day {
            self.day_used.load(Relaxed)
        } else {
            0
        }
    }

    /// The channel's day at `unix_ms` (its `day_starts`).
    pub fn day_of(config: &ChannelConfig, unix_ms: i64) -> i64 {
        config.day_cut.day_index(unix_ms.div_euclid(1000))
    }

    pub fn rolled_back(&self) -> bool {
        self.rolled_back.load(Relaxed)
    }

    /// The guardrail tripped: the ramp's channel takes no payments until a
    /// reload changes its ramp.
    pub fn roll_back(&self) -> bool {
        !self.rolled_back.swap(true, Relaxed)
    }

    /// Whether a policy holds the channel back from a payment of `amount`
    /// (0: any payment) at `now`.
    pub fn held(&self, config: &ChannelConfig, amount: u64, now: Moment) -> Option<Held> {
        let policy = &config.policy;
        if policy.in_maintenance(now.unix_ms) {
            return Some(Held::Maintenance);
        }
        if policy.ramp.is_some() && self.rolled_back() {
            return Some(Held::RolledBack);
        }
        let cap = policy.daily_cap?;
        let used = self.day_used(Self::day_of(config, now.unix_ms));
        (used.saturating_add(amount.max(1)) > cap).then_some(Held::Capped)
    }

    fn available(&self, config: &ChannelConfig, now: Instant) -> bool {
        config.enabled && self.breaker.available(now) && config.max_in_flight.is_none_or(|max| self.in_flight() < max)
    }

    /// The state word of the admin API and metrics: a health state, or the
    /// policy that holds the channel back.
    pub fn state_name(&self, config: &ChannelConfig, now: Moment) -> &'static str {
        if !config.enabled {
            return "disabled";
        }
        let held = self.held(config, 0, now);
        match (held, self.breaker.state(now.at)) {
            (Some(Held::Maintenance), _) => "maintenance",
            (Some(Held::RolledBack), _) => "rolled_back",
            (_, BreakerState::Ejected) => "ejected",
            (_, BreakerState::Probing) => "probing",
            (Some(Held::Capped), BreakerState::Healthy) => "capped",
            (None, BreakerState::Healthy) => "healthy",
        }
    }

    /// The channel's score for a payment of `amount`, given the pooled `prior`.
    pub fn score(&self, config: &ChannelConfig, prior: f64, amount: u64, cfg: &RoutingConfig) -> f64 {
        score::score(self.totals(), prior, self.latency_ms(), config.fee(amount), amount, cfg)
    }
}

/// A ramp's identity: a change of any of its values starts it afresh.
fn ramp_id(ramp: &Ramp) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for bits in [ramp.from.to_bits(), ramp.to.to_bits(), ramp.guardrail.to_bits()] {
        bits.hash(&mut h);
    }
    (ramp.start_ms, ramp.over_ms, ramp.min_samples).hash(&mut h);
    h.finish() | 1
}

/// An occupied in-flight slot; freed on drop.
pub(crate) struct InFlight<'a>(&'a AtomicU32);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// Why a payment has no channel to go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unroutable {
    /// No channel takes this currency, amount or merchant.
    NoEligible,
    /// Eligible channels exist, but all are disabled, ejected or full.
    NoneAvailable,
}
