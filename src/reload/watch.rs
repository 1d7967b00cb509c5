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
//! On Linux the watch asks the kernel only for what a config change looks
//! like (a file written and closed, moved in or out, created, deleted,
//! its attributes changed), not for every write: the journal's files are
//! written thousands of times a second and never closed, and a watch on
//! every write cost the journal's writer a kernel event per page written
//! and a thread to read them (BENCHMARKS.md, session 6). Elsewhere the
//! `notify` crate watches with its own choice of events.
//!
//! The directories of the files the config points to (TLS certificates and
//! keys, `file:` secrets: the snapshot's `inputs`) are watched the same way,
//! so a renewed certificate is loaded without a restart; [`super::change`]
//! compares those files' contents too. When a reload names files in new
//! directories, those are watched from then on.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    _watcher: Arc<Mutex<DirWatcher>>,
}

/// Starts the file watcher; the returned [`Watch`] must be kept alive.
/// Events on files whose path starts with `ignore` (the journal's database
/// and its side files) are not changes of the config.
pub(crate) fn watch_file(reloader: Arc<Reloader>, path: &Path, ignore: Option<PathBuf>) -> std::io::Result<Watch> {
    let dir: PathBuf = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let mut watcher = DirWatcher::new(tx, ignore)?;
    watcher.watch(&dir)?;
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
fn watch_inputs(watcher: &Mutex<DirWatcher>, watched: &mut Vec<PathBuf>, reloader: &Reloader) {
    for dir in reloader.app().snapshot().inputs.dirs() {
        if watched.contains(&dir) {
            continue;
        }
        let result = watcher.lock().unwrap_or_else(|p| p.into_inner()).watch(&dir);
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

/// Whether an event about `paths` is about files payroute writes itself
/// (paths under `ignore`, the journal's prefix), not a change of config.
fn ours(ignore: Option<&Path>, paths: &[PathBuf]) -> bool {
    ignore.is_some_and(|prefix| {
        !paths.is_empty()
            && paths.iter().all(|p| {
                p.as_os_str()
                    .as_encoded_bytes()
                    .starts_with(prefix.as_os_str().as_encoded_bytes())
            })
    })
}

/// Directory watches that say "something changed" on `tx` (a full channel:
/// a reload is already pending, which is all that is needed).
#[cfg(target_os = "linux")]
pub(crate) struct DirWatcher {
    watches: inotify::Watches,
    dirs: Arc<Mutex<std::collections::HashMap<inotify::WatchDescriptor, PathBuf>>>,
    reader: tokio::task::JoinHandle<()>,
}

#[cfg(target_os = "linux")]
impl DirWatcher {
    /// What a config change looks like; not `MODIFY` (see the module doc).
    const MASK: inotify::WatchMask = inotify::WatchMask::CLOSE_WRITE
        .union(inotify::WatchMask::MOVED_TO)
        .union(inotify::WatchMask::MOVED_FROM)
        .union(inotify::WatchMask::CREATE)
        .union(inotify::WatchMask::DELETE)
        .union(inotify::WatchMask::ATTRIB)
        .union(inotify::WatchMask::DELETE_SELF)
        .union(inotify::WatchMask::MOVE_SELF);

    fn new(tx: mpsc::Sender<()>, ignore: Option<PathBuf>) -> std::io::Result<DirWatcher> {
        use futures_util::StreamExt;
        let inotify = inotify::Inotify::init()?;
        let watches = inotify.watches();
        let dirs: Arc<Mutex<std::collections::HashMap<_, PathBuf>>> = Arc::default();
        let mut events = inotify.into_event_stream([0u8; 4096])?;
        let names = dirs.clone();
        let reader = tokio::spawn(async move {
            while let Some(event) = events.next().await {
                let Ok(event) = event else { continue };
                let dir = names.lock().unwrap_or_else(|p| p.into_inner()).get(&event.wd).cloned();
                let paths: Vec<PathBuf> = match (dir, event.name) {
                    (Some(dir), Some(name)) => vec![dir.join(name)],
                    _ => Vec::new(),
                };
                if !ours(ignore.as_deref(), &paths) {
                    let _ = tx.try_send(());
                }
            }
        });
        Ok(DirWatcher { watches, dirs, reader })
    }

    fn watch(&mut self, dir: &Path) -> std::io::Result<()> {
        let wd = self.watches.add(dir, Self::MASK)?;
        self.dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(wd, dir.to_owned());
        Ok(())
    }
}

#[cfg(target_os = "linux")]
impl Drop for DirWatcher {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) struct DirWatcher(notify::RecommendedWatcher);

#[cfg(not(target_os = "linux"))]
impl DirWatcher {
    fn new(tx: mpsc::Sender<()>, ignore: Option<PathBuf>) -> std::io::Result<DirWatcher> {
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok_and(|e| !e.kind.is_access() && !ours(ignore.as_deref(), &e.paths)) {
                let _ = tx.try_send(());
            }
        })
        .map_err(std::io::Error::other)?;
        Ok(DirWatcher(watcher))
    }

    fn watch(&mut self, dir: &Path) -> std::io::Result<()> {
        use notify::Watcher;
        self.0
            .watch(dir, notify::RecursiveMode::NonRecursive)
            .map_err(std::io::Error::other)
    }
}
