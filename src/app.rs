//! The running proxy's state: the current snapshot and what outlives it.
//!
//! `App` is the one shared object: payments read [`App::snapshot`] (one
//! `ArcSwap` load, no lock), reloads build a new [`Snapshot`] off to the side
//! and swap it in whole. Reloads are serialized by a mutex that only reloads
//! take, never a payment.
//!
//! Memory: a 100,000-merchant routes.toml is 6.7 MB of text and ~170 MB of
//! parse temporaries. The text in force is kept only as its SHA-256 (to
//! notice a file event that changed nothing), and after a config is built
//! the allocator is asked to hand the freed temporaries back to the OS
//! ([`release_freed_memory`]); otherwise glibc keeps them resident for good.
//!
//! File events: the watcher watches the config's directory, where logs and
//! other files change all the time. Each event used to read and hash the
//! whole file (7 MB and a SHA-256 for 100,000 merchants, measured as 7-15 MB
//! RSS spikes under load); now a file whose `stat` is what it was at the last
//! load is not read at all ([`Stamp`]), and one whose `stat` cannot be
//! trusted is hashed as it streams in, and read whole only if its bytes
//! differ.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};

use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;
use crate::state::Store;
use crate::upstream::reversal::Reversals;

pub(crate) struct App {
    current: ArcSwap<Snapshot>,
    pub metrics: Metrics,
    /// Rate buckets, daily totals, idempotency records, order memory.
    pub store: Store,
    /// Reversals running in the background.
    pub reversals: Arc<Reversals>,
    /// Where reloads read from; `None` for an embedded config (demo).
    config_path: Option<PathBuf>,
    /// What the config in force was loaded from.
    loaded: Mutex<Loaded>,
    versions: AtomicU64,
    /// Payment workers running (`runtime::Workers::count`): sizes the
    /// per-worker connection pools of every snapshot.
    workers: usize,
}

/// The config file in force, as seen when it was loaded.
struct Loaded {
    /// SHA-256 of the text, so a file event that changed nothing is no
    /// reload (the text itself would keep megabytes resident).
    digest: [u8; 32],
    /// `stat` of the file, so an event that did not touch it is not even a read.
    stamp: Option<Stamp>,
}

/// A file's identity and modification as `stat` reports them (following
/// symlinks): an edit changes the size or mtime, a rename or a symlink swap
/// (config managers, Kubernetes) the inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    modified: SystemTime,
}

impl Stamp {
    /// Younger than this, a file's mtime is not trusted: a second write in the
    /// same clock tick with the same size would look unchanged (git's "racily
    /// clean" rule). Such a file is read and compared by content instead.
    const SETTLED: Duration = Duration::from_secs(2);

    fn of(path: &Path) -> Option<Stamp> {
        let meta = std::fs::metadata(path).ok()?;
        let modified = meta.modified().ok()?;
        let age = SystemTime::now().duration_since(modified).ok()?;
        (age >= Stamp::SETTLED).then(|| Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            modified,
        })
    }
}

/// A reload that could not run: its thread did not start, or panicked.
#[derive(Debug, thiserror::Error)]
#[error("reload thread failed: {0}")]
pub(crate) struct ReloadThreadFailed(String);

/// A reload that took effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reloaded {
    pub version: u64,
    pub changed: bool,
}

impl App {
    pub fn new(
        config: Config,
        text: String,
        config_path: Option<PathBuf>,
        metrics: Metrics,
        store: Store,
        workers: usize,
    ) -> Arc<App> {
        // The text goes before the snapshot is built: 7 MB less at the
        // startup peak with 100,000 merchants.
        let loaded = Mutex::new(Loaded {
            digest: digest(&text),
            stamp: config_path.as_deref().and_then(Stamp::of),
        });
        drop(text);
        let snapshot = Snapshot::build(config, 1, None, &metrics, workers);
        metrics.config_version.set(1);
        release_freed_memory();
        Arc::new(App {
            current: ArcSwap::from_pointee(snapshot),
            metrics,
            store,
            reversals: Arc::default(),
            config_path,
            loaded,
            versions: AtomicU64::new(1),
            workers,
        })
    }

