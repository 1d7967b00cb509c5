//! Per-merchant request rate: a GCRA token bucket per merchant (governor).
//!
//! Merchants are grouped by quota (rate, burst): one keyed limiter per
//! distinct quota, keyed by merchant id. Plans are few, merchants many, so a
//! million merchants on five plans is five limiters, and a limiter's memory
//! grows with the merchants that are *active*, not configured (idle keys are
//! dropped by [`RateLimits::housekeep`]). A reload reuses the limiter of an
//! unchanged quota, so merchants keep their bucket state across reloads; a
//! merchant whose quota changes starts with a full bucket on the new plan.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

type Keyed = DefaultKeyedRateLimiter<Arc<str>>;

/// One quota's limiter, shared by all merchants on that quota.
#[derive(Clone)]
pub(crate) struct Limiter(Arc<Keyed>);

impl Limiter {
    /// Takes one token for `merchant`, or says how long until one is free.
    pub fn check(&self, merchant: &Arc<str>) -> Result<(), Duration> {
        self.0
            .check_key(merchant)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

/// All limiters of one config version, by quota.
#[derive(Clone, Default)]
pub(crate) struct RateLimits {
    by_quota: HashMap<(u32, u32), Limiter>,
}

impl RateLimits {
    /// The limiter for a quota, reusing `previous`'s when it has one.
    pub fn limiter(&mut self, rate_per_sec: u32, burst: u32, previous: Option<&RateLimits>) -> Limiter {
        let key = (rate_per_sec, burst);
        if let Some(l) = self.by_quota.get(&key) {
            return l.clone();
        }
        let limiter = previous
            .and_then(|p| p.by_quota.get(&key).cloned())
            .unwrap_or_else(|| Limiter(Arc::new(Keyed::keyed(quota(rate_per_sec, burst)))));
        self.by_quota.insert(key, limiter.clone());
        limiter
    }

    /// Forgets merchants whose bucket is full again; returns the keys kept.
    pub fn housekeep(&self) -> usize {
        self.by_quota
            .values()
            .map(|l| {
                l.0.retain_recent();
                l.0.shrink_to_fit();
                l.0.len()
            })
            .sum()
    }
}

fn quota(rate_per_sec: u32, burst: u32) -> Quota {
    let period = Duration::from_nanos(1_000_000_000 / u64::from(rate_per_sec.max(1)));
    Quota::with_period(period.max(Duration::from_nanos(1)))
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refusal_with_wait() {
        let mut limits = RateLimits::default();
        let l = limits.limiter(2, 3, None);
        let m: Arc<str> = Arc::from("m-1");
        for _ in 0..3 {
            assert_eq!(l.check(&m), Ok(()));
        }
        let wait = l.check(&m).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(500), "{wait:?}");
        // Another merchant on the same plan has its own bucket.
        assert_eq!(l.check(&Arc::from("m-2")), Ok(()));
    }

    #[test]
    fn reload_keeps_state_of_unchanged_quota() {
        let mut first = RateLimits::default();
        let l = first.limiter(1, 1, None);
        let m: Arc<str> = Arc::from("m");
        assert!(l.check(&m).is_ok());
        let mut second = RateLimits::default();
        assert!(
            second.limiter(1, 1, Some(&first)).check(&m).is_err(),
            "bucket state carried over"
        );
        assert!(
            second.limiter(1, 2, Some(&first)).check(&m).is_ok(),
            "new quota, fresh bucket"
        );
        assert_eq!(second.by_quota.len(), 2);
    }
}
