//! What the server, the answers and the handles share: the state of one
//! mock, its counters, the simulation's order books (the JSON API's and the
//! epay gateway's) and notifier, its clock, where its statements go, and how
//! shutdown reaches a request.
//!
//! Kept apart from the server and from the answers so that both can read it
//! and neither reads the other's insides.
//!
//! Only data lives here, never the code that acts on it: the [`Notifier`] is
//! the notification tasks' shared sending side, and [`crate::delivery`] is
//! what sends. Holding the data here lets every module that acts (`respond`,
//! `notify`, `delivery`, `gateway`, `server`) read `state` while `state`
//! reads none of them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{watch, Notify, Semaphore};

use arc_swap::ArcSwap;

use crate::answer::Rules;
use crate::epay::book::Book;
use crate::fault::{Fault, FaultCounters, Ledger};
use crate::orders::Orders;
use crate::record::Recorder;
use crate::statement::StatementSpec;

/// Shared between the handles and every request.
pub(crate) struct State {
    pub local_addr: SocketAddr,
    /// Named in answers (`"acquirer"`): the address unless given a name.
    pub name: Box<str>,
    pub rules: Rules,
    pub counters: AtomicCounters,
    pub orders: Orders,
    /// The epay gateway's orders (`Protocol::Epay`).
    pub epay: Book,
    pub notifier: Notifier,
    pub recorder: Option<Recorder>,
    pub shutdown: watch::Receiver<bool>,
    /// When things happen: a payment's charge, an epay order's times.
    pub clock: Clock,
    /// Where `POST /-/statement/write` writes, if anywhere.
    pub statements: Option<StatementTarget>,
    /// The fault switched on at run time (`POST /-/fault`), and how many
    /// requests met each kind.
    pub fault: ArcSwap<Fault>,
    pub faulted: FaultCounters,
    /// Every charge, when kept ([`crate::Builder::ledger`]).
    pub ledger: Option<Ledger>,
    /// Held while statement files are written: two writes of the same days
    /// at once (the endpoint, the handle) would race on the same files.
    pub writing: Mutex<()>,
}

/// The directory and spec `POST /-/statement/write` writes with.
pub(crate) struct StatementTarget {
    pub dir: PathBuf,
    pub spec: StatementSpec,
}

/// A source of Unix milliseconds.
pub(crate) type NowMs = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The mock's time: the system's, or one a test sets
/// ([`crate::Builder::clock`]) so that charges fall where it wants them
/// (either side of a day cut) without sleeping.
#[derive(Clone, Default)]
pub(crate) struct Clock(Option<NowMs>);

impl Clock {
    pub fn new(now_ms: NowMs) -> Clock {
        Clock(Some(now_ms))
    }

    /// Unix milliseconds now.
    pub fn now_ms(&self) -> i64 {
        match &self.0 {
            Some(now) => now(),
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        }
    }
}

impl State {
    /// Notes a charge in the ledger, if one is kept.
    pub fn charged(&self, facts: &crate::orders::Facts, now_ms: i64) {
        if let Some(l) = &self.ledger {
            l.charge(facts, now_ms);
        }
    }

    /// Resolves once the mock shuts down: how a hanging request ends.
    pub async fn released(&self) -> Released {
        shut_down(self.shutdown.clone()).await;
        Released
    }
}

/// Notification deliveries in flight at once, across all payments.
pub(crate) const MAX_DELIVERIES: usize = 256;

/// The mock's sending side, shared by all its notification tasks.
pub(crate) struct Notifier {
    pub client: Client<HttpConnector, Full<Bytes>>,
    pub deliveries: Semaphore,
    /// Decisions (a pending payment's, an epay buyer's) not yet made and
    /// announced (or given up).
    pub unsettled: AtomicUsize,
    pub settled: Notify,
}

impl Default for Notifier {
    fn default() -> Self {
        Notifier {
            client: Client::builder(TokioExecutor::new()).build_http(),
            deliveries: Semaphore::new(MAX_DELIVERIES),
            unsettled: AtomicUsize::new(0),
            settled: Notify::new(),
        }
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
    pub invalid: Padded,
    pub hangs: Padded,
    pub queries: Padded,
    pub reversals: Padded,
    pub connections: Padded,
    pub pending: Padded,
    pub settled_paid: Padded,
    pub settled_failed: Padded,
    pub notify_sent: Padded,
    pub notify_lost: Padded,
    pub notify_repeated: Padded,
    pub notify_forged: Padded,
    pub notify_wrong_amount: Padded,
    pub notify_attempts: Padded,
    pub notify_delivered: Padded,
    pub notify_undelivered: Padded,
    pub forged_accepted: Padded,
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
