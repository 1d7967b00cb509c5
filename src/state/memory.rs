//! The in-memory state backend: one instance, bounded memory.
//!
//! Idempotency records and order→channel memory live in one sharded table,
//! keyed by `merchant/key`. The two share a key space on purpose: without an
//! `Idempotency-Key` header the idempotency key *is* the order id, so the
//! payment's record and its order's channel are one entry — the key is
//! stored once, and settling a payment is one lookup.
//!
//! Memory is what this module is shaped by: 100,000 records is the default
//! cap, so every byte of a record counts a hundred thousand times
//! (BENCHMARKS.md, "Memory", has the figures). An entry is a small fixed header
//! in a per-shard slab plus **one** boxed byte buffer with the key, the
//! answer's body, content type, channel, ambiguous channels, outcome and the
//! order's channel, back to back; no `String`, `Arc` or `Bytes` per field.
//! A key's hash is computed once per operation and picks both the shard and
//! the index slot (hashbrown's `HashTable` of `u32` slab positions, so the
//! key is not stored twice). The eviction queue holds `(position, seq)`
//! pairs, not keys. See [`Shard`] for why a slab.
//!
//! Each shard has a mutex, so payments with different keys rarely meet and
//! never wait on one global lock. Records expire after their TTL and reads
//! never extend it. Records and orders are each capped at a shard's share of
//! `memory_max_records`; when a shard is over, its oldest entries (insertion
//! order) lose their expired parts, then their finished record and order together —
//! a payment still in flight is never evicted (forgetting it could let a
//! repeat through). An evicted finished record means a very late repeat is
//! treated as new: size the cap for (payments per second × TTL), or use Redis.
//!
//! Records are also capped in bytes (`memory_max_bytes`, a shard's share of
//! it): the buffers — keys, answers' bodies, channels — are counted as they
//! change, and a shard over its share evicts its oldest finished entries
//! the same way. A count alone let 300 answers of 1 MB each hold 300 MB
//! (issue 18); an answer over `max_answer_bytes` is kept without its body
//! before it gets here (`proxy::respond`).

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hashbrown::HashTable;

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

/// A shard's share of the store's caps.
#[derive(Debug, Clone, Copy)]
struct Caps {
    records: usize,
    bytes: usize,
}

pub(super) struct MemoryStore {
    shards: Box<[Mutex<Shard>]>,
    /// SipHash with a random key: keys are merchant-controlled (order ids).
    hasher: RandomState,
    cap_per_shard: Caps,
    /// Expiry times are nanoseconds since this instant (8 bytes, not 16).
    epoch: Instant,
}

/// A `merchant/key` pair, hashed once; never materialised as a string.
struct Key<'a> {
    merchant: &'a str,
    key: &'a str,
    hash: u64,
}

impl Key<'_> {
    fn matches(&self, stored: &[u8]) -> bool {
        let m = self.merchant.len();
        stored.len() == m + 1 + self.key.len()
            && &stored[..m] == self.merchant.as_bytes()
            && stored[m] == b'/'
            && &stored[m + 1..] == self.key.as_bytes()
    }

    fn bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.merchant.len() + 1 + self.key.len());
        v.extend_from_slice(self.merchant.as_bytes());
        v.push(b'/');
        v.extend_from_slice(self.key.as_bytes());
        v
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RecordState {
    /// No idempotency record (an order-only entry).
    None,
    InFlight,
    Finished,
}

/// Which optional parts of the answer are present (None ≠ empty).
const HAS_CONTENT_TYPE: u8 = 1;
const HAS_CHANNEL: u8 = 2;
const HAS_AMBIGUOUS: u8 = 4;
const HAS_TRADE_NO: u8 = 8;

/// The byte buffer's parts, in order; the order's channel runs from the end
/// of the last one to the end of the buffer.
const KEY: usize = 0;
const CONTENT_TYPE: usize = 1;
const BODY: usize = 2;
const CHANNEL: usize = 3;
const AMBIGUOUS: usize = 4;
const OUTCOME: usize = 5;
const TRADE_NO: usize = 6;
const PARTS: usize = 7;

/// One key's idempotency record and/or order memory.
struct Entry {
    /// `merchant/key`, then the answer's parts, then the order's channel.
    bytes: Box<[u8]>,
    /// End offset of each part in `bytes`.
    ends: [u32; PARTS],
    record_expires: u64,
    order_expires: u64,
    fingerprint: [u8; 32],
    attempts: u32,
    /// Identifies this entry from the eviction queue (a key removed and
    /// inserted again gets a new number, so a stale queue slot is skipped).
    seq: u32,
    status: u16,
    record: RecordState,
    flags: u8,
    has_order: bool,
    /// Size of an answer's body that was not kept (see `StoredResponse`).
    body_omitted: u32,
}

/// The answer's parts as bytes, borrowed from a `StoredResponse` or an entry.
#[derive(Clone, Copy, Default)]
struct Answer<'a> {
    content_type: Option<&'a [u8]>,
    body: &'a [u8],
    channel: Option<&'a [u8]>,
    ambiguous: Option<&'a [u8]>,
    outcome: &'a [u8],
    trade_no: Option<&'a [u8]>,
}

