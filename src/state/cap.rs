//! Channels' daily caps (`daily_cap`): an amount a channel may take per
//! day, shared by a fleet like merchants' daily limits.
//!
//! An attempt reserves the payment's amount on its channel before it is
//! sent; the hold is kept when the channel may have taken the money (paid,
//! pending, or an ambiguous attempt — a cap errs on the side of not being
//! passed) and released when it certainly did not (a decline, a refused
//! connection). The same check-and-add as a merchant's daily limit: under
//! one map entry's lock in memory, one Lua script in Redis. Every answer
//! carries the day's total, which the channel's live state keeps, so rank
//! skips a full channel without asking. The Lua scripts live with the
//! others in [`super::redis`].

use std::sync::Arc;

use redis::Script;

use super::redis::{Call, RedisStore};
use super::{StateError, Store};
use crate::limits::daily::Reservation;

/// A reservation to make against a channel's cap.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CapCheck<'a> {
    pub channel: &'a Arc<str>,
    pub day: i64,
    pub amount: u64,
    pub cap: u64,
    /// Unix seconds when this day ends (shared keys expire a day later).
    pub day_ends: i64,
}

/// An amount held against a channel's cap.
#[derive(Debug)]
pub(crate) enum CapHold {
    /// In this instance's ledger (memory backend, or Redis was down).
    Local(Reservation),
    Shared {
        key: String,
        amount: u64,
    },
}

/// The answer to a reservation: held, or the cap would be passed; with the
/// channel's total for the day either way.
#[derive(Debug)]
pub(crate) enum Capped {
    Held(CapHold, u64),
    Full(u64),
}

impl Store {
    pub async fn reserve_cap(&self, c: CapCheck<'_>) -> Result<Capped, StateError> {
        let Some(redis) = &self.shared else {
            return Ok(self.local.reserve_cap(c));
        };
        let key = redis.cap_key(c.channel, c.day);
        let call = Call::new()
            .key(key.clone())
            .arg(c.amount)
            .arg(c.cap)
            .arg(c.day_ends + 86_400);
        match redis.run_cap(&call, true).await {
            Ok((true, used)) => Ok(Capped::Held(CapHold::Shared { key, amount: c.amount }, used)),
            Ok((false, used)) => Ok(Capped::Full(used)),
            Err(e) => redis.fall_back(e).map(|()| self.local.reserve_cap(c)),
        }
    }

    /// Ends a hold: `keep` counts it for the day, else it is released.
    /// Returns the day's total after a release, when known.
    pub async fn end_cap(&self, hold: CapHold, keep: bool) -> Option<u64> {
        match hold {
            CapHold::Local(r) if keep => {
                r.commit();
                None
            }
            CapHold::Local(r) => Some(r.release()),
            CapHold::Shared { .. } if keep => None,
            CapHold::Shared { key, amount } => {
                let redis = self.shared.as_ref()?;
                let call = Call::new().key(key).arg(amount);
                // Lost to an outage, a release leaves the cap counting an
                // amount never taken: safe, and gone with the day.
                redis.run_cap(&call, false).await.ok().map(|(_, used)| used)
            }
        }
    }
}

impl super::Local {
    fn reserve_cap(&self, c: CapCheck<'_>) -> Capped {
        match self.caps.reserve(c.channel, c.day, c.amount, c.cap) {
            Ok(r) => Capped::Held(CapHold::Local(r), self.caps.used(c.channel, c.day)),
            Err(e) => Capped::Full(e.used),
        }
    }
}

impl RedisStore {
    fn cap_key(&self, channel: &str, day: i64) -> String {
        format!("{}cap:{{{channel}}}:{day}", self.prefix())
    }

    /// Runs the cap reserve script (`reserve`) or the release script: whether it held, and the total.
    async fn run_cap(&self, call: &Call, reserve: bool) -> Result<(bool, u64), StateError> {
        let script: &Script = if reserve {
            &self.scripts().cap_reserve
        } else {
            &self.scripts().cap_release
        };
        let reply = self.run(script, call).await?;
        let field = |i: usize| reply.get(i).map(Vec::as_slice).unwrap_or_default();
        let used = String::from_utf8_lossy(field(1)).parse::<i64>().unwrap_or(0).max(0) as u64;
        Ok((field(0) == b"ok", used))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn exactly_the_cap_under_concurrency(store: Arc<Store>, channel: &str) {
        let channel: Arc<str> = Arc::from(channel);
        let check = |amount| CapCheck {
            channel: &channel,
            day: 20_000,
            amount,
            cap: 1_000,
            day_ends: 4_102_444_800,
        };
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (store, channel) = (store.clone(), channel.clone());
                tokio::spawn(async move {
                    let c = CapCheck {
                        channel: &channel,
                        day: 20_000,
                        amount: 100,
                        cap: 1_000,
                        day_ends: 4_102_444_800,
                    };
                    match store.reserve_cap(c).await.unwrap() {
                        Capped::Held(hold, _) => {
                            store.end_cap(hold, true).await;
                            true
                        }
                        Capped::Full(used) => {
                            assert!(used + 100 > 1_000);
                            false
                        }
                    }
                })
            })
            .collect();
        let mut held = 0;
        for t in tasks {
            held += usize::from(t.await.unwrap());
        }
        assert_eq!(held, 10);
        // Full: a release of a hold brings room back, with the total.
        match store.reserve_cap(check(1)).await.unwrap() {
            Capped::Full(used) => assert_eq!(used, 1_000),
            other => panic!("{other:?}"),
        }
        let other: Arc<str> = Arc::from(format!("{channel}-other"));
        let c = CapCheck {
            channel: &other,
            ..check(400)
        };
        let Capped::Held(hold, used) = store.reserve_cap(c).await.unwrap() else {
            panic!("another channel has its own cap")
        };
        assert_eq!(used, 400);
        store.end_cap(hold, false).await;
        let Capped::Held(_, used) = store.reserve_cap(CapCheck { amount: 1_000, ..c }).await.unwrap() else {
            panic!("a released hold leaves room")
        };
        assert_eq!(used, 1_000);
    }

    #[tokio::test]
    async fn memory_caps_hold_exactly() {
        exactly_the_cap_under_concurrency(Arc::new(Store::memory(100)), "acq-a").await;
    }

    #[tokio::test]
    async fn redis_caps_hold_exactly_for_a_fleet() {
        // The Redis at 127.0.0.1:6379 (started by `.ci/run`), isolated by a random prefix.
        let prefix = format!("payroute-test-{}:", fastrand::u64(..));
        let text = format!(
            "[state]\nbackend = \"redis\"\nkey_prefix = \"{prefix}\"\n[[channel]]\nid = \"a\"\nurl = \"http://127.0.0.1:1\"\n"
        );
        let cfg = crate::config::Config::parse(&text, "t.toml".as_ref()).unwrap().state;
        let store = Arc::new(Store::redis(&cfg, &crate::metrics::Metrics::new()).await.unwrap());
        exactly_the_cap_under_concurrency(store, "acq-a").await;
    }
}
