//! Reading a channel's statement: a CSV file as channels really write it.
//!
//! Statements come in UTF-8 (with or without a BOM) or GBK, with a preamble
//! before the header (`#支付宝交易明细`, the period), quoted fields,
//! thousands separators, yuan with two decimals or fen, and trailing
//! summary rows (`合计`). The file is decoded as it is read ([`Decode`]) and
//! parsed by the `csv` crate one record at a time into one reused buffer:
//! a statement of a million lines takes the memory of one line.
//!
//! Anything this reader cannot read for sure is an error naming the line
//! — bytes that are not text in the encoding, a header that lacks a
//! configured column, a row whose amount is not an amount, quoting that
//! swallowed the rest of the file — never a row silently skipped: a skipped
//! row would be reported as a payment the channel never collected.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use encoding_rs::{Decoder, DecoderResult, Encoding, GBK, UTF_8};

use crate::config::{AmountUnit, StatementColumns, StatementEncoding};

/// What a statement row says about a payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RowKind {
    /// The channel collected the payment.
    Paid,
    /// The channel paid (part of) it back.
    Refund,
    /// Any other status (failed, closed, reversed ...): not collected.
    Other(String),
}

/// One data row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Row {
    /// Line in the file (1-based) where the row starts.
    pub line: u64,
    pub trade_no: String,
    /// Minor units; a refund's as a positive amount.
    pub amount: i64,
    pub fee: Option<i64>,
    pub kind: RowKind,
}

/// Why a statement cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {reason}", .file, .line.map(|l| format!(":{l}")).unwrap_or_default())]
pub(crate) struct StatementError {
    pub file: String,
    pub line: Option<u64>,
    pub reason: String,
}

/// Longest trade number accepted in a row (payroute's are at most 32).
const MAX_TRADE_NO: usize = 64;
/// Bytes read to guess the encoding.
const SNIFF: usize = 64 << 10;

/// A statement being read, row by row, from a file ([`Statement::open`])
/// or any buffered reader ([`Statement::from_reader`]: bytes in memory, for
/// tests and the fuzz target, which read exactly what a file would give).
pub(crate) struct Statement<R = BufReader<File>> {
    file: String,
    reader: csv::Reader<Decode<R>>,
    record: csv::StringRecord,
    columns: Columns,
    cfg: StatementColumns,
    /// A summary row (合计) was seen: only more summary or empty rows may follow.
    ended: bool,
}

/// Positions of the configured columns in the header.
#[derive(Debug)]
struct Columns {
    trade_no: usize,
    amount: usize,
    fee: Option<usize>,
    status: Option<usize>,
    /// Fields a data row must have at least.
    width: usize,
}

impl Statement<BufReader<File>> {
    /// Opens the file, decides its encoding and finds the header.
    pub fn open(path: &Path, cfg: &StatementColumns) -> Result<Statement, StatementError> {
        let file = path.display().to_string();
        let raw = match File::open(path) {
            Ok(f) => BufReader::new(f),
            Err(e) => {
                return Err(StatementError {
                    file,
                    line: None,
                    reason: format!("cannot open: {e}"),
                })
            }
        };
        Statement::from_reader(file, raw, cfg)
    }
}

impl<R: BufRead> Statement<R> {
    /// Reads a statement from `raw` (`file` names it in errors): decides
    /// its encoding and finds the header.
    pub fn from_reader(file: String, mut raw: R, cfg: &StatementColumns) -> Result<Statement<R>, StatementError> {
        let encoding = match sniff(&mut raw, cfg.encoding) {
            Ok(encoding) => encoding,
            Err(e) => {
                return Err(StatementError {
                    file,
                    line: None,
                    reason: format!("cannot read: {e}"),
                })
            }
        };
        let decode = Decode::new(raw, encoding);
        // A record ends at a line feed only (a CR before it is trimmed with
        // the field). The csv default also ends one at a lone CR, which the
        // reader's line count does not see: two records then claimed one
        // line and errors named the wrong one (found by the `statement`
        // fuzz target; test `a_lone_carriage_return_does_not_end_a_line`).
        let reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .trim(csv::Trim::All)
            .terminator(csv::Terminator::Any(b'\n'))
            .from_reader(decode);
        let mut statement = Statement {
            file,
            reader,
            record: csv::StringRecord::new(),
            columns: Columns {
                trade_no: 0,
                amount: 0,
                fee: None,
                status: None,
                width: 0,
            },
            cfg: cfg.clone(),
            ended: false,
        };
        statement.columns = statement.header()?;
        Ok(statement)
    }

