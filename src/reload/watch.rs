//! What triggers a reload: the config file changing, SIGHUP. (The third
//! trigger, `POST /-/reload`, lives with the admin API.)
//!
//! The watcher watches the file's *directory*, not the file: editors and
//! config managers replace files by rename, and Kubernetes swaps a `..data`
//! symlink, both of which a watch on the old inode would miss. Events are
//! debounced, and [`super::change`] compares the file with the config in
//! force, so a burst of events or a touch with no change is no reload.
//!
//! The directory also holds files payroute itself keeps writing — the
//! SQLite journal and its WAL — whose events are ignored; and whatever
//! else happens there, a reload waits at most [`DEBOUNCE_MAX`] for quiet.
//!
//! The directories of the files the config points to (TLS certificates and
//! keys, `file:` secrets: the snapshot's `inputs`) are watched the same way,
//! so a renewed certificate is loaded without a restart; [`super::change`]
//! compares those files' contents too. When a reload names files in new
//! directories, those are watched from then on.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::Reloader;

/// Quiet time after the last file event before reloading.
const DEBOUNCE: Duration = Duration::from_millis(150);
/// The longest a busy directory can put a reload off.
const DEBOUNCE_MAX: Duration = Duration::from_secs(2);
/// How often the watcher looks for new input directories after reloads it
/// did not trigger itself (SIGHUP, `POST /-/reload`).
const REWATCH: Duration = Duration::from_secs(2);

/// A running file watch; watching stops when it is dropped.
pub(crate) struct Watch {
    _watcher: Arc<Mutex<notify::RecommendedWatcher>>,
}

/// Starts the file watcher; the returned [`Watch`] must be kept alive.
/// Events on files whose path starts with `ignore` (the journal's database
/// and its side files) are not changes of the config.
pub(crate) fn watch_file(reloader: Arc<Reloader>, path: &Path, ignore: Option<PathBuf>) -> notify::Result<Watch> {
    let dir: PathBuf = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let ours = |e: &notify::Event| {
            ignore.as_ref().is_some_and(|prefix| {
                !e.paths.is_empty()
                    && e.paths.iter().all(|p| {
                        p.as_os_str()
                            .as_encoded_bytes()
                            .starts_with(prefix.as_os_str().as_encoded_bytes())
                    })
            })
        };
        if event.is_ok_and(|e| !e.kind.is_access() && !ours(&e)) {
            // Full channel: a reload is already pending, which is all we need.
            let _ = tx.try_send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    let watcher = Arc::new(Mutex::new(watcher));
    let mut watched = vec![dir];
    let mut version = reloader.app().snapshot().version;
    watch_inputs(&watcher, &mut watched, &reloader);
    let weak = Arc::downgrade(&watcher);
    tokio::spawn(async move {
        let mut rewatch = tokio::time::interval(REWATCH);
        loop {
            tokio::select! {
                event = rx.recv() => {
                    if event.is_none() {
                        break;
                    }
                    // Debounce: wait until events stop for a moment (or too long).
                    let until = tokio::time::Instant::now() + DEBOUNCE_MAX;
                    while tokio::time::Instant::now() < until
                        && tokio::time::timeout(DEBOUNCE, rx.recv())
                            .await
                            .is_ok_and(|e| e.is_some())
                    {}
                    let _ = reloader.clone().reload_in_background(false).await;
                }
                _ = rewatch.tick() => {}
            }
            let current = reloader.app().snapshot().version;
            if current != version {
                version = current;
                let Some(watcher) = weak.upgrade() else { break };
                watch_inputs(&watcher, &mut watched, &reloader);
            }
        }
    });
    Ok(Watch { _watcher: watcher })
}

/// Watches the directories of the current config's inputs not watched yet.
fn watch_inputs(watcher: &Mutex<notify::RecommendedWatcher>, watched: &mut Vec<PathBuf>, reloader: &Reloader) {
    for dir in reloader.app().snapshot().inputs.dirs() {
        if watched.contains(&dir) {
            continue;
        }
        let result = watcher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .watch(&dir, RecursiveMode::NonRecursive);
        if let Err(e) = result {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch for certificate or secret changes there; reload with SIGHUP or POST /-/reload");
        }
        watched.push(dir);
    }
}

/// Reloads on every SIGHUP.
pub(crate) fn on_sighup(reloader: Arc<Reloader>) -> std::io::Result<()> {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading config");
            let _ = reloader.clone().reload_in_background(true).await;
        }
    });
    Ok(())
}
