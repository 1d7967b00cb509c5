//! The simulated world: when payments arrive, how large they are, and how
//! each attempt at a channel ends.
//!
//! Common random numbers: an attempt's luck is a pure function of the
//! seed, the payment's number and the channel ([`luck`]), never of the
//! policy or of what happened before. Two policies that send payment 7 to
//! channel 2 see the same outcome and latency, so the difference between
//! their tables is their choices, not their dice — which is what makes a
//! regret of a fraction of a percent measurable with a few thousand
//! payments.

use super::scenario::{Behaviour, Simulation};

/// One payment of the stream every policy faces.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Arrival {
    /// Virtual time, ms from the scenario's start.
    pub t_ms: u64,
    pub amount: u64,
}

/// The payment stream: Poisson arrivals spread over the scenario's
/// duration, amounts log-uniform in `[amount_min, amount_max]`.
pub(crate) fn arrivals(sim: &Simulation, payments: u64, seed: u64) -> Vec<Arrival> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mean_gap = sim.duration_ms as f64 / payments as f64;
    let (lo, hi) = ((sim.amount_min as f64).ln(), (sim.amount_max as f64).ln());
    let mut t = 0.0f64;
    let mut out = Vec::with_capacity(payments as usize);
    for _ in 0..payments {
        // Exponential gaps (1 − u avoids ln 0); clamped so a long tail of
        // gaps cannot push payments past the end.
        t += -mean_gap * (1.0 - rng.f64()).ln();
        let t_ms = (t as u64).min(sim.duration_ms - 1);
        let amount = if sim.amount_min == sim.amount_max {
            sim.amount_min
        } else {
            ((lo + (hi - lo) * rng.f64()).exp().round() as u64).clamp(sim.amount_min, sim.amount_max)
        };
        out.push(Arrival { t_ms, amount });
    }
    out
}

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    Paid,
    Declined,
    /// A 5xx answer: failed over when `failover_on` has "5xx".
    Failed5xx,
    /// No answer within the channel's `timeout_ms`.
    TimedOut,
}

/// An attempt's outcome and how long it took.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attempt {
    pub ending: Ending,
    pub latency_ms: u64,
}

/// Three uniforms in [0, 1) for payment `payment` at channel `channel`:
/// outcome, failure kind, latency (splitmix64 over the three inputs).
pub(crate) fn luck(seed: u64, payment: u64, channel: usize) -> [f64; 3] {
    let mut state =
        seed ^ payment.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (channel as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    };
    [next(), next(), next()]
}

/// The attempt a channel behaving as `b` gives with `luck`.
pub(crate) fn attempt(b: &Behaviour, luck: [f64; 3], timeout_ms: u64) -> Attempt {
    let [u, kind, lat] = luck;
    let answered = (b.latency_ms * (1.0 - b.latency_jitter + 2.0 * b.latency_jitter * lat)).round() as u64;
    let failure_below = b.success_rate + (1.0 - b.success_rate) * b.failure_share;
    let ending = if u < b.success_rate {
        Ending::Paid
    } else if u < failure_below {
        if kind < b.timeout_share {
            Ending::TimedOut
        } else {
            Ending::Failed5xx
        }
    } else {
        Ending::Declined
    };
    let latency_ms = match ending {
        Ending::TimedOut => timeout_ms,
        // An answer slower than the timeout would have been a timeout.
        _ => answered.min(timeout_ms),
    };
    Attempt { ending, latency_ms }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luck_is_a_function_of_its_inputs_only() {
        assert_eq!(luck(1, 7, 2), luck(1, 7, 2));
        assert_ne!(luck(1, 7, 2), luck(1, 7, 3));
        assert_ne!(luck(1, 7, 2), luck(1, 8, 2));
        assert_ne!(luck(1, 7, 2), luck(2, 7, 2));
        // Roughly uniform: the mean of many draws is near 1/2.
        let mean = (0..10_000).map(|i| luck(3, i, 0)[0]).sum::<f64>() / 10_000.0;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
    }

    #[test]
    fn outcomes_follow_the_behaviour() {
        let b = Behaviour {
            success_rate: 0.9,
            failure_share: 0.5,
            timeout_share: 1.0,
            latency_ms: 100.0,
            latency_jitter: 0.0,
        };
        assert_eq!(attempt(&b, [0.5, 0.0, 0.0], 3000).ending, Ending::Paid);
        assert_eq!(attempt(&b, [0.5, 0.0, 0.0], 3000).latency_ms, 100);
        let t = attempt(&b, [0.92, 0.5, 0.0], 3000);
        assert_eq!((t.ending, t.latency_ms), (Ending::TimedOut, 3000));
        assert_eq!(attempt(&b, [0.97, 0.5, 0.0], 3000).ending, Ending::Declined);
    }
}
