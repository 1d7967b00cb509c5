//! Producing an answer: the simulated acquirer's API, and scripted replies.
//!
//! The simulation speaks just enough of an acquirer's API for the proxy to
//! route to it: payments (`POST`), status queries (`GET .../{order_id}` or
//! `.../{trade_no}`) and reversals (`POST .../{order_id}/reverse`). It keeps
//! an order book (see [`crate::orders`]) so that a query answers what really
//! happened, and schedules a pending payment's decision and notification
//! (see [`crate::notify`]).
//!
//! How an outcome is stated: the body's `status` always says it (`paid`,
//! `declined`, `failed`, `processing`). The HTTP status says it too — 200
//! paid, 202 processing, `fail_status` refused; a query of a decided-failed
//! payment 404, "never charged" — unless `outcome_in_body`, where every
//! payment and every query of a known payment is answered 200 and only the
//! body tells. An unknown payment's query is 404 either way.
//!
//! What the simulation counts (see [`crate::Counters`]): `requests` are
//! payment attempts only; each ends as one of `successes`, `failures`,
//! `pending` or `hangs` (a payment still sleeping through its latency is in
//! `requests` but in none of them). Status queries and reversals have their
//! own counters. Scripted replies are not counted there: a test sees them
//! through recording.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use http::request::Parts;
use http::{Method, Response, StatusCode};
use http_body_util::Full;

use crate::answer::{status_or_503, Behavior, Dice, Reply};
use crate::fate::{Fate, Outcome};
use crate::notify::{self, Job};
use crate::orders::{to_json, Facts, Status};
use crate::path::{last_segment, percent_decode};
use crate::state::{Answered, State};

/// The simulated acquirer's answer to one request.
pub(crate) async fn simulate(state: &Arc<State>, b: Behavior, dice: &Dice, parts: &Parts, body: &[u8]) -> Answered {
    let (method, path) = (&parts.method, parts.uri.path());
    if method == Method::GET {
        return Ok(query(state, &b, &percent_decode(last_segment(path))));
    }
    if method == Method::POST {
        if let Some(rest) = path.strip_suffix("/reverse") {
            return Ok(reverse(state, &percent_decode(last_segment(rest))));
        }
        return payment(state, b, dice, parts, body).await;
    }
    Ok(json(
        StatusCode::METHOD_NOT_ALLOWED,
        Bytes::from_static(b"{\"status\":\"method not allowed\"}"),
    ))
}

async fn payment(state: &Arc<State>, b: Behavior, dice: &Dice, parts: &Parts, body: &[u8]) -> Answered {
    let counters = &state.counters;
    counters.requests.bump();
    let fate = Fate::draw(&b, dice);
    if fate.hang {
        counters.hangs.bump();
        return Err(state.released().await);
    }
    if fate.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(fate.delay_ms)).await;
    }

    let facts = Arc::new(Facts::read(
        state.orders.next_seq(),
        state.local_addr.port(),
        parts,
        body,
    ));
    let in_body = |status: StatusCode| if b.outcome_in_body { StatusCode::OK } else { status };
    let (status, word) = match fate.outcome {
        Outcome::Paid => {
            counters.successes.bump();
            // Charged now, as it is answered paid.
            let now = state.clock.now_ms();
            state.orders.remember(&facts, Status::Paid, now);
            state.charged(&facts, now);
            (StatusCode::OK, "paid")
        }
        Outcome::Refused => {
            counters.failures.bump();
            let status = status_or_503(b.fail_status);
            (in_body(status), refusal(status))
        }
        Outcome::Pending { paid } => {
            counters.pending.bump();
            let remembered = state.orders.remember(&facts, Status::Processing, state.clock.now_ms());
            notify::schedule(state, Job::new(&b, facts.clone(), remembered, paid, fate.faults));
            (in_body(StatusCode::ACCEPTED), Status::Processing.word())
        }
    };
    Ok(json(status, facts.to_json(word, Some(&state.name), None)))
}