    /// The config version in force; hold it for the whole payment.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Re-reads the config file; validates it whole, then swaps it in.
    /// `force`: reload even if the file's bytes are unchanged (SIGHUP, endpoint).
    /// Also returns the snapshot it replaced, for [`retire`].
    fn reload(&self, force: bool) -> (Result<Reloaded, ConfigError>, Option<Arc<Snapshot>>) {
        let Some(path) = &self.config_path else {
            return (Ok(self.unchanged()), None);
        };
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        // Taken before the read: a write in between shows at the next event.
        let stamp = Stamp::of(path);
        // Certificates and secret files are read to be compared: once per reload.
        let same_inputs = std::cell::OnceCell::new();
        let inputs_unchanged = || *same_inputs.get_or_init(|| self.current.load().inputs.unchanged());
        let same_stamp = stamp.is_some() && stamp == loaded.stamp;
        if !force && same_stamp && inputs_unchanged() {
            return (Ok(self.unchanged()), None);
        }
        // An unsettled or changed stamp: compare the bytes, hashed as they
        // stream in, before holding them all (7 MB beside the live snapshot
        // would be the process's peak). A same stamp already says they match.
        if !force && !same_stamp && file_digest(path).is_ok_and(|d| d == loaded.digest) && inputs_unchanged() {
            loaded.stamp = stamp;
            return (Ok(self.unchanged()), None);
        }
        let result = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })
            .and_then(|text| {
                // The file may have changed again since it was hashed: the
                // digest kept is the one of the text parsed.
                let text_digest = digest(&text);
                if !force && text_digest == loaded.digest && inputs_unchanged() {
                    return Ok(None);
                }
                Config::parse(&text, path).map(|config| Some((config, text_digest)))
            });
        match result {
            Ok(None) => {
                loaded.stamp = stamp;
                (Ok(self.unchanged()), None)
            }
            Ok(Some((config, text_digest))) => {
                let previous = self.current.load_full();
                if config.server.listen != previous.server.listen
                    || config.server.admin_listen != previous.server.admin_listen
                {
                    tracing::warn!("listen addresses changed in the config; they take effect at the next restart");
                }
                if config.server.tls.is_some() != previous.server.tls.is_some() {
                    tracing::warn!("[server.tls] added or removed; plain HTTP or TLS on the payment listener changes at the next restart");
                }
                let (old, new) = (&previous.state, &config.state);
                if old.backend != new.backend || old.redis_url != new.redis_url || old.key_prefix != new.key_prefix {
                    tracing::warn!(
                        "[state] backend, redis_url or key_prefix changed; they take effect at the next restart"
                    );
                }
                let version = self.versions.fetch_add(1, Ordering::Relaxed) + 1;
                let summary = config.summary();
                let next = Snapshot::build(config, version, Some(&previous), &self.metrics, self.workers);
                self.current.store(Arc::new(next));
                *loaded = Loaded {
                    digest: text_digest,
                    stamp,
                };
                self.metrics.reload(true);
                self.metrics.config_version.set(version as i64);
                tracing::info!(version, %summary, "config reloaded");
                (Ok(Reloaded { version, changed: true }), Some(previous))
            }
            Err(e) => {
                self.metrics.reload(false);
                for line in e.lines() {
                    tracing::error!("config reload refused, old config stays: {line}");
                }
                (Err(e), None)
            }
        }
    }

    /// The answer of a reload that changed nothing.
    fn unchanged(&self) -> Reloaded {
        Reloaded {
            version: self.current.load().version,
            changed: false,
        }
    }

    /// Reloads (see `reload`) on a thread of its own at a low CPU priority
    /// (nice 10), and answers as soon as the new config is in force. Parsing
    /// 100,000 merchants is ~0.2 s of CPU; on a box whose cores serve
    /// payments that time should come from idle cycles, not from the payment
    /// workers. Under a saturating load a reload takes longer instead; the
    /// old config serves meanwhile, as it does during any reload. The thread
    /// then stays to free the replaced config ([`retire`]).
    pub async fn reload_in_background(
        self: Arc<Self>,
        force: bool,
    ) -> Result<Result<Reloaded, ConfigError>, ReloadThreadFailed> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("payroute-reload".into())
            .spawn(move || {
                lower_priority();
                let (result, replaced) = self.reload(force);
                // A refused file was parsed too: its temporaries are as large
                // as those of one that took effect.
                let parsed = result.as_ref().map_or(true, |r| r.changed);
                let _ = tx.send(result);
                if let Some(old) = replaced {
                    retire(old);
                }
                if parsed {
                    release_freed_memory();
                }
            })
            .map_err(|e| ReloadThreadFailed(e.to_string()))?;
        rx.await.map_err(|_| ReloadThreadFailed("it panicked".into()))
    }

    /// Background upkeep: drop idle rate-limit keys and past days.
    pub async fn housekeep(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        loop {
            tick.tick().await;
            let keys = self.snapshot().rate_limits.housekeep();
            self.metrics.rate_limiter_keys.set(keys as i64);
            self.store.local().housekeep();
        }
    }
}

