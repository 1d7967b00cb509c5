//! The server — sockets, optional TLS, connections, shutdown — and the
//! [`MockAcquirer`] handle that tools and tests hold.
//!
//! Why it is built this way:
//!
//! * It is the load tests' baseline, so a request takes no lock of its own
//!   unless recording is on: the answer is read through an `ArcSwap`, and
//!   counters are relaxed atomics on separate cache lines.
//! * It uses real sockets and a real hyper server (HTTP/1.1 keep-alive, h2c
//!   with prior knowledge, h2 over TLS by ALPN, `TCP_NODELAY`), so the proxy
//!   under test exercises its real client stack, not a stub.
//! * A hanging request is held without an answer until
//!   [`MockAcquirer::shutdown`] (or until the last handle is dropped); it is
//!   then aborted, which closes an HTTP/1 connection or resets an h2 stream,
//!   so nothing waits forever.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::answer::{Answer, Behavior, Picked, Protocol, Reply, Rules};
use crate::delivery;
use crate::epay::book::Book;
use crate::fault::{self, ChargeRow, Fault, FaultKind, Ledger};
use crate::gateway;
use crate::orders::{to_json, Orders, StatementLine};
use crate::record::{Handshake, Recorded, Recorder};
use crate::respond;
use crate::state::{shut_down, Answered, AtomicCounters, Clock, Notifier, State, StatementTarget};
use crate::statement::{self, StatementSpec};

/// Request bodies are read up to this size; a larger one is treated like
/// an empty body (no order id) rather than buffered.
const MAX_BODY: usize = 1 << 20;

/// After shutdown, how long in-flight (non-hanging) requests get to finish
/// before their connection is dropped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Accept backlog: generous so that load-test connection bursts are not
/// refused by the mock itself (the kernel caps it at `somaxconn`).
const BACKLOG: u32 = 4096;

/// A snapshot of what the mock has seen and done. All but `connections`
/// are the simulation's (see [`Behavior`]); scripted replies are seen
/// through recording instead.
///
/// Notification counters count copies: one genuine notification per
/// announced payment (`notify_sent`), and per fault one extra copy
/// (`notify_repeated`, `notify_forged`, `notify_wrong_amount`); a lost one
/// sends nothing (`notify_lost`). So `settled_paid + settled_failed ==
/// notify_sent + notify_lost` once settled, when a `notify_url` is set.
///
/// An epay gateway counts in the same words: `requests` are `mapi.php`
/// requests, each ending as one of `failures` (refused with `code` -1:
/// `invalid` ones, then those refused at `refuse_rate`), `pending` (created)
/// or `hangs`; `settled_paid` are orders their buyer paid and
/// `settled_failed` those never paid (counted after `notify_delay_ms`);
/// `queries` are `api.php` requests. Only paid orders are announced, so
/// there `settled_paid == notify_sent + notify_lost`, and `notify_forged`
/// counts forged copies for paid and unpaid orders alike.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Payment attempts received.
    pub requests: u64,
    /// Payments answered paid.
    pub successes: u64,
    /// Payments answered declined or failed.
    pub failures: u64,
    /// epay: `mapi.php` requests refused for what they said (signature,
    /// pid, missing field, money, `out_trade_no`, type, a repeated
    /// `out_trade_no`); also counted in `failures`.
    pub invalid: u64,
    /// Payments held without an answer.
    pub hangs: u64,
    /// Status queries received.
    pub queries: u64,
    /// Reversals received.
    pub reversals: u64,
    /// TCP connections accepted (any kind of answer).
    pub connections: u64,
    /// Payments answered `"processing"`.
    pub pending: u64,
    /// Pending payments since decided paid.
    pub settled_paid: u64,
    /// Pending payments since decided failed.
    pub settled_failed: u64,
    /// Genuine notifications sent (one per announced payment, retries and
    /// repeats aside), delivered or not.
    pub notify_sent: u64,
    /// Decided payments never announced (the loss fault).
    pub notify_lost: u64,
    /// Genuine notifications sent a second time.
    pub notify_repeated: u64,
    /// Forged copies sent (wrong signature, status `"paid"`).
    pub notify_forged: u64,
    /// Correctly signed copies with the amount plus one.
    pub notify_wrong_amount: u64,
    /// Notification `POST`s made, every copy and retry.
    pub notify_attempts: u64,
    /// Notification `POST`s answered 2xx (forged ones included).
    pub notify_delivered: u64,
    /// Copies from the acquirer given up after their last try.
    pub notify_undelivered: u64,
    /// Forged copies the receiver answered 2xx: a receiver that checks
    /// signatures keeps this at 0.
    pub forged_accepted: u64,
}

