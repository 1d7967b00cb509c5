//! Payment state: rate buckets, daily totals, idempotency records and
//! order→channel memory — local to one instance or shared by a fleet.
//!
//! "Never twice" and the merchant limits rest on facts that must survive
//! between requests, and in a fleet between instances. [`Store`] is the one
//! interface to them, with three operations shaped by the payment's path:
//!
//! - [`Store::admit`], before routing: rate check, claim of the idempotency
//!   key (or the stored answer of a repeat), daily reservation — in this order,
//!   atomically, as one Redis script: one round trip on the critical path.
//! - [`Store::settle`], after the answer: keep the answer (or forget a key
//!   that reached no acquirer), commit or release the reservation, remember
//!   the order's channel — one round trip again.
//! - [`Store::followup`]: rate check and the order's channel.
//!
//! The memory backend ([`memory`]) serves one instance; the Redis backend
//! ([`redis`]) a fleet, with the memory one as its fallback when Redis is
//! down and `on_unavailable = "fail_open"`. The operations are the ones Redis
//! does atomically (SET NX with expiry, compare-and-set on the fingerprint,
//! INCRBY with a check), so both backends behave alike; one behaviour suite
//! below runs against both.

mod cap;
mod memory;
mod redis;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::config::{OnUnavailable, StateConfig};
use crate::limits::daily::{DailyLedger, Reservation};
use crate::limits::rate::Limiter;
use crate::metrics::Metrics;
pub(crate) use cap::{CapCheck, CapHold, Capped};
use memory::MemoryStore;
use redis::RedisStore;

/// What is kept of a finished payment, to answer a repeat with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredResponse {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Bytes,
    /// The channel that gave the final answer, if any.
    pub channel: Option<Arc<str>>,
    pub attempts: u32,
    /// Channels with an unresolved ambiguous attempt (`X-Payroute-Ambiguous`).
    pub ambiguous: Option<String>,
    /// The `outcome` label of the original request.
    pub outcome: String,
    /// The payment's trade number (`X-Payroute-Trade-No`), when it got one.
    pub trade_no: Option<String>,
    /// The size of the answer's body when it was too large to keep
    /// (`max_answer_bytes`): `body` is then empty and a replay says so
    /// (`X-Payroute-Body-Omitted`); 0: the body is kept whole.
    pub body_omitted: u32,
}

/// `memory_max_bytes` when a store is made without a config (tests).
#[cfg(test)]
pub(crate) const DEFAULT_MEMORY_MAX_BYTES: usize = 64 << 20;

/// A payment asking to start: everything `admit` checks for it.
pub(crate) struct Admission<'a> {
    pub merchant: &'a Arc<str>,
    /// The instance-local limiter (memory backend and fail-open fallback);
    /// `None`: the request's rate was counted already (a follow-up looked
    /// its order up first), so no rate is checked.
    pub limiter: Option<&'a Limiter>,
    pub rate_per_sec: u32,
    pub burst: u32,
    /// The idempotency key, unscoped (the store scopes it to the merchant).
    pub key: &'a str,
    pub fingerprint: [u8; 32],
    pub ttl: Duration,
    pub daily: Option<DailyCheck>,
}

/// A daily-limit reservation to make.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DailyCheck {
    pub day: i64,
    pub amount: u64,
    pub limit: u64,
    /// Unix seconds when this day ends (shared keys expire a day later).
    pub day_ends: i64,
}

/// The answer to "may this payment start?".
#[derive(Debug)]
pub(crate) enum Admit {
    RateLimited(Duration),
    /// Another request with this key is still running.
    InFlight,
    /// The key exists with another body.
    Reused,
    /// The key finished before: replay this.
    Finished(StoredResponse),
    DailyExceeded {
        used: u64,
        limit: u64,
    },
    /// The key is new: this request owns it until `settle`.
    Started(Claim),
}

/// What an admitted payment holds until it settles: its idempotency key,
/// marked in flight in the store, and its daily reservation, here or in
/// Redis.
#[derive(Debug)]
pub(crate) struct Claim {
    daily: DailyClaim,
}

#[derive(Debug)]
enum DailyClaim {
    None,
    /// In this instance's ledger; released on drop.
    Local(Reservation),
    /// In Redis: the day key's amount, released by `settle`.
    Shared {
        day: i64,
        amount: u64,
    },
}