impl<'a> Answer<'a> {
    fn of(r: &'a StoredResponse) -> Answer<'a> {
        Answer {
            content_type: r.content_type.as_deref().map(str::as_bytes),
            body: &r.body,
            channel: r.channel.as_deref().map(str::as_bytes),
            ambiguous: r.ambiguous.as_deref().map(str::as_bytes),
            outcome: r.outcome.as_bytes(),
            trade_no: r.trade_no.as_deref().map(str::as_bytes),
        }
    }

    fn flags(&self) -> u8 {
        let mut f = 0;
        if self.content_type.is_some() {
            f |= HAS_CONTENT_TYPE;
        }
        if self.channel.is_some() {
            f |= HAS_CHANNEL;
        }
        if self.ambiguous.is_some() {
            f |= HAS_AMBIGUOUS;
        }
        if self.trade_no.is_some() {
            f |= HAS_TRADE_NO;
        }
        f
    }
}

/// Lays out `key`, the answer and the order's channel in one exact-size buffer.
/// `None` if a part does not fit a `u32` offset (gigabytes: never in practice).
fn compose(key: &[u8], answer: Answer<'_>, order_channel: &[u8]) -> Option<(Box<[u8]>, [u32; PARTS])> {
    let parts: [&[u8]; PARTS] = [
        key,
        answer.content_type.unwrap_or_default(),
        answer.body,
        answer.channel.unwrap_or_default(),
        answer.ambiguous.unwrap_or_default(),
        answer.outcome,
        answer.trade_no.unwrap_or_default(),
    ];
    let total = parts.iter().map(|p| p.len()).sum::<usize>() + order_channel.len();
    u32::try_from(total).ok()?;
    let mut bytes = Vec::with_capacity(total);
    let mut ends = [0u32; PARTS];
    for (end, part) in ends.iter_mut().zip(parts) {
        bytes.extend_from_slice(part);
        *end = bytes.len() as u32; // total fits in u32, checked above
    }
    bytes.extend_from_slice(order_channel);
    Some((bytes.into_boxed_slice(), ends))
}

impl Entry {
    fn new(key: &Key<'_>, seq: u32) -> Entry {
        let key = key.bytes();
        let end = key.len() as u32; // see `compose`: callers checked the length
        Entry {
            bytes: key.into_boxed_slice(),
            ends: [end; PARTS],
            record_expires: 0,
            order_expires: 0,
            fingerprint: [0; 32],
            attempts: 0,
            seq,
            status: 0,
            record: RecordState::None,
            flags: 0,
            has_order: false,
            body_omitted: 0,
        }
    }

    fn part(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.bytes[start..self.ends[i] as usize]
    }

    fn key(&self) -> &[u8] {
        self.part(KEY)
    }

    fn order_channel(&self) -> &[u8] {
        &self.bytes[self.ends[PARTS - 1] as usize..]
    }

    fn answer(&self) -> Answer<'_> {
        let opt = |flag: u8, i: usize| (self.flags & flag != 0).then(|| self.part(i));
        Answer {
            content_type: opt(HAS_CONTENT_TYPE, CONTENT_TYPE),
            body: self.part(BODY),
            channel: opt(HAS_CHANNEL, CHANNEL),
            ambiguous: opt(HAS_AMBIGUOUS, AMBIGUOUS),
            outcome: self.part(OUTCOME),
            trade_no: opt(HAS_TRADE_NO, TRADE_NO),
        }
    }

    fn record_live(&self, now: u64) -> bool {
        self.record != RecordState::None && self.record_expires > now
    }

    fn order_live(&self, now: u64) -> bool {
        self.has_order && self.order_expires > now
    }

    /// Rewrites the buffer (exact size) with a new answer and order channel;
    /// false (nothing changed) if it would not fit the layout.
    fn relayout(&mut self, counts: &mut Counts, answer: Answer<'_>, order_channel: &[u8]) -> bool {
        match compose(self.key(), answer, order_channel) {
            Some((bytes, ends)) => {
                self.flags = answer.flags();
                self.set_bytes(counts, bytes, ends);
                true
            }
            None => false,
        }
    }

    /// Replaces the buffer, counting the change in the shard's bytes.
    fn set_bytes(&mut self, counts: &mut Counts, bytes: Box<[u8]>, ends: [u32; PARTS]) {
        counts.bytes = counts.bytes - self.bytes.len() + bytes.len();
        self.bytes = bytes;
        self.ends = ends;
    }

    /// Whether this entry holds the in-flight record of `fingerprint`.
    fn owned_by(&self, fingerprint: &[u8; 32], now: u64) -> bool {
        self.record_live(now) && self.record == RecordState::InFlight && self.fingerprint == *fingerprint
    }

    fn start_record(&mut self, counts: &mut Counts, fingerprint: [u8; 32], expires: u64) {
        if self.record == RecordState::None {
            counts.records += 1;
        } else {
            // An expired record: its answer goes, the order's channel stays.
            let order = self.order_channel().to_vec();
            self.relayout(counts, Answer::default(), &order);
            self.body_omitted = 0;
        }
        self.record = RecordState::InFlight;
        self.record_expires = expires;
        self.fingerprint = fingerprint;
    }

