//! One connection's life on either listener: how long it may sit idle or
//! dribble a request's head, and how many payment connections may be open.
//!
//! hyper 1.x has no idle timeout for HTTP/1, and its header-read timeout
//! (which needs a timer) starts as soon as it waits for a head, so it would
//! also be the keep-alive idle time. Both are kept here instead, by one
//! watchdog per connection reading an [`Activity`] that the connection's
//! socket ([`Watched`]) and its service ([`Activity::begin`]) keep current:
//!
//! - **idle**: no request open and nothing new for `idle_timeout` → the
//!   connection is shut down gracefully (HTTP/1: closed; HTTP/2: GOAWAY);
//! - **head** (HTTP/1): the first byte of a request arrived `header_timeout`
//!   ago and its head is still not complete → the connection is dropped,
//!   unanswered (there is no request to answer yet: a byte-a-second head is
//!   cut whatever it says);
//! - HTTP/2 frames that open no request (pings, window updates) do not keep
//!   a connection alive: with no stream open it is idle.
//!
//! A request's body has its own bound, `body_timeout`, checked where the
//! body is read (`proxy::intake::read_body`), since only there is a request
//! to answer.
//!
//! [`Cap`] counts open payment connections. At the cap the accept loop
//! stops accepting payments — new connections wait in the kernel's listen
//! backlog, and the admin listener keeps its file descriptors — and says so
//! once per episode, not once per refused connection.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

/// A connection's time limits, from the config current when it was accepted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub header: Duration,
    pub idle: Duration,
}

/// `head_since` when no head is being received.
const NO_HEAD: u64 = u64::MAX;

/// What the protocol is, as far as the first bytes tell.
const UNKNOWN: u8 = 0;
const HTTP1: u8 = 1;
const HTTP2: u8 = 2;
/// The start of HTTP/2's connection preface; HTTP/1 methods never start so.
const H2_PREFACE: &[u8] = b"PRI ";

/// What a connection's watchdog reads. Times are milliseconds since `born`.
pub(crate) struct Activity {
    born: Instant,
    /// Requests whose service call has not ended.
    in_flight: AtomicU32,
    /// When the connection last had no request open (accepted, or a request ended).
    quiet_since: AtomicU64,
    /// When bytes of an HTTP/1 head began to arrive with no request open.
    head_since: AtomicU64,
    protocol: AtomicU8,
    /// Wakes the watchdog when a head starts (its deadline may be sooner).
    head_started: Notify,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            born: Instant::now(),
            in_flight: AtomicU32::new(0),
            quiet_since: AtomicU64::new(0),
            head_since: AtomicU64::new(NO_HEAD),
            protocol: AtomicU8::new(UNKNOWN),
            head_started: Notify::new(),
        })
    }

    fn ms(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    /// A request's head is complete and its service called: until the
    /// returned guard drops, the connection is busy, not idle.
    pub fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Relaxed);
        self.head_since.store(NO_HEAD, Relaxed);
        Busy(self.clone())
    }

    /// Bytes arrived: `first` are the connection's first (they tell the
    /// protocol). Cheap when a request is open: one load.
    fn received(&self, first: Option<&[u8]>) {
        if let Some(bytes) = first {
            let protocol = if bytes.starts_with(H2_PREFACE) { HTTP2 } else { HTTP1 };
            self.protocol.store(protocol, Relaxed);
        }
        if self.in_flight.load(Relaxed) > 0 || self.protocol.load(Relaxed) == HTTP2 {
            return;
        }
        if self.head_since.load(Relaxed) == NO_HEAD {
            self.head_since.store(self.ms(), Relaxed);
            self.head_started.notify_one();
        }
    }
}

/// A request in progress on a connection (see [`Activity::begin`]).
pub(crate) struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let a = &self.0;
        a.quiet_since.store(a.ms(), Relaxed);
        a.in_flight.fetch_sub(1, Relaxed);
    }
}

/// Why a watchdog ended its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expired {
    Idle,
    Head,
}

/// Resolves when the connection has been idle, or receiving one head, too long.
async fn watchdog(activity: &Activity, t: Timeouts) -> Expired {
    let ms = |d: Duration| d.as_millis() as u64;
    loop {
        let now = activity.ms();
        let head = activity.head_since.load(Relaxed);
        let (at, expiry) = if activity.in_flight.load(Relaxed) > 0 {
            // Busy: look again an idle period from now.
            (now + ms(t.idle), None)
        } else if head != NO_HEAD {
            (head.saturating_add(ms(t.header)), Some(Expired::Head))
        } else {
            let quiet = activity.quiet_since.load(Relaxed);
            (quiet.saturating_add(ms(t.idle)), Some(Expired::Idle))
        };
        if let Some(expiry) = expiry.filter(|_| now >= at) {
            return expiry;
        }
        let wake = activity.born + Duration::from_millis(at.max(now + 1));
        tokio::select! {
            () = tokio::time::sleep_until(wake) => {}
            () = activity.head_started.notified() => {}
        }
    }
}

