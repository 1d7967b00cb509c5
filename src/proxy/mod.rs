//! The life of a payment, as a list of phases.
//!
//! ```text
//! route → identify → read_body → facts → check_amount → rank      intake.rs
//!       (rank: rule → gates → order → shares, in routing::select)
//!       → admit (rate, idempotency key, daily reservation: one step) admit.rs
//!       → attempts: ( pick → [open | moved] → send → verdict
//!                     → [resolve_ambiguity] )*                      attempt.rs
//!       → close (the final state, in the journal)                  ledger.rs
//!       → settle (keep the answer, commit/release, remember order)  admit.rs
//!       → respond                                                  respond.rs
//! follow-up: route → identify → read_body → recall the order's channel
//!       → send once → respond                                      followup.rs
//! notification in (/notify/{channel}): read_body → verify → match
//!       → check → commit → acknowledge                         notification.rs
//! epay (/mapi.php, /submit.php): read_body → params → identify → order
//!       → check_amount → … (the payment's phases) → render          epay.rs
//! ```
//!
//! [`phases`] is that list in code (and [`handle`] its `respond`); each
//! phase either hands the payment on or ends it. Phases before `attempts`
//! only read the request, the snapshot, the limits and the state store, so
//! a refusal is guaranteed to reach no acquirer (and, by `settle`, leaves
//! no idempotency record behind). The rules that keep a payment from being charged twice —
//! `verdict` and `resolve_ambiguity` — are in `attempt.rs` and nowhere else.
//!
//! The files follow the jobs: `intake` reads and may refuse, `admit` talks
//! to the state store at both ends, `attempt` talks to acquirers,
//! `followup` reuses `attempt`'s pieces for a request that is not a payment,
//! and `respond` turns every kind of ending ([`respond::Ended`]) into HTTP.
//! Phases pass a context instead of long argument lists: [`Inbound`] (a
//! request that passed `read_body`) and [`Payment`] (a payment from `facts`
//! on), in the manner of Pingora's `ProxyHttp` and its per-request `CTX`.
//!
//! Each request runs as its own task: a merchant that hangs up mid-payment
//! cannot cancel it half-way (the answer is still recorded for its retry),
//! and a panic becomes a 500 instead of a dropped connection.

mod admit;
mod attempt;
mod epay;
mod followup;
mod intake;
mod ledger;
mod notification;
mod respond;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;

use crate::app::App;
use crate::epay::order::PayOrder;
use crate::error::{Body, PaymentError};
use crate::payment::facts::Facts;
use crate::snapshot::{Merchant, Snapshot};
use crate::upstream::forward::REQUEST_ID;
use intake::Path;
use respond::Ended;

/// The payment listener's service function. Infallible: every error is a
/// response. The payment runs as a task of its own (see the module doc).
pub(crate) async fn serve(app: Arc<App>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    // Boxed: the payment's future is several kilobytes (every phase's
    // state), and a task moves its future by value into its cell and its
    // output over it; a box makes each of those moves a pointer's.
    let task = tokio::spawn(Box::pin(async move { handle(&app, req).await }));
    Ok(task.await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "payment task failed");
        let mut r = PaymentError::Internal.into_response();
        r.headers_mut().insert(REQUEST_ID, new_request_id());
        r
    }))
}

/// One request in, one response out, whatever happens.
async fn handle(app: &App, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let request_id = new_request_id();
    let snapshot = app.snapshot();
    if let Err(e) = intake::check_head(&req) {
        // Before any protocol reads it: the same answer for every path.
        let ended = Ended::refused(e);
        app.metrics.outcome(ended.outcome());
        let mut response = respond::respond(ended, &request_id);
        response.headers_mut().insert(REQUEST_ID, request_id);
        return response;
    }
    if let Some(endpoint) = epay::endpoint(&snapshot, &req) {
        // epay's endpoints: payments counted as payments, in epay's words.
        let mut response = epay::serve(app, &snapshot, endpoint, req, &request_id).await;
        response.headers_mut().insert(REQUEST_ID, request_id);
        return response;
    }
    if let Some(channel) = req.uri().path().strip_prefix(notification::PREFIX) {
        // A channel's notification: not a payment request (nor counted as one).
        let channel = channel.to_owned();
        let mut response = match intake::read_body(req, &snapshot).await {
            Ok((parts, body)) => notification::receive(app, &snapshot, &channel, parts, body).await,
            Err(e) => e.into_response(),
        };
        response.headers_mut().insert(REQUEST_ID, request_id);
        return response;
    }
    let (Ok(ended) | Err(ended)) = phases(app, &snapshot, req, &request_id).await;
    app.metrics.outcome(ended.outcome());
    let mut response = respond::respond(ended, &request_id);
    app.metrics.request_duration.observe(started.elapsed().as_secs_f64());
    response.headers_mut().insert(REQUEST_ID, request_id);
    response
}

