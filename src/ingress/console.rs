//! The web console (contract part two, `GET /-/ui`): one page, served by the
//! binary from the admin listener, that shows an operator where payments go
//! and why, live.
//!
//! | request | answer |
//! |---|---|
//! | `GET /-/ui` | the page |
//! | `GET /-/ui/app.js`, `style.css`, `uPlot.iife.min.js`, `uPlot.min.css` | its scripts and styles |
//! | `GET /-/ui/state.json` | everything the page shows, in one JSON document ([`State`]) |
//!
//! **Everything is embedded** (`include_str!`, from `src/ingress/ui/`): the
//! machines payroute runs on often reach no CDN, so the page never asks for
//! anything but these paths. The charts are uPlot (MIT, ~50 KB; its version
//! and licence sit beside it in `ui/`), a small canvas charting library, so
//! fifty channels a chart stay cheap to draw.
//!
//! **Polling, not server-sent events.** The page asks for `state.json`
//! every second and keeps the history (ten minutes) itself. A poll is one
//! snapshot load, one [`crate::snapshot::Snapshot::channel_views`] pass, a few counter
//! reads and a journal ping: ~0.15 ms of CPU (most of it the ping), so five
//! open consoles cost 0.08 % of a core (BENCHMARKS.md); nothing is kept
//! per viewer on the server, and nothing held open — an SSE stream would be
//! a connection per open tab that graceful shutdown has to cut, that some
//! proxies buffer and some firewalls time out, and that needs a timer and a
//! fan-out here for what a `fetch` a second does. Rates and "recent"
//! events are differences between polls, computed by the page, so the
//! server keeps no history either.
//!
//! **Nothing secret.** The document carries channel ids, states and
//! numbers, and config error lines (which never quote a secret:
//! [`crate::config::secret`]). Never urls, headers, credentials, merchant
//! keys or the admin token — only whether one is configured. The journal's
//! error text is left out too: a database driver's message may name a host
//! or user.
//!
//! **Changes need the token.** The page itself changes nothing: its reload
//! button posts to `/-/reload` with `Authorization: Bearer` from a token
//! field kept in the tab's `sessionStorage`, and `admin.rs` checks it as it
//! does for any client. The page escapes all text (`textContent` only) and
//! is served with a Content-Security-Policy that allows scripts and styles
//! from these paths alone.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;

use crate::app::App;
use crate::config::Backend;
use crate::error::Body;
use crate::reload::Reloader;

/// Where the console lives on the admin listener.
pub(crate) const PATH: &str = "/-/ui";

/// The page and its assets: path under [`PATH`], content type, bytes.
const ASSETS: &[(&str, &str, &str)] = &[
    ("", "text/html; charset=utf-8", include_str!("ui/index.html")),
    ("/app.js", "text/javascript; charset=utf-8", include_str!("ui/app.js")),
    ("/style.css", "text/css; charset=utf-8", include_str!("ui/style.css")),
    (
        "/uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_str!("ui/uPlot.iife.min.js"),
    ),
    (
        "/uPlot.min.css",
        "text/css; charset=utf-8",
        include_str!("ui/uPlot.min.css"),
    ),
];

/// Scripts, styles and fetches from this origin only; no frames, no forms,
/// no plug-ins. `img-src data:` is the page's empty favicon (without one
/// the browser asks for `/favicon.ico`, a 404 on the console).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Whether `path` is the console's (the admin router hands it over).
pub(crate) fn owns(path: &str) -> bool {
    path == PATH || path.starts_with("/-/ui/")
}

/// Answers a `GET` of one of the console's paths.
pub(crate) async fn serve(app: &App, reloader: &Reloader, path: &str) -> Response<Body> {
    let Some(rest) = path.strip_prefix(PATH) else {
        return not_found();
    };
    if rest == "/state.json" {
        let state = state(app, reloader).await;
        let body = serde_json::to_vec(&state).unwrap_or_default();
        return response(StatusCode::OK, "application/json", Bytes::from(body), "no-store");
    }
    if rest == "/" {
        // The page's relative links resolve against `/-/ui`, not `/-/ui/`.
        let mut r = response(StatusCode::PERMANENT_REDIRECT, "text/plain", Bytes::new(), "no-cache");
        r.headers_mut()
            .insert(header::LOCATION, HeaderValue::from_static("../ui"));
        return r;
    }
    match ASSETS.iter().find(|(p, _, _)| *p == rest) {
        // `no-cache`: a browser revalidates, so a new binary's page is
        // never mixed with an old binary's script.
        Some((_, kind, text)) => {
            let mut r = response(StatusCode::OK, kind, Bytes::from_static(text.as_bytes()), "no-cache");
            if rest.is_empty() {
                let h = r.headers_mut();
                h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
                h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
                h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
            }
            r
        }
        None => not_found(),
    }
}

fn response(status: StatusCode, kind: &'static str, body: Bytes, cache: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    r
}

