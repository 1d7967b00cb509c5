//! The composition root: a validated config in, a serving proxy out.
//!
//! Used by `payroute serve` and by the demo, so both run exactly the same
//! proxy. Startup fails fast and whole (bad config, port taken) before any
//! payment is accepted.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::app::App;
use crate::config::{Backend, Config};
use crate::ingress::server::{self, Listeners, StartError};
use crate::journal::Journal;
use crate::metrics::Metrics;
use crate::notify::outbox::{Outbox, OutboxMetrics, OutboxTask};
use crate::reload::change::ConfigFile;
use crate::reload::Reloader;
use crate::runtime::Workers;
use crate::state::Store;
use crate::sweeper::Sweeper;

/// How long shutdown waits for background reversals (their tries take ~7 s).
const REVERSAL_DRAIN: std::time::Duration = std::time::Duration::from_secs(10);

/// A proxy serving in the background.
pub(crate) struct Running {
    pub app: Arc<App>,
    pub payments: SocketAddr,
    pub admin: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
    sweeper: Sweeper,
    workers: Arc<Workers>,
    outbox: OutboxTask,
    _watcher: Option<crate::reload::watch::Watch>,
}

impl Running {
    /// Graceful shutdown: stop accepting, drain payments, stop the sweeper,
    /// then give pending reversals a bounded time (those left are logged with
    /// order id and channel), let the merchant notifications in flight finish
    /// (within `[notify] timeout_ms`), then stop the workers they run on.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
        // Before the drain: the sweeper may start reversals.
        self.sweeper.stop().await;
        let pending = self.app.reversals.pending();
        if pending > 0 {
            tracing::info!(pending, "waiting for reversals of ambiguous attempts");
            self.app.reversals.drain(REVERSAL_DRAIN).await;
        }
        self.outbox.stop().await;
        if let Err(e) = self.app.journal.flush_history().await {
            tracing::warn!(error = %e, "shutting down with journal history unwritten");
        }
        // The server task is done, so this is the last handle.
        if let Some(workers) = Arc::into_inner(self.workers) {
            let _ = tokio::task::spawn_blocking(move || workers.stop()).await;
        }
    }
}

/// Binds both listeners and starts serving `config`. With a `path`, the file
/// is watched and SIGHUP reloads it.
pub(crate) async fn start(config: Config, text: String, path: Option<PathBuf>) -> Result<Running, StartError> {
    start_with(config, text, path, None).await
}

/// [`start`] with the payments listener bound already when `payments` is
/// given (its config's `listen` is then not bound again): for a config that
/// names its own port, as the demo's epay act does in `public_url`. Binding
/// first and handing the socket over leaves no moment in which another
/// process could take the port.
pub(crate) async fn start_with(
    config: Config,
    text: String,
    path: Option<PathBuf>,
    payments: Option<tokio::net::TcpListener>,
) -> Result<Running, StartError> {
    let metrics = Metrics::new();
    let store = match config.state.backend {
        Backend::Memory => {
            metrics.state_up.set(1);
            Store::memory_for(&config.state)
        }
        Backend::Redis => Store::redis(&config.state, &metrics).await.map_err(StartError::State)?,
    };
    let journal = Journal::open(&config.journal).await.map_err(StartError::Journal)?;
    // Its writes land beside the config: the watcher must not take them for edits.
    let journal_file = match &config.journal {
        crate::config::JournalConfig::Sqlite { path, .. } => Some(path.clone()),
        crate::config::JournalConfig::Postgres { .. } => None,
    };
    tracing::info!(journal = journal.describe(), "journal open");
    let listeners = Listeners::bind(payments, config.server.listen, config.server.admin_listen).await?;
    let workers = Arc::new(Workers::start(config.server.workers).map_err(StartError::Workers)?);
    let (payments, admin) = listeners.local_addrs();
    // Only the text's digest is kept, and the text goes before the snapshot
    // is built: megabytes less at the startup peak with a large config.
    let file = path.as_ref().map(|p| ConfigFile::new(p.clone(), &text));
    drop(text);
    let app = App::new(config, metrics, store, journal, workers.count());
    // The parse's temporaries are freed by now; the allocator would keep them.
    crate::os::release_freed_memory();
    let reloader = Reloader::new(app.clone(), file);
    let watcher = match &path {
        Some(p) => {
            if let Err(e) = crate::reload::watch::on_sighup(reloader.clone()) {
                tracing::warn!(error = %e, "cannot listen for SIGHUP");
            }
            match crate::reload::watch::watch_file(reloader.clone(), p, journal_file) {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch the config file; reload with SIGHUP or POST /-/reload");
                    None
                }
            }
        }
        None => None,
    };
    tokio::spawn(app.clone().housekeep());
    tokio::spawn(crate::lifecycle::count_unpaid(app.clone()));
    let sweeper = Sweeper::start(app.clone());
    let outbox = {
        let source = app.clone();
        Outbox::new(
            app.journal.clone(),
            Arc::new(move || source.snapshot()),
            OutboxMetrics::new(&app.metrics),
            app.outbox.clone(),
        )
        .spawn()
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server::run(app.clone(), reloader, listeners, workers.clone(), async {
        let _ = stopped.await;
    }));
    Ok(Running {
        app,
        payments,
        admin,
        stop,
        task,
        sweeper,
        workers,
        outbox,
        _watcher: watcher,
    })
}
