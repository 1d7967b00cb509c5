//! What the server, the answers and the handles share: the state of one
//! mock, its counters, the simulation's paid orders, and how shutdown
//! reaches a request.
//!
//! Kept apart from the server and from the answers so that both can read it
//! and neither reads the other's insides.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use dashmap::DashSet;
use http::Response;
use http_body_util::Full;
use tokio::sync::watch;

use crate::answer::Rules;
use crate::record::Recorder;

/// Shared between the handles and every request.
pub(crate) struct State {
    pub local_addr: SocketAddr,
    /// Named in answers (`"acquirer"`): the address unless given a name.
    pub name: Box<str>,
    pub rules: Rules,
    pub counters: AtomicCounters,
    pub orders: PaidOrders,
    pub recorder: Option<Recorder>,
    pub shutdown: watch::Receiver<bool>,
}

impl State {
    /// Resolves once the mock shuts down: how a hanging request ends.
    pub async fn released(&self) -> Released {
        shut_down(self.shutdown.clone()).await;
        Released
    }
}

/// One counter per cache line, so that threads bumping different counters
/// do not fight over the same line under load.
#[repr(align(128))]
#[derive(Default)]
pub(crate) struct Padded(AtomicU64);

impl Padded {
    pub fn bump(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
pub(crate) struct AtomicCounters {
    pub requests: Padded,
    pub successes: Padded,
    pub failures: Padded,
    pub hangs: Padded,
    pub queries: Padded,
    pub reversals: Padded,
    pub connections: Padded,
}

/// Resolves once the mock is shut down or its last handle is dropped.
pub(crate) async fn shut_down(mut rx: watch::Receiver<bool>) {
    // `Err` means the sender is gone, which also means shut down.
    let _ = rx.wait_for(|down| *down).await;
}

/// A hanging request released by shutdown. Returning it as the service error
/// makes hyper close the HTTP/1 connection (h2: reset the stream) without an
/// answer, which is what "never answered" looks like to a client.
#[derive(Debug, thiserror::Error)]
#[error("hanging request released by mock acquirer shutdown")]
pub(crate) struct Released;

pub(crate) type Answered = Result<Response<Full<Bytes>>, Released>;

/// Most paid order ids remembered for status queries. When full, new paid
/// orders are simply not remembered (a later query for them answers 404):
/// bounded memory matters more in a long load test than perfect recall.
const PAID_CAP: usize = 100_000;

/// The orders the simulation was paid, for its queries and reversals.
#[derive(Default)]
pub(crate) struct PaidOrders {
    ids: DashSet<Box<str>>,
    /// Size of `ids`, kept separately because `DashSet::len` locks every
    /// shard. Updated only on real inserts/removes, so it stays exact up to
    /// races between the cap check and the insert (a few entries over).
    len: AtomicUsize,
}

impl PaidOrders {
    pub fn remember(&self, id: Box<str>) {
        if self.len.load(Ordering::Relaxed) < PAID_CAP && self.ids.insert(id) {
            self.len.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    pub fn forget(&self, id: &str) {
        if self.ids.remove(id).is_some() {
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