impl Counters {
    /// Payments the acquirer considers paid: answered paid, or decided so.
    pub fn paid(&self) -> u64 {
        self.successes + self.settled_paid
    }

    /// Payments the acquirer did not take: answered declined or failed, or
    /// decided failed.
    pub fn refused(&self) -> u64 {
        self.failures + self.settled_failed
    }
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

/// How a mock is set up before it starts: address, name, first answer,
/// recording, TLS.
pub struct Builder {
    addr: SocketAddr,
    name: Option<String>,
    behavior: Answer,
    record: bool,
    tls: Option<Arc<rustls::ServerConfig>>,
    clock: Clock,
    statements: Option<StatementTarget>,
    ledger: bool,
}

impl Builder {
    /// Where to listen; port 0 picks a free port. Default: `127.0.0.1:0`.
    pub fn listen(self, addr: SocketAddr) -> Builder {
        Builder { addr, ..self }
    }

    /// The name answers carry (`"acquirer"`); default: the address.
    pub fn name(self, name: impl Into<String>) -> Builder {
        Builder {
            name: Some(name.into()),
            ..self
        }
    }

    /// The answer for requests no rule matches; default: [`Reply::ok`].
    pub fn behavior(self, behavior: impl Into<Answer>) -> Builder {
        Builder {
            behavior: behavior.into(),
            ..self
        }
    }

    /// Keeps every request (and TLS handshake) for the test to inspect.
    pub fn record(self) -> Builder {
        Builder { record: true, ..self }
    }

    /// Speaks TLS with this config (its ALPN decides h2 or HTTP/1.1).
    pub fn tls(self, config: Arc<rustls::ServerConfig>) -> Builder {
        Builder {
            tls: Some(config),
            ..self
        }
    }

    /// Takes the time from `now_ms` (Unix milliseconds) instead of the
    /// system clock: when payments are charged (the statements' times and
    /// days) and an epay order's `addtime`, `endtime` and trade number. A
    /// test sets the time before each payment instead of sleeping.
    pub fn clock(self, now_ms: impl Fn() -> i64 + Send + Sync + 'static) -> Builder {
        Builder {
            clock: Clock::new(Arc::new(now_ms)),
            ..self
        }
    }

    /// Answers `POST /-/statement/write` by writing the statements into
    /// `dir` with `spec` (see [`MockAcquirer::write_statements`]); without
    /// it, that request is answered 404.
    pub fn statement_dir(self, dir: impl Into<PathBuf>, spec: StatementSpec) -> Builder {
        Builder {
            statements: Some(StatementTarget { dir: dir.into(), spec }),
            ..self
        }
    }

    /// Keeps a ledger of every charge, reversed ones marked, never capped
    /// (`GET /-/charges`, [`MockAcquirer::charges`]): what a soak's checker
    /// reads. Memory grows with every charge, so only when asked.
    pub fn ledger(self) -> Builder {
        Builder { ledger: true, ..self }
    }

