//! Routing: which channel a payment should try first, second, third.
//!
//! Each channel carries a [`ChannelLive`]: its windowed outcomes, Peak-EWMA
//! latency, breaker and in-flight count, shared by every config version that
//! keeps the channel's id (so statistics survive reloads). [`rank`] turns the
//! live state into an order for one payment: eligible channels (currency,
//! amount, merchant allow-list), minus unavailable ones (disabled, ejected,
//! full), best [`score`] first, a probing channel ahead of all (one payment
//! at a time is how it earns its way back), and with probability
//! `explore_share` a random runner-up promoted so every channel keeps being
//! measured. Everything here reads atomics; nothing locks.

pub(crate) mod breaker;
pub(crate) mod score;
pub(crate) mod stats;
pub(crate) mod unpaid;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::config::{ChannelConfig, RoutingConfig};
use crate::outcome::Verdict;
use breaker::{Breaker, BreakerState};
use stats::{PeakEwma, Window, WindowTotals};

/// The live, reload-surviving state of one channel.
pub(crate) struct ChannelLive {
    window: ArcSwap<Window>,
    latency: PeakEwma,
    pub breaker: Breaker,
    in_flight: AtomicU32,
    requests: AtomicU64,
    /// epay channels: created orders, followed until paid or due.
    unpaid: unpaid::Unpaid,
}

impl ChannelLive {
    pub fn new(window: Duration) -> ChannelLive {
        ChannelLive {
            window: ArcSwap::from_pointee(Window::new(window)),
            latency: PeakEwma::new(),
            breaker: Breaker::new(),
            in_flight: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            unpaid: unpaid::Unpaid::default(),
        }
    }

    /// Adopts a new `window_ms` from a reload, keeping the current totals.
    pub fn set_window(&self, window: Duration) {
        let current = self.window.load();
        if current.window() != window {
            self.window.store(Arc::new(current.resized(window)));
        }
    }

    pub fn totals(&self) -> WindowTotals {
        self.window.load().totals()
    }

    /// [`totals`](Self::totals) as of `now`: [`rank`] reads the clock once
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

    /// Records one attempt. `rtt` is `None` when the time says nothing about
    /// the acquirer's speed (a refused connection is fast, not healthy).
    pub fn record(&self, verdict: Verdict, rtt: Option<Duration>, cfg: &RoutingConfig) {
        self.requests.fetch_add(1, Relaxed);
        self.window.load().record(verdict);
        if let Some(rtt) = rtt {
            self.latency.observe(rtt, cfg.latency_decay);
        }
    }

    /// Records an attempt that created an epay order: an attempt for the
    /// request count and latency, but neither a success nor a failure until
    /// the order is paid or due at `due_ms` (see [`unpaid`]).
    pub fn record_created(&self, rtt: Duration, trade_no: &str, due_ms: i64, cfg: &RoutingConfig) {
        self.requests.fetch_add(1, Relaxed);
        self.latency.observe(rtt, cfg.latency_decay);
        self.unpaid.created(trade_no, due_ms);
    }

    /// An order of this channel was paid: a success, whenever it comes.
    pub fn record_paid(&self, trade_no: &str) {
        self.unpaid.paid(trade_no);
        self.window.load().record_settled(true, 1);
    }

