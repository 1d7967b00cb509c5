//! The end-to-end test kit: runs the built `payroute` binary — a real
//! process on OS-chosen ports, its config in a temp dir — against fake
//! acquirers from `payroute-mock`, for `tests/it` and `benches/tls.rs`.
//!
//! - [`Payroute`]: the binary; [`Payroute::serve`] starts a [`Proxy`],
//!   [`Payroute::run`] runs a subcommand.
//! - [`Config`]: routes.toml as a builder.
//! - [`Api`] and [`Resp`]: talking to a running proxy; [`Metrics`]: its
//!   Prometheus text.
//! - [`tls`]: certificates made on the spot, TLS clients and servers.
//! - [`acquirer`]: a recording fake acquirer; [`QUERY`], [`never_charged`]
//!   and their kin: what a channel needs to be failed over after an
//!   ambiguous attempt; [`headers_acquirer`]: one that answers with
//!   headers of the test's choosing.
//! - [`rig`]: a merchant receiving payroute's notifications, and a tap
//!   recording which of an acquirer's notifications payroute acknowledged
//!   (also as the `payroute-rig` binary, for the load tests).
//!
//! Every test gets its own proxy process and its own acquirers, so tests
//! run in parallel safely. Why a library, not a module of the tests: the
//! test binary and the TLS benchmark share it, and a library is compiled
//! once, with nothing in it that one of its users leaves unused.

mod ambiguity;
mod config;
mod headers;
mod http;
mod metrics;
mod pg;
mod proxy;
pub mod rig;
pub mod tls;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use payroute_mock::{Answer, Builder, MockAcquirer, Reply};
use serde_json::{json, Value};

pub use ambiguity::{never_charged, payments, queried_acquirer, ORDER, PAY, QUERY, REFUND, REVERSAL, REVERSE};
pub use config::{error_locations, line_of, Config};
pub use headers::{headers_acquirer, HeadersAcquirer};
pub use http::{count_channels, raw_http, send, try_send, HttpClient, Resp};
pub use metrics::{Metrics, Sample};
pub use pg::PgDatabase;
pub use proxy::{parse_ready, Api, Payroute, Proxy};

/// A recording fake acquirer named `name` on loopback, answering 200 to
/// every request.
pub async fn acquirer(name: &str) -> MockAcquirer {
    acquirer_with(name, Reply::ok()).await
}

/// A recording fake acquirer named `name` on loopback, answering `behavior`.
pub async fn acquirer_with(name: &str, behavior: impl Into<Answer>) -> MockAcquirer {
    start_recording(MockAcquirer::builder().behavior(behavior), name).await
}

/// Starts `mock` as `name`, recording.
///
/// # Panics
/// If it cannot listen: a test cannot go on without its acquirer.
async fn start_recording(mock: Builder, name: &str) -> MockAcquirer {
    mock.name(name)
        .record()
        .start()
        .await
        .unwrap_or_else(|e| panic!("cannot start fake acquirer {name}: {e}"))
}

/// sha256 hex of an API key, as `api_key_sha256` wants it.
pub fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

/// A port free now, for a process the test starts next to bind. (Freed
/// before it is handed over: for a port that must stay dead, use
/// [`refused_port`].)
///
/// Between this call and the child's `bind` the port is nobody's, so it is
/// chosen where nothing else in the test process looks for one: below the
/// kernel's ephemeral range, which every `bind` to port 0 (the tests' own
/// listeners) and every outgoing connection's local port come from, and
/// never twice in one process. A port merely asked of the kernel was handed
/// again, to another test's listener or connection, before the child that
/// was meant to bind it had started.
pub fn free_port() -> u16 {
    static HANDED: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let below = ephemeral_start().clamp(FREE_PORTS_FROM + 1_000, u16::MAX);
    let mut handed = HANDED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    for _ in 0..10_000 {
        let port = fastrand::u16(FREE_PORTS_FROM..below);
        if !handed.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed.push(port);
            return port;
        }
    }
    panic!("no free port in {FREE_PORTS_FROM}..{below} on 127.0.0.1");
}

/// Where [`free_port`] starts looking: above the load-test scripts' ports
/// (`LT_PORT_BASE`, 18000 by default, and the scripts' own bases up to 27000).
const FREE_PORTS_FROM: u16 = 28_000;

/// The first port of the kernel's ephemeral range (32768 when it cannot be read).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// A port on which connections are refused for as long as the test
/// process runs: bound, never listening, and never closed, without
/// `SO_REUSEADDR`, so no other listener can be given it. A port merely freed
/// (`free_port`) can be: a test's dead acquirer once answered `200` as
/// another test's fake acquirer, bound on that port in the meantime.
pub fn refused_port() -> u16 {
    let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
    socket
        .bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("bind a port");
    let port = socket.local_addr().expect("bound address").port();
    // Held, not closed: the process's exit frees it.
    let _ = std::os::fd::IntoRawFd::into_raw_fd(socket);
    port
}

/// A URL on which connections are refused (see [`refused_port`]).
pub fn refused_url() -> String {
    format!("http://127.0.0.1:{}", refused_port())
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
