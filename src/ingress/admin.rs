//! The admin API: health and readiness, channels, reload, metrics, and the
//! journal's views — a payment's record, outgoing notifications, a re-send.
//!
//! | request | answer |
//! |---|---|
//! | `GET /-/health` | 200 while the process serves |
//! | `GET /-/ready` | 200 when the state store and the journal answer (the journal's `ping`, 2 s at most), else 503 with which one does not |
//! | `GET /-/channels` | the channels' live view |
//! | `POST /-/reload` | reload; needs `admin_token` when set |
//! | `GET /metrics` | Prometheus text |
//! | `GET /-/payments/{trade_no}` | the journal's record of one payment (state, amounts, attempts, notifications in and out, reversals and refunds); 404 unknown |
//! | `GET /-/notifications?state=pending\|failed` | outgoing notifications in that state, newest first, at most [`LIST_LIMIT`]; 400 for another state |
//! | `POST /-/notifications/{event_id}/resend` | queues the event again, due now with its retries counted from zero, and wakes the outbox; 200 with the event, 404 unknown; needs `admin_token` when set |
//! | `GET /-/ui`, `GET /-/ui/...` | the web console and its JSON ([`super::console`]) |
//!
//! Read-only views are computed from the current snapshot on request
//! ([`crate::snapshot::Snapshot::channel_views`]) or read from the journal
//! (a journal that does not answer is a 503 `journal_unavailable`, counted
//! in `payroute_journal_errors_total`). Reload runs on a thread of its own
//! at a low CPU priority (see [`crate::reload`]: parsing a large file must
//! stall neither this runtime nor a payment worker). Reload and re-send
//! change things, so they are guarded by `admin_token` when one is
//! configured; the views are not (the admin listener is an operator's
//! socket, like `/metrics`).
//!
//! Nothing here prints a secret: channels show ids and numbers, never urls'
//! credentials or headers; the journal holds no key (a merchant's
//! `notify_secret` signs when sending and is never stored), and credentials
//! in a URL an event was addressed to (`https://user:pass@...`) are masked.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde::Serialize;
use subtle::ConstantTimeEq;

use super::console;
use crate::app::App;
use crate::error::Body;
use crate::journal::{self, Event, EventState, JournalError};
use crate::metrics::ChannelGauges;
use crate::reload::Reloader;

/// The admin listener's service function. Infallible: every error is a response.
pub(crate) async fn serve(
    app: Arc<App>,
    reloader: Arc<Reloader>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    Ok(route(app, reloader, req).await)
}

/// One row of `GET /-/channels`.
#[derive(Serialize)]
struct ChannelRow {
    id: String,
    state: &'static str,
    success_rate: f64,
    latency_ms: Option<f64>,
    fee_percent: f64,
    score: f64,
    in_flight: u32,
    requests: u64,
    /// Of the window's payments, 0 to 1.
    share: f64,
    daily_used: u64,
    /// `null`: the channel has no ramp.
    ramp_percent: Option<f64>,
}

async fn route(app: Arc<App>, reloader: Arc<Reloader>, req: Request<Incoming>) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/-/health") => json(StatusCode::OK, &serde_json::json!({ "status": "ok" })),
        (&Method::GET, "/-/ready") => ready(&app).await,
        (&Method::GET, "/-/channels") => json(StatusCode::OK, &channels(&app)),
        (&Method::GET, "/metrics") => metrics(&app),
        (&Method::GET, path) if console::owns(path) => console::serve(&app, &reloader, path).await,
        (&Method::POST, "/-/reload") => reload(&app, reloader, &req).await,
        (&Method::GET, "/-/notifications") => notifications(&app, req.uri().query()).await,
        (&Method::GET, path) if path.starts_with(PAYMENTS) => payment(&app, &path[PAYMENTS.len()..]).await,
        (&Method::POST, path) => match resend_path(path) {
            Some(event_id) => resend(&app, &req, event_id).await,
            None => not_found(),
        },
        _ => not_found(),
    }
}