/// Frees a replaced snapshot on this thread once no payment holds it.
/// Whoever drops the last `Arc` frees the whole config (100,000 merchants:
/// milliseconds); left alone, that is the last payment still running on the
/// old version, on a payment worker. Payments end by their deadline, so the
/// wait is bounded by it; past that the holder frees it after all.
fn retire(old: Arc<Snapshot>) {
    let give_up = Instant::now() + old.server.deadline + Duration::from_secs(1);
    // `ArcSwap::store` has turned every reader's borrow of the old value into
    // a counted reference by now, so the count is exact.
    while Arc::strong_count(&old) > 1 && Instant::now() < give_up {
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Nice 10 for the calling thread (on Linux the nice value is per thread). A
/// failure only means the reload runs at normal priority, so it is ignored.
fn lower_priority() {
    // SAFETY: gettid and setpriority have no memory-safety preconditions;
    // they change this thread's scheduling weight and nothing else.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10);
    }
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// [`digest`] of a file's bytes, hashed as they are read (a stack buffer at a time).
fn file_digest(path: &Path) -> std::io::Result<[u8; 32]> {
    let mut hasher = Sha256::new();
    std::io::copy(&mut std::fs::File::open(path)?, &mut hasher)?;
    Ok(hasher.finalize().into())
}

/// Returns freed heap memory to the OS. An allocator keeps what a config
/// parse freed (~170 MB for 100,000 merchants) mapped and resident; releasing
/// it once per load (and keeping the text as a digest) gave 57.6 → 27.7 MiB
/// idle with 100,000 merchants under glibc. The payroute binary allocates
/// with mimalloc (`main.rs`), whose `mi_collect` does the same for the
/// calling thread's heap — the one that just parsed — and for its abandoned
/// pages; glibc's `malloc_trim` covers builds on the system allocator. A few
/// milliseconds, off the request path (startup, and the reload thread).
pub(crate) fn release_freed_memory() {
    // SAFETY: mi_collect has no preconditions; with mimalloc not in use it
    // only visits mimalloc's own (empty) heap.
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own heap under its arena locks;
    // it has no preconditions and is safe to call from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::{File, FileTimes};

    /// Writes `text` and dates the file `age` back.
    fn write_aged(path: &Path, text: &str, age: Duration) {
        std::fs::write(path, text).unwrap();
        let when = SystemTime::now() - age;
        let file = File::options().write(true).open(path).unwrap();
        file.set_times(FileTimes::new().set_modified(when).set_accessed(when))
            .unwrap();
    }

    #[test]
    fn a_settled_file_keeps_its_stamp_until_touched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.toml");
        write_aged(&path, "a = 1\n", Duration::from_secs(60));
        let first = Stamp::of(&path).expect("settled file");
        // Another file in the directory changing is no change of this one.
        std::fs::write(dir.path().join("payroute.log"), "line\n").unwrap();
        assert_eq!(Stamp::of(&path), Some(first));

        // Same size, other content, older mtime still: only mtime tells.
        write_aged(&path, "a = 2\n", Duration::from_secs(30));
        assert_ne!(Stamp::of(&path), Some(first));

        // Replaced by a rename: another inode.
        let next = dir.path().join("routes.toml.new");
        write_aged(&next, "a = 2\n", Duration::from_secs(30));
        let before = Stamp::of(&path);
        std::fs::rename(&next, &path).unwrap();
        assert_ne!(Stamp::of(&path), before);
    }

    fn snapshot(deadline_ms: u64) -> Arc<Snapshot> {
        let text =
            format!("[server]\ndeadline_ms = {deadline_ms}\n[[channel]]\nid = \"a\"\nurl = \"http://127.0.0.1:1\"\n");
        let config = Config::parse(&text, "t.toml".as_ref()).unwrap();
        Arc::new(Snapshot::build(config, 1, None, &Metrics::new(), 1))
    }

    #[test]
    fn a_replaced_snapshot_is_freed_by_the_reload_thread_once_payments_let_go() {
        let old = snapshot(10_000);
        let payment = old.clone();
        let freed = Arc::downgrade(&old);
        let retiring = std::thread::spawn(move || retire(old));
        std::thread::sleep(Duration::from_millis(30));
        assert!(!retiring.is_finished(), "waits while a payment holds the old version");
        drop(payment);
        retiring.join().unwrap();
        assert!(freed.upgrade().is_none(), "freed by the retiring thread");
    }

    #[test]
    fn the_reload_thread_runs_at_low_priority_and_others_do_not() {
        // SAFETY: getpriority only reads this thread's nice value.
        let nice = || unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) };
        let before = nice();
        let lowered = std::thread::spawn(move || {
            lower_priority();
            nice()
        })
        .join()
        .unwrap();
        assert!(lowered >= 10, "nice {lowered}");
        assert_eq!(nice(), before, "only the calling thread");
    }

    #[test]
    fn retiring_gives_up_after_the_deadline() {
        let old = snapshot(1);
        let payment = old.clone();
        let started = Instant::now();
        retire(old);
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(Arc::strong_count(&payment), 1, "the payment frees it when it ends");
    }

    #[test]
    fn a_file_hashes_as_its_text_does() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.toml");
        // Longer than any read buffer, so the hash spans many reads.
        let text = "# merchant line\n".repeat(20_000);
        std::fs::write(&path, &text).unwrap();
        assert_eq!(file_digest(&path).unwrap(), digest(&text));
        assert!(file_digest(&dir.path().join("missing.toml")).is_err());
    }

    #[test]
    fn a_fresh_file_is_compared_by_content_and_reloaded_only_when_it_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.toml");
        let text = "[[channel]]\nid = \"a\"\nurl = \"http://127.0.0.1:1\"\n";
        std::fs::write(&path, text).unwrap();
        let config = Config::parse(text, &path).unwrap();
        let app = App::new(
            config,
            text.to_owned(),
            Some(path.clone()),
            Metrics::new(),
            Store::memory(10),
            1,
        );
        // Just written, so no trusted stamp: a file event hashes the file, finds
        // the same bytes and changes nothing.
        let (result, replaced) = app.reload(false);
        assert_eq!(
            result.unwrap(),
            Reloaded {
                version: 1,
                changed: false
            }
        );
        assert!(replaced.is_none());
        // Other bytes: a reload, and the replaced snapshot handed back.
        std::fs::write(&path, format!("{text}fee_percent = 1.5\n")).unwrap();
        let (result, replaced) = app.reload(false);
        assert_eq!(
            result.unwrap(),
            Reloaded {
                version: 2,
                changed: true
            }
        );
        assert_eq!(replaced.map(|s| s.version), Some(1));
        assert_eq!(app.snapshot().version, 2);
    }

    #[test]
    fn a_fresh_or_missing_file_has_no_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.toml");
        assert_eq!(Stamp::of(&path), None, "missing");
        std::fs::write(&path, "a = 1\n").unwrap();
        assert_eq!(Stamp::of(&path), None, "just written: compared by content");
    }
}