/// Serves `conn` until it ends, its watchdog expires, or `stopping` says the
/// process is shutting down. `shut` starts a graceful shutdown of `conn`
/// (idle and shutdown); a head that takes too long drops it at once.
pub(crate) async fn drive<C, E>(
    conn: C,
    shut: impl Fn(Pin<&mut C>),
    activity: &Activity,
    t: Timeouts,
    mut stopping: watch::Receiver<()>,
) where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    tokio::pin!(conn);
    let dog = watchdog(activity, t);
    tokio::pin!(dog);
    let mut shutting = false;
    loop {
        tokio::select! {
            ended = &mut conn => {
                // A merchant that hangs up mid-request, a TLS stream cut
                // without its close, a malformed request: why a connection
                // ended early, for whoever is debugging one (never a secret:
                // hyper's errors name no header values).
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            expired = &mut dog, if !shutting => match expired {
                Expired::Head => {
                    tracing::debug!(header_timeout = ?t.header, "connection closed: request head not complete in time");
                    return;
                }
                Expired::Idle => {
                    tracing::debug!(idle_timeout = ?t.idle, "connection closing: idle");
                    shut(conn.as_mut());
                    shutting = true;
                }
            },
            _ = stopping.changed(), if !shutting => {
                shut(conn.as_mut());
                shutting = true;
            }
        }
    }
}

/// A connection's socket (plain or TLS), telling its [`Activity`] what it reads.
pub(crate) struct Watched<T> {
    inner: T,
    activity: Arc<Activity>,
    /// Nothing read yet: the first bytes tell the protocol.
    fresh: bool,
}

impl<T> Watched<T> {
    pub fn new(inner: T, activity: Arc<Activity>) -> Watched<T> {
        Watched {
            inner,
            activity,
            fresh: true,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let first = std::mem::take(&mut this.fresh).then(|| &buf.filled()[before..]);
            this.activity.received(first);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Open connections of one listener, and a wake-up when one closes.
#[derive(Default)]
pub(crate) struct Cap {
    open: AtomicUsize,
    freed: Notify,
}

impl Cap {
    pub fn open(&self) -> usize {
        self.open.load(Relaxed)
    }

    /// Counts a connection until the returned slot drops.
    pub fn take(self: &Arc<Self>) -> Slot {
        self.open.fetch_add(1, Relaxed);
        Slot(self.clone())
    }

    /// Resolves once a connection has closed since the last call (a stored
    /// wake-up counts: none is lost between a check and the wait).
    pub async fn freed(&self) {
        self.freed.notified().await;
    }
}

/// One open connection of a [`Cap`].
pub(crate) struct Slot(Arc<Cap>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Relaxed);
        self.0.freed.notify_one();
    }
}

/// The payment listener's cap: `configured`, or with 0 half the open-file
/// limit (the rest is for upstream connections, the journal, the admin
/// listener and files), at least 16; 4096 when the limit is unknown.
pub(crate) fn connection_cap(configured: usize, open_files: Option<u64>) -> usize {
    match (configured, open_files) {
        (0, Some(limit)) => usize::try_from(limit / 2).unwrap_or(usize::MAX).max(16),
        (0, None) => 4096,
        (n, _) => n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timeouts = Timeouts {
        header: Duration::from_millis(100),
        idle: Duration::from_millis(300),
    };

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_expires_after_the_idle_timeout() {
        let a = Activity::new();
        let started = Instant::now();
        assert_eq!(watchdog(&a, T).await, Expired::Idle);
        assert_eq!(started.elapsed(), T.idle);
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_started_expires_after_the_header_timeout_not_the_idle_one() {
        let a = Activity::new();
        a.received(Some(b"PO"));
        let started = Instant::now();
        assert_eq!(watchdog(&a, T).await, Expired::Head);
        assert_eq!(started.elapsed(), T.header);
        // A head starting while the watchdog sleeps toward the idle deadline wakes it.
        let a = Activity::new();
        let started = Instant::now();
        let dog = watchdog(&a, T);
        tokio::pin!(dog);
        tokio::select! {
            _ = &mut dog => panic!("expired before anything happened"),
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        a.received(Some(b"GET / HTTP/1.1\r\n"));
        assert_eq!(dog.await, Expired::Head);
        assert_eq!(started.elapsed(), Duration::from_millis(50) + T.header);
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_request_is_never_idle_and_its_end_restarts_the_clock() {
        let a = Activity::new();
        a.received(Some(b"POST /v1/payments"));
        let busy = a.begin();
        let dog = watchdog(&a, T);
        tokio::pin!(dog);
        tokio::select! {
            _ = &mut dog => panic!("a busy connection expired"),
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        drop(busy);
        let ended = Instant::now();
        assert_eq!(dog.await, Expired::Idle);
        assert!(ended.elapsed() >= T.idle, "{:?}", ended.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn http2_frames_without_a_request_do_not_keep_a_connection() {
        let a = Activity::new();
        a.received(Some(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
        a.received(None);
        let started = Instant::now();
        assert_eq!(watchdog(&a, T).await, Expired::Idle);
        assert_eq!(started.elapsed(), T.idle);
    }

    #[test]
    fn the_cap_defaults_to_half_the_open_file_limit() {
        assert_eq!(connection_cap(0, Some(1024)), 512);
        assert_eq!(connection_cap(0, Some(8)), 16);
        assert_eq!(connection_cap(0, None), 4096);
        assert_eq!(connection_cap(100, Some(1024)), 100);
    }

    #[tokio::test]
    async fn a_slot_counts_until_dropped_and_wakes_a_waiter() {
        let cap = Arc::new(Cap::default());
        let slot = cap.take();
        assert_eq!(cap.open(), 1);
        drop(slot);
        assert_eq!(cap.open(), 0);
        // The wake-up was stored: no race between a check and the wait.
        cap.freed().await;
    }
}