    fn clear_record(&mut self, counts: &mut Counts) {
        if self.record != RecordState::None {
            counts.records -= 1;
            self.record = RecordState::None;
            let order = self.order_channel().to_vec();
            self.relayout(counts, Answer::default(), &order);
            self.body_omitted = 0;
        }
    }

    /// Sets the order's channel; false if it would not fit the layout.
    fn set_order(&mut self, counts: &mut Counts, channel: &[u8], expires: u64) -> bool {
        // Keep the answer: copy it out of the buffer being replaced.
        let (bytes, ends) = match compose(self.key(), self.answer(), channel) {
            Some(layout) => layout,
            None => return false,
        };
        self.set_bytes(counts, bytes, ends);
        if !self.has_order {
            counts.orders += 1;
        }
        self.has_order = true;
        self.order_expires = expires;
        true
    }

    fn clear_order(&mut self, counts: &mut Counts) {
        if self.has_order {
            counts.orders -= 1;
            self.has_order = false;
            // Shrinking: always fits.
            if let Some((bytes, ends)) = compose(self.key(), self.answer(), b"") {
                self.set_bytes(counts, bytes, ends);
            }
        }
    }

    /// A free slab slot: no buffer at all (a real entry holds at least `m/`).
    fn vacant() -> Entry {
        Entry {
            bytes: Box::default(),
            ends: [0; PARTS],
            record_expires: 0,
            order_expires: 0,
            fingerprint: [0; 32],
            attempts: 0,
            seq: 0,
            status: 0,
            record: RecordState::None,
            flags: 0,
            has_order: false,
            body_omitted: 0,
        }
    }

    fn is_vacant(&self) -> bool {
        self.bytes.is_empty()
    }

    fn is_empty(&self) -> bool {
        self.record == RecordState::None && !self.has_order
    }

    fn stored(&self) -> StoredResponse {
        let a = self.answer();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        StoredResponse {
            status: self.status,
            content_type: a.content_type.map(text),
            body: Bytes::copy_from_slice(a.body),
            channel: a.channel.map(|c| Arc::from(String::from_utf8_lossy(c).as_ref())),
            attempts: self.attempts,
            ambiguous: a.ambiguous.map(text),
            outcome: text(a.outcome),
            trade_no: a.trade_no.map(text),
            body_omitted: self.body_omitted,
        }
    }
}

/// Parts held by a shard's entries: each kind is capped separately.
#[derive(Default)]
struct Counts {
    /// Entries with a record (in flight, finished, or expired and not yet evicted).
    records: usize,
    /// Entries with an order's channel.
    orders: usize,
    /// Bytes of the entries' buffers.
    bytes: usize,
}

/// A shard: entries in a slab, found through a hash index of slab positions.
///
/// Why not `HashTable<Entry>`: under constant insert/remove churn hashbrown
/// fills with tombstones and, at this load, grows rather than rehashing in
/// place, so a full shard settles at ~38% occupancy. Measured with 100,000
/// records: 8,192 slots of 104 bytes per shard, ~275 bytes of table per
/// record. Here the index slots are 4 bytes, and the slab grows in steps of
/// an eighth, so a record costs its entry, a few bytes of index and queue,
/// and its one buffer.
struct Shard {
    /// Slab positions, by the key's hash.
    index: HashTable<u32>,
    slab: Vec<Entry>,
    /// Free slab positions (entries left empty by removal).
    free: Vec<u32>,
    /// Insertion order, for eviction: `(slab position, seq)`; may name
    /// removed entries (a free or reused slot has another seq).
    queue: VecDeque<(u32, u32)>,
    next_seq: u32,
    counts: Counts,
}

/// Shards reserve room for this many entries at most up front.
const RESERVE_MAX: usize = 1 << 16;

impl Shard {
    /// Sized for `cap` entries from the start. Growing by reallocation while
    /// full of small buffers left the freed old blocks as holes glibc could not
    /// return (measured: 38 MB held beyond 66 MB in use). A reservation costs
    /// no resident memory until used: the pages are not touched until written.
    fn new(cap: usize) -> Shard {
        let reserve = cap.saturating_add(16).min(RESERVE_MAX);
        Shard {
            // Twice the entries: under churn hashbrown's tombstones need the room.
            index: HashTable::with_capacity(reserve * 2),
            slab: Vec::with_capacity(reserve),
            free: Vec::new(),
            queue: VecDeque::with_capacity(reserve),
            next_seq: 0,
            counts: Counts::default(),
        }
    }

    fn position(&self, k: &Key<'_>) -> Option<usize> {
        let slab = &self.slab;
        self.index
            .find(k.hash, |&i| k.matches(slab[i as usize].key()))
            .map(|&i| i as usize)
    }

