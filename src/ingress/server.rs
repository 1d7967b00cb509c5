//! Listeners, connections and graceful shutdown.
//!
//! Both listeners speak HTTP/1.1 and h2c (hyper-util's auto builder). Each
//! connection is a task of its own — payment connections on a worker thread
//! ([`crate::runtime`]), admin ones here — driven by [`conn::drive`] with
//! the timeouts of the config current when it was accepted, and counted:
//! on shutdown the listeners close at once (new connections are refused),
//! open connections finish the requests they have and close, and the
//! process waits for them up to `drain_ms`.
//!
//! The payment listener takes at most `max_connections` (see [`conn`]): at
//! the cap it stops accepting until one closes, logging that once per
//! episode; the admin listener is not capped, so `/-/health` answers while
//! payments are full. A failing `accept` (out of file descriptors) is logged
//! once per run of failures, not once per try.
//!
//! With `[server.tls]` the payment listener speaks TLS (1.2 and 1.3; ALPN
//! `h2` and `http/1.1`, so merchants get HTTP/2 too). The accept loop only
//! accepts; the handshake runs in the connection's task, bounded by
//! [`crate::tls::server::HANDSHAKE_TIMEOUT`], so a slow client never delays
//! anyone else's connection. Each connection takes the TLS config of the
//! snapshot current when it is accepted: a reload with a renewed certificate
//! applies to new connections at once. Whether the listener speaks TLS at
//! all is fixed at startup (like its address). The admin listener is always
//! plain HTTP: keep it on loopback or a private network.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::conn::{self, Activity, Cap, Slot, Timeouts, Watched};
use crate::app::App;
use crate::config::ServerConfig;
use crate::reload::Reloader;
use crate::runtime::Workers;
use crate::tls::server::{handshake, IngressTls};

/// The most headers hyper reads in one HTTP/1 head. Above payroute's own
/// limit (`proxy::MAX_HEADERS`), so that a head between the two is
/// answered by payroute in JSON with a request id; hyper answers a bare 431
/// only above this.
const HYPER_MAX_HEADERS: usize = 256;
/// The largest HTTP/2 header list hyper accepts, above payroute's own limit
/// for the same reason.
const HYPER_MAX_HEADER_LIST: u32 = 256 << 10;

/// Why the proxy could not start serving.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        addr: SocketAddr,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("{0}")]
    State(crate::state::StateError),
    #[error("cannot start the worker threads: {0}")]
    Workers(std::io::Error),
    #[error("{0}")]
    Journal(crate::journal::JournalError),
}

pub(crate) struct Listeners {
    payments: TcpListener,
    admin: TcpListener,
}

impl Listeners {
    /// Binds `payments` (unless `bound` is that listener already) and `admin`.
    pub async fn bind(
        bound: Option<TcpListener>,
        payments: SocketAddr,
        admin: SocketAddr,
    ) -> Result<Listeners, StartError> {
        let bind = |addr, what| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, what, source })
        };
        Ok(Listeners {
            payments: match bound {
                Some(listener) => listener,
                None => bind(payments, "payments").await?,
            },
            admin: bind(admin, "admin").await?,
        })
    }

    /// The bound addresses (port 0 in the config becomes the real port).
    pub fn local_addrs(&self) -> (SocketAddr, SocketAddr) {
        let addr = |l: &TcpListener| l.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        (addr(&self.payments), addr(&self.admin))
    }
}