    /// The next data row; `None` at the end.
    pub fn next_row(&mut self) -> Result<Option<Row>, StatementError> {
        loop {
            if !self.read_record()? {
                return Ok(None);
            }
            let line = self.line();
            let first = self.record.iter().find(|f| !f.is_empty()).unwrap_or("");
            if first.is_empty() || first.starts_with('#') {
                continue;
            }
            if is_summary(first) {
                self.ended = true;
                continue;
            }
            if self.ended {
                return Err(self.error(Some(line), "a row after the summary row (合计)".into()));
            }
            return self
                .row(line)
                .map(Some)
                .map_err(|reason| self.error(Some(line), reason));
        }
    }

    fn row(&self, line: u64) -> Result<Row, String> {
        let c = &self.columns;
        if self.record.len() < c.width {
            return Err(format!(
                "{} fields where the header has at least {} (a broken quote or a cut line?)",
                self.record.len(),
                c.width
            ));
        }
        let field = |i: usize| self.record.get(i).unwrap_or("");
        let trade_no = field(c.trade_no);
        if trade_no.is_empty() {
            return Err(format!("no trade number in column {:?}", self.cfg.trade_no));
        }
        if trade_no.len() > MAX_TRADE_NO || trade_no.chars().any(|ch| ch.is_control() || ch == '"') {
            return Err(format!(
                "column {:?} is not a trade number (a broken quote?)",
                self.cfg.trade_no
            ));
        }
        let unit = self.cfg.amount_unit;
        let amount =
            parse_amount(field(c.amount), unit).map_err(|why| format!("column {:?}: {why}", self.cfg.amount))?;
        let fee = match c.fee.map(field) {
            None | Some("") => None,
            Some(text) => Some(
                parse_amount(text, unit)
                    .map_err(|why| format!("column {:?}: {why}", self.cfg.fee.as_deref().unwrap_or("")))?
                    .abs(),
            ),
        };
        let kind = match c.status.map(field) {
            None if amount < 0 => RowKind::Refund,
            None => RowKind::Paid,
            Some(s) if self.cfg.paid_values.iter().any(|v| v == s) => RowKind::Paid,
            Some(s) if self.cfg.refund_values.iter().any(|v| v == s) => RowKind::Refund,
            Some(s) => RowKind::Other(s.to_owned()),
        };
        Ok(Row {
            line,
            trade_no: trade_no.to_owned(),
            amount: amount.abs(),
            fee,
            kind,
        })
    }