/// How a payment ended, for `settle` to record.
pub(crate) struct Settlement<'a> {
    pub merchant: &'a str,
    pub key: &'a str,
    pub fingerprint: [u8; 32],
    pub ttl: Duration,
    /// The answer to keep for repeats; `None`: no acquirer saw the payment,
    /// forget the key so the merchant may retry.
    pub answer: Option<StoredResponse>,
    /// The payment succeeded: its reservation counts for the day.
    pub accepted: bool,
    /// The order and the channel that answered it, for follow-ups.
    pub order: Option<(&'a str, &'a Arc<str>)>,
}

/// The answer to "where does this follow-up go?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Followup {
    /// The channel that served the order.
    Channel(Arc<str>),
    /// This merchant has no order by that id (or it was forgotten).
    UnknownOrder,
    /// The merchant is over its rate: retry after this long.
    RateLimited(Duration),
}

/// The shared state could not be reached.
#[derive(Debug, Clone, thiserror::Error)]
#[error("shared state unavailable: {0}")]
pub(crate) struct StateError(pub String);

/// Instance-local state: the memory backend, and Redis's fallback.
pub(crate) struct Local {
    records: MemoryStore,
    ledger: Arc<DailyLedger>,
    /// Channels' daily caps, keyed by channel id.
    caps: Arc<DailyLedger>,
}

impl Local {
    fn new(max_records: usize, max_bytes: usize) -> Local {
        Local {
            records: MemoryStore::new(max_records, max_bytes),
            ledger: Arc::new(DailyLedger::default()),
            caps: Arc::new(DailyLedger::default()),
        }
    }

    fn admit(&self, g: &Admission<'_>) -> Admit {
        if let Some(Err(wait)) = g.limiter.map(|l| l.check(g.merchant)) {
            return Admit::RateLimited(wait);
        }
        match self.records.begin(g.merchant, g.key, g.fingerprint, g.ttl) {
            memory::Begin::Started => {}
            memory::Begin::InFlight => return Admit::InFlight,
            memory::Begin::Reused => return Admit::Reused,
            memory::Begin::Finished(r) => return Admit::Finished(r),
        }
        let daily = match g.daily {
            None => DailyClaim::None,
            Some(d) => match self.ledger.reserve(g.merchant, d.day, d.amount, d.limit) {
                Ok(r) => DailyClaim::Local(r),
                Err(e) => {
                    self.records.abandon(g.merchant, g.key, g.fingerprint);
                    return Admit::DailyExceeded {
                        used: e.used,
                        limit: e.limit,
                    };
                }
            },
        };
        Admit::Started(Claim { daily })
    }

    fn settle(&self, claim: Claim, s: Settlement<'_>) {
        // One call: when the order id is the key, answer and order share an entry.
        self.records.settle(
            s.merchant,
            s.key,
            s.fingerprint,
            s.answer.as_ref(),
            s.order.map(|(order_id, channel)| (order_id, &**channel)),
            s.ttl,
        );
        if let (DailyClaim::Local(r), true) = (claim.daily, s.accepted) {
            r.commit();
        }
    }

    fn followup(&self, merchant: &Arc<str>, limiter: &Limiter, order_id: &str) -> Followup {
        if let Err(wait) = limiter.check(merchant) {
            return Followup::RateLimited(wait);
        }
        match self.records.order_channel(merchant, order_id) {
            Some(channel) => Followup::Channel(channel),
            None => Followup::UnknownOrder,
        }
    }

    pub fn housekeep(&self) {
        // Two days back covers every day-cut offset.
        let oldest = crate::config::DayCut::default().today() - 2;
        self.ledger.housekeep(oldest);
        self.caps.housekeep(oldest);
    }
}

/// The state backend in use.
pub(crate) struct Store {
    local: Local,
    shared: Option<RedisStore>,
}

impl Store {
    #[cfg(test)]
    pub fn memory(max_records: usize) -> Store {
        Store {
            local: Local::new(max_records, DEFAULT_MEMORY_MAX_BYTES),
            shared: None,
        }
    }

    /// The memory backend as `[state]` sizes it.
    pub fn memory_for(cfg: &StateConfig) -> Store {
        Store {
            local: Local::new(cfg.memory_max_records, cfg.memory_max_bytes),
            shared: None,
        }
    }

