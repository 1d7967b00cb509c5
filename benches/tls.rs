//! What TLS costs: the same payments through payroute with plain HTTP on
//! both sides, and with TLS on both sides (merchants → payroute TLS 1.3;
//! payroute → acquirer mutual TLS), with keep-alive and with a new
//! connection (so a full handshake) per payment; plus the listener's bare
//! handshake rate. It takes about a minute and needs `wrk` (and uses
//! `openssl s_time` when present); without wrk it says so and measures
//! nothing. Run it on a quiet machine; it prints Markdown tables:
//!
//! ```text
//! cargo bench --bench tls
//! ```
//!
//! Both acquirers are the same fake acquirer (`payroute-mock`) in this
//! process, with and without rustls in front, so the difference is TLS.
//! Loopback only; every run is bounded in time.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use payroute_testkit::tls::{client_config, server_config, tls_acquirer, Ca, TLS12, TLS13};
use payroute_testkit::{acquirer, Config, Payroute, Proxy};

/// The binary measured: `cargo bench` builds it with the bench profile.
const PAYROUTE: Payroute = Payroute::at(env!("CARGO_BIN_EXE_payroute"));

/// Seconds per wrk run, and runs per configuration (interleaved; the median counts).
const SECS: u64 = 5;
const ROUNDS: usize = 3;

/// A unique payment per request, like loadtest/wrk/payments.lua, with
/// `Connection: close` so every payment opens a new connection (wrk ignores
/// `-H` headers when a script builds its own).
const CLOSE_SCRIPT: &str = r#"
local counter = 1
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end
function init(args)
  n = 0
  prefix = string.format("c%x-%d-", os.time(), tid)
end
function request()
  n = n + 1
  local body = string.format('{"amount":1250,"currency":"CNY","order_id":"%s%d","note":"wrk"}', prefix, n)
  return wrk.format("POST", nil, {
    ["Content-Type"] = "application/json",
    ["X-Merchant-Id"] = "m-0000000",
    ["Connection"] = "close",
  }, body)
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"rps":%.1f,"p50_us":%d,"p99_us":%d,"errors_connect":%d,"errors_read":%d,"errors_write":%d,"errors_timeout":%d,"errors_status":%d}\n',
    summary.requests / (summary.duration / 1e6), latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.timeout, e.status))
end
"#;

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// One wrk run with `script`; (req/s, p50 ms, p99 ms, errors as
/// connect/read/write/timeout/status).
fn wrk(url: &str, script: &Path) -> (f64, f64, f64, String) {
    let out = Command::new("wrk")
        .args(["-t2", "-c64", &format!("-d{SECS}s"), "-s"])
        .arg(script)
        .args([url, "--", "1"])
        .output()
        .expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    let json = text
        .lines()
        .find_map(|l| l.strip_prefix("WRKJSON "))
        .unwrap_or_else(|| panic!("no WRKJSON line from wrk: {text}"));
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    let errors = [
        "errors_connect",
        "errors_read",
        "errors_write",
        "errors_timeout",
        "errors_status",
    ]
    .iter()
    .map(|k| v[k].as_u64().unwrap_or(0).to_string())
    .collect::<Vec<_>>()
    .join("/");
    (
        v["rps"].as_f64().unwrap_or(0.0),
        v["p50_us"].as_f64().unwrap_or(0.0) / 1000.0,
        v["p99_us"].as_f64().unwrap_or(0.0) / 1000.0,
        errors,
    )
}

