//! One pooled HTTP client per channel, and the outcome of one attempt.
//!
//! A client per channel (not one shared) keeps each channel's connect timeout
//! and connection pool its own: a slow acquirer cannot hold the sockets
//! another needs. The response is read whole inside the attempt's timeout:
//! payment answers are small, the timeout then covers the full exchange, and
//! a complete body is what the merchant (and later a replay) gets.
//!
//! `h2c = true` channels speak HTTP/2 with prior knowledge: hyper-util's
//! pool then keeps one connection per acquirer and multiplexes payments over
//! it, so concurrent payments share reads and writes (fewer syscalls on both
//! ends) instead of each holding a socket. The outcome classes are the same
//! as for HTTP/1: no connection is `ConnectFailed`; once the request may
//! have left, a failure is `Broken` or `TimedOut` (ambiguous).
//!
//! https channels connect through [`crate::tls::client::Connector`]: the TLS
//! handshake is part of connecting, so a certificate the proxy refuses (or an
//! acquirer refusing the proxy's client certificate) is `ConnectFailed` —
//! nothing was sent, failing over is safe — with the reason in its message.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::uri::Scheme;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::pool::{error_chain, Http1Pool, Sent};
use crate::config::ChannelConfig;
use crate::error::Body;
use crate::runtime::worker_slot;
use crate::tls::client::{refused_handshake, Connector, UpstreamTls};

/// Larger answers from an acquirer are treated as a broken exchange.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// What one attempt established about the request: the facts only. What
/// they mean for a payment is `proxy::attempt::verdict`'s to say.
#[derive(Debug)]
pub(crate) enum AttemptResult {
    /// The acquirer answered (any status).
    Answered {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    },
    /// The connection was never established: nothing was sent.
    ConnectFailed(String),
    /// The attempt's time ran out; the acquirer may have the request.
    TimedOut,
    /// The exchange broke after the request may have been written.
    Broken(String),
}

/// One line for logs and for a `502 upstream_failed` message: what happened,
/// never the acquirer's body.
impl std::fmt::Display for AttemptResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttemptResult::Answered { status, .. } => write!(f, "acquirer answered {status}"),
            AttemptResult::ConnectFailed(e) => write!(f, "connect failed: {e}"),
            AttemptResult::TimedOut => f.write_str("timed out"),
            AttemptResult::Broken(e) => write!(f, "exchange broken: {e}"),
        }
    }
}

/// A channel's connections: one pool per payment worker (a worker's
/// connections are driven by that worker only; see `crate::runtime`), and
/// one for everything else (reversals started off the workers, tests).
/// Plain HTTP/1 channels use [`Http1Pool`], on hyper's own connections;
/// TLS and `h2c` channels use hyper-util's client, which negotiates h2 by
/// ALPN and multiplexes it, and whose errors [`refused_handshake`] reads.
#[derive(Clone)]
pub(crate) struct Upstream {
    transport: Transport,
    connect_timeout: Duration,
    tls: Option<UpstreamTls>,
    h2c: bool,
}

#[derive(Clone)]
enum Transport {
    Http1(Arc<Http1Pool>),
    Hyper(Arc<[Client<Connector, Body>]>),
}

