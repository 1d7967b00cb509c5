//! `payroute-rig`: the test kit's notification parties as a process, for
//! the load-test scripts (`loadtest/outbox.sh`, `loadtest/crash.sh`).
//!
//! ```text
//! payroute-rig serve --control 127.0.0.1:7000 [--sink 127.0.0.1:7001 --secret S [--epay-key K]]
//!                    [--tap 127.0.0.1:7002 --to http://127.0.0.1:8080[,http://...]]
//! payroute-rig pay --url http://127.0.0.1:8080/v1/payments --n 10000
//!                  [--concurrency 32] [--merchants 1] [--amount 1250]
//! ```
//!
//! `serve` runs a [`MerchantSink`] and/or a [`NotifyTap`] until killed;
//! the control listener answers `GET /stats` (JSON), `GET /sink/events`
//! and `GET /tap/log` (JSON lines), `GET /sink/timeline` (deliveries per
//! 100 ms), `POST /sink/down`, `POST /sink/up`, `POST /sink/status/{code}`.
//! `pay` sends N payments (unique order ids, merchants `m-0000000`..),
//! `concurrency` at a time over kept-alive connections, and prints one JSON
//! line per payment (`order_id`, `merchant`, `code` — 0 when unanswered —,
//! `trade_no`, `status`), then a summary line on stderr. Nothing is
//! retried: a payment without an answer stays unanswered.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use payroute_testkit::rig::{MerchantSink, NotifyTap};
use serde_json::{json, Value};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(command) = args.next() else {
        eprintln!("usage: payroute-rig serve|pay --flag value ... (see the source's header)");
        return ExitCode::from(2);
    };
    let mut flags = HashMap::new();
    while let Some(k) = args.next() {
        let Some(name) = k.strip_prefix("--") else {
            eprintln!("payroute-rig: unexpected argument {k}");
            return ExitCode::from(2);
        };
        let Some(v) = args.next() else {
            eprintln!("payroute-rig: --{name} needs a value");
            return ExitCode::from(2);
        };
        flags.insert(name.to_owned(), v);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("payroute-rig: no runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match command.as_str() {
            "serve" => serve(&flags).await,
            "pay" => pay(&flags).await,
            other => Err(format!("unknown command {other}")),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("payroute-rig: {e}");
            ExitCode::FAILURE
        }
    }
}

fn addr(flags: &HashMap<String, String>, name: &str) -> Result<Option<SocketAddr>, String> {
    flags
        .get(name)
        .map(|v| v.parse().map_err(|e| format!("--{name} {v}: {e}")))
        .transpose()
}

fn number(flags: &HashMap<String, String>, name: &str, default: u64) -> Result<u64, String> {
    flags
        .get(name)
        .map_or(Ok(default), |v| v.parse().map_err(|e| format!("--{name} {v}: {e}")))
}

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r
}

