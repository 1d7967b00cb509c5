//! The web console (`GET /-/ui`, contract part two) in a real browser:
//! Debian's Chromium, headless, driven over WebDriver by its chromedriver,
//! against the built payroute with fake acquirers.
//!
//! - The page follows traffic live, without a reload: a channel's share,
//!   success rate and state cells change as payments move, failovers appear
//!   in the recent events, and a screenshot is taken once they have
//!   (`$CARGO_TARGET_TMPDIR/console.png`; with
//!   `PAYROUTE_UPDATE_SCREENSHOT=1` also `docs/console.png`, the README's).
//! - Bad input is shown plainly: a reload refused (a banner with the
//!   located error), the journal down, payroute gone — never a blank page,
//!   and never a script error (the page turns any into a banner, which
//!   these tests look for).
//! - The token rule: the page's reload button is refused without the admin
//!   token and works with it; nothing secret is on the page or in its JSON.
//! - `payroute demo` prints the console's URL, live while it runs.
//!
//! WebDriver is spoken over plain HTTP with the test kit's client (a few
//! JSON commands: new session, navigate, execute script, find, click, type,
//! screenshot), so no browser-automation crate is needed. Chromium and
//! chromedriver come from Debian (`apt-get install chromium
//! chromium-driver`; `.ci/services` installs them). Without them these
//! tests fail, saying how to get them: a skipped browser test would pass CI
//! while proving nothing.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use payroute_mock::Reply;
use payroute_testkit::*;
use serde_json::{json, Value};

use crate::PAYROUTE;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long the page may take to show a change (it polls every second;
/// a loaded CI box runs the browser slowly).
const PAGE_WAIT: Duration = Duration::from_secs(40);
const TOKEN: &str = "console-admin-t0ken";
const CHANNEL_SECRET: &str = "chan-secret-4242";
const KEY: &str = "merchant-key-9";

// ---------------------------------------------------------------------------
// A browser over WebDriver
// ---------------------------------------------------------------------------

/// The browser binaries: `PAYROUTE_CHROMIUM` / `PAYROUTE_CHROMEDRIVER`, or
/// Debian's paths.
///
/// # Panics
/// When either is missing, saying how to install them.
fn browser_binaries() -> (PathBuf, PathBuf) {
    let pick = |var: &str, default: &str| PathBuf::from(std::env::var(var).unwrap_or_else(|_| default.to_owned()));
    let chromium = pick("PAYROUTE_CHROMIUM", CHROMIUM);
    let driver = pick("PAYROUTE_CHROMEDRIVER", CHROMEDRIVER);
    for (what, path) in [("Chromium", &chromium), ("chromedriver", &driver)] {
        assert!(
            path.is_file(),
            "{what} not found at {}: the web console's browser tests need Debian's Chromium \
             (apt-get install chromium chromium-driver; `bash .ci/services` installs them)",
            path.display()
        );
    }
    (chromium, driver)
}

/// A headless Chromium session through a chromedriver of its own.
struct Browser {
    /// chromedriver, leader of its own process group (Chromium's
    /// processes join it), so dropping the browser ends them all.
    driver: Child,
    base: String,
    session: String,
    client: HttpClient,
    _profile: tempfile::TempDir,
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    async fn start() -> Browser {
        let (chromium, driver_path) = browser_binaries();
        let port = free_port();
        let driver = Command::new(&driver_path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver_path.display()));
        let profile = tempfile::tempdir().expect("a profile directory");
        let mut b = Browser {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            client: client(),
            _profile: profile,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = try_send(&b.client, Method::GET, &format!("{}/status", b.base), &[], "").await;
            if status.is_ok_and(|r| r.status == 200 && r.json()["value"]["ready"] == true) {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not come up on port {port}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1400,1400", "--hide-scrollbars", "--no-first-run",
                    format!("--user-data-dir={}", b._profile.path().display()),
                ],
            },
        }}});
        let session = b.command(Method::POST, "/session", caps).await;
        b.session = session["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no sessionId in {session}"))
            .to_owned();
        b
    }

    /// One WebDriver command; its `value`.
    async fn command(&self, method: Method, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        let body = if method == Method::GET {
            String::new()
        } else {
            body.to_string()
        };
        let r = send(
            &self.client,
            method,
            &url,
            &[("content-type", "application/json")],
            body,
        )
        .await;
        let v = r.json();
        assert_eq!(r.status, 200, "WebDriver {path}: {v}");
        v["value"].clone()
    }

    async fn session_command(&self, method: Method, path: &str, body: Value) -> Value {
        self.command(method, &format!("/session/{}{path}", self.session), body)
            .await
    }

    async fn goto(&self, url: &str) {
        self.session_command(Method::POST, "/url", json!({ "url": url })).await;
    }

    /// Runs `script` (a function body) in the page and returns its value.
    async fn eval(&self, script: &str) -> Value {
        self.session_command(Method::POST, "/execute/sync", json!({ "script": script, "args": [] }))
            .await
    }

    async fn element(&self, css: &str) -> String {
        let v = self
            .session_command(
                Method::POST,
                "/element",
                json!({ "using": "css selector", "value": css }),
            )
            .await;
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_owned()
    }

    async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.session_command(Method::POST, &format!("/element/{id}/click"), json!({}))
            .await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.session_command(Method::POST, &format!("/element/{id}/value"), json!({ "text": text }))
            .await;
    }

    /// The viewport as PNG.
    async fn screenshot(&self) -> Vec<u8> {
        let v = self.session_command(Method::GET, "/screenshot", Value::Null).await;
        base64(v.as_str().expect("a base64 screenshot"))
    }

    /// Ends the session (Chromium quits) and chromedriver.
    async fn close(mut self) {
        let _ = try_send(
            &self.client,
            Method::DELETE,
            &format!("{}/session/{}", self.base, self.session),
            &[],
            "",
        )
        .await;
        self.session.clear();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Ok(pgid) = i32::try_from(self.driver.id()) {
            // SAFETY: kill(2) has no memory-safety preconditions; a negative
            // pid names the process group chromedriver leads (Chromium's
            // processes included).
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
        let _ = self.driver.wait();
    }
}

