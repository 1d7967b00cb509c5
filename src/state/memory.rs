//! The in-memory state backend: one instance, bounded memory.
//!
//! Two [`TtlMap`]s (idempotency records, order→channel). Each is split into
//! shards with a mutex apiece, so payments with different keys rarely meet
//! and never wait on one global lock. Records expire after their TTL; when a
//! shard is over its share of `memory_max_records`, expired records go first,
//! then the oldest by insertion order, except a payment still in flight,
//! which is never evicted (forgetting it could let a repeat through). An
//! evicted finished record means a very late repeat is treated as new: size
//! the cap for (payments per second × TTL), or use Redis.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::StoredResponse;

/// The answer to "may this payment key start?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Begin {
    /// The key is new: this request owns it until finish or abandon.
    Started,
    /// Another request with this key is still running.
    InFlight,
    /// The key finished before: replay this.
    Finished(StoredResponse),
    /// The key exists with another body.
    Reused,
}

const SHARDS: usize = 32;

#[derive(Debug, Clone)]
enum Record {
    InFlight {
        fingerprint: [u8; 32],
    },
    Finished {
        fingerprint: [u8; 32],
        response: StoredResponse,
    },
}

pub(super) struct MemoryStore {
    records: TtlMap<Record>,
    orders: TtlMap<Arc<str>>,
}

impl MemoryStore {
    pub fn new(max_records: usize) -> MemoryStore {
        MemoryStore {
            records: TtlMap::new(max_records),
            orders: TtlMap::new(max_records),
        }
    }

    pub fn begin(&self, key: &str, fingerprint: [u8; 32], ttl: Duration) -> Begin {
        self.records.update(key, ttl, |record| match record {
            None => (Begin::Started, Update::Set(Record::InFlight { fingerprint })),
            Some(Record::InFlight { fingerprint: f } | Record::Finished { fingerprint: f, .. })
                if *f != fingerprint =>
            {
                (Begin::Reused, Update::Keep)
            }
            Some(Record::InFlight { .. }) => (Begin::InFlight, Update::Keep),
            // Reading a record never extends its life.
            Some(Record::Finished { response, .. }) => (Begin::Finished(response.clone()), Update::Keep),
        })
    }

    /// Records the answer, if the key is still in flight for this fingerprint.
    pub fn finish(&self, key: &str, fingerprint: [u8; 32], response: StoredResponse, ttl: Duration) {
        self.records.update(key, ttl, |record| match record {
            Some(Record::InFlight { fingerprint: f }) if *f == fingerprint => {
                ((), Update::Set(Record::Finished { fingerprint, response }))
            }
            _ => ((), Update::Keep),
        });
    }

    /// Forgets the key, if it is still in flight for this fingerprint.
    pub fn abandon(&self, key: &str, fingerprint: [u8; 32]) {
        self.records.update(key, Duration::ZERO, |record| match record {
            Some(Record::InFlight { fingerprint: f }) if *f == fingerprint => ((), Update::Remove),
            _ => ((), Update::Keep),
        });
    }

    pub fn remember_order(&self, key: &str, channel: &Arc<str>, ttl: Duration) {
        self.orders.update(key, ttl, |_| ((), Update::Set(channel.clone())));
    }

    pub fn order_channel(&self, key: &str) -> Option<Arc<str>> {
        self.orders.get(key)
    }
}

trait Evictable {
    fn evictable(&self) -> bool;
}

impl Evictable for Record {
    fn evictable(&self) -> bool {
        matches!(self, Record::Finished { .. })
    }
}

impl Evictable for Arc<str> {
    fn evictable(&self) -> bool {
        true
    }
}

/// What [`TtlMap::update`] does with an entry.
enum Update<V> {
    Keep,
    Set(V),
    Remove,
}

/// A sharded map with per-entry expiry and a size cap.
struct TtlMap<V> {
    shards: Box<[Mutex<Shard<V>>]>,
    hasher: RandomState,
    cap_per_shard: usize,
}

struct Shard<V> {
    map: HashMap<Arc<str>, (Instant, V)>,
    /// Insertion order, for eviction; may hold keys already removed.
    order: VecDeque<Arc<str>>,
}