    fn get(&self, k: &Key<'_>) -> Option<&Entry> {
        self.position(k).map(|i| &self.slab[i])
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    /// The entry of `k`, inserted empty if absent; and the counters beside it.
    fn entry(&mut self, k: &Key<'_>, hasher: &RandomState) -> (&mut Entry, &mut Counts) {
        let i = match self.position(k) {
            Some(i) => i,
            None => {
                let seq = self.next_seq;
                self.next_seq = self.next_seq.wrapping_add(1);
                let entry = Entry::new(k, seq);
                self.counts.bytes += entry.bytes.len();
                let i = match self.free.pop() {
                    Some(i) => {
                        self.slab[i as usize] = entry;
                        i
                    }
                    None => {
                        if self.slab.len() == self.slab.capacity() {
                            // Grow by an eighth, not double: the slab is most of a shard.
                            self.slab.reserve_exact((self.slab.len() / 8).max(16));
                        }
                        self.slab.push(entry);
                        // A shard never holds 4 billion entries (memory would run out first).
                        (self.slab.len() - 1) as u32
                    }
                };
                let slab = &self.slab;
                self.index
                    .insert_unique(k.hash, i, |&j| hash_bytes(hasher, slab[j as usize].key()));
                self.queue.push_back((i, seq));
                i as usize
            }
        };
        (&mut self.slab[i], &mut self.counts)
    }

    /// Removes the entry at slab position `i` from the index and frees its slot.
    fn remove_at(&mut self, i: usize, hasher: &RandomState) {
        let hash = hash_bytes(hasher, self.slab[i].key());
        if let Ok(found) = self.index.find_entry(hash, |&j| j as usize == i) {
            found.remove();
        }
        let e = std::mem::replace(&mut self.slab[i], Entry::vacant());
        self.counts.records -= usize::from(e.record != RecordState::None);
        self.counts.orders -= usize::from(e.has_order);
        self.counts.bytes -= e.bytes.len();
        self.free.push(i as u32);
    }

    fn remove_if_empty(&mut self, k: &Key<'_>, hasher: &RandomState) {
        if let Some(i) = self.position(k).filter(|&i| self.slab[i].is_empty()) {
            self.remove_at(i, hasher);
        }
    }

    /// Until records and orders fit `cap` (in number and bytes): walks the oldest entries, drops
    /// their dead parts and, while either count is over the cap, their
    /// finished record and their order together; an entry left with a part (a
    /// payment in flight) goes to the back.
    ///
    /// Together, because a payment's record and order share one entry: taking
    /// the record of one entry for the record count and the order of the next
    /// for the order count split a full store into record-only and order-only
    /// entries, 1.5 entries per payment (measured: 4,688 entries per shard for
    /// a cap of 3,125, and the slab reallocated past its reservation).
    fn evict(&mut self, cap: Caps, now: u64, hasher: &RandomState) {
        let (max_bytes, cap) = (cap.bytes, cap.records);
        let mut passes = self.queue.len();
        while (self.counts.records > cap
            || self.counts.orders > cap
            || self.counts.bytes > max_bytes
            || self.queue.len() > 2 * cap.max(self.len()))
            && passes > 0
        {
            passes -= 1;
            let Some((i, seq)) = self.queue.pop_front() else { break };
            let i = i as usize;
            let Shard { slab, counts, .. } = self;
            let Some(e) = slab.get_mut(i).filter(|e| e.seq == seq && !e.is_vacant()) else {
                continue; // removed since, or the slot reused by a newer entry
            };
            let over = counts.records > cap || counts.orders > cap || counts.bytes > max_bytes;
            if e.record != RecordState::None && (!e.record_live(now) || (over && e.record == RecordState::Finished)) {
                e.clear_record(counts);
            }
            if e.has_order && (!e.order_live(now) || over) {
                e.clear_order(counts);
            }
            if e.is_empty() {
                self.remove_at(i, hasher);
            } else {
                self.queue.push_back((i as u32, seq));
            }
        }
    }
}

fn hash_bytes(hasher: &RandomState, bytes: &[u8]) -> u64 {
    let mut h = hasher.build_hasher();
    h.write(bytes);
    h.finish()
}

impl MemoryStore {
    /// At most `max_records` records (and as many orders), whose buffers
    /// hold at most `max_bytes` together.
    pub fn new(max_records: usize, max_bytes: usize) -> MemoryStore {
        MemoryStore {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(Shard::new(max_records.div_ceil(SHARDS))))
                .collect(),
            hasher: RandomState::new(),
            cap_per_shard: Caps {
                records: max_records.div_ceil(SHARDS).max(1),
                bytes: max_bytes.div_ceil(SHARDS).max(1),
            },
            epoch: Instant::now(),
        }
    }

    /// The key, hashed once: the same hash picks the shard and the slot.
    /// Streaming SipHash over the parts equals hashing the stored bytes.
    fn key<'a>(&self, merchant: &'a str, key: &'a str) -> Key<'a> {
        let mut h = self.hasher.build_hasher();
        h.write(merchant.as_bytes());
        h.write(b"/");
        h.write(key.as_bytes());
        Key {
            merchant,
            key,
            hash: h.finish(),
        }
    }