    /// Counts the orders still unpaid when due by `now_ms` as failures;
    /// returns how many there were.
    pub fn record_unpaid(&self, now_ms: i64) -> u64 {
        let n = self.unpaid.expire(now_ms);
        if n > 0 {
            self.window.load().record_settled(false, n);
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

    fn available(&self, config: &ChannelConfig) -> bool {
        config.enabled && self.breaker.available() && config.max_in_flight.is_none_or(|max| self.in_flight() < max)
    }

    /// The state word of the admin API and metrics.
    pub fn state_name(&self, config: &ChannelConfig) -> &'static str {
        if !config.enabled {
            return "disabled";
        }
        match self.breaker.state() {
            BreakerState::Healthy => "healthy",
            BreakerState::Ejected => "ejected",
            BreakerState::Probing => "probing",
        }
    }

    /// The channel's score for a payment of `amount`, given the pooled `prior`.
    pub fn score(&self, config: &ChannelConfig, prior: f64, amount: u64, cfg: &RoutingConfig) -> f64 {
        score::score(self.totals(), prior, self.latency_ms(), config.fee(amount), amount, cfg)
    }
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

/// The pooled prior over `channels` (see [`score::prior`]).
///
/// This and [`rank`] take any channel that shows its config and live state
/// through `AsRef`: a snapshot's channels in the proxy, plain pairs in the
/// tests below, so ranking is tested without building a snapshot.
pub(crate) fn pooled_prior<C: AsRef<ChannelLive>>(channels: &[C], cfg: &RoutingConfig) -> f64 {
    let now = Instant::now();
    let (s, n) = channels
        .iter()
        .map(|c| c.as_ref().totals_at(now))
        .fold((0, 0), |(s, n), t| (s + t.successes, n + t.attempts()));
    score::prior(s, n, cfg)
}

/// Orders the channels for one payment, best first (indices into `channels`).
pub(crate) fn rank<C: AsRef<ChannelConfig> + AsRef<ChannelLive>>(
    channels: &[C],
    allowed: impl Fn(usize) -> bool,
    currency: &str,
    amount: u64,
    cfg: &RoutingConfig,
) -> Result<Vec<usize>, Unroutable> {
    let mut eligible = false;
    // Pass 1: totals of every channel (for the pooled prior), candidates kept.
    let mut ranked: Vec<(usize, f64)> = Vec::with_capacity(channels.len());
    let mut candidates: Vec<(usize, WindowTotals)> = Vec::with_capacity(channels.len());
    let (mut pooled_s, mut pooled_n) = (0u64, 0u64);
    let now = Instant::now();
    for (i, c) in channels.iter().enumerate() {
        let (config, live): (&ChannelConfig, &ChannelLive) = (c.as_ref(), c.as_ref());
        let totals = live.totals_at(now);
        pooled_s += totals.successes;
        pooled_n += totals.attempts();
        if !config.accepts(currency, amount) || !allowed(i) {
            continue;
        }
        eligible = true;
        if live.available(config) {
            candidates.push((i, totals));
        }
    }
    let prior = score::prior(pooled_s, pooled_n, cfg);
    // Pass 2: score the candidates.
    for (i, totals) in candidates {
        let (config, live): (&ChannelConfig, &ChannelLive) = (channels[i].as_ref(), channels[i].as_ref());
        let score = match live.breaker.state() {
            BreakerState::Probing => f64::INFINITY,
            _ => score::score(totals, prior, live.latency_ms(), config.fee(amount), amount, cfg),
        };
        ranked.push((i, score));
    }
    if ranked.is_empty() {
        return Err(if eligible {
            Unroutable::NoneAvailable
        } else {
            Unroutable::NoEligible
        });
    }
    // Stable: equal scores keep config order, so ties are predictable.
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    if ranked.len() > 1 && cfg.explore_share > 0.0 && fastrand::f64() < cfg.explore_share {
        let pick = fastrand::usize(1..ranked.len());
        ranked[..=pick].rotate_right(1);
    }
    Ok(ranked.into_iter().map(|(i, _)| i).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const CFG: &str = r#"
[routing]
explore_share = 0.0
eject_consecutive_failures = 2
[[channel]]
id = "cheap"
url = "http://127.0.0.1:1"
fee_percent = 0.3
currencies = ["CNY"]
[[channel]]
id = "dear"
url = "http://127.0.0.1:2"
fee_percent = 0.6
max_amount = 1000
[[channel]]
id = "off"
url = "http://127.0.0.1:3"
enabled = false
"#;

    /// A channel outside any snapshot: its config and live state side by side.
    struct Ch(ChannelConfig, ChannelLive);

    impl AsRef<ChannelConfig> for Ch {
        fn as_ref(&self) -> &ChannelConfig {
            &self.0
        }
    }

    impl AsRef<ChannelLive> for Ch {
        fn as_ref(&self) -> &ChannelLive {
            &self.1
        }
    }

    fn setup() -> (Vec<Ch>, RoutingConfig) {
        let config = Config::parse(CFG, "t.toml".as_ref()).unwrap();
        let channels = config
            .channels
            .iter()
            .map(|c| Ch(c.clone(), ChannelLive::new(config.routing.window)))
            .collect();
        (channels, config.routing)
    }

    fn record(ch: &Ch, verdict: Verdict, n: usize, cfg: &RoutingConfig) {
        for _ in 0..n {
            ch.1.record(verdict, Some(Duration::from_millis(20)), cfg);
        }
    }

    #[test]
    fn cheaper_wins_among_equals_and_eligibility_filters() {
        let (chs, cfg) = setup();
        assert_eq!(rank(&chs, |_| true, "CNY", 500, &cfg), Ok(vec![0, 1]));
        // Only "cheap" takes CNY over 1000; only "dear" takes USD.
        assert_eq!(rank(&chs, |_| true, "CNY", 5_000, &cfg), Ok(vec![0]));
        assert_eq!(rank(&chs, |_| true, "USD", 500, &cfg), Ok(vec![1]));
        assert_eq!(rank(&chs, |i| i == 1, "CNY", 500, &cfg), Ok(vec![1]));
        assert_eq!(rank(&chs, |i| i == 1, "CNY", 5_000, &cfg), Err(Unroutable::NoEligible));
        // The disabled channel is eligible but never available.
        assert_eq!(rank(&chs, |i| i == 2, "CNY", 500, &cfg), Err(Unroutable::NoneAvailable));
    }

    #[test]
    fn failures_move_traffic_and_ejection_removes() {
        let (chs, cfg) = setup();
        record(&chs[0], Verdict::Success, 5, &cfg);
        record(&chs[0], Verdict::Decline, 20, &cfg);
        record(&chs[1], Verdict::Success, 25, &cfg);
        assert_eq!(rank(&chs, |_| true, "CNY", 500, &cfg), Ok(vec![1, 0]));
        for _ in 0..2 {
            chs[1].1.breaker.admit().unwrap().record(true, &cfg);
        }
        assert_eq!(chs[1].1.state_name(&chs[1].0), "ejected");
        assert_eq!(rank(&chs, |_| true, "CNY", 500, &cfg), Ok(vec![0]));
    }

    #[test]
    fn full_channel_is_skipped() {
        let (mut chs, cfg) = setup();
        chs[0].0.max_in_flight = Some(1);
        let slot = chs[0].1.try_enter(Some(1)).unwrap();
        assert!(chs[0].1.try_enter(Some(1)).is_none());
        assert_eq!(rank(&chs, |_| true, "CNY", 500, &cfg), Ok(vec![1]));
        drop(slot);
        assert_eq!(chs[0].1.in_flight(), 0);
    }

    #[test]
    fn an_epay_channel_is_judged_by_whether_its_orders_get_paid() {
        let (chs, cfg) = setup();
        let ms = Duration::from_millis(20);
        for i in 0..10 {
            chs[0].1.record_created(ms, &format!("A{i}"), 100, &cfg);
            chs[1].1.record_created(ms, &format!("B{i}"), 100, &cfg);
        }
        assert_eq!(chs[0].1.totals().attempts(), 0, "a created order counts neither way");
        assert_eq!(chs[0].1.requests(), 10);
        for i in 0..9 {
            chs[1].1.record_paid(&format!("B{i}"));
        }
        assert_eq!(chs[0].1.record_unpaid(99), 0);
        assert_eq!(chs[0].1.record_unpaid(100), 10, "none of cheap's orders was paid");
        assert_eq!(chs[1].1.record_unpaid(100), 1);
        let (a, b) = (chs[0].1.totals(), chs[1].1.totals());
        assert_eq!((a.successes, a.failures), (0, 10));
        assert_eq!((b.successes, b.failures), (9, 1));
        assert_eq!(
            rank(&chs, |_| true, "CNY", 500, &cfg),
            Ok(vec![1, 0]),
            "the paid channel leads"
        );
    }

    #[test]
    fn exploration_promotes_runners_up() {
        let (chs, mut cfg) = setup();
        cfg.explore_share = 1.0;
        assert_eq!(rank(&chs, |_| true, "CNY", 500, &cfg), Ok(vec![1, 0]));
    }
}
