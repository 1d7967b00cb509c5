//! Routing policies as configured: `[[rule]]`, and a channel's `daily_cap`,
//! `max_share`, `maintenance` windows and canary `ramp`.
//!
//! The typed model is what `routing` reads on every payment, so it is
//! resolved here once: a rule names its channels by index into the
//! config's channel list, a maintenance window is a span of minutes of the
//! UTC week, a ramp's start is Unix milliseconds. Validation follows the
//! rest of the config: every mistake located, none fatal to the others.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;

use toml::Spanned;

use super::issues::{currency_list, Issues};
use super::raw::{Opt, RawChannel, RawRamp, RawRule};
use super::{shown, MerchantConfig};

/// `[[rule]]`: which payments it takes, and how it chooses among its channels.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rule {
    pub matcher: RuleMatch,
    /// Indices into the config's channels, in the rule's order.
    pub channels: Vec<usize>,
    pub mode: Mode,
    /// `split`: the weight of each of `channels` (same order); else empty.
    pub weights: Vec<u32>,
}

/// The `match` table: every key given must match; an empty one matches all.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct RuleMatch {
    pub pay_types: Vec<String>,
    pub currencies: Vec<String>,
    pub min_amount: u64,
    pub max_amount: Option<u64>,
    pub merchants: Vec<Arc<str>>,
}

/// How a rule orders its candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// By score, as without rules.
    Score,
    /// The first available in the rule's order.
    Priority,
    /// The first chosen at random by weight; the rest by score.
    Split,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Score => "score",
            Mode::Priority => "priority",
            Mode::Split => "split",
        }
    }
}

impl RuleMatch {
    pub fn matches(&self, pay_type: Option<&str>, currency: &str, amount: u64, merchant: &str) -> bool {
        (self.pay_types.is_empty() || pay_type.is_some_and(|t| self.pay_types.iter().any(|p| p == t)))
            && (self.currencies.is_empty() || self.currencies.iter().any(|c| c == currency))
            && amount >= self.min_amount
            && self.max_amount.is_none_or(|max| amount <= max)
            && (self.merchants.is_empty() || self.merchants.iter().any(|m| &**m == merchant))
    }
}

/// A canary: the channel's share of payments grows linearly from `from` to
/// `to` (fractions) over `over_ms` from `start_ms` (Unix ms), unless the
/// guardrail rolls it back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Ramp {
    pub from: f64,
    pub to: f64,
    pub start_ms: i64,
    pub over_ms: u64,
    /// Success-rate points (as a fraction) below the other channels' that roll it back.
    pub guardrail: f64,
    pub min_samples: u64,
}

impl Ramp {
    /// The share the ramp gives its channel at `unix_ms`: 0 before it starts.
    pub fn share_at(&self, unix_ms: i64) -> f64 {
        if unix_ms < self.start_ms {
            return 0.0;
        }
        let progress = ((unix_ms - self.start_ms) as f64 / self.over_ms as f64).min(1.0);
        self.from + (self.to - self.from) * progress
    }
}

/// One weekly maintenance window, in minutes of the week counted from
/// Monday 00:00 UTC: `[start, start + len)`, wrapping at the week's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Weekly {
    start: u32,
    len: u32,
}

const WEEK_MIN: u32 = 7 * 24 * 60;
/// 1970-01-01 was a Thursday: minutes from a Monday 00:00 to the epoch.
const EPOCH_WEEK_OFFSET_MIN: i64 = 3 * 24 * 60;

impl Weekly {
    pub fn contains(&self, unix_ms: i64) -> bool {
        let minute = (unix_ms.div_euclid(60_000) + EPOCH_WEEK_OFFSET_MIN).rem_euclid(i64::from(WEEK_MIN)) as u32;
        (minute + WEEK_MIN - self.start) % WEEK_MIN < self.len
    }

    fn overlaps(&self, other: &Weekly) -> bool {
        let starts_inside = |a: &Weekly, b: &Weekly| (b.start + WEEK_MIN - a.start) % WEEK_MIN < a.len;
        starts_inside(self, other) || starts_inside(other, self)
    }

