//! What triggers a reload: the config file changing, SIGHUP. (The third
//! trigger, `POST /-/reload`, lives with the admin API.)
//!
//! The watcher watches the file's *directory*, not the file: editors and
//! config managers replace files by rename, and Kubernetes swaps a `..data`
//! symlink, both of which a watch on the old inode would miss. Events are
//! debounced, and [`App::reload`] compares the bytes with the config in force,
//! so a burst of events or a touch with no change is no reload.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::app::App;

/// Quiet time after the last file event before reloading.
const DEBOUNCE: Duration = Duration::from_millis(150);

/// Starts the file watcher; the returned watcher must be kept alive.
pub(crate) fn watch_file(app: Arc<App>, path: &Path) -> notify::Result<notify::RecommendedWatcher> {
    let dir: PathBuf = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            // Full channel: a reload is already pending, which is all we need.
            let _ = tx.try_send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Debounce: wait until events stop for a moment.
            while tokio::time::timeout(DEBOUNCE, rx.recv())
                .await
                .is_ok_and(|e| e.is_some())
            {}
            let app = app.clone();
            let _ = tokio::task::spawn_blocking(move || app.reload(false)).await;
        }
    });
    Ok(watcher)
}

/// Reloads on every SIGHUP.
pub(crate) fn on_sighup(app: Arc<App>) -> std::io::Result<()> {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading config");
            let app = app.clone();
            let _ = tokio::task::spawn_blocking(move || app.reload(true)).await;
        }
    });
    Ok(())
}
