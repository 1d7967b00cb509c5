//! One delivery of a notification to a merchant, over HTTP.
//!
//! The courier knows nothing of retries or the journal (the outbox owns
//! both); it sends one letter and says whether the merchant took it. What it
//! guards against is the merchant's server: every exchange — connect, TLS,
//! request, the whole answer — fits in `[notify] timeout_ms`; an answer is
//! read to at most [`MAX_ANSWER_BYTES`]; redirects are not followed (a 3xx
//! is a refusal, so a notify_url cannot bounce payroute to an internal
//! address); nothing the merchant does can hold a worker longer than the
//! timeout, so one hanging shop never delays another's notifications.
//!
//! Taken means: JSON merchants, any 2xx; epay merchants, an answer whose
//! body contains `success` in any case (what epay gateways accept).

use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, USER_AGENT};
use http::{HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::tls::client::{Connector, UpstreamTls, UpstreamTlsError};

/// A merchant's answer beyond this is not read further (and not taken).
const MAX_ANSWER_BYTES: usize = 16 << 10;

/// What to send, fully built and signed.
#[derive(Debug, Clone)]
pub(crate) enum Letter {
    /// JSON merchants: `POST url`, the event as body, `X-Payroute-Signature`.
    Json { url: Uri, body: Bytes, signature: String },
    /// epay merchants: `GET url?params` (already signed and encoded in `url`).
    Epay { url: Uri },
}

/// Whether the merchant took the letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Receipt {
    Taken,
    /// Not taken, with why (for the operator: status, timeout, connect error).
    Refused(String),
}

/// An HTTP client for merchants' notify URLs (public roots for https).
#[derive(Clone)]
pub(crate) struct Courier {
    client: Client<Connector, Full<Bytes>>,
    timeout: Duration,
}

impl Courier {
    pub fn new(timeout: Duration) -> Result<Courier, UpstreamTlsError> {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(timeout));
        http.set_nodelay(true);
        let tls = UpstreamTls::build(None, None)?;
        let connector = Connector::new(http, Some(&tls), timeout);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            // As many as the outbox sends one merchant at once: a backlog
            // drained at full speed reuses its connections.
            .pool_max_idle_per_host(128)
            .build(connector);
        Ok(Courier { client, timeout })
    }

    /// The most one delivery takes.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub async fn deliver(&self, letter: &Letter) -> Receipt {
        let request = match build(letter) {
            Ok(r) => r,
            Err(e) => return Receipt::Refused(format!("cannot build the request: {e}")),
        };
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| format!("request failed: {e}"))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| format!("reading the answer: {e}"))?
                .to_bytes();
            Ok::<_, String>((status, body))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => Receipt::Refused(format!("no answer within {} ms", self.timeout.as_millis())),
            Ok(Err(e)) => Receipt::Refused(e),
            Ok(Ok((status, body))) => judge(letter, status, &body),
        }
    }
}

fn build(letter: &Letter) -> Result<Request<Full<Bytes>>, http::Error> {
    let agent = HeaderValue::from_static(concat!("payroute/", env!("CARGO_PKG_VERSION")));
    match letter {
        Letter::Json { url, body, signature } => Request::builder()
            .method(Method::POST)
            .uri(url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, agent)
            .header("x-payroute-signature", signature.as_str())
            .body(Full::new(body.clone())),
        Letter::Epay { url } => Request::builder()
            .method(Method::GET)
            .uri(url.clone())
            .header(USER_AGENT, agent)
            .body(Full::new(Bytes::new())),
    }
}

fn judge(letter: &Letter, status: http::StatusCode, body: &[u8]) -> Receipt {
    match letter {
        Letter::Json { .. } if status.is_success() => Receipt::Taken,
        Letter::Json { .. } => Receipt::Refused(format!("merchant answered {status}")),
        Letter::Epay { .. } if contains_success(body) => Receipt::Taken,
        Letter::Epay { .. } => Receipt::Refused(format!("merchant answered {status} without \"success\"")),
    }
}

fn contains_success(body: &[u8]) -> bool {
    body.windows(7).any(|w| w.eq_ignore_ascii_case(b"success"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use hyper::body::Incoming;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpListener;

    /// A merchant that answers every request with `status` and `body` after
    /// `delay`, counting requests and keeping the last signature header.
    async fn merchant(status: u16, body: &'static str, delay: Duration) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(AtomicUsize::new(0));
        let count = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let count = count.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |_req: Request<Incoming>| {
                        let count = count.clone();
                        async move {
                            count.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(delay).await;
                            let mut r = http::Response::new(Full::new(Bytes::from_static(body.as_bytes())));
                            *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
                            if status == 302 {
                                r.headers_mut()
                                    .insert("location", HeaderValue::from_static("http://10.0.0.1/"));
                            }
                            Ok::<_, Infallible>(r)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        (addr, seen)
    }

    fn json_letter(addr: SocketAddr) -> Letter {
        Letter::Json {
            url: format!("http://{addr}/hook").parse().unwrap(),
            body: Bytes::from_static(b"{}"),
            signature: "t=1,v1=00".into(),
        }
    }

    fn epay_letter(addr: SocketAddr) -> Letter {
        Letter::Epay {
            url: format!("http://{addr}/notify.php?pid=1&trade_status=TRADE_SUCCESS")
                .parse()
                .unwrap(),
        }
    }

    #[tokio::test]
    async fn json_merchants_take_a_2xx_only() {
        let courier = Courier::new(Duration::from_secs(2)).unwrap();
        let (ok, seen) = merchant(204, "", Duration::ZERO).await;
        assert_eq!(courier.deliver(&json_letter(ok)).await, Receipt::Taken);
        assert_eq!(seen.load(Ordering::SeqCst), 1);
        for status in [500, 404, 302] {
            let (addr, _) = merchant(status, "success", Duration::ZERO).await;
            let receipt = courier.deliver(&json_letter(addr)).await;
            assert!(
                matches!(&receipt, Receipt::Refused(why) if why.contains(&status.to_string())),
                "{receipt:?}"
            );
        }
    }

    #[tokio::test]
    async fn epay_merchants_take_it_when_the_body_says_success() {
        let courier = Courier::new(Duration::from_secs(2)).unwrap();
        let (ok, _) = merchant(200, "SUCCESS", Duration::ZERO).await;
        assert_eq!(courier.deliver(&epay_letter(ok)).await, Receipt::Taken);
        let (fail, _) = merchant(200, "fail", Duration::ZERO).await;
        assert!(matches!(courier.deliver(&epay_letter(fail)).await, Receipt::Refused(_)));
    }

    #[tokio::test]
    async fn a_hanging_or_absent_merchant_costs_at_most_the_timeout() {
        let courier = Courier::new(Duration::from_millis(200)).unwrap();
        let (slow, _) = merchant(200, "", Duration::from_secs(30)).await;
        let started = std::time::Instant::now();
        let receipt = courier.deliver(&json_letter(slow)).await;
        assert!(
            matches!(&receipt, Receipt::Refused(why) if why.contains("no answer")),
            "{receipt:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        // Nothing listens on a port just freed.
        let gone = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        assert!(matches!(courier.deliver(&json_letter(gone)).await, Receipt::Refused(_)));
    }
}
