//! Recording: every request a mock received, how many it held at once, and
//! the TLS handshakes it completed.
//!
//! Off unless asked for ([`crate::Builder::record`]): it takes a lock per
//! request and keeps every body, which a test wants and a load test must
//! not pay for. Waiting for requests is woken by their arrival (a
//! [`Notify`]), not by polling.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, Method, Version};
use rustls::ProtocolVersion;
use tokio::sync::Notify;

use crate::path::path_matches;

/// A request as the mock received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: Method,
    /// Path and query.
    pub path: String,
    pub headers: HeaderMap,
    /// Empty if it could not be read or was over the mock's 1 MiB limit.
    pub body: Bytes,
    pub version: Version,
}

impl Recorded {
    /// A header's value, if it is present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name)?.to_str().ok().map(str::to_owned)
    }

    /// The body as JSON; `Null` if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }

    /// Whether it was a `method` request to a path fitting `pattern` (a `*`
    /// segment matches any one segment, the query is ignored).
    pub fn is(&self, method: &str, pattern: &str) -> bool {
        self.method.as_str().eq_ignore_ascii_case(method) && path_matches(pattern, &self.path)
    }
}

/// What a TLS mock saw of one completed handshake.
#[derive(Clone, Debug)]
pub struct Handshake {
    /// The server name the client sent (SNI).
    pub sni: Option<String>,
    /// Whether the client presented a certificate.
    pub client_cert: bool,
    pub version: Option<ProtocolVersion>,
    pub alpn: Option<Vec<u8>>,
}

impl Handshake {
    pub(crate) fn of(conn: &rustls::ServerConnection) -> Handshake {
        Handshake {
            sni: conn.server_name().map(str::to_owned),
            client_cert: conn.peer_certificates().is_some_and(|c| !c.is_empty()),
            version: conn.protocol_version(),
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
        }
    }
}

#[derive(Default)]
pub(crate) struct Recorder {
    requests: Mutex<Vec<Recorded>>,
    handshakes: Mutex<Vec<Handshake>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    arrived: Notify,
}

/// A recorded request being answered; leaving (answered, or dropped with
/// its connection) frees its in-flight slot.
pub(crate) struct Visit<'a>(&'a Recorder);

impl Drop for Visit<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A poisoned lock only means a test panicked while holding it; the list
/// itself is still whole.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Recorder {
    /// Records a request on arrival, before it is answered.
    pub fn arrive(&self, parts: &Parts, body: &Bytes) -> Visit<'_> {
        lock(&self.requests).push(Recorded {
            method: parts.method.clone(),
            path: parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
            headers: parts.headers.clone(),
            body: body.clone(),
            version: parts.version,
        });
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        self.arrived.notify_waiters();
        Visit(self)
    }

    pub fn handshake(&self, h: Handshake) {
        lock(&self.handshakes).push(h);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.requests).clone()
    }

    pub fn count(&self, matching: impl Fn(&Recorded) -> bool) -> usize {
        lock(&self.requests).iter().filter(|r| matching(r)).count()
    }

    pub fn last(&self) -> Option<Recorded> {
        lock(&self.requests).last().cloned()
    }

    pub fn handshakes(&self) -> Vec<Handshake> {
        lock(&self.handshakes).clone()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    /// Waits until `n` recorded requests satisfy `matching`, at most
    /// `timeout`; whether they did.
    pub async fn wait(&self, n: usize, timeout: Duration, matching: impl Fn(&Recorded) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Registered before the check, so an arrival in between still wakes it.
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if self.count(&matching) >= n {
                return true;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return self.count(&matching) >= n;
            }
        }
    }
}
