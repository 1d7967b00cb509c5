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

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    /// SHA-256 of the config in force, so a file event that changed nothing is
    /// no reload (the text itself would keep megabytes resident).
    loaded_digest: Mutex<[u8; 32]>,
    versions: AtomicU64,
}

/// A reload that took effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reloaded {
    pub version: u64,
    pub changed: bool,
}

impl App {
    pub fn new(config: Config, text: String, config_path: Option<PathBuf>, metrics: Metrics, store: Store) -> Arc<App> {
        let snapshot = Snapshot::build(config, 1, None, &metrics);
        metrics.config_version.set(1);
        let loaded_digest = Mutex::new(digest(&text));
        drop(text);
        release_freed_memory();
        Arc::new(App {
            current: ArcSwap::from_pointee(snapshot),
            metrics,
            store,
            reversals: Arc::default(),
            config_path,
            loaded_digest,
            versions: AtomicU64::new(1),
        })
    }

    /// The config version in force; hold it for the whole payment.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Re-reads the config file; validates it whole, then swaps it in.
    /// `force`: reload even if the file's bytes are unchanged (SIGHUP, endpoint).
    pub fn reload(&self, force: bool) -> Result<Reloaded, ConfigError> {
        let Some(path) = &self.config_path else {
            return Ok(Reloaded {
                version: self.current.load().version,
                changed: false,
            });
        };
        let mut loaded = self.loaded_digest.lock().unwrap_or_else(|p| p.into_inner());
        let result = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })
            .and_then(|text| {
                // Same text and the same certificates and secret files: nothing to do.
                let text_digest = digest(&text);
                if !force && text_digest == *loaded && self.current.load().inputs.unchanged() {
                    return Ok(None);
                }
                Config::parse(&text, path).map(|config| Some((config, text_digest)))
            });
        match result {
            Ok(None) => Ok(Reloaded {
                version: self.current.load().version,
                changed: false,
            }),
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
                let next = Snapshot::build(config, version, Some(&previous), &self.metrics);
                self.current.store(Arc::new(next));
                drop(previous);
                *loaded = text_digest;
                self.metrics.reload(true);
                self.metrics.config_version.set(version as i64);
                tracing::info!(version, %summary, "config reloaded");
                release_freed_memory();
                Ok(Reloaded { version, changed: true })
            }
            Err(e) => {
                // A refused file was parsed too: its temporaries are as large.
                release_freed_memory();
                self.metrics.reload(false);
                for line in e.lines() {
                    tracing::error!("config reload refused, old config stays: {line}");
                }
                Err(e)
            }
        }
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

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// Returns freed heap memory to the OS. An allocator keeps what a config
/// parse freed (~170 MB for 100,000 merchants) mapped and resident; releasing
/// it once per load (and keeping the text as a digest) gave 57.6 → 27.7 MiB
/// idle with 100,000 merchants under glibc. The payroute binary allocates
/// with mimalloc (`main.rs`), whose `mi_collect` does the same for the
/// calling thread's heap — the one that just parsed — and for its abandoned
/// pages; glibc's `malloc_trim` covers builds on the system allocator. A few
/// milliseconds, off the request path (startup, and reloads on the blocking pool).
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
