//! A simulated payment's fate: every random choice about it (hang, delay,
//! outcome, and what happens to its notification), drawn at once when it
//! arrives.
//!
//! Drawing everything up front, under one lock acquisition when seeded, is
//! what makes a seeded run reproducible: payments sent one after the other
//! get the same fates whatever the timing of their sleeps and notification
//! tasks. Unseeded, a fresh generator is forked from fastrand's thread-local
//! one per payment, so the load tests' path takes no lock.
//!
//! An epay gateway's order has the same shape of fate, drawn in its own
//! order (see [`Fate::draw`]): refused at once, or created and then paid by
//! its buyer or never.
//!
//! The dice themselves belong to the answer plan ([`crate::answer::Dice`]):
//! a rule's seed is set, and re-set, with its behaviour, so the rule owns
//! its generator. This module only turns a behaviour and the dice it is
//! handed into a fate; it reads `answer`, and `answer` knows nothing of it.

use crate::answer::{Behavior, Dice, EpayGateway, Protocol};

/// How a payment is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Paid,
    /// Declined or failed, as `fail_status` says.
    Refused,
    /// `"processing"` now (epay: created, awaiting its buyer); `paid` says
    /// how it will be decided.
    Pending {
        paid: bool,
    },
}

/// What happens to a pending payment's notification.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Faults {
    pub lost: bool,
    pub repeated: bool,
    pub forged: bool,
    pub wrong_amount: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fate {
    pub hang: bool,
    pub delay_ms: u64,
    pub outcome: Outcome,
    pub faults: Faults,
}

impl Fate {
    /// The JSON API draws hang, pending, paid, the notification faults of a
    /// pending payment, jitter. An epay gateway draws hang, refused
    /// (`refuse_rate`), paid (`success_rate`: its buyer pays), forged (any
    /// created order, paid or not: a forger does not wait for a buyer), the
    /// other faults of a paid order (only payments are announced), jitter.
    pub fn draw(b: &Behavior, dice: &Dice) -> Fate {
        match &b.protocol {
            Protocol::Json => dice.roll(|rng| Fate::draw_with(b, rng)),
            Protocol::Epay(gateway) => dice.roll(|rng| Fate::draw_epay(b, gateway, rng)),
        }
    }

    /// A rate of 0 or 1 draws nothing, so the sequence of draws (and thus a
    /// seeded run) depends only on the behaviour, never on earlier results
    /// beyond what the behaviour says.
    fn draw_with(b: &Behavior, rng: &mut fastrand::Rng) -> Fate {
        let mut chance = |rate: f64| rate >= 1.0 || (rate > 0.0 && rng.f64() < rate);
        if chance(b.hang_rate) {
            return Fate {
                hang: true,
                delay_ms: 0,
                outcome: Outcome::Refused,
                faults: Faults::default(),
            };
        }
        let pending = chance(b.pending_rate);
        let paid = chance(b.success_rate);
        let faults = if pending {
            Faults {
                lost: chance(b.notify_loss),
                repeated: chance(b.notify_repeat),
                forged: chance(b.notify_forge),
                wrong_amount: chance(b.notify_wrong_amount),
            }
        } else {
            Faults::default()
        };
        let jitter = match b.jitter_ms {
            0 => 0,
            j => rng.u64(0..=j),
        };
        Fate {
            hang: false,
            delay_ms: b.latency_ms.saturating_add(jitter),
            outcome: match (pending, paid) {
                (true, paid) => Outcome::Pending { paid },
                (false, true) => Outcome::Paid,
                (false, false) => Outcome::Refused,
            },
            faults,
        }
    }

    fn draw_epay(b: &Behavior, g: &EpayGateway, rng: &mut fastrand::Rng) -> Fate {
        let mut chance = |rate: f64| rate >= 1.0 || (rate > 0.0 && rng.f64() < rate);
        if chance(b.hang_rate) {
            return Fate {
                hang: true,
                delay_ms: 0,
                outcome: Outcome::Refused,
                faults: Faults::default(),
            };
        }
        let refused = chance(g.refuse_rate);
        let (outcome, faults) = if refused {
            (Outcome::Refused, Faults::default())
        } else {
            let paid = chance(b.success_rate);
            let forged = chance(b.notify_forge);
            let faults = if paid {
                Faults {
                    lost: chance(b.notify_loss),
                    repeated: chance(b.notify_repeat),
                    forged,
                    wrong_amount: chance(b.notify_wrong_amount),
                }
            } else {
                Faults {
                    forged,
                    ..Faults::default()
                }
            };
            (Outcome::Pending { paid }, faults)
        };
        let jitter = match b.jitter_ms {
            0 => 0,
            j => rng.u64(0..=j),
        };
        Fate {
            hang: false,
            delay_ms: b.latency_ms.saturating_add(jitter),
            outcome,
            faults,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fates(b: &Behavior, n: usize) -> Vec<Fate> {
        let dice = Dice::seeded(b.seed.unwrap_or(0));
        (0..n).map(|_| Fate::draw(b, &dice)).collect()
    }

    #[test]
    fn seeded_fates_repeat_and_rates_hold() {
        let b = Behavior {
            success_rate: 0.5,
            jitter_ms: 10,
            pending_rate: 0.5,
            notify_loss: 0.3,
            ..Behavior::default()
        }
        .with_seed(42);
        let first = fates(&b, 1000);
        assert_eq!(first, fates(&b, 1000), "same seed, same fates");
        assert_ne!(first, fates(&b.clone().with_seed(43), 1000));
        let pending = first
            .iter()
            .filter(|f| matches!(f.outcome, Outcome::Pending { .. }))
            .count();
        assert!((400..600).contains(&pending), "{pending} of 1000 pending at 0.5");
        let lost = first.iter().filter(|f| f.faults.lost).count();
        assert!(lost > 0 && lost < pending, "{lost} lost of {pending}");
        assert!(first.iter().all(|f| !f.hang && f.delay_ms <= 10));
        // Faults are only drawn for pending payments.
        assert!(first
            .iter()
            .filter(|f| !matches!(f.outcome, Outcome::Pending { .. }))
            .all(|f| f.faults == Faults::default()));
    }

    #[test]
    fn certain_rates_need_no_dice() {
        let b = Behavior {
            pending_rate: 1.0,
            notify_repeat: 1.0,
            ..Behavior::default()
        };
        let f = Fate::draw(&b, &Dice::Thread);
        assert_eq!(f.outcome, Outcome::Pending { paid: true });
        assert!(f.faults.repeated && !f.faults.lost && !f.faults.forged);
        let hang = Behavior {
            hang_rate: 1.0,
            ..Behavior::default()
        };
        assert!(Fate::draw(&hang, &Dice::Thread).hang);
    }
}
