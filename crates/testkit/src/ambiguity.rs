//! What a channel needs before payroute may fail a payment over after an
//! ambiguous attempt (a timeout, a 5xx, a broken exchange): a `query` that
//! can prove the acquirer never charged, or a `reversal`. A channel with
//! neither stops the payment at its first ambiguous attempt, so a test about
//! failover gives its channels a query and its fake acquirers an answer to
//! it; a test about the stop leaves them out.
//!
//! Why here: the config lines, the paths the fake acquirers see, and the
//! "answer every query: never charged" rule are the same in every test
//! module, and the query shares its path pattern with follow-ups, so one
//! definition keeps them from drifting apart.

use payroute_mock::{MockAcquirer, Reply};

/// Payments, as the fake acquirers see them.
pub const PAY: &str = "/v1/payments";
/// One order (`*` is the order id): status queries and `GET` follow-ups.
pub const ORDER: &str = "/v1/payments/*";
/// One order's refund follow-up.
pub const REFUND: &str = "/v1/payments/*/refund";
/// One order's reversal.
pub const REVERSE: &str = "/v1/payments/*/reverse";

/// Channel line: status queries are `GET /v1/payments/{order_id}`.
pub const QUERY: &str = r#"query = { method = "GET", path = "/v1/payments/{order_id}" }"#;
/// Channel line: reversals are `POST /v1/payments/{order_id}/reverse`.
pub const REVERSAL: &str = r#"reversal = { method = "POST", path = "/v1/payments/{order_id}/reverse" }"#;

/// Makes `acq` answer every status query ([`QUERY`]) 404, "no such
/// payment": whatever its default answer does to payments, an ambiguous
/// attempt there is proven harmless and may be failed over. (Without this
/// rule the default answer would answer the queries too: a hanging acquirer
/// would hang them, a failing one fail them.)
pub fn never_charged(acq: &MockAcquirer) {
    acq.on("GET", ORDER, Reply::status(404));
}

/// A recording fake acquirer named `name` answering payments with `reply`
/// and status queries 404 ([`never_charged`]).
pub async fn queried_acquirer(name: &str, reply: Reply) -> MockAcquirer {
    let acq = crate::acquirer_with(name, reply).await;
    never_charged(&acq);
    acq
}

/// How many payments (`POST` [`PAY`]) `acq` received; unlike
/// [`MockAcquirer::hits`], queries, reversals and follow-ups do not count.
pub fn payments(acq: &MockAcquirer) -> usize {
    acq.count("POST", PAY)
}
