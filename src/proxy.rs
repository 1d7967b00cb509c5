//! The life of a payment, as a list of phases.
//!
//! ```text
//! route → identify → admit → read_body → facts → check_amount → rank
//!       → reserve → attempts: ( pick → send → verdict )* → respond
//! ```
//!
//! Each phase either hands the payment on or ends it with a
//! [`PaymentError`]. Phases before `attempts` only read the request, the
//! snapshot and the limits, so any refusal is guaranteed to reach no
//! acquirer. What an attempt's result means — success, decline, fail over,
//! give up — is decided in exactly one function, [`verdict`], so the
//! double-charge rules can be audited in one screen.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderName, CONTENT_LENGTH};
use http::{HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use crate::app::App;
use crate::config::FailoverOn;
use crate::error::{Body, PaymentError};
use crate::metrics::{AttemptLabel, FailoverReason};
use crate::payment::{auth, facts};
use crate::routing::breaker::Ticket;
use crate::routing::stats::Sample;
use crate::routing::{rank, Unroutable};
use crate::snapshot::{Channel, Merchant, Route, Snapshot};
use crate::upstream::client::AttemptResult;
use crate::upstream::forward::{self, REQUEST_ID};

const CHANNEL: HeaderName = HeaderName::from_static("x-payroute-channel");
const ATTEMPTS: HeaderName = HeaderName::from_static("x-payroute-attempts");

/// The payment listener's service. Infallible: every error is a response.
#[derive(Clone)]
pub(crate) struct PaymentService {
    app: Arc<App>,
}

impl PaymentService {
    pub fn new(app: Arc<App>) -> PaymentService {
        PaymentService { app }
    }
}

impl tower::Service<Request<Incoming>> for PaymentService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let app = self.app.clone();
        Box::pin(async move { Ok(handle(&app, req).await) })
    }
}

/// One request in, one response out, whatever happens.
pub(crate) async fn handle(app: &App, req: Request<Incoming>) -> Response<Body> {
    let request_id = new_request_id();
    let snapshot = app.snapshot();
    let (mut response, outcome) = match payment(app, &snapshot, req, &request_id).await {
        Ok(done) => done,
        Err(e) => {
            let outcome = e.code();
            if e.status().is_server_error() {
                tracing::warn!(request_id = ?request_id, code = outcome, "{e}");
            } else {
                tracing::debug!(request_id = ?request_id, code = outcome, "{e}");
            }
            (e.into_response(), outcome)
        }
    };
    app.metrics.outcome(outcome);
    response.headers_mut().insert(REQUEST_ID, request_id);
    response
}

