//! A fake acquirer ("mock acquirer") for tests, the demo and load tests.
//!
//! It speaks just enough of an acquirer's HTTP API for the proxy to route to
//! it: payments (`POST`), status queries (`GET .../{order_id}`) and reversals
//! (`POST .../{order_id}/reverse`), plus `GET /-/health`. How it answers is a
//! [`Behavior`] (success rate, latency, jitter, hangs, failure status) that can
//! be swapped at run time, so a test can turn a healthy acquirer into a
//! failing or hanging one mid-run and watch the router react.
//!
//! Why it is built this way:
//!
//! * It is the baseline in load tests, so the request path takes no lock of
//!   its own: the behaviour is read through an [`ArcSwap`], counters are
//!   relaxed atomics on separate cache lines, and the only shared structure,
//!   the set of paid orders, is a sharded [`DashSet`] whose size is tracked in
//!   an atomic (asking a `DashMap` for its length would lock every shard).
//!   Fixed answers use static bodies; a payment allocates its JSON answer and,
//!   when paid, the order id it remembers.
//! * It uses real sockets and a real hyper server (HTTP/1.1 keep-alive and
//!   h2c with prior knowledge, `TCP_NODELAY`), so the proxy under test
//!   exercises its real client stack, not a stub.
//! * A hanging request is held without an answer until [`MockAcquirer::shutdown`]
//!   (or until the last handle is dropped); it is then aborted, which closes an
//!   HTTP/1 connection or resets an h2 stream, so nothing waits forever.
//!
//! What is counted (see [`Counters`]): `requests` are payment attempts only;
//! each ends as one of `successes`, `failures` or `hangs` (a payment still
//! sleeping through its latency is in `requests` but in none of the three).
//! Status queries and reversals have their own counters; health checks are not
//! counted.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use dashmap::DashSet;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

/// Most paid order ids remembered for status queries. When full, new paid
/// orders are simply not remembered (a later query for them answers 404):
/// bounded memory matters more in a long load test than perfect recall.
const PAID_CAP: usize = 100_000;

/// Payment bodies are read up to this size; a larger one is treated like a
/// bad body (no order id) rather than buffered.
const MAX_BODY: usize = 1 << 20;

/// After shutdown, how long in-flight (non-hanging) requests get to finish
/// before their connection is dropped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Accept backlog: generous so that load-test connection bursts are not
/// refused by the mock itself (the kernel caps it at `somaxconn`).
const BACKLOG: u32 = 4096;

/// How the mock answers payments. Read once per payment, so a
/// [`MockAcquirer::set_behavior`] applies from the next payment on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Behavior {
    /// Share of (non-hanging) payments answered 200, in `0..=1`.
    pub success_rate: f64,
    /// Delay added before answering, in milliseconds.
    pub latency_ms: u64,
    /// Uniform extra delay in `[0, jitter_ms]` milliseconds.
    pub jitter_ms: u64,
    /// Share of payments that never get an answer (held open until shutdown),
    /// in `0..=1`. Decided before `success_rate`.
    pub hang_rate: f64,
    /// Status of a non-success answer. 4xx answers say `"declined"` (the
    /// acquirer refused the payment), anything else `"failed"`. A value that
    /// is not a valid HTTP status falls back to 503.
    pub fail_status: u16,
}

impl Default for Behavior {
    /// A perfect acquirer: always pays, instantly.
    fn default() -> Self {
        Behavior {
            success_rate: 1.0,
            latency_ms: 0,
            jitter_ms: 0,
            hang_rate: 0.0,
            fail_status: 503,
        }
    }
}

/// A snapshot of what the mock has seen (see the module docs for what each
/// counter means).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Payment attempts received.
    pub requests: u64,
    /// Payments answered 200.
    pub successes: u64,
    /// Payments answered with `fail_status`.
    pub failures: u64,
    /// Payments held without an answer.
    pub hangs: u64,
    /// Status queries received.
    pub queries: u64,
    /// Reversals received.
    pub reversals: u64,
}

/// A running fake acquirer. Cheap to clone; all clones share one server.
///
/// Dropping the last clone shuts the server down like [`shutdown`](Self::shutdown),
/// so keep a handle alive for as long as the server is needed.
#[derive(Clone)]
pub struct MockAcquirer {
    inner: Arc<Inner>,
}

