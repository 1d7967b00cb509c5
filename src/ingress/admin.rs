//! The admin API: health, channels, reload, metrics.
//!
//! Read-only views are computed from the current snapshot on request
//! ([`crate::snapshot::Snapshot::channel_views`]). Reload runs on a thread of
//! its own at a low CPU priority (see [`crate::reload`]: parsing a large
//! file must stall neither this runtime nor a payment worker) and is guarded
//! by `admin_token` when one is configured.
//! Nothing here prints a secret: channels show ids and numbers, never urls'
//! credentials or headers.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde::Serialize;
use subtle::ConstantTimeEq;

use crate::app::App;
use crate::error::Body;
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
}

async fn route(app: Arc<App>, reloader: Arc<Reloader>, req: Request<Incoming>) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/-/health") => json(StatusCode::OK, &serde_json::json!({ "status": "ok" })),
        // For load balancers: can this instance serve payments right now?
        (&Method::GET, "/-/ready") => match app.store.ready() {
            true => json(StatusCode::OK, &serde_json::json!({ "status": "ready" })),
            false => json(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({ "status": "state_unavailable" }),
            ),
        },
        (&Method::GET, "/-/channels") => json(StatusCode::OK, &channels(&app)),
        (&Method::GET, "/metrics") => metrics(&app),
        (&Method::POST, "/-/reload") => reload(&app, reloader, &req).await,
        _ => error(StatusCode::NOT_FOUND, "unknown_route", "no admin endpoint here"),
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
    });
    let text = app.metrics.render(gauges);
    let mut r = Response::new(Full::new(Bytes::from(text)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

async fn reload(app: &App, reloader: Arc<Reloader>, req: &Request<Incoming>) -> Response<Body> {
    if let Some(token) = &app.snapshot().server.admin_token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !bool::from(given.as_bytes().ct_eq(token.expose().as_bytes())) {
            return error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "reload needs Authorization: Bearer <admin_token>",
            );
        }
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
