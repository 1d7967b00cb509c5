//! epay money: yuan as a decimal string, converted to fen exactly.
//!
//! epay sends `money` as yuan with at most two decimals (`"1"`, `"1.5"`,
//! `"1.50"`); senders often format a float, so `"1"` may come back for
//! `"1.00"`. Everything inside payroute is integer fen, so the conversion is
//! exact and refuses anything that is not plainly such a number — a sign,
//! an exponent, a third decimal, spaces — rather than rounding: confusing
//! yuan and fen, or rounding a fen away, is the classic epay bug.

/// Why a money string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("money {0:?} must be yuan with at most two decimals, e.g. \"12.50\"")]
pub(crate) struct BadMoney(pub String);

/// The largest amount accepted: 10^13 fen (a hundred billion yuan) keeps
/// every sum of a day's payments far inside `i64`.
const MAX_FEN: u64 = 10_000_000_000_000;

/// Parses yuan (`"12"`, `"12.5"`, `"12.50"`) into fen. Zero is a valid
/// amount here; whether a payment may be zero is the caller's rule.
pub(crate) fn parse_yuan(s: &str) -> Result<u64, BadMoney> {
    let bad = || BadMoney(s.chars().take(32).collect());
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || whole.len() > 14 || !digits(whole) || frac.len() > 2 || !digits(frac) {
        return Err(bad());
    }
    if s.contains('.') && frac.is_empty() {
        return Err(bad()); // "1." is not something an epay gateway sends
    }
    let yuan: u64 = whole.parse().map_err(|_| bad())?;
    let frac_fen = match frac.len() {
        0 => 0,
        1 => u64::from(frac.as_bytes()[0] - b'0') * 10,
        _ => u64::from(frac.as_bytes()[0] - b'0') * 10 + u64::from(frac.as_bytes()[1] - b'0'),
    };
    let fen = yuan
        .checked_mul(100)
        .and_then(|f| f.checked_add(frac_fen))
        .ok_or_else(bad)?;
    if fen > MAX_FEN {
        return Err(bad());
    }
    Ok(fen)
}

/// Fen as yuan with two decimals, the form payroute sends (`1250` → `"12.50"`).
pub(crate) fn format_yuan(fen: u64) -> String {
    format!("{}.{:02}", fen / 100, fen % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuan_becomes_fen_exactly() {
        for (s, fen) in [
            ("1", 100),
            ("1.5", 150),
            ("1.50", 150),
            ("0.01", 1),
            ("0", 0),
            ("12345.67", 1_234_567),
            ("0.1", 10),
            ("100000000000", 10_000_000_000_000),
        ] {
            assert_eq!(parse_yuan(s), Ok(fen), "{s}");
        }
    }

    #[test]
    fn anything_else_is_refused() {
        for s in [
            "1.505",
            "-1",
            "1e3",
            "abc",
            "",
            ".5",
            "1.",
            " 1",
            "1 ",
            "+1",
            "1,00",
            "0x10",
            "1.5.0",
            "１",
            "100000000000.01",
            "99999999999999999999",
        ] {
            assert!(parse_yuan(s).is_err(), "{s:?} was accepted");
        }
    }

    #[test]
    fn fen_formats_with_two_decimals_and_round_trips() {
        assert_eq!(format_yuan(1250), "12.50");
        assert_eq!(format_yuan(1), "0.01");
        assert_eq!(format_yuan(0), "0.00");
        for fen in [0, 1, 99, 100, 101, 123_456_789] {
            assert_eq!(parse_yuan(&format_yuan(fen)), Ok(fen));
        }
    }
}