/// Owned only by the `MockAcquirer` handles, never by the server tasks, so
/// that its drop marks "nobody can reach this mock any more".
struct Inner {
    state: Arc<State>,
    /// `true` once shut down. Dropping it (last handle gone) closes the
    /// channel, which the server treats as a shutdown too.
    shutdown: watch::Sender<bool>,
}

/// Shared between the handles and every request.
struct State {
    local_addr: SocketAddr,
    /// `local_addr` rendered once, for the `"acquirer"` field of answers.
    acquirer: Box<str>,
    behavior: ArcSwap<Behavior>,
    counters: AtomicCounters,
    paid: DashSet<Box<str>>,
    /// Size of `paid`, kept separately because `DashSet::len` locks every
    /// shard. Updated only on real inserts/removes, so it stays exact up to
    /// races between the cap check and the insert (a few entries over).
    paid_len: AtomicUsize,
    shutdown: watch::Receiver<bool>,
}

/// One counter per cache line, so that threads bumping different counters
/// do not fight over the same line under load.
#[repr(align(128))]
#[derive(Default)]
struct Padded(AtomicU64);

impl Padded {
    fn bump(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
struct AtomicCounters {
    requests: Padded,
    successes: Padded,
    failures: Padded,
    hangs: Padded,
    queries: Padded,
    reversals: Padded,
}

impl MockAcquirer {
    /// Binds `addr` (port 0 picks a free port, see [`local_addr`](Self::local_addr))
    /// and spawns the server on the current tokio runtime.
    pub async fn bind(addr: SocketAddr, behavior: Behavior) -> std::io::Result<MockAcquirer> {
        let listener = listen(addr)?;
        let local_addr = listener.local_addr()?;
        let (tx, rx) = watch::channel(false);
        let state = Arc::new(State {
            local_addr,
            acquirer: local_addr.to_string().into_boxed_str(),
            behavior: ArcSwap::from_pointee(behavior),
            counters: AtomicCounters::default(),
            paid: DashSet::new(),
            paid_len: AtomicUsize::new(0),
            shutdown: rx,
        });
        // The task is not kept: it ends by itself on shutdown (or when the
        // last handle is dropped), and nothing needs to await it.
        tokio::spawn(serve(listener, state.clone()));
        Ok(MockAcquirer {
            inner: Arc::new(Inner { state, shutdown: tx }),
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.state.local_addr
    }

    /// Replaces the behaviour; payments arriving from now on use it.
    pub fn set_behavior(&self, behavior: Behavior) {
        self.inner.state.behavior.store(Arc::new(behavior));
    }

    /// The current behaviour.
    pub fn behavior(&self) -> Behavior {
        **self.inner.state.behavior.load()
    }

    /// A snapshot of the counters (each read atomically, not all together).
    pub fn counters(&self) -> Counters {
        let c = &self.inner.state.counters;
        Counters {
            requests: c.requests.get(),
            successes: c.successes.get(),
            failures: c.failures.get(),
            hangs: c.hangs.get(),
            queries: c.queries.get(),
            reversals: c.reversals.get(),
        }
    }

    /// Stops accepting connections and aborts hanging requests. Requests
    /// already being answered get a short grace period; idle keep-alive
    /// connections are closed. Idempotent; returns without waiting.
    pub fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Dropping the sender already wakes the server (closed channel);
        // saying it explicitly keeps the two paths identical.
        self.shutdown.send_replace(true);
    }
}

/// Resolves once the mock is shut down or its last handle is dropped.
async fn shut_down(mut rx: watch::Receiver<bool>) {
    // `Err` means the sender is gone, which also means shut down.
    let _ = rx.wait_for(|down| *down).await;
}

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // Same as `TcpListener::bind` does on Unix: lets a restarted mock rebind
    // a port with connections in TIME_WAIT. (On Windows it would allow port
    // stealing, hence Unix only.)
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

async fn serve(listener: TcpListener, state: Arc<State>) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's default of 200 streams per h2 connection would make the mock,
    // not the proxy, the bottleneck of an h2 load test (hanging requests hold
    // their stream too).
    builder.http2().max_concurrent_streams(1024);
    // No timer is configured, so no header-read or keep-alive timeouts: idle
    // keep-alive connections stay open until the client or shutdown closes them.
    let builder = Arc::new(builder);

    let shutdown = shut_down(state.shutdown.clone());
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
        };
        tokio::spawn(serve_connection(stream, builder.clone(), state.clone()));
    }
    // Dropping the listener here closes the port: new connections are refused.
    tracing::debug!(addr = %state.local_addr, "mock acquirer stopped accepting");
}