async fn serve(flags: &HashMap<String, String>) -> Result<(), String> {
    let control = addr(flags, "control")?.ok_or("serve needs --control ADDR")?;
    let sink = match addr(flags, "sink")? {
        Some(a) => {
            let secret = flags.get("secret").ok_or("--sink needs --secret")?;
            Some(Arc::new(
                MerchantSink::start_with(a, secret, flags.get("epay-key").map(String::as_str)).await,
            ))
        }
        None => None,
    };
    let tap = match addr(flags, "tap")? {
        Some(a) => {
            let to: Vec<String> = flags
                .get("to")
                .ok_or("--tap needs --to URL[,URL]")?
                .split(',')
                .map(str::to_owned)
                .collect();
            Some(Arc::new(NotifyTap::start_on(a, &to).await))
        }
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(control)
        .await
        .map_err(|e| format!("cannot listen on {control}: {e}"))?;
    eprintln!("payroute-rig ready control={control}");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (sink, tap) = (sink.clone(), tap.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let (sink, tap) = (sink.clone(), tap.clone());
                async move { Ok::<_, Infallible>(control_answer(req, sink.as_deref(), tap.as_deref()).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn control_answer(
    req: Request<hyper::body::Incoming>,
    sink: Option<&MerchantSink>,
    tap: Option<&NotifyTap>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let lines = |rows: Vec<Value>| {
        let mut out = String::new();
        for r in rows {
            out.push_str(&r.to_string());
            out.push('\n');
        }
        reply(StatusCode::OK, out)
    };
    match (req.method(), path.as_str(), sink, tap) {
        (&Method::GET, "/stats", _, _) => {
            let tapped = tap.map(|t| {
                let log = t.log();
                let acked = log.iter().filter(|r| r.acked).count();
                json!({"forwarded": log.len(), "acknowledged": acked,
                       "unanswered": log.iter().filter(|r| r.answer == 0).count()})
            });
            let body = json!({"sink": sink.map(|s| s.stats().to_json()), "tap": tapped});
            reply(StatusCode::OK, body.to_string())
        }
        (&Method::GET, "/sink/events", Some(s), _) => lines(
            s.events()
                .into_iter()
                .map(|(id, e)| {
                    json!({"event_id": id, "trade_no": e.trade_no, "order_id": e.order_id,
                           "state": e.state, "deliveries": e.deliveries})
                })
                .collect(),
        ),
        (&Method::GET, "/sink/timeline", Some(s), _) => reply(StatusCode::OK, json!(s.stats().timeline).to_string()),
        (&Method::POST, "/sink/down", Some(s), _) => {
            s.down();
            reply(StatusCode::OK, "down")
        }
        (&Method::POST, "/sink/up", Some(s), _) => {
            s.up().await;
            reply(StatusCode::OK, "up")
        }
        (&Method::POST, p, Some(s), _) if p.starts_with("/sink/status/") => {
            match p["/sink/status/".len()..].parse::<u16>() {
                Ok(code) if (200..600).contains(&code) => {
                    s.answer_with(code);
                    reply(StatusCode::OK, "ok")
                }
                _ => reply(StatusCode::BAD_REQUEST, "a status code"),
            }
        }
        (&Method::GET, "/tap/log", _, Some(t)) => lines(
            t.log()
                .into_iter()
                .map(|r| {
                    json!({"trade_no": r.trade_no, "order_id": r.order_id, "status": r.status,
                           "answer": r.answer, "acked": r.acked, "protocol": r.protocol, "target": r.target})
                })
                .collect(),
        ),
        _ => reply(StatusCode::NOT_FOUND, "unknown control request"),
    }
}

async fn pay(flags: &HashMap<String, String>) -> Result<(), String> {
    let url = flags.get("url").ok_or("pay needs --url")?.clone();
    let n = number(flags, "n", 1000)?;
    let concurrency = number(flags, "concurrency", 32)?.max(1);
    let merchants = number(flags, "merchants", 1)?.max(1);
    let amount = number(flags, "amount", 1250)?;
    let run = format!("rig{:x}", fastrand::u64(..) & 0xff_ffff);
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(concurrency as usize)
        .build_http();
    let next = Arc::new(AtomicU64::new(0));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let started = Instant::now();
    for _ in 0..concurrency {
        let (client, next, tx, url, run) = (client.clone(), next.clone(), tx.clone(), url.clone(), run.clone());
        tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let merchant = format!("m-{:07}", i % merchants);
                let order_id = format!("{run}-{i}");
                let body = json!({"amount": amount, "currency": "CNY", "order_id": order_id}).to_string();
                let req = Request::post(url.as_str())
                    .header("content-type", "application/json")
                    .header("x-merchant-id", merchant.as_str())
                    .body(Full::new(Bytes::from(body)));
                let Ok(req) = req else { break };
                let exchange = async {
                    let resp = client.request(req).await.ok()?;
                    let code = resp.status().as_u16();
                    let trade_no = resp
                        .headers()
                        .get("x-payroute-trade-no")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    let body = resp.into_body().collect().await.ok()?.to_bytes();
                    let stated: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    Some((code, trade_no, stated["status"].as_str().map(str::to_owned)))
                };
                let (code, trade_no, status) = tokio::time::timeout(Duration::from_secs(30), exchange)
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or((0, None, None));
                let row = json!({"order_id": order_id, "merchant": merchant, "code": code,
                                 "trade_no": trade_no, "status": status});
                if tx.send(row).is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut codes: HashMap<u16, u64> = HashMap::new();
    while let Some(row) = rx.recv().await {
        let code = row["code"].as_u64().and_then(|c| u16::try_from(c).ok()).unwrap_or(0);
        *codes.entry(code).or_insert(0) += 1;
        writeln!(out, "{row}").map_err(|e| format!("stdout: {e}"))?;
    }
    out.flush().map_err(|e| format!("stdout: {e}"))?;
    let secs = started.elapsed().as_secs_f64();
    let codes: HashMap<String, u64> = codes.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    eprintln!(
        "{}",
        json!({"payments": n, "seconds": secs, "per_s": n as f64 / secs, "codes": codes})
    );
    Ok(())
}