impl Upstream {
    /// `workers`: how many payment workers run (each gets a pool of its own).
    pub fn new(channel: &ChannelConfig, workers: usize) -> Upstream {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(channel.connect_timeout));
        connector.set_nodelay(true);
        connector.set_keepalive(Some(Duration::from_secs(60)));
        // connect_timeout bounds TCP connect and TLS handshake together.
        let connector = Connector::new(connector, channel.tls.as_ref(), channel.connect_timeout);
        let http1 = (channel.scheme == Scheme::HTTP && !channel.h2c)
            .then(|| Http1Pool::new(connector.clone(), channel.connect_timeout, &channel.origin, workers))
            .flatten();
        let transport = match http1 {
            Some(pool) => Transport::Http1(Arc::new(pool)),
            None => {
                let mut builder = Client::builder(TokioExecutor::new());
                builder
                    .pool_idle_timeout(Duration::from_secs(90))
                    .pool_max_idle_per_host(1024)
                    .http2_only(channel.h2c);
                Transport::Hyper((0..=workers).map(|_| builder.build(connector.clone())).collect())
            }
        };
        Upstream {
            transport,
            connect_timeout: channel.connect_timeout,
            tls: channel.tls.clone(),
            h2c: channel.h2c,
        }
    }

    /// Whether this client can serve `channel` after a reload (keeps the
    /// pool): same timeouts, the same TLS material, the same protocol, and
    /// for an HTTP/1 pool (which knows one origin) the same origin.
    pub fn fits(&self, channel: &ChannelConfig) -> bool {
        let transport = match &self.transport {
            Transport::Http1(pool) => channel.scheme == Scheme::HTTP && pool.serves(&channel.origin),
            Transport::Hyper(_) => channel.scheme != Scheme::HTTP || channel.h2c,
        };
        transport
            && self.connect_timeout == channel.connect_timeout
            && self.tls == channel.tls
            && self.h2c == channel.h2c
    }

    /// Whether `self` and `other` hold the same connections (a reload kept them).
    #[cfg(test)]
    pub fn same_pool(&self, other: &Upstream) -> bool {
        match (&self.transport, &other.transport) {
            (Transport::Http1(a), Transport::Http1(b)) => Arc::ptr_eq(a, b),
            (Transport::Hyper(a), Transport::Hyper(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    pub async fn send(&self, request: Request<Body>, timeout: Duration) -> AttemptResult {
        let exchange = async {
            match &self.transport {
                Transport::Http1(pool) => match pool.send(request).await {
                    Sent::Answered(response, connection) => {
                        let answer = read(response).await;
                        if matches!(answer, AttemptResult::Answered { .. }) {
                            pool.give_back(connection);
                        }
                        answer
                    }
                    Sent::ConnectFailed(e) => AttemptResult::ConnectFailed(e),
                    Sent::Broken(e) => AttemptResult::Broken(e),
                },
                Transport::Hyper(clients) => {
                    let client = &clients[worker_slot(clients.len())];
                    match client.request(request).await {
                        Ok(response) => read(response).await,
                        // hyper-util reports "connect" only when no byte of the request left.
                        Err(e) if e.is_connect() => AttemptResult::ConnectFailed(error_chain(&e)),
                        // TLS 1.3: a refused client certificate arrives after the request was
                        // written, but the acquirer never read it (see crate::tls::client).
                        Err(e) if refused_handshake(&e).is_some() => AttemptResult::ConnectFailed(format!(
                            "TLS handshake refused by the acquirer: {}",
                            error_chain(&e)
                        )),
                        Err(e) => AttemptResult::Broken(error_chain(&e)),
                    }
                }
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or(AttemptResult::TimedOut)
    }
}

/// The answer, read whole (a body cut short is a broken exchange).
async fn read(response: Response<Incoming>) -> AttemptResult {
    let (parts, body) = response.into_parts();
    match Limited::new(body, MAX_RESPONSE_BYTES).collect().await {
        Ok(body) => AttemptResult::Answered {
            status: parts.status,
            headers: parts.headers,
            body: compact(body.to_bytes()),
        },
        Err(e) => AttemptResult::Broken(format!("reading response: {e}")),
    }
}

/// The body in an allocation of its own.
///
/// hyper hands out a body as a slice of the connection's read buffer (8 KiB
/// and more), and a `Bytes` slice keeps its whole buffer alive. The answer
/// outlives the exchange — it is stored for idempotent replays — so a kept
/// slice would hold kilobytes per remembered payment, times every record in
/// the store (BENCHMARKS.md has the figures). One copy of a payment-sized
/// body is far cheaper than that.
fn compact(body: Bytes) -> Bytes {
    Bytes::copy_from_slice(&body)
}