/// Accept errors are either about one connection (the peer gave up before we
/// accepted it: just go on) or about resources such as file descriptors, where
/// retrying at once would spin; a short pause lets connections close.
async fn accept_error(e: std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted | WouldBlock
    ) {
        return;
    }
    tracing::warn!(error = %e, "mock acquirer: accept failed; pausing");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

async fn serve_connection(stream: TcpStream, builder: Arc<auto::Builder<TokioExecutor>>, state: Arc<State>) {
    // Answers are small and written at once; Nagle would only add delay.
    let _ = stream.set_nodelay(true);
    let shutdown = shut_down(state.shutdown.clone());
    let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn, shutdown);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                // Clients hanging up mid-request are routine in tests.
                tracing::trace!(error = %e, "mock acquirer connection ended");
            }
        }
        _ = &mut shutdown => {
            // Finish in-flight answers, close idle keep-alive connections.
            // Hanging requests were woken by the same signal and abort.
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
        }
    }
}

/// A hanging request released by shutdown. Returning it as the service error
/// makes hyper close the HTTP/1 connection (h2: reset the stream) without an
/// answer, which is what "never answered" looks like to a client.
#[derive(Debug, thiserror::Error)]
#[error("hanging request released by mock acquirer shutdown")]
struct Released;

type Answer = Result<Response<Full<Bytes>>, Released>;

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Answer {
    let path = req.uri().path();
    if req.method() == Method::GET {
        if path == "/-/health" {
            return Ok(json(StatusCode::OK, Bytes::from_static(b"{\"status\":\"ok\"}")));
        }
        let id = percent_decode(last_segment(path));
        return Ok(query(&state, &id));
    }
    if req.method() == Method::POST {
        if let Some(rest) = path.strip_suffix("/reverse") {
            let id = percent_decode(last_segment(rest));
            return Ok(reverse(&state, &id));
        }
        return payment(state, req).await;
    }
    Ok(json(
        StatusCode::METHOD_NOT_ALLOWED,
        Bytes::from_static(b"{\"status\":\"method not allowed\"}"),
    ))
}

async fn payment(state: Arc<State>, req: Request<Incoming>) -> Answer {
    let counters = &state.counters;
    counters.requests.bump();
    // Copy the behaviour out: an arc-swap guard should not be held across
    // the await points below.
    let behavior = **state.behavior.load();

    let order_id = read_order_id(req.into_body()).await;

    if behavior.hang_rate > 0.0 && fastrand::f64() < behavior.hang_rate {
        counters.hangs.bump();
        shut_down(state.shutdown.clone()).await;
        return Err(Released);
    }

    let delay = behavior.latency_ms
        + match behavior.jitter_ms {
            0 => 0,
            j => fastrand::u64(0..=j),
        };
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }

    // `f64()` is in [0, 1): a rate of 1 always pays, 0 never does.
    if fastrand::f64() < behavior.success_rate {
        counters.successes.bump();
        let body = to_json(&PaymentAnswer {
            status: "paid",
            order_id: order_id.as_ref(),
            acquirer: Some(&state.acquirer),
        });
        // Serialised first so the id can be moved into the set, not cloned.
        if let Some(id) = order_id {
            remember_paid(&state, id.into_key());
        }
        Ok(json(StatusCode::OK, body))
    } else {
        counters.failures.bump();
        let status = StatusCode::from_u16(behavior.fail_status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        let body = to_json(&PaymentAnswer {
            status: if status.is_client_error() { "declined" } else { "failed" },
            order_id: order_id.as_ref(),
            acquirer: None,
        });
        Ok(json(status, body))
    }
}

fn remember_paid(state: &State, key: Box<str>) {
    if state.paid_len.load(Ordering::Relaxed) < PAID_CAP && state.paid.insert(key) {
        state.paid_len.fetch_add(1, Ordering::Relaxed);
    }
}

