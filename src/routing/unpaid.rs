//! Routing by payment, not by creation: an epay channel's orders, followed
//! until they are paid or too old.
//!
//! An epay gateway answers `code: 1` for an order whether or not its buyer
//! can ever pay it (risk control, a broken cashier), so a created order
//! proves nothing about the channel. Its outcome arrives later, by
//! notification or the sweeper. So a created order counts neither way when
//! it is made; it is entered here, due `unpaid_after_ms` later, and then:
//!
//! - paid (whenever) → a success in the channel's window;
//! - still unpaid when due → a failure in the channel's window, at once.
//!
//! In steady state the window then holds one outcome per order and the
//! success rate is the share of orders paid; a gateway whose buyers cannot
//! pay starts losing traffic `unpaid_after_ms` after it stopped being paid.
//!
//! Orders are held as 64-bit hashes of their trade numbers (16 bytes in the
//! queue, about as much in the set), in a few shards so workers creating
//! orders on one channel rarely meet on a lock; at most [`MAX_OPEN`] are
//! followed per channel (beyond, the oldest is let go uncounted). What is
//! followed lives in this process only: after a restart, an order made
//! before it is counted when paid, never as unpaid.

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::{Mutex, MutexGuard, PoisonError};

const SHARDS: usize = 8;
/// Orders followed per channel, at most.
pub(crate) const MAX_OPEN: usize = 1 << 20;

#[derive(Default)]
struct Shard {
    /// (due, order) in creation order; due times ascend unless
    /// `unpaid_after_ms` shrank in a reload, which only delays a few counts.
    due: VecDeque<(i64, u64)>,
    /// Orders created and neither paid nor counted unpaid yet.
    open: HashSet<u64, BuildHasherDefault<IdentityHasher>>,
}

/// One channel's created orders that are not paid yet.
#[derive(Default)]
pub(crate) struct Unpaid {
    shards: [Mutex<Shard>; SHARDS],
}

impl Unpaid {
    fn key(trade_no: &str) -> u64 {
        // Trade numbers are payroute's own (time + randomness): a fixed-key
        // hash is enough, nobody else chooses them.
        BuildHasherDefault::<DefaultHasher>::default().hash_one(trade_no)
    }

    fn shard(&self, key: u64) -> MutexGuard<'_, Shard> {
        self.shards[(key >> 59) as usize % SHARDS]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Follows the order `trade_no`, due at `due_ms` (Unix ms).
    pub fn created(&self, trade_no: &str, due_ms: i64) {
        let key = Unpaid::key(trade_no);
        let mut shard = self.shard(key);
        if shard.open.len() >= MAX_OPEN / SHARDS {
            if let Some((_, oldest)) = shard.due.pop_front() {
                shard.open.remove(&oldest);
            }
        }
        if shard.open.insert(key) {
            shard.due.push_back((due_ms, key));
        }
    }

    /// The order was paid: not followed any more. `true` if it was followed
    /// (created here and not yet counted unpaid).
    pub fn paid(&self, trade_no: &str) -> bool {
        let key = Unpaid::key(trade_no);
        self.shard(key).open.remove(&key)
    }

    /// Lets go of every order due by `now_ms`; returns how many of them
    /// were still unpaid.
    pub fn expire(&self, now_ms: i64) -> u64 {
        let mut unpaid = 0;
        for shard in &self.shards {
            let mut guard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            let shard = &mut *guard;
            while shard.due.front().is_some_and(|&(due, _)| due <= now_ms) {
                if let Some((_, key)) = shard.due.pop_front() {
                    unpaid += u64::from(shard.open.remove(&key));
                }
            }
            if shard.due.capacity() > 64 && shard.due.len() < shard.due.capacity() / 4 {
                shard.due.shrink_to(shard.due.len() * 2);
                let keep = shard.open.len() * 2;
                shard.open.shrink_to(keep);
            }
        }
        unpaid
    }

    /// Orders followed now.
    #[cfg(test)]
    pub fn open(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).open.len())
            .sum()
    }
}

/// The keys are hashes already.
#[derive(Default)]
struct IdentityHasher(u64);

impl std::hash::Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_paid_in_time_never_count_unpaid() {
        let u = Unpaid::default();
        for i in 0..100 {
            u.created(&format!("T{i}"), 1_000 + i);
        }
        assert_eq!(u.open(), 100);
        for i in 0..60 {
            assert!(u.paid(&format!("T{i}")));
        }
        assert!(!u.paid("T0"), "paid once");
        assert!(!u.paid("never-created"));
        assert_eq!(u.expire(999), 0, "nothing due yet");
        assert_eq!(u.expire(1_049), 0, "the first 50 were paid");
        assert_eq!(u.expire(1_099), 40);
        assert_eq!(u.open(), 0);
        assert!(
            !u.paid("T99"),
            "counted unpaid already: a late payment is counted by the caller alone"
        );
    }

    #[test]
    fn a_repeated_order_is_followed_once() {
        let u = Unpaid::default();
        u.created("T1", 10);
        u.created("T1", 10);
        assert_eq!(u.expire(10), 1);
    }
}
