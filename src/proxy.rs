//! The life of a payment, as a list of phases.
//!
//! ```text
//! route → identify → read_body → facts → check_amount → rank
//!       → admit (rate, idempotency key, daily reservation: one atomic step)
//!       → attempts: ( pick → send → verdict → [resolve ambiguity] )*
//!       → settle (keep the answer, commit/release, remember the order) → respond
//! follow-up: route → identify → read_body → rate + recall order → send once
//! ```
//!
//! Each phase either hands the payment on or ends it. Phases before
//! `attempts` only read the request, the snapshot, the limits and the state
//! store, so a refusal is guaranteed to reach no acquirer (and, by `settle`,
//! leaves no idempotency record behind). What an attempt's result means —
//! success, decline, fail over, give up — is decided in exactly one function,
//! [`verdict`]; what an ambiguous one means is settled right after it, in the
//! same loop, so the double-charge rules can be audited on one screen.
//!
//! Each request runs as its own task: a merchant that hangs up mid-payment
//! cannot cancel it half-way (the answer is still recorded for its retry),
//! and a panic becomes a 500 instead of a dropped connection.

use std::convert::Infallible;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderName, CONTENT_LENGTH, CONTENT_TYPE};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use sha2::{Digest, Sha256};

use crate::app::App;
use crate::config::FailoverOn;
use crate::error::{Body, PaymentError};
use crate::metrics::Metrics;
use crate::metrics::{AttemptLabel, FailoverReason};
use crate::payment::facts::Facts;
use crate::payment::{auth, facts};
use crate::routing::breaker::Ticket;
use crate::routing::stats::Sample;
use crate::routing::{rank, Unroutable};
use crate::snapshot::{Channel, Merchant, Route, Snapshot};
use crate::state::{Admit, DailyCheck, Gate, Settle, StateError, StoredResponse};
use crate::upstream::ambiguity::{self, Resolution};
use crate::upstream::client::AttemptResult;
use crate::upstream::forward::{self, REQUEST_ID};

const CHANNEL: HeaderName = HeaderName::from_static("x-payroute-channel");
const ATTEMPTS: HeaderName = HeaderName::from_static("x-payroute-attempts");
const AMBIGUOUS: HeaderName = HeaderName::from_static("x-payroute-ambiguous");
const REPLAYED: HeaderName = HeaderName::from_static("x-payroute-replayed");
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// The payment listener's service function. Infallible: every error is a
/// response. The payment runs as a task of its own (see the module doc).
pub(crate) async fn serve(app: Arc<App>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let task = tokio::spawn(async move { handle(&app, req).await });
    Ok(task.await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "payment task failed");
        let mut r = PaymentError::Internal.into_response();
        r.headers_mut().insert(REQUEST_ID, new_request_id());
        r
    }))
}

/// One request in, one response out, whatever happens.
pub(crate) async fn handle(app: &App, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let request_id = new_request_id();
    let snapshot = app.snapshot();
    let (mut response, outcome) = match payment(app, &snapshot, req, &request_id).await {
        Ok(done) => done,
        Err(e) => {
            let outcome = e.code();
            log_refusal(&e, &request_id);
            (e.into_response(), outcome)
        }
    };
    app.metrics.outcome(outcome);
    app.metrics.request_duration.observe(started.elapsed().as_secs_f64());
    response.headers_mut().insert(REQUEST_ID, request_id);
    response
}

