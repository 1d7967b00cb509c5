//! Statement files (对账单): what the acquirer charged, one CSV file per
//! business day, laid out as a Chinese acquirer's bill — with the
//! differences a reconciliation test wants found, injected on purpose and
//! listed beside each file.
//!
//! Why it is built so:
//!
//! * The day is the channel's, not the calendar's: a [`StatementSpec`]
//!   names the day cut (`day_starts`, `HH:MM+HH:MM` as payroute's config
//!   writes it), and a charge belongs to the day of its time shifted by the
//!   offset and back by the cut. Times are written at the cut's offset, as
//!   a channel writes its local time.
//! * Faults are decided per trade number by a hash of the seed and the
//!   number (SHA-256, stable across runs, platforms and Rust releases, unlike
//!   `std`'s hasher), not by a generator drawn in order: the same payments
//!   get the same faults whatever else was paid, and in whatever order the
//!   books list them. One draw per row, one fault at most, picked by
//!   cumulative share, so the faults file can name each difference once.
//! * Money stays in integers: amounts are fen, the fee's percentage is taken
//!   to six decimals and rounded half up in `i128`, yuan text is made from
//!   fen. A float would put a fen here and there where a reconciler would
//!   rightly find it.
//! * The file is made whole as UTF-8 by the `csv` crate (quoting
//!   `"1,234.56"` because of its comma), then encoded (`encoding_rs` for
//!   GBK), then written beside its final name and renamed over it, so a
//!   reconciler reading while the mock writes sees the old file or the new
//!   one, never half of one. Lines end in CRLF, as bills opened in Excel do;
//!   the faults file, for tests only, is plain UTF-8 with LF.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::epay::clock::{date, Stamp};
use crate::orders::Charge;

const DAY_MS: i64 = 86_400_000;

/// Fen added to an amount by the `wrong_amount` fault.
pub const WRONG_AMOUNT_FEN: u64 = 100;

/// Fen added to a fee by the `wrong_fee` fault.
pub const WRONG_FEE_FEN: i64 = 50;

/// A phantom row's amount, in fen (1.00 yuan).
pub const PHANTOM_FEN: u64 = 100;

/// How the statement files are written ([`crate::MockAcquirer::write_statements`]).
#[derive(Clone, Debug, PartialEq)]
pub struct StatementSpec {
    /// File name prefix: files are `<name>-<YYYY-MM-DD>.csv`. Default
    /// `statement`.
    pub name: String,
    /// The channel's day cut, `HH:MM+HH:MM` (local time of the cut, then its
    /// UTC offset; `-` for offsets west of UTC) or `HH:MMZ`. Default
    /// `00:00+08:00`: midnight in China.
    pub day_starts: String,
    /// What the channel charges, percent of the amount (taken to six
    /// decimals), at least 0. Default 0.
    pub fee_percent: f64,
    /// What the channel charges per payment on top, fen. Default 0.
    pub fee_fixed: i64,
    pub encoding: StatementEncoding,
    pub unit: AmountUnit,
    /// Seeds the fault draw: the same seed gives the same trade numbers the
    /// same faults.
    pub seed: u64,
    /// Share of rows left out (payroute: `missing_at_channel`).
    pub drop: f64,
    /// Share of rows whose amount is 1.00 yuan more (`amount_mismatch`).
    pub wrong_amount: f64,
    /// Share of rows whose status is `失败` (`status_mismatch`).
    pub wrong_status: f64,
    /// Share of rows whose fee is 0.50 yuan more (`fee_mismatch`).
    pub wrong_fee: f64,
    /// Share of rows followed by a paid row of 1.00 yuan for a trade number
    /// payroute never issued, `PHANTOM` and 19 digits (`missing_in_journal`).
    pub phantom: f64,
}

impl Default for StatementSpec {
    fn default() -> StatementSpec {
        StatementSpec {
            name: "statement".to_owned(),
            day_starts: "00:00+08:00".to_owned(),
            fee_percent: 0.0,
            fee_fixed: 0,
            encoding: StatementEncoding::default(),
            unit: AmountUnit::default(),
            seed: 0,
            drop: 0.0,
            wrong_amount: 0.0,
            wrong_status: 0.0,
            wrong_fee: 0.0,
            phantom: 0.0,
        }
    }
}