fn query(state: &State, b: &Behavior, segment: &str) -> Response<Full<Bytes>> {
    state.counters.queries.bump();
    let Some((facts, now)) = state.orders.find(segment) else {
        return json(StatusCode::NOT_FOUND, Bytes::from_static(b"{\"status\":\"unknown\"}"));
    };
    let status = match now {
        _ if b.outcome_in_body => StatusCode::OK,
        Status::Paid => StatusCode::OK,
        Status::Processing => StatusCode::ACCEPTED,
        Status::Failed => StatusCode::NOT_FOUND,
    };
    json(status, facts.to_json(now.word(), Some(&state.name), None))
}

fn reverse(state: &State, id: &str) -> Response<Full<Bytes>> {
    state.counters.reversals.bump();
    if let (Some(seq), Some(ledger)) = (state.orders.forget(id), &state.ledger) {
        ledger.reverse(seq, state.clock.now_ms());
    }
    // Answered 200 even for an unknown order: reversals must be idempotent,
    // and a retried reversal of an already reversed order is a success.
    json(
        StatusCode::OK,
        to_json(&Reversed {
            status: "reversed",
            order_id: id,
        }),
    )
}

/// A scripted reply to the `k`-th request (from 0) it answers.
pub(crate) async fn script(state: &State, reply: &Reply, k: usize, parts: &Parts, body: &[u8]) -> Answered {
    if reply.hangs() {
        return Err(state.released().await);
    }
    if !reply.delay().is_zero() {
        tokio::time::sleep(reply.delay()).await;
    }
    let (status, scripted) = reply.nth(k);
    let body = match scripted {
        Some(b) => b.clone(),
        // The mock's own body, in the simulation's shape; nothing is remembered.
        None => {
            let facts = Facts::read(state.orders.next_seq(), state.local_addr.port(), parts, body);
            let word = if status.is_success() { "paid" } else { refusal(status) };
            facts.to_json(word, Some(&state.name), None)
        }
    };
    Ok(json(status, body))
}

/// What a refusal with this status means: 4xx the acquirer declined, anything
/// else it failed.
fn refusal(status: StatusCode) -> &'static str {
    if status.is_client_error() {
        "declined"
    } else {
        "failed"
    }
}

#[derive(serde::Serialize)]
struct Reversed<'a> {
    status: &'static str,
    order_id: &'a str,
}

pub(crate) fn json(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

// Faulted answers (`crate::fault`): what a storm answers, and an answer cut
// off half-way.

/// The storm's answer.
pub(crate) fn storm() -> Answered {
    Ok(json(
        StatusCode::SERVICE_UNAVAILABLE,
        Bytes::from_static(b"{\"status\":\"failed\",\"error\":\"storm\"}"),
    ))
}

/// `answered`, cut off half-way: the headers promise the whole body, half
/// of it is sent, and hyper drops the connection when the body ends early.
pub(crate) fn cut(answered: Answered) -> Answered {
    let resp = answered?;
    let (mut parts, body) = resp.into_parts();
    let whole = body_bytes(body);
    let half = whole.slice(..whole.len() / 2);
    parts
        .headers
        .insert(CONTENT_LENGTH, HeaderValue::from(whole.len().max(1) as u64));
    Ok(http::Response::from_parts(parts, http_body_util::Full::new(half)))
}

fn body_bytes(body: http_body_util::Full<Bytes>) -> Bytes {
    use hyper::body::Body;
    use std::pin::pin;
    use std::task::{Context, Poll};
    // A `Full` body is ready at once: one poll yields its only frame.
    let mut body = pin!(body);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match body.as_mut().poll_frame(&mut cx) {
        Poll::Ready(Some(Ok(frame))) => frame.into_data().unwrap_or_default(),
        _ => Bytes::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_answer_promises_more_than_it_has() {
        let whole = Bytes::from_static(b"{\"status\":\"paid\",\"id\":\"m1t1\"}");
        let cut = cut(Ok(json(StatusCode::OK, whole.clone()))).expect("an answer");
        assert_eq!(cut.headers()[CONTENT_LENGTH], whole.len().to_string().as_str());
        assert_eq!(body_bytes(cut.into_body()), whole.slice(..whole.len() / 2));
    }
}