    /// `Sun 02:00-04:00+08:00`: a day, local start and end (an end at or
    /// before the start runs into the next day; `24:00` is the day's end),
    /// and the UTC offset of that local time.
    fn parse(s: &str) -> Result<Weekly, String> {
        let bad = || {
            format!(
                "maintenance window {} must look like \"Sun 02:00-04:00+08:00\" (day, local start-end, UTC offset)",
                shown(s)
            )
        };
        let (day, rest) = s.split_once(' ').ok_or_else(bad)?;
        const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
        let day = DAYS.iter().position(|d| d.eq_ignore_ascii_case(day)).ok_or_else(bad)? as i64;
        let (from, rest) = rest.split_once('-').ok_or_else(bad)?;
        let at = rest.find(['+', '-', 'Z']).ok_or_else(bad)?;
        let (to, offset) = rest.split_at(at);
        let minutes = |t: &str| -> Option<i64> {
            let (h, m) = t.split_once(':')?;
            if h.len() != 2 || m.len() != 2 {
                return None;
            }
            let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
            ((h < 24 && m < 60) || (h == 24 && m == 0)).then_some(h * 60 + m)
        };
        let (from, to) = (minutes(from).ok_or_else(bad)?, minutes(to).ok_or_else(bad)?);
        let offset = match offset {
            "Z" => 0,
            o => {
                let sign = if o.starts_with('-') { -1 } else { 1 };
                let off = minutes(&o[1..]).filter(|m| *m <= 14 * 60).ok_or_else(bad)?;
                sign * off
            }
        };
        if from == 24 * 60 {
            return Err(bad());
        }
        let len = if to > from { to - from } else { to + 24 * 60 - from };
        let start = (day * 24 * 60 + from - offset).rem_euclid(i64::from(WEEK_MIN));
        Ok(Weekly {
            start: start as u32,
            len: len as u32,
        })
    }
}

/// A channel's policy keys, validated.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ChannelPolicy {
    /// Amount the channel may take per day (its `day_starts`), fleet-wide.
    pub daily_cap: Option<u64>,
    /// At most this share of payments over the window goes to it first.
    pub max_share: Option<f64>,
    pub maintenance: Vec<Weekly>,
    pub ramp: Option<Ramp>,
}

impl ChannelPolicy {
    pub fn in_maintenance(&self, unix_ms: i64) -> bool {
        self.maintenance.iter().any(|w| w.contains(unix_ms))
    }
}

pub(super) fn channel_policy(c: &RawChannel, issues: &mut Issues<'_>) -> ChannelPolicy {
    let daily_cap = c.daily_cap.as_ref().and_then(|cap| {
        if *cap.get_ref() == 0 {
            issues.at(cap.span(), "daily_cap must be greater than 0 (leave it out for no cap)");
        }
        Some(*cap.get_ref()).filter(|c| *c > 0)
    });
    let max_share = c.max_share.as_ref().map(|s| {
        let v = *s.get_ref();
        if !(v.is_finite() && v > 0.0 && v <= 1.0) {
            issues.at(s.span(), "max_share must be above 0 and at most 1");
        }
        v
    });
    let mut maintenance: Vec<(Weekly, Range<usize>)> = Vec::new();
    for w in c.maintenance.iter().flat_map(|l| l.get_ref()) {
        match Weekly::parse(w.get_ref()) {
            Ok(window) => {
                if let Some((_, first)) = maintenance.iter().find(|(m, _)| m.overlaps(&window)) {
                    let at = issues.line_of(first.start);
                    issues.at(
                        w.span(),
                        format!(
                            "maintenance window {} overlaps the one on line {at}",
                            shown(w.get_ref())
                        ),
                    );
                }
                maintenance.push((window, w.span()));
            }
            Err(e) => issues.at(w.span(), e),
        }
    }
    ChannelPolicy {
        daily_cap,
        max_share,
        maintenance: maintenance.into_iter().map(|(w, _)| w).collect(),
        ramp: c.ramp.as_ref().and_then(|r| ramp(r.get_ref(), issues)),
    }
}