/// `openssl s_time -new`: full handshakes per second from one client thread.
fn s_time(port: u16, version: &str) -> Option<f64> {
    let out = Command::new("openssl")
        .args([
            "s_time",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-new",
            "-time",
            "5",
            version,
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "1234 connections in 5.01s; 246.31 connections/user sec, ..."
    let line = text
        .lines()
        .find(|l| l.contains("connections in") && l.contains("real seconds"))?;
    let (count, rest) = line.split_once(" connections in ")?;
    let secs = rest.split_whitespace().next()?.trim_end_matches('s');
    Some(count.trim().parse::<f64>().ok()? / secs.parse::<f64>().ok()?)
}

/// Full TLS handshakes per second against `addr` from `clients` concurrent
/// rustls clients for `secs` seconds (no session resumption).
async fn handshake_rate(
    addr: std::net::SocketAddr,
    ca: &Ca,
    version: &'static rustls::SupportedProtocolVersion,
) -> f64 {
    let mut config = (*client_config(ca, None, version, &[b"http/1.1"])).clone();
    config.resumption = rustls::client::Resumption::disabled();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let deadline = Instant::now() + Duration::from_secs(5);
    let started = Instant::now();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let connector = connector.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
                    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                    connector.connect(name, tcp).await.expect("handshake");
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total as f64 / started.elapsed().as_secs_f64()
}

/// A config dir with the listener's certificate, the acquirers' CA and our client certificate.
fn tls_dir(ca: &Ca, clients: &Ca) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    ca.server("payroute").write(dir.path(), "server");
    ca.write(dir.path(), "ca.pem");
    clients.client("payroute").write(dir.path(), "client");
    dir
}

/// One channel "acq" at `url` (plus `lines`), and the one merchant wrk pays for.
fn config(url: &str, lines: &str) -> Config {
    Config::new()
        .channel("acq", url, lines)
        .merchant("m-0000000", "rate_per_sec = 1000000\nburst = 1000000")
}

/// TLS on both sides: the listener, and mutual TLS to `acq`.
fn tls_config(acq_url: &str) -> Config {
    config(
        acq_url,
        "tls = { ca = \"ca.pem\", cert = \"client.pem\", key = \"client.key\" }",
    )
    .server_tls("cert = \"server.pem\"\nkey = \"server.key\"")
}

async fn start_proxy(dir: tempfile::TempDir, config: Config) -> Proxy {
    let path = dir.path().join("routes.toml");
    std::fs::write(&path, config.to_string()).unwrap();
    PAYROUTE
        .serve_in(dir, path, &[("RUST_LOG", "warn,payroute::cli=info")])
        .await
}

fn main() {
    // `cargo bench` passes --bench; a filter argument is accepted and ignored.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(tls_cost());
}

async fn tls_cost() {
    if !have("wrk") {
        eprintln!("wrk is not installed: nothing measured (apt-get install wrk)");
        return;
    }
    let ca = Ca::new("bench CA");
    let clients = Ca::new("bench client CA");
    let plain_acq = acquirer("plain").await;
    let tls_acq = tls_acquirer(
        "tls",
        server_config(&ca.server("acquirer"), Some(&clients), &[&TLS13, &TLS12]),
    )
    .await;
    // The same acquirer offering HTTP/1.1 only: like for like with the plain run.
    let mut h1_only = (*server_config(&ca.server("acquirer"), Some(&clients), &[&TLS13, &TLS12])).clone();
    h1_only.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tls_h1_acq = tls_acquirer("tls-h1", Arc::new(h1_only)).await;

    let plain = start_proxy(tempfile::tempdir().unwrap(), config(&plain_acq.url(), "")).await;
    let tls = start_proxy(tls_dir(&ca, &clients), tls_config(&tls_acq.https_url())).await;
    let tls_h1 = start_proxy(tls_dir(&ca, &clients), tls_config(&tls_h1_acq.https_url())).await;
    let plain_url = plain.url("/v1/payments");
    let tls_h1_url = format!("https://127.0.0.1:{}/v1/payments", tls_h1.listen.port());
    let tls_url = format!("https://127.0.0.1:{}/v1/payments", tls.listen.port());

    let keep_alive = Path::new(env!("CARGO_MANIFEST_DIR")).join("loadtest/wrk/payments.lua");
    let scripts = tempfile::tempdir().unwrap();
    let close = scripts.path().join("close.lua");
    std::fs::write(&close, CLOSE_SCRIPT).unwrap();
    let runs = [
        (
            "plain → payroute → plain (HTTP/1.1), keep-alive",
            &plain_url,
            &keep_alive,
        ),
        (
            "TLS 1.3 → payroute → mTLS (HTTP/1.1), keep-alive",
            &tls_h1_url,
            &keep_alive,
        ),
        (
            "TLS 1.3 → payroute → mTLS (h2 by ALPN), keep-alive",
            &tls_url,
            &keep_alive,
        ),
        ("plain, new connection per payment", &plain_url, &close),
        ("TLS 1.3, new connection (full handshake) per payment", &tls_url, &close),
    ];
    let mut results: Vec<Vec<(f64, f64, f64, String)>> = vec![Vec::new(); runs.len()];
    for _ in 0..ROUNDS {
        for (i, (_, url, script)) in runs.iter().enumerate() {
            results[i].push(wrk(url, script));
        }
    }
    println!("\n| wrk -t2 -c64, {ROUNDS}×{SECS}s interleaved, median | req/s | p50 ms | p99 ms | errors c/r/w/t/s |");
    println!("|---|---|---|---|---|");
    for ((name, _, _), mut r) in runs.iter().zip(results) {
        r.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (rps, p50, p99, errors) = r.swap_remove(r.len() / 2);
        println!("| {name} | {rps:.0} | {p50:.2} | {p99:.2} | {errors} |");
    }

    println!("\n| handshakes on the payment listener (no resumption) | per second |");
    println!("|---|---|");
    for (name, version) in [
        ("TLS 1.3, 8 rustls clients", &TLS13),
        ("TLS 1.2, 8 rustls clients", &TLS12),
    ] {
        println!("| {name} | {:.0} |", handshake_rate(tls.listen, &ca, version).await);
    }
    if have("openssl") {
        for (name, flag) in [
            ("TLS 1.3, openssl s_time -new (1 client)", "-tls1_3"),
            ("TLS 1.2, openssl s_time -new (1 client)", "-tls1_2"),
        ] {
            match s_time(tls.listen.port(), flag) {
                Some(rate) => println!("| {name} | {rate:.0} |"),
                None => println!("| {name} | (no result) |"),
            }
        }
    }
    println!(
        "\nupstream handshakes for {} payments over TLS: {} (pooled)",
        tls_acq.hits(),
        tls_acq.handshakes().len()
    );
}