    /// Binds and spawns the server on the current tokio runtime. A
    /// statement spec that does not check ([`StatementSpec::check`]) is an
    /// `InvalidInput` error.
    pub async fn start(self) -> std::io::Result<MockAcquirer> {
        if let Some(target) = &self.statements {
            target
                .spec
                .check()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        }
        let listener = listen(self.addr)?;
        let local_addr = listener.local_addr()?;
        let (tx, rx) = watch::channel(false);
        let state = Arc::new(State {
            local_addr,
            name: self.name.unwrap_or_else(|| local_addr.to_string()).into_boxed_str(),
            rules: Rules::new(self.behavior),
            counters: AtomicCounters::default(),
            orders: Orders::default(),
            epay: Book::default(),
            notifier: Notifier::default(),
            recorder: self.record.then(Recorder::default),
            shutdown: rx,
            clock: self.clock,
            statements: self.statements,
            fault: Default::default(),
            faulted: Default::default(),
            ledger: self.ledger.then(Ledger::default),
            writing: Mutex::new(()),
        });
        // The task is not kept: it ends by itself on shutdown (or when the
        // last handle is dropped), and nothing needs to await it.
        tokio::spawn(serve(listener, self.tls.map(TlsAcceptor::from), state.clone()));
        Ok(MockAcquirer {
            inner: Arc::new(Inner { state, shutdown: tx }),
        })
    }
}

impl MockAcquirer {
    /// A simulated acquirer on `addr` (port 0 picks a free port, see
    /// [`local_addr`](Self::local_addr)), without recording: what the demo
    /// and the `mock-acquirer` binary run.
    pub async fn bind(addr: SocketAddr, behavior: Behavior) -> std::io::Result<MockAcquirer> {
        MockAcquirer::builder().listen(addr).behavior(behavior).start().await
    }

    /// A mock to set up: on `127.0.0.1:0`, answering [`Reply::ok`], not recording.
    pub fn builder() -> Builder {
        Builder {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            name: None,
            behavior: Reply::ok().into(),
            record: false,
            tls: None,
            clock: Clock::default(),
            statements: None,
            ledger: false,
        }
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.state.local_addr
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.local_addr())
    }

    /// `https://localhost:PORT`, for a TLS mock whose certificate names localhost.
    pub fn https_url(&self) -> String {
        format!("https://localhost:{}", self.local_addr().port())
    }

    /// Replaces the answer for requests no rule matches; requests arriving
    /// from now on use it.
    pub fn set_behavior(&self, behavior: impl Into<Answer>) {
        self.inner.state.rules.set_default(behavior.into());
    }

    /// The answer for requests no rule matches.
    pub fn behavior(&self) -> Answer {
        self.inner.state.rules.default_answer()
    }

    /// Gives requests of `method` to paths fitting `pattern` (a `*` segment
    /// matches any one segment, e.g. `/v1/payments/*/reverse`) their own
    /// answer, replacing an earlier one for the same method and pattern.
    /// Rules are checked in the order they were first set.
    pub fn on(&self, method: &str, pattern: &str, answer: impl Into<Answer>) {
        self.inner.state.rules.set(method, pattern, answer.into());
    }

    /// Switches a fault on (or off, with [`FaultKind::None`]) from the next
    /// request on; an invalid one is refused.
    pub fn set_fault(&self, fault: Fault) -> Result<(), String> {
        fault.check()?;
        self.inner.state.fault.store(Arc::new(fault));
        Ok(())
    }

    /// Every charge so far, oldest first (empty without a ledger).
    pub fn charges(&self) -> Vec<ChargeRow> {
        self.inner.state.ledger.as_ref().map(Ledger::all).unwrap_or_default()
    }

    /// A snapshot of the counters (each read atomically, not all together).
    pub fn counters(&self) -> Counters {
        let c = &self.inner.state.counters;
        Counters {
            requests: c.requests.get(),
            successes: c.successes.get(),
            failures: c.failures.get(),
            invalid: c.invalid.get(),
            hangs: c.hangs.get(),
            queries: c.queries.get(),
            reversals: c.reversals.get(),
            connections: c.connections.get(),
            pending: c.pending.get(),
            settled_paid: c.settled_paid.get(),
            settled_failed: c.settled_failed.get(),
            notify_sent: c.notify_sent.get(),
            notify_lost: c.notify_lost.get(),
            notify_repeated: c.notify_repeated.get(),
            notify_forged: c.notify_forged.get(),
            notify_wrong_amount: c.notify_wrong_amount.get(),
            notify_attempts: c.notify_attempts.get(),
            notify_delivered: c.notify_delivered.get(),
            notify_undelivered: c.notify_undelivered.get(),
            forged_accepted: c.forged_accepted.get(),
        }
    }