fn new_request_id() -> HeaderValue {
    let mut buf = [0u8; 16];
    let id = fastrand::u64(..);
    for (i, b) in buf.iter_mut().enumerate() {
        *b = b"0123456789abcdef"[((id >> (60 - 4 * i)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&buf).unwrap_or(HeaderValue::from_static("0"))
}

/// A finished payment: the response and its `outcome` label.
type Done = (Response<Body>, &'static str);

async fn payment(
    app: &App,
    snap: &Snapshot,
    req: Request<Incoming>,
    request_id: &HeaderValue,
) -> Result<Done, PaymentError> {
    // route: is this a payment path at all?
    let path = req.uri().path();
    match snap.route(req.method(), path) {
        Route::Payment => {}
        // Follow-ups need the order→channel memory of the "never twice" work;
        // until it exists, no order is known to this proxy.
        Route::Followup { .. } => {
            identify(snap, &req)?;
            return Err(PaymentError::UnknownOrder);
        }
        Route::Unknown => return Err(PaymentError::UnknownRoute),
    }

    // identify: which merchant, and is it really them?
    let merchant = identify(snap, &req)?;

    // admit: the merchant's request rate.
    merchant
        .limiter
        .check(&merchant.config.id)
        .map_err(|retry_after| PaymentError::RateLimited { retry_after })?;

    // read_body: bounded, before anything looks at it.
    let (parts, body) = req.into_parts();
    let body = read_body(body, &parts.headers, snap.server.max_body_bytes).await?;

    // facts: amount, currency and order id from the JSON.
    let facts = facts::extract(&body, &snap.request).map_err(|e| PaymentError::InvalidRequest(e.0))?;

    // check_amount: the merchant's per-payment ceiling.
    if let Some(max) = merchant.config.max_amount {
        if facts.amount > max {
            return Err(PaymentError::AmountLimitExceeded {
                amount: facts.amount,
                max,
            });
        }
    }

    // rank: eligible, available channels, best first.
    let order = rank(
        &snap.channels,
        |i| merchant.may_use(i),
        &facts.currency,
        facts.amount,
        &snap.routing,
    )
    .map_err(|u| match u {
        Unroutable::NoEligible => PaymentError::NoEligibleChannel,
        Unroutable::NoneAvailable => PaymentError::NoChannelAvailable,
    })?;

    // reserve: hold the amount against the daily limit; released on drop.
    let reservation = match merchant.config.daily_limit {
        Some(limit) => {
            let day = merchant.config.day_cut.today();
            let r = app
                .ledger
                .reserve(&merchant.config.id, day, facts.amount, limit)
                .map_err(|e| PaymentError::DailyLimitExceeded {
                    amount: facts.amount,
                    used: e.used,
                    limit: e.limit,
                })?;
            Some(r)
        }
        None => None,
    };

    // attempts: at most max_attempts distinct channels within the deadline.
    let deadline = Instant::now() + snap.server.deadline;
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut attempts = 0usize;
    let mut last_failure: Option<(Failure, String)> = None;
    let mut pending_failover: Option<(&Channel, FailoverReason)> = None;
    for &idx in &order {
        if attempts == snap.routing.max_attempts {
            break;
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            last_failure = Some((Failure::Timeout, "payment deadline passed".into()));
            break;
        }
        // pick: the channel may have filled up or been ejected since rank.
        let channel = &snap.channels[idx];
        let Some(ticket) = channel.live.breaker.admit() else {
            continue;
        };
        let Some(_slot) = channel.live.try_enter(channel.config.max_in_flight) else {
            continue;
        };
        if let Some((from, reason)) = pending_failover.take() {
            from.metrics.failover(reason);
        }
        attempts += 1;

        // send
        let upstream_req = forward::request(
            &channel.config,
            parts.method.clone(),
            path_and_query,
            &parts.headers,
            body.clone(),
            request_id,
        )
        .map_err(|e| PaymentError::InvalidRequest(format!("cannot forward this request: {e}")))?;
        let started = Instant::now();
        let result = channel
            .upstream
            .send(upstream_req, channel.config.timeout.min(remaining))
            .await;
        let elapsed = started.elapsed();

        // verdict
        let v = verdict(&result, snap.routing.failover_on);
        record(channel, snap, ticket, &v, elapsed);
        match v {
            Verdict::Success => {
                if let Some(r) = reservation {
                    r.commit();
                }
                return Ok((proxied(result, channel, attempts), "success"));
            }
            Verdict::Decline => return Ok((proxied(result, channel, attempts), "decline")),
            Verdict::PassFailure => return Ok((proxied(result, channel, attempts), "upstream_failed")),
            Verdict::Failed { failure, fail_over } => {
                let detail = describe(&result);
                tracing::info!(request_id = ?request_id, channel = %channel.config.id, ?failure, %detail, fail_over, "attempt failed");
                last_failure = Some((failure, detail));
                if !fail_over {
                    break;
                }
                pending_failover = Some((channel, failure.reason()));
            }
        }
    }
    // Every attempt failed (the reservation is released on drop).
    Err(match last_failure {
        None => PaymentError::NoChannelAvailable,
        Some((Failure::Timeout, _)) => PaymentError::UpstreamTimeout,
        Some((_, detail)) => PaymentError::UpstreamFailed(detail),
    })
}

/// Looks up the merchant and checks its API key.
fn identify<'s>(snap: &'s Snapshot, req: &Request<Incoming>) -> Result<&'s Merchant, PaymentError> {
    let header = &snap.request.merchant_header;
    let id = req
        .headers()
        .get(header)
        .and_then(|v| v.to_str().ok())
        .ok_or(PaymentError::UnknownMerchant)?;
    let merchant = snap.merchant(id).ok_or(PaymentError::UnknownMerchant)?;
    auth::authenticate(merchant.config.api_key_sha256.as_ref(), req.headers()).map_err(|e| match e {
        auth::AuthError::Missing => PaymentError::Unauthorized("missing Authorization: Bearer API key"),
        auth::AuthError::Wrong => PaymentError::Unauthorized("API key is not valid for this merchant"),
    })?;
    Ok(merchant)
}

async fn read_body(body: Incoming, headers: &http::HeaderMap, limit: usize) -> Result<Bytes, PaymentError> {
    let too_large = PaymentError::PayloadTooLarge { limit };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large);
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(too_large),
        Err(e) => Err(PaymentError::InvalidRequest(format!("cannot read request body: {e}"))),
    }
}

