//! Listeners, connections and graceful shutdown.
//!
//! Both listeners speak HTTP/1.1 and h2c (hyper-util's auto builder). Each
//! connection is a task of its own, watched by one `GracefulShutdown`: on
//! shutdown the listeners close at once (new connections are refused), open
//! connections finish the requests they have and close, and the process waits
//! for them up to `drain_ms`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};

use crate::app::App;
use crate::ingress::admin::AdminService;
use crate::proxy::PaymentService;

/// Why the proxy could not start serving.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        addr: SocketAddr,
        what: &'static str,
        source: std::io::Error,
    },
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

/// Serves until `shutdown` resolves, then drains.
pub(crate) async fn run(app: Arc<App>, listeners: Listeners, shutdown: impl Future<Output = ()>) {
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    let payments = PaymentService::new(app.clone());
    let admin = AdminService::new(app.clone());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listeners.payments.accept() => {
                if let Some(stream) = accepted_stream(accepted).await {
                    let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(payments.clone()));
                    tokio::spawn(graceful.watch(conn.into_owned()));
                }
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
