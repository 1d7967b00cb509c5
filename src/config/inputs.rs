//! The files a config is built from besides routes.toml itself: TLS
//! certificates and keys, CA bundles, `file:` secrets.
//!
//! A certificate renewal or a rotated secret file changes no byte of
//! routes.toml, yet must take effect like a config change. So validation
//! reads every such file through [`Inputs::read`], which remembers its path
//! and a digest of what was read. A reload triggered by a file event then
//! asks [`Inputs::unchanged`] before deciding that nothing changed, and the
//! file watcher watches the [`Inputs::dirs`] too (directories, not files, for
//! the same reason as the config: renewals arrive by rename or symlink swap).

use std::fmt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Files read while validating one config, with digests of their content.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct Inputs {
    files: Vec<(PathBuf, [u8; 32])>,
}

impl Inputs {
    /// Reads `path` and remembers it (once, however often it is read).
    pub(super) fn read(&mut self, path: &Path) -> std::io::Result<Vec<u8>> {
        let bytes = std::fs::read(path)?;
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        match self.files.iter_mut().find(|(p, _)| p == path) {
            Some(entry) => entry.1 = digest,
            None => self.files.push((path.to_owned(), digest)),
        }
        Ok(bytes)
    }

    /// The files, in the order first read.
    #[cfg(test)]
    pub fn files(&self) -> Vec<PathBuf> {
        self.files.iter().map(|(p, _)| p.clone()).collect()
    }

    /// Whether every file still has the content it had when validated (a
    /// file that cannot be read any more has changed).
    pub fn unchanged(&self) -> bool {
        self.files.iter().all(|(path, digest)| {
            std::fs::read(path).is_ok_and(|bytes| <[u8; 32]>::from(Sha256::digest(&bytes)) == *digest)
        })
    }

    /// The directories holding the files, without repeats.
    pub fn dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        for (path, _) in &self.files {
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
                _ => PathBuf::from("."),
            };
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        dirs
    }
}

/// Paths only: digests of secret files are nobody's business.
impl fmt::Debug for Inputs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.files.iter().map(|(p, _)| p)).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_changed_and_vanished_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.pem");
        std::fs::write(&a, "one").unwrap();
        let mut inputs = Inputs::default();
        assert_eq!(inputs.read(&a).unwrap(), b"one");
        inputs.read(&a).unwrap();
        assert_eq!(inputs.files(), std::slice::from_ref(&a));
        assert_eq!(inputs.dirs(), [dir.path().to_owned()]);
        assert!(inputs.unchanged());
        std::fs::write(&a, "two").unwrap();
        assert!(!inputs.unchanged());
        std::fs::remove_file(&a).unwrap();
        assert!(!inputs.unchanged());
        assert_eq!(format!("{inputs:?}"), format!("[{a:?}]"), "paths only in Debug");
    }
}
