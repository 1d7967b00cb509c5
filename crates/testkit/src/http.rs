//! HTTP from a test: one exchange at a time, every answer read whole and
//! timed, and raw bytes for requests the hyper client would not produce.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// Upper bound for any single HTTP exchange made by a test.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// An answer, read whole.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// From sending the request to the end of the body.
    pub elapsed: Duration,
}

impl Resp {
    /// A header's value.
    ///
    /// # Panics
    /// If it is not ASCII: payroute's own headers always are.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("header is not ASCII").to_string())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The body as JSON.
    ///
    /// # Panics
    /// If it is not JSON.
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
    /// `X-Payroute-Trade-No`: the payment's trade number.
    pub fn trade_no(&self) -> Option<String> {
        self.header("x-payroute-trade-no")
    }
    /// `X-Payroute-Ambiguous`: the channels whose attempt left the
    /// payment's fate unknown.
    pub fn ambiguous(&self) -> Option<String> {
        self.header("x-payroute-ambiguous")
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

/// Counts responses by `X-Payroute-Channel`.
pub fn count_channels(resps: &[Resp]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for r in resps {
        *m.entry(r.channel().unwrap_or_else(|| "<none>".into())).or_insert(0) += 1;
    }
    m
}

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub(crate) fn http_client() -> HttpClient {
    // No idle pooling: every request gets a fresh connection, so a
    // connection closed by the server between requests can never surface as
    // a spurious client error.
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http()
}

/// One HTTP exchange.
///
/// # Panics
/// On a transport error or no answer within 30 s.
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

/// Writes raw bytes to `addr` and returns everything read back until the
/// server closes the connection (or 10 s pass). For requests the hyper
/// client would not produce (chunked bodies, broken framing).
///
/// # Panics
/// If it cannot connect.
pub async fn raw_http(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    // The server may answer and close before reading everything: ignore
    // write errors, the answer is what matters.
    let _ = s.write_all(request).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}