fn not_found() -> Response<Body> {
    let body = br#"{"error":{"code":"unknown_route","message":"no console file here"}}"#;
    response(
        StatusCode::NOT_FOUND,
        "application/json",
        Bytes::from_static(body),
        "no-store",
    )
}

/// `GET /-/ui/state.json`: the console's one document.
#[derive(Serialize)]
struct State {
    /// The server's clock, Unix milliseconds (the page's time axis).
    now_ms: i64,
    /// The config version in force.
    version: u64,
    /// The statistics window behind `success_rate` and `share`.
    window_ms: u64,
    /// Whether changes (reload, re-send) need `Authorization: Bearer`.
    admin_token: bool,
    /// The newest reload, whatever triggered it; `null` before the first.
    reload: Option<ReloadView>,
    state_store: StoreView,
    journal: JournalView,
    notifications: NotificationsView,
    /// Payment requests so far, by outcome (`payroute_requests_total`).
    requests: BTreeMap<&'static str, u64>,
    /// In config order.
    channels: Vec<ChannelRow>,
}

#[derive(Serialize)]
struct ReloadView {
    at_ms: i64,
    /// `true`: took effect (or nothing had changed); `false`: refused, the
    /// old config stays.
    ok: bool,
    /// The version in force after it.
    version: u64,
    /// Whether a new version came of it.
    changed: bool,
    /// A refused reload's located errors (the first few) and their count.
    errors: Vec<String>,
    error_count: usize,
}

#[derive(Serialize)]
struct StoreView {
    backend: &'static str,
    up: bool,
}

#[derive(Serialize)]
struct JournalView {
    /// Whether it answered a ping just now.
    up: bool,
}

#[derive(Serialize)]
struct NotificationsView {
    /// Events not delivered yet (`payroute_notification_backlog`).
    backlog: i64,
    delivered: u64,
    retry: u64,
    failed: u64,
}

/// One channel: what `/-/channels` shows, plus the window's outcomes, its
/// policies' figures and its failover and ambiguity counters.
#[derive(Serialize)]
struct ChannelRow {
    id: String,
    /// `healthy`, `ejected`, `probing`, `disabled`, `maintenance`,
    /// `capped` or `rolled_back`.
    state: &'static str,
    /// This channel's part of the window's payments (first attempts);
    /// `null` when the window holds none.
    share: Option<f64>,
    /// Taken today against `daily_cap`; the cap (`null`: none).
    daily_used: u64,
    daily_cap: Option<u64>,
    /// The share its ramp gives it now, in percent (`null`: no ramp).
    ramp_percent: Option<f64>,
    /// The window's attempts.
    attempts: u64,
    successes: u64,
    declines: u64,
    failures: u64,
    success_rate: f64,
    latency_ms: Option<f64>,
    fee_percent: f64,
    score: f64,
    in_flight: u32,
    /// Attempts since the process started.
    requests: u64,
    /// Payments moved from this channel to the next so far, by reason.
    failovers: BTreeMap<&'static str, u64>,
    /// Attempts whose fate was unknown so far.
    ambiguous: u64,
}

