//! End-to-end test harness: runs the built `payroute` binary against fake
//! acquirers (hyper servers) over real sockets.
//!
//! Every test gets its own proxy process (ports chosen by the OS, config in a
//! tempdir) and its own acquirers, so tests run in parallel safely.
#![allow(dead_code)]

pub mod tls;

use std::collections::HashMap;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};

pub const BIN: &str = env!("CARGO_BIN_EXE_payroute");

/// How long the proxy may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound for any single HTTP exchange made by a test.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// Config snippets
// ---------------------------------------------------------------------------

/// `[server]` with OS-chosen ports plus `extra` lines.
pub fn server(extra: &str) -> String {
    format!("[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n{extra}\n\n")
}

/// `[routing]` with exploration off (deterministic) plus `extra` lines.
pub fn routing(extra: &str) -> String {
    format!("[routing]\nexplore_share = 0.0\n{extra}\n\n")
}

/// A `[[channel]]` table.
pub fn channel(id: &str, url: &str, extra: &str) -> String {
    format!("[[channel]]\nid = \"{id}\"\nurl = \"{url}\"\n{extra}\n\n")
}

/// A `[[merchant]]` table. Unless `extra` sets them, the rate limit is made
/// high enough never to interfere with a test.
pub fn merchant(id: &str, extra: &str) -> String {
    let mut s = format!("[[merchant]]\nid = \"{id}\"\n");
    if !extra.contains("rate_per_sec") {
        s.push_str("rate_per_sec = 100000\n");
    }
    if !extra.contains("burst") {
        s.push_str("burst = 100000\n");
    }
    s.push_str(extra);
    s.push_str("\n\n");
    s
}

/// The smallest whole config: `[server]` plus `server_extra`, default
/// routing, one channel and merchant `m-1`.
pub fn one_channel(server_extra: &str, id: &str, url: &str, channel_extra: &str) -> String {
    format!(
        "{}{}{}{}",
        server(server_extra),
        routing(""),
        channel(id, url, channel_extra),
        merchant("m-1", "")
    )
}

/// sha256 hex of an API key, as `api_key_sha256` wants it.
pub fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

/// A port on which nothing listens (connections are refused).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A URL on which connections are refused.
pub fn refused_url() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

static ORDER_SEQ: AtomicU64 = AtomicU64::new(0);

/// A globally unique order id (the order id is the default idempotency key,
/// so every payment of a test must have its own).
pub fn order_id() -> String {
    format!(
        "ord-{}-{:x}-{}",
        std::process::id(),
        fastrand::u64(..),
        ORDER_SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// A standard payment body.
pub fn payment_body(amount: i64, currency: &str) -> Value {
    json!({"amount": amount, "currency": currency, "order_id": order_id(), "description": "e2e"})
}

// ---------------------------------------------------------------------------
// Polling
// ---------------------------------------------------------------------------

/// Polls `cond` every 20 ms until it holds; panics after `timeout`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------
// HTTP responses
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub elapsed: Duration,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("header is not ASCII").to_string())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }
    /// `error.code` of a proxy error body.
    pub fn error_code(&self) -> Option<String> {
        let v: Value = serde_json::from_slice(&self.body).ok()?;
        v.pointer("/error/code")?.as_str().map(str::to_string)
    }
    pub fn channel(&self) -> Option<String> {
        self.header("x-payroute-channel")
    }
    pub fn attempts(&self) -> Option<u32> {
        self.header("x-payroute-attempts")
            .map(|s| s.trim().parse().expect("X-Payroute-Attempts is a number"))
    }
    pub fn request_id(&self) -> Option<String> {
        self.header("x-payroute-request-id")
    }

    /// Asserts a proxy error: status, JSON `{"error":{"code","message"}}`,
    /// and a request id.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(
            self.status,
            status,
            "expected {status} {code}, got {} {:?} headers={:?}",
            self.status,
            self.text(),
            self.headers
        );
        let v = self.json();
        assert_eq!(
            v.pointer("/error/code").and_then(Value::as_str),
            Some(code),
            "wrong error code in {v}"
        );
        assert!(
            v.pointer("/error/message").and_then(Value::as_str).is_some(),
            "error.message missing or not a string in {v}"
        );
        assert!(
            self.request_id().is_some_and(|s| !s.is_empty()),
            "X-Payroute-Request-Id missing on error response"
        );
    }

    /// Asserts a successful proxied payment.
    #[track_caller]
    pub fn assert_ok(&self) {
        assert!(
            (200..300).contains(&self.status),
            "expected 2xx, got {} {:?} headers={:?}",
            self.status,
            self.text(),
            self.headers
        );
        assert!(self.request_id().is_some(), "X-Payroute-Request-Id missing");
        assert!(self.channel().is_some(), "X-Payroute-Channel missing");
        assert!(self.attempts().is_some(), "X-Payroute-Attempts missing");
    }
}

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn http_client() -> HttpClient {
    // No idle pooling: every request gets a fresh connection, so a
    // connection closed by the server between requests can never surface as
    // a spurious client error.
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http()
}

