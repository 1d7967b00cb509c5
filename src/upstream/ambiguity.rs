//! Resolving an ambiguous attempt before anything else is tried.
//!
//! A timeout or a 5xx after the request was written leaves the payment's fate
//! unknown: the acquirer may have charged. Failing over blindly could charge
//! the customer twice, so the proxy first asks that channel (`query`): a 2xx
//! means it was paid there (the payment ends as that success); a 404 means it
//! never arrived (failing over is safe). Anything else is still unknown: if
//! the channel has a `reversal`, one is sent in the background, retried with
//! back-off, so a late charge is voided; then the payment fails over as
//! `failover_on` says. The query is bounded by the payment's deadline.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};

use super::client::{AttemptResult, Upstream};
use super::forward;
use crate::config::{ChannelConfig, Endpoint};

/// What the channel said about an ambiguous attempt.
#[derive(Debug)]
pub(crate) enum Resolution {
    /// The acquirer has the payment: its query answer ends the payment.
    Paid {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    },
    /// The acquirer never saw the payment: failing over is safe.
    NeverArrived,
    /// Still unknown (no query, or no clear answer).
    Unknown,
}

/// Asks the channel's `query` endpoint about `order_id`, within `budget`.
pub(crate) async fn query(
    channel: &ChannelConfig,
    upstream: &Upstream,
    order_id: &str,
    request_id: &HeaderValue,
    budget: Duration,
) -> Resolution {
    let Some(endpoint) = &channel.query else {
        return Resolution::Unknown;
    };
    if budget.is_zero() {
        return Resolution::Unknown;
    }
    let Ok(req) = endpoint_request(channel, endpoint, order_id, Bytes::new(), request_id) else {
        return Resolution::Unknown;
    };
    match upstream.send(req, channel.timeout.min(budget)).await {
        AttemptResult::Answered { status, headers, body } if status.is_success() => {
            Resolution::Paid { status, headers, body }
        }
        AttemptResult::Answered { status, .. } if status == StatusCode::NOT_FOUND => Resolution::NeverArrived,
        other => {
            tracing::warn!(channel = %channel.id, order_id = %crate::redact::mask_pans(order_id), answer = %other, "query left the payment's fate unknown");
            Resolution::Unknown
        }
    }
}

/// The request for a query or reversal endpoint: the channel's headers, the
/// order id filled into the path template.
pub(crate) fn endpoint_request(
    channel: &ChannelConfig,
    endpoint: &Endpoint,
    order_id: &str,
    body: Bytes,
    request_id: &HeaderValue,
) -> Result<http::Request<crate::error::Body>, http::Error> {
    let path = endpoint.path.replace("{order_id}", &percent_encode(order_id));
    let mut headers = HeaderMap::new();
    if !body.is_empty() {
        headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    forward::request(channel, endpoint.method.clone(), &path, &headers, body, request_id)
}

/// Everything but RFC 3986 unreserved characters is %-encoded.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_ids_cannot_escape_the_path() {
        assert_eq!(percent_encode("o-1_2.3~"), "o-1_2.3~");
        assert_eq!(percent_encode("a?b#c%"), "a%3Fb%23c%25");
    }
}
