//! The JSON API's notifications: a pending payment is decided after
//! `notify_delay_ms` and announced to `notify_url` by a signed `POST`, with
//! the faults real acquirers (and attackers) produce: lost, repeated,
//! forged, wrong amount.
//!
//! Why it is built so:
//!
//! * One task per pending payment, spawned when it is answered
//!   `"processing"`: it sleeps, decides (moves the order book), then sends
//!   the copies its fate says, in this order — forged, wrong amount,
//!   genuine, repeat. The fault copies come first so that a receiver is
//!   tested while the payment is still pending on its side (a forged
//!   `"paid"` for an already decided payment proves less).
//! * The outcome and the faults were drawn with the payment (see
//!   [`crate::fate`]), so a seeded run notifies the same way every time.
//! * This module only says what the copies are (body, `x-signature`); how
//!   they are sent, retried and waited for is [`crate::delivery`]'s, which
//!   the epay gateway's notifications share.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Method, Uri};
use sha2::Sha256;

use crate::answer::{Behavior, Secret};
use crate::delivery::{self, deliver, http_uri, send, Ack, Message, Retries};
use crate::fate::Faults;
use crate::orders::{plus_one, Facts, Status};
use crate::state::State;

/// The header carrying a notification's signature.
const SIGNATURE_HEADER: HeaderName = HeaderName::from_static("x-signature");

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
    pub retries: Retries,
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
            retries: Retries::of(b),
        }
    }
}

/// Starts a pending payment's task: decide after the delay, then announce.
pub(crate) fn schedule(state: &Arc<State>, job: Job) {
    delivery::spawn(state, |state| async move { run(&state, job).await });
}

async fn run(state: &State, job: Job) {
    tokio::time::sleep(job.delay).await;
    let status = if job.paid { Status::Paid } else { Status::Failed };
    // A payment decided paid is charged now.
    let now = state.clock.now_ms();
    if !state.orders.settle(&job.facts, status, now) && job.remembered {
        return;
    }
    let c = &state.counters;
    if job.paid {
        state.charged(&job.facts, now);
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
    let uri = match http_uri(url) {
        Some(uri) => uri,
        None => {
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
        if send(state, &message(&uri, body, Some(&sig)), job.retries.once()).await {
            c.forged_accepted.bump();
        }
    }
    if job.faults.wrong_amount {
        c.notify_wrong_amount.bump();
        let amount = plus_one(facts.amount.as_ref());
        let body = facts.to_json(status.word(), None, Some(&amount));
        let sig = signed(&body);
        deliver(state, &message(&uri, body, sig.as_deref()), job.retries).await;
    }
    let body = facts.to_json(status.word(), None, None);
    let sig = signed(&body);
    let genuine = message(&uri, body, sig.as_deref());
    c.notify_sent.bump();
    deliver(state, &genuine, job.retries).await;
    if job.faults.repeated {
        c.notify_repeated.bump();
        deliver(state, &genuine, job.retries).await;
    }
}

/// A copy: the JSON body `POST`ed, with its signature if it has one.
fn message(uri: &Uri, body: Bytes, sig: Option<&str>) -> Message {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // A hex signature is always a valid header value; should it not be,
    // the copy goes unsigned and the receiver refuses it.
    if let Some(sig) = sig.and_then(|s| HeaderValue::from_str(s).ok()) {
        headers.insert(SIGNATURE_HEADER, sig);
    }
    Message {
        method: Method::POST,
        uri: uri.clone(),
        headers,
        body,
        acknowledged_by: Ack::Status2xx,
    }
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