fn query(state: &State, id: &str) -> Response<Full<Bytes>> {
    state.counters.queries.bump();
    if state.paid.contains(id) {
        let body = to_json(&QueryAnswer {
            status: "paid",
            order_id: id,
            acquirer: Some(&state.acquirer),
        });
        json(StatusCode::OK, body)
    } else {
        json(StatusCode::NOT_FOUND, Bytes::from_static(b"{\"status\":\"unknown\"}"))
    }
}

fn reverse(state: &State, id: &str) -> Response<Full<Bytes>> {
    state.counters.reversals.bump();
    if state.paid.remove(id).is_some() {
        state.paid_len.fetch_sub(1, Ordering::Relaxed);
    }
    // Answered 200 even for an unknown order: reversals must be idempotent,
    // and a retried reversal of an already reversed order is a success.
    let body = to_json(&QueryAnswer {
        status: "reversed",
        order_id: id,
        acquirer: None,
    });
    json(StatusCode::OK, body)
}

/// The order id of a payment body, if any. Anything unexpected (unreadable
/// or oversized body, not JSON, no `order_id`, an `order_id` that is neither a
/// string nor a number) means "no order id", never an error.
async fn read_order_id(body: Incoming) -> Option<OrderId> {
    let bytes = Limited::new(body, MAX_BODY).collect().await.ok()?.to_bytes();
    let parsed: PaymentBody = serde_json::from_slice(&bytes).ok()?;
    match parsed.order_id? {
        serde_json::Value::String(s) => Some(OrderId::Str(s)),
        serde_json::Value::Number(n) => Some(OrderId::Num(n)),
        _ => None,
    }
}

#[derive(Deserialize)]
struct PaymentBody {
    // Other fields are skipped by serde without being materialised.
    #[serde(default)]
    order_id: Option<serde_json::Value>,
}

/// An order id as the payment sent it: echoed back with its JSON type,
/// remembered as text (so `42` and `"42"` are the same order for a query,
/// whose id comes from the path).
enum OrderId {
    Str(String),
    Num(serde_json::Number),
}

impl OrderId {
    fn into_key(self) -> Box<str> {
        match self {
            OrderId::Str(s) => s.into_boxed_str(),
            OrderId::Num(n) => n.to_string().into_boxed_str(),
        }
    }
}

impl Serialize for OrderId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            OrderId::Str(v) => s.serialize_str(v),
            OrderId::Num(v) => v.serialize(s),
        }
    }
}

#[derive(Serialize)]
struct PaymentAnswer<'a> {
    status: &'static str,
    /// `null` when the payment had no usable order id: the answer keeps its shape.
    order_id: Option<&'a OrderId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    acquirer: Option<&'a str>,
}

#[derive(Serialize)]
struct QueryAnswer<'a> {
    status: &'static str,
    order_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    acquirer: Option<&'a str>,
}

fn to_json<T: Serialize>(value: &T) -> Bytes {
    // Serialising these plain structs into a Vec cannot fail; an empty
    // object is a harmless fallback rather than a panic path.
    serde_json::to_vec(value).map_or_else(|_| Bytes::from_static(b"{}"), Bytes::from)
}

