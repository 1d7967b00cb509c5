//! An acquirer that answers with headers of a test's choosing, for what the
//! fake acquirer cannot say: its replies choose status, body and timing,
//! never headers. Payroute must keep some of an acquirer's headers from the
//! merchant (its own `X-Payroute-*` ones), and only a real answer carrying
//! them can show that it does.
//!
//! Deliberately bare: one hyper HTTP/1.1 server, every request paid with
//! the same answer, only a count kept.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::task::JoinHandle;

/// A running [`headers_acquirer`]; stops when dropped.
pub struct HeadersAcquirer {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl HeadersAcquirer {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many requests it answered.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for HeadersAcquirer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An acquirer on loopback answering every request `200
/// {"status":"paid"}` with `headers` added.
///
/// # Panics
/// If it cannot listen, or a header is not valid HTTP: the test is wrong.
pub async fn headers_acquirer(headers: &[(&str, &str)]) -> HeadersAcquirer {
    let headers: Arc<Vec<(HeaderName, HeaderValue)>> = Arc::new(
        headers
            .iter()
            .map(|(k, v)| {
                let name = HeaderName::from_bytes(k.as_bytes()).expect("a valid header name");
                (name, HeaderValue::from_str(v).expect("a valid header value"))
            })
            .collect(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the headers acquirer");
    let addr = listener.local_addr().expect("bound address");
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let headers = headers.clone();
            let hits = counted.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_req: http::Request<hyper::body::Incoming>| {
                    hits.fetch_add(1, Ordering::SeqCst);
                    let mut resp = Response::new(Full::new(Bytes::from_static(br#"{"status":"paid"}"#)));
                    resp.headers_mut()
                        .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                    for (k, v) in headers.iter() {
                        resp.headers_mut().append(k.clone(), v.clone());
                    }
                    async move { Ok::<_, std::convert::Infallible>(resp) }
                });
                // A connection payroute drops is not this acquirer's concern.
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    HeadersAcquirer { addr, hits, task }
}