/// One HTTP exchange.
pub async fn send(
    client: &HttpClient,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Resp {
    try_send(client, method, url, headers, body)
        .await
        .unwrap_or_else(|e| panic!("request to {url} failed: {e}"))
}

/// One HTTP exchange; a transport error is returned, not a panic.
pub async fn try_send(
    client: &HttpClient,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<Resp, String> {
    let mut b = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(Full::new(body.into())).map_err(|e| e.to_string())?;
    let start = Instant::now();
    let fut = async {
        let resp = client.request(req).await.map_err(|e| format!("{e:?}"))?;
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("reading body: {e}"))?
            .to_bytes();
        Ok::<_, String>(Resp {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
            elapsed: start.elapsed(),
        })
    };
    match tokio::time::timeout(HTTP_TIMEOUT, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {HTTP_TIMEOUT:?}")),
    }
}

// ---------------------------------------------------------------------------
// Talking to a running proxy
// ---------------------------------------------------------------------------

/// Cheap, clonable handle to a running proxy's two listeners.
#[derive(Clone)]
pub struct Api {
    pub client: HttpClient,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
}

impl Api {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.listen, path)
    }
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// Any request to the payment listener.
    pub async fn request(&self, method: Method, path: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Resp {
        send(&self.client, method, &self.url(path), headers, body).await
    }

    /// POST /v1/payments for `merchant` with a JSON body and extra headers.
    pub async fn post_payment(&self, merchant: &str, body: &Value, headers: &[(&str, &str)]) -> Resp {
        self.post_payment_to("/v1/payments", merchant, body, headers).await
    }

    pub async fn post_payment_to(&self, path: &str, merchant: &str, body: &Value, headers: &[(&str, &str)]) -> Resp {
        let mut h = vec![("x-merchant-id", merchant), ("content-type", "application/json")];
        h.extend_from_slice(headers);
        self.request(Method::POST, path, &h, body.to_string()).await
    }

    /// A fresh CNY payment of `amount`.
    pub async fn pay(&self, merchant: &str, amount: i64) -> Resp {
        self.post_payment(merchant, &payment_body(amount, "CNY"), &[]).await
    }

    pub async fn pay_ccy(&self, merchant: &str, amount: i64, currency: &str) -> Resp {
        self.post_payment(merchant, &payment_body(amount, currency), &[]).await
    }

    pub async fn admin_get(&self, path: &str) -> Resp {
        send(&self.client, Method::GET, &self.admin_url(path), &[], Bytes::new()).await
    }

    pub async fn admin_post(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        send(&self.client, Method::POST, &self.admin_url(path), headers, Bytes::new()).await
    }

    /// POST /-/reload (no token).
    pub async fn reload(&self) -> Resp {
        self.admin_post("/-/reload", &[]).await
    }

    /// GET /-/channels, parsed.
    pub async fn channels(&self) -> Vec<Value> {
        let r = self.admin_get("/-/channels").await;
        assert_eq!(r.status, 200, "/-/channels: {}", r.text());
        match r.json() {
            Value::Array(a) => a,
            other => panic!("/-/channels is not a JSON array: {other}"),
        }
    }

    pub async fn channel_opt(&self, id: &str) -> Option<Value> {
        self.channels()
            .await
            .into_iter()
            .find(|c| c.get("id").and_then(Value::as_str) == Some(id))
    }

    pub async fn channel(&self, id: &str) -> Value {
        self.channel_opt(id)
            .await
            .unwrap_or_else(|| panic!("channel {id} not in /-/channels"))
    }

    pub async fn channel_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .channels()
            .await
            .iter()
            .map(|c| c["id"].as_str().expect("channel id").to_string())
            .collect();
        ids.sort();
        ids
    }

    pub async fn channel_state(&self, id: &str) -> String {
        self.channel(id).await["state"]
            .as_str()
            .expect("state is a string")
            .to_string()
    }

    pub async fn metrics(&self) -> Metrics {
        let r = self.admin_get("/metrics").await;
        assert_eq!(r.status, 200, "/metrics: {}", r.text());
        Metrics(r.text())
    }
}