/// Longest ramp: a year.
const MAX_RAMP_MS: u64 = 366 * 86_400_000;

fn ramp(r: &RawRamp, issues: &mut Issues<'_>) -> Option<Ramp> {
    let percent = |v: &Spanned<f64>, key: &str, issues: &mut Issues<'_>| {
        let p = *v.get_ref();
        if !(p.is_finite() && (0.0..=100.0).contains(&p)) {
            issues.at(v.span(), format!("ramp {key} must be between 0 and 100"));
        }
        p / 100.0
    };
    let from = percent(&r.from_percent, "from_percent", issues);
    let to = percent(&r.to_percent, "to_percent", issues);
    if to < from {
        issues.at(
            r.to_percent.span(),
            "ramp to_percent must be at least from_percent (a ramp only rises; lower from_percent to shrink it)",
        );
    }
    let start = time::OffsetDateTime::parse(r.start.get_ref(), &time::format_description::well_known::Rfc3339)
        .map_err(|_| {
            issues.at(
                r.start.span(),
                format!(
                    "ramp start {} must be an RFC 3339 time such as \"2026-12-01T00:00:00+08:00\"",
                    shown(r.start.get_ref())
                ),
            )
        })
        .ok()?;
    let over_ms = *r.over_ms.get_ref();
    if over_ms == 0 || over_ms > MAX_RAMP_MS {
        issues.at(
            r.over_ms.span(),
            "ramp over_ms must be above 0 (a ramp ends after it starts) and at most a year",
        );
        return None;
    }
    let guardrail = match &r.guardrail_pp {
        Some(g) if !(g.get_ref().is_finite() && *g.get_ref() > 0.0 && *g.get_ref() <= 100.0) => {
            issues.at(g.span(), "ramp guardrail_pp must be above 0 and at most 100");
            0.03
        }
        Some(g) => g.get_ref() / 100.0,
        None => 0.03,
    };
    let min_samples = issues.count(&r.min_samples, 200, "ramp min_samples", 1, 1_000_000_000);
    Some(Ramp {
        from,
        to,
        start_ms: (start.unix_timestamp_nanos() / 1_000_000) as i64,
        over_ms,
        guardrail,
        min_samples,
    })
}

/// `[[rule]]` tables; `channel_index` maps channel ids to their position.
pub(super) fn rules(
    raw: &[Spanned<RawRule>],
    channel_index: &HashMap<&str, usize>,
    issues: &mut Issues<'_>,
) -> Vec<Rule> {
    raw.iter()
        .filter_map(|r| rule(r.get_ref(), r.span(), channel_index, issues))
        .collect()
}