    /// Connects to Redis (failing fast if it does not answer).
    pub async fn redis(cfg: &StateConfig, metrics: &Metrics) -> Result<Store, StateError> {
        Ok(Store {
            local: Local::new(cfg.memory_max_records, cfg.memory_max_bytes),
            shared: Some(RedisStore::connect(cfg, metrics).await?),
        })
    }

    /// Whether the state this instance depends on answers (for `/-/ready`).
    pub fn ready(&self) -> bool {
        self.shared
            .as_ref()
            .is_none_or(|r| r.up() || r.on_unavailable() == OnUnavailable::FailOpen)
    }

    pub fn local(&self) -> &Local {
        &self.local
    }

    pub async fn admit(&self, admission: Admission<'_>) -> Result<Admit, StateError> {
        match &self.shared {
            None => Ok(self.local.admit(&admission)),
            Some(redis) => match redis.admit(&admission).await {
                Ok(admit) => Ok(admit),
                Err(e) => redis.fall_back(e).map(|()| self.local.admit(&admission)),
            },
        }
    }

    pub async fn settle(&self, claim: Claim, s: Settlement<'_>) -> Result<(), StateError> {
        match (&self.shared, &claim.daily) {
            // Admitted locally (memory backend, or Redis was down): settle locally.
            (None, _) | (Some(_), DailyClaim::Local(_)) => {
                self.local.settle(claim, s);
                Ok(())
            }
            (Some(redis), _) => redis.settle(claim, s).await,
        }
    }

    /// Rate check and the channel that served `order_id`.
    pub async fn followup(
        &self,
        merchant: &Arc<str>,
        limiter: &Limiter,
        rate: (u32, u32),
        order_id: &str,
    ) -> Result<Followup, StateError> {
        match &self.shared {
            None => Ok(self.local.followup(merchant, limiter, order_id)),
            Some(redis) => match redis.followup(merchant, rate, order_id).await {
                Ok(r) => Ok(r),
                Err(e) => redis
                    .fall_back(e)
                    .map(|()| self.local.followup(merchant, limiter, order_id)),
            },
        }
    }
}

/// One behaviour suite, run against both backends.
#[cfg(test)]
pub(crate) mod suite {
    use super::*;
    use crate::limits::rate::RateLimits;

    pub(crate) fn answer(status: u16) -> StoredResponse {
        StoredResponse {
            status,
            content_type: Some("application/json".into()),
            body: Bytes::from_static(b"{\"ok\":true}\x00\xff"),
            channel: Some(Arc::from("acq-a")),
            attempts: 2,
            ambiguous: Some("acq-b".into()),
            outcome: "success".into(),
            trade_no: Some("0RzA1b2C3d4E5f6G7h8I9j".into()),
            // Round-trips like every part (a real answer without its body has an empty one).
            body_omitted: 1_048_576,
        }
    }

