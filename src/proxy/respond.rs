//! How a request ended ([`Ended`]), and what is made of it: the merchant's
//! response ([`respond`]), the answer kept for repeats ([`Ended::stored`])
//! and a repeat's replay ([`Ended::replay`]).
//!
//! Every ending — an acquirer's answer, the proxy's own error, a replay — is
//! one type, so the `X-Payroute-*` headers a merchant sees, the outcome
//! that is counted and the answer that is stored come from one value and
//! cannot disagree. A payment that will only be decided later (a `pending`
//! answer) is one more [`Outcome`] of an acquirer's answer.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderName, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::Full;

use crate::error::{Body, PaymentError};
use crate::outcome::Outcome;
use crate::routing::RouteTag;
use crate::state::StoredResponse;
use crate::upstream::forward;

const CHANNEL: HeaderName = HeaderName::from_static("x-payroute-channel");
const ATTEMPTS: HeaderName = HeaderName::from_static("x-payroute-attempts");
const AMBIGUOUS: HeaderName = HeaderName::from_static("x-payroute-ambiguous");
const REPLAYED: HeaderName = HeaderName::from_static("x-payroute-replayed");
/// On a replay whose answer was kept without its body: the body's size.
const BODY_OMITTED: HeaderName = HeaderName::from_static("x-payroute-body-omitted");
/// Which rule routed the payment and how (`routing::RouteTag`).
const ROUTE: HeaderName = HeaderName::from_static("x-payroute-route");
pub(super) const TRADE_NO: HeaderName = HeaderName::from_static("x-payroute-trade-no");

/// How a request ended, before it becomes HTTP.
pub(super) struct Ended {
    pub answer: Answer,
    pub trail: Trail,
}

/// What the merchant is answered with.
pub(super) enum Answer {
    /// An acquirer's answer: direct, or a query's that found the payment paid.
    Acquirer {
        outcome: Outcome,
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
        channel: Arc<str>,
    },
    /// The proxy's own error.
    Error(PaymentError),
    /// A repeat of a finished payment: its stored answer.
    Replay {
        outcome: Outcome,
        status: StatusCode,
        content_type: Option<String>,
        body: Bytes,
        channel: Option<Arc<str>>,
        /// The size of a body too large to keep (`body` is empty); 0: kept.
        body_omitted: u32,
    },
}

/// What the attempts left behind.
#[derive(Default)]
pub(super) struct Trail {
    pub attempts: u32,
    /// Channels whose attempt may have charged and was not proven otherwise,
    /// as `X-Payroute-Ambiguous` lists them.
    pub ambiguous: String,
    /// Whether any acquirer may have seen the payment: `settle` keeps the
    /// answer of such a payment, and forgets the key of any other.
    pub reached_acquirer: bool,
    /// The payment's trade number, once it has one.
    pub trade_no: Option<String>,
    /// Whether the payment's record is open in the journal (see `ledger`).
    pub journaled: bool,
    /// Whether an ambiguous attempt was left unresolved: the payment stops,
    /// pending, and may yet turn out charged.
    pub unresolved: bool,
    /// The route rank chose, once it ranked.
    pub route: Option<RouteTag>,
}

impl Trail {
    /// One attempt that reached its acquirer (a follow-up's).
    pub fn single() -> Trail {
        Trail {
            attempts: 1,
            reached_acquirer: true,
            ..Trail::default()
        }
    }

    /// Names `channel` in `X-Payroute-Ambiguous`.
    pub fn ambiguous(&mut self, channel: &str) {
        if !self.ambiguous.is_empty() {
            self.ambiguous.push(',');
        }
        self.ambiguous.push_str(channel);
    }

    pub fn end(self, answer: Answer) -> Ended {
        Ended { answer, trail: self }
    }
}

/// A refusal: no attempt was made.
impl From<PaymentError> for Ended {
    fn from(e: PaymentError) -> Ended {
        Ended::refused(e)
    }
}

impl Ended {
    /// Names the route of a payment that ended after rank.
    pub fn routed(mut self, route: RouteTag) -> Ended {
        self.trail.route = Some(route);
        self
    }

    pub fn refused(e: PaymentError) -> Ended {
        Trail::default().end(Answer::Error(e))
    }

