//! The phases that read a request and may refuse it: `route`, `identify`,
//! `read_body`, `facts`, `check_amount`, `rank`.
//!
//! They share one property, which is why they share a file: none of them
//! writes anything or sends anything, so whatever they refuse leaves no
//! trace but its metric and may simply be retried. `facts` is where a
//! [`Payment`] begins; a second protocol's body format is a second way to
//! make one.

use std::num::NonZeroU64;

use bytes::Bytes;
use http::header::{HeaderName, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::request::Parts;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use sha2::{Digest, Sha256};

use super::{Inbound, Payment};
use crate::error::PaymentError;
use crate::payment::{auth, facts, trade_no};
use crate::routing::{Ask, Moment, Ranked, Unroutable};
use crate::snapshot::{Merchant, Route, Snapshot};

const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// Which kind of request a path names.
pub(super) enum Path {
    Payment,
    Followup { order_id: String },
}

/// The most headers, and header bytes (names and values), payroute reads in
/// one request: a merchant's request has a dozen. Above them the answer is
/// `431` in the contract's JSON (hyper's own, bare, only far above: see
/// `ingress::server`).
pub(super) const MAX_HEADERS: usize = 100;
pub(super) const MAX_HEADER_BYTES: usize = 32 << 10;
/// The longest request target (path and query) payroute reads: `414` above.
pub(super) const MAX_TARGET: usize = 8 << 10;

/// Before anything else: a head payroute does not read is refused whole.
pub(super) fn check_head(req: &Request<Incoming>) -> Result<(), PaymentError> {
    let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target > MAX_TARGET {
        return Err(PaymentError::UriTooLong { limit: MAX_TARGET });
    }
    let headers = req.headers();
    if headers.len() > MAX_HEADERS {
        return Err(PaymentError::HeadTooLarge(format!("more than {MAX_HEADERS} headers")));
    }
    let bytes: usize = headers.iter().map(|(n, v)| n.as_str().len() + v.len()).sum();
    if bytes > MAX_HEADER_BYTES {
        return Err(PaymentError::HeadTooLarge(format!(
            "headers larger than {MAX_HEADER_BYTES} bytes"
        )));
    }
    // hyper decodes `chunked` only and hands any other coding through as
    // if absent: `gzip, chunked` would be read as plain bytes here and as
    // gzip by a proxy in front — two readings of one body, the stuff of
    // request smuggling. One `chunked`, or none.
    let mut codings = headers.get_all(TRANSFER_ENCODING).iter();
    let plain = match (codings.next(), codings.next()) {
        (None, _) => true,
        (Some(v), None) => v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked"),
        (Some(_), Some(_)) => false,
    };
    if !plain {
        return Err(PaymentError::Framing(
            "Transfer-Encoding may only be chunked (one coding, given once)",
        ));
    }
    Ok(())
}

/// route: is this a payment path at all?
pub(super) fn route(snap: &Snapshot, req: &Request<Incoming>) -> Result<Path, PaymentError> {
    match snap.route(req.method(), req.uri().path()) {
        Route::Payment => Ok(Path::Payment),
        // No payment has a dot-segment order id (facts refuse one); an
        // acquirer's router would resolve this path to another.
        Route::Followup { order_id } if facts::dot_segment(order_id) => Err(PaymentError::InvalidRequest(
            "the order id in a follow-up path may not be a dot segment (. or ..)".into(),
        )),
        Route::Followup { order_id } => Ok(Path::Followup {
            order_id: order_id.to_owned(),
        }),
        Route::Unknown => Err(PaymentError::UnknownRoute),
    }
}

/// identify: which merchant, and is it really them?
pub(super) fn identify<'s>(snap: &'s Snapshot, req: &Request<Incoming>) -> Result<&'s Merchant, PaymentError> {
    let header = &snap.request.merchant_header;
    let mut given = req.headers().get_all(header).iter();
    let first = given.next();
    if given.next().is_some() {
        // Which of two ids would be the merchant is exactly what must not be guessed.
        return Err(PaymentError::InvalidRequest(format!(
            "{header} is given more than once"
        )));
    }
    let id = first
        .and_then(|v| v.to_str().ok())
        .ok_or(PaymentError::UnknownMerchant)?;
    let merchant = snap.merchant(id).ok_or(PaymentError::UnknownMerchant)?;
    auth::authenticate(merchant.config.api_key_sha256(), req.headers()).map_err(|e| match e {
        auth::AuthError::Missing => PaymentError::Unauthorized("missing Authorization: Bearer API key"),
        auth::AuthError::Wrong => PaymentError::Unauthorized("API key is not valid for this merchant"),
    })?;
    Ok(merchant)
}

