//! The score: what one payment is expected to be worth on a channel.
//!
//! ```text
//! score = p × (1 − fee / amount) − latency_penalty_per_s × latency_s
//! p     = (successes + prior_weight × prior) / (attempts + prior_weight)
//! ```
//!
//! Read it as "share of the amount the merchant expects to keep": a payment
//! that succeeds with probability `p` keeps `1 − fee/amount` of its amount,
//! and every second the customer waits costs `latency_penalty_per_s` of it
//! (abandoned checkouts, held connections). The units are the same, so the
//! trade-offs are explicit: 1 point of success rate is worth 1 % of fee, and
//! with the default penalty (0.02/s) 100 ms of latency is worth 0.2 % of fee.
//! `p` counts declines as non-success (approval rate is what the merchant is
//! paid on, and acquirers differ in it), and is smoothed by a Beta prior: a
//! channel with few recent attempts is pulled toward `prior` — by default the
//! pooled success rate of all channels over the window (empirical Bayes: an
//! unmeasured channel is assumed to be average, neither starved as "unknown"
//! nor flooded as "perfect"), or `prior_success_rate` when set. The fee is computed for the payment's own amount,
//! so `fee_fixed` weighs more on small payments, as it does on the invoice.

use super::stats::WindowTotals;
use crate::config::RoutingConfig;

/// Amount (minor units) used to show a score where there is no payment, as in
/// `/-/channels` and metrics: 100.00 in a two-decimal currency.
pub(crate) const REFERENCE_AMOUNT: u64 = 10_000;

/// The prior success rate: `prior_success_rate` if configured, else the
/// pooled rate of all channels' windows — `successes` of `attempts` — and
/// 1.0 while nothing is measured.
pub(crate) fn prior(successes: u64, attempts: u64, cfg: &RoutingConfig) -> f64 {
    match cfg.prior_success_rate {
        Some(p) => p,
        None if attempts == 0 => 1.0,
        None => successes as f64 / attempts as f64,
    }
}

/// Smoothed success probability over the window.
pub(crate) fn success_rate(t: WindowTotals, prior: f64, cfg: &RoutingConfig) -> f64 {
    let n = t.attempts() as f64 + cfg.prior_weight;
    if n == 0.0 {
        prior
    } else {
        (t.successes as f64 + cfg.prior_weight * prior) / n
    }
}

/// The channel's score for a payment of `amount` with `fee` (minor units).
pub(crate) fn score(
    t: WindowTotals,
    prior: f64,
    latency_ms: Option<f64>,
    fee: f64,
    amount: u64,
    cfg: &RoutingConfig,
) -> f64 {
    let fee_share = if amount == 0 {
        0.0
    } else {
        (fee / amount as f64).min(1.0)
    };
    let latency_s = latency_ms.unwrap_or(0.0) / 1000.0;
    success_rate(t, prior, cfg) * (1.0 - fee_share) - cfg.latency_penalty_per_s * latency_s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RoutingConfig {
        crate::config::Config::parse(
            "[[channel]]\nid = \"a\"\nurl = \"http://127.0.0.1:1\"\n",
            "t.toml".as_ref(),
        )
        .unwrap()
        .routing
    }

    fn totals(successes: u64, failures: u64) -> WindowTotals {
        WindowTotals {
            successes,
            declines: 0,
            failures,
            picks: 0,
        }
    }

    #[test]
    fn unmeasured_channel_gets_the_pooled_prior() {
        let mut c = cfg();
        assert_eq!(prior(0, 0, &c), 1.0);
        let pooled = prior(160, 200, &c);
        assert!((pooled - 0.8).abs() < 1e-9);
        assert_eq!(success_rate(WindowTotals::default(), pooled, &c), pooled);
        assert!((success_rate(totals(80, 20), 1.0, &c) - 100.0 / 120.0).abs() < 1e-9);
        c.prior_success_rate = Some(0.5);
        assert_eq!(prior(90, 100, &c), 0.5);
    }

    #[test]
    fn success_rate_outweighs_small_fee_differences() {
        let c = cfg();
        let reliable_but_dear = score(totals(990, 10), 0.95, Some(100.0), 60.0, 10_000, &c);
        let cheap_but_flaky = score(totals(900, 100), 0.95, Some(100.0), 30.0, 10_000, &c);
        assert!(reliable_but_dear > cheap_but_flaky);
    }

    #[test]
    fn fee_decides_between_equals_and_fixed_fee_weighs_on_small_amounts() {
        let c = cfg();
        let t = totals(1000, 0);
        assert!(score(t, 1.0, Some(50.0), 30.0, 10_000, &c) > score(t, 1.0, Some(50.0), 60.0, 10_000, &c));
        // 0.3 % vs 0.2 % + 10 fixed: the fixed fee loses on 10.00, wins on 1000.00.
        let pct = |a: u64| score(t, 1.0, None, a as f64 * 0.003, a, &c);
        let fixed = |a: u64| score(t, 1.0, None, a as f64 * 0.002 + 10.0, a, &c);
        assert!(pct(1_000) > fixed(1_000));
        assert!(fixed(100_000) > pct(100_000));
    }

    #[test]
    fn latency_costs_what_the_knob_says() {
        let c = cfg();
        let t = totals(1000, 0);
        let fast = score(t, 1.0, Some(10.0), 0.0, 10_000, &c);
        let slow = score(t, 1.0, Some(510.0), 0.0, 10_000, &c);
        assert!((fast - slow - 0.02 * 0.5).abs() < 1e-9);
    }
}