    /// Reads records until one names the configured columns.
    fn header(&mut self) -> Result<Columns, StatementError> {
        let cfg = self.cfg.clone();
        let wanted: Vec<&str> = [
            Some(&cfg.trade_no),
            Some(&cfg.amount),
            cfg.fee.as_ref(),
            cfg.status.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect();
        let mut best: Option<(usize, u64, Vec<String>)> = None;
        loop {
            if !self.read_record()? {
                break;
            }
            let line = self.line();
            let find = |name: &str| self.record.iter().position(|f| f == name);
            let found = wanted.iter().filter(|w| find(w).is_some()).count();
            if found == wanted.len() {
                let pos = |name: &String| find(name).unwrap_or(0);
                let fee = cfg.fee.as_ref().map(pos);
                let status = cfg.status.as_ref().map(pos);
                let trade_no = pos(&cfg.trade_no);
                let amount = pos(&cfg.amount);
                let width = [Some(trade_no), Some(amount), fee, status]
                    .into_iter()
                    .flatten()
                    .max()
                    .unwrap_or(0)
                    + 1;
                return Ok(Columns {
                    trade_no,
                    amount,
                    fee,
                    status,
                    width,
                });
            }
            // Remember the likeliest header, to say what it lacks.
            if found > 0 && best.as_ref().is_none_or(|(n, _, _)| found > *n) {
                best = Some((found, line, self.record.iter().map(str::to_owned).collect()));
            }
        }
        let reason = match best {
            Some((_, line, fields)) => {
                let missing: Vec<&str> = wanted
                    .iter()
                    .copied()
                    .filter(|w| !fields.iter().any(|f| f == w))
                    .collect();
                return Err(self.error(
                    Some(line),
                    format!(
                        "the header has no column {} (it has {}): check [channel.statement]",
                        quoted(&missing),
                        quoted(&fields.iter().map(String::as_str).collect::<Vec<_>>())
                    ),
                ));
            }
            None => format!(
                "no header row naming the columns {} (wrong file, encoding or [channel.statement]?)",
                quoted(&wanted)
            ),
        };
        Err(self.error(None, reason))
    }

    /// Reads the next record; `false` at the end of the file.
    fn read_record(&mut self) -> Result<bool, StatementError> {
        match self.reader.read_record(&mut self.record) {
            Ok(more) => Ok(more),
            Err(e) => {
                let line = e.position().map(csv::Position::line);
                let reason = match e.into_kind() {
                    csv::ErrorKind::Io(io) => io.to_string(),
                    other => format!("{other:?}"),
                };
                Err(self.error(line.or(Some(self.reader.get_ref().line())), reason))
            }
        }
    }

    fn line(&self) -> u64 {
        self.record.position().map_or(0, csv::Position::line)
    }

    fn error(&self, line: Option<u64>, reason: String) -> StatementError {
        StatementError {
            file: self.file.clone(),
            line,
            reason,
        }
    }
}

fn quoted(names: &[&str]) -> String {
    names.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ")
}

/// A totals row: 合计 (sum), 总计 (grand total), 汇总, or English `total`.
fn is_summary(first: &str) -> bool {
    ["合计", "总计", "汇总", "小计"].iter().any(|w| first.starts_with(w))
        || first.get(..5).is_some_and(|s| s.eq_ignore_ascii_case("total"))
}

/// An amount as a statement writes it, in minor units: `1,234.56`,
/// `¥1234.5`, `-0.30` (yuan), or `123456` (fen). Never through floats.
pub(crate) fn parse_amount(text: &str, unit: AmountUnit) -> Result<i64, String> {
    let bad = || format!("{text:?} is not an amount");
    let mut s: String = text
        .chars()
        .filter(|c| !matches!(c, ',' | ' ' | '¥' | '￥' | '\u{a0}'))
        .collect();
    let negative = s.starts_with('-');
    if negative || s.starts_with('+') {
        s.remove(0);
    }
    let (whole, frac) = match s.split_once('.') {
        Some((w, f)) => (w, f),
        None => (s.as_str(), ""),
    };
    let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    let minor: i64 = match unit {
        AmountUnit::Fen => {
            if !digits(whole) || !frac.is_empty() {
                return Err(format!("{text:?} is not an amount in fen (an integer)"));
            }
            whole.parse().map_err(|_| bad())?
        }
        AmountUnit::Yuan => {
            if !digits(whole) || frac.len() > 2 || (!frac.is_empty() && !digits(frac)) || s.ends_with('.') {
                return Err(format!("{text:?} is not an amount in yuan (at most two decimals)"));
            }
            let whole: i64 = whole.parse().map_err(|_| bad())?;
            let frac: i64 = format!("{frac:0<2}").parse().map_err(|_| bad())?;
            whole
                .checked_mul(100)
                .and_then(|w| w.checked_add(frac))
                .ok_or_else(bad)?
        }
    };
    Ok(if negative { -minor } else { minor })
}

/// Decides the encoding: a BOM or valid UTF-8 in the first 64 KiB says
/// UTF-8, anything else GBK (for `auto`); the BOM is consumed.
fn sniff(raw: &mut impl BufRead, configured: StatementEncoding) -> io::Result<&'static Encoding> {
    let mut head = Vec::with_capacity(SNIFF);
    // `fill_buf` gives what is buffered; read more through `take` without consuming.
    let buffered = raw.fill_buf()?;
    if buffered.starts_with(b"\xEF\xBB\xBF") {
        raw.consume(3);
        return Ok(UTF_8);
    }
    match configured {
        StatementEncoding::Utf8 => return Ok(UTF_8),
        StatementEncoding::Gbk => return Ok(GBK),
        StatementEncoding::Auto => {}
    }
    head.extend_from_slice(buffered);
    let valid = match std::str::from_utf8(&head[..head.len().min(SNIFF)]) {
        Ok(_) => true,
        // Cut in the middle of a character at the end of the sample: still UTF-8.
        Err(e) => e.error_len().is_none(),
    };
    Ok(if valid { UTF_8 } else { GBK })
}