// ---------------------------------------------------------------------------
// Prometheus text
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Metrics(pub String);

#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: HashMap<String, String>,
    pub value: f64,
}

impl Metrics {
    pub fn samples(&self) -> Vec<Sample> {
        self.0
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(parse_sample)
            .collect()
    }

    /// Sum of every series of `name` whose labels include `labels`;
    /// None if there is no such series.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut found = None;
        for s in self.samples() {
            if s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            {
                *found.get_or_insert(0.0) += s.value;
            }
        }
        found
    }

    /// Like `sum`, 0 when absent.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.sum(name, labels).unwrap_or(0.0)
    }

    /// `payroute_config_reloads_total` split into (succeeded, failed),
    /// whatever the exact label values (`success`/`ok` count as success).
    pub fn reloads(&self) -> (f64, f64) {
        let mut ok = 0.0;
        let mut failed = 0.0;
        for s in self.samples() {
            if s.name != "payroute_config_reloads_total" {
                continue;
            }
            match s.labels.get("result").map(String::as_str) {
                Some("success") | Some("ok") | Some("succeeded") => ok += s.value,
                _ => failed += s.value,
            }
        }
        (ok, failed)
    }

    pub fn has(&self, name: &str) -> bool {
        self.samples().iter().any(|s| s.name == name)
    }
}

pub fn parse_sample(line: &str) -> Option<Sample> {
    let (name_labels, value) = match line.find('{') {
        Some(_) => {
            let close = line.rfind('}')?;
            (&line[..=close], line[close + 1..].trim())
        }
        None => {
            let mut it = line.splitn(2, ' ');
            (it.next()?, it.next()?.trim())
        }
    };
    let value: f64 = value.split_whitespace().next()?.parse().ok()?;
    let (name, labels) = match name_labels.find('{') {
        Some(i) => (
            name_labels[..i].to_string(),
            parse_labels(&name_labels[i + 1..name_labels.len() - 1]),
        ),
        None => (name_labels.to_string(), HashMap::new()),
    };
    Some(Sample { name, labels, value })
}

fn parse_labels(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start_matches([',', ' ']);
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq].trim().to_string();
        rest = &rest[eq + 1..];
        if !rest.starts_with('"') {
            break;
        }
        rest = &rest[1..];
        let mut val = String::new();
        let mut chars = rest.char_indices();
        let mut end = rest.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        val.push(match n {
                            'n' => '\n',
                            other => other,
                        });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => val.push(c),
            }
        }
        out.insert(key, val);
        rest = &rest[end..];
    }
    out
}

// ---------------------------------------------------------------------------
// The proxy process
// ---------------------------------------------------------------------------

/// A running `payroute serve`; killed on drop. Derefs to its [`Api`].
pub struct Proxy {
    pub api: Api,
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
    dir: tempfile::TempDir,
    config_path: PathBuf,
}

impl std::ops::Deref for Proxy {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

/// Spawns `payroute serve --config PATH` (with `env` on top of the
/// defaults) and drains its output into `logs`.
fn spawn_serve(config_path: &Path, logs: &Arc<Mutex<Vec<String>>>, env: &[(&str, &str)]) -> Child {
    let mut child = Command::new(BIN)
        .arg("serve")
        .arg("--config")
        .arg(config_path)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn payroute serve");
    let stderr = child.stderr.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    for (stream, tag) in [
        (Box::new(stderr) as Box<dyn std::io::Read + Send>, ""),
        (Box::new(stdout), "[stdout] "),
    ] {
        let logs = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                logs.lock().unwrap().push(format!("{tag}{line}"));
            }
        });
    }
    child
}