/// A channel failure, by what is known about the request's fate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Nothing was sent: always safe to try elsewhere.
    Connect,
    /// No answer in time: the acquirer may have the payment.
    Timeout,
    /// A 5xx, or the exchange broke after sending: the acquirer may have it.
    Upstream5xx,
}

impl Failure {
    fn reason(self) -> FailoverReason {
        match self {
            Failure::Connect => FailoverReason::Connect,
            Failure::Timeout => FailoverReason::Timeout,
            Failure::Upstream5xx => FailoverReason::Upstream5xx,
        }
    }

    /// Whether the acquirer may have acted on the request.
    #[allow(dead_code)] // consulted by the ambiguity resolution of "never twice"
    pub fn ambiguous(self) -> bool {
        !matches!(self, Failure::Connect)
    }
}

/// What an attempt's result means for the payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// 2xx: done, commit the limits.
    Success,
    /// Any other answer but a 5xx (4xx declines, odd 1xx/3xx): returned
    /// as-is, never failed over — the acquirer decided.
    Decline,
    /// A 5xx when `failover_on` has no "5xx": returned as-is.
    PassFailure,
    /// A channel failure; `fail_over` when `failover_on` lists its kind.
    Failed { failure: Failure, fail_over: bool },
}

/// The one place that decides what an attempt's result means.
pub(crate) fn verdict(result: &AttemptResult, policy: FailoverOn) -> Verdict {
    match result {
        AttemptResult::Answered { status, .. } if status.is_success() => Verdict::Success,
        AttemptResult::Answered { status, .. } if status.is_server_error() => {
            if policy.status_5xx {
                Verdict::Failed {
                    failure: Failure::Upstream5xx,
                    fail_over: true,
                }
            } else {
                Verdict::PassFailure
            }
        }
        AttemptResult::Answered { .. } => Verdict::Decline,
        AttemptResult::ConnectFailed(_) => Verdict::Failed {
            failure: Failure::Connect,
            fail_over: policy.connect,
        },
        AttemptResult::TimedOut => Verdict::Failed {
            failure: Failure::Timeout,
            fail_over: policy.timeout,
        },
        // A broken exchange is a gateway-side error after sending: a 5xx in all but status.
        AttemptResult::Broken(_) => Verdict::Failed {
            failure: Failure::Upstream5xx,
            fail_over: policy.status_5xx,
        },
    }
}