/// Text in some encoding, read as UTF-8; bytes that are not text in that
/// encoding are an error naming the line (never a replacement character: a
/// mangled trade number would not match, and be reported as a difference).
pub(crate) struct Decode<R> {
    inner: R,
    decoder: Decoder,
    encoding: &'static Encoding,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    eof: bool,
    /// The decoder was told the input ended and took all of it: the end
    /// from then on. encoding_rs panics on a decoder used again after that,
    /// and the csv reader does read again at the end (after a last line
    /// without a newline).
    finished: bool,
    /// Newlines handed out so far: the line an error is on.
    newlines: u64,
}

impl<R: Read> Decode<R> {
    fn new(inner: R, encoding: &'static Encoding) -> Decode<R> {
        Decode {
            inner,
            decoder: encoding.new_decoder_without_bom_handling(),
            encoding,
            buf: vec![0; 16 << 10].into_boxed_slice(),
            start: 0,
            end: 0,
            eof: false,
            finished: false,
            newlines: 0,
        }
    }

    /// The line being decoded (1-based).
    fn line(&self) -> u64 {
        self.newlines + 1
    }
}

impl<R: Read> Read for Decode<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        // Room for the longest UTF-8 character: the decoder writes whole ones.
        if out.len() < 4 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "read buffer under 4 bytes"));
        }
        if self.finished {
            return Ok(0);
        }
        loop {
            if self.start == self.end && !self.eof {
                self.start = 0;
                self.end = self.inner.read(&mut self.buf)?;
                self.eof = self.end == 0;
            }
            let input = &self.buf[self.start..self.end];
            let (result, read, written) = self.decoder.decode_to_utf8_without_replacement(input, out, self.eof);
            self.start += read;
            self.newlines += out[..written].iter().filter(|&&b| b == b'\n').count() as u64;
            match result {
                DecoderResult::Malformed(..) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "bytes that are not {} text (set [channel.statement] encoding?)",
                            self.encoding.name()
                        ),
                    ));
                }
                // The last call this decoder may see (issue 18, found by the
                // `statement` fuzz target: a file whose last line had no
                // newline panicked `reconcile`).
                DecoderResult::InputEmpty if self.eof => {
                    self.finished = true;
                    return Ok(written);
                }
                _ if written > 0 => return Ok(written),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DayCut;

    fn columns() -> StatementColumns {
        StatementColumns {
            trade_no: "商户订单号".into(),
            amount: "金额".into(),
            amount_unit: AmountUnit::Yuan,
            fee: Some("手续费".into()),
            status: Some("状态".into()),
            paid_values: vec!["成功".into(), "SUCCESS".into()],
            refund_values: vec!["退款".into()],
            day_cut: DayCut::default(),
            encoding: StatementEncoding::Auto,
        }
    }

    /// Writes `bytes` to a file and reads every row (or the first error).
    fn read(bytes: &[u8], cfg: &StatementColumns) -> Result<Vec<Row>, StatementError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.csv");
        std::fs::write(&path, bytes).unwrap();
        let mut s = Statement::open(&path, cfg)?;
        let mut rows = Vec::new();
        while let Some(row) = s.next_row()? {
            rows.push(row);
        }
        Ok(rows)
    }

    /// Reads every row from bytes in memory, as the fuzz target does.
    fn read_bytes(bytes: &[u8], cfg: &StatementColumns) -> Result<Vec<Row>, StatementError> {
        let mut s = Statement::from_reader("s.csv".into(), bytes, cfg)?;
        let mut rows = Vec::new();
        while let Some(row) = s.next_row()? {
            rows.push(row);
        }
        Ok(rows)
    }

    const BILL: &str = "#模拟收单机构 交易明细\n#起始日期：[2026-12-01 00:00:00]  终止日期：[2026-12-02 00:00:00]\n\
        交易时间,商户订单号,渠道流水号,金额,手续费,状态\n\
        2026-12-01 08:00:01,T1,m1,\"1,234.56\",3.70,成功\n\
        2026-12-01 08:00:02, T2 ,m2,0.5,0.00,失败\n\
        2026-12-01 09:00:00,T1,m3,-10.00,,退款\n\
        合计,3,,\"1,225.06\",3.70,\n";

    #[test]
    fn a_bill_with_a_preamble_quotes_and_a_summary_row_reads_in_minor_units() {
        let rows = read(BILL.as_bytes(), &columns()).unwrap();
        assert_eq!(
            rows,
            vec![
                Row {
                    line: 4,
                    trade_no: "T1".into(),
                    amount: 123_456,
                    fee: Some(370),
                    kind: RowKind::Paid
                },
                Row {
                    line: 5,
                    trade_no: "T2".into(),
                    amount: 50,
                    fee: Some(0),
                    kind: RowKind::Other("失败".into())
                },
                Row {
                    line: 6,
                    trade_no: "T1".into(),
                    amount: 1000,
                    fee: None,
                    kind: RowKind::Refund
                },
            ]
        );
    }

    #[test]
    fn gbk_and_a_utf8_bom_are_read_as_the_same_rows() {
        let utf8 = read(BILL.as_bytes(), &columns()).unwrap();
        let (gbk, _, unmappable) = GBK.encode(BILL);
        assert!(!unmappable);
        assert_eq!(read(&gbk, &columns()).unwrap(), utf8, "GBK, found by itself");
        let with_bom = [b"\xEF\xBB\xBF".as_slice(), BILL.as_bytes()].concat();
        assert_eq!(read(&with_bom, &columns()).unwrap(), utf8, "UTF-8 with a BOM");
        let cfg = StatementColumns {
            encoding: StatementEncoding::Gbk,
            ..columns()
        };
        assert_eq!(read(&gbk, &cfg).unwrap(), utf8, "GBK, as configured");
    }

    #[test]
    fn bytes_that_are_not_text_in_the_encoding_name_their_line() {
        let cfg = StatementColumns {
            encoding: StatementEncoding::Utf8,
            ..columns()
        };
        let (gbk, _, _) = GBK.encode(BILL);
        let e = read(&gbk, &cfg).unwrap_err();
        assert_eq!(e.line, Some(1), "{e}");
        assert!(e.to_string().contains("not UTF-8 text"), "{e}");
    }

    #[test]
    fn a_lone_carriage_return_does_not_end_a_line() {
        // CRLF line ends; a CR alone in the middle of line 2.
        let text = "商户订单号,金额,手续费,状态\r\nT1,1.00,0.01,成功\r!\r\nT2,2.00,0.01,成功\r\n";
        let rows = read(text.as_bytes(), &columns()).unwrap();
        let lines: Vec<u64> = rows.iter().map(|r| r.line).collect();
        assert_eq!(lines, [2, 3], "one record per line: {rows:?}");
        assert_eq!(rows[1].trade_no, "T2");
    }

    #[test]
    fn a_header_without_a_configured_column_says_which() {
        let cfg = StatementColumns {
            fee: Some("服务费".into()),
            ..columns()
        };
        let e = read(BILL.as_bytes(), &cfg).unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.to_string().contains("\"服务费\""), "{e}");
        let e = read(b"a,b\n1,2\n", &columns()).unwrap_err();
        assert!(e.to_string().contains("no header row"), "{e}");
    }

    #[test]
    fn a_broken_quote_or_a_bad_amount_is_an_error_on_its_line() {
        let broken = "商户订单号,金额,手续费,状态\nT1,1.00,0.01,成功\nT2,\"2.00,0.01,成功\nT3,3.00,0.01,成功\n";
        let e = read(broken.as_bytes(), &columns()).unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        let bad = "商户订单号,金额,手续费,状态\nT1,1.001,0.01,成功\n";
        let e = read(bad.as_bytes(), &columns()).unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.to_string().contains("two decimals"), "{e}");
        let after = "商户订单号,金额,手续费,状态\nT1,1.00,0.01,成功\n合计,1.00,,\nT2,1.00,0.01,成功\n";
        let e = read(after.as_bytes(), &columns()).unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
    }

    #[test]
    fn amounts_in_yuan_and_fen() {
        assert_eq!(parse_amount("1,234.56", AmountUnit::Yuan), Ok(123_456));
        assert_eq!(parse_amount("¥1234.5", AmountUnit::Yuan), Ok(123_450));
        assert_eq!(parse_amount("-0.30", AmountUnit::Yuan), Ok(-30));
        assert_eq!(parse_amount("7", AmountUnit::Yuan), Ok(700));
        assert_eq!(parse_amount("123,456", AmountUnit::Fen), Ok(123_456));
        for bad in ["", "1.", ".5", "1.234", "1e3", "abc", "--1"] {
            assert!(parse_amount(bad, AmountUnit::Yuan).is_err(), "{bad:?}");
        }
        assert!(parse_amount("1.50", AmountUnit::Fen).is_err());
        assert!(parse_amount("99999999999999999999", AmountUnit::Yuan).is_err());
    }

    /// Issue 18, found by the `statement` fuzz target in its first
    /// seconds: a file whose last line has no newline makes the csv reader
    /// read once more at the end, and the decoder, used after it had
    /// finished, panicked (`reconcile` died on such a statement). The
    /// target's first input was a bill ending in a summary row with an
    /// open quote; minimised, the one byte `v`.
    #[test]
    fn a_last_line_without_a_newline_is_read_not_a_panic() {
        let e = read_bytes(b"v", &columns()).unwrap_err();
        assert!(e.to_string().contains("no header row"), "{e}");
        let whole = read_bytes(BILL.as_bytes(), &columns()).unwrap();
        let cut = BILL.trim_end_matches('\n');
        let (gbk, _, _) = GBK.encode(cut);
        let bom = [b"\xEF\xBB\xBF".as_slice(), cut.as_bytes()].concat();
        for bytes in [cut.as_bytes(), &gbk, &bom] {
            assert_eq!(read_bytes(bytes, &columns()).unwrap(), whole);
            assert_eq!(read(bytes, &columns()).unwrap(), whole, "from a file");
        }
        // The first find's shape: the summary row's quote open to the end.
        let open = BILL.replace("\"1,225.06\",3.70,\n", "\"1,225.06,3.70,\r\n");
        assert_eq!(read_bytes(open.as_bytes(), &columns()).unwrap(), whole);
        // A data row as the last line, without a newline.
        let rows = read_bytes("商户订单号,金额,手续费,状态\nT9,2.00,0.01,成功".as_bytes(), &columns()).unwrap();
        assert_eq!((rows.len(), rows[0].amount), (1, 200));
    }

    #[test]
    fn without_a_status_column_a_negative_amount_is_a_refund() {
        let cfg = StatementColumns {
            status: None,
            paid_values: vec![],
            refund_values: vec![],
            fee: None,
            amount_unit: AmountUnit::Fen,
            ..columns()
        };
        let rows = read("商户订单号,金额\nT1,100\nT1,-40\n".as_bytes(), &cfg).unwrap();
        assert_eq!(
            rows.iter().map(|r| (&r.kind, r.amount)).collect::<Vec<_>>(),
            vec![(&RowKind::Paid, 100), (&RowKind::Refund, 40)]
        );
    }
}