fn rule(
    r: &RawRule,
    span: Range<usize>,
    channel_index: &HashMap<&str, usize>,
    issues: &mut Issues<'_>,
) -> Option<Rule> {
    let mode = match &r.mode {
        None => Mode::Score,
        Some(m) => match m.get_ref().as_str() {
            "score" => Mode::Score,
            "priority" => Mode::Priority,
            "split" => Mode::Split,
            other => {
                issues.at(
                    m.span(),
                    format!(
                        "rule mode {} is not one of \"score\", \"priority\", \"split\"",
                        shown(other)
                    ),
                );
                Mode::Score
            }
        },
    };
    let mut channels = Vec::new();
    let mut ok = true;
    if r.channels.get_ref().is_empty() {
        issues.at(r.channels.span(), "a rule's channels must not be empty");
        ok = false;
    }
    for c in r.channels.get_ref() {
        match channel_index.get(c.get_ref().as_str()) {
            Some(&i) if channels.contains(&i) => {
                issues.at(
                    c.span(),
                    format!("channel {} is listed twice in this rule", shown(c.get_ref())),
                );
            }
            Some(&i) => channels.push(i),
            None => {
                issues.at(c.span(), format!("unknown channel id {} in rule", shown(c.get_ref())));
                ok = false;
            }
        }
    }
    let weights = weights(r, mode, span, issues);
    let matcher = r.matcher.as_ref().map_or_else(RuleMatch::default, |m| {
        let m = m.get_ref();
        let list = |l: &Opt<Vec<Spanned<String>>>| -> Vec<String> {
            l.iter()
                .flat_map(|l| l.get_ref())
                .map(|s| s.get_ref().clone())
                .collect()
        };
        let min_amount = m.min_amount.as_ref().map_or(0, |v| *v.get_ref());
        let max_amount = m.max_amount.as_ref().map(|v| *v.get_ref());
        if let (Some(max), Some(span)) = (max_amount, m.max_amount.as_ref()) {
            if max < min_amount {
                issues.at(span.span(), "rule max_amount must be at least min_amount");
            }
        }
        let currencies = m
            .currencies
            .as_ref()
            .map_or_else(Vec::new, |l| currency_list(l.get_ref(), issues));
        RuleMatch {
            pay_types: list(&m.pay_types),
            currencies,
            min_amount,
            max_amount,
            merchants: list(&m.merchants).into_iter().map(Arc::from).collect(),
        }
    });
    let weights = match weights {
        Some(w) => r
            .channels
            .get_ref()
            .iter()
            .map(|c| w.get(c.get_ref().as_str()).copied().unwrap_or(0))
            .collect(),
        None => Vec::new(),
    };
    ok.then_some(Rule {
        matcher,
        channels,
        mode,
        weights,
    })
}

/// `weights`: required by `split` (one per listed channel, not all zero),
/// refused by the other modes.
fn weights<'r>(
    r: &'r RawRule,
    mode: Mode,
    span: Range<usize>,
    issues: &mut Issues<'_>,
) -> Option<BTreeMap<&'r str, u32>> {
    let Some(given) = &r.weights else {
        if mode == Mode::Split {
            issues.at(span, "a split rule needs weights, one per channel");
        }
        return None;
    };
    if mode != Mode::Split {
        issues.at(given.span(), "weights apply to mode = \"split\" only");
        return None;
    }
    let listed: HashSet<&str> = r.channels.get_ref().iter().map(|c| c.get_ref().as_str()).collect();
    let mut out = BTreeMap::new();
    for (id, w) in given.get_ref() {
        if !listed.contains(id.as_str()) {
            issues.at(
                w.span(),
                format!("weight for {} which is not in this rule's channels", shown(id)),
            );
            continue;
        }
        match u32::try_from(*w.get_ref()) {
            Ok(v) if v <= 1_000_000 => {
                out.insert(id.as_str(), v);
            }
            _ => issues.at(w.span(), "a weight must be a whole number between 0 and 1000000"),
        }
    }
    for c in r.channels.get_ref() {
        if !given.get_ref().contains_key(c.get_ref()) {
            issues.at(
                c.span(),
                format!("channel {} has no weight in this split rule", shown(c.get_ref())),
            );
        }
    }
    if out.values().all(|w| *w == 0) {
        issues.at(given.span(), "a split rule's weights must not sum to zero");
    }
    Some(out)
}

