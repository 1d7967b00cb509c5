//! The running proxy's state: the current snapshot and what outlives it.
//!
//! `App` is the one shared object: payments read [`App::snapshot`] (one
//! `ArcSwap` load, no lock), reloads build a new [`Snapshot`] off to the side
//! and swap it in whole. Reloads are serialized by a mutex that only reloads
//! take, never a payment.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;

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
    /// The bytes of the config in force, so a file event that changed nothing is no reload.
    loaded_text: Mutex<String>,
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
        Arc::new(App {
            current: ArcSwap::from_pointee(snapshot),
            metrics,
            store,
            reversals: Arc::default(),
            config_path,
            loaded_text: Mutex::new(text),
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
        let mut loaded = self.loaded_text.lock().unwrap_or_else(|p| p.into_inner());
        let result = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })
            .and_then(|text| {
                // Same text and the same certificates and secret files: nothing to do.
                if !force && text == *loaded && self.current.load().inputs.unchanged() {
                    return Ok(None);
                }
                Config::parse(&text, path).map(|config| Some((config, text)))
            });
        match result {
            Ok(None) => Ok(Reloaded {
                version: self.current.load().version,
                changed: false,
            }),
            Ok(Some((config, text))) => {
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
                *loaded = text;
                self.metrics.reload(true);
                self.metrics.config_version.set(version as i64);
                tracing::info!(version, %summary, "config reloaded");
                Ok(Reloaded { version, changed: true })
            }
            Err(e) => {
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