/// Feeds one attempt into the channel's statistics, breaker and metrics.
fn record(channel: &Channel, snap: &Snapshot, ticket: Ticket<'_>, v: &Verdict, elapsed: Duration) {
    let (sample, label, rtt) = match v {
        Verdict::Success => (Sample::Success, AttemptLabel::Success, Some(elapsed)),
        Verdict::Decline => (Sample::Decline, AttemptLabel::Decline, Some(elapsed)),
        Verdict::PassFailure => (Sample::Failure, AttemptLabel::Upstream5xx, Some(elapsed)),
        Verdict::Failed { failure, .. } => match failure {
            // A refused connection is fast; its time says nothing of the acquirer's speed.
            Failure::Connect => (Sample::Failure, AttemptLabel::ConnectError, None),
            Failure::Timeout => (Sample::Failure, AttemptLabel::Timeout, Some(elapsed)),
            Failure::Upstream5xx => (Sample::Failure, AttemptLabel::Upstream5xx, Some(elapsed)),
        },
    };
    channel.live.record(sample, rtt, &snap.routing);
    ticket.record(sample == Sample::Failure, &snap.routing);
    channel.metrics.attempt(label);
    channel.metrics.latency.observe(elapsed.as_secs_f64());
}

fn describe(result: &AttemptResult) -> String {
    match result {
        AttemptResult::Answered { status, .. } => format!("acquirer answered {status}"),
        AttemptResult::ConnectFailed(e) => format!("connect failed: {e}"),
        AttemptResult::TimedOut => "timed out".into(),
        AttemptResult::Broken(e) => format!("exchange broken: {e}"),
    }
}

/// The acquirer's answer, passed to the merchant with payroute's headers.
fn proxied(result: AttemptResult, channel: &Channel, attempts: usize) -> Response<Body> {
    let AttemptResult::Answered { status, headers, body } = result else {
        // verdict() only returns Success/Decline/PassFailure for answers.
        return PaymentError::UpstreamFailed("no answer".into()).into_response();
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    forward::response_headers(&headers, response.headers_mut());
    let h = response.headers_mut();
    if let Ok(id) = HeaderValue::from_str(&channel.config.id) {
        h.insert(CHANNEL, id);
    }
    h.insert(ATTEMPTS, HeaderValue::from(attempts));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    const ALL: FailoverOn = FailoverOn {
        connect: true,
        timeout: true,
        status_5xx: true,
    };

    fn answered(code: u16) -> AttemptResult {
        AttemptResult::Answered {
            status: StatusCode::from_u16(code).unwrap(),
            headers: Default::default(),
            body: Bytes::new(),
        }
    }

    #[test]
    fn declines_are_final_and_failures_follow_policy() {
        assert_eq!(verdict(&answered(201), ALL), Verdict::Success);
        assert_eq!(verdict(&answered(402), ALL), Verdict::Decline);
        assert_eq!(verdict(&answered(409), ALL), Verdict::Decline);
        assert_eq!(
            verdict(&answered(503), ALL),
            Verdict::Failed {
                failure: Failure::Upstream5xx,
                fail_over: true
            }
        );
        let no_5xx = FailoverOn {
            status_5xx: false,
            ..ALL
        };
        assert_eq!(verdict(&answered(500), no_5xx), Verdict::PassFailure);
        assert_eq!(
            verdict(&AttemptResult::Broken("reset".into()), no_5xx),
            Verdict::Failed {
                failure: Failure::Upstream5xx,
                fail_over: false
            }
        );
        let only_connect = FailoverOn {
            connect: true,
            timeout: false,
            status_5xx: false,
        };
        assert_eq!(
            verdict(&AttemptResult::TimedOut, only_connect),
            Verdict::Failed {
                failure: Failure::Timeout,
                fail_over: false
            }
        );
        assert!(!Failure::Connect.ambiguous());
        assert!(Failure::Timeout.ambiguous() && Failure::Upstream5xx.ambiguous());
    }

    #[test]
    fn request_ids_are_hex() {
        let id = new_request_id();
        assert_eq!(id.len(), 16);
        assert!(id.as_bytes().iter().all(u8::is_ascii_hexdigit));
    }
}
