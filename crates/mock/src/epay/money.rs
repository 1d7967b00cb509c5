//! epay's `money`: yuan as text, with at most two decimals, read into fen
//! exactly and written back in the two ways gateways write it.
//!
//! Why it is built so: amounts are compared as numbers everywhere in epay
//! (`"1"` is `"1.00"`), so the mock keeps fen (`u64`) and never a float;
//! the text a gateway sends is made from fen, either as its database holds
//! it (`"1.00"`) or as PHP prints a float (`"1"`, `"1.5"`), which is what
//! `money_as_float` exists to exercise in receivers.

/// Fen in `money`, if it is yuan with at most two decimals: `"1"`, `"1.5"`,
/// `"1.50"`, `"0.01"`. Signs, exponents, spaces, a bare `.`, three
/// decimals and amounts beyond `u64` fen are not money.
pub fn fen(money: &str) -> Option<u64> {
    let (whole, cents) = match money.split_once('.') {
        Some((w, c)) => (w, c),
        None => (money, ""),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(cents) || cents.len() > 2 {
        return None;
    }
    if money.contains('.') && cents.is_empty() {
        return None;
    }
    let whole: u64 = whole.parse().ok()?;
    let cents = match cents.len() {
        0 => 0,
        1 => u64::from(cents.as_bytes()[0] - b'0') * 10,
        _ => cents.parse().ok()?,
    };
    whole.checked_mul(100)?.checked_add(cents)
}

/// Two decimals, as a gateway's database returns it: `"1.00"`.
pub(crate) fn yuan(fen: u64) -> String {
    format!("{}.{:02}", fen / 100, fen % 100)
}

/// As PHP prints a float: no trailing zeros, no trailing point (`"1"`,
/// `"1.5"`, `"0.01"`).
pub(crate) fn float(fen: u64) -> String {
    match fen % 100 {
        0 => (fen / 100).to_string(),
        c if c % 10 == 0 => format!("{}.{}", fen / 100, c / 10),
        c => format!("{}.{:02}", fen / 100, c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_yuan_exactly() {
        for (text, want) in [
            ("1", 100),
            ("1.5", 150),
            ("1.50", 150),
            ("0.01", 1),
            ("0", 0),
            ("012.30", 1230),
            ("99999999.99", 9_999_999_999),
        ] {
            assert_eq!(fen(text), Some(want), "{text}");
        }
        for bad in [
            "",
            ".",
            "1.",
            ".5",
            "1.505",
            "-1",
            "+1",
            "1e3",
            "abc",
            " 1",
            "1,00",
            "1.0a",
            "184467440737095516.16",
        ] {
            assert_eq!(fen(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn writes_both_ways() {
        assert_eq!(
            [yuan(100), yuan(150), yuan(1), yuan(0)],
            ["1.00", "1.50", "0.01", "0.00"]
        );
        assert_eq!(
            [float(100), float(150), float(1), float(1234567)],
            ["1", "1.5", "0.01", "12345.67"]
        );
        assert_eq!(float(10), "0.1");
    }
}