fn json(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// The last `/`-separated segment of a path (empty for `/` or a trailing `/`).
fn last_segment(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or("")
}

/// Decodes `%XX` escapes in a path segment, so an order id such as `a/b`
/// sent as `a%2Fb` matches what the payment body said. Borrows when there is
/// nothing to decode (the usual case); malformed escapes are kept literally.
fn percent_decode(segment: &str) -> Cow<'_, str> {
    if !segment.contains('%') {
        return Cow::Borrowed(segment);
    }
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex_val(bytes[i + 1]), hex_val(bytes[i + 2])) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(s) => Cow::Owned(s),
        Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper_util::client::legacy::{connect::HttpConnector, Client};

    type TestClient = Client<HttpConnector, Full<Bytes>>;

    fn client() -> TestClient {
        Client::builder(TokioExecutor::new()).build_http()
    }

    async fn mock(behavior: Behavior) -> MockAcquirer {
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        MockAcquirer::bind(addr, behavior).await.expect("bind mock")
    }

    fn url(mock: &MockAcquirer, path: &str) -> String {
        format!("http://{}{}", mock.local_addr(), path)
    }

    fn post(url: &str, body: &'static str) -> Request<Full<Bytes>> {
        Request::post(url)
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .expect("request")
    }

    fn get(url: &str) -> Request<Full<Bytes>> {
        Request::get(url).body(Full::default()).expect("request")
    }

    /// Sends a request and returns status and parsed JSON body.
    async fn send(client: &TestClient, req: Request<Full<Bytes>>) -> (StatusCode, serde_json::Value) {
        let resp = client.request(req).await.expect("response");
        let status = resp.status();
        assert_eq!(resp.headers()[CONTENT_TYPE], "application/json");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, serde_json::from_slice(&body).expect("json body"))
    }

    #[tokio::test]
    async fn pays_and_counts() {
        let mock = mock(Behavior::default()).await;
        let (status, body) = send(
            &client(),
            post(&url(&mock, "/pay"), r#"{"order_id":"o-1","amount":100}"#),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["status"], "paid");
        assert_eq!(body["order_id"], "o-1");
        assert_eq!(body["acquirer"], mock.local_addr().to_string());
        let c = mock.counters();
        assert_eq!((c.requests, c.successes, c.failures, c.hangs), (1, 1, 0, 0));
    }

    #[tokio::test]
    async fn numeric_and_missing_order_ids() {
        let mock = mock(Behavior::default()).await;
        let client = client();
        let (_, body) = send(&client, post(&url(&mock, "/pay"), r#"{"order_id":42}"#)).await;
        assert_eq!(body["order_id"], 42);
        // A number is remembered as its text, as a query path carries it.
        assert_eq!(send(&client, get(&url(&mock, "/pay/42"))).await.0, StatusCode::OK);
        // A bad body is still a payment, just without an order id.
        let (status, body) = send(&client, post(&url(&mock, "/pay"), "not json")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body["order_id"].is_null());
        assert_eq!(mock.counters().requests, 2);
    }

    #[tokio::test]
    async fn declines_with_configured_status() {
        let mock = mock(Behavior {
            success_rate: 0.0,
            fail_status: 402,
            ..Behavior::default()
        })
        .await;
        let (status, body) = send(&client(), post(&url(&mock, "/pay"), r#"{"order_id":"o-2"}"#)).await;
        assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
        assert_eq!(body["status"], "declined");
        assert_eq!(body["order_id"], "o-2");
        let c = mock.counters();
        assert_eq!((c.requests, c.successes, c.failures), (1, 0, 1));
        // A declined order is not paid.
        assert_eq!(
            send(&client(), get(&url(&mock, "/pay/o-2"))).await.0,
            StatusCode::NOT_FOUND
        );
    }

    #[tokio::test]
    async fn queries_paid_and_unknown_orders() {
        let mock = mock(Behavior::default()).await;
        let client = client();
        send(&client, post(&url(&mock, "/v1/payments"), r#"{"order_id":"o-3"}"#)).await;
        let (status, body) = send(&client, get(&url(&mock, "/v1/payments/o-3"))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["status"], "paid");
        assert_eq!(body["order_id"], "o-3");
        let (status, body) = send(&client, get(&url(&mock, "/v1/payments/nope"))).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["status"], "unknown");
        assert_eq!(mock.counters().queries, 2);
        assert_eq!(mock.counters().requests, 1);
    }

    #[tokio::test]
    async fn percent_encoded_query_matches() {
        let mock = mock(Behavior::default()).await;
        let client = client();
        send(&client, post(&url(&mock, "/pay"), r#"{"order_id":"a/b c"}"#)).await;
        assert_eq!(
            send(&client, get(&url(&mock, "/pay/a%2Fb%20c"))).await.0,
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn reversal_forgets_order() {
        let mock = mock(Behavior::default()).await;
        let client = client();
        send(&client, post(&url(&mock, "/pay"), r#"{"order_id":"o-4"}"#)).await;
        let (status, body) = send(&client, post(&url(&mock, "/pay/o-4/reverse"), "")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["status"], "reversed");
        let c = mock.counters();
        // A reversal is not a payment attempt.
        assert_eq!((c.reversals, c.requests), (1, 1));
        assert_eq!(
            send(&client, get(&url(&mock, "/pay/o-4"))).await.0,
            StatusCode::NOT_FOUND
        );
        // Reversing again is still fine (idempotent).
        assert_eq!(
            send(&client, post(&url(&mock, "/pay/o-4/reverse"), "")).await.0,
            StatusCode::OK
        );
        assert_eq!(mock.counters().reversals, 2);
    }

    #[tokio::test]
    async fn set_behavior_takes_effect() {
        let mock = mock(Behavior::default()).await;
        let client = client();
        assert_eq!(send(&client, post(&url(&mock, "/pay"), "{}")).await.0, StatusCode::OK);
        let failing = Behavior {
            success_rate: 0.0,
            ..Behavior::default()
        };
        mock.set_behavior(failing);
        assert_eq!(mock.behavior(), failing);
        let (status, body) = send(&client, post(&url(&mock, "/pay"), "{}")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["status"], "failed");
        let c = mock.counters();
        assert_eq!((c.requests, c.successes, c.failures), (2, 1, 1));
    }

    #[tokio::test]
    async fn latency_delays_answer() {
        let mock = mock(Behavior {
            latency_ms: 100,
            jitter_ms: 20,
            ..Behavior::default()
        })
        .await;
        let start = tokio::time::Instant::now();
        assert_eq!(send(&client(), post(&url(&mock, "/pay"), "{}")).await.0, StatusCode::OK);
        assert!(start.elapsed() >= Duration::from_millis(100));
    }

    #[tokio::test]
    async fn hang_gets_no_answer_until_shutdown() {
        let mock = mock(Behavior {
            hang_rate: 1.0,
            ..Behavior::default()
        })
        .await;
        let client = client();
        let pending = client.request(post(&url(&mock, "/pay"), r#"{"order_id":"h"}"#));
        tokio::pin!(pending);
        let waited = tokio::time::timeout(Duration::from_millis(300), &mut pending).await;
        assert!(waited.is_err(), "a hanging request must not be answered");
        let c = mock.counters();
        assert_eq!((c.requests, c.hangs, c.successes, c.failures), (1, 1, 0, 0));

        // Shutdown releases it: the client sees the connection close, no answer.
        mock.shutdown();
        let released = tokio::time::timeout(Duration::from_secs(2), pending)
            .await
            .expect("hanging request released by shutdown");
        assert!(released.is_err(), "released request must not get an answer");
    }

    #[tokio::test]
    async fn h2c_prior_knowledge_and_health() {
        let mock = mock(Behavior::default()).await;
        let client: TestClient = Client::builder(TokioExecutor::new()).http2_only(true).build_http();
        let resp = client.request(get(&url(&mock, "/-/health"))).await.expect("health");
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.version(), http::Version::HTTP_2);
        let (status, _) = send(&client, post(&url(&mock, "/pay"), r#"{"order_id":1}"#)).await;
        assert_eq!(status, StatusCode::OK);
        // Health checks are not counted.
        assert_eq!(mock.counters().requests, 1);
    }

    #[tokio::test]
    async fn shutdown_stops_accepting() {
        let mock = mock(Behavior::default()).await;
        let addr = mock.local_addr();
        mock.shutdown();
        // The accept loop notices the signal asynchronously; give it a moment.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        loop {
            if TcpStream::connect(addr).await.is_err() {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "still accepting after shutdown");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn dropping_last_handle_shuts_down() {
        let mock = mock(Behavior::default()).await;
        let addr = mock.local_addr();
        let clone = mock.clone();
        drop(mock);
        // A clone keeps it alive.
        assert_eq!(
            send(&client(), get(&format!("http://{addr}/x"))).await.0,
            StatusCode::NOT_FOUND
        );
        drop(clone);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while TcpStream::connect(addr).await.is_ok() {
            assert!(tokio::time::Instant::now() < deadline, "still accepting after drop");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[test]
    fn decodes_percent_escapes() {
        assert!(matches!(percent_decode("plain"), Cow::Borrowed("plain")));
        assert_eq!(percent_decode("a%2Fb%20c"), "a/b c");
        // Malformed or truncated escapes are kept as they are.
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%C3%A9"), "é");
        // Invalid UTF-8 does not panic.
        assert_eq!(percent_decode("%FF"), "\u{FFFD}");
    }

    #[test]
    fn path_segments() {
        assert_eq!(last_segment("/v1/pay/o-1"), "o-1");
        assert_eq!(last_segment("/"), "");
        assert_eq!(last_segment(""), "");
    }
}
