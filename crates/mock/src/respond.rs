//! Producing an answer: the simulated acquirer's API, and scripted replies.
//!
//! The simulation speaks just enough of an acquirer's API for the proxy to
//! route to it: payments (`POST`), status queries (`GET .../{order_id}`) and
//! reversals (`POST .../{order_id}/reverse`). It remembers the orders it was
//! paid, in a sharded [`DashSet`] whose size is tracked in an atomic (asking
//! a `DashMap` for its length would lock every shard), so that a query
//! answers what really happened. Fixed answers use static bodies; a payment
//! allocates its JSON answer and, when paid, the order id it remembers.
//!
//! What the simulation counts (see [`crate::Counters`]): `requests` are
//! payment attempts only; each ends as one of `successes`, `failures` or
//! `hangs` (a payment still sleeping through its latency is in `requests`
//! but in none of the three). Status queries and reversals have their own
//! counters. Scripted replies are not counted there: a test sees them
//! through recording.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use serde::{Deserialize, Serialize};

use crate::answer::{status_or_503, Behavior, Reply};
use crate::path::{last_segment, percent_decode};
use crate::state::{Answered, State};

/// The simulated acquirer's answer to one request.
pub(crate) async fn simulate(state: &State, b: Behavior, method: &Method, path: &str, body: &[u8]) -> Answered {
    if method == Method::GET {
        return Ok(query(state, &percent_decode(last_segment(path))));
    }
    if method == Method::POST {
        if let Some(rest) = path.strip_suffix("/reverse") {
            return Ok(reverse(state, &percent_decode(last_segment(rest))));
        }
        return payment(state, b, body).await;
    }
    Ok(json(
        StatusCode::METHOD_NOT_ALLOWED,
        Bytes::from_static(b"{\"status\":\"method not allowed\"}"),
    ))
}

async fn payment(state: &State, b: Behavior, body: &[u8]) -> Answered {
    let counters = &state.counters;
    counters.requests.bump();
    let order_id = order_id(body);

    if b.hang_rate > 0.0 && fastrand::f64() < b.hang_rate {
        counters.hangs.bump();
        return Err(state.released().await);
    }

    let delay = b.latency_ms
        + match b.jitter_ms {
            0 => 0,
            j => fastrand::u64(0..=j),
        };
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }

    // `f64()` is in [0, 1): a rate of 1 always pays, 0 never does.
    if fastrand::f64() < b.success_rate {
        counters.successes.bump();
        let answer = outcome(StatusCode::OK, order_id.as_ref(), &state.name);
        // Serialised first so the id can be moved into the set, not cloned.
        if let Some(id) = order_id {
            state.orders.remember(id.into_key());
        }
        Ok(json(StatusCode::OK, answer))
    } else {
        counters.failures.bump();
        let status = status_or_503(b.fail_status);
        Ok(json(status, outcome(status, order_id.as_ref(), &state.name)))
    }
}

fn query(state: &State, id: &str) -> Response<Full<Bytes>> {
    state.counters.queries.bump();
    if state.orders.contains(id) {
        let body = to_json(&QueryAnswer {
            status: "paid",
            order_id: id,
            acquirer: Some(&state.name),
        });
        json(StatusCode::OK, body)
    } else {
        json(StatusCode::NOT_FOUND, Bytes::from_static(b"{\"status\":\"unknown\"}"))
    }
}

fn reverse(state: &State, id: &str) -> Response<Full<Bytes>> {
    state.counters.reversals.bump();
    state.orders.forget(id);
    // Answered 200 even for an unknown order: reversals must be idempotent,
    // and a retried reversal of an already reversed order is a success.
    let body = to_json(&QueryAnswer {
        status: "reversed",
        order_id: id,
        acquirer: None,
    });
    json(StatusCode::OK, body)
}

/// A scripted reply to the `k`-th request (from 0) it answers.
pub(crate) async fn script(state: &State, reply: &Reply, k: usize, body: &[u8]) -> Answered {
    if reply.hangs() {
        return Err(state.released().await);
    }
    if !reply.delay().is_zero() {
        tokio::time::sleep(reply.delay()).await;
    }
    let (status, scripted) = reply.nth(k);
    let body = match scripted {
        Some(b) => b.clone(),
        None => outcome(status, order_id(body).as_ref(), &state.name),
    };
    Ok(json(status, body))
}

/// The mock's own answer body: the outcome its status means, the order it
/// is about (`null` when the request named none: the answer keeps its
/// shape) and which mock answered.
fn outcome(status: StatusCode, order_id: Option<&OrderId>, acquirer: &str) -> Bytes {
    let word = if status.is_success() {
        "paid"
    } else if status.is_client_error() {
        "declined"
    } else {
        "failed"
    };
    to_json(&PaymentAnswer {
        status: word,
        order_id,
        acquirer,
    })
}

/// The order id of a payment body, if any. Anything unexpected (not JSON,
/// no `order_id`, an `order_id` that is neither a string nor a number)
/// means "no order id", never an error.
fn order_id(body: &[u8]) -> Option<OrderId> {
    let parsed: PaymentBody = serde_json::from_slice(body).ok()?;
    match parsed.order_id? {
        serde_json::Value::String(s) => Some(OrderId::Str(s)),
        serde_json::Value::Number(n) => Some(OrderId::Num(n)),
        _ => None,
    }
}

#[derive(Deserialize)]
struct PaymentBody {
    // Other fields are skipped by serde without being materialised.
    #[serde(default)]
    order_id: Option<serde_json::Value>,
}

/// An order id as the payment sent it: echoed back with its JSON type,
/// remembered as text (so `42` and `"42"` are the same order for a query,
/// whose id comes from the path).
enum OrderId {
    Str(String),
    Num(serde_json::Number),
}

impl OrderId {
    fn into_key(self) -> Box<str> {
        match self {
            OrderId::Str(s) => s.into_boxed_str(),
            OrderId::Num(n) => n.to_string().into_boxed_str(),
        }
    }
}

impl Serialize for OrderId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            OrderId::Str(v) => s.serialize_str(v),
            OrderId::Num(v) => v.serialize(s),
        }
    }
}

#[derive(Serialize)]
struct PaymentAnswer<'a> {
    status: &'static str,
    order_id: Option<&'a OrderId>,
    acquirer: &'a str,
}

#[derive(Serialize)]
struct QueryAnswer<'a> {
    status: &'static str,
    order_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    acquirer: Option<&'a str>,
}

fn to_json<T: Serialize>(value: &T) -> Bytes {
    // Serialising these plain structs into a Vec cannot fail; an empty
    // object is a harmless fallback rather than a panic path.
    serde_json::to_vec(value).map_or_else(|_| Bytes::from_static(b"{}"), Bytes::from)
}

pub(crate) fn json(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}