/// Merchant ids the rules name must exist: a typo would make a rule match
/// nobody. Run once the merchants are known (in a large file, after every
/// chunk).
pub(super) fn check_rule_merchants(raw: &[Spanned<RawRule>], merchants: &[MerchantConfig], issues: &mut Issues<'_>) {
    let named: Vec<&Spanned<String>> = raw
        .iter()
        .filter_map(|r| r.get_ref().matcher.as_ref())
        .flat_map(|m| m.get_ref().merchants.iter().flat_map(|l| l.get_ref()))
        .collect();
    if named.is_empty() {
        return;
    }
    let mut missing: HashSet<&str> = named.iter().map(|m| m.get_ref().as_str()).collect();
    for m in merchants {
        missing.remove(&*m.id);
        if missing.is_empty() {
            return;
        }
    }
    for m in named.into_iter().filter(|m| missing.contains(m.get_ref().as_str())) {
        issues.at(m.span(), format!("unknown merchant id {} in rule", shown(m.get_ref())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-29 was a Sunday.
    fn at(utc: &str) -> i64 {
        let t = time::OffsetDateTime::parse(utc, &time::format_description::well_known::Rfc3339).unwrap();
        (t.unix_timestamp_nanos() / 1_000_000) as i64
    }

    #[test]
    fn a_weekly_window_is_its_local_time() {
        let w = Weekly::parse("Sun 02:00-04:00+08:00").unwrap();
        // Sunday 02:00 in UTC+8 is Saturday 18:00 UTC.
        assert!(!w.contains(at("2026-11-28T17:59:59Z")));
        assert!(w.contains(at("2026-11-28T18:00:00Z")));
        assert!(w.contains(at("2026-11-28T19:59:59Z")));
        assert!(!w.contains(at("2026-11-28T20:00:00Z")));
        // A week later, again.
        assert!(w.contains(at("2026-12-05T19:00:00Z")));
        // Across midnight and across the week's end.
        let late = Weekly::parse("Sun 23:00-01:00Z").unwrap();
        assert!(late.contains(at("2026-11-29T23:30:00Z")));
        assert!(late.contains(at("2026-11-30T00:30:00Z")));
        assert!(!late.contains(at("2026-11-30T01:00:00Z")));
        assert!(Weekly::parse("mon 00:00-24:00Z")
            .unwrap()
            .contains(at("2026-11-30T23:59:00Z")));
    }

    #[test]
    fn overlap_is_found_across_offsets() {
        let a = Weekly::parse("Sun 02:00-04:00+08:00").unwrap();
        let b = Weekly::parse("Sat 19:00-19:30Z").unwrap();
        let c = Weekly::parse("Sun 04:00-05:00+08:00").unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c));
    }

    #[test]
    fn bad_windows_are_refused() {
        for bad in [
            "Sun",
            "Sun 02:00-04:00",
            "Xyz 02:00-04:00Z",
            "Sun 2:00-04:00Z",
            "Sun 24:00-01:00Z",
            "Sun 02:00-04:00+15:00",
        ] {
            assert!(Weekly::parse(bad).is_err(), "{bad}");
        }
    }

    /// Every policy mistake is reported where it is written.
    #[test]
    fn policy_mistakes_are_located() {
        let text = r#"[[channel]]
id = "a"
url = "http://127.0.0.1:1"
daily_cap = 0
max_share = 1.5
maintenance = ["Sun 02:00-04:00+08:00", "Sat 19:00-19:30Z", "sunday 02:00"]
ramp = { from_percent = 60, to_percent = 50, start = "yesterday", over_ms = 1000 }
[[channel]]
id = "b"
url = "http://127.0.0.1:2"
ramp = { from_percent = 1, to_percent = 50, start = "2026-12-01T00:00:00+08:00", over_ms = 0, guardrail_pp = 0 }
[[rule]]
channels = ["a", "nope", "a"]
mode = "fastest"
[[rule]]
channels = ["a", "b"]
mode = "split"
weights = { a = 0, b = 0 }
[[rule]]
channels = ["a", "b"]
mode = "split"
weights = { a = 1, c = 2 }
[[rule]]
match = { merchants = ["ghost"], max_amount = 5, min_amount = 10, currencies = ["yuan"] }
channels = ["b"]
weights = { b = 1 }
[[rule]]
channels = []
[[merchant]]
id = "m"
"#;
        let err = crate::config::Config::parse(text, "t.toml".as_ref()).unwrap_err();
        let lines = err.lines();
        let has = |line: usize, needle: &str| {
            assert!(
                lines
                    .iter()
                    .any(|l| l.starts_with(&format!("t.toml:{line}:")) && l.contains(needle)),
                "no {needle:?} on line {line} in {lines:#?}"
            )
        };
        has(4, "daily_cap must be greater than 0");
        has(5, "max_share must be above 0 and at most 1");
        has(6, "overlaps the one on line 6");
        has(6, "must look like \"Sun 02:00-04:00+08:00\"");
        has(7, "to_percent must be at least from_percent");
        has(7, "must be an RFC 3339 time");
        has(11, "over_ms must be above 0");
        has(13, "unknown channel id \"nope\" in rule");
        has(13, "listed twice");
        has(14, "is not one of \"score\", \"priority\", \"split\"");
        has(18, "must not sum to zero");
        has(22, "weight for \"c\" which is not in this rule's channels");
        has(20, "channel \"b\" has no weight");
        has(24, "unknown merchant id \"ghost\" in rule");
        has(24, "max_amount must be at least min_amount");
        has(24, "three-letter ISO 4217 code");
        has(26, "weights apply to mode = \"split\" only");
        has(28, "channels must not be empty");
    }

    #[test]
    fn policies_parse_into_their_model() {
        let text = r#"[request]
pay_type_pointer = "/type"
[[channel]]
id = "a"
url = "http://127.0.0.1:1"
day_starts = "06:00+08:00"
daily_cap = 50000000
max_share = 0.7
maintenance = ["Sun 02:00-04:00+08:00"]
ramp = { from_percent = 1, to_percent = 50, start = "2026-12-01T00:00:00+08:00", over_ms = 604800000 }
[[channel]]
id = "b"
url = "http://127.0.0.1:2"
[[rule]]
match = { pay_types = ["wxpay"], currencies = ["cny"], min_amount = 1, max_amount = 100000, merchants = ["m"] }
channels = ["b", "a"]
mode = "split"
weights = { a = 80, b = 20 }
[[merchant]]
id = "m"
"#;
        let config = crate::config::Config::parse(text, "t.toml".as_ref()).unwrap();
        assert_eq!(config.request.pay_type_pointer.as_deref(), Some("/type"));
        let a = &config.channels[0];
        assert_eq!(a.day_cut, crate::config::DayCut::parse("06:00+08:00").unwrap());
        assert_eq!((a.policy.daily_cap, a.policy.max_share), (Some(50_000_000), Some(0.7)));
        assert_eq!(a.policy.maintenance.len(), 1);
        let ramp = a.policy.ramp.unwrap();
        assert_eq!(
            (ramp.from, ramp.to, ramp.guardrail, ramp.min_samples),
            (0.01, 0.5, 0.03, 200)
        );
        assert_eq!(ramp.start_ms, at("2026-11-30T16:00:00Z"));
        assert_eq!(config.channels[1].policy, ChannelPolicy::default());
        let rule = &config.rules[0];
        // Channels by index, weights in the rule's order.
        assert_eq!(
            (rule.channels.clone(), rule.weights.clone(), rule.mode),
            (vec![1, 0], vec![20, 80], Mode::Split)
        );
        assert_eq!(rule.matcher.currencies, ["CNY"]);
        assert!(rule.matcher.matches(Some("wxpay"), "CNY", 100, "m"));
        assert!(!rule.matcher.matches(Some("alipay"), "CNY", 100, "m"));
        assert!(!rule.matcher.matches(Some("wxpay"), "CNY", 100_001, "m"));
        assert!(!rule.matcher.matches(Some("wxpay"), "CNY", 100, "n"));
    }

    #[test]
    fn a_ramp_rises_linearly_and_stays() {
        let r = Ramp {
            from: 0.01,
            to: 0.5,
            start_ms: 1_000,
            over_ms: 1_000,
            guardrail: 0.03,
            min_samples: 200,
        };
        assert_eq!(r.share_at(999), 0.0);
        assert_eq!(r.share_at(1_000), 0.01);
        assert!((r.share_at(1_500) - 0.255).abs() < 1e-12);
        assert_eq!(r.share_at(2_000), 0.5);
        assert_eq!(r.share_at(9_000), 0.5);
    }
}