/// read_body: bounded in size (`max_body_bytes`) and in time
/// (`body_timeout_ms`, from the head: a body dribbled a byte a second is
/// refused, not waited for), before anything looks at it.
pub(super) async fn read_body(req: Request<Incoming>, snap: &Snapshot) -> Result<(Parts, Bytes), PaymentError> {
    let limit = snap.server.max_body_bytes;
    let (parts, body) = req.into_parts();
    let too_large = PaymentError::PayloadTooLarge { limit };
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large);
    }
    let within = snap.server.body_timeout;
    let Ok(collected) = tokio::time::timeout(within, Limited::new(body, limit).collect()).await else {
        return Err(PaymentError::SlowBody { limit: within });
    };
    match collected {
        Ok(collected) => Ok((parts, collected.to_bytes())),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(too_large),
        Err(e) => Err(PaymentError::InvalidRequest(format!("cannot read request body: {e}"))),
    }
}

/// facts: amount, currency and order id from the JSON; with them the
/// idempotency key and fingerprint, and so a [`Payment`].
pub(super) fn facts<'a>(req: &'a Inbound<'a>) -> Result<Payment<'a>, PaymentError> {
    let facts = facts::extract(&req.body, &req.snap.request).map_err(|e| PaymentError::InvalidRequest(e.0))?;
    Ok(Payment {
        req,
        facts,
        key_header: idempotency_key(&req.parts.headers)?,
        fingerprint: fingerprint(&req.parts, &req.body),
        trade_no: trade_no::mint(),
        epay: None,
    })
}

/// check_amount: the merchant's per-payment ceiling.
pub(super) fn check_amount(p: &Payment<'_>) -> Result<(), PaymentError> {
    match p.req.merchant.config.max_amount.map(NonZeroU64::get) {
        Some(max) if p.facts.amount > max => Err(PaymentError::AmountLimitExceeded {
            amount: p.facts.amount,
            max,
        }),
        _ => Ok(()),
    }
}

/// rank: eligible, available channels, best first. A JSON payment goes to
/// JSON channels only, an epay payment to epay channels that serve its
/// `type` only: each speaks its protocol, and nothing could translate.
pub(super) fn rank(p: &Payment<'_>) -> Result<Ranked, PaymentError> {
    let snap = p.req.snap;
    let speaks = |i: usize| match (&snap.channels[i].config.epay, &p.epay) {
        (None, None) => true,
        (Some(account), Some(order)) => account.pay_types.is_empty() || account.pay_types.contains(&order.pay_type),
        _ => false,
    };
    let ask = Ask {
        currency: &p.facts.currency,
        amount: p.facts.amount,
        pay_type: p.facts.pay_type.as_deref(),
        merchant: &p.req.merchant.config.id,
    };
    crate::routing::rank(
        &snap.channels,
        &snap.rules,
        |i| p.req.merchant.may_use(i) && speaks(i),
        &ask,
        &snap.routing,
        Moment::now(),
        &mut fastrand::Rng::new(),
    )
    .map_err(|u| match u {
        Unroutable::NoEligible => PaymentError::NoEligibleChannel,
        Unroutable::NoneAvailable => PaymentError::NoChannelAvailable,
    })
}

/// The `Idempotency-Key` header, if sent and valid (`None`: the order id is
/// the key).
pub(super) fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, PaymentError> {
    let mut given = headers.get_all(IDEMPOTENCY_KEY).iter();
    let first = given.next();
    if given.next().is_some() {
        return Err(PaymentError::InvalidRequest(
            "Idempotency-Key is given more than once".into(),
        ));
    }
    match first {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
            .map(Some)
            .ok_or_else(|| {
                PaymentError::InvalidRequest("Idempotency-Key must be 1-255 visible ASCII characters".into())
            }),
    }
}

/// What "the same request" means for idempotency: method, path and body.
pub(super) fn fingerprint(parts: &Parts, body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(parts.method.as_str());
    h.update([0]);
    h.update(parts.uri.path_and_query().map_or("/", |p| p.as_str()));
    h.update([0]);
    h.update(body);
    h.finalize().into()
}