    /// A repeat answered from the stored answer of the payment it repeats.
    pub fn replay(stored: StoredResponse) -> Ended {
        let trail = Trail {
            attempts: stored.attempts,
            ambiguous: stored.ambiguous.unwrap_or_default(),
            reached_acquirer: true,
            trade_no: stored.trade_no,
            ..Trail::default()
        };
        trail.end(Answer::Replay {
            // Text this version does not know (another version's) counts as a success.
            outcome: Outcome::parse(&stored.outcome).unwrap_or(Outcome::Success),
            status: StatusCode::from_u16(stored.status).unwrap_or(StatusCode::BAD_GATEWAY),
            content_type: stored.content_type,
            body: stored.body,
            channel: stored.channel,
            body_omitted: stored.body_omitted,
        })
    }

    pub fn outcome(&self) -> Outcome {
        match &self.answer {
            Answer::Acquirer { outcome, .. } | Answer::Replay { outcome, .. } => *outcome,
            Answer::Error(e) => e.outcome(),
        }
    }

    /// What is kept to answer a repeat with. A body over `max_body` bytes
    /// is not kept (an acquirer's answer may be up to 1 MiB, and thousands
    /// are kept): the replay then has the same status, channel and trade
    /// number, an empty body and `X-Payroute-Body-Omitted: <size>`.
    pub fn stored(&self, max_body: usize) -> StoredResponse {
        let (status, content_type, body, channel) = match &self.answer {
            Answer::Acquirer {
                status,
                headers,
                body,
                channel,
                ..
            } => (
                *status,
                headers
                    .get(CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
                body.clone(),
                Some(channel.clone()),
            ),
            Answer::Error(e) => (e.status(), Some("application/json".into()), e.json_body(), None),
            Answer::Replay {
                status,
                content_type,
                body,
                channel,
                ..
            } => (*status, content_type.clone(), body.clone(), channel.clone()),
        };
        let (body, body_omitted) = match body.len() {
            n if n > max_body => (Bytes::new(), u32::try_from(n).unwrap_or(u32::MAX)),
            _ => (body, 0),
        };
        StoredResponse {
            status: status.as_u16(),
            content_type,
            body,
            body_omitted,
            channel,
            attempts: self.trail.attempts,
            ambiguous: (!self.trail.ambiguous.is_empty()).then(|| self.trail.ambiguous.clone()),
            outcome: self.outcome().as_str().to_owned(),
            trade_no: self.trail.trade_no.clone(),
        }
    }
}

/// respond: the merchant's response.
pub(super) fn respond(ended: Ended, request_id: &HeaderValue) -> Response<Body> {
    let Ended { answer, trail } = ended;
    let mut response = match answer {
        Answer::Acquirer {
            status,
            headers,
            body,
            channel,
            ..
        } => {
            let mut r = Response::new(Full::new(body));
            *r.status_mut() = status;
            forward::response_headers(&headers, r.headers_mut());
            set_channel(r.headers_mut(), &channel, trail.attempts);
            r
        }
        Answer::Error(e) => {
            log_refusal(&e, request_id);
            let mut r = e.into_response();
            if trail.attempts > 0 {
                r.headers_mut().insert(ATTEMPTS, HeaderValue::from(trail.attempts));
            }
            r
        }
        Answer::Replay {
            status,
            content_type,
            body,
            channel,
            body_omitted,
            ..
        } => {
            let mut r = Response::new(Full::new(body));
            *r.status_mut() = status;
            let h = r.headers_mut();
            if body_omitted > 0 {
                h.insert(BODY_OMITTED, HeaderValue::from(body_omitted));
            }
            if let Some(ct) = content_type.and_then(|c| HeaderValue::from_str(&c).ok()) {
                h.insert(CONTENT_TYPE, ct);
            }
            match &channel {
                Some(channel) => set_channel(h, channel, trail.attempts),
                None => {
                    h.insert(ATTEMPTS, HeaderValue::from(trail.attempts));
                }
            }
            h.insert(REPLAYED, HeaderValue::from_static("true"));
            r
        }
    };
    if !trail.ambiguous.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&trail.ambiguous) {
            response.headers_mut().insert(AMBIGUOUS, v);
        }
    }
    if let Some(v) = trail.trade_no.and_then(|t| HeaderValue::from_str(&t).ok()) {
        response.headers_mut().insert(TRADE_NO, v);
    }
    if let Some(route) = trail.route {
        // Most payments take the default route: no formatting for them.
        let v = match route.rule {
            None => HeaderValue::from_static("default:score"),
            Some(_) => HeaderValue::from_str(&route.to_string()).unwrap_or(HeaderValue::from_static("default:score")),
        };
        response.headers_mut().insert(ROUTE, v);
    }
    response
}

fn set_channel(headers: &mut HeaderMap, channel: &str, attempts: u32) {
    if let Ok(id) = HeaderValue::from_str(channel) {
        headers.insert(CHANNEL, id);
    }
    headers.insert(ATTEMPTS, HeaderValue::from(attempts));
}