/// Serves until `shutdown` resolves, then drains. Payment connections are
/// served on `workers`; admin connections here (`reloader` answers
/// `POST /-/reload`).
pub(crate) async fn run(
    app: Arc<App>,
    reloader: Arc<Reloader>,
    listeners: Listeners,
    workers: Arc<Workers>,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Header sizes: see HYPER_MAX_HEADERS. hyper's own header-read timeout
    // is left off: conn's watchdog bounds heads and idle time.
    builder.http1().max_headers(HYPER_MAX_HEADERS);
    builder.http2().max_header_list_size(HYPER_MAX_HEADER_LIST);
    // TLS or not is decided at startup; the certificate follows reloads.
    let mut tls = app.snapshot().server.tls.clone();
    // Tells connections to finish (and those in their TLS handshake to give up).
    let (stopping, _) = watch::channel(());
    let payments_open = Arc::new(Cap::default());
    let admin_open = Arc::new(Cap::default());
    let auto_cap = crate::os::open_files_limit();
    // A full listener's episode: since when, and since when it has room.
    let (mut full_since, mut room_since): (Option<tokio::time::Instant>, Option<tokio::time::Instant>) = (None, None);
    let mut accept_log = (AcceptLog::default(), AcceptLog::default());
    tokio::pin!(shutdown);
    loop {
        let server = &app.snapshot().server;
        let cap = conn::connection_cap(server.max_connections, auto_cap);
        let open = payments_open.open();
        let full = open >= cap;
        // One episode from the first time the cap is hit until the listener
        // has had real room (below nine tenths) for a second: at the cap
        // with churn, every close lets one connection in and fills it
        // again, and a drained backlog refills it at once; both are still
        // the same episode.
        match (full_since, full) {
            (None, true) => {
                full_since = Some(tokio::time::Instant::now());
                tracing::warn!(
                    open,
                    max_connections = cap,
                    "payment listener full: new connections wait in the listen backlog until one closes (logged once per episode)"
                );
            }
            (Some(since), false) if open < cap - cap / 10 => match room_since {
                None => room_since = Some(tokio::time::Instant::now()),
                Some(room) if room.elapsed() >= EPISODE_END => {
                    tracing::info!(full_for = ?since.elapsed() - EPISODE_END, open, "payment listener accepting again");
                    (full_since, room_since) = (None, None);
                }
                Some(_) => {}
            },
            (Some(_), _) => room_since = None,
            (None, false) => {}
        }
        let episode_ends = room_since.map(|room| room + EPISODE_END);
        tokio::select! {
            accepted = listeners.payments.accept(), if !full => {
                // Off this runtime's reactor, onto a worker's (see runtime.rs).
                let Some(stream) = accept_log.0.accepted(accepted, "payments").await.and_then(|s| s.into_std().ok()) else {
                    continue;
                };
                let connection = PaymentConnection {
                    app: app.clone(),
                    builder: builder.clone(),
                    tls: current_tls(&app, &mut tls),
                    timeouts: timeouts(server),
                    stopping: stopping.subscribe(),
                    slot: payments_open.take(),
                };
                workers.submit(move || {
                    tokio::spawn(connection.serve(stream));
                });
            }
            // Full, or in an episode that a close may end: look again.
            () = payments_open.freed(), if full || full_since.is_some() => {}
            () = sleep_until_some(episode_ends), if episode_ends.is_some() => {}
            accepted = listeners.admin.accept() => {
                if let Some(stream) = accept_log.1.accepted(accepted, "admin").await {
                    let slot = admin_open.take();
                    let activity = Activity::new();
                    let service = tower::service_fn({
                        let (app, reloader, activity) = (app.clone(), reloader.clone(), activity.clone());
                        move |req| {
                            let busy = activity.begin();
                            let served = crate::ingress::admin::serve(app.clone(), reloader.clone(), req);
                            async move {
                                let response = served.await;
                                drop(busy);
                                response
                            }
                        }
                    });
                    let io = TokioIo::new(Watched::new(stream, activity.clone()));
                    let conn = builder.serve_connection(io, TowerToHyperService::new(service)).into_owned();
                    let (t, stopping) = (timeouts(server), stopping.subscribe());
                    tokio::spawn(async move {
                        conn::drive(conn, |c| c.graceful_shutdown(), &activity, t, stopping).await;
                        drop(slot);
                    });
                }
            }
            () = &mut shutdown => break,
        }
    }
    drop(listeners);
    let _ = stopping.send(());
    let drain = app.snapshot().server.drain;
    tracing::info!(
        connections = payments_open.open() + admin_open.open(),
        "shutting down: listeners closed, draining in-flight payments"
    );
    let drained = async {
        for open in [&payments_open, &admin_open] {
            while open.open() > 0 {
                open.freed().await;
            }
        }
    };
    tokio::select! {
        () = drained => tracing::info!("drained; bye"),
        () = tokio::time::sleep(drain) => tracing::warn!(?drain, "drain time is up; closing remaining connections"),
    }
}

