//! Shared payment state: idempotency records and order→channel memory.
//!
//! "Never twice" rests on two facts that must survive between requests:
//! whether a payment key is new, running or finished (with its answer), and
//! which channel served an order. [`Store`] is the one interface to both.
//! Its operations are deliberately the ones Redis does atomically — begin is
//! `SET NX PX` (first writer wins), finish is a compare-and-set on the
//! fingerprint, abandon is a delete, orders are plain `SET PX` / `GET` — so a
//! Redis backend can match the in-memory one operation for operation.

mod memory;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

pub(crate) use memory::MemoryStore;

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
    pub outcome: &'static str,
}

/// The answer to "may this payment start?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Begin {
    /// The key is new: this request owns it until finish or abandon.
    Started,
    /// Another request with this key is still running.
    InFlight,
    /// The key finished before: replay this.
    Finished(StoredResponse),
    /// The key exists with another body.
    Reused,
}

/// The shared state could not be reached.
#[derive(Debug, Clone, thiserror::Error)]
#[error("shared state unavailable: {0}")]
pub(crate) struct StateError(pub String);

/// The state backend in use.
pub(crate) enum Store {
    Memory(MemoryStore),
}

impl Store {
    pub async fn begin(&self, key: &str, fingerprint: [u8; 32], ttl: Duration) -> Result<Begin, StateError> {
        match self {
            Store::Memory(m) => Ok(m.begin(key, fingerprint, ttl)),
        }
    }

    /// Records the final answer for a key this request owns.
    pub async fn finish(
        &self,
        key: &str,
        fingerprint: [u8; 32],
        response: StoredResponse,
        ttl: Duration,
    ) -> Result<(), StateError> {
        match self {
            Store::Memory(m) => {
                m.finish(key, fingerprint, response, ttl);
                Ok(())
            }
        }
    }

    /// Forgets a key whose payment reached no acquirer, so it may be retried.
    pub async fn abandon(&self, key: &str) -> Result<(), StateError> {
        match self {
            Store::Memory(m) => {
                m.abandon(key);
                Ok(())
            }
        }
    }

    pub async fn remember_order(&self, key: &str, channel: &Arc<str>, ttl: Duration) -> Result<(), StateError> {
        match self {
            Store::Memory(m) => {
                m.remember_order(key, channel, ttl);
                Ok(())
            }
        }
    }

    pub async fn order_channel(&self, key: &str) -> Result<Option<Arc<str>>, StateError> {
        match self {
            Store::Memory(m) => Ok(m.order_channel(key)),
        }
    }
}

/// A key scoped to a merchant; length-prefixed so no two (merchant, key)
/// pairs can collide whatever characters they contain.
pub(crate) fn scoped_key(merchant: &str, key: &str) -> String {
    format!("{}:{merchant}:{key}", merchant.len())
}
