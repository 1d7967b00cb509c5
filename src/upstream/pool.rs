//! A channel's plain HTTP/1 connections to its acquirer: one idle stack per
//! payment worker, on hyper's own `client::conn`.
//!
//! Why not hyper-util's pooled client for these, as for TLS and h2 channels:
//! per payment it checks a connection out of a pool shared under a lock,
//! wraps it, and spawns a task whose only job is to wait until the
//! connection is idle again and put it back (`on_idle`) — an allocation, a
//! task and a scheduling round per payment, about 5 % of a payment's
//! instructions (BENCHMARKS.md). Here a worker's connections are driven by
//! that worker only (`crate::runtime`), so its idle stack is its own: a
//! checkout is a pop behind an uncontended mutex, and a connection goes back
//! when the answer has been read whole. A connection not yet ready for its
//! next request (its task has not seen the end of the last exchange) is
//! waited for at the next checkout, on the same worker, instead.
//!
//! What this pool knows of a request's fate it says exactly. hyper hands a
//! request back when it was never written ([`TrySendError::take_message`]):
//! the pooled connection was closed meanwhile (the keep-alive race). The
//! request then goes out on the next connection: safe, it never left. On a
//! connection opened for it, that is a connect failure — nothing was sent —
//! never an ambiguous attempt. Anything after the request may have been
//! written is [`Sent::Broken`].
//!
//! [`TrySendError::take_message`]: hyper::client::conn::TrySendError::take_message

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use http::uri::{Authority, PathAndQuery};
use http::{header, HeaderValue, Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use tower::ServiceExt;

use crate::error::Body;
use crate::runtime::worker_slot;
use crate::tls::client::Connector;

/// An idle connection older than this is closed rather than reused (the
/// acquirer's own keep-alive timeout has most likely closed it already).
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per worker; more are closed when they come back.
const MAX_IDLE: usize = 1024;

/// The connections of one channel (one origin).
pub(crate) struct Http1Pool {
    connector: Connector,
    /// The channel's `connect_timeout_ms`: also how long a pooled
    /// connection may take to be ready before it is given up for another.
    connect_timeout: Duration,
    /// What a connection is opened to: `http://origin/`.
    origin: Uri,
    /// The `Host` header of every request, unless the channel sets its own.
    host: HeaderValue,
    /// One stack per worker, and the last for callers off the workers
    /// (reversals started on the main runtime, tests). Most recently used
    /// on top: the warmest connection goes first, the coldest ages out.
    idle: Box<[Mutex<VecDeque<Idle>>]>,
}

struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
}

/// A connection checked out for one exchange, and whether it was pooled
/// (a reused connection that turns out closed is no news about the acquirer).
struct Lease {
    sender: SendRequest<Body>,
    reused: bool,
}

/// What became of a request given to [`Http1Pool::send`].
pub(crate) enum Sent {
    /// The acquirer answered; `Returned` puts the connection back once the
    /// body has been read whole.
    Answered(Response<Incoming>, Returned),
    /// No connection carried the request: nothing was sent.
    ConnectFailed(String),
    /// The exchange failed after the request may have been written.
    Broken(String),
}

/// The connection of an answered exchange, waiting for its body to be read.
pub(crate) struct Returned(SendRequest<Body>);

impl Http1Pool {
    /// `workers`: how many payment workers run. `None` when `origin` has no
    /// host a `Host` header can carry (validation refuses such urls).
    pub fn new(
        connector: Connector,
        connect_timeout: Duration,
        origin: &Authority,
        workers: usize,
    ) -> Option<Http1Pool> {
        let host = HeaderValue::from_str(origin.as_str()).ok()?;
        let origin = Uri::builder()
            .scheme("http")
            .authority(origin.clone())
            .path_and_query("/")
            .build()
            .ok()?;
        let idle = (0..=workers).map(|_| Mutex::new(VecDeque::new())).collect();
        Some(Http1Pool {
            connector,
            connect_timeout,
            origin,
            host,
            idle,
        })
    }

    /// Whether this pool connects where `origin` says.
    pub fn serves(&self, origin: &Authority) -> bool {
        self.origin.authority() == Some(origin)
    }