/// How long a full listener must have room before its episode is over.
const EPISODE_END: Duration = Duration::from_secs(1);

async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn timeouts(server: &ServerConfig) -> Timeouts {
    Timeouts {
        header: server.header_timeout,
        idle: server.idle_timeout,
    }
}

/// What a worker needs to serve one merchant connection.
struct PaymentConnection {
    app: Arc<App>,
    builder: auto::Builder<TokioExecutor>,
    tls: Option<IngressTls>,
    timeouts: Timeouts,
    stopping: watch::Receiver<()>,
    /// Counted against `max_connections` until the connection ends.
    slot: Slot,
}

impl PaymentConnection {
    /// Runs on a worker: the TLS handshake (if any), then HTTP until the
    /// merchant, a timeout or the drain closes the connection.
    async fn serve(self, stream: std::net::TcpStream) {
        let stream = match TcpStream::from_std(stream) {
            Ok(s) => s,
            Err(e) => return tracing::warn!(error = %e, "cannot register a merchant connection"),
        };
        let PaymentConnection {
            app,
            builder,
            tls,
            timeouts,
            stopping,
            slot,
        } = self;
        let activity = Activity::new();
        // Per connection: the service knows its connection's activity.
        let service = TowerToHyperService::new(tower::service_fn({
            let activity = activity.clone();
            move |req| {
                let busy = activity.begin();
                let served = crate::proxy::serve(app.clone(), req);
                async move {
                    let response = served.await;
                    drop(busy);
                    response
                }
            }
        }));
        match tls {
            None => {
                let io = TokioIo::new(Watched::new(stream, activity.clone()));
                let conn = builder.serve_connection(io, service).into_owned();
                conn::drive(conn, |c| c.graceful_shutdown(), &activity, timeouts, stopping).await;
            }
            Some(ingress) => {
                if let Some(tls) = tls_handshake(&ingress, stream, stopping.clone()).await {
                    let io = TokioIo::new(Watched::new(tls, activity.clone()));
                    let conn = builder.serve_connection(io, service).into_owned();
                    conn::drive(conn, |c| c.graceful_shutdown(), &activity, timeouts, stopping).await;
                }
            }
        }
        drop(slot);
    }
}

/// The TLS config for the next connection: the current snapshot's, or the
/// last one seen if a reload removed `[server.tls]` (that takes a restart);
/// `None` on a plain listener.
fn current_tls(app: &App, tls: &mut Option<IngressTls>) -> Option<IngressTls> {
    let slot = tls.as_mut()?;
    if let Some(current) = &app.snapshot().server.tls {
        slot.clone_from(current);
    }
    Some(slot.clone())
}

/// The server side of a merchant's handshake; gives up at shutdown. A
/// failure is logged at `debug` (mostly scanners and probes).
async fn tls_handshake(
    tls: &IngressTls,
    stream: TcpStream,
    mut stopping: watch::Receiver<()>,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let peer = stream.peer_addr().ok();
    let acceptor = tls.acceptor();
    tokio::select! {
        result = handshake(&acceptor, stream) => match result {
            Ok(tls) => Some(tls),
            Err(e) => {
                tracing::debug!(?peer, error = %e, "merchant connection refused");
                None
            }
        },
        _ = stopping.changed() => None,
    }
}

/// A listener's failing accepts, logged once per run of failures.
#[derive(Default)]
struct AcceptLog {
    /// Failures since the last accept that worked.
    failing: u64,
}

impl AcceptLog {
    async fn accepted(
        &mut self,
        accepted: std::io::Result<(TcpStream, SocketAddr)>,
        listener: &str,
    ) -> Option<TcpStream> {
        match accepted {
            Ok((stream, _)) => {
                if self.failing > 0 {
                    tracing::info!(listener, failed = self.failing, "accepting again");
                    self.failing = 0;
                }
                let _ = stream.set_nodelay(true);
                Some(stream)
            }
            Err(e) => {
                if self.failing == 0 {
                    tracing::warn!(listener, error = %e, "accept failed; retrying every 20 ms, logged again when accepting works");
                }
                self.failing += 1;
                // Out of file descriptors and the like: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(20)).await;
                None
            }
        }
    }
}