/// A statement file's bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StatementEncoding {
    #[default]
    Utf8,
    /// UTF-8 starting with a byte order mark, as Excel saves it.
    Utf8Bom,
    /// GBK, as many Chinese acquirers send it.
    Gbk,
}

/// How amounts and fees are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AmountUnit {
    /// Yuan with two decimals, thousands separated by commas from 1,000.00
    /// on (`1,234.56`, quoted in the file).
    #[default]
    Yuan,
    /// Fen, an integer (`123456`).
    Fen,
}

/// Why a [`StatementSpec`] cannot be written with.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    #[error("day_starts {0:?} must look like \"00:00+08:00\" or \"00:00Z\"")]
    DayStarts(String),
    #[error("{name} must be within 0..=1, not {value}")]
    Share { name: &'static str, value: f64 },
    #[error("the fault shares add up to {0}, more than 1")]
    SharesOverOne(f64),
    #[error("fee_percent must be within 0..=100, not {0}")]
    FeePercent(f64),
    #[error("name {0:?} must be a non-empty file name prefix, without path separators")]
    Name(String),
}

impl StatementSpec {
    /// Whether it can be written with: a day cut that parses, shares within
    /// `0..=1` adding up to at most 1, a fee percentage within `0..=100`, a
    /// name that is a file name prefix.
    pub fn check(&self) -> Result<(), SpecError> {
        self.plan().map(|_| ())
    }

    fn plan(&self) -> Result<Plan, SpecError> {
        let name = &self.name;
        if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\', '\0']) {
            return Err(SpecError::Name(name.clone()));
        }
        let cut = DayCut::parse(&self.day_starts)?;
        if !(0.0..=100.0).contains(&self.fee_percent) {
            return Err(SpecError::FeePercent(self.fee_percent));
        }
        let shares = [
            ("drop", self.drop, Fault::Drop),
            ("wrong_amount", self.wrong_amount, Fault::WrongAmount),
            ("wrong_status", self.wrong_status, Fault::WrongStatus),
            ("wrong_fee", self.wrong_fee, Fault::WrongFee),
            ("phantom", self.phantom, Fault::Phantom),
        ];
        for (name, value, _) in shares {
            if !(0.0..=1.0).contains(&value) {
                return Err(SpecError::Share { name, value });
            }
        }
        let total: f64 = shares.iter().map(|(_, share, _)| share).sum();
        // Shares such as 0.1 + 0.2 + 0.7 may add up a hair over 1 in binary.
        if total > 1.0 + 1e-9 {
            return Err(SpecError::SharesOverOne(total));
        }
        Ok(Plan {
            cut,
            // Within 0..=1e8 after the range check, so the cast is exact enough.
            fee_micro: (self.fee_percent * 1e6).round() as i128,
            shares: shares.map(|(_, share, fault)| (share, fault)),
        })
    }
}

/// A checked spec, ready to write with.
struct Plan {
    cut: DayCut,
    /// The fee's percentage in millionths of a percent: parts per 1e8.
    fee_micro: i128,
    shares: [(f64, Fault); 5],
}

impl Plan {
    /// round-half-up(fen × fee_percent / 100), exactly.
    fn fee(&self, fen: u64, fixed: i64) -> i64 {
        let rounded = (i128::from(fen) * self.fee_micro + 50_000_000).div_euclid(100_000_000);
        i64::try_from(rounded).unwrap_or(i64::MAX).saturating_add(fixed)
    }

    /// The fault a trade number draws, if any.
    fn fault(&self, seed: u64, trade_no: &str) -> Option<Fault> {
        let u = unit_draw(seed, trade_no);
        let mut edge = 0.0;
        for (share, fault) in self.shares {
            edge += share;
            if u < edge {
                return Some(fault);
            }
        }
        None
    }
}

