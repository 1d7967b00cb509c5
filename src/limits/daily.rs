//! Daily amount limits with reservations.
//!
//! A payment reserves its amount before routing and holds a [`Reservation`].
//! Success commits it (the amount counts for the day); anything else — a
//! decline, every channel failing, a panic, a dropped connection — drops it,
//! and dropping releases the amount. Check-and-add happens under one map
//! entry's lock, so 20 concurrent payments against a limit that fits 10 admit
//! exactly 10. The map is sharded by merchant (DashMap): no global lock.
//!
//! This ledger is one instance's (the memory backend, and the Redis
//! backend's fallback while Redis is away). A fleet shares daily totals
//! through Redis (`state/redis.rs`), whose script does the same two
//! operations — reserve = atomic check-and-add on a (merchant, day) key,
//! release = subtract — in one round trip.

use std::sync::Arc;

use dashmap::DashMap;

/// Accepted (and reserved) totals per merchant for its current day.
#[derive(Debug, Default)]
pub(crate) struct DailyLedger {
    days: DashMap<Arc<str>, DayTotal>,
}

#[derive(Debug, Clone, Copy, Default)]
struct DayTotal {
    day: i64,
    total: u64,
}

/// The day's total plus this amount would exceed the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Exceeded {
    pub used: u64,
    pub limit: u64,
}

impl DailyLedger {
    pub fn reserve(
        self: &Arc<Self>,
        merchant: &Arc<str>,
        day: i64,
        amount: u64,
        limit: u64,
    ) -> Result<Reservation, Exceeded> {
        let mut entry = self.days.entry(merchant.clone()).or_default();
        if entry.day != day {
            *entry = DayTotal { day, total: 0 };
        }
        let after = entry.total.saturating_add(amount);
        if after > limit {
            return Err(Exceeded {
                used: entry.total,
                limit,
            });
        }
        entry.total = after;
        Ok(Reservation {
            ledger: self.clone(),
            merchant: merchant.clone(),
            day,
            amount,
            committed: false,
        })
    }

    /// The total of `key` (a merchant, a channel) for `day`, reserved and committed.
    pub fn used(&self, merchant: &str, day: i64) -> u64 {
        self.days.get(merchant).filter(|t| t.day == day).map_or(0, |t| t.total)
    }

    fn release(&self, merchant: &str, day: i64, amount: u64) {
        if let Some(mut t) = self.days.get_mut(merchant) {
            // A day that has rolled over already started from zero.
            if t.day == day {
                t.total = t.total.saturating_sub(amount);
            }
        }
    }

    /// Drops merchants whose last day is before `oldest_day`.
    pub fn housekeep(&self, oldest_day: i64) {
        self.days.retain(|_, t| t.day >= oldest_day);
    }
}

/// An amount held against a merchant's daily limit until committed or dropped.
#[derive(Debug)]
#[must_use = "dropping a reservation releases it"]
pub(crate) struct Reservation {
    ledger: Arc<DailyLedger>,
    merchant: Arc<str>,
    day: i64,
    amount: u64,
    committed: bool,
}

impl Reservation {
    /// The payment was accepted: the amount stays counted.
    pub fn commit(mut self) {
        self.committed = true;
    }

    /// Releases the amount now; returns the day's total after.
    pub fn release(self) -> u64 {
        let (ledger, key, day) = (self.ledger.clone(), self.merchant.clone(), self.day);
        drop(self);
        ledger.used(&key, day)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.committed {
            self.ledger.release(&self.merchant, self.day, self.amount);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_commit_release() {
        let ledger = Arc::new(DailyLedger::default());
        let m: Arc<str> = Arc::from("m");
        let a = ledger.reserve(&m, 1, 600, 1000).unwrap();
        assert_eq!(
            ledger.reserve(&m, 1, 500, 1000).unwrap_err(),
            Exceeded { used: 600, limit: 1000 }
        );
        drop(a);
        assert_eq!(ledger.used("m", 1), 0);
        ledger.reserve(&m, 1, 1000, 1000).unwrap().commit();
        assert_eq!(ledger.used("m", 1), 1000);
        // A new day starts from zero.
        assert!(ledger.reserve(&m, 2, 1000, 1000).is_ok());
    }

    #[test]
    fn concurrent_reservations_never_exceed() {
        let ledger = Arc::new(DailyLedger::default());
        let m: Arc<str> = Arc::from("m");
        let held: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..20)
                .map(|_| s.spawn(|| ledger.reserve(&m, 7, 100, 1000).ok()))
                .collect();
            handles.into_iter().filter_map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(held.len(), 10);
        assert_eq!(ledger.used("m", 7), 1000);
    }
}
