//! Did the config change? The config file, what it held when last loaded,
//! and the cheapest way to tell whether a file event changed it.
//!
//! The watcher watches the config's directory, where logs and other files
//! change all the time, so most events change nothing, and the config can
//! be megabytes (100,000 merchants). Each event therefore costs as little as
//! it can:
//!
//! 1. a `stat`: a file whose [`Stamp`] is what it was at the last load is not
//!    read at all;
//! 2. a file whose stamp changed or cannot be trusted (written moments ago)
//!    is hashed as it streams in, and is read whole only if its bytes differ;
//! 3. a file read whole is compared once more by digest (it may have changed
//!    back since it was hashed), and parsed only if it differs.
//!
//! The text in force is kept only as its SHA-256: keeping the text itself
//! would keep megabytes resident for the life of a version. Certificates and
//! secret files are part of the config too (`Inputs`): a reload with the
//! same routes.toml still happens when one of them changed.

use std::cell::OnceCell;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use crate::config::{Config, ConfigError};

/// The config file, and what it held when the config in force was loaded.
pub(crate) struct ConfigFile {
    path: PathBuf,
    loaded: Loaded,
}

/// The config file in force, as seen when it was loaded.
#[derive(Debug)]
pub(crate) struct Loaded {
    /// SHA-256 of the text, so a file event that changed nothing is no
    /// reload (the text itself would keep megabytes resident).
    digest: [u8; 32],
    /// `stat` of the file, so an event that did not touch it is not even a read.
    stamp: Option<Stamp>,
}

/// What [`ConfigFile::read_if_changed`] found.
#[derive(Debug)]
pub(crate) enum Change {
    /// The file and the files it names are what is in force.
    Unchanged,
    /// A valid config that differs (or a forced reload): once it is in force,
    /// [`ConfigFile::adopt`] its `loaded`.
    Changed { config: Box<Config>, loaded: Loaded },
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

impl ConfigFile {
    /// The file at `path`, whose `text` is the config in force.
    pub fn new(path: PathBuf, text: &str) -> ConfigFile {
        let loaded = Loaded {
            digest: digest(text),
            stamp: Stamp::of(&path),
        };
        ConfigFile { path, loaded }
    }

    /// Reads and parses the file, unless it and the files it names
    /// (`inputs_unchanged`, asked at most once) are what is in force.
    /// `force` (SIGHUP, `POST /-/reload`): parse it in any case.
    pub fn read_if_changed(&mut self, force: bool, inputs_unchanged: impl Fn() -> bool) -> Result<Change, ConfigError> {
        // Taken before the read: a write in between shows at the next event.
        let stamp = Stamp::of(&self.path);
        // Certificates and secret files are read to be compared: once per reload.
        let same_inputs = OnceCell::new();
        let inputs_unchanged = || *same_inputs.get_or_init(&inputs_unchanged);
        if !force {
            // A same stamp says the bytes match; otherwise they are hashed as
            // they stream in, before holding them all (megabytes beside the
            // live snapshot would be the process's peak).
            let same_stamp = stamp.is_some() && stamp == self.loaded.stamp;
            let same_bytes = same_stamp || file_digest(&self.path).is_ok_and(|d| d == self.loaded.digest);
            if same_bytes && inputs_unchanged() {
                self.loaded.stamp = stamp;
                return Ok(Change::Unchanged);
            }
        }
        let text = std::fs::read_to_string(&self.path).map_err(|source| ConfigError::Read {
            path: self.path.clone(),
            source,
        })?;
        // The file may have changed again since it was hashed: the digest
        // kept is the one of the text parsed.
        let digest = digest(&text);
        if !force && digest == self.loaded.digest && inputs_unchanged() {
            self.loaded.stamp = stamp;
            return Ok(Change::Unchanged);
        }
        let config = Config::parse(&text, &self.path)?;
        Ok(Change::Changed {
            config: Box::new(config),
            loaded: Loaded { digest, stamp },
        })
    }

    /// Records that the config `loaded` describes is in force now.
    pub fn adopt(&mut self, loaded: Loaded) {
        self.loaded = loaded;
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
    fn a_fresh_or_missing_file_has_no_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.toml");
        assert_eq!(Stamp::of(&path), None, "missing");
        std::fs::write(&path, "a = 1\n").unwrap();
        assert_eq!(Stamp::of(&path), None, "just written: compared by content");
    }

    const TEXT: &str = "[[channel]]\nid = \"a\"\nurl = \"http://127.0.0.1:1\"\n";

    #[test]
    fn the_same_file_is_a_change_only_when_forced_or_when_an_input_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.toml");
        write_aged(&path, TEXT, Duration::from_secs(60));
        let mut file = ConfigFile::new(path.clone(), TEXT);
        let asked = std::cell::Cell::new(0);
        let same = || {
            asked.set(asked.get() + 1);
            true
        };
        assert!(matches!(file.read_if_changed(false, same), Ok(Change::Unchanged)));
        assert_eq!(asked.get(), 1, "the inputs are compared once");
        assert!(matches!(file.read_if_changed(true, same), Ok(Change::Changed { .. })));
        assert!(matches!(
            file.read_if_changed(false, || false),
            Ok(Change::Changed { .. })
        ));
    }

    #[test]
    fn a_changed_file_stays_a_change_until_adopted_and_a_broken_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.toml");
        std::fs::write(&path, TEXT).unwrap();
        let mut file = ConfigFile::new(path.clone(), TEXT);
        std::fs::write(&path, format!("{TEXT}fee_percent = 1.5\n")).unwrap();
        let Ok(Change::Changed { config, loaded }) = file.read_if_changed(false, || true) else {
            panic!("other bytes are a change");
        };
        assert_eq!(config.channels[0].fee_percent, 1.5);
        assert!(matches!(
            file.read_if_changed(false, || true),
            Ok(Change::Changed { .. })
        ));
        file.adopt(loaded);
        assert!(matches!(file.read_if_changed(false, || true), Ok(Change::Unchanged)));

        std::fs::write(&path, "[[channel]]\nid = 1\n").unwrap();
        assert!(matches!(
            file.read_if_changed(false, || true),
            Err(ConfigError::Invalid { .. })
        ));
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(
            file.read_if_changed(false, || true),
            Err(ConfigError::Read { .. })
        ));
    }
}
