//! Trade numbers: payroute's own id for a payment.
//!
//! The contract asks for an id unique across a fleet, at most 32 characters
//! of `[A-Za-z0-9]`. Instances share no counter (that would put a round trip
//! to Redis or the database in front of every payment), so the number is
//! made of the time and randomness instead: 8 base-62 digits of Unix
//! milliseconds, so numbers sort by creation and an operator can tell a
//! payment's age at a glance, then 14 random base-62 digits (83 bits), so
//! two instances minting numbers in the same millisecond collide with
//! probability about 2^-83 per pair. The journal's primary key is the last
//! word: a collision would be refused there, never merged.

use std::time::{SystemTime, UNIX_EPOCH};

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const TIME_DIGITS: usize = 8;
const RANDOM_DIGITS: usize = 14;
/// Length of every trade number payroute mints.
pub(crate) const LEN: usize = TIME_DIGITS + RANDOM_DIGITS;

/// A new trade number for a payment created now.
pub(crate) fn mint() -> String {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    mint_at(millis, &mut fastrand::Rng::new())
}

fn mint_at(millis: u64, rng: &mut fastrand::Rng) -> String {
    let mut out = [0u8; LEN];
    let mut t = millis;
    for slot in out[..TIME_DIGITS].iter_mut().rev() {
        *slot = ALPHABET[(t % 62) as usize];
        t /= 62;
    }
    for slot in &mut out[TIME_DIGITS..] {
        *slot = ALPHABET[rng.usize(..62)];
    }
    out.iter().map(|&b| b as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn numbers_are_short_alphanumeric_and_distinct() {
        let mut seen = HashSet::new();
        for _ in 0..10_000 {
            let n = mint();
            assert_eq!(n.len(), LEN);
            assert!(crate::journal::valid_trade_no(&n), "{n}");
            assert!(seen.insert(n), "a trade number repeated");
        }
    }

    #[test]
    fn numbers_sort_by_creation_time() {
        let mut rng = fastrand::Rng::with_seed(7);
        let a = mint_at(1_795_449_599_000, &mut rng);
        let b = mint_at(1_795_449_599_001, &mut rng);
        let c = mint_at(1_895_449_599_000, &mut rng);
        assert!(a[..TIME_DIGITS] < b[..TIME_DIGITS] && b[..TIME_DIGITS] < c[..TIME_DIGITS]);
    }
}
