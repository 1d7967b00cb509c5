//! Listeners, connections and graceful shutdown.
//!
//! Both listeners speak HTTP/1.1 and h2c (hyper-util's auto builder). Each
//! connection is a task of its own — payment connections on a worker thread
//! ([`crate::runtime`]), admin ones here — watched by one `GracefulShutdown`: on
//! shutdown the listeners close at once (new connections are refused), open
//! connections finish the requests they have and close, and the process waits
//! for them up to `drain_ms`.
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
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::app::App;
use crate::reload::Reloader;
use crate::runtime::Workers;
use crate::tls::server::{handshake, IngressTls};

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
    pub async fn bind(payments: SocketAddr, admin: SocketAddr) -> Result<Listeners, StartError> {
        let bind = |addr, what| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, what, source })
        };
        Ok(Listeners {
            payments: bind(payments, "payments").await?,
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
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    // Service functions (tower's `service_fn`): cloned per connection, an
    // `Arc` or two each; no boxing, no per-request state of their own.
    let payments = tower::service_fn({
        let app = app.clone();
        move |req| crate::proxy::serve(app.clone(), req)
    });
    let admin = tower::service_fn({
        let app = app.clone();
        move |req| crate::ingress::admin::serve(app.clone(), reloader.clone(), req)
    });
    // TLS or not is decided at startup; the certificate follows reloads.
    let mut tls = app.snapshot().server.tls.clone();
    // Tells connections still in their TLS handshake to give up.
    let (stopping, _) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listeners.payments.accept() => {
                // Off this runtime's reactor, onto a worker's (see runtime.rs).
                let Some(stream) = accepted_stream(accepted).await.and_then(|s| s.into_std().ok()) else {
                    continue;
                };
                let connection = PaymentConnection {
                    builder: builder.clone(),
                    service: TowerToHyperService::new(payments.clone()),
                    tls: current_tls(&app, &mut tls),
                    watcher: graceful.watcher(),
                    stopping: stopping.subscribe(),
                };
                workers.submit(move || {
                    tokio::spawn(connection.serve(stream));
                });
            }
            accepted = listeners.admin.accept() => {
                if let Some(stream) = accepted_stream(accepted).await {
                    let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(admin.clone()));
                    tokio::spawn(graceful.watch(conn.into_owned()));
                }
            }
            () = &mut shutdown => break,
        }
    }
    drop(listeners);
    let _ = stopping.send(());
    let drain = app.snapshot().server.drain;
    tracing::info!(
        connections = graceful.count(),
        "shutting down: listeners closed, draining in-flight payments"
    );
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("drained; bye"),
        () = tokio::time::sleep(drain) => tracing::warn!(?drain, "drain time is up; closing remaining connections"),
    }
}

/// What a worker needs to serve one merchant connection.
struct PaymentConnection<S> {
    builder: auto::Builder<TokioExecutor>,
    service: S,
    tls: Option<IngressTls>,
    watcher: Watcher,
    stopping: watch::Receiver<()>,
}

impl<S> PaymentConnection<S>
where
    S: hyper::service::Service<http::Request<hyper::body::Incoming>, Response = http::Response<crate::error::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// Runs on a worker: the TLS handshake (if any), then HTTP until the
    /// merchant or the drain closes the connection.
    async fn serve(self, stream: std::net::TcpStream) {
        let stream = match TcpStream::from_std(stream) {
            Ok(s) => s,
            Err(e) => return tracing::warn!(error = %e, "cannot register a merchant connection"),
        };
        let PaymentConnection {
            builder,
            service,
            tls,
            watcher,
            stopping,
        } = self;
        match tls {
            None => {
                let conn = builder.serve_connection(TokioIo::new(stream), service);
                let _ = watcher.watch(conn.into_owned()).await;
            }
            Some(ingress) => {
                if let Some(tls) = tls_handshake(&ingress, stream, stopping).await {
                    let conn = builder.serve_connection(TokioIo::new(tls), service);
                    let _ = watcher.watch(conn.into_owned()).await;
                }
            }
        }
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

async fn accepted_stream(accepted: std::io::Result<(TcpStream, SocketAddr)>) -> Option<TcpStream> {
    match accepted {
        Ok((stream, _)) => {
            let _ = stream.set_nodelay(true);
            Some(stream)
        }
        Err(e) => {
            // Out of file descriptors and the like: back off instead of spinning.
            tracing::warn!(error = %e, "accept failed");
            tokio::time::sleep(Duration::from_millis(20)).await;
            None
        }
    }
}
