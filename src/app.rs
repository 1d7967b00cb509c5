//! The running proxy's state: the current snapshot and what outlives it.
//!
//! `App` is the one shared object: payments read [`App::snapshot`] (one
//! `ArcSwap` load, no lock) and keep that version to the end; a reload has
//! the next version built off to the side and swapped in whole
//! ([`App::install`]). What outlives versions lives here: metrics, the state
//! store, the journal, background reversals, and the number of payment
//! workers that sizes every version's connection pools.
//!
//! This file holds state and changes it in one step. Whether a reload is
//! needed, and the thread it runs on, are [`crate::reload`]'s.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::journal::Journal;
use crate::metrics::Metrics;
use crate::notify::outbox::Doorbell;
use crate::snapshot::Snapshot;
use crate::state::Store;
use crate::upstream::reversal::Reversals;

pub(crate) struct App {
    current: ArcSwap<Snapshot>,
    pub metrics: Metrics,
    /// Rate buckets, daily totals, idempotency records, order memory.
    pub store: Store,
    /// The durable record of every payment (opened once, at start).
    pub journal: Journal,
    /// Ring after committing an outbox event: the outbox sends it at once
    /// instead of at its next look.
    pub outbox: Doorbell,
    /// Reversals running in the background.
    pub reversals: Arc<Reversals>,
    versions: AtomicU64,
    /// Payment workers running (`runtime::Workers::count`): sizes the
    /// per-worker connection pools of every snapshot.
    workers: usize,
    /// This app's own `Arc`, for work that outlives the call that starts it
    /// (a reversal's end is recorded from its background task).
    me: Weak<App>,
}

impl App {
    /// The app with `config` as version 1.
    pub fn new(config: Config, metrics: Metrics, store: Store, journal: Journal, workers: usize) -> Arc<App> {
        let snapshot = Snapshot::build(config, 1, None, &metrics, workers);
        metrics.config_version.set(1);
        Arc::new_cyclic(|me| App {
            current: ArcSwap::from_pointee(snapshot),
            metrics,
            store,
            journal,
            outbox: Doorbell::default(),
            reversals: Arc::default(),
            versions: AtomicU64::new(1),
            workers,
            me: me.clone(),
        })
    }

    /// The `Arc` this app lives in (`None` only while it is being dropped).
    pub fn handle(&self) -> Option<Arc<App>> {
        self.me.upgrade()
    }

    /// The config version in force; hold it for the whole payment.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Builds the next version from `config`, carrying live state over from
    /// the one in force, and swaps it in. Returns the new version number and
    /// the snapshot it replaced (payments may still hold it).
    pub fn install(&self, config: Config) -> (u64, Arc<Snapshot>) {
        let previous = self.current.load_full();
        let version = self.versions.fetch_add(1, Ordering::Relaxed) + 1;
        let next = Snapshot::build(config, version, Some(&previous), &self.metrics, self.workers);
        self.current.store(Arc::new(next));
        self.metrics.config_version.set(version as i64);
        (version, previous)
    }

    /// Background upkeep: drop idle rate-limit keys and past days; read
    /// the channels' effective fees from the newest reconciliations (written
    /// by `payroute reconcile`, another process, maybe another instance).
    pub async fn housekeep(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        loop {
            tick.tick().await;
            let keys = self.snapshot().rate_limits.housekeep();
            self.metrics.rate_limiter_keys.set(keys as i64);
            self.store.local().housekeep();
            match self.journal.latest_fees().await {
                Ok(fees) => {
                    for (channel, base, charged) in fees.iter().filter(|(_, base, _)| *base > 0) {
                        let percent = *charged as f64 * 100.0 / *base as f64;
                        self.metrics
                            .channel_effective_fee
                            .with_label_values(&[channel])
                            .set(percent);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "journal: cannot read the newest reconciliations"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(fee: f64) -> Config {
        let text = format!("[[channel]]\nid = \"a\"\nurl = \"http://127.0.0.1:1\"\nfee_percent = {fee}\n");
        Config::parse(&text, "t.toml".as_ref()).unwrap()
    }

    #[test]
    fn an_install_swaps_in_the_next_version_and_keeps_the_channels_live_state() {
        let (journal, _dir, _rt) = crate::journal::scratch();
        let app = App::new(config(1.0), Metrics::new(), Store::memory(10), journal.clone(), 2);
        let payment = app.snapshot();
        let (version, replaced) = app.install(config(2.0));
        assert_eq!(version, 2);
        assert!(Arc::ptr_eq(&replaced, &payment), "the version payments held");
        let now = app.snapshot();
        assert_eq!((now.version, now.channels[0].config.fee_percent), (2, 2.0));
        assert_eq!(
            payment.channels[0].config.fee_percent, 1.0,
            "a payment keeps its version"
        );
        assert!(Arc::ptr_eq(&now.channels[0].live, &payment.channels[0].live));
    }
}