    fn shard(&self, k: &Key<'_>) -> MutexGuard<'_, Shard> {
        // Bits 32.. : hashbrown uses the low bits for the slot and the top 7
        // for its control bytes, so the shard choice biases neither.
        let i = (k.hash >> 32) as usize % SHARDS;
        // A panic while holding a shard cannot leave a half-written entry
        // (counters change with the parts), so a poisoned lock is still usable.
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn expiry(now: u64, ttl: Duration) -> u64 {
        now.saturating_add(u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX))
    }

    pub fn begin(&self, merchant: &str, key: &str, fingerprint: [u8; 32], ttl: Duration) -> Begin {
        let k = self.key(merchant, key);
        let now = self.now();
        let mut shard = self.shard(&k);
        let (e, counts) = shard.entry(&k, &self.hasher);
        if e.record_live(now) {
            return if e.fingerprint != fingerprint {
                Begin::Reused
            } else if e.record == RecordState::InFlight {
                Begin::InFlight
            } else {
                // Reading a record never extends its life.
                Begin::Finished(e.stored())
            };
        }
        e.start_record(counts, fingerprint, Self::expiry(now, ttl));
        shard.evict(self.cap_per_shard, now, &self.hasher);
        Begin::Started
    }

    /// Records the answer (`None`: forgets the key), if the key is still in
    /// flight for this fingerprint; and remembers the order's channel
    /// (`order`: order id, channel). When the order id is the key, as it is
    /// without an `Idempotency-Key` header, both go into one entry under one
    /// lock.
    pub fn settle(
        &self,
        merchant: &str,
        key: &str,
        fingerprint: [u8; 32],
        answer: Option<&StoredResponse>,
        order: Option<(&str, &str)>,
        ttl: Duration,
    ) {
        let k = self.key(merchant, key);
        let now = self.now();
        let expires = Self::expiry(now, ttl);
        let folded = order.filter(|(order_id, _)| *order_id == key).map(|(_, c)| c);
        'local: {
            let mut shard = self.shard(&k);
            // Nothing to finish or forget, and no order to put here: no entry to make.
            if folded.is_none() && shard.get(&k).is_none() {
                break 'local;
            }
            let (e, counts) = shard.entry(&k, &self.hasher);
            if e.owned_by(&fingerprint, now) {
                match answer {
                    Some(answer) => {
                        let order_channel = match folded {
                            Some(channel) => channel.as_bytes().to_vec(),
                            None => e.order_channel().to_vec(),
                        };
                        if e.relayout(counts, Answer::of(answer), &order_channel) {
                            e.body_omitted = answer.body_omitted;
                            e.record = RecordState::Finished;
                            e.record_expires = expires;
                            e.status = answer.status;
                            e.attempts = answer.attempts;
                            if folded.is_some() {
                                counts.orders += usize::from(!e.has_order);
                                e.has_order = true;
                                e.order_expires = expires;
                            }
                        } else {
                            tracing::error!("an answer too large to keep: its key stays in flight until it expires");
                        }
                    }
                    None => e.clear_record(counts),
                }
            } else if let Some(channel) = folded {
                e.set_order(counts, channel.as_bytes(), expires);
            }
            shard.remove_if_empty(&k, &self.hasher);
            shard.evict(self.cap_per_shard, now, &self.hasher);
        }
        if let Some((order_id, channel)) = order.filter(|_| folded.is_none()) {
            self.remember_order(merchant, order_id, channel, ttl);
        }
    }

    /// Forgets the key, if it is still in flight for this fingerprint.
    pub fn abandon(&self, merchant: &str, key: &str, fingerprint: [u8; 32]) {
        self.settle(merchant, key, fingerprint, None, None, Duration::ZERO);
    }

    pub fn remember_order(&self, merchant: &str, order_id: &str, channel: &str, ttl: Duration) {
        let k = self.key(merchant, order_id);
        let now = self.now();
        let mut shard = self.shard(&k);
        let (e, counts) = shard.entry(&k, &self.hasher);
        e.set_order(counts, channel.as_bytes(), Self::expiry(now, ttl));
        shard.remove_if_empty(&k, &self.hasher);
        shard.evict(self.cap_per_shard, now, &self.hasher);
    }

    pub fn order_channel(&self, merchant: &str, order_id: &str) -> Option<Arc<str>> {
        let k = self.key(merchant, order_id);
        let now = self.now();
        let shard = self.shard(&k);
        let e = shard.get(&k).filter(|e| e.order_live(now))?;
        std::str::from_utf8(e.order_channel()).ok().map(Arc::from)
    }

    #[cfg(test)]
    fn counts(&self) -> (usize, usize, usize) {
        self.shards.iter().fold((0, 0, 0), |(n, r, o), s| {
            let s = s.lock().unwrap_or_else(|p| p.into_inner());
            (n + s.len(), r + s.counts.records, o + s.counts.orders)
        })
    }

    /// Whether `key` has a live record (without touching it).
    #[cfg(test)]
    fn has_record(&self, merchant: &str, key: &str) -> bool {
        let k = self.key(merchant, key);
        let now = self.now();
        let shard = self.shard(&k);
        shard.get(&k).is_some_and(|e| e.record_live(now))
    }