    /// The calling worker's idle stack. A panic while it was held left
    /// it whole (a push or a pop), so a poisoned lock is simply taken.
    fn stack(&self) -> MutexGuard<'_, VecDeque<Idle>> {
        self.idle[worker_slot(self.idle.len())]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sends `request` (absolute-form, to this pool's origin) on a pooled
    /// connection or a new one; see the module's doc for what each outcome
    /// means.
    pub async fn send(&self, mut request: Request<Body>) -> Sent {
        self.origin_form(&mut request);
        loop {
            let mut lease = match self.checkout().await {
                Ok(lease) => lease,
                Err(e) => return Sent::ConnectFailed(e),
            };
            match lease.sender.try_send_request(request).await {
                Ok(response) => return Sent::Answered(response, Returned(lease.sender)),
                Err(mut e) => match e.take_message() {
                    // Never written: on to the next connection...
                    Some(unsent) if lease.reused => request = unsent,
                    // ...but a new connection that will not carry it is
                    // as good as none.
                    Some(_) => {
                        return Sent::ConnectFailed(format!(
                            "connection closed before the request was written: {}",
                            error_chain(e.error())
                        ))
                    }
                    None => return Sent::Broken(error_chain(e.error())),
                },
            }
        }
    }

    /// The request as an HTTP/1 origin server expects it: the path alone
    /// on the request line, the authority in `Host` (hyper's connection
    /// writes the uri as it is given; hyper-util's client did this).
    fn origin_form(&self, request: &mut Request<Body>) {
        let path = request
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        *request.uri_mut() = Uri::from(path);
        if !request.headers().contains_key(header::HOST) {
            request.headers_mut().insert(header::HOST, self.host.clone());
        }
    }

    /// A connection ready for a request: the most recent idle one that is
    /// still open, or a new one.
    async fn checkout(&self) -> Result<Lease, String> {
        loop {
            let idle = self.stack().pop_back();
            let Some(Idle { mut sender, .. }) = idle else { break };
            // Not ready yet: its task has the end of the last exchange to
            // see, on this worker, soon. Closed: the acquirer let it go.
            // Bounded, so that a connection that never gets ready costs a
            // connect's time and is then given up — nothing was sent on it
            // — instead of running out the attempt's time, which would
            // read as an ambiguous attempt.
            if sender.is_closed() {
                continue;
            }
            if let Ok(Ok(())) = tokio::time::timeout(self.connect_timeout, sender.ready()).await {
                return Ok(Lease { sender, reused: true });
            }
        }
        let io = self
            .connector
            .clone()
            .oneshot(self.origin.clone())
            .await
            .map_err(|e| error_chain(&e))?;
        let (sender, connection) = http1::handshake(io).await.map_err(|e| error_chain(&e))?;
        // Driven by the worker that opened it, the only one that uses it.
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        Ok(Lease { sender, reused: false })
    }

    /// Puts an answered exchange's connection back on the calling worker's
    /// stack, closing the oldest idle one if it aged out or the stack is full.
    pub fn give_back(&self, Returned(sender): Returned) {
        if sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut stack = self.stack();
        while stack
            .front()
            .is_some_and(|oldest| stack.len() >= MAX_IDLE || now.duration_since(oldest.since) > IDLE_TIMEOUT)
        {
            stack.pop_front();
        }
        stack.push_back(Idle { sender, since: now });
    }
}

/// The error and its causes on one line ("client error (Connect): tcp connect error: Connection refused").
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    //! Against a raw TCP acquirer whose every byte and connection is
    //! counted, so each test can say how many requests really arrived.

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::connect::HttpConnector;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// What the fake acquirer does with each request it reads whole.
    #[derive(Clone, Copy)]
    enum Acquirer {
        /// Answers 200 and keeps the connection.
        KeepAlive,
        /// Answers 200 and closes the connection.
        AnswerThenClose,
        /// Reads the request, then closes without a word.
        CloseUnanswered,
    }

    #[derive(Default)]
    struct Seen {
        connections: AtomicUsize,
        requests: AtomicUsize,
        /// The last request's head, as it arrived.
        head: std::sync::Mutex<String>,
        /// The tasks serving the connections: aborted, their sockets close.
        serving: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    }

    impl Seen {
        /// The acquirer closes every connection it has, and the closes
        /// have reached the other end.
        async fn hang_up(&self) {
            let tasks: Vec<_> = self.serving.lock().unwrap().drain(..).collect();
            for task in tasks {
                task.abort();
                let _ = task.await;
            }
        }
    }