/// The phases, in order. `Err` is a payment that ended early — a refusal
/// or a replay — before any acquirer was asked.
async fn phases(app: &App, snap: &Snapshot, req: Request<Incoming>, request_id: &HeaderValue) -> Result<Ended, Ended> {
    let path = intake::route(snap, &req)?;
    let merchant = intake::identify(snap, &req)?;
    let (parts, body) = intake::read_body(req, snap).await?;
    let req = Inbound {
        app,
        snap,
        request_id,
        merchant,
        parts,
        body,
    };
    if let Path::Followup { order_id } = path {
        return Ok(followup::follow_up(&req, &order_id).await?);
    }
    let payment = intake::facts(&req)?;
    pay(&payment).await
}

/// A payment's phases from `check_amount` on: the same for every protocol.
/// Once ranked, every ending carries its route (`X-Payroute-Route`).
async fn pay(payment: &Payment<'_>) -> Result<Ended, Ended> {
    intake::check_amount(payment)?;
    let ranked = intake::rank(payment)?;
    let claim = admit::admit(payment).await.map_err(|e| e.routed(ranked.route))?;
    let ended = attempt::attempts(payment, &ranked).await;
    ledger::close(payment, &ended).await;
    admit::settle(payment, claim, &ended).await;
    Ok(ended)
}

/// A request on the payment listener that `route`, `identify` and
/// `read_body` let through: what a payment and a follow-up share.
struct Inbound<'a> {
    app: &'a App,
    /// The config version this request holds from start to end.
    snap: &'a Snapshot,
    request_id: &'a HeaderValue,
    merchant: &'a Merchant,
    /// The merchant's request, forwarded as it came (see `upstream::forward`).
    parts: Parts,
    body: Bytes,
}

/// A payment, from `facts` to `settle`: the context every later phase reads.
/// What a phase learns about the payment belongs here, not in another
/// argument, so phases keep their signatures as the payment grows (a
/// journal's trade number, a protocol's own facts).
struct Payment<'a> {
    req: &'a Inbound<'a>,
    facts: Facts,
    /// The `Idempotency-Key` header; `None`: the order id is the key.
    key_header: Option<&'a str>,
    /// What "the same request" means for idempotency: method, path and body.
    fingerprint: [u8; 32],
    /// payroute's own id for the payment (`X-Payroute-Trade-No`, both ways).
    trade_no: String,
    /// An epay merchant's order (`/mapi.php`, `/submit.php`): sent to epay
    /// channels only, as a form of payroute's own; `None`: a JSON payment,
    /// forwarded as it came to JSON channels.
    epay: Option<Box<PayOrder>>,
}

impl Payment<'_> {
    /// The idempotency key, unscoped (the store scopes it to the merchant).
    fn key(&self) -> &str {
        self.key_header.unwrap_or(&self.facts.order_id)
    }
}

fn new_request_id() -> HeaderValue {
    let mut buf = [0u8; 16];
    let id = fastrand::u64(..);
    for (i, b) in buf.iter_mut().enumerate() {
        *b = b"0123456789abcdef"[((id >> (60 - 4 * i)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&buf).unwrap_or(HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_hex() {
        let id = new_request_id();
        assert_eq!(id.len(), 16);
        assert!(id.as_bytes().iter().all(u8::is_ascii_hexdigit));
    }
}