    fn admission<'a>(
        merchant: &'a Arc<str>,
        limiter: &'a Limiter,
        key: &'a str,
        fp: u8,
        daily: Option<DailyCheck>,
    ) -> Admission<'a> {
        Admission {
            merchant,
            limiter: Some(limiter),
            rate_per_sec: 1_000,
            burst: 1_000,
            key,
            fingerprint: [fp; 32],
            ttl: Duration::from_secs(60),
            daily,
        }
    }

    fn settle<'a>(merchant: &'a str, key: &'a str, answer: Option<StoredResponse>, accepted: bool) -> Settlement<'a> {
        Settlement {
            merchant,
            key,
            fingerprint: [1; 32],
            ttl: Duration::from_secs(60),
            answer,
            accepted,
            order: None,
        }
    }

    /// The behaviour both backends must show. `merchant` must be fresh per run.
    pub(crate) async fn run(store: &Store, merchant: &str) {
        let m: Arc<str> = Arc::from(merchant);
        let limiter = RateLimits::default().limiter(1_000, 1_000, None);
        let day = DailyCheck {
            day: 20_000,
            amount: 600,
            limit: 1_000,
            day_ends: 2_000_000_000,
        };

        // First writer owns the key; repeats see it in flight; another body is a reuse.
        let Admit::Started(claim) = store.admit(admission(&m, &limiter, "k1", 1, Some(day))).await.unwrap() else {
            panic!("a new key starts")
        };
        assert!(matches!(
            store.admit(admission(&m, &limiter, "k1", 1, None)).await.unwrap(),
            Admit::InFlight
        ));
        assert!(matches!(
            store.admit(admission(&m, &limiter, "k1", 2, None)).await.unwrap(),
            Admit::Reused
        ));
        // The reservation holds: 600 + 600 > 1000.
        match store.admit(admission(&m, &limiter, "k2", 1, Some(day))).await.unwrap() {
            Admit::DailyExceeded { used, limit } => assert_eq!((used, limit), (600, 1_000)),
            other => panic!("expected DailyExceeded, got {other:?}"),
        }
        // k2 was refused: it stored nothing and may start later.
        store
            .settle(claim, settle(merchant, "k1", Some(answer(201)), true))
            .await
            .unwrap();
        match store.admit(admission(&m, &limiter, "k1", 1, Some(day))).await.unwrap() {
            Admit::Finished(r) => assert_eq!(r, answer(201)),
            other => panic!("expected a replay, got {other:?}"),
        }
        assert!(matches!(
            store.admit(admission(&m, &limiter, "k1", 2, None)).await.unwrap(),
            Admit::Reused
        ));

        // A payment that reached no acquirer is forgotten and its reservation released.
        let small = DailyCheck { amount: 400, ..day };
        let Admit::Started(claim) = store
            .admit(admission(&m, &limiter, "k2", 1, Some(small)))
            .await
            .unwrap()
        else {
            panic!("k2 starts")
        };
        store.settle(claim, settle(merchant, "k2", None, false)).await.unwrap();
        let Admit::Started(claim) = store
            .admit(admission(&m, &limiter, "k2", 1, Some(small)))
            .await
            .unwrap()
        else {
            panic!("an abandoned key starts again, and the released 400 fits again")
        };
        store
            .settle(claim, settle(merchant, "k2", Some(answer(402)), false))
            .await
            .unwrap();
        // The decline released its reservation: 600 used, 400 more fits.
        let Admit::Started(claim) = store
            .admit(admission(&m, &limiter, "k3", 1, Some(small)))
            .await
            .unwrap()
        else {
            panic!("declined amount was released")
        };
        let channel: Arc<str> = Arc::from("acq-b");
        let mut s = settle(merchant, "k3", Some(answer(200)), true);
        s.order = Some(("order-9", &channel));
        store.settle(claim, s).await.unwrap();

        // Without an Idempotency-Key the key is the order id: answer and order together.
        let Admit::Started(claim) = store.admit(admission(&m, &limiter, "order-10", 1, None)).await.unwrap() else {
            panic!("order-10 starts")
        };
        let mut s = settle(merchant, "order-10", Some(answer(200)), true);
        s.order = Some(("order-10", &channel));
        store.settle(claim, s).await.unwrap();
        match store.admit(admission(&m, &limiter, "order-10", 1, None)).await.unwrap() {
            Admit::Finished(r) => assert_eq!(r, answer(200)),
            other => panic!("expected a replay, got {other:?}"),
        }

        // Orders remember their channel, per merchant.
        let followup = store.followup(&m, &limiter, (1_000, 1_000), "order-9").await.unwrap();
        assert_eq!(followup, Followup::Channel(channel.clone()));
        let followup = store.followup(&m, &limiter, (1_000, 1_000), "order-10").await.unwrap();
        assert_eq!(followup, Followup::Channel(channel.clone()));
        let other: Arc<str> = Arc::from(format!("{merchant}-other"));
        assert_eq!(
            store
                .followup(&other, &limiter, (1_000, 1_000), "order-9")
                .await
                .unwrap(),
            Followup::UnknownOrder
        );

        // Rate: a burst of 3 at 1/s admits 3 and gives a wait for the 4th.
        let tight = RateLimits::default().limiter(1, 3, None);
        let mut g = admission(&m, &tight, "", 1, None);
        g.rate_per_sec = 1;
        g.burst = 3;
        for i in 0..3 {
            let key = format!("r{i}");
            assert!(
                matches!(
                    store.admit(Admission { key: &key, ..g }).await.unwrap(),
                    Admit::Started(_)
                ),
                "burst {i}"
            );
        }
        match store.admit(Admission { key: "r3", ..g }).await.unwrap() {
            Admit::RateLimited(wait) => assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1), "{wait:?}"),
            other => panic!("expected RateLimited, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn memory_backend() {
        run(&Store::memory(1_000), "m-suite").await;
    }
}