/// A difference injected into one row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Drop,
    WrongAmount,
    WrongStatus,
    WrongFee,
    Phantom,
}

impl Fault {
    /// The difference as payroute reports it.
    fn kind(self) -> &'static str {
        match self {
            Fault::Drop => "missing_at_channel",
            Fault::WrongAmount => "amount_mismatch",
            Fault::WrongStatus => "status_mismatch",
            Fault::WrongFee => "fee_mismatch",
            Fault::Phantom => "missing_in_journal",
        }
    }
}

/// 64 bits of SHA-256 over a purpose, the seed and a trade number.
fn digest(purpose: &[u8], seed: u64, trade_no: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(purpose);
    h.update(seed.to_le_bytes());
    h.update(trade_no.as_bytes());
    let out = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&out[..8]);
    u64::from_be_bytes(first)
}

/// A trade number's draw, uniform in `[0, 1)`.
fn unit_draw(seed: u64, trade_no: &str) -> f64 {
    // 53 bits: every value is an exact f64 below 1.
    (digest(b"payroute-mock statement fault\0", seed, trade_no) >> 11) as f64 / (1u64 << 53) as f64
}

/// The 19 digits naming the phantom that follows `trade_no`'s row.
fn phantom_digits(seed: u64, trade_no: &str) -> String {
    format!(
        "{:019}",
        digest(b"payroute-mock statement phantom\0", seed, trade_no) % 10_000_000_000_000_000_000
    )
}

/// The channel's day cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DayCut {
    /// Seconds from local midnight to the cut.
    cut: i64,
    /// Seconds local time is ahead of UTC.
    offset: i64,
}

impl DayCut {
    /// `HH:MM+HH:MM`, `HH:MM-HH:MM` or `HH:MMZ`, offsets up to 14 hours,
    /// as payroute's config reads `day_starts`.
    fn parse(s: &str) -> Result<DayCut, SpecError> {
        let bad = || SpecError::DayStarts(s.to_owned());
        let (time, sign, offset) = match s.strip_suffix('Z') {
            Some(time) => (time, 1, "00:00"),
            None => {
                let at = s.find(['+', '-']).ok_or_else(bad)?;
                let sign = if s[at..].starts_with('-') { -1 } else { 1 };
                (&s[..at], sign, &s[at + 1..])
            }
        };
        let cut = hh_mm(time).ok_or_else(bad)?;
        let offset = hh_mm(offset).ok_or_else(bad)?;
        if offset > 14 * 3600 {
            return Err(bad());
        }
        Ok(DayCut {
            cut,
            offset: sign * offset,
        })
    }

    /// The business day (days since 1970-01-01, named by the shifted
    /// calendar day) a charge at `unix_ms` belongs to.
    fn day(&self, unix_ms: i64) -> i64 {
        unix_ms
            .saturating_add((self.offset - self.cut) * 1000)
            .div_euclid(DAY_MS)
    }

    /// When `day` starts, local time: `2026-12-01 00:00:00`.
    fn starts(&self, day: i64) -> String {
        format!("{} {:02}:{:02}:00", date(day), self.cut / 3600, self.cut / 60 % 60)
    }

    /// A time as the statement writes it, local: `2026-12-01 08:00:01`.
    fn local(&self, unix_ms: i64) -> String {
        Stamp::in_offset(unix_ms.div_euclid(1000), self.offset).text()
    }
}

/// Seconds since midnight of `HH:MM` (two digits each, a time of day).
fn hh_mm(s: &str) -> Option<i64> {
    let (h, m) = s.split_once(':')?;
    let two_digits = |x: &str| x.len() == 2 && x.bytes().all(|b| b.is_ascii_digit());
    if !two_digits(h) || !two_digits(m) {
        return None;
    }
    let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 3600 + m * 60)
}

/// One line of a statement.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Row {
    charged_ms: i64,
    trade_no: String,
    id: String,
    fen: u64,
    fee: i64,
    paid: bool,
}