    async fn acquirer(mode: Acquirer) -> (Authority, Arc<Seen>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let counted = seen.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                counted.connections.fetch_add(1, Ordering::SeqCst);
                let task = tokio::spawn(serve(socket, mode, counted.clone()));
                counted.serving.lock().unwrap().push(task);
            }
        });
        (addr.to_string().parse().unwrap(), seen)
    }

    /// Appends what the socket has to `buf`; `false` once it is closed.
    async fn read_more(socket: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
        matches!(socket.read_buf(buf).await, Ok(n) if n > 0)
    }

    async fn serve(mut socket: TcpStream, mode: Acquirer, seen: Arc<Seen>) {
        let mut buf = Vec::new();
        loop {
            // One request: its head, then as many body bytes as it declares.
            let head_end = loop {
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
                if !read_more(&mut socket, &mut buf).await {
                    return;
                }
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            while buf.len() < head_end + length {
                if !read_more(&mut socket, &mut buf).await {
                    return;
                }
            }
            buf.drain(..head_end + length);
            seen.requests.fetch_add(1, Ordering::SeqCst);
            *seen.head.lock().unwrap() = head;
            let answer: &[u8] = match mode {
                Acquirer::CloseUnanswered => return,
                Acquirer::KeepAlive => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
                Acquirer::AnswerThenClose => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
            };
            if socket.write_all(answer).await.is_err() || matches!(mode, Acquirer::AnswerThenClose) {
                return;
            }
        }
    }

    fn pool(origin: &Authority) -> Http1Pool {
        let connector = Connector::new(HttpConnector::new(), None, Duration::from_secs(1));
        Http1Pool::new(connector, Duration::from_secs(1), origin, 1).unwrap()
    }

    fn payment(origin: &Authority) -> Request<Body> {
        Request::post(format!("http://{origin}/base/v1/payments?x=1"))
            .body(Full::new(Bytes::from_static(b"{\"amount\":1}")))
            .unwrap()
    }

    /// Sends one request and reads the answer whole, as `Upstream::send`
    /// does; the body, or what else happened.
    async fn exchange(pool: &Http1Pool, origin: &Authority) -> Result<Bytes, String> {
        match pool.send(payment(origin)).await {
            Sent::Answered(response, connection) => {
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| e.to_string())?
                    .to_bytes();
                pool.give_back(connection);
                Ok(body)
            }
            Sent::ConnectFailed(e) => Err(format!("connect failed: {e}")),
            Sent::Broken(e) => Err(format!("broken: {e}")),
        }
    }

    #[tokio::test]
    async fn requests_go_in_origin_form_with_the_host_and_reuse_one_connection() {
        let (origin, seen) = acquirer(Acquirer::KeepAlive).await;
        let pool = pool(&origin);
        for _ in 0..5 {
            assert_eq!(exchange(&pool, &origin).await.unwrap(), "ok");
        }
        assert_eq!(seen.requests.load(Ordering::SeqCst), 5);
        assert_eq!(seen.connections.load(Ordering::SeqCst), 1, "kept alive and reused");
        let head = seen.head.lock().unwrap().clone();
        assert!(head.starts_with("POST /base/v1/payments?x=1 HTTP/1.1\r\n"), "{head}");
        assert!(
            head.to_ascii_lowercase().contains(&format!("host: {origin}\r\n")),
            "{head}"
        );
    }

    #[tokio::test]
    async fn a_connection_the_acquirer_closed_is_replaced_and_the_request_sent_once() {
        let (origin, seen) = acquirer(Acquirer::AnswerThenClose).await;
        let pool = pool(&origin);
        for _ in 0..3 {
            assert_eq!(exchange(&pool, &origin).await.unwrap(), "ok");
        }
        assert_eq!(seen.requests.load(Ordering::SeqCst), 3, "each request arrived once");
        assert_eq!(seen.connections.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn an_idle_connection_the_acquirer_closed_carries_nothing_and_is_skipped() {
        let (origin, seen) = acquirer(Acquirer::KeepAlive).await;
        let pool = pool(&origin);
        assert_eq!(exchange(&pool, &origin).await.unwrap(), "ok");
        // The acquirer lets the idle connection go, and the pool has not
        // heard yet (the connection looks open and ready): hyper hands the
        // request back unwritten, and it goes out once on a new connection.
        seen.hang_up().await;
        assert_eq!(exchange(&pool, &origin).await.unwrap(), "ok");
        assert_eq!(seen.requests.load(Ordering::SeqCst), 2);
        assert_eq!(seen.connections.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_request_the_acquirer_read_and_left_unanswered_is_broken_not_resent() {
        let (origin, seen) = acquirer(Acquirer::CloseUnanswered).await;
        let pool = pool(&origin);
        let result = exchange(&pool, &origin).await;
        assert!(result.as_ref().is_err_and(|e| e.starts_with("broken")), "{result:?}");
        assert_eq!(seen.requests.load(Ordering::SeqCst), 1, "sent once, never again");
        assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn no_acquirer_listening_is_a_connect_failure() {
        let origin: Authority = format!("127.0.0.1:{}", payroute_testkit::refused_port())
            .parse()
            .unwrap();
        let result = exchange(&pool(&origin), &origin).await;
        assert!(
            result.as_ref().is_err_and(|e| e.starts_with("connect failed")),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn idle_connections_age_out() {
        let (origin, seen) = acquirer(Acquirer::KeepAlive).await;
        let pool = pool(&origin);
        // Two exchanges at once: two connections, both idle after.
        let (a, b) = tokio::join!(pool.send(payment(&origin)), pool.send(payment(&origin)));
        for sent in [a, b] {
            let Sent::Answered(response, connection) = sent else {
                panic!("not answered")
            };
            response.into_body().collect().await.unwrap();
            pool.give_back(connection);
        }
        assert_eq!(seen.connections.load(Ordering::SeqCst), 2);
        assert_eq!(pool.stack().len(), 2);
        // The colder one ages out: closed when the warmer comes back.
        pool.stack().front_mut().unwrap().since -= IDLE_TIMEOUT + Duration::from_secs(1);
        assert_eq!(exchange(&pool, &origin).await.unwrap(), "ok");
        assert_eq!(pool.stack().len(), 1);
        assert_eq!(seen.connections.load(Ordering::SeqCst), 2, "the warm one was reused");
    }
}