    /// The payments the simulation considers paid (answered paid, or
    /// pending and since decided paid; reversed ones aside), then the epay
    /// orders its buyers paid, each oldest first: the acquirer's statement,
    /// as `GET /-/statement` answers it.
    pub fn statement(&self) -> Vec<StatementLine> {
        statement(&self.inner.state)
    }

    /// Writes what the acquirer charged as statement files into `dir`
    /// (created if missing): one per business day that has charges,
    /// `<dir>/<spec.name>-<YYYY-MM-DD>.csv`, each with its injected
    /// differences in [`faults_path`](crate::faults_path) beside it; the
    /// statements' paths, oldest day first. Files are replaced whole (written
    /// beside, then renamed); days without charges are not written, and
    /// files of earlier writes are left as they are. JSON payments are
    /// listed when they carried `x-payroute-trade-no` and an amount in fen
    /// (an integer, or a string of digits); epay orders always. See the
    /// crate documentation ("# Statements") for the format.
    ///
    /// Blocking file I/O: from async code, call it on a blocking thread.
    /// A spec that does not [`check`](StatementSpec::check) is an
    /// `InvalidInput` error.
    pub fn write_statements(&self, dir: &Path, spec: &StatementSpec) -> io::Result<Vec<PathBuf>> {
        write_statements(&self.inner.state, dir, spec)
    }

    /// Waits until every payment answered `"processing"` so far has been
    /// decided and its notifications delivered or given up, at most
    /// `timeout`; whether that happened.
    pub async fn wait_settled(&self, timeout: Duration) -> bool {
        delivery::wait_settled(&self.inner.state, timeout).await
    }

    fn recorder(&self) -> Option<&Recorder> {
        self.inner.state.recorder.as_ref()
    }

    /// Every request received so far (health checks aside), oldest first.
    /// Empty unless recording.
    pub fn received(&self) -> Vec<Recorded> {
        self.recorder().map(Recorder::requests).unwrap_or_default()
    }

    /// The requests received so far of `method` to paths fitting `pattern`.
    pub fn received_to(&self, method: &str, pattern: &str) -> Vec<Recorded> {
        self.received().into_iter().filter(|r| r.is(method, pattern)).collect()
    }

    /// The last request received.
    pub fn last_received(&self) -> Option<Recorded> {
        self.recorder().and_then(Recorder::last)
    }

    /// How many requests it received (recording only).
    pub fn hits(&self) -> usize {
        self.recorder().map_or(0, |r| r.count(|_| true))
    }

    /// How many requests of `method` to paths fitting `pattern` it received.
    pub fn count(&self, method: &str, pattern: &str) -> usize {
        self.recorder().map_or(0, |r| r.count(|q| q.is(method, pattern)))
    }

    /// Requests being answered right now (recording only).
    pub fn in_flight(&self) -> usize {
        self.recorder().map_or(0, Recorder::in_flight)
    }

    /// The most requests it was ever answering at once (recording only).
    pub fn max_in_flight(&self) -> usize {
        self.recorder().map_or(0, Recorder::max_in_flight)
    }

    /// The TLS handshakes it completed (recording only).
    pub fn handshakes(&self) -> Vec<Handshake> {
        self.recorder().map(Recorder::handshakes).unwrap_or_default()
    }

    /// Waits until it has received `n` requests, at most `timeout`; whether it did.
    pub async fn wait_hits(&self, n: usize, timeout: Duration) -> bool {
        match self.recorder() {
            Some(r) => r.wait(n, timeout, |_| true).await,
            None => false,
        }
    }

