//! Reloads: a new config version comes in whole, or not at all.
//!
//! Three triggers ask for one: the config's files changing and SIGHUP
//! ([`watch`]), and `POST /-/reload` (the admin API). [`Reloader`] runs it:
//! [`change`] says whether the file changed and parses it if so (validated
//! whole: one error and the old config stays), the [`App`] builds the next
//! snapshot beside the one in force and swaps it in, and the reload thread
//! frees the replaced one.
//!
//! A reload runs on a thread of its own at a low CPU priority
//! ([`crate::os::lower_priority`]): parsing a large config is a noticeable
//! slice of a CPU second, and on a box whose cores serve payments that time
//! should come from idle cycles, not from the payment workers. Under a
//! saturating load a reload takes longer instead; the old config serves
//! meanwhile, as it does during any reload. Reloads are serialized by the
//! lock on the config file, which only reloads take, never a payment.

pub(crate) mod change;
pub(crate) mod watch;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::app::App;
use crate::config::{Config, ConfigError};
use crate::snapshot::Snapshot;
use change::{Change, ConfigFile};

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

/// How the newest reload ended, whatever triggered it (a file event that
/// found the bytes in force aside): what the web console shows as "last
/// reload".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LastReload {
    /// When it ended, in Unix milliseconds.
    pub at_ms: i64,
    /// The version in force after it (the old one when refused).
    pub version: u64,
    /// `Ok(changed)`: it took effect (`false`: the file had not changed);
    /// `Err(lines)`: refused, with the first [`LAST_RELOAD_LINES`] of its
    /// located errors (`FILE:LINE:COL: message`; config errors never quote a
    /// secret) and how many there were.
    pub result: Result<bool, (Vec<String>, usize)>,
}

/// How many of a refused reload's error lines [`LastReload`] keeps.
pub(crate) const LAST_RELOAD_LINES: usize = 20;

/// Runs reloads of one [`App`] from its config file.
pub(crate) struct Reloader {
    app: Arc<App>,
    /// `None` for an embedded config (the demo): nothing to reload from.
    file: Option<Mutex<ConfigFile>>,
    /// `None` until the first reload.
    last: Mutex<Option<LastReload>>,
}

impl Reloader {
    pub fn new(app: Arc<App>, file: Option<ConfigFile>) -> Arc<Reloader> {
        Arc::new(Reloader {
            app,
            file: file.map(Mutex::new),
            last: Mutex::new(None),
        })
    }

    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// How the newest reload ended; `None` before the first.
    pub fn last(&self) -> Option<LastReload> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn remember(&self, result: &Result<Reloaded, ConfigError>) {
        let version = self.app.snapshot().version;
        let result = match result {
            Ok(done) => Ok(done.changed),
            Err(e) => {
                let lines = e.lines();
                let count = lines.len();
                Err((lines.into_iter().take(LAST_RELOAD_LINES).collect(), count))
            }
        };
        let last = LastReload {
            at_ms: crate::journal::now_ms(),
            version,
            result,
        };
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(last);
    }

    /// Reloads (see [`Reloader::reload`]) on a thread of its own at a low CPU
    /// priority (see the module doc), and answers as soon as the new config
    /// is in force. The thread then stays to free the replaced config
    /// ([`retire`]) and to hand the parse's memory back to the OS.
    pub async fn reload_in_background(
        self: Arc<Self>,
        force: bool,
    ) -> Result<Result<Reloaded, ConfigError>, ReloadThreadFailed> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("payroute-reload".into())
            .spawn(move || {
                crate::os::lower_priority();
                let (result, replaced) = self.reload(force);
                // A refused file was parsed too: its temporaries are as large
                // as those of one that took effect.
                let parsed = result.as_ref().map_or(true, |r| r.changed);
                let _ = tx.send(result);
                if let Some(old) = replaced {
                    retire(old);
                }
                if parsed {
                    crate::os::release_freed_memory();
                }
            })
            .map_err(|e| ReloadThreadFailed(e.to_string()))?;
        rx.await.map_err(|_| ReloadThreadFailed("it panicked".into()))
    }

    /// Re-reads the config file; validates it whole, then swaps it in.
    /// `force`: reload even if nothing changed (SIGHUP, endpoint).
    /// Also returns the snapshot it replaced, for [`retire`]. The result is
    /// kept as [`Reloader::last`].
    fn reload(&self, force: bool) -> (Result<Reloaded, ConfigError>, Option<Arc<Snapshot>>) {
        let (result, replaced) = self.reload_file(force);
        // A file event that found the bytes in force is no reload to speak
        // of (an editor's swap file, a neighbour's write): not remembered.
        if force || !matches!(result, Ok(Reloaded { changed: false, .. })) {
            self.remember(&result);
        }
        (result, replaced)
    }

    fn reload_file(&self, force: bool) -> (Result<Reloaded, ConfigError>, Option<Arc<Snapshot>>) {
        let Some(file) = &self.file else {
            return (Ok(self.unchanged()), None);
        };
        let mut file = file.lock().unwrap_or_else(|p| p.into_inner());
        match file.read_if_changed(force, || self.app.snapshot().inputs.unchanged()) {
            Ok(Change::Unchanged) => (Ok(self.unchanged()), None),
            Ok(Change::Changed { config, loaded }) => {
                warn_restart_only(&self.app.snapshot(), &config);
                let summary = config.summary();
                let (version, replaced) = self.app.install(*config);
                file.adopt(loaded);
                self.app.metrics.reload(true);
                tracing::info!(version, %summary, "config reloaded");
                (Ok(Reloaded { version, changed: true }), Some(replaced))
            }
            Err(e) => {
                self.app.metrics.reload(false);
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
            version: self.app.snapshot().version,
            changed: false,
        }
    }
}