async fn state(app: &App, reloader: &Reloader) -> State {
    // The ping first: the numbers below are then read as late as possible.
    let journal_up = app.journal.ping().await.is_ok();
    let snap = app.snapshot();
    let views: Vec<_> = snap.channel_views().collect();
    let picks: u64 = views.iter().map(|v| v.totals.picks).sum();
    let channels = views
        .iter()
        .map(|v| {
            let attempts = v.totals.attempts();
            ChannelRow {
                id: v.channel.config.id.to_string(),
                state: v.state,
                share: (picks > 0).then_some(v.share),
                daily_used: v.daily_used,
                daily_cap: v.channel.config.policy.daily_cap,
                ramp_percent: v.ramp_percent,
                attempts,
                successes: v.totals.successes,
                declines: v.totals.declines,
                failures: v.totals.failures,
                success_rate: v.success_rate,
                latency_ms: v.latency_ms,
                fee_percent: v.channel.config.fee_percent,
                score: v.score,
                in_flight: v.in_flight,
                requests: v.requests,
                failovers: v.channel.metrics.failover_counts().collect(),
                ambiguous: v.channel.metrics.ambiguous.get(),
            }
        })
        .collect();
    let m = &app.metrics;
    let out = |r: &str| m.notifications_out.with_label_values(&[r]).get();
    State {
        now_ms: crate::journal::now_ms(),
        version: snap.version,
        window_ms: u64::try_from(snap.routing.window.as_millis()).unwrap_or(u64::MAX),
        admin_token: snap.server.admin_token.is_some(),
        reload: reloader.last().map(|last| {
            let (ok, changed, errors, error_count) = match last.result {
                Ok(changed) => (true, changed, Vec::new(), 0),
                Err((lines, count)) => (false, false, lines, count),
            };
            ReloadView {
                at_ms: last.at_ms,
                ok,
                version: last.version,
                changed,
                errors,
                error_count,
            }
        }),
        state_store: StoreView {
            backend: match snap.state.backend {
                Backend::Memory => "memory",
                Backend::Redis => "redis",
            },
            up: app.store.ready(),
        },
        journal: JournalView { up: journal_up },
        notifications: NotificationsView {
            backlog: m.notification_backlog.get(),
            delivered: out("delivered"),
            retry: out("retry"),
            failed: out("failed"),
        },
        requests: m.outcome_counts().collect(),
        channels,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::metrics::Metrics;
    use crate::state::Store;
    use http_body_util::BodyExt;

    async fn body(r: Response<Body>) -> String {
        let bytes = r.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[test]
    fn the_console_owns_its_paths_only() {
        for p in ["/-/ui", "/-/ui/", "/-/ui/app.js", "/-/ui/state.json"] {
            assert!(owns(p), "{p}");
        }
        for p in ["/-/uix", "/-/u", "/-/channels", "/ui", "/-/ui.js"] {
            assert!(!owns(p), "{p}");
        }
    }

    /// Everything the page loads is embedded here: each `src`/`href` of
    /// index.html is an asset, no file names another host, and the page's
    /// own script never writes HTML from data.
    #[test]
    fn the_page_loads_only_embedded_files() {
        let html = ASSETS[0].2;
        let mut named = 0;
        for attr in ["src=\"", "href=\""] {
            for part in html.split(attr).skip(1) {
                let link = &part[..part.find('"').unwrap()];
                if link == "data:," {
                    continue;
                }
                let rest = link
                    .strip_prefix("ui")
                    .unwrap_or_else(|| panic!("{link} is not under ui/"));
                assert!(ASSETS.iter().any(|(p, _, _)| *p == rest), "{link} is not embedded");
                named += 1;
            }
        }
        assert_eq!(named, ASSETS.len() - 1, "every asset is used");
        for (path, _, text) in &ASSETS[..3] {
            assert!(
                !text.contains("http://") && !text.contains("https://"),
                "{path} names a host"
            );
        }
        let app = ASSETS[1].2;
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!app.contains(sink), "app.js uses {sink}");
        }
    }

    #[test]
    fn state_json_shows_numbers_and_no_secret() {
        let (journal, _dir, rt) = crate::journal::scratch();
        let text = "[server]\nadmin_token = \"adm1n-s3cret\"\n\
                    [[channel]]\nid = \"a\"\nurl = \"http://acquirer-a.invalid:1/pay\"\n\
                    headers = { \"x-key\" = \"hdr-s3cret\" }\n\
                    [[channel]]\nid = \"b\"\nurl = \"http://127.0.0.1:2\"\nenabled = false\n\
                    [[merchant]]\nid = \"m\"\napi_key_sha256 = \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"\n";
        let config = Config::parse(text, "t.toml".as_ref()).unwrap();
        let app = crate::app::App::new(config, Metrics::new(), Store::memory(10), journal, 1);
        let reloader = Reloader::new(app.clone(), None);
        let text = rt.block_on(async { body(serve(&app, &reloader, "/-/ui/state.json").await).await });
        for secret in [
            "adm1n-s3cret",
            "pw-in-url",
            "hdr-s3cret",
            "x-key",
            "aaaaaaaa",
            "127.0.0.1",
        ] {
            assert!(!text.contains(secret), "state.json shows {secret}: {text}");
        }
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["admin_token"], true);
        assert_eq!(v["version"], 1);
        assert_eq!(v["journal"]["up"], true);
        assert_eq!(v["channels"][0]["id"], "a");
        assert_eq!(v["channels"][0]["share"], serde_json::Value::Null, "no attempts yet");
        assert_eq!(v["channels"][1]["state"], "disabled");
        assert_eq!(v["requests"]["success"], 0);
    }

    #[test]
    fn unknown_console_files_are_404_and_the_page_has_a_policy() {
        let (journal, _dir, rt) = crate::journal::scratch();
        let config = Config::parse(
            "[[channel]]\nid = \"a\"\nurl = \"http://127.0.0.1:1\"\n",
            "t.toml".as_ref(),
        )
        .unwrap();
        let app = crate::app::App::new(config, Metrics::new(), Store::memory(10), journal, 1);
        let reloader = Reloader::new(app.clone(), None);
        rt.block_on(async {
            assert_eq!(serve(&app, &reloader, "/-/ui/../admin.rs").await.status(), 404);
            assert_eq!(serve(&app, &reloader, "/-/ui/index.html").await.status(), 404);
            let page = serve(&app, &reloader, "/-/ui").await;
            assert_eq!(page.status(), 200);
            assert!(page.headers().contains_key(header::CONTENT_SECURITY_POLICY));
            let js = serve(&app, &reloader, "/-/ui/uPlot.iife.min.js").await;
            assert_eq!(js.headers()[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
            assert!(body(js).await.contains("uPlot"));
        });
    }
}
