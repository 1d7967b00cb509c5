//! Notifications out: a pending payment is decided after `notify_delay_ms`
//! and announced to `notify_url` by a signed `POST`, with the faults real
//! acquirers (and attackers) produce: lost, repeated, forged, wrong amount.
//!
//! Why it is built so:
//!
//! * One task per pending payment, spawned when it is answered
//!   `"processing"`: it sleeps, decides (moves the order book), then sends
//!   the copies its fate says, in this order — forged, wrong amount,
//!   genuine, repeat. The fault copies come first so that a receiver is
//!   tested while the payment is still pending on its side (a forged
//!   `"paid"` for an already decided payment proves less).
//! * A copy from the acquirer (genuine, repeat, wrong amount) is retried
//!   while the receiver does not answer 2xx, a bounded number of times with
//!   doubling back-off, as acquirers do. A forged copy is sent once: its
//!   sender is not the acquirer and has no reason to insist.
//! * Deliveries at once are capped ([`crate::state::MAX_DELIVERIES`]) and
//!   each try has a timeout, so a receiver that is down or hangs cannot make
//!   the mock open unbounded connections or keep tasks forever; shutdown
//!   ends every task.
//! * The outcome and the faults were drawn with the payment (see
//!   [`crate::fate`]), so a seeded run notifies the same way every time.
//! * This module only acts. What its tasks share (the HTTP client, the
//!   delivery cap, the count of unsettled payments) is data, the
//!   [`Notifier`](crate::state::Notifier), held by the mock's [`State`] like
//!   the order book and the counters the tasks also move. So `notify` reads
//!   `state` and `state` never reads `notify`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::header::CONTENT_TYPE;
use http::{Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use sha2::Sha256;

use crate::answer::{Behavior, Secret};
use crate::fate::Faults;
use crate::orders::{plus_one, Facts, Status};
use crate::state::{shut_down, State};

/// The header carrying a notification's signature.
const SIGNATURE_HEADER: &str = "x-signature";

/// One try's limit: connect, send, and read the answer.
const TRY_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest wait between two tries.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A receiver's answer body is read (so the connection can be reused) up
/// to this size.
const MAX_ANSWER: usize = 64 * 1024;

/// The lowercase hex HMAC-SHA256 of `body` under `key`.
pub(crate) fn sign(key: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length, so this never falls back in practice;
    // an empty signature would simply be refused by the receiver.
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(body);
            hex::encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

/// Everything a pending payment's task needs; taken from the behaviour when
/// the payment is answered, so a later `set_behavior` does not change it.
pub(crate) struct Job {
    pub facts: Arc<Facts>,
    /// Whether the order book has it: if it is gone by the decision, it was
    /// reversed, and is neither decided nor announced.
    pub remembered: bool,
    pub paid: bool,
    pub faults: Faults,
    pub delay: Duration,
    pub url: Option<Arc<str>>,
    pub secret: Option<Secret>,
    pub attempts: u32,
    pub backoff: Duration,
}

impl Job {
    pub fn new(b: &Behavior, facts: Arc<Facts>, remembered: bool, paid: bool, faults: Faults) -> Job {
        Job {
            facts,
            remembered,
            paid,
            faults,
            delay: Duration::from_millis(b.notify_delay_ms),
            url: b.notify_url.clone(),
            secret: b.notify_secret.clone(),
            attempts: b.notify_attempts.max(1),
            backoff: Duration::from_millis(b.notify_backoff_ms),
        }
    }
}

/// Marks a job finished however its task ends (done, shut down, panicked).
struct Unsettled(Arc<State>);

impl Drop for Unsettled {
    fn drop(&mut self) {
        let n = &self.0.notifier;
        if n.unsettled.fetch_sub(1, Ordering::SeqCst) == 1 {
            n.settled.notify_waiters();
        }
    }
}

/// Starts a pending payment's task: decide after the delay, then announce.
pub(crate) fn schedule(state: &Arc<State>, job: Job) {
    state.notifier.unsettled.fetch_add(1, Ordering::SeqCst);
    let guard = Unsettled(state.clone());
    tokio::spawn(async move {
        let state = guard.0.clone();
        tokio::select! {
            () = run(&state, job) => {}
            () = shut_down(state.shutdown.clone()) => {}
        }
        drop(guard);
    });
}

/// Waits until no pending payment is left undecided or unannounced, at
/// most `timeout`; whether that happened.
pub(crate) async fn wait_settled(state: &State, timeout: Duration) -> bool {
    let n = &state.notifier;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        // Registered before the check, so a task ending in between still wakes it.
        let settled = n.settled.notified();
        tokio::pin!(settled);
        settled.as_mut().enable();
        if n.unsettled.load(Ordering::SeqCst) == 0 {
            return true;
        }
        if tokio::time::timeout_at(deadline, settled).await.is_err() {
            return n.unsettled.load(Ordering::SeqCst) == 0;
        }
    }
}

async fn run(state: &State, job: Job) {
    tokio::time::sleep(job.delay).await;
    let status = if job.paid { Status::Paid } else { Status::Failed };
    if !state.orders.settle(&job.facts, status) && job.remembered {
        return;
    }
    let c = &state.counters;
    if job.paid {
        c.settled_paid.bump();
    } else {
        c.settled_failed.bump();
    }
    let Some(url) = job.url.as_deref() else {
        return;
    };
    if job.faults.lost {
        c.notify_lost.bump();
        return;
    }
    let uri = match url.parse::<Uri>() {
        Ok(uri) if uri.scheme_str() == Some("http") && uri.authority().is_some() => uri,
        _ => {
            tracing::warn!(url, "mock acquirer: notify_url is not an http:// URL; not notifying");
            c.notify_undelivered.bump();
            return;
        }
    };
    let key = job.secret.as_ref().map(Secret::bytes);
    let signed = |body: &Bytes| key.map(|k| sign(k, body));
    let facts = &job.facts;

    if job.faults.forged {
        c.notify_forged.bump();
        let body = facts.to_json(Status::Paid.word(), None, None);
        // Signed with a key that is not the channel's: well-formed, wrong.
        let mut wrong_key = key.unwrap_or_default().to_vec();
        wrong_key.extend_from_slice(b"-forged");
        let sig = sign(&wrong_key, &body);
        if send(state, &uri, &body, Some(&sig), 1, job.backoff).await {
            c.forged_accepted.bump();
        }
    }
    if job.faults.wrong_amount {
        c.notify_wrong_amount.bump();
        let amount = plus_one(facts.amount.as_ref());
        let body = facts.to_json(status.word(), None, Some(&amount));
        let sig = signed(&body);
        deliver(state, &uri, &body, sig.as_deref(), &job).await;
    }
    let body = facts.to_json(status.word(), None, None);
    let sig = signed(&body);
    c.notify_sent.bump();
    deliver(state, &uri, &body, sig.as_deref(), &job).await;
    if job.faults.repeated {
        c.notify_repeated.bump();
        deliver(state, &uri, &body, sig.as_deref(), &job).await;
    }
}

/// Sends a copy from the acquirer with its retries; counts it undelivered
/// if no try was answered 2xx.
async fn deliver(state: &State, uri: &Uri, body: &Bytes, sig: Option<&str>, job: &Job) {
    if !send(state, uri, body, sig, job.attempts, job.backoff).await {
        state.counters.notify_undelivered.bump();
    }
}

/// Up to `attempts` tries, `backoff` doubling between them; whether one was
/// answered 2xx.
async fn send(state: &State, uri: &Uri, body: &Bytes, sig: Option<&str>, attempts: u32, backoff: Duration) -> bool {
    let n = &state.notifier;
    let mut wait = backoff;
    for attempt in 1..=attempts {
        let answered = {
            // `Err` only if the semaphore were closed, which it never is.
            let Ok(_slot) = n.deliveries.acquire().await else {
                return false;
            };
            state.counters.notify_attempts.bump();
            try_once(&n.client, uri, body, sig).await
        };
        match answered {
            Ok(status) if status.is_success() => {
                state.counters.notify_delivered.bump();
                return true;
            }
            Ok(status) => tracing::debug!(%uri, attempt, %status, "notification not acknowledged"),
            Err(e) => tracing::debug!(%uri, attempt, error = %e, "notification not delivered"),
        }
        if attempt < attempts {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(MAX_BACKOFF);
        }
    }
    false
}

#[derive(Debug, thiserror::Error)]
enum TryError {
    #[error("building the request: {0}")]
    Request(#[from] http::Error),
    #[error("{0}")]
    Client(#[from] hyper_util::client::legacy::Error),
    #[error("no answer within {TRY_TIMEOUT:?}")]
    Timeout,
}

async fn try_once(
    client: &Client<HttpConnector, Full<Bytes>>,
    uri: &Uri,
    body: &Bytes,
    sig: Option<&str>,
) -> Result<http::StatusCode, TryError> {
    let mut req = Request::post(uri.clone()).header(CONTENT_TYPE, "application/json");
    if let Some(sig) = sig {
        req = req.header(SIGNATURE_HEADER, sig);
    }
    let req = req.body(Full::new(body.clone()))?;
    let exchange = async {
        let resp = client.request(req).await?;
        let status = resp.status();
        // Read so the connection can be reused; what it says does not matter.
        let _ = Limited::new(resp.into_body(), MAX_ANSWER).collect().await;
        Ok(status)
    };
    tokio::time::timeout(TRY_TIMEOUT, exchange)
        .await
        .unwrap_or(Err(TryError::Timeout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_like_rfc_4231() {
        // RFC 4231, test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
