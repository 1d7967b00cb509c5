//! One pooled HTTP client per channel, and the outcome of one attempt.
//!
//! A client per channel (not one shared) keeps each channel's connect timeout
//! and connection pool its own: a slow acquirer cannot hold the sockets
//! another needs. The response is read whole inside the attempt's timeout:
//! payment answers are small, the timeout then covers the full exchange, and
//! a complete body is what the merchant (and later a replay) gets.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::config::ChannelConfig;
use crate::error::Body;

/// Larger answers from an acquirer are treated as a broken exchange.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// What one attempt established about the request.
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

#[derive(Clone)]
pub(crate) struct Upstream {
    client: Client<HttpConnector, Body>,
    connect_timeout: Duration,
}

impl Upstream {
    pub fn new(channel: &ChannelConfig) -> Upstream {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(channel.connect_timeout));
        connector.set_nodelay(true);
        connector.set_keepalive(Some(Duration::from_secs(60)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .build(connector);
        Upstream {
            client,
            connect_timeout: channel.connect_timeout,
        }
    }

    /// Whether this client can serve `channel` after a reload (keeps the pool).
    pub fn fits(&self, channel: &ChannelConfig) -> bool {
        self.connect_timeout == channel.connect_timeout
    }

    pub async fn send(&self, request: Request<Body>, timeout: Duration) -> AttemptResult {
        let exchange = async {
            let response = match self.client.request(request).await {
                Ok(r) => r,
                // hyper-util reports "connect" only when no byte of the request left.
                Err(e) if e.is_connect() => return AttemptResult::ConnectFailed(error_chain(&e)),
                Err(e) => return AttemptResult::Broken(error_chain(&e)),
            };
            let (parts, body) = response.into_parts();
            match Limited::new(body, MAX_RESPONSE_BYTES).collect().await {
                Ok(body) => AttemptResult::Answered {
                    status: parts.status,
                    headers: parts.headers,
                    body: body.to_bytes(),
                },
                Err(e) => AttemptResult::Broken(format!("reading response: {e}")),
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or(AttemptResult::TimedOut)
    }
}

/// The error and its causes on one line ("client error (Connect): tcp connect error: Connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}