    /// Waits until it has received `n` requests of `method` to paths
    /// fitting `pattern`, at most `timeout`; whether it did.
    pub async fn wait_count(&self, method: &str, pattern: &str, n: usize, timeout: Duration) -> bool {
        match self.recorder() {
            Some(r) => r.wait(n, timeout, |q| q.is(method, pattern)).await,
            None => false,
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

async fn serve(listener: TcpListener, tls: Option<TlsAcceptor>, state: Arc<State>) {
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
        state.counters.connections.bump();
        tokio::spawn(serve_connection(stream, tls.clone(), builder.clone(), state.clone()));
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

async fn serve_connection(
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    state: Arc<State>,
) {
    // Answers are small and written at once; Nagle would only add delay.
    let _ = stream.set_nodelay(true);
    let Some(acceptor) = tls else {
        return serve_io(stream, &builder, state).await;
    };
    // In the connection's task, not the accept loop: a client that never
    // finishes its handshake holds up nobody else.
    let accepted = tokio::select! {
        accepted = acceptor.accept(stream) => accepted,
        _ = shut_down(state.shutdown.clone()) => return,
    };
    match accepted {
        Ok(tls) => {
            if let Some(r) = &state.recorder {
                r.handshake(Handshake::of(tls.get_ref().1));
            }
            serve_io(tls, &builder, state).await;
        }
        // A refused client certificate or a client refusing ours: routine in TLS tests.
        Err(e) => tracing::trace!(error = %e, "mock acquirer TLS handshake failed"),
    }
}

async fn serve_io<I>(io: I, builder: &auto::Builder<TokioExecutor>, state: Arc<State>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shutdown = shut_down(state.shutdown.clone());
    let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
    let conn = builder.serve_connection(TokioIo::new(io), service);
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

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Answered {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();
    if parts.method == Method::GET && path == "/-/health" {
        return Ok(respond::json(
            StatusCode::OK,
            Bytes::from_static(b"{\"status\":\"ok\"}"),
        ));
    }
    // The mock's own endpoints, like health: not recorded, not counted.
    if parts.method == Method::GET && path == "/-/statement" {
        return Ok(respond::json(StatusCode::OK, to_json(&statement(&state))));
    }
    if path == "/-/statement/write" {
        return Ok(write_endpoint(state, &parts.method).await);
    }
    if path == "/-/fault" || path == "/-/charges" {
        return Ok(control(&state, &parts.method, path, body).await);
    }
    // Unreadable or oversized: answered as if empty, never an error.
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let _visit = state.recorder.as_ref().map(|r| r.arrive(&parts, &body));
    let fault = state.fault.load_full();
    if !fault.strikes(&parts.method, path) {
        return answer(state.clone(), parts, body).await;
    }
    state.faulted.bump(fault.kind);
    match fault.kind {
        FaultKind::None => answer(state.clone(), parts, body).await,
        FaultKind::Storm => crate::respond::storm(),
        FaultKind::Hang => {
            tokio::select! {
                released = state.released() => Err(released),
                // Dropped unanswered: the connection closes.
                () = tokio::time::sleep(fault::hold(&fault)) => Err(crate::state::Released),
            }
        }
        FaultKind::Reset => crate::respond::cut(answer(state.clone(), parts, body).await),
        FaultKind::Late => {
            let answered = answer(state.clone(), parts, body).await;
            tokio::time::sleep(Duration::from_millis(fault.late_ms)).await;
            answered
        }
    }
}

/// The answer plan's answer to a request (no fault in the way).
async fn answer(state: Arc<State>, parts: http::request::Parts, body: Bytes) -> Answered {
    let path = parts.uri.path();
    match state.rules.pick(&parts.method, path) {
        Picked::Simulated(b, dice) => {
            if let Protocol::Epay(account) = &b.protocol {
                return gateway::answer(&state, &b, account, &dice, &parts, &body).await;
            }
            respond::simulate(&state, b, &dice, &parts, &body).await
        }
        Picked::Scripted(reply, k) => respond::script(&state, &reply, k, &parts, &body).await,
    }
}

/// `POST /-/fault` (a [`Fault`] as JSON: switched on, answered with the
/// fault now in force), `GET /-/fault` (the fault in force, how many
/// requests met each kind, and the notification faults' counters),
/// `GET /-/charges` (the ledger, 404 without one).
async fn control(
    state: &State,
    method: &Method,
    path: &str,
    body: Incoming,
) -> http::Response<http_body_util::Full<Bytes>> {
    let bad =
        |status, msg: String| respond::json(status, to_json(&serde_json::json!({"status": "error", "error": msg})));
    match (method, path) {
        (&Method::GET, "/-/charges") => match &state.ledger {
            Some(ledger) => respond::json(StatusCode::OK, to_json(&ledger.all())),
            None => bad(StatusCode::NOT_FOUND, "no ledger kept (--ledger)".into()),
        },
        (&Method::GET, "/-/fault") => respond::json(
            StatusCode::OK,
            to_json(&serde_json::json!({
                "fault": &**state.fault.load(),
                "faulted": state.faulted.to_json(),
                "counters": {
                    "requests": state.counters.requests.get(),
                    "reversals": state.counters.reversals.get(),
                    "notify_lost": state.counters.notify_lost.get(),
                    "notify_repeated": state.counters.notify_repeated.get(),
                },
            })),
        ),
        (&Method::POST, "/-/fault") => {
            let body = match Limited::new(body, 4096).collect().await {
                Ok(c) => c.to_bytes(),
                Err(_) => return bad(StatusCode::BAD_REQUEST, "unreadable body".into()),
            };
            let fault: Fault = match serde_json::from_slice(&body) {
                Ok(f) => f,
                Err(e) => return bad(StatusCode::BAD_REQUEST, e.to_string()),
            };
            if let Err(e) = fault.check() {
                return bad(StatusCode::BAD_REQUEST, e);
            }
            tracing::info!(
                kind = fault.kind.name(),
                rate = fault.rate,
                "mock acquirer: fault switched"
            );
            state.fault.store(Arc::new(fault.clone()));
            respond::json(StatusCode::OK, to_json(&fault))
        }
        _ => bad(StatusCode::METHOD_NOT_ALLOWED, format!("{method} {path}")),
    }
}

/// `POST /-/statement/write`: the statements written into the configured
/// directory, answered with their paths (a JSON list); 404 without a
/// directory, 500 if writing failed.
async fn write_endpoint(state: Arc<State>, method: &Method) -> http::Response<http_body_util::Full<Bytes>> {
    #[derive(serde::Serialize)]
    struct Failed {
        status: &'static str,
        error: String,
    }
    let failed = |status, error: String| respond::json(status, to_json(&Failed { status: "error", error }));
    if method != Method::POST {
        return failed(StatusCode::METHOD_NOT_ALLOWED, "POST to write statements".into());
    }
    if state.statements.is_none() {
        return failed(StatusCode::NOT_FOUND, "no statement directory configured".into());
    }
    // File I/O, and a whole day's formatting: off the runtime's threads.
    let written = tokio::task::spawn_blocking(move || {
        let Some(target) = &state.statements else {
            return Ok(Vec::new());
        };
        write_statements(&state, &target.dir, &target.spec)
    })
    .await;
    match written {
        Ok(Ok(paths)) => {
            let paths: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
            respond::json(StatusCode::OK, to_json(&paths))
        }
        Ok(Err(e)) => failed(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => failed(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Both books' charges, written as statements; one write at a time.
fn write_statements(state: &State, dir: &Path, spec: &StatementSpec) -> io::Result<Vec<PathBuf>> {
    // A poisoned lock only means an earlier write panicked; files are whole.
    let _one_at_a_time = state.writing.lock().unwrap_or_else(PoisonError::into_inner);
    let mut charges = state.orders.charges();
    charges.extend(state.epay.charges());
    statement::write(charges, dir, spec)
}

/// Both books' paid orders: a mock usually speaks one protocol, but may
/// have been switched.
fn statement(state: &State) -> Vec<StatementLine> {
    let mut lines = state.orders.statement();
    lines.extend(state.epay.statement());
    lines
}