/// Failed payments are worth a line each; refusals (4xx, and 503s whose
/// cause — an ejection, a Redis outage — is logged once where it happens)
/// only at debug, so an outage cannot flood the log.
fn log_refusal(e: &PaymentError, request_id: &HeaderValue) {
    if e.status().is_server_error() && e.status() != StatusCode::SERVICE_UNAVAILABLE {
        tracing::warn!(request_id = ?request_id, code = e.code(), "{e}");
    } else {
        tracing::debug!(request_id = ?request_id, code = e.code(), "{e}");
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

/// A finished request: the response and its `outcome` label.
type Done = (Response<Body>, &'static str);

async fn payment(
    app: &App,
    snap: &Snapshot,
    req: Request<Incoming>,
    request_id: &HeaderValue,
) -> Result<Done, PaymentError> {
    // route: is this a payment path at all?
    let followup = match snap.route(req.method(), req.uri().path()) {
        Route::Payment => None,
        Route::Followup { order_id } => Some(order_id.to_owned()),
        Route::Unknown => return Err(PaymentError::UnknownRoute),
    };

    // identify: which merchant, and is it really them?
    let merchant = identify(snap, &req)?;

    // read_body: bounded, before anything looks at it.
    let (parts, body) = req.into_parts();
    let body = read_body(body, &parts.headers, snap.server.max_body_bytes).await?;

    if let Some(order_id) = followup {
        return follow_up(app, snap, merchant, &parts, body, &order_id, request_id).await;
    }

    // facts: amount, currency and order id from the JSON.
    let facts = facts::extract(&body, &snap.request).map_err(|e| PaymentError::InvalidRequest(e.0))?;
    let key = idempotency_key(&parts.headers, &facts)?;

    // check_amount: the merchant's per-payment ceiling.
    if let Some(max) = merchant.config.max_amount.map(NonZeroU64::get) {
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

    // admit: rate, idempotency key (or a repeat's stored answer), daily
    // reservation — one atomic step in the state store.
    let fingerprint = fingerprint(&parts, &body);
    let ttl = snap.request.idempotency_ttl;
    let cfg = &merchant.config;
    let gate = Gate {
        merchant: &cfg.id,
        limiter: &merchant.limiter,
        rate_per_sec: cfg.rate_per_sec,
        burst: cfg.burst,
        key,
        fingerprint,
        ttl,
        daily: cfg.daily_limit.map(NonZeroU64::get).map(|limit| {
            let day = cfg.day_cut.today();
            DailyCheck {
                day,
                amount: facts.amount,
                limit,
                day_ends: cfg.day_cut.day_ends(day),
            }
        }),
    };
    let held = match app.store.admit(gate).await.map_err(state_unavailable)? {
        Admit::Started(held) => held,
        Admit::RateLimited(retry_after) => return Err(PaymentError::RateLimited { retry_after }),
        Admit::InFlight => return Err(PaymentError::DuplicateInFlight),
        Admit::Reused => return Err(PaymentError::IdempotencyKeyReused),
        Admit::DailyExceeded { used, limit } => {
            return Err(PaymentError::DailyLimitExceeded {
                amount: facts.amount,
                used,
                limit,
            })
        }
        Admit::Finished(stored) => {
            app.metrics.replays.inc();
            return Ok(replay(stored));
        }
    };

    let ended = attempts(app, snap, &order, &parts, body, &facts, request_id).await;

    // settle: keep what an acquirer may have seen, forget what none did;
    // commit or release the reservation; remember the order's channel.
    let channel = match &ended.ending {
        Ending::Answer { channel, .. } => Some(channel.clone()),
        Ending::Error(_) => None,
    };
    let settle = Settle {
        merchant: &cfg.id,
        key,
        fingerprint,
        ttl,
        answer: ended.reached_acquirer.then(|| ended.to_stored()),
        accepted: ended.accepted(),
        order: channel.as_ref().map(|c| (facts.order_id.as_str(), c)),
    };
    if let Err(e) = app.store.settle(held, settle).await {
        tracing::error!(request_id = ?request_id, error = %e, "cannot record the payment's answer yet; retrying in the background");
    }
    Ok(ended.into_response(request_id))
}

/// How a routed payment ended, before it becomes HTTP.
enum Ending {
    /// An acquirer's answer: direct, or a query that found the payment paid.
    Answer {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
        channel: Arc<str>,
        outcome: &'static str,
    },
    /// The proxy's own error.
    Error(PaymentError),
}

struct Ended {
    ending: Ending,
    attempts: usize,
    /// Channels whose attempt may have charged and was not proven otherwise.
    ambiguous: Vec<Arc<str>>,
    /// Whether any acquirer may have seen the payment.
    reached_acquirer: bool,
}

impl Ended {
    fn refused(e: PaymentError) -> Ended {
        Ended {
            ending: Ending::Error(e),
            attempts: 0,
            ambiguous: Vec::new(),
            reached_acquirer: false,
        }
    }

    /// A success: its daily reservation counts.
    fn accepted(&self) -> bool {
        matches!(self.ending, Ending::Answer { outcome: "success", .. })
    }

    fn ambiguous_header(&self) -> Option<String> {
        (!self.ambiguous.is_empty()).then(|| self.ambiguous.join(","))
    }

    fn to_stored(&self) -> StoredResponse {
        let ambiguous = self.ambiguous_header();
        match &self.ending {
            Ending::Answer {
                status,
                headers,
                body,
                channel,
                outcome,
            } => StoredResponse {
                status: status.as_u16(),
                content_type: headers
                    .get(CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
                body: body.clone(),
                channel: Some(channel.clone()),
                attempts: self.attempts as u32,
                ambiguous,
                outcome: (*outcome).to_owned(),
            },
            Ending::Error(e) => StoredResponse {
                status: e.status().as_u16(),
                content_type: Some("application/json".into()),
                body: e.json_body(),
                channel: None,
                attempts: self.attempts as u32,
                ambiguous,
                outcome: e.code().to_owned(),
            },
        }
    }

    fn into_response(self, request_id: &HeaderValue) -> Done {
        let ambiguous = self.ambiguous_header();
        let (mut response, outcome) = match self.ending {
            Ending::Answer {
                status,
                headers,
                body,
                channel,
                outcome,
            } => {
                let mut r = Response::new(Full::new(body));
                *r.status_mut() = status;
                forward::response_headers(&headers, r.headers_mut());
                set_channel(r.headers_mut(), &channel, self.attempts);
                (r, outcome)
            }
            Ending::Error(e) => {
                log_refusal(&e, request_id);
                let outcome = e.code();
                let mut r = e.into_response();
                if self.attempts > 0 {
                    r.headers_mut().insert(ATTEMPTS, HeaderValue::from(self.attempts));
                }
                (r, outcome)
            }
        };
        if let Some(v) = ambiguous.and_then(|a| HeaderValue::from_str(&a).ok()) {
            response.headers_mut().insert(AMBIGUOUS, v);
        }
        (response, outcome)
    }
}

fn set_channel(headers: &mut HeaderMap, channel: &str, attempts: usize) {
    if let Ok(id) = HeaderValue::from_str(channel) {
        headers.insert(CHANNEL, id);
    }
    headers.insert(ATTEMPTS, HeaderValue::from(attempts));
}

/// The stored answer of a finished payment, marked as a replay.
fn replay(stored: StoredResponse) -> Done {
    let mut r = Response::new(Full::new(stored.body));
    *r.status_mut() = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let h = r.headers_mut();
    if let Some(ct) = stored.content_type.and_then(|c| HeaderValue::from_str(&c).ok()) {
        h.insert(CONTENT_TYPE, ct);
    }
    match &stored.channel {
        Some(channel) => set_channel(h, channel, stored.attempts as usize),
        None => {
            h.insert(ATTEMPTS, HeaderValue::from(stored.attempts));
        }
    }
    if let Some(v) = stored.ambiguous.and_then(|a| HeaderValue::from_str(&a).ok()) {
        h.insert(AMBIGUOUS, v);
    }
    h.insert(REPLAYED, HeaderValue::from_static("true"));
    (r, Metrics::outcome_label(&stored.outcome))
}

/// The payment's idempotency key: the `Idempotency-Key` header, else the order id.
fn idempotency_key<'a>(headers: &'a HeaderMap, facts: &'a Facts) -> Result<&'a str, PaymentError> {
    match headers.get(IDEMPOTENCY_KEY) {
        None => Ok(&facts.order_id),
        Some(v) => v
            .to_str()
            .ok()
            .filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| {
                PaymentError::InvalidRequest("Idempotency-Key must be 1-255 visible ASCII characters".into())
            }),
    }
}

/// What "the same request" means for idempotency: method, path and body.
fn fingerprint(parts: &Parts, body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(parts.method.as_str());
    h.update([0]);
    h.update(parts.uri.path_and_query().map_or("/", |p| p.as_str()));
    h.update([0]);
    h.update(body);
    h.finalize().into()
}

/// The store logs an outage once per episode; per request it is only debug.
fn state_unavailable(e: StateError) -> PaymentError {
    tracing::debug!(error = %e, "shared state unavailable");
    PaymentError::StateUnavailable
}

/// At most `max_attempts` distinct channels, in rank order, within the deadline.
#[allow(clippy::too_many_arguments)]
async fn attempts(
    app: &App,
    snap: &Snapshot,
    order: &[usize],
    parts: &Parts,
    body: Bytes,
    facts: &Facts,
    request_id: &HeaderValue,
) -> Ended {
    let deadline = Instant::now() + snap.server.deadline;
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut ended = Ended::refused(PaymentError::NoChannelAvailable);
    let mut last_failure: Option<(Failure, String)> = None;
    let mut pending_failover: Option<(&Channel, FailoverReason)> = None;
    for &idx in order {
        if ended.attempts == snap.routing.max_attempts {
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
        ended.attempts += 1;

        // send
        let upstream_req = match forward::request(
            &channel.config,
            parts.method.clone(),
            path_and_query,
            &parts.headers,
            body.clone(),
            request_id,
        ) {
            Ok(r) => r,
            Err(e) => {
                ended.ending = Ending::Error(PaymentError::InvalidRequest(format!(
                    "cannot forward this request: {e}"
                )));
                return ended;
            }
        };
        let started = Instant::now();
        let result = channel
            .upstream
            .send(upstream_req, channel.config.timeout.min(remaining))
            .await;
        let elapsed = started.elapsed();

        // verdict
        let v = verdict(&result, snap.routing.failover_on);
        record(channel, snap, ticket, &v, elapsed);
        if !matches!(result, AttemptResult::ConnectFailed(_)) {
            ended.reached_acquirer = true;
        }
        let outcome = match v {
            Verdict::Success => "success",
            Verdict::Decline => "decline",
            Verdict::PassFailure => "upstream_failed",
            Verdict::Failed { failure, fail_over } => {
                let detail = describe(&result);
                tracing::info!(request_id = ?request_id, channel = %channel.config.id, ?failure, %detail, fail_over, "attempt failed");
                if failure.ambiguous() {
                    // resolve: was it charged there after all?
                    channel.metrics.ambiguous.inc();
                    let budget = deadline.saturating_duration_since(Instant::now());
                    match ambiguity::query(&channel.config, &channel.upstream, &facts.order_id, request_id, budget)
                        .await
                    {
                        Resolution::Paid { status, headers, body } => {
                            tracing::info!(request_id = ?request_id, channel = %channel.config.id, "query: the ambiguous attempt was paid; no failover");
                            ended.ambiguous.push(channel.config.id.clone());
                            ended.ending = Ending::Answer {
                                status,
                                headers,
                                body,
                                channel: channel.config.id.clone(),
                                outcome: "success",
                            };
                            return ended;
                        }
                        Resolution::NeverArrived => {}
                        Resolution::Unknown => {
                            ended.ambiguous.push(channel.config.id.clone());
                            if channel.config.reversal.is_some() {
                                app.reversals.start(
                                    channel.config.clone(),
                                    channel.upstream.clone(),
                                    facts.order_id.clone(),
                                    body.clone(),
                                    request_id.clone(),
                                    app.metrics.reversals.clone(),
                                );
                            }
                        }
                    }
                }
                last_failure = Some((failure, detail));
                if !fail_over {
                    break;
                }
                pending_failover = Some((channel, failure.reason()));
                continue;
            }
        };
        let AttemptResult::Answered { status, headers, body } = result else {
            unreachable!("verdict() gives Success, Decline and PassFailure only for answers")
        };
        ended.ending = Ending::Answer {
            status,
            headers,
            body,
            channel: channel.config.id.clone(),
            outcome,
        };
        return ended;
    }
    // Every attempt failed (settle releases the reservation).
    ended.ending = Ending::Error(match last_failure {
        None => PaymentError::NoChannelAvailable,
        Some((Failure::Timeout, _)) => PaymentError::UpstreamTimeout,
        Some((_, detail)) => PaymentError::UpstreamFailed(detail),
    });
    ended
}

/// A follow-up (status, refund…) goes once to the channel that served the
/// order, whatever the scores say now; never failed over.
async fn follow_up(
    app: &App,
    snap: &Snapshot,
    merchant: &Merchant,
    parts: &Parts,
    body: Bytes,
    order_id: &str,
    request_id: &HeaderValue,
) -> Result<Done, PaymentError> {
    let cfg = &merchant.config;
    let channel_id = app
        .store
        .followup(&cfg.id, &merchant.limiter, (cfg.rate_per_sec, cfg.burst), order_id)
        .await
        .map_err(state_unavailable)?
        .map_err(|retry_after| PaymentError::RateLimited { retry_after })?
        .ok_or(PaymentError::UnknownOrder)?;
    let channel = snap
        .channels
        .iter()
        .find(|c| c.config.id == channel_id)
        .ok_or_else(|| {
            PaymentError::UpstreamFailed(format!(
                "channel {channel_id} that served this order is no longer configured"
            ))
        })?;
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let req = forward::request(
        &channel.config,
        parts.method.clone(),
        path_and_query,
        &parts.headers,
        body,
        request_id,
    )
    .map_err(|e| PaymentError::InvalidRequest(format!("cannot forward this request: {e}")))?;
    let started = Instant::now();
    let result = channel
        .upstream
        .send(req, channel.config.timeout.min(snap.server.deadline))
        .await;
    channel.metrics.latency.observe(started.elapsed().as_secs_f64());
    let (label, outcome) = match &result {
        AttemptResult::Answered { status, .. } if status.is_success() => (AttemptLabel::Success, "success"),
        AttemptResult::Answered { status, .. } if status.is_server_error() => {
            (AttemptLabel::Upstream5xx, "upstream_failed")
        }
        AttemptResult::Answered { .. } => (AttemptLabel::Decline, "decline"),
        AttemptResult::ConnectFailed(_) => (AttemptLabel::ConnectError, ""),
        AttemptResult::TimedOut => (AttemptLabel::Timeout, ""),
        AttemptResult::Broken(_) => (AttemptLabel::Upstream5xx, ""),
    };
    channel.metrics.attempt(label);
    match result {
        AttemptResult::Answered { status, headers, body } => {
            let mut r = Response::new(Full::new(body));
            *r.status_mut() = status;
            forward::response_headers(&headers, r.headers_mut());
            set_channel(r.headers_mut(), &channel.config.id, 1);
            Ok((r, outcome))
        }
        AttemptResult::TimedOut => Err(PaymentError::UpstreamTimeout),
        other => Err(PaymentError::UpstreamFailed(describe(&other))),
    }
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
    auth::authenticate(merchant.config.api_key_sha256(), req.headers()).map_err(|e| match e {
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
    if let Some(time) = ticket.record(sample == Sample::Failure, &snap.routing) {
        tracing::warn!(channel = %channel.config.id, ejected_for = ?time, "channel ejected after repeated failures");
    }
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