/// One business day's file: its rows, and the faults injected into it.
#[derive(Debug, Default, PartialEq, Eq)]
struct Day {
    rows: Vec<Row>,
    /// (kind, trade number), in row order.
    faults: Vec<(&'static str, String)>,
}

/// The charges by business day, with the spec's fees and faults applied.
fn days(mut charges: Vec<Charge>, plan: &Plan, spec: &StatementSpec) -> BTreeMap<i64, Day> {
    charges.sort_by_key(|c| (c.charged_ms, c.seq));
    let mut days: BTreeMap<i64, Day> = BTreeMap::new();
    for c in charges {
        let day = days.entry(plan.cut.day(c.charged_ms)).or_default();
        let fault = plan.fault(spec.seed, &c.trade_no);
        // The fee is the true amount's: a wrong amount is the only
        // difference of its row.
        let fee = plan.fee(c.fen, spec.fee_fixed);
        let row = Row {
            charged_ms: c.charged_ms,
            fen: match fault {
                Some(Fault::WrongAmount) => c.fen.saturating_add(WRONG_AMOUNT_FEN),
                _ => c.fen,
            },
            fee: match fault {
                Some(Fault::WrongFee) => fee.saturating_add(WRONG_FEE_FEN),
                _ => fee,
            },
            paid: fault != Some(Fault::WrongStatus),
            trade_no: c.trade_no,
            id: c.id,
        };
        match fault {
            None => day.rows.push(row),
            Some(Fault::Drop) => day.faults.push((Fault::Drop.kind(), row.trade_no)),
            Some(Fault::Phantom) => {
                // The row stays as it is; the phantom after it is the difference.
                let digits = phantom_digits(spec.seed, &row.trade_no);
                let phantom = Row {
                    charged_ms: row.charged_ms,
                    trade_no: format!("PHANTOM{digits}"),
                    id: format!("P{digits}"),
                    fen: PHANTOM_FEN,
                    fee: plan.fee(PHANTOM_FEN, spec.fee_fixed),
                    paid: true,
                };
                day.faults.push((Fault::Phantom.kind(), phantom.trade_no.clone()));
                day.rows.push(row);
                day.rows.push(phantom);
            }
            Some(fault) => {
                day.faults.push((fault.kind(), row.trade_no.clone()));
                day.rows.push(row);
            }
        }
    }
    days
}

/// An amount or fee as the spec's unit writes it.
fn money(fen: i128, unit: AmountUnit) -> String {
    match unit {
        AmountUnit::Fen => fen.to_string(),
        AmountUnit::Yuan => {
            let sign = if fen < 0 { "-" } else { "" };
            let abs = fen.unsigned_abs();
            let whole = (abs / 100).to_string();
            let mut grouped = String::with_capacity(whole.len() + whole.len() / 3);
            for (i, digit) in whole.chars().enumerate() {
                if i > 0 && (whole.len() - i).is_multiple_of(3) {
                    grouped.push(',');
                }
                grouped.push(digit);
            }
            format!("{sign}{grouped}.{:02}", abs % 100)
        }
    }
}

fn csv_error(e: csv::Error) -> io::Error {
    io::Error::other(e)
}

/// A day's statement as UTF-8 text.
fn render(day: i64, rows: &[Row], cut: &DayCut, unit: AmountUnit) -> io::Result<String> {
    let mut w = csv::WriterBuilder::new()
        .flexible(true)
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    w.write_record(["#模拟收单机构 交易明细"]).map_err(csv_error)?;
    w.write_record([format!(
        "#起始日期：[{}]  终止日期：[{}]",
        cut.starts(day),
        cut.starts(day + 1)
    )])
    .map_err(csv_error)?;
    w.write_record(["交易时间", "商户订单号", "渠道流水号", "金额", "手续费", "状态"])
        .map_err(csv_error)?;
    let (mut amounts, mut fees) = (0i128, 0i128);
    for r in rows {
        amounts += i128::from(r.fen);
        fees += i128::from(r.fee);
        w.write_record([
            cut.local(r.charged_ms).as_str(),
            &r.trade_no,
            &r.id,
            &money(i128::from(r.fen), unit),
            &money(i128::from(r.fee), unit),
            if r.paid { "成功" } else { "失败" },
        ])
        .map_err(csv_error)?;
    }
    w.write_record([
        "合计",
        &rows.len().to_string(),
        "",
        &money(amounts, unit),
        &money(fees, unit),
        "",
    ])
    .map_err(csv_error)?;
    let bytes = w.into_inner().map_err(|e| io::Error::other(e.to_string()))?;
    String::from_utf8(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// The faults file's text: `kind,trade_no`, then one line per fault.
fn render_faults(faults: &[(&'static str, String)]) -> io::Result<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(["kind", "trade_no"]).map_err(csv_error)?;
    for (kind, trade_no) in faults {
        w.write_record([*kind, trade_no.as_str()]).map_err(csv_error)?;
    }
    let bytes = w.into_inner().map_err(|e| io::Error::other(e.to_string()))?;
    String::from_utf8(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

fn encode(text: &str, encoding: StatementEncoding) -> io::Result<Vec<u8>> {
    match encoding {
        StatementEncoding::Utf8 => Ok(text.as_bytes().to_vec()),
        StatementEncoding::Utf8Bom => {
            let mut out = Vec::with_capacity(text.len() + 3);
            out.extend_from_slice(b"\xEF\xBB\xBF");
            out.extend_from_slice(text.as_bytes());
            Ok(out)
        }
        StatementEncoding::Gbk => {
            let (bytes, _, unmappable) = encoding_rs::GBK.encode(text);
            if unmappable {
                // encoding_rs would have written `&#NNNN;` in its place: a
                // statement that says something else than the mock means.
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a trade number or id has characters GBK cannot write",
                ));
            }
            Ok(bytes.into_owned())
        }
    }
}

/// `<statement>.faults.csv`: where a statement's injected differences are
/// listed, `kind,trade_no` (kinds as payroute names its differences:
/// `missing_at_channel`, `amount_mismatch`, `status_mismatch`,
/// `fee_mismatch`, `missing_in_journal`).
pub fn faults_path(statement: &Path) -> PathBuf {
    let mut path = statement.as_os_str().to_owned();
    path.push(".faults.csv");
    PathBuf::from(path)
}

/// Writes `bytes` beside `path` and renames it over `path`.
fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, path)
}

/// Writes one statement (and its faults file) per business day that has
/// charges; the statements' paths, oldest day first.
pub(crate) fn write(charges: Vec<Charge>, dir: &Path, spec: &StatementSpec) -> io::Result<Vec<PathBuf>> {
    let plan = spec
        .plan()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let days = days(charges, &plan, spec);
    if !days.is_empty() {
        fs::create_dir_all(dir)?;
    }
    let mut written = Vec::with_capacity(days.len());
    for (day, Day { rows, faults }) in days {
        let path = dir.join(format!("{}-{}.csv", spec.name, date(day)));
        let text = render(day, &rows, &plan.cut, spec.unit)?;
        // The faults first: whoever reacts to the statement finds them there.
        replace(&faults_path(&path), render_faults(&faults)?.as_bytes())?;
        replace(&path, &encode(&text, spec.encoding)?)?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-01 00:00:00 in China (UTC+8), Unix milliseconds.
    const DEC_1_CN: i64 = 1_796_054_400_000;

    fn charge(seq: u64, charged_ms: i64, trade_no: &str, fen: u64) -> Charge {
        Charge {
            seq,
            charged_ms,
            id: format!("m1t{seq}"),
            trade_no: trade_no.to_owned(),
            fen,
        }
    }

    fn plan(spec: &StatementSpec) -> Plan {
        spec.plan().expect("a good spec")
    }

    #[test]
    fn day_cuts_parse_like_payroutes_config() {
        assert_eq!(
            DayCut::parse("00:00+08:00"),
            Ok(DayCut {
                cut: 0,
                offset: 8 * 3600
            })
        );
        assert_eq!(
            DayCut::parse("06:30-05:00"),
            Ok(DayCut {
                cut: 6 * 3600 + 30 * 60,
                offset: -5 * 3600
            })
        );
        assert_eq!(
            DayCut::parse("23:00Z"),
            Ok(DayCut {
                cut: 23 * 3600,
                offset: 0
            })
        );
        for bad in [
            "",
            "00:00",
            "24:00+08:00",
            "0:00+08:00",
            "00:60+01:00",
            "00:00+15:00",
            "00:00+8:00",
            "+0:00+08:00",
            "00:00+08:00Z",
            "aa:bb+08:00",
        ] {
            assert_eq!(DayCut::parse(bad), Err(SpecError::DayStarts(bad.into())), "{bad:?}");
        }
    }

    #[test]
    fn a_charge_belongs_to_the_day_its_cut_says() {
        let china = DayCut::parse("00:00+08:00").expect("cut");
        let dec_1 = china.day(DEC_1_CN);
        assert_eq!(date(dec_1), "2026-12-01");
        assert_eq!(china.day(DEC_1_CN - 1), dec_1 - 1, "23:59:59.999 is the day before");
        assert_eq!(china.day(DEC_1_CN + DAY_MS - 1), dec_1);
        assert_eq!(china.starts(dec_1), "2026-12-01 00:00:00");
        assert_eq!(china.local(DEC_1_CN + 8 * 3_600_000 + 1_000), "2026-12-01 08:00:01");

        // A cut at 23:00 in China: 22:59:59 on Dec 1 is still Nov 30's day,
        // 23:00:00 starts Dec 1's.
        let late = DayCut::parse("23:00+08:00").expect("cut");
        let at_23 = DEC_1_CN + 23 * 3_600_000;
        assert_eq!(date(late.day(at_23 - 1_000)), "2026-11-30");
        assert_eq!(date(late.day(at_23)), "2026-12-01");
        assert_eq!(late.starts(late.day(at_23)), "2026-12-01 23:00:00");

        // West of UTC: 06:30 at UTC-5 is 11:30 UTC.
        let west = DayCut::parse("06:30-05:00").expect("cut");
        let utc_1130 = DEC_1_CN + 8 * 3_600_000 + (11 * 60 + 30) * 60_000;
        assert_eq!(date(west.day(utc_1130)), "2026-12-01");
        assert_eq!(date(west.day(utc_1130 - 1)), "2026-11-30");
        assert_eq!(west.local(utc_1130), "2026-12-01 06:30:00");
    }

    #[test]
    fn fees_round_half_up_exactly() {
        let at = |percent: f64| {
            plan(&StatementSpec {
                fee_percent: percent,
                ..StatementSpec::default()
            })
        };
        let p = at(0.6);
        assert_eq!(p.fee(250, 0), 2, "1.5 fen rounds up");
        assert_eq!(p.fee(249, 0), 1, "1.494");
        assert_eq!(p.fee(150, 0), 1, "0.9");
        assert_eq!(p.fee(0, 0), 0);
        assert_eq!(p.fee(123_456, 10), 741 + 10, "740.736 + 10");
        assert_eq!(at(0.3).fee(1_000_000, 0), 3_000);
        assert_eq!(at(0.38).fee(50, 0), 0, "0.19");
        assert_eq!(at(0.38).fee(132, 0), 1, "0.5016");
        assert_eq!(at(100.0).fee(u64::MAX, 0), i64::MAX, "saturates");
        assert_eq!(at(0.0).fee(999, -5), -5);
    }

    #[test]
    fn yuan_has_two_decimals_and_thousands_separators() {
        let yuan = |fen| money(fen, AmountUnit::Yuan);
        assert_eq!(
            [yuan(0), yuan(1), yuan(370), yuan(99_999), yuan(100_000)],
            ["0.00", "0.01", "3.70", "999.99", "1,000.00"]
        );
        assert_eq!(yuan(123_456), "1,234.56");
        assert_eq!(yuan(12_345_678_901), "123,456,789.01");
        assert_eq!(yuan(-150), "-1.50");
        assert_eq!(yuan(-123_456), "-1,234.56");
        assert_eq!(money(123_456, AmountUnit::Fen), "123456");
    }

    #[test]
    fn specs_are_checked() {
        assert_eq!(StatementSpec::default().check(), Ok(()));
        let with = |f: fn(&mut StatementSpec)| {
            let mut spec = StatementSpec::default();
            f(&mut spec);
            spec.check()
        };
        assert_eq!(
            with(|s| s.drop = 1.5),
            Err(SpecError::Share {
                name: "drop",
                value: 1.5
            })
        );
        assert!(matches!(
            with(|s| s.phantom = f64::NAN),
            Err(SpecError::Share { name: "phantom", .. })
        ));
        assert_eq!(
            with(|s| {
                s.drop = 0.6;
                s.wrong_fee = 0.6;
            }),
            Err(SpecError::SharesOverOne(1.2))
        );
        assert_eq!(
            with(|s| {
                s.drop = 0.1;
                s.wrong_amount = 0.2;
                s.phantom = 0.7;
            }),
            Ok(())
        );
        assert_eq!(with(|s| s.fee_percent = -0.1), Err(SpecError::FeePercent(-0.1)));
        assert!(with(|s| s.fee_percent = f64::INFINITY).is_err());
        assert_eq!(with(|s| s.name = "a/b".into()), Err(SpecError::Name("a/b".into())));
        assert_eq!(with(|s| s.name = String::new()), Err(SpecError::Name(String::new())));
        assert_eq!(
            with(|s| s.day_starts = "midnight".into()),
            Err(SpecError::DayStarts("midnight".into()))
        );
    }

    #[test]
    fn faults_are_drawn_per_trade_number_by_share() {
        let spec = StatementSpec {
            seed: 7,
            drop: 0.1,
            wrong_amount: 0.1,
            wrong_status: 0.1,
            wrong_fee: 0.1,
            phantom: 0.1,
            ..StatementSpec::default()
        };
        let p = plan(&spec);
        let numbers: Vec<String> = (0..10_000).map(|i| format!("T{i}")).collect();
        let drawn: Vec<Option<Fault>> = numbers.iter().map(|t| p.fault(7, t)).collect();
        for fault in [
            Fault::Drop,
            Fault::WrongAmount,
            Fault::WrongStatus,
            Fault::WrongFee,
            Fault::Phantom,
        ] {
            let n = drawn.iter().filter(|d| **d == Some(fault)).count();
            // 1,000 expected; a fixed seed makes this exact run to run.
            assert!((850..=1150).contains(&n), "{fault:?}: {n}");
        }
        // The same seed, the same faults; another seed, others.
        assert_eq!(numbers.iter().map(|t| p.fault(7, t)).collect::<Vec<_>>(), drawn);
        let other: Vec<Option<Fault>> = numbers.iter().map(|t| p.fault(8, t)).collect();
        assert_ne!(other, drawn);
        // A share of 1 takes every row; 0 none.
        let all = plan(&StatementSpec {
            wrong_fee: 1.0,
            ..StatementSpec::default()
        });
        assert!(numbers.iter().all(|t| all.fault(0, t) == Some(Fault::WrongFee)));
        let none = plan(&StatementSpec::default());
        assert!(numbers.iter().all(|t| none.fault(0, t).is_none()));
    }

    /// A trade number that draws `fault` under `spec`'s shares and seed.
    fn drawing(spec: &StatementSpec, fault: Fault) -> String {
        let p = plan(spec);
        (0..)
            .map(|i| format!("T{i}"))
            .find(|t| p.fault(spec.seed, t) == Some(fault))
            .expect("some number draws it")
    }

    #[test]
    fn writes_a_day_as_an_acquirers_bill() {
        let spec = StatementSpec {
            seed: 3,
            fee_percent: 0.3,
            fee_fixed: 1,
            drop: 0.2,
            wrong_amount: 0.2,
            wrong_status: 0.2,
            wrong_fee: 0.2,
            phantom: 0.2,
            ..StatementSpec::default()
        };
        let [dropped, amount, status, fee, phantom] = [
            Fault::Drop,
            Fault::WrongAmount,
            Fault::WrongStatus,
            Fault::WrongFee,
            Fault::Phantom,
        ]
        .map(|f| drawing(&spec, f));
        let digits = phantom_digits(3, &phantom);
        let at = |h: i64, s: i64| DEC_1_CN + h * 3_600_000 + s * 1000;
        // Listed out of order, as two books would: rows are by charge time.
        let charges = vec![
            charge(4, at(9, 0), &fee, 1_000),
            charge(1, at(8, 1), &amount, 123_456),
            charge(2, at(8, 2), &dropped, 500),
            charge(3, at(8, 3), &status, 700),
            charge(5, at(10, 0), &phantom, 200),
        ];
        let p = plan(&spec);
        let days = days(charges, &p, &spec);
        assert_eq!(days.len(), 1);
        let (day, Day { rows, faults }) = days.into_iter().next().expect("one day");
        assert_eq!(
            faults,
            [
                ("amount_mismatch", amount.clone()),
                ("missing_at_channel", dropped.clone()),
                ("status_mismatch", status.clone()),
                ("fee_mismatch", fee.clone()),
                ("missing_in_journal", format!("PHANTOM{digits}")),
            ]
        );
        let text = render(day, &rows, &p.cut, AmountUnit::Yuan).expect("render");
        // Fees: 0.3 % rounded half up, plus 1 fen; the wrong amount's fee is
        // its true amount's (370.368 -> 370, + 1).
        let want = format!(
            "#模拟收单机构 交易明细\r\n\
             #起始日期：[2026-12-01 00:00:00]  终止日期：[2026-12-02 00:00:00]\r\n\
             交易时间,商户订单号,渠道流水号,金额,手续费,状态\r\n\
             2026-12-01 08:00:01,{amount},m1t1,\"1,235.56\",3.71,成功\r\n\
             2026-12-01 08:00:03,{status},m1t3,7.00,0.03,失败\r\n\
             2026-12-01 09:00:00,{fee},m1t4,10.00,0.54,成功\r\n\
             2026-12-01 10:00:00,{phantom},m1t5,2.00,0.02,成功\r\n\
             2026-12-01 10:00:00,PHANTOM{digits},P{digits},1.00,0.01,成功\r\n\
             合计,5,,\"1,255.56\",4.31,\r\n"
        );
        assert_eq!(text, want);
        assert_eq!(
            render_faults(&faults).expect("faults"),
            format!(
                "kind,trade_no\namount_mismatch,{amount}\nmissing_at_channel,{dropped}\n\
                 status_mismatch,{status}\nfee_mismatch,{fee}\nmissing_in_journal,PHANTOM{digits}\n"
            )
        );
        let fen = render(day, &rows, &p.cut, AmountUnit::Fen).expect("render");
        assert!(fen.contains(&format!("2026-12-01 08:00:01,{amount},m1t1,123556,371,成功\r\n")));
        assert!(fen.ends_with("合计,5,,125556,431,\r\n"), "{fen}");
    }

    #[test]
    fn encodes_as_asked() {
        let text = "合计,1,,\"1,000.00\",3.00,\r\n";
        assert_eq!(encode(text, StatementEncoding::Utf8).expect("utf8"), text.as_bytes());
        let bom = encode(text, StatementEncoding::Utf8Bom).expect("bom");
        assert_eq!((&bom[..3], &bom[3..]), (&b"\xEF\xBB\xBF"[..], text.as_bytes()));
        let gbk = encode(text, StatementEncoding::Gbk).expect("gbk");
        // 合 is BA CF and 计 BC C6 in GBK (Python's codec agrees).
        assert_eq!(&gbk[..4], b"\xBA\xCF\xBC\xC6");
        assert_eq!(encoding_rs::GBK.decode_without_bom_handling(&gbk).0, text);
        let err = encode("T😀", StatementEncoding::Gbk).expect_err("not GBK");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn faults_files_sit_beside_their_statement() {
        assert_eq!(
            faults_path(Path::new("/d/statement-2026-12-01.csv")),
            Path::new("/d/statement-2026-12-01.csv.faults.csv")
        );
    }
}
