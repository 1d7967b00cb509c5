//! `hyper-floor`: the least a relay built on payroute's stack can cost, for
//! `loadtest/bench.sh --sections cpu` (issue 19).
//!
//! ```text
//! hyper-floor --listen 127.0.0.1:8080 --upstream 127.0.0.1:9001,127.0.0.1:9002 [--workers 2]
//! ```
//!
//! Issue 19 asks payroute's CPU per payment to be at most nginx's CPU per
//! relayed request. This row says how much of that budget the design
//! card's stack (tokio, hyper 1.x, hyper-util) spends before any payment
//! logic runs: it relays and does nothing else. Everything is the cheapest
//! hyper allows, so the row is a floor, not a competitor: a thread per core,
//! each with a single-threaded runtime accepting from one shared socket (as
//! payroute's workers are fed, minus the hand-off), and each inbound
//! connection paired for its whole life with one upstream HTTP/1.1
//! connection of its own (round robin over the upstreams by connection), so
//! there is no pool to check out of. Bodies stream through untouched, both
//! ways: no parsing, no copying, no headers added or removed. An upstream
//! that cannot be reached is a 502; nothing is retried.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

type Body = BoxBody<Bytes, hyper::Error>;

struct Args {
    listen: SocketAddr,
    upstreams: Vec<SocketAddr>,
    workers: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut listen = None;
    let mut upstreams = Vec::new();
    let mut workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => listen = Some(value.parse().map_err(|e| format!("--listen {value}: {e}"))?),
            "--upstream" => {
                for addr in value.split(',') {
                    upstreams.push(addr.parse().map_err(|e| format!("--upstream {addr}: {e}"))?);
                }
            }
            "--workers" => workers = value.parse().map_err(|e| format!("--workers {value}: {e}"))?,
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    let listen = listen.ok_or("--listen is required")?;
    if upstreams.is_empty() {
        return Err("--upstream is required".into());
    }
    Ok(Args {
        listen,
        upstreams,
        workers: workers.max(1),
    })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("hyper-floor: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match std::net::TcpListener::bind(args.listen).and_then(|l| l.set_nonblocking(true).map(|()| l)) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("hyper-floor: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let upstreams: Arc<[SocketAddr]> = args.upstreams.into();
    let next = Arc::new(AtomicUsize::new(0));
    let mut threads = Vec::new();
    for _ in 0..args.workers {
        let (listener, upstreams, next) = match listener.try_clone() {
            Ok(l) => (l, upstreams.clone(), next.clone()),
            Err(e) => {
                eprintln!("hyper-floor: {e}");
                return ExitCode::FAILURE;
            }
        };
        threads.push(std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(worker(listener, upstreams, next))
        }));
    }
    for t in threads {
        if let Ok(Err(e)) = t.join() {
            eprintln!("hyper-floor: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

async fn worker(
    listener: std::net::TcpListener,
    upstreams: Arc<[SocketAddr]>,
    next: Arc<AtomicUsize>,
) -> std::io::Result<()> {
    let listener = TcpListener::from_std(listener)?;
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            continue;
        };
        let upstream = upstreams[next.fetch_add(1, Ordering::Relaxed) % upstreams.len()];
        tokio::spawn(relay(inbound, upstream));
    }
}

/// Serves one inbound connection over one upstream connection of its own.
async fn relay(inbound: TcpStream, upstream: SocketAddr) {
    let _ = inbound.set_nodelay(true);
    let sender = match connect(upstream).await {
        Ok(sender) => Some(sender),
        Err(e) => {
            eprintln!("hyper-floor: {upstream}: {e}");
            None
        }
    };
    // HTTP/1.1 serves one request at a time per connection: the lock is
    // never contended, and is held only to queue a request, not across
    // its answer.
    let sender = Arc::new(Mutex::new(sender));
    let service = service_fn(move |req: Request<Incoming>| {
        let sent = sender
            .lock()
            .ok()
            .and_then(|mut s| s.as_mut().map(|s: &mut SendRequest<Incoming>| s.send_request(req)));
        async move {
            let answer = match sent {
                Some(sent) => sent.await.ok(),
                None => None,
            };
            Ok::<_, Infallible>(answer.map_or_else(bad_gateway, |r| r.map(BodyExt::boxed)))
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(inbound), service)
        .await;
}

async fn connect(upstream: SocketAddr) -> Result<SendRequest<Incoming>, Box<dyn std::error::Error + Send + Sync>> {
    let stream = TcpStream::connect(upstream).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

fn bad_gateway() -> Response<Body> {
    let mut response = Response::new(Empty::<Bytes>::new().map_err(|never| match never {}).boxed());
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}