/// A plain HTTP client (WebDriver, the demo's console).
fn client() -> HttpClient {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// Standard base64 (WebDriver's screenshots), without a crate for it.
fn base64(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let clean: Vec<u8> = text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= value(c) << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

// ---------------------------------------------------------------------------
// What the page shows
// ---------------------------------------------------------------------------

/// The page as a person reads it: the text of its table cells, banners,
/// header facts and recent events (all read from the DOM).
#[derive(Debug)]
struct Page {
    polls: u64,
    /// Channel id → column → cell text.
    rows: HashMap<String, HashMap<String, String>>,
    /// (key, class, text) of each banner.
    banners: Vec<(String, String, String)>,
    events: Vec<String>,
    /// Element id → text, for the header, tiles and the action result.
    facts: HashMap<String, String>,
    charts: u64,
    html: String,
}

const READ_PAGE: &str = r#"
var out = { polls: +(document.body.dataset.polls || 0), rows: {}, banners: [], events: [], facts: {} };
document.querySelectorAll('#channels tbody tr').forEach(function (tr) {
  var c = {};
  tr.querySelectorAll('td[data-col]').forEach(function (td) { c[td.dataset.col] = td.textContent; });
  out.rows[tr.dataset.channel] = c;
});
document.querySelectorAll('#banners .banner').forEach(function (b) {
  out.banners.push([b.dataset.key || '', b.className, b.textContent]);
});
document.querySelectorAll('#events li').forEach(function (li) { out.events.push(li.textContent); });
['f-version', 'f-reload', 'f-store', 'f-journal', 'f-backlog', 'f-updated', 't-failovers',
 'action-result', 'token-rule'].forEach(function (id) {
  out.facts[id] = document.getElementById(id).textContent;
});
out.charts = document.querySelectorAll('.uplot').length;
out.html = document.documentElement.outerHTML;
return out;
"#;

impl Page {
    async fn read(b: &Browser) -> Page {
        let v = b.eval(READ_PAGE).await;
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .map(|s| s.as_str().unwrap_or_default().to_owned())
                .collect()
        };
        let rows = v["rows"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(id, cells)| {
                let cells = cells
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, t)| (k.clone(), t.as_str().unwrap_or_default().to_owned()))
                    .collect();
                (id.clone(), cells)
            })
            .collect();
        let banners = v["banners"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|b| {
                let s = strings(b);
                (s[0].clone(), s[1].clone(), s[2].clone())
            })
            .collect();
        let facts = v["facts"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, t)| (k.clone(), t.as_str().unwrap_or_default().to_owned()))
            .collect();
        Page {
            polls: v["polls"].as_u64().unwrap_or(0),
            rows,
            banners,
            events: strings(&v["events"]),
            facts,
            charts: v["charts"].as_u64().unwrap_or(0),
            html: v["html"].as_str().unwrap_or_default().to_owned(),
        }
    }

    fn cell(&self, channel: &str, col: &str) -> &str {
        self.rows
            .get(channel)
            .and_then(|r| r.get(col))
            .map_or("", String::as_str)
    }

    /// A percent cell ("77.6 %") as a number; `None` for "—".
    fn percent(&self, channel: &str, col: &str) -> Option<f64> {
        self.cell(channel, col).trim_end_matches(" %").parse().ok()
    }

    fn fact(&self, id: &str) -> &str {
        self.facts.get(id).map_or("", String::as_str)
    }

    fn banner(&self, key: &str) -> Option<&str> {
        self.banners
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, _, t)| t.as_str())
    }

    /// Banners of script errors: the page turns any exception into one.
    fn script_errors(&self) -> Vec<&str> {
        self.banners
            .iter()
            .filter(|(k, _, _)| k.starts_with("js"))
            .map(|(_, _, t)| t.as_str())
            .collect()
    }

    /// What a failed wait prints: the page without its HTML.
    fn summary(&self) -> String {
        format!(
            "polls {}, rows {:?}\nbanners {:?}\nfacts {:?}\nevents {:?}",
            self.polls, self.rows, self.banners, self.facts, self.events
        )
    }
}

