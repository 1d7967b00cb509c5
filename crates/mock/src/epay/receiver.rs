//! A shop's notify endpoint: receives the epay notifications payroute (or
//! a gateway) sends, verifies them with the shop's key, answers as a shop
//! does, and keeps everything for the test.
//!
//! Why it is built so: the end-to-end tests of payroute's notifications
//! out need a merchant that judges them independently of payroute's code:
//! the signature is checked over the parameters as received (decoded as a
//! form, `+` a space), with this crate's signing rule, which the
//! interoperability test holds against Python's. It answers `success` only
//! to a valid notification, and `fail` (HTTP 200, as PHP shops do) to an
//! invalid one and to the first `fail_first` of all, so the sender's
//! retries can be tested. It is a real hyper server on its own port; every
//! connection task lives in the accept task's `JoinSet`, so dropping the
//! receiver ends them all.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};

use super::form::{self, Params};
use super::sign::verify;

/// Notification bodies (POSTed forms) are read up to this size.
const MAX_BODY: usize = 64 * 1024;

/// One notification as the shop received it.
#[derive(Clone, Debug)]
pub struct Notified {
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query string as received (still encoded), without its `?`.
    pub query: String,
    /// Every parameter, decoded (query, then a POSTed form's).
    pub params: Params,
    /// Whether `sign` verified with the shop's key (and `sign_type` was
    /// `MD5` or absent).
    pub signature_valid: bool,
    /// Whether the shop answered `success`.
    pub acknowledged: bool,
}

impl Notified {
    /// A parameter as received.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    pub fn out_trade_no(&self) -> Option<&str> {
        self.get("out_trade_no")
    }

    pub fn trade_no(&self) -> Option<&str> {
        self.get("trade_no")
    }

    /// `money` as the text received (`"1"` and `"1.00"` stay apart here;
    /// compare with [`super::fen`]).
    pub fn money(&self) -> Option<&str> {
        self.get("money")
    }

    pub fn trade_status(&self) -> Option<&str> {
        self.get("trade_status")
    }

    pub fn param(&self) -> Option<&str> {
        self.get("param")
    }
}

struct Shared {
    key: String,
    fail_first: usize,
    seen: Mutex<Vec<Notified>>,
    arrived: Notify,
}

impl Shared {
    /// A poisoned lock only means a test panicked holding it; the list is whole.
    fn seen(&self) -> MutexGuard<'_, Vec<Notified>> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running notify endpoint; dropping it stops the server.
pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    /// Listens on `127.0.0.1:0` for notifications signed with `key`. The
    /// first `fail_first` requests (valid or not) are answered `fail`.
    pub async fn start(key: &str, fail_first: usize) -> std::io::Result<Receiver> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            key: key.to_owned(),
            fail_first,
            seen: Mutex::default(),
            arrived: Notify::new(),
        });
        let task = tokio::spawn(accept(listener, shared.clone()));
        Ok(Receiver { addr, shared, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR/notify` (any path is served).
    pub fn url(&self) -> String {
        format!("http://{}/notify", self.addr)
    }

    /// Every notification received, oldest first.
    pub fn notifications(&self) -> Vec<Notified> {
        self.shared.seen().clone()
    }

    /// Notifications received.
    pub fn count(&self) -> usize {
        self.shared.seen().len()
    }

    /// Notifications whose signature verified.
    pub fn valid(&self) -> usize {
        self.shared.seen().iter().filter(|n| n.signature_valid).count()
    }

    /// Notifications answered `success`.
    pub fn acknowledged(&self) -> usize {
        self.shared.seen().iter().filter(|n| n.acknowledged).count()
    }

    /// Waits until `n` notifications have arrived, at most `timeout`;
    /// whether they did.
    pub async fn wait(&self, n: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Registered before the check, so an arrival in between still wakes it.
            let arrived = self.shared.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if self.count() >= n {
                return true;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return self.count() >= n;
            }
        }
    }
}

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve(stream, shared.clone()));
                }
                // Out of descriptors or similar: pause rather than spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve(stream: TcpStream, shared: Arc<Shared>) {
    let service = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, std::convert::Infallible>(receive(&shared, req).await) }
    });
    // A client hanging up mid-request is no concern of the test's.
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

async fn receive(shared: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let mut params = form::parse(parts.uri.query().unwrap_or_default().as_bytes());
    // A body that cannot be read counts as empty: the signature then decides.
    if let Ok(body) = Limited::new(body, MAX_BODY).collect().await {
        params.extend(form::parse(&body.to_bytes()));
    }
    let signature_valid = verify(form::pairs(&params), &shared.key);
    let acknowledged = {
        let mut seen = shared.seen();
        let acknowledged = signature_valid && seen.len() >= shared.fail_first;
        seen.push(Notified {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().unwrap_or_default().to_owned(),
            params,
            signature_valid,
            acknowledged,
        });
        acknowledged
    };
    shared.arrived.notify_waiters();
    let mut resp = Response::new(Full::new(Bytes::from_static(if acknowledged {
        b"success"
    } else {
        b"fail"
    })));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}