const PAYMENTS: &str = "/-/payments/";

/// Most events `GET /-/notifications` lists.
pub(crate) const LIST_LIMIT: i64 = 500;

fn not_found() -> Response<Body> {
    error(StatusCode::NOT_FOUND, "unknown_route", "no admin endpoint here")
}

/// `{event_id}` of `/-/notifications/{event_id}/resend`.
fn resend_path(path: &str) -> Option<&str> {
    path.strip_prefix("/-/notifications/")?.strip_suffix("/resend")
}

/// Event ids are payroute's own (`evt` + 26 of `[0-9a-z]`): anything else
/// is unknown without asking the journal.
fn plausible_event_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// For load balancers: can this instance serve payments right now?
async fn ready(app: &App) -> Response<Body> {
    if !app.store.ready() {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({ "status": "state_unavailable" }),
        );
    }
    if let Err(e) = app.journal.ping().await {
        app.metrics.journal_errors.inc();
        tracing::debug!(error = %e, "readiness: the journal does not answer");
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({ "status": "journal_unavailable" }),
        );
    }
    json(StatusCode::OK, &serde_json::json!({ "status": "ready" }))
}

fn journal_error(app: &App, e: &JournalError) -> Response<Body> {
    app.metrics.journal_errors.inc();
    tracing::warn!(error = %e, "admin: journal read failed");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "journal_unavailable",
        "the journal does not answer; try again",
    )
}

async fn payment(app: &App, trade_no: &str) -> Response<Body> {
    let unknown = || {
        error(
            StatusCode::NOT_FOUND,
            "unknown_payment",
            "no payment with this trade number",
        )
    };
    if !journal::valid_trade_no(trade_no) {
        return unknown();
    }
    match app.journal.payment(trade_no).await {
        Ok(Some(mut record)) => {
            record.notifications_out.iter_mut().for_each(mask_target);
            json(StatusCode::OK, &record)
        }
        Ok(None) => unknown(),
        Err(e) => journal_error(app, &e),
    }
}

async fn notifications(app: &App, query: Option<&str>) -> Response<Body> {
    let state = form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned());
    let state = match state.as_deref().and_then(EventState::parse) {
        Some(s @ (EventState::Pending | EventState::Failed)) => s,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "state must be pending or failed",
            )
        }
    };
    match app.journal.events(state, LIST_LIMIT).await {
        Ok(mut events) => {
            events.iter_mut().for_each(mask_target);
            json(StatusCode::OK, &events)
        }
        Err(e) => journal_error(app, &e),
    }
}

async fn resend(app: &App, req: &Request<Incoming>, event_id: &str) -> Response<Body> {
    if let Some(refused) = unauthorized(app, req, "resend") {
        return refused;
    }
    let unknown = || {
        error(
            StatusCode::NOT_FOUND,
            "unknown_event",
            "no notification with this event id",
        )
    };
    if !plausible_event_id(event_id) {
        return unknown();
    }
    match app.journal.resend(event_id, journal::now_ms()).await {
        Ok(true) => {}
        Ok(false) => return unknown(),
        Err(e) => return journal_error(app, &e),
    }
    app.outbox.ring();
    tracing::info!(event_id, "notification queued again by hand");
    match app.journal.event(event_id).await {
        Ok(Some(mut event)) => {
            mask_target(&mut event);
            json(StatusCode::OK, &event)
        }
        Ok(None) => unknown(),
        Err(e) => journal_error(app, &e),
    }
}