/// Reads the page every 250 ms until `cond` holds; the page it held on.
///
/// # Panics
/// After [`PAGE_WAIT`], with what the page showed last.
async fn wait_for(b: &Browser, what: &str, cond: impl Fn(&Page) -> bool) -> Page {
    let deadline = Instant::now() + PAGE_WAIT;
    loop {
        let page = Page::read(b).await;
        assert!(
            page.script_errors().is_empty(),
            "the console hit a script error while waiting for {what}:\n{}",
            page.summary()
        );
        if cond(&page) {
            return page;
        }
        assert!(
            Instant::now() < deadline,
            "the console did not show {what} within {PAGE_WAIT:?}; it showed:\n{}",
            page.summary()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Where the screenshot goes: the target's scratch directory always; the
/// README's `docs/console.png` too with `PAYROUTE_UPDATE_SCREENSHOT=1`
/// (left alone otherwise, so a test run does not dirty the work tree).
fn save_screenshot(png: &[u8]) {
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "the screenshot is not a PNG");
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console.png");
    std::fs::write(&scratch, png).unwrap_or_else(|e| panic!("cannot write {}: {e}", scratch.display()));
    eprintln!("console screenshot: {}", scratch.display());
    if std::env::var("PAYROUTE_UPDATE_SCREENSHOT").is_ok_and(|v| v == "1") {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
        std::fs::create_dir_all(&docs).unwrap_or_else(|e| panic!("cannot create {}: {e}", docs.display()));
        let docs = docs.join("console.png");
        std::fs::write(&docs, png).unwrap_or_else(|e| panic!("cannot write {}: {e}", docs.display()));
        eprintln!("console screenshot: {}", docs.display());
    }
}

/// Payments from `merchant` every 20 ms until the flag drops.
fn traffic(api: Api, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut sent = 0;
        while !stop.load(Ordering::Relaxed) {
            let body = payment_body(1000, "CNY");
            let _ = api
                .post_payment("m-1", &body, &[("authorization", &format!("Bearer {KEY}"))])
                .await;
            sent += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sent
    })
}

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_follows_traffic_in_a_real_browser() {
    let browser = Browser::start().await;
    let a = queried_acquirer("a", Reply::ok()).await;
    let b = queried_acquirer("b", Reply::ok()).await;
    let c = queried_acquirer("c", Reply::ok()).await;
    // a is the cheapest, so it takes the traffic until it fails; once
    // ejected it stays out for the rest of the test, and b (cheaper than c)
    // takes over.
    let config = Config::new()
        .server(&format!("admin_token = \"{TOKEN}\""))
        .routing("window_ms = 10000\neject_consecutive_failures = 3\neject_base_ms = 120000\neject_max_ms = 120000")
        .channel(
            "a",
            &a.url(),
            &format!("fee_percent = 0.3\nheaders = {{ \"x-acq-key\" = \"{CHANNEL_SECRET}\" }}\n{QUERY}"),
        )
        .channel("b", &b.url(), &format!("fee_percent = 0.9\ndaily_cap = 100000000\n{QUERY}"))
        // A canary long at its 1 %: it keeps a's share above 90 %.
        .channel(
            "c",
            &c.url(),
            &format!("fee_percent = 1.4\nramp = {{ from_percent = 1, to_percent = 1, start = \"2026-01-01T00:00:00Z\", over_ms = 1000 }}\n{QUERY}"),
        )
        .merchant("m-1", &format!("api_key_sha256 = \"{}\"", sha256_hex(KEY)));
    let p = PAYROUTE.serve(config).await;
    browser.goto(&p.api.admin_url("/-/ui")).await;

    // Both channels, no traffic yet: shares are "—", nothing is wrong.
    let page = wait_for(&browser, "the three channels", |pg| pg.polls >= 1 && pg.rows.len() == 3).await;
    assert_eq!(page.cell("a", "state"), "healthy", "{}", page.summary());
    assert_eq!(page.cell("a", "share"), "—", "{}", page.summary());
    // Policies: b's daily cap (none used yet), c's ramp; a has neither.
    assert_eq!(page.cell("a", "daily_use"), "—", "no daily_cap: {}", page.summary());
    assert_eq!(page.cell("b", "daily_use"), "0 %", "{}", page.summary());
    assert_eq!(page.cell("c", "ramp"), "1.0 %", "{}", page.summary());
    assert_eq!(page.cell("a", "ramp"), "—", "{}", page.summary());
    assert_eq!(page.fact("f-version"), "1");
    assert_eq!(page.fact("f-journal"), "answers");
    assert!(
        page.banners.is_empty(),
        "banners on a healthy payroute: {:?}",
        page.banners
    );
    assert_eq!(page.charts, 6, "one chart per metric: {}", page.summary());
    assert!(
        page.fact("token-rule").contains("has an admin token"),
        "{}",
        page.summary()
    );
    for secret in [TOKEN, CHANNEL_SECRET, KEY, &sha256_hex(KEY), "x-acq-key"] {
        assert!(!page.html.contains(secret), "the page shows {secret}");
    }

    // Traffic goes to a: its share and attempts show it.
    let stop = Arc::new(AtomicBool::new(false));
    let sender = traffic(p.api.clone(), stop.clone());
    let before = wait_for(&browser, "a carrying the traffic", |pg| {
        pg.percent("a", "share").is_some_and(|s| s > 90.0) && pg.cell("a", "attempts") != "0"
    })
    .await;
    let a_success_before = before.cell("a", "success_rate").to_owned();

    // a starts failing: payments fail over to b, a is ejected, and the page
    // shows it without being reloaded.
    a.set_behavior(Reply::status(503));
    let after = wait_for(&browser, "the traffic moving from a to b", |pg| {
        pg.cell("a", "state") == "ejected"
            && pg.percent("b", "share").is_some_and(|s| s > 50.0)
            && pg.events.iter().any(|e| e.contains("failed over from a"))
    })
    .await;
    assert_ne!(after.cell("a", "success_rate"), a_success_before, "{}", after.summary());
    assert_ne!(after.cell("a", "failovers"), "0", "{}", after.summary());
    assert_ne!(after.fact("t-failovers"), "0", "{}", after.summary());
    assert!(
        after
            .banner("ejected")
            .is_some_and(|t| t.contains("Channel a is ejected")),
        "{}",
        after.summary()
    );
    assert!(
        after
            .events
            .iter()
            .any(|e| e.contains("a: healthy → ejected") || e.contains("→ ejected")),
        "{}",
        after.summary()
    );
    assert!(after.polls > before.polls, "the page went on polling");

    // A few more seconds of history for the charts, then the picture.
    let polls = after.polls;
    wait_for(&browser, "six more polls", |pg| pg.polls >= polls + 6).await;
    save_screenshot(&browser.screenshot().await);
    stop.store(true, Ordering::Relaxed);
    assert!(sender.await.expect("traffic task") > 0);

    // Reload without the token: refused by payroute, said on the page.
    browser.click("#reload").await;
    wait_for(&browser, "the reload refused for want of the token", |pg| {
        pg.fact("action-result").contains("needs its admin token")
    })
    .await;
    // With it: done (a forced reload: version 2).
    browser.type_into("#token", TOKEN).await;
    browser.click("#reload").await;
    // (A poll may see version 2 a moment before the reload's result is
    // recorded: wait for both.)
    let page = wait_for(&browser, "the reload done with the token", |pg| {
        pg.fact("action-result").starts_with("Reloaded")
            && pg.fact("f-version") == "2"
            && pg.fact("f-reload").starts_with("took effect")
    })
    .await;
    assert!(page.banner("reload").is_none(), "{}", page.summary());

    // A broken file: the reload is refused, the page says so with the
    // located error, and the version in force stays.
    p.replace_config("[[channel]]\nid = 1\n");
    browser.click("#reload").await;
    let page = wait_for(&browser, "the refused reload", |pg| {
        pg.fact("action-result").starts_with("Refused, the old config stays")
            && pg.banner("reload").is_some()
            && pg.fact("f-reload").starts_with("REFUSED")
    })
    .await;
    let banner = page.banner("reload").unwrap_or_default();
    assert!(banner.contains("version 2 stays in force"), "{banner}");
    assert!(banner.contains("routes.toml:"), "the located error: {banner}");
    assert_eq!(page.fact("f-version"), "2");
    assert_eq!(page.rows.len(), 3, "the channels stay on the page: {}", page.summary());
    browser.close().await;
}

/// The journal down, then payroute gone: each a banner, the last data
/// still on the page. Needs PostgreSQL (a database dropped under payroute).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_says_when_the_journal_or_payroute_is_gone() {
    let browser = Browser::start().await;
    let Some(db) = PgDatabase::create().await else {
        browser.close().await;
        return;
    };
    let a = acquirer("a").await;
    let mut p = PAYROUTE
        .serve(Config::single("a", &a.url()).journal(&db.journal()))
        .await;
    p.pay("m-1", 100).await.assert_ok();
    browser.goto(&p.api.admin_url("/-/ui")).await;
    let page = wait_for(&browser, "the channel", |pg| pg.rows.contains_key("a")).await;
    assert_eq!(page.fact("f-journal"), "answers", "{}", page.summary());
    assert!(page.banner("journal").is_none(), "{}", page.summary());

    db.drop_now().await;
    let page = wait_for(&browser, "the journal down", |pg| {
        pg.fact("f-journal") == "DOES NOT ANSWER" && pg.banner("journal").is_some()
    })
    .await;
    assert!(
        page.banner("journal").is_some_and(|t| t.contains("does not answer")),
        "{}",
        page.summary()
    );
    assert_eq!(
        page.cell("a", "state"),
        "healthy",
        "the channels stay: {}",
        page.summary()
    );

    p.kill();
    assert!(p.wait_exit(Duration::from_secs(5)).await.is_some());
    let page = wait_for(&browser, "payroute gone", |pg| {
        pg.banner("poll")
            .is_some_and(|t| t.starts_with("Cannot read payroute's state"))
            && pg.fact("f-updated").starts_with("stale since")
    })
    .await;
    assert!(page.rows.contains_key("a"), "the last data stays: {}", page.summary());
    browser.close().await;
}

