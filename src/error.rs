//! Every error the proxy itself answers with, and its one mapping to the
//! contract's status codes and JSON.
//!
//! Handlers return `Result<_, PaymentError>`; only [`PaymentError::into_response`]
//! turns an error into HTTP, and [`PaymentError::outcome`] is its one mapping
//! to the contract's codes: the product contract's error table, which README
//! ("A payment through the proxy") says is implemented as written, can drift
//! from the code in these two `match`es only. Services built on this
//! never fail: an error that reached hyper would drop the connection unanswered.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

use crate::outcome::Outcome;

pub(crate) type Body = Full<Bytes>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PaymentError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("merchant is not configured")]
    UnknownMerchant,
    #[error("no payment route for this method and path")]
    UnknownRoute,
    #[error("this merchant has no payment with that order id")]
    UnknownOrder,
    #[error("a payment with this idempotency key is still in flight")]
    DuplicateInFlight,
    #[error("body exceeds {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// The body did not arrive within `body_timeout_ms` (the connection is
    /// closed after the answer: the rest of the body is never read).
    #[error("request body not received within {} ms", limit.as_millis())]
    SlowBody { limit: Duration },
    /// The request's target is longer than payroute reads (414).
    #[error("request target longer than {limit} bytes")]
    UriTooLong { limit: usize },
    /// The request's head has more or larger headers than payroute reads (431).
    #[error("{0}")]
    HeadTooLarge(String),
    /// The body's framing is one payroute does not read (400; the
    /// connection is closed: where this body ends is not known).
    #[error("{0}")]
    Framing(&'static str),
    #[error("amount {amount} exceeds the merchant's max_amount {max}")]
    AmountLimitExceeded { amount: u64, max: u64 },
    #[error("amount {amount} exceeds what the payment still has ({available} paid and not yet refunded)")]
    ExceedsPayment { amount: u64, available: u64 },
    #[error("amount {amount} would exceed the merchant's daily limit {limit} ({used} used today)")]
    DailyLimitExceeded { amount: u64, used: u64, limit: u64 },
    #[error("no channel takes this currency, amount and merchant")]
    NoEligibleChannel,
    #[error("this idempotency key was used with a different body")]
    IdempotencyKeyReused,
    #[error("merchant is over its request rate")]
    RateLimited { retry_after: Duration },
    #[error("every attempt failed: {0}")]
    UpstreamFailed(String),
    #[error("eligible channels exist but all are disabled, ejected or full")]
    NoChannelAvailable,
    #[error("shared state is unavailable")]
    StateUnavailable,
    #[error("every attempt timed out or the payment deadline passed")]
    UpstreamTimeout,
    #[error("internal error; the payment's outcome is recorded under its idempotency key")]
    Internal,
}

impl PaymentError {
    pub fn status(&self) -> StatusCode {
        use PaymentError::*;
        match self {
            InvalidRequest(_) | SlowBody { .. } | Framing(_) => StatusCode::BAD_REQUEST,
            UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            HeadTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Unauthorized(_) => StatusCode::UNAUTHORIZED,
            UnknownMerchant => StatusCode::FORBIDDEN,
            UnknownRoute | UnknownOrder => StatusCode::NOT_FOUND,
            DuplicateInFlight => StatusCode::CONFLICT,
            PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            AmountLimitExceeded { .. }
            | ExceedsPayment { .. }
            | DailyLimitExceeded { .. }
            | NoEligibleChannel
            | IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            UpstreamFailed(_) => StatusCode::BAD_GATEWAY,
            NoChannelAvailable | StateUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The contract's code (`as_str`), which is also the `outcome` metric label.
    pub fn outcome(&self) -> Outcome {
        use PaymentError::*;
        match self {
            // A head or body payroute will not read is an invalid request;
            // 414 and 431 keep HTTP's meaning in the status.
            InvalidRequest(_) | SlowBody { .. } | UriTooLong { .. } | HeadTooLarge(_) | Framing(_) => {
                Outcome::InvalidRequest
            }
            Unauthorized(_) => Outcome::Unauthorized,
            UnknownMerchant => Outcome::UnknownMerchant,
            UnknownRoute => Outcome::UnknownRoute,
            UnknownOrder => Outcome::UnknownOrder,
            DuplicateInFlight => Outcome::DuplicateInFlight,
            PayloadTooLarge { .. } => Outcome::PayloadTooLarge,
            AmountLimitExceeded { .. } | ExceedsPayment { .. } => Outcome::AmountLimitExceeded,
            DailyLimitExceeded { .. } => Outcome::DailyLimitExceeded,
            NoEligibleChannel => Outcome::NoEligibleChannel,
            IdempotencyKeyReused => Outcome::IdempotencyKeyReused,
            RateLimited { .. } => Outcome::RateLimited,
            UpstreamFailed(_) => Outcome::UpstreamFailed,
            NoChannelAvailable => Outcome::NoChannelAvailable,
            StateUnavailable => Outcome::StateUnavailable,
            UpstreamTimeout => Outcome::UpstreamTimeout,
            Internal => Outcome::Internal,
        }
    }

    /// `{"error": {"code": ..., "message": ...}}`
    pub fn json_body(&self) -> Bytes {
        let body = serde_json::json!({
            "error": { "code": self.outcome().as_str(), "message": self.to_string() }
        });
        Bytes::from(body.to_string())
    }

    pub fn into_response(self) -> Response<Body> {
        let mut response = Response::new(Full::new(self.json_body()));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if matches!(
            self,
            PaymentError::SlowBody { .. }
                | PaymentError::UriTooLong { .. }
                | PaymentError::HeadTooLarge(_)
                | PaymentError::Framing(_)
        ) {
            // What is left of this request is not read: the connection
            // cannot carry another (HTTP/2 drops the header and resets the stream).
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let PaymentError::RateLimited { retry_after } = self {
            // Whole seconds, rounded up: "retry after 0" would invite a hot loop.
            let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn renders_contract_json_and_retry_after() {
        let r = PaymentError::RateLimited {
            retry_after: Duration::from_millis(1_200),
        }
        .into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
        let body = r.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "rate_limited");
        assert!(v["error"]["message"].is_string());
    }
}
