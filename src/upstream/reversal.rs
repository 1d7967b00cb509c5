//! Background reversals of ambiguous attempts, and their bookkeeping.
//!
//! A reversal must not hold up the merchant's answer, but it must not be
//! forgotten either: each runs as a task registered in [`Reversals`], retried
//! with exponential back-off until the acquirer answers 2xx (reversed) or 4xx
//! (nothing to reverse / refused: final), or the tries run out — then it is
//! logged as an error with order id and channel, for a human. At shutdown
//! [`Reversals::drain`] waits for pending ones and logs any still open.
//!
//! A reversal whose template names the payment by `{order_id}` alone asks
//! the caller's [`MayName`] hook before every try: once another payment
//! used that order id on the channel (another merchant's, say), the
//! acquirer could void that one instead, so nothing more is sent and the
//! reversal is handed to humans (`given_up`).
//!
//! How a reversal ended is handed to the caller's [`OnEnd`] hook, awaited
//! inside the reversal's task (so `drain` waits for it too): the caller
//! records it in the journal. A hook, not a journal handle, keeps this
//! module about talking to acquirers.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use prometheus::IntCounterVec;
use tokio::sync::Notify;

use super::ambiguity::{endpoint_request, Subject};
use super::client::{AttemptResult, Upstream};
use crate::config::ChannelConfig;

/// Tries before a reversal is handed to humans.
const TRIES: u32 = 6;
/// First back-off; doubles each try (0.2, 0.4, 0.8, 1.6, 3.2 s).
const BACKOFF: Duration = Duration::from_millis(200);

/// How a reversal ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// The acquirer answered 2xx: the attempt is reversed.
    Accepted,
    /// The acquirer answered 4xx: nothing to reverse, or it will not.
    Refused,
    /// No answer after every try: a human must reverse it.
    GaveUp,
}

impl Ending {
    /// As the journal records it (`Adjustment::result`).
    pub fn as_str(self) -> &'static str {
        match self {
            Ending::Accepted => "accepted",
            Ending::Refused => "refused",
            Ending::GaveUp => "given_up",
        }
    }
}

/// A reversal's end, for its [`OnEnd`] hook.
#[derive(Debug, Clone)]
pub(crate) struct Ended {
    pub channel: Arc<str>,
    pub trade_no: String,
    pub ending: Ending,
    /// The last answer, for the record (a status line, never a body).
    pub detail: String,
    pub at_ms: i64,
}

/// Called once with a reversal's end, awaited inside the reversal's task.
pub(crate) type OnEnd = Box<dyn FnOnce(Ended) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// Asked before each try of a reversal that names the payment by order id
/// alone: may it still? (`false`: another payment shares the order id there.)
pub(crate) type MayName = Box<dyn Fn() -> Pin<Box<dyn Future<Output = bool> + Send>> + Send>;

/// A running reversal: channel, order id, trade number.
type Running = (Arc<str>, String, String);

#[derive(Default)]
pub(crate) struct Reversals {
    /// Each reversal still running.
    pending: Mutex<HashMap<u64, Running>>,
    next: AtomicU64,
    changed: Notify,
}

impl Reversals {
    /// Starts reversing the payment (`order_id`, `trade_no`) on `channel` in
    /// the background; `on_end` is told how it ended. `may_name` is asked
    /// before each try when the template names the order id alone.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        self: &Arc<Self>,
        channel: ChannelConfig,
        upstream: Upstream,
        (order_id, trade_no): (String, String),
        body: Bytes,
        request_id: HeaderValue,
        counter: IntCounterVec,
        may_name: MayName,
        on_end: OnEnd,
    ) {
        let Some(endpoint) = channel.reversal.clone() else {
            return;
        };
        let by_order_only = super::ambiguity::by_order_only(&endpoint);
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock()
            .insert(id, (channel.id.clone(), order_id.clone(), trade_no.clone()));
        let this = self.clone();
        tokio::spawn(async move {
            let count = |result: &str| counter.with_label_values(&[&channel.id, result]).inc();
            let mut delay = BACKOFF;
            let mut done = false;
            let mut ending = Ending::GaveUp;
            let mut detail = String::new();
            for attempt in 1..=TRIES {
                if by_order_only && !may_name().await {
                    tracing::error!(channel = %channel.id, order_id = %crate::redact::mask_pans(&order_id), %trade_no, "reversal not sent: another payment uses this order id on the channel, and the reversal template names the order id alone; reverse this payment by hand");
                    count("gave_up");
                    detail = "not sent: the order id is shared on this channel".into();
                    done = true;
                    break;
                }
                let subject = Subject {
                    order_id: &order_id,
                    trade_no: &trade_no,
                    amount: None,
                };
                let result = match endpoint_request(&channel, &endpoint, subject, body.clone(), &request_id) {
                    Ok(req) => upstream.send(req, channel.timeout).await,
                    Err(e) => AttemptResult::Broken(e.to_string()),
                };
                detail = result.to_string();
                match &result {
                    AttemptResult::Answered { status, .. } if status.is_success() => {
                        tracing::info!(channel = %channel.id, order_id = %crate::redact::mask_pans(&order_id), attempt, "reversal accepted");
                        count("success");
                        done = true;
                        ending = Ending::Accepted;
                    }
                    AttemptResult::Answered { status, .. } if status.is_client_error() => {
                        tracing::warn!(channel = %channel.id, order_id = %crate::redact::mask_pans(&order_id), %status, "reversal refused by the acquirer");
                        count("rejected");
                        done = true;
                        ending = Ending::Refused;
                    }
                    other => {
                        tracing::warn!(channel = %channel.id, order_id = %crate::redact::mask_pans(&order_id), attempt, answer = %other, "reversal failed; will retry");
                        count("retry");
                    }
                }
                if done {
                    break;
                }
                if attempt < TRIES {
                    tokio::time::sleep(delay + Duration::from_millis(fastrand::u64(0..50))).await;
                    delay *= 2;
                }
            }
            if !done {
                count("gave_up");
                tracing::error!(channel = %channel.id, order_id = %crate::redact::mask_pans(&order_id), "reversal gave up after {TRIES} tries: reverse this payment by hand");
            }
            on_end(Ended {
                channel: channel.id.clone(),
                trade_no,
                ending,
                detail,
                at_ms: unix_ms(),
            })
            .await;
            this.lock().remove(&id);
            this.changed.notify_waiters();
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Running>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Is a reversal of another payment under `order_id` running on `channel`
    /// here? (Its acquirer may still hold that payment's attempt.)
    pub fn running_for_other(&self, channel: &str, order_id: &str, trade_no: &str) -> bool {
        self.lock()
            .values()
            .any(|(c, o, t)| &**c == channel && o == order_id && t != trade_no)
    }

    pub fn pending(&self) -> usize {
        self.lock().len()
    }

    /// Waits up to `limit` for pending reversals; logs any left unfinished.
    pub async fn drain(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.changed.notified();
            if self.pending() == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
        for (channel, order_id, _) in self.lock().values() {
            tracing::error!(%channel, order_id = %crate::redact::mask_pans(order_id), "shutting down with a reversal unfinished: reverse this payment by hand");
        }
    }
}

/// Unix milliseconds now.
fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