impl<V: Clone + Evictable> TtlMap<V> {
    fn new(max_records: usize) -> TtlMap<V> {
        TtlMap {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        map: HashMap::new(),
                        order: VecDeque::new(),
                    })
                })
                .collect(),
            hasher: RandomState::new(),
            cap_per_shard: max_records.div_ceil(SHARDS).max(1),
        }
    }

    fn shard(&self, key: &str) -> std::sync::MutexGuard<'_, Shard<V>> {
        let i = self.hasher.hash_one(key) as usize % SHARDS;
        // A panic while holding a shard cannot leave a half-written record
        // (each update is one assignment), so a poisoned lock is still usable.
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the live value of `key` (None if absent or expired) and
    /// applies the update it returns; a set value lives `ttl` from now.
    fn update<R>(&self, key: &str, ttl: Duration, f: impl FnOnce(Option<&V>) -> (R, Update<V>)) -> R {
        let now = Instant::now();
        let mut shard = self.shard(key);
        let live = shard.map.get(key).filter(|(expires, _)| *expires > now).map(|(_, v)| v);
        let (r, update) = f(live);
        match update {
            Update::Keep => {}
            Update::Remove => {
                shard.map.remove(key);
            }
            Update::Set(v) => {
                if let Some(entry) = shard.map.get_mut(key) {
                    *entry = (now + ttl, v);
                } else {
                    let key: Arc<str> = Arc::from(key);
                    shard.order.push_back(key.clone());
                    shard.map.insert(key, (now + ttl, v));
                    shard.evict(self.cap_per_shard, now);
                }
            }
        }
        r
    }

    fn get(&self, key: &str) -> Option<V> {
        let now = Instant::now();
        let shard = self.shard(key);
        shard
            .map
            .get(key)
            .filter(|(expires, _)| *expires > now)
            .map(|(_, v)| v.clone())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|s| s.map.len()).unwrap_or(0))
            .sum()
    }
}

impl<V: Evictable> Shard<V> {
    /// Drops expired and then oldest records until the shard fits its cap.
    fn evict(&mut self, cap: usize, now: Instant) {
        let mut passes = self.order.len();
        while (self.map.len() > cap || self.order.len() > 2 * cap.max(self.map.len())) && passes > 0 {
            passes -= 1;
            let Some(key) = self.order.pop_front() else { break };
            match self.map.get(&key) {
                None => {} // already removed
                Some((expires, _)) if *expires <= now => {
                    self.map.remove(&key);
                }
                Some((_, v)) if v.evictable() && self.map.len() > cap => {
                    self.map.remove(&key);
                }
                Some(_) => self.order.push_back(key),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn response(status: u16) -> StoredResponse {
        StoredResponse {
            status,
            content_type: None,
            body: Bytes::from_static(b"{}"),
            channel: Some(Arc::from("a")),
            attempts: 1,
            ambiguous: None,
            outcome: "success".into(),
        }
    }

    const TTL: Duration = Duration::from_secs(60);

    #[test]
    fn first_writer_owns_the_key() {
        let s = MemoryStore::new(100);
        assert_eq!(s.begin("k", [1; 32], TTL), Begin::Started);
        assert_eq!(s.begin("k", [1; 32], TTL), Begin::InFlight);
        assert_eq!(s.begin("k", [2; 32], TTL), Begin::Reused);
        s.finish("k", [1; 32], response(201), TTL);
        assert_eq!(s.begin("k", [1; 32], TTL), Begin::Finished(response(201)));
        assert_eq!(s.begin("k", [2; 32], TTL), Begin::Reused);
    }

    #[test]
    fn abandon_frees_and_expiry_forgets() {
        let s = MemoryStore::new(100);
        assert_eq!(s.begin("k", [1; 32], TTL), Begin::Started);
        s.abandon("k", [2; 32]);
        assert_eq!(s.begin("k", [1; 32], TTL), Begin::InFlight, "only the owner abandons");
        s.abandon("k", [1; 32]);
        assert_eq!(s.begin("k", [1; 32], Duration::from_millis(1)), Begin::Started);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(s.begin("k", [2; 32], TTL), Begin::Started, "expired record is gone");
    }

    #[test]
    fn cap_evicts_oldest_finished_never_in_flight() {
        let s = MemoryStore::new(SHARDS); // one record per shard
        for i in 0..1_000 {
            let k = format!("k{i}");
            assert_eq!(s.begin(&k, [1; 32], TTL), Begin::Started);
            if i % 2 == 0 {
                s.finish(&k, [1; 32], response(200), TTL);
            }
        }
        // Every in-flight record survived; finished ones were evicted to make room.
        for i in (1..1_000).step_by(2) {
            assert_eq!(s.begin(&format!("k{i}"), [1; 32], TTL), Begin::InFlight);
        }
        assert!(s.records.len() <= 500 + SHARDS);
    }

    #[test]
    fn orders_remember_channel() {
        let s = MemoryStore::new(10);
        assert_eq!(s.order_channel("o"), None);
        s.remember_order("o", &Arc::from("acq-b"), TTL);
        assert_eq!(s.order_channel("o").as_deref(), Some("acq-b"));
    }
}