/// Failed payments are worth a line each; refusals (4xx, and 503s whose
/// cause — an ejection, a Redis outage — is logged once where it happens)
/// only at debug, so an outage cannot flood the log.
fn log_refusal(e: &PaymentError, request_id: &HeaderValue) {
    let code = e.outcome().as_str();
    if e.status().is_server_error() && e.status() != StatusCode::SERVICE_UNAVAILABLE {
        tracing::warn!(request_id = ?request_id, code, "{e}");
    } else {
        tracing::debug!(request_id = ?request_id, code, "{e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'r>(r: &'r Response<Body>, name: &HeaderName) -> Option<&'r str> {
        r.headers().get(name).and_then(|v| v.to_str().ok())
    }

    #[test]
    fn an_answer_and_its_replay_carry_the_same_headers() {
        let mut trail = Trail {
            attempts: 2,
            trade_no: Some("T1".into()),
            ..Trail::default()
        };
        trail.ambiguous("acq-b");
        trail.ambiguous("acq-c");
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let ended = trail.end(Answer::Acquirer {
            outcome: Outcome::Success,
            status: StatusCode::CREATED,
            headers,
            body: Bytes::from_static(b"{}"),
            channel: Arc::from("acq-a"),
        });
        let stored = ended.stored(usize::MAX);
        assert_eq!(stored.outcome, "success");
        assert_eq!(stored.ambiguous.as_deref(), Some("acq-b,acq-c"));

        let id = HeaderValue::from_static("0");
        let first = respond(ended, &id);
        let replay = Ended::replay(stored);
        assert_eq!(replay.outcome(), Outcome::Success);
        let again = respond(replay, &id);
        for r in [&first, &again] {
            assert_eq!(r.status(), StatusCode::CREATED);
            assert_eq!(header(r, &CHANNEL), Some("acq-a"));
            assert_eq!(header(r, &ATTEMPTS), Some("2"));
            assert_eq!(header(r, &AMBIGUOUS), Some("acq-b,acq-c"));
            assert_eq!(header(r, &CONTENT_TYPE), Some("application/json"));
            assert_eq!(header(r, &TRADE_NO), Some("T1"));
        }
        assert_eq!(header(&first, &REPLAYED), None);
        assert_eq!(header(&again, &REPLAYED), Some("true"));
    }

    #[test]
    fn errors_name_attempts_only_when_there_were_some() {
        let id = HeaderValue::from_static("0");
        let refused = Ended::from(PaymentError::NoEligibleChannel);
        assert_eq!(refused.outcome(), Outcome::NoEligibleChannel);
        assert_eq!(header(&respond(refused, &id), &ATTEMPTS), None);

        let trail = Trail {
            attempts: 3,
            ..Trail::default()
        };
        let failed = trail.end(Answer::Error(PaymentError::UpstreamTimeout));
        assert_eq!(failed.stored(usize::MAX).outcome, "upstream_timeout");
        let r = respond(failed, &id);
        assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(header(&r, &ATTEMPTS), Some("3"));
        assert_eq!(header(&r, &CHANNEL), None);
    }

    /// Issue 18, finding 4: a body over the cap is not kept; the replay says
    /// how large it was, and keeps everything else.
    #[test]
    fn a_body_over_the_cap_is_kept_without_its_body() {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let mut trail = Trail::single();
        trail.trade_no = Some("T1".into());
        let ended = trail.end(Answer::Acquirer {
            outcome: Outcome::Success,
            status: StatusCode::CREATED,
            headers,
            body: Bytes::from(vec![b'x'; 2_000]),
            channel: Arc::from("a"),
        });
        assert_eq!(ended.stored(2_000).body.len(), 2_000, "at the cap it is kept");
        let stored = ended.stored(1_999);
        assert_eq!((stored.body.len(), stored.body_omitted), (0, 2_000));
        assert_eq!(stored.status, 201);
        assert_eq!(stored.trade_no.as_deref(), Some("T1"));
        let replay = respond(Ended::replay(stored), &HeaderValue::from_static("rid"));
        assert_eq!(replay.status(), StatusCode::CREATED);
        assert_eq!(replay.headers()[BODY_OMITTED], "2000");
        assert_eq!(replay.headers()[REPLAYED], "true");
        assert_eq!(replay.headers()[TRADE_NO], "T1");
        let kept = respond(
            Ended::replay(ended.stored(usize::MAX)),
            &HeaderValue::from_static("rid"),
        );
        assert!(kept.headers().get(BODY_OMITTED).is_none());
    }
}