    /// Heap bytes the entry of a key owns (its buffer; the header is in the slab).
    #[cfg(test)]
    fn heap_bytes(&self, merchant: &str, key: &str) -> Option<usize> {
        let k = self.key(merchant, key);
        let shard = self.shard(&k);
        shard.get(&k).map(|e| e.bytes.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16) -> StoredResponse {
        StoredResponse {
            status,
            content_type: None,
            body: Bytes::from_static(b"{}"),
            channel: Some(Arc::from("a")),
            attempts: 1,
            ambiguous: None,
            outcome: "success".into(),
            trade_no: None,
            body_omitted: 0,
        }
    }

    const TTL: Duration = Duration::from_secs(60);

    fn finish(s: &MemoryStore, key: &str, fp: u8, r: &StoredResponse) {
        s.settle("m", key, [fp; 32], Some(r), None, TTL);
    }

    #[test]
    fn first_writer_owns_the_key() {
        let s = MemoryStore::new(100, usize::MAX);
        assert_eq!(s.begin("m", "k", [1; 32], TTL), Begin::Started);
        assert_eq!(s.begin("m", "k", [1; 32], TTL), Begin::InFlight);
        assert_eq!(s.begin("m", "k", [2; 32], TTL), Begin::Reused);
        finish(&s, "k", 2, &response(500));
        assert_eq!(
            s.begin("m", "k", [1; 32], TTL),
            Begin::InFlight,
            "only the owner finishes"
        );
        finish(&s, "k", 1, &response(201));
        assert_eq!(s.begin("m", "k", [1; 32], TTL), Begin::Finished(response(201)));
        assert_eq!(s.begin("m", "k", [2; 32], TTL), Begin::Reused);
        assert_eq!(
            s.begin("m2", "k", [2; 32], TTL),
            Begin::Started,
            "keys are per merchant"
        );
        // "m/k" under merchant "m" is not key "k" under merchant "m/": ids never contain '/'.
    }

    #[test]
    fn every_answer_part_round_trips() {
        let s = MemoryStore::new(100, usize::MAX);
        let full = StoredResponse {
            status: 402,
            content_type: Some("application/json; charset=utf-8".into()),
            body: Bytes::from_static(b"{\"declined\":true}\x00\xff"),
            channel: Some(Arc::from("acq-b")),
            attempts: 3,
            ambiguous: Some("acq-a,acq-c".into()),
            outcome: "declined".into(),
            trade_no: Some("T1".into()),
            body_omitted: 0,
        };
        let empty = StoredResponse {
            status: 504,
            content_type: Some(String::new()),
            body: Bytes::new(),
            channel: None,
            attempts: 0,
            ambiguous: None,
            outcome: String::new(),
            trade_no: Some(String::new()),
            body_omitted: 1_048_576,
        };
        for (key, r) in [("full", &full), ("empty", &empty)] {
            assert_eq!(s.begin("m", key, [1; 32], TTL), Begin::Started);
            finish(&s, key, 1, r);
            assert_eq!(s.begin("m", key, [1; 32], TTL), Begin::Finished(r.clone()), "{key}");
        }
    }

    #[test]
    fn abandon_frees_and_expiry_forgets() {
        let s = MemoryStore::new(100, usize::MAX);
        assert_eq!(s.begin("m", "k", [1; 32], TTL), Begin::Started);
        s.abandon("m", "k", [2; 32]);
        assert_eq!(
            s.begin("m", "k", [1; 32], TTL),
            Begin::InFlight,
            "only the owner abandons"
        );
        s.abandon("m", "k", [1; 32]);
        assert_eq!(s.counts(), (0, 0, 0), "an abandoned key leaves nothing behind");
        assert_eq!(s.begin("m", "k", [1; 32], Duration::from_millis(1)), Begin::Started);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(
            s.begin("m", "k", [2; 32], TTL),
            Begin::Started,
            "expired record is gone"
        );
    }

    #[test]
    fn reads_never_extend_a_record() {
        let s = MemoryStore::new(100, usize::MAX);
        let short = Duration::from_millis(30);
        assert_eq!(s.begin("m", "k", [1; 32], short), Begin::Started);
        s.settle("m", "k", [1; 32], Some(&response(200)), None, short);
        for _ in 0..5 {
            assert!(matches!(s.begin("m", "k", [1; 32], TTL), Begin::Finished(_)));
        }
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(
            s.begin("m", "k", [1; 32], TTL),
            Begin::Started,
            "expired on time despite reads"
        );
    }

    #[test]
    fn cap_evicts_oldest_finished_never_in_flight() {
        let s = MemoryStore::new(SHARDS, usize::MAX); // one record per shard
        for i in 0..1_000 {
            let k = format!("k{i}");
            assert_eq!(s.begin("m", &k, [1; 32], TTL), Begin::Started);
            if i % 2 == 0 {
                finish(&s, &k, 1, &response(200));
            }
        }
        // Every in-flight record survived; finished ones were evicted to make room.
        for i in (1..1_000).step_by(2) {
            assert_eq!(s.begin("m", &format!("k{i}"), [1; 32], TTL), Begin::InFlight);
        }
        let (entries, records, _) = s.counts();
        assert!(records <= 500 + SHARDS, "{records}");
        assert_eq!(entries, records);
    }

    #[test]
    fn a_full_store_keeps_one_entry_per_payment() {
        // Payments without an Idempotency-Key: record and order share an entry.
        let cap = SHARDS * 50;
        let s = MemoryStore::new(cap, usize::MAX);
        let reserved: Vec<usize> = s.shards.iter().map(|sh| sh.lock().unwrap().slab.capacity()).collect();
        for i in 0..cap * 4 {
            let k = format!("o{i}");
            s.begin("m", &k, [1; 32], TTL);
            s.settle("m", &k, [1; 32], Some(&response(200)), Some((&k, "a")), TTL);
        }
        for (sh, reserved) in s.shards.iter().zip(reserved) {
            let sh = sh.lock().unwrap();
            assert_eq!((sh.counts.records, sh.counts.orders), (50, 50));
            assert_eq!(
                sh.len(),
                50,
                "record and order evicted together, not split over two entries"
            );
            assert_eq!(sh.slab.capacity(), reserved, "the slab never outgrew its reservation");
        }
        // The newest payments keep both their answer and their order.
        let newest = format!("o{}", cap * 4 - 1);
        assert!(s.has_record("m", &newest));
        assert_eq!(s.order_channel("m", &newest).as_deref(), Some("a"));
    }

    #[test]
    fn eviction_takes_the_oldest_first() {
        let s = MemoryStore::new(SHARDS * 10, usize::MAX);
        let keys: Vec<String> = (0..2_000).map(|i| format!("k{i}")).collect();
        for k in &keys {
            s.begin("m", k, [1; 32], TTL);
            finish(&s, k, 1, &response(200));
        }
        let kept = |range: std::ops::Range<usize>| keys[range].iter().filter(|k| s.has_record("m", k)).count();
        // 320 records fit; shards fill unevenly, but the newest survive and the oldest do not.
        assert_eq!(kept(0..1_000), 0, "the oldest half is gone");
        assert!(kept(1_900..2_000) >= 90, "the newest are kept");
        assert!(s.counts().1 <= SHARDS * 10);
    }

    #[test]
    fn expired_go_before_live_ones() {
        let s = MemoryStore::new(SHARDS * 4, usize::MAX);
        // Old but long-lived records first, then short-lived ones that expire.
        for i in 0..SHARDS * 2 {
            let k = format!("long{i}");
            s.begin("m", &k, [1; 32], TTL);
            finish(&s, &k, 1, &response(200));
        }
        for i in 0..SHARDS * 2 {
            let k = format!("short{i}");
            s.begin("m", &k, [1; 32], Duration::from_millis(1));
            s.settle("m", &k, [1; 32], Some(&response(200)), None, Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(5));
        for i in 0..SHARDS * 40 {
            s.begin("m", &format!("new{i}"), [1; 32], TTL);
        }
        // Only in-flight records now: every expired and finished one went, and
        // the cap is exceeded only by records that may never be evicted.
        let (_, records, _) = s.counts();
        assert_eq!(records, SHARDS * 40);
    }

    #[test]
    fn orders_remember_channel_in_the_payments_entry() {
        // Room for several entries per shard: with 10 (one per shard) two of
        // these keys could share a shard and one be evicted, as the random
        // hasher decides — eviction is tested on its own below.
        let s = MemoryStore::new(SHARDS * 10, usize::MAX);
        assert_eq!(s.order_channel("m", "o"), None);
        s.remember_order("m", "o", "acq-b", TTL);
        assert_eq!(s.order_channel("m", "o").as_deref(), Some("acq-b"));
        assert_eq!(s.order_channel("m2", "o"), None);

        // No Idempotency-Key: the key is the order id, and one entry holds both.
        assert_eq!(s.begin("m", "o2", [1; 32], TTL), Begin::Started);
        s.settle("m", "o2", [1; 32], Some(&response(200)), Some(("o2", "acq-c")), TTL);
        assert_eq!(s.order_channel("m", "o2").as_deref(), Some("acq-c"));
        assert_eq!(s.begin("m", "o2", [1; 32], TTL), Begin::Finished(response(200)));
        assert_eq!(s.counts(), (2, 1, 2));

        // With a separate key: two entries, the order one holding only its channel.
        assert_eq!(s.begin("m", "idem-3", [1; 32], TTL), Begin::Started);
        s.settle("m", "idem-3", [1; 32], Some(&response(200)), Some(("o3", "acq-a")), TTL);
        assert_eq!(s.order_channel("m", "o3").as_deref(), Some("acq-a"));
        assert_eq!(s.order_channel("m", "idem-3"), None);
        assert_eq!(s.heap_bytes("m", "o3"), Some("m/o3acq-a".len()));

        // A later payment for the same order moves its channel, not its record.
        s.remember_order("m", "o2", "acq-a", TTL);
        assert_eq!(s.order_channel("m", "o2").as_deref(), Some("acq-a"));
        assert_eq!(s.begin("m", "o2", [1; 32], TTL), Begin::Finished(response(200)));
    }

    #[test]
    fn orders_are_capped_and_evicted_like_records() {
        let s = MemoryStore::new(SHARDS, usize::MAX);
        for i in 0..1_000 {
            s.remember_order("m", &format!("o{i}"), "acq", TTL);
        }
        let (entries, records, orders) = s.counts();
        assert_eq!(records, 0);
        assert!(orders <= SHARDS && entries == orders, "{orders}");
        assert_eq!(s.order_channel("m", "o999").as_deref(), Some("acq"));
    }

    #[test]
    fn a_record_is_one_exact_buffer_beside_a_small_header() {
        // The fixed part sits in the slab; everything variable is one
        // allocation of exactly the bytes it holds.
        // 112 since answers carry the trade number (one more part offset).
        assert!(std::mem::size_of::<Entry>() <= 112, "{}", std::mem::size_of::<Entry>());
        let s = MemoryStore::new(100, usize::MAX);
        let r = StoredResponse {
            content_type: Some("application/json".into()),
            body: Bytes::from(vec![b'x'; 120]),
            ..response(200)
        };
        s.begin("m-0001", "order-42", [1; 32], TTL);
        assert_eq!(s.heap_bytes("m-0001", "order-42"), Some("m-0001/order-42".len()));
        s.settle(
            "m-0001",
            "order-42",
            [1; 32],
            Some(&r),
            Some(("order-42", "acq-b")),
            TTL,
        );
        let expected = "m-0001/order-42".len() + 16 + 120 + "a".len() + "success".len() + "acq-b".len();
        assert_eq!(s.heap_bytes("m-0001", "order-42"), Some(expected));
    }

    #[test]
    fn churn_reuses_slots_and_keeps_the_index_exact() {
        let s = MemoryStore::new(SHARDS * 10, usize::MAX);
        for i in 0..20_000 {
            let k = format!("k{i}");
            s.begin("m", &k, [1; 32], TTL);
            if i % 3 == 0 {
                s.abandon("m", &k, [1; 32]); // a removal in the middle of the slab
            } else {
                finish(&s, &k, 1, &response(200));
            }
        }
        let (entries, records, _) = s.counts();
        assert_eq!(entries, records);
        assert!(records <= SHARDS * 10);
        for shard in s.shards.iter() {
            let shard = shard.lock().unwrap();
            let live = shard.slab.iter().filter(|e| !e.is_vacant()).count();
            assert_eq!(live, shard.len(), "every live slot is indexed once");
            assert!(shard.slab.len() <= 10 + 16, "slots are reused: {}", shard.slab.len());
        }
        assert!(s.has_record("m", "k19999"));
    }

    #[test]
    fn streamed_hash_equals_stored_key_hash() {
        let s = MemoryStore::new(10, usize::MAX);
        let k = s.key("m-1", "order/with/slashes");
        assert_eq!(k.hash, hash_bytes(&s.hasher, &k.bytes()));
    }

    /// Issue 18, finding 4: the store's bytes are bounded, not only its
    /// records; the oldest finished entries go first, one in flight never.
    #[test]
    fn bytes_are_capped_too() {
        let body = Bytes::from(vec![b'x'; 10_000]);
        let big = StoredResponse {
            body: body.clone(),
            ..response(200)
        };
        // Room for ~4 such answers per shard, far fewer than the record cap.
        let max_bytes = SHARDS * 45_000;
        let s = MemoryStore::new(100_000, max_bytes);
        assert_eq!(s.begin("m", "in-flight", [9; 32], TTL), Begin::Started);
        for i in 0..2_000 {
            let k = format!("k{i}");
            s.begin("m", &k, [1; 32], TTL);
            finish(&s, &k, 1, &big);
        }
        for shard in s.shards.iter() {
            let shard = shard.lock().unwrap();
            let held: usize = shard.slab.iter().map(|e| e.bytes.len()).sum();
            assert_eq!(held, shard.counts.bytes, "the count is exact");
            assert!(held <= 45_000, "{held} bytes in one shard");
        }
        let (_, records, _) = s.counts();
        assert!(records < 2_000 / 10, "{records} records kept");
        assert!(s.has_record("m", "k1999"), "the newest stays");
        assert!(!s.has_record("m", "k0"), "the oldest went");
        assert_eq!(
            s.begin("m", "in-flight", [9; 32], TTL),
            Begin::InFlight,
            "a payment in flight is never evicted"
        );
        // Emptied by abandons and expiry, the count returns to zero.
        let s = MemoryStore::new(100, max_bytes);
        s.begin("m", "a", [1; 32], TTL);
        s.abandon("m", "a", [1; 32]);
        s.remember_order("m", "o", "acq-a", Duration::ZERO);
        s.begin("m", "b", [1; 32], Duration::ZERO);
        s.begin("m", "b", [1; 32], TTL);
        finish(&s, "b", 1, &big);
        s.begin("m", "b", [1; 32], Duration::ZERO);
        let held: usize = s.shards.iter().map(|sh| sh.lock().unwrap().counts.bytes).sum();
        let live: usize = s
            .shards
            .iter()
            .map(|sh| sh.lock().unwrap().slab.iter().map(|e| e.bytes.len()).sum::<usize>())
            .sum();
        assert_eq!(held, live);
    }
}