/// Settings a reload takes in but that only a restart applies: said once,
/// at the reload that changed them.
fn warn_restart_only(in_force: &Snapshot, next: &Config) {
    if next.server.listen != in_force.server.listen || next.server.admin_listen != in_force.server.admin_listen {
        tracing::warn!("listen addresses changed in the config; they take effect at the next restart");
    }
    if next.server.tls.is_some() != in_force.server.tls.is_some() {
        tracing::warn!(
            "[server.tls] added or removed; plain HTTP or TLS on the payment listener changes at the next restart"
        );
    }
    let (old, new) = (&in_force.state, &next.state);
    if old.backend != new.backend || old.redis_url != new.redis_url || old.key_prefix != new.key_prefix {
        tracing::warn!("[state] backend, redis_url or key_prefix changed; they take effect at the next restart");
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::state::Store;

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
    fn retiring_gives_up_after_the_deadline() {
        let old = snapshot(1);
        let payment = old.clone();
        let started = Instant::now();
        retire(old);
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(Arc::strong_count(&payment), 1, "the payment frees it when it ends");
    }

    #[test]
    fn a_fresh_file_is_compared_by_content_and_reloaded_only_when_it_changed() {
        let (journal, _dir, _rt) = crate::journal::scratch();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.toml");
        let text = "[[channel]]\nid = \"a\"\nurl = \"http://127.0.0.1:1\"\n";
        std::fs::write(&path, text).unwrap();
        let config = Config::parse(text, &path).unwrap();
        let app = App::new(config, Metrics::new(), Store::memory(10), journal.clone(), 1);
        let reloader = Reloader::new(app.clone(), Some(ConfigFile::new(path.clone(), text)));
        assert_eq!(reloader.last(), None, "no reload yet");
        // Just written, so no trusted stamp: a file event hashes the file, finds
        // the same bytes and changes nothing (and is not remembered).
        let (result, replaced) = reloader.reload(false);
        assert_eq!(
            result.unwrap(),
            Reloaded {
                version: 1,
                changed: false
            }
        );
        assert!(replaced.is_none());
        assert_eq!(reloader.last(), None);
        // Other bytes: a reload, and the replaced snapshot handed back.
        std::fs::write(&path, format!("{text}fee_percent = 1.5\n")).unwrap();
        let (result, replaced) = reloader.reload(false);
        assert_eq!(
            result.unwrap(),
            Reloaded {
                version: 2,
                changed: true
            }
        );
        assert_eq!(replaced.map(|s| s.version), Some(1));
        assert_eq!(app.snapshot().version, 2);
        // A broken file is refused whole: the version in force stays.
        std::fs::write(&path, "[[channel]]\nid = 1\n").unwrap();
        let (result, replaced) = reloader.reload(false);
        assert!(matches!(result, Err(ConfigError::Invalid { .. })));
        assert!(replaced.is_none());
        assert_eq!(app.snapshot().version, 2);
        // ...and remembered as refused, with its located lines.
        let last = reloader.last().expect("a reload happened");
        assert_eq!(last.version, 2);
        let (lines, count) = last.result.expect_err("refused");
        assert!(count >= 1 && lines.len() == count.min(LAST_RELOAD_LINES), "{lines:?}");
        assert!(lines[0].starts_with(&format!("{}:", path.display())), "{lines:?}");
    }

    #[test]
    fn an_embedded_config_reloads_to_itself_on_the_reload_thread() {
        let (journal, _dir, rt) = crate::journal::scratch();
        rt.block_on(embedded_config_reloads_to_itself(journal));
    }

    async fn embedded_config_reloads_to_itself(journal: crate::journal::Journal) {
        let text = "[[channel]]\nid = \"a\"\nurl = \"http://127.0.0.1:1\"\n";
        let config = Config::parse(text, "t.toml".as_ref()).unwrap();
        let app = App::new(config, Metrics::new(), Store::memory(10), journal.clone(), 1);
        let reloader = Reloader::new(app, None);
        let done = reloader.clone().reload_in_background(true).await.unwrap().unwrap();
        assert_eq!(
            done,
            Reloaded {
                version: 1,
                changed: false
            }
        );
        let last = reloader.last().expect("remembered");
        assert_eq!((last.version, last.result), (1, Ok(false)));
    }
}
