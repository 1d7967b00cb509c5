//! Sending notifications, whatever they say: the task a decision runs in,
//! the tries and back-off of one copy, one try on the wire, and waiting
//! until every decision is announced. The JSON API's notifications
//! ([`crate::notify`]) and the epay gateway's (`crate::gateway`) are both
//! built on it.
//!
//! Why it is built so:
//!
//! * A copy is a [`Message`]: method, URL, headers, body and what counts as
//!   acknowledged (a 2xx for the JSON API; a body containing `success` for
//!   epay, whose senders ignore the HTTP status). So the two protocols
//!   differ only in the messages they build, never in how they are sent.
//! * A copy from the acquirer is retried while the receiver does not
//!   acknowledge it, a bounded number of times with doubling back-off
//!   ([`Retries`]); a forger's copy is sent once.
//! * Deliveries at once are capped ([`crate::state::MAX_DELIVERIES`]) and
//!   each try has a timeout, so a receiver that is down or hangs cannot make
//!   the mock open unbounded connections or keep tasks forever; shutdown
//!   ends every task.
//! * What the tasks share (the HTTP client, the delivery cap, the count of
//!   unsettled decisions) is data, the [`Notifier`](crate::state::Notifier),
//!   held by the mock's [`State`]: this module reads `state`, never the
//!   reverse.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;

use crate::answer::Behavior;
use crate::state::{shut_down, State};

/// One try's limit: connect, send, and read the answer.
const TRY_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest wait between two tries.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A receiver's answer body is read (so the connection can be reused, and
/// epay's `success` found) up to this size.
const MAX_ANSWER: usize = 64 * 1024;

/// One notification copy, as it goes on the wire on every try.
pub(crate) struct Message {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub acknowledged_by: Ack,
}

/// What a receiver's answer must be for a copy to count as delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ack {
    /// A 2xx status (the JSON API).
    Status2xx,
    /// A body containing `success` in any case, whatever the status (epay).
    BodySaysSuccess,
}

/// How often a copy is tried, and how long between tries.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Retries {
    /// At least 1.
    pub attempts: u32,
    /// Before the second try; doubled before each further one, at most 5 s.
    pub backoff: Duration,
}

impl Retries {
    /// As the behaviour says (`notify_attempts`, `notify_backoff_ms`).
    pub fn of(b: &Behavior) -> Retries {
        Retries {
            attempts: b.notify_attempts.max(1),
            backoff: Duration::from_millis(b.notify_backoff_ms),
        }
    }

    /// One try only: a forger does not insist.
    pub fn once(self) -> Retries {
        Retries { attempts: 1, ..self }
    }
}

/// A URL the mock can notify: `http://` with a host (it speaks no TLS as a
/// client).
pub(crate) fn http_uri(url: &str) -> Option<Uri> {
    match url.parse::<Uri>() {
        Ok(uri) if uri.scheme_str() == Some("http") && uri.authority().is_some() => Some(uri),
        _ => None,
    }
}

/// Marks a decision's task finished however it ends (done, shut down, panicked).
struct Unsettled(Arc<State>);

impl Drop for Unsettled {
    fn drop(&mut self) {
        let n = &self.0.notifier;
        if n.unsettled.fetch_sub(1, Ordering::SeqCst) == 1 {
            n.settled.notify_waiters();
        }
    }
}

/// Runs a decision and its announcements as a task of its own, counted as
/// unsettled until it ends and ended by the mock's shutdown.
pub(crate) fn spawn<F, Fut>(state: &Arc<State>, task: F)
where
    F: FnOnce(Arc<State>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    state.notifier.unsettled.fetch_add(1, Ordering::SeqCst);
    let guard = Unsettled(state.clone());
    let run = task(state.clone());
    tokio::spawn(async move {
        let shutdown = shut_down(guard.0.shutdown.clone());
        tokio::select! {
            () = run => {}
            () = shutdown => {}
        }
        drop(guard);
    });
}

/// Waits until no decision is left undecided or unannounced, at most
/// `timeout`; whether that happened.
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

/// Sends a copy from the acquirer with its retries; counts it undelivered
/// if no try was acknowledged.
pub(crate) async fn deliver(state: &State, message: &Message, retries: Retries) {
    if !send(state, message, retries).await {
        state.counters.notify_undelivered.bump();
    }
}

/// Tries a copy as `retries` says; whether one try was acknowledged.
pub(crate) async fn send(state: &State, message: &Message, retries: Retries) -> bool {
    let n = &state.notifier;
    let mut wait = retries.backoff;
    for attempt in 1..=retries.attempts {
        let answered = {
            // `Err` only if the semaphore were closed, which it never is.
            let Ok(_slot) = n.deliveries.acquire().await else {
                return false;
            };
            state.counters.notify_attempts.bump();
            try_once(&n.client, message).await
        };
        let uri = &message.uri;
        match answered {
            Ok(true) => {
                state.counters.notify_delivered.bump();
                return true;
            }
            Ok(false) => tracing::debug!(%uri, attempt, "notification not acknowledged"),
            Err(e) => tracing::debug!(%uri, attempt, error = %e, "notification not delivered"),
        }
        if attempt < retries.attempts {
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

/// One try; whether the receiver acknowledged it.
async fn try_once(client: &Client<HttpConnector, Full<Bytes>>, message: &Message) -> Result<bool, TryError> {
    let mut req = Request::builder()
        .method(message.method.clone())
        .uri(message.uri.clone());
    if let Some(headers) = req.headers_mut() {
        headers.extend(message.headers.clone());
    }
    let req = req.body(Full::new(message.body.clone()))?;
    let exchange = async {
        let resp = client.request(req).await?;
        let status = resp.status();
        // Read whole (up to the limit) so the connection can be reused.
        let body = Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Ok(match message.acknowledged_by {
            Ack::Status2xx => status.is_success(),
            Ack::BodySaysSuccess => says_success(&body),
        })
    };
    tokio::time::timeout(TRY_TIMEOUT, exchange)
        .await
        .unwrap_or(Err(TryError::Timeout))
}

/// Whether `body` contains `success` in any case.
fn says_success(body: &[u8]) -> bool {
    body.windows(7).any(|w| w.eq_ignore_ascii_case(b"success"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_in_any_case_anywhere() {
        assert!(says_success(b"success"));
        assert!(says_success(b"<p>SUCCESS</p>"));
        assert!(!says_success(b"fail"));
        assert!(!says_success(b"succes"));
        assert!(!says_success(b""));
    }

    #[test]
    fn only_plain_http_urls() {
        assert!(http_uri("http://127.0.0.1:1/n?a=1").is_some());
        assert!(http_uri("https://shop.example/n").is_none());
        assert!(http_uri("/relative").is_none());
        assert!(http_uri("not a url").is_none());
    }
}
