//! Secrets in routes.toml: `env:NAME` and `file:PATH` references, and the
//! [`Secret`] type that never prints.
//!
//! A routes.toml is reviewed, committed and copied around; the credentials
//! it needs (acquirers' header values, merchants' key hashes, the admin
//! token) belong where the platform keeps secrets: environment variables set
//! by the orchestrator, or files mounted from a secret store. So any of those
//! values may be written `env:NAME` or `file:PATH` instead of literally.
//! Anything else is a literal value.
//!
//! - References are resolved while the config is validated, so `payroute
//!   check` proves they resolve and a reload re-reads them (a rotated secret
//!   file is picked up like a changed config).
//! - `file:` paths are relative to the config file's directory. Exactly one
//!   trailing newline (`\n` or `\r\n`) is trimmed: `echo` and editors add one.
//! - A reference that resolves to nothing (unset variable, missing file,
//!   empty value) is a config error that names the key and the variable or
//!   path — never the value: config errors land in terminals and CI logs. An
//!   empty value is refused rather than taken, because an empty credential is
//!   always a mistake (and an empty `admin_token` would silently turn
//!   authentication off).

use std::fmt;
use std::path::{Path, PathBuf};

use super::inputs::Inputs;

/// A credential from the config: `Debug` and `Display` never show it; code
/// that needs the value asks for it by name with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(pub(super) String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Why a secret reference did not resolve. Never carries the value.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SecretError {
    #[error("`env:` needs a variable name")]
    NoVariable,
    #[error("environment variable {name} is not set")]
    EnvMissing { name: String },
    #[error("environment variable {name} is not valid UTF-8")]
    EnvNotUnicode { name: String },
    #[error("environment variable {name} is empty")]
    EnvEmpty { name: String },
    #[error("`file:` needs a path")]
    NoPath,
    #[error("cannot read secret file {}: {source}", path.display())]
    FileUnreadable { path: PathBuf, source: std::io::Error },
    #[error("secret file {} is not valid UTF-8", path.display())]
    FileNotUnicode { path: PathBuf },
    #[error("secret file {} is empty", path.display())]
    FileEmpty { path: PathBuf },
}

/// Resolves a value as written: `env:NAME`, `file:PATH` (relative to `base`,
/// recorded in `inputs` so reloads notice it change), or a literal.
pub(super) fn resolve(written: &str, base: &Path, inputs: &mut Inputs) -> Result<Secret, SecretError> {
    if let Some(name) = written.strip_prefix("env:") {
        let name = name.trim();
        if name.is_empty() {
            return Err(SecretError::NoVariable);
        }
        return match std::env::var(name) {
            Ok(v) if v.is_empty() => Err(SecretError::EnvEmpty { name: name.to_owned() }),
            Ok(v) => Ok(Secret(v)),
            Err(std::env::VarError::NotPresent) => Err(SecretError::EnvMissing { name: name.to_owned() }),
            Err(std::env::VarError::NotUnicode(_)) => Err(SecretError::EnvNotUnicode { name: name.to_owned() }),
        };
    }
    if let Some(path) = written.strip_prefix("file:") {
        let path = path.trim();
        if path.is_empty() {
            return Err(SecretError::NoPath);
        }
        let path = base.join(path);
        let bytes = inputs.read(&path).map_err(|source| SecretError::FileUnreadable {
            path: path.clone(),
            source,
        })?;
        let mut text = String::from_utf8(bytes).map_err(|_| SecretError::FileNotUnicode { path: path.clone() })?;
        let trimmed = text
            .strip_suffix("\r\n")
            .or_else(|| text.strip_suffix('\n'))
            .map(str::len);
        if let Some(len) = trimmed {
            text.truncate(len);
        }
        if text.is_empty() {
            return Err(SecretError::FileEmpty { path });
        }
        return Ok(Secret(text));
    }
    Ok(Secret(written.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve_here(written: &str, base: &Path) -> Result<Secret, SecretError> {
        resolve(written, base, &mut Inputs::default())
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret("hunter2".into());
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{s}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn literals_stay_literal() {
        let s = resolve_here("Bearer abc", Path::new(".")).unwrap();
        assert_eq!(s.expose(), "Bearer abc");
        assert_eq!(
            resolve_here("Bearer env:x", Path::new(".")).unwrap().expose(),
            "Bearer env:x"
        );
    }

    #[test]
    fn env_references_resolve_or_name_the_variable() {
        // PATH is set in every test environment; a unique name is not.
        let path = resolve_here("env:PATH", Path::new(".")).unwrap();
        assert_eq!(path.expose(), std::env::var("PATH").unwrap());
        let err = resolve_here("env:PAYROUTE_TEST_SURELY_UNSET_9F2C", Path::new(".")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable PAYROUTE_TEST_SURELY_UNSET_9F2C is not set"
        );
        assert!(matches!(
            resolve_here("env:", Path::new(".")),
            Err(SecretError::NoVariable)
        ));
    }

    #[test]
    fn file_references_trim_one_newline_and_are_recorded() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("key"), "s3cret\n\n").unwrap();
        std::fs::write(dir.path().join("crlf"), "s3cret\r\n").unwrap();
        std::fs::write(dir.path().join("empty"), "\n").unwrap();
        let mut inputs = Inputs::default();
        let s = resolve("file:key", dir.path(), &mut inputs).unwrap();
        assert_eq!(s.expose(), "s3cret\n", "only one newline is trimmed");
        assert_eq!(inputs.files(), [dir.path().join("key")]);
        assert_eq!(resolve_here("file:crlf", dir.path()).unwrap().expose(), "s3cret");
        assert!(matches!(
            resolve_here("file:empty", dir.path()),
            Err(SecretError::FileEmpty { .. })
        ));
        let err = resolve_here("file:missing", dir.path()).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