/// The page, its files and its JSON over plain HTTP: every file the page
/// names is served by payroute (nothing from elsewhere), the JSON has the
/// documented shape, and neither carries a secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_serves_its_own_files_and_no_secret() {
    let a = acquirer("a").await;
    let b = acquirer("b").await;
    let config = Config::new()
        .server(&format!("admin_token = \"{TOKEN}\""))
        .channel(
            "a",
            &a.url(),
            &format!("headers = {{ \"authorization\" = \"Bearer {CHANNEL_SECRET}\" }}"),
        )
        .channel("b", &b.url(), "enabled = false")
        .merchant("m-1", &format!("api_key_sha256 = \"{}\"", sha256_hex(KEY)));
    let p = PAYROUTE.serve(config).await;
    for _ in 0..3 {
        p.post_payment(
            "m-1",
            &payment_body(500, "CNY"),
            &[("authorization", &format!("Bearer {KEY}"))],
        )
        .await
        .assert_ok();
    }

    let page = p.admin_get("/-/ui").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type").as_deref(), Some("text/html; charset=utf-8"));
    let csp = page.header("content-security-policy").expect("a CSP");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = page.text();
    let mut named = 0;
    for attr in ["src=\"", "href=\""] {
        for part in html.split(attr).skip(1) {
            let link = &part[..part.find('"').expect("a closing quote")];
            if link.starts_with("data:") {
                continue;
            }
            assert!(!link.contains("//"), "the page names another host: {link}");
            let served = p.admin_get(&format!("/-/{link}")).await;
            assert_eq!(served.status, 200, "{link}");
            named += 1;
        }
    }
    assert_eq!(named, 4, "two scripts and two style sheets");
    assert_eq!(p.admin_get("/-/ui/nope.js").await.status, 404);
    assert_eq!(p.admin_get("/-/ui/").await.status, 308);
    // Not on the payment listener.
    let r = p.request(Method::GET, "/-/ui", &[], bytes::Bytes::new()).await;
    assert_ne!(r.status, 200);

    let r = p.admin_get("/-/ui/state.json").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    let text = r.text();
    for secret in [TOKEN, CHANNEL_SECRET, KEY, &sha256_hex(KEY), &a.url()] {
        assert!(!text.contains(secret), "state.json shows {secret}: {text}");
    }
    let s = r.json();
    assert_eq!(s["version"], 1);
    assert_eq!(s["admin_token"], true);
    assert_eq!(s["reload"], Value::Null, "no reload yet");
    assert_eq!(s["journal"]["up"], true);
    assert_eq!(s["state_store"], json!({"backend": "memory", "up": true}));
    assert!(s["notifications"]["backlog"].is_i64(), "{s}");
    assert_eq!(s["requests"]["success"], 3, "{s}");
    assert!(
        s["now_ms"].as_i64().is_some_and(|t| t > 0) && s["window_ms"].is_u64(),
        "{s}"
    );
    let chans = s["channels"].as_array().expect("channels");
    let ids: Vec<_> = chans.iter().map(|c| c["id"].as_str().unwrap_or("?")).collect();
    assert_eq!(ids, ["a", "b"], "config order");
    let (ca, cb) = (&chans[0], &chans[1]);
    assert_eq!(
        (ca["state"].as_str(), cb["state"].as_str()),
        (Some("healthy"), Some("disabled"))
    );
    assert_eq!(ca["share"], 1.0, "{ca}");
    assert_eq!(cb["share"], 0.0, "{cb}");
    assert_eq!(
        (
            ca["attempts"].as_u64(),
            ca["successes"].as_u64(),
            ca["requests"].as_u64()
        ),
        (Some(3), Some(3), Some(3))
    );
    for field in [
        "success_rate",
        "latency_ms",
        "fee_percent",
        "score",
        "in_flight",
        "declines",
        "failures",
        "ambiguous",
    ] {
        assert!(ca[field].is_number(), "{field} in {ca}");
    }
    assert_eq!(ca["failovers"]["timeout"], 0, "{ca}");
    assert_eq!(
        ca["failovers"].as_object().map(|o| o.len()),
        Some(5),
        "every reason: {ca}"
    );

    // A refused reload is remembered with its located lines.
    p.replace_config("[[channel]]\nid = 1\n");
    let r = p
        .admin_post("/-/reload", &[("authorization", &format!("Bearer {TOKEN}"))])
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let s = p.admin_get("/-/ui/state.json").await.json();
    let reload = &s["reload"];
    assert_eq!(
        (reload["ok"].as_bool(), reload["version"].as_u64()),
        (Some(false), Some(1)),
        "{s}"
    );
    assert!(reload["error_count"].as_u64().is_some_and(|n| n >= 1), "{s}");
    assert!(
        reload["errors"][0].as_str().is_some_and(|l| l.contains("routes.toml:")),
        "{s}"
    );
}

/// `payroute demo` prints the console's URL, and the console answers there
/// while the demo runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_prints_a_live_console_url() {
    /// Ends the demo however the test ends.
    struct Running(Child);
    impl Drop for Running {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut demo = PAYROUTE
        .command()
        .args(["demo", "--seconds", "20"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start payroute demo");
    let stdout = demo.stdout.take().expect("piped stdout");
    let _demo = Running(demo);
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("console: ").and_then(|l| l.split_whitespace().next()) {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(url.to_owned());
                }
            }
        }
    });
    let url = tokio::time::timeout(Duration::from_secs(60), rx)
        .await
        .expect("the demo printed no console URL within 60 s")
        .expect("the demo's output ended without a console URL");
    assert!(url.starts_with("http://127.0.0.1:") && url.ends_with("/-/ui"), "{url}");
    let client = client();
    let page = send(&client, Method::GET, &url, &[], "").await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("payroute"), "{}", page.text());
    let state = send(&client, Method::GET, &format!("{url}/state.json"), &[], "").await;
    let ids: Vec<String> = state.json()["channels"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(ids.len(), 3, "the demo's three acquirers: {ids:?}");
}