/// Extracts the `listen=` and `admin=` addresses from the ready line.
pub fn parse_ready(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    if !line.contains("payroute ready") {
        return None;
    }
    let mut listen = None;
    let mut admin = None;
    for tok in line.split_whitespace() {
        let clean = |v: &str| -> Option<SocketAddr> {
            v.trim_matches(|c: char| c == '"' || c == ',' || c == '\'').parse().ok()
        };
        if let Some(v) = tok.strip_prefix("listen=") {
            listen = clean(v);
        } else if let Some(v) = tok.strip_prefix("admin=") {
            admin = clean(v);
        }
    }
    Some((listen?, admin?))
}

impl Proxy {
    /// Writes `config` to a fresh tempdir's routes.toml and starts the proxy.
    pub async fn start(config: &str) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("routes.toml");
        std::fs::write(&config_path, config).unwrap();
        Self::start_at(dir, config_path).await
    }

    /// Starts the proxy on a config file the caller prepared inside `dir`
    /// (e.g. behind symlinks).
    pub async fn start_at(dir: tempfile::TempDir, config_path: PathBuf) -> Proxy {
        Self::start_at_env(dir, config_path, &[]).await
    }

    /// [`Proxy::start_at`] with extra environment variables for the process
    /// (`env:` secrets, `RUST_LOG`).
    pub async fn start_at_env(dir: tempfile::TempDir, config_path: PathBuf, env: &[(&str, &str)]) -> Proxy {
        let config = std::fs::read_to_string(&config_path).unwrap_or_default();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let mut child = spawn_serve(&config_path, &logs, env);

        let deadline = Instant::now() + READY_TIMEOUT;
        let (listen, admin) = loop {
            let found = logs.lock().unwrap().iter().find_map(|l| parse_ready(l));
            if let Some(addrs) = found {
                break addrs;
            }
            if let Ok(Some(status)) = child.try_wait() {
                // Give the reader threads a moment to collect the last lines.
                tokio::time::sleep(Duration::from_millis(100)).await;
                panic!(
                    "payroute serve exited ({status}) before ready; config:\n{config}\noutput:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "payroute serve not ready within {READY_TIMEOUT:?}; config:\n{config}\noutput:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        Proxy {
            api: Api {
                client: http_client(),
                listen,
                admin,
            },
            child,
            logs,
            dir,
            config_path,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything the proxy printed so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Overwrites the config file in place (truncate + write).
    pub fn write_config(&self, config: &str) {
        std::fs::write(&self.config_path, config).unwrap();
    }

    /// Replaces the config file atomically by writing a sibling and renaming
    /// it over the original (what config managers do).
    pub fn replace_config(&self, config: &str) {
        let tmp = self.dir.path().join(format!(".routes.toml.{}.tmp", fastrand::u32(..)));
        std::fs::write(&tmp, config).unwrap();
        std::fs::rename(&tmp, &self.config_path).unwrap();
    }

    pub fn signal(&self, sig: i32) {
        signal(self.child.id(), sig);
    }
    pub fn sighup(&self) {
        self.signal(SIGHUP);
    }
    pub fn sigterm(&self) {
        self.signal(SIGTERM);
    }

    /// Waits for the process to exit; None on timeout.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Current `payroute_config_version` metric.
    pub async fn config_version(&self) -> f64 {
        self.metrics()
            .await
            .sum("payroute_config_version", &[])
            .expect("payroute_config_version missing from /metrics")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "----- payroute output (pid {}) -----\n{}\n----- end -----",
                self.child.id(),
                self.logs.lock().unwrap().join("\n")
            );
        }
    }
}

pub const SIGHUP: i32 = 1;
pub const SIGTERM: i32 = 15;

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    let rc = unsafe { kill(pid as i32, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
}

/// Runs `payroute ARGS...` to completion.
pub fn run_cli(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run payroute")
}

/// Runs `payroute ARGS...` with a time limit (for commands that might not
/// exit by themselves when they misbehave).
pub async fn run_cli_timeout(args: &[&str], timeout: Duration) -> Option<Output> {
    let mut child = Command::new(BIN)
        .args(args)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn payroute");
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait().unwrap().is_some() {
            return Some(child.wait_with_output().unwrap());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------
// Fake acquirer
// ---------------------------------------------------------------------------

/// What a fake acquirer does with the next requests.
#[derive(Clone, Debug)]
pub struct Behavior {
    /// Status of a normal answer.
    pub status: u16,
    /// Body of a normal answer; None: a small JSON naming the acquirer.
    pub body: Option<String>,
    /// Delay before answering.
    pub delay: Duration,
    /// Never answer.
    pub hang: bool,
    /// The first `fail_first` requests (counted from when it was set) get
    /// `fail_status`.
    pub fail_first: usize,
    /// This share of requests (deterministically spread) get `fail_status`.
    pub fail_ratio: f64,
    pub fail_status: u16,
}

impl Behavior {
    /// Answers `status` at once.
    pub fn answering(status: u16) -> Behavior {
        Behavior {
            status,
            ..Default::default()
        }
    }
    /// Never answers.
    pub fn hanging() -> Behavior {
        Behavior {
            hang: true,
            ..Default::default()
        }
    }
    /// Answers `delay` late with 200.
    pub fn delayed(delay: Duration) -> Behavior {
        Behavior {
            delay,
            ..Default::default()
        }
    }
    /// The first `n` requests get `status`, the rest 200.
    pub fn failing_first(n: usize, status: u16) -> Behavior {
        Behavior {
            fail_first: n,
            fail_status: status,
            ..Default::default()
        }
    }
}

impl Default for Behavior {
    fn default() -> Self {
        Behavior {
            status: 200,
            body: None,
            delay: Duration::ZERO,
            hang: false,
            fail_first: 0,
            fail_ratio: 0.0,
            fail_status: 503,
        }
    }
}

/// A request as the acquirer received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// Path and query.
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub version: http::Version,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| v.to_str().unwrap().to_string())
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("forwarded body is JSON")
    }
}

/// A behaviour for the requests matching `method` and `pattern` (see
/// [`path_matches`]); it has its own count for `fail_first`/`fail_ratio`.
struct Rule {
    method: String,
    pattern: String,
    behavior: Behavior,
    since_set: AtomicUsize,
}

impl Rule {
    fn matches(&self, method: &str, path: &str) -> bool {
        self.method.eq_ignore_ascii_case(method) && path_matches(&self.pattern, path)
    }
}

/// Whether `path` (its query ignored) fits `pattern`, where a `*` segment
/// matches any one non-empty segment: `/v1/payments/*/reverse`.
pub fn path_matches(pattern: &str, path: &str) -> bool {
    let path = path.split('?').next().unwrap_or_default();
    let mut want = pattern.split('/');
    let mut have = path.split('/');
    loop {
        match (want.next(), have.next()) {
            (None, None) => return true,
            (Some("*"), Some(seg)) if !seg.is_empty() => {}
            (Some(w), Some(h)) if w == h => {}
            _ => return false,
        }
    }
}

struct AcqState {
    name: String,
    behavior: Mutex<Behavior>,
    /// Per method+path behaviours, checked in order before `behavior`.
    rules: Mutex<Vec<Arc<Rule>>>,
    /// Requests since the behaviour was last set (for fail_first/fail_ratio).
    since_set: AtomicUsize,
    hits: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// TCP connections accepted.
    connections: AtomicUsize,
    requests: Mutex<Vec<Recorded>>,
}

fn acq_state(name: &str, behavior: Behavior) -> Arc<AcqState> {
    Arc::new(AcqState {
        name: name.to_string(),
        behavior: Mutex::new(behavior),
        rules: Mutex::new(Vec::new()),
        since_set: AtomicUsize::new(0),
        hits: AtomicUsize::new(0),
        in_flight: AtomicUsize::new(0),
        max_in_flight: AtomicUsize::new(0),
        connections: AtomicUsize::new(0),
        requests: Mutex::new(Vec::new()),
    })
}

/// A programmable fake acquirer on 127.0.0.1:0. Stops on drop.
pub struct Acquirer {
    pub addr: SocketAddr,
    state: Arc<AcqState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Acquirer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Acquirer {
    /// Starts an acquirer answering 200 immediately.
    pub async fn start(name: &str) -> Acquirer {
        Self::with(name, Behavior::default()).await
    }

    pub async fn with(name: &str, behavior: Behavior) -> Acquirer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = acq_state(name, behavior);
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                st.connections.fetch_add(1, Ordering::SeqCst);
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(st.clone(), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Acquirer { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set(&self, b: Behavior) {
        *self.state.behavior.lock().unwrap() = b;
        self.state.since_set.store(0, Ordering::SeqCst);
    }
    pub fn behavior(&self) -> Behavior {
        self.state.behavior.lock().unwrap().clone()
    }
    fn modify(&self, f: impl FnOnce(&mut Behavior)) {
        let mut b = self.behavior();
        f(&mut b);
        self.set(b);
    }
    /// Back to answering 200 at once.
    pub fn heal(&self) {
        self.set(Behavior::default());
    }
    pub fn set_status(&self, status: u16) {
        self.modify(|b| b.status = status);
    }
    pub fn set_body(&self, body: &str) {
        let body = body.to_string();
        self.modify(|b| b.body = Some(body));
    }
    pub fn set_delay(&self, d: Duration) {
        self.modify(|b| b.delay = d);
    }
    pub fn set_hang(&self, hang: bool) {
        self.modify(|b| b.hang = hang);
    }
    pub fn fail_first(&self, n: usize, status: u16) {
        self.modify(|b| {
            b.fail_first = n;
            b.fail_status = status;
        });
    }
    pub fn fail_ratio(&self, ratio: f64, status: u16) {
        self.modify(|b| {
            b.fail_ratio = ratio;
            b.fail_status = status;
        });
    }

    /// Gives requests matching `method` and `pattern` (a path where a `*`
    /// segment matches any one segment, e.g. `/v1/payments/*/reverse`) their
    /// own behaviour, replacing an earlier one for the same method and
    /// pattern. Rules are checked in the order they were first set; the
    /// requests no rule matches get the acquirer's default behaviour.
    pub fn on(&self, method: &str, pattern: &str, b: Behavior) {
        let rule = Arc::new(Rule {
            method: method.to_string(),
            pattern: pattern.to_string(),
            behavior: b,
            since_set: AtomicUsize::new(0),
        });
        let mut rules = self.state.rules.lock().unwrap();
        match rules
            .iter_mut()
            .find(|r| r.method.eq_ignore_ascii_case(method) && r.pattern == pattern)
        {
            Some(slot) => *slot = rule,
            None => rules.push(rule),
        }
    }

    /// The requests received so far that match `method` and `pattern`
    /// (as in [`Acquirer::on`]).
    pub fn requests_to(&self, method: &str, pattern: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method.eq_ignore_ascii_case(method) && path_matches(pattern, &r.path))
            .collect()
    }

    /// How many requests matching `method` and `pattern` it received.
    pub fn count(&self, method: &str, pattern: &str) -> usize {
        self.requests_to(method, pattern).len()
    }

    /// Waits until it has received at least `n` requests matching `method`
    /// and `pattern`.
    pub async fn wait_count(&self, method: &str, pattern: &str, n: usize, timeout: Duration) {
        eventually(
            &format!(
                "acquirer {} to receive {n} {method} {pattern} requests",
                self.state.name
            ),
            timeout,
            || async { self.count(method, pattern) >= n },
        )
        .await;
    }

    /// Requests received so far (counted on arrival).
    /// TCP connections the acquirer accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }
    pub fn in_flight(&self) -> usize {
        self.state.in_flight.load(Ordering::SeqCst)
    }
    /// Highest number of requests it ever held at once.
    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }
    pub fn last_request(&self) -> Recorded {
        self.requests()
            .pop()
            .unwrap_or_else(|| panic!("acquirer {} received nothing", self.state.name))
    }

    /// Waits until it has received at least `n` requests.
    pub async fn wait_hits(&self, n: usize, timeout: Duration) {
        eventually(
            &format!("acquirer {} to receive {n} requests", self.state.name),
            timeout,
            || async { self.hits() >= n },
        )
        .await;
    }
}

struct InFlightGuard(Arc<AcqState>);
impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn handle(
    st: Arc<AcqState>,
    req: Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, std::convert::Infallible> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    st.requests.lock().unwrap().push(Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
        headers: parts.headers.clone(),
        body,
        version: parts.version,
    });
    let now = st.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    st.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let _guard = InFlightGuard(st.clone());
    st.hits.fetch_add(1, Ordering::SeqCst);
    let path = parts.uri.path();
    let rule = st
        .rules
        .lock()
        .unwrap()
        .iter()
        .find(|r| r.matches(parts.method.as_str(), path))
        .cloned();
    let (k, b) = match rule {
        Some(r) => (r.since_set.fetch_add(1, Ordering::SeqCst), r.behavior.clone()),
        None => (
            st.since_set.fetch_add(1, Ordering::SeqCst),
            st.behavior.lock().unwrap().clone(),
        ),
    };

    if b.hang {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    if !b.delay.is_zero() {
        tokio::time::sleep(b.delay).await;
    }
    let ratio_fail = b.fail_ratio > 0.0 && ((k + 1) as f64 * b.fail_ratio).floor() > (k as f64 * b.fail_ratio).floor();
    let fail = k < b.fail_first || ratio_fail;
    let status = if fail { b.fail_status } else { b.status };
    let body = match (&b.body, fail) {
        (Some(body), false) => body.clone(),
        _ => json!({
            "acquirer": st.name,
            "result": if (200..300).contains(&status) { "paid" } else { "error" },
            "status": status,
        })
        .to_string(),
    };
    let resp = hyper::Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header("content-type", "application/json")
        .header("x-acquirer", st.name.as_str())
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    Ok(resp)
}

/// Counts responses by `X-Payroute-Channel`.
pub fn count_channels(resps: &[Resp]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for r in resps {
        *m.entry(r.channel().unwrap_or_else(|| "<none>".into())).or_insert(0) += 1;
    }
    m
}

/// Extracts `(line, column)` pairs from `payroute check` errors, accepting
/// both `FILE:LINE:COL: message` and `line N, column M`.
pub fn error_locations(stderr: &str, file: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for line in stderr.lines() {
        if let Some(pos) = line.find(file) {
            let rest = &line[pos + file.len()..];
            let mut parts = rest.splitn(4, ':');
            if parts.next() == Some("") {
                if let (Some(l), Some(c)) = (parts.next(), parts.next()) {
                    if let (Ok(l), Ok(c)) = (l.trim().parse(), c.trim().parse()) {
                        out.push((l, c));
                        continue;
                    }
                }
            }
        }
        if let Some(pos) = line.find("line ") {
            let rest = &line[pos + 5..];
            let l: String = rest.chars().take_while(char::is_ascii_digit).collect();
            if let Some(cpos) = rest.find("column ") {
                let c: String = rest[cpos + 7..].chars().take_while(char::is_ascii_digit).collect();
                if let (Ok(l), Ok(c)) = (l.parse(), c.parse()) {
                    out.push((l, c));
                }
            }
        }
    }
    out
}

/// 1-based line number of the first line of `text` containing `needle`
/// at or after line `from`.
pub fn line_of(text: &str, needle: &str, from: usize) -> usize {
    text.lines()
        .enumerate()
        .skip(from.saturating_sub(1))
        .find(|(_, l)| l.contains(needle))
        .map(|(i, _)| i + 1)
        .unwrap_or_else(|| panic!("{needle:?} not in config"))
}

/// Writes raw bytes to `addr` and returns everything read back until the
/// server closes the connection (or 10 s pass). For requests the hyper
/// client would not produce (chunked bodies, broken framing).
pub async fn raw_http(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before reading everything: ignore
    // write errors, the answer is what matters.
    let _ = s.write_all(request).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}