/// Masks the user information of an event's target URL
/// (`https://user:pass@host/` → `https://***@host/`).
fn mask_target(event: &mut Event) {
    let Some((scheme, rest)) = event.target.split_once("://") else {
        return;
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    if let Some(at) = rest[..authority_end].rfind('@') {
        event.target = format!("{scheme}://***{}", &rest[at..]);
    }
}

fn channels(app: &App) -> Vec<ChannelRow> {
    app.snapshot()
        .channel_views()
        .map(|v| ChannelRow {
            id: v.channel.config.id.to_string(),
            state: v.state,
            success_rate: v.success_rate,
            latency_ms: v.latency_ms,
            fee_percent: v.channel.config.fee_percent,
            score: v.score,
            in_flight: v.in_flight,
            requests: v.requests,
            share: v.share,
            daily_used: v.daily_used,
            ramp_percent: v.ramp_percent,
        })
        .collect()
}

fn metrics(app: &App) -> Response<Body> {
    let snap = app.snapshot();
    let gauges = snap.channel_views().map(|v| ChannelGauges {
        id: &v.channel.config.id,
        score: v.score,
        success_rate: v.success_rate,
        latency_ms: v.latency_ms.unwrap_or(0.0),
        in_flight: v.in_flight,
        state: v.state,
        share: v.share,
        daily_used: v.daily_used,
    });
    let text = app.metrics.render(gauges);
    let mut r = Response::new(Full::new(Bytes::from(text)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

/// `Some(401)` when an `admin_token` is configured and the request does not
/// bear it (compared in constant time).
fn unauthorized(app: &App, req: &Request<Incoming>, what: &str) -> Option<Response<Body>> {
    let snapshot = app.snapshot();
    let token = snapshot.server.admin_token.as_ref()?;
    // The same reading of `Authorization` as merchant auth (scheme in any case).
    let given = crate::payment::auth::bearer(req.headers()).unwrap_or("");
    if bool::from(given.as_bytes().ct_eq(token.expose().as_bytes())) {
        return None;
    }
    Some(error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        &format!("{what} needs Authorization: Bearer <admin_token>"),
    ))
}

async fn reload(app: &App, reloader: Arc<Reloader>, req: &Request<Incoming>) -> Response<Body> {
    if let Some(refused) = unauthorized(app, req, "reload") {
        return refused;
    }
    match reloader.reload_in_background(true).await {
        Ok(Ok(done)) => json(
            StatusCode::OK,
            &serde_json::json!({ "version": done.version, "changed": done.changed }),
        ),
        Ok(Err(e)) => json(StatusCode::BAD_REQUEST, &serde_json::json!({ "errors": e.lines() })),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", &e.to_string()),
    }
}

fn json(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    json(
        status,
        &serde_json::json!({ "error": { "code": code, "message": message } }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(target: &str) -> Event {
        Event {
            event_id: "evt1".into(),
            trade_no: "T1".into(),
            merchant_id: "m".into(),
            kind: "json".into(),
            target: target.into(),
            method: "POST".into(),
            body: "{}".into(),
            state: EventState::Pending,
            attempts: 0,
            next_at_ms: 0,
            lease_owner: None,
            lease_until_ms: None,
            last_error: None,
            created_at_ms: 0,
            delivered_at_ms: None,
        }
    }

    #[test]
    fn credentials_in_a_target_are_masked() {
        for (given, shown) in [
            ("https://u:hunter2@shop.example/hook", "https://***@shop.example/hook"),
            ("http://tok@127.0.0.1:9/n?x=a@b", "http://***@127.0.0.1:9/n?x=a@b"),
            ("https://shop.example/n?mail=a@b", "https://shop.example/n?mail=a@b"),
            ("https://shop.example", "https://shop.example"),
            ("not a url", "not a url"),
        ] {
            let mut e = event(given);
            mask_target(&mut e);
            assert_eq!(e.target, shown, "{given}");
        }
    }

    #[test]
    fn resend_paths_and_event_ids() {
        assert_eq!(resend_path("/-/notifications/evtabc/resend"), Some("evtabc"));
        assert_eq!(resend_path("/-/notifications/evtabc"), None);
        assert_eq!(resend_path("/-/reload"), None);
        assert!(plausible_event_id("evt0123456789abcdefghijklmnop"));
        for bad in ["", "evt/x", "evt%20", &"a".repeat(65)] {
            assert!(!plausible_event_id(bad), "{bad}");
        }
    }
}
