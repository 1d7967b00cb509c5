//! [`Issues`]: the located problems of one config file, and the checks of
//! single values every table shares (durations with ceilings, numbers in a
//! range, addresses, secrets, files, JSON pointers, currency codes).
//!
//! A leaf of its own so that each table's validator (`validate`, `policy`)
//! uses it without the validators depending on one another, and so a
//! scenario's `[simulation]` table (`crate::simulate`) is checked the same
//! way.

use std::net::SocketAddr;
use std::ops::Range;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use toml::Spanned;

use super::raw::Opt;
use super::{secret, shown, ConfigIssue, Inputs, Secret};

/// Ceilings of durations (ms): generous for any real deployment, far from
/// overflow.
pub(super) const MINUTE_MS: u64 = 60_000;
pub(super) const HOUR_MS: u64 = 60 * MINUTE_MS;
pub(super) const DAY_MS: u64 = 24 * HOUR_MS;

/// `max` in the largest whole unit, for messages.
fn human_ms(ms: u64) -> String {
    match ms {
        ms if ms % DAY_MS == 0 => format!("{} days", ms / DAY_MS),
        ms if ms % HOUR_MS == 0 => format!("{} hours", ms / HOUR_MS),
        ms if ms % MINUTE_MS == 0 => format!("{} minutes", ms / MINUTE_MS),
        ms => format!("{ms} ms"),
    }
}

/// Collects located issues for one file.
pub(crate) struct Issues<'t> {
    pub(super) text: &'t str,
    pub(crate) list: Vec<ConfigIssue>,
    /// Relative paths in the config are relative to this directory.
    pub(super) base: &'t Path,
    /// Files read besides the config.
    pub(super) inputs: Inputs,
}

impl<'t> Issues<'t> {
    pub(crate) fn new(text: &'t str, base: &'t Path) -> Issues<'t> {
        Issues {
            text,
            list: Vec::new(),
            base,
            inputs: Inputs::default(),
        }
    }

    pub(crate) fn at(&mut self, span: Range<usize>, message: impl Into<String>) {
        // A message may quote the file (toml's own errors name a bad key);
        // none comes back longer than this, whatever the file holds.
        const MAX_MESSAGE: usize = 1024;
        let mut message = message.into();
        if message.len() > MAX_MESSAGE {
            let mut cut = MAX_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            let len = message.len();
            message.truncate(cut);
            message.push_str(&format!("… (cut: {len} bytes)"));
        }
        let before = &self.text[..span.start.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        self.list.push(ConfigIssue { line, column, message });
    }

    /// The line of the file a byte offset is on.
    pub(super) fn line_of(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())].matches('\n').count() + 1
    }

    /// A duration in milliseconds, above 0 and at most `max` ms. Every
    /// duration has a ceiling: an unbounded one (`eject_max_ms =
    /// 9223372036854775807`) ejects a channel for ~292 million years, and
    /// overflows `Instant` arithmetic wherever it is added to now.
    pub(super) fn millis(&mut self, v: &Opt<u64>, default: u64, key: &str, max: u64) -> Duration {
        match v {
            Some(s) if *s.get_ref() == 0 => {
                self.at(s.span(), format!("{key} must be greater than 0"));
                Duration::from_millis(default)
            }
            Some(s) if *s.get_ref() > max => {
                self.at(s.span(), format!("{key} must be at most {max} ({})", human_ms(max)));
                Duration::from_millis(default)
            }
            Some(s) => Duration::from_millis(*s.get_ref()),
            None => Duration::from_millis(default),
        }
    }

    /// A finite number within `[lo, hi]`.
    pub(super) fn number(&mut self, v: &Opt<f64>, default: f64, key: &str, lo: f64, hi: f64) -> f64 {
        match v {
            Some(s) if !(s.get_ref().is_finite() && (lo..=hi).contains(s.get_ref())) => {
                self.at(s.span(), format!("{key} must be between {lo} and {hi}"));
                default
            }
            Some(s) => *s.get_ref(),
            None => default,
        }
    }

    /// A whole number within `[lo, hi]`.
    pub(crate) fn count(&mut self, v: &Opt<u64>, default: u64, key: &str, lo: u64, hi: u64) -> u64 {
        match v {
            Some(s) if !(lo..=hi).contains(s.get_ref()) => {
                self.at(s.span(), format!("{key} must be between {lo} and {hi}"));
                default
            }
            Some(s) => *s.get_ref(),
            None => default,
        }
    }

    pub(super) fn addr(&mut self, v: &Opt<String>, default: &str, key: &str) -> SocketAddr {
        let fallback = || SocketAddr::from_str(default).expect("default address is valid");
        match v {
            Some(s) => SocketAddr::from_str(s.get_ref()).unwrap_or_else(|_| {
                self.at(
                    s.span(),
                    format!("{key} {} is not an IP:PORT address", shown(s.get_ref())),
                );
                fallback()
            }),
            None => fallback(),
        }
    }

    /// A secret as written: `env:NAME`, `file:PATH` or literal. Errors name
    /// `key` and the variable or path, never the value.
    pub(super) fn secret(&mut self, written: &Spanned<String>, key: &str) -> Option<Secret> {
        match secret::resolve(written.get_ref(), self.base, &mut self.inputs) {
            Ok(s) => Some(s),
            Err(e) => {
                self.at(written.span(), format!("{key}: {e}"));
                None
            }
        }
    }

    /// The contents of the file `key` names.
    pub(super) fn file(&mut self, written: &Spanned<String>, key: &str) -> Option<Vec<u8>> {
        if written.get_ref().is_empty() {
            self.at(written.span(), format!("{key} must name a file"));
            return None;
        }
        let path = self.base.join(written.get_ref());
        match self.inputs.read(&path) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                self.at(written.span(), format!("{key}: cannot read {}: {e}", path.display()));
                None
            }
        }
    }

    pub(super) fn pointer(&mut self, v: &Opt<String>, default: &str, key: &str) -> String {
        match v {
            Some(s) if !(s.get_ref().is_empty() || s.get_ref().starts_with('/')) => {
                self.at(s.span(), format!("{key} must be a JSON pointer starting with '/'"));
                default.to_owned()
            }
            Some(s) => s.get_ref().clone(),
            None => default.to_owned(),
        }
    }
}

/// A list of ISO 4217 codes, upper-cased; each bad one is an issue.
pub(super) fn currency_list(list: &[Spanned<String>], issues: &mut Issues<'_>) -> Vec<String> {
    checked_list(
        list,
        issues,
        |c| {
            let code = c.to_ascii_uppercase();
            (code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase())).then_some(code)
        },
        |shown| format!("currency {shown} must be a three-letter ISO 4217 code"),
    )
}

/// The items of a spanned list that `accept` takes, as it returns them;
/// each other item is reported at its own span, `complaint` given the item
/// as [`shown`]. One bad item never hides the others.
pub(super) fn checked_list(
    list: &[Spanned<String>],
    issues: &mut Issues<'_>,
    accept: impl Fn(&str) -> Option<String>,
    complaint: impl Fn(&str) -> String,
) -> Vec<String> {
    list.iter()
        .filter_map(|item| {
            let accepted = accept(item.get_ref());
            if accepted.is_none() {
                issues.at(item.span(), complaint(&shown(item.get_ref())));
            }
            accepted
        })
        .collect()
}
