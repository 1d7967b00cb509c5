//! Card numbers out of logs: [`mask_pans`].
//!
//! Merchants put what they like in the request data payroute logs — order
//! ids, mostly — and some put card numbers there (an order id that *is* the
//! PAN is more common than one would hope). PCI DSS forbids a full PAN in
//! logs and allows at most the first six and last four digits, so every log
//! site that prints request data passes it through [`mask_pans`] first.
//!
//! What counts as a PAN: 13 to 19 digits that pass the Luhn check, written
//! together or in groups separated by any single character that is not a
//! digit (`4111 1111 1111 1111`, `4111-1111-1111-1111`, and just as well
//! `4111.1111.1111.1111`, `4111_1111_1111_1111`, `4111+1111…`: a merchant's
//! separator is not ours to guess), bounded by anything that is not a digit
//! (`ord-4111111111111111` is masked too). A run of more than
//! 19 digits is a longer number, not a card number, and is left alone; so are
//! runs failing Luhn, which keeps ordinary numeric ids readable. The check is
//! deliberately generous: masking a number that merely looks like a card is
//! a small loss in a log line, printing a card is a compliance incident.
//!
//! Masking keeps the first 6 and last 4 digits and the separators, and
//! replaces every other digit with `*`: `411111******1111`.

use std::borrow::Cow;
use std::ops::Range;

/// Fewest and most digits of a payment card number (ISO/IEC 7812).
const MIN_DIGITS: usize = 13;
const MAX_DIGITS: usize = 19;
/// Digits kept in the clear at each end (PCI DSS: first six, last four).
const KEEP_FIRST: usize = 6;
const KEEP_LAST: usize = 4;

/// `text` with every card number in it masked to its first 6 and last 4
/// digits. Borrows when there is nothing to mask, which is the common case.
pub(crate) fn mask_pans(text: &str) -> Cow<'_, str> {
    // Fast path: fewer digits than the shortest card number.
    if text.bytes().filter(u8::is_ascii_digit).count() < MIN_DIGITS {
        return Cow::Borrowed(text);
    }
    let found = pans(text.as_bytes());
    if found.is_empty() {
        return Cow::Borrowed(text);
    }
    let mut out = text.as_bytes().to_vec();
    for span in found {
        let digits: Vec<usize> = span.filter(|&i| out[i].is_ascii_digit()).collect();
        for &i in &digits[KEEP_FIRST..digits.len() - KEEP_LAST] {
            out[i] = b'*';
        }
    }
    // Only ASCII digits were replaced by an ASCII '*': still valid UTF-8.
    Cow::Owned(String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// The byte spans of the card numbers in `text` (digits and inner separators).
fn pans(text: &[u8]) -> Vec<Range<usize>> {
    let groups = digit_groups(text);
    let mut found = Vec::new();
    let mut first = 0;
    while first < groups.len() {
        match longest_pan_from(text, &groups, first) {
            Some(last) => {
                found.push(groups[first].start..groups[last].end);
                first = last + 1;
            }
            None => first += 1,
        }
    }
    found
}

/// Maximal runs of ASCII digits.
fn digit_groups(text: &[u8]) -> Vec<Range<usize>> {
    let mut groups = Vec::new();
    let mut i = 0;
    while i < text.len() {
        if text[i].is_ascii_digit() {
            let start = i;
            while i < text.len() && text[i].is_ascii_digit() {
                i += 1;
            }
            groups.push(start..i);
        } else {
            i += 1;
        }
    }
    groups
}

/// The last group of the longest card number that starts at group `first`,
/// joining groups separated by exactly one character (never a digit: groups
/// are maximal runs of digits).
fn longest_pan_from(text: &[u8], groups: &[Range<usize>], first: usize) -> Option<usize> {
    let mut digits = 0;
    let mut best = None;
    for last in first..groups.len() {
        if last > first && !one_char(&text[groups[last - 1].end..groups[last].start]) {
            break;
        }
        digits += groups[last].len();
        if digits > MAX_DIGITS {
            break;
        }
        if digits >= MIN_DIGITS
            && luhn(
                groups[first..=last]
                    .iter()
                    .flat_map(|g| text[g.clone()].iter().copied()),
            )
        {
            best = Some(last);
        }
    }
    best
}

/// Is `gap` one character? It lies between ASCII digits of a `str`, so it
/// is whole UTF-8: one byte, or one multi-byte character (`4111·1111…`).
fn one_char(gap: &[u8]) -> bool {
    match gap {
        [b] => b.is_ascii(),
        [lead, rest @ ..] if !rest.is_empty() => {
            let len = match lead {
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                0xF0..=0xF7 => 4,
                _ => 0,
            };
            gap.len() == len
        }
        _ => false,
    }
}

/// The Luhn (mod 10) check over ASCII digits.
fn luhn(digits: impl DoubleEndedIterator<Item = u8>) -> bool {
    let sum: u32 = digits
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let d = u32::from(d - b'0');
            if i % 2 == 1 {
                let twice = d * 2;
                if twice > 9 {
                    twice - 9
                } else {
                    twice
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_a_bare_pan_to_first_six_last_four() {
        assert_eq!(mask_pans("4111111111111111"), "411111******1111");
        assert_eq!(mask_pans("5555555555554444"), "555555******4444");
        // 15-digit Amex, 13-digit Visa, 19-digit.
        assert_eq!(mask_pans("378282246310005"), "378282*****0005");
        assert_eq!(mask_pans("4222222222222"), "422222***2222");
        assert_eq!(mask_pans("6011000990139424"), "601100******9424");
        assert_eq!(mask_pans("4000000000000000006"), "400000*********0006");
    }

    #[test]
    fn masks_inside_text_and_grouped_forms() {
        assert_eq!(
            mask_pans("order ord-4111111111111111 failed"),
            "order ord-411111******1111 failed"
        );
        assert_eq!(mask_pans("4111 1111 1111 1111"), "4111 11** **** 1111");
        assert_eq!(mask_pans("4111-1111-1111-1111"), "4111-11**-****-1111");
        assert_eq!(
            mask_pans("a=4111111111111111,b=5555555555554444"),
            "a=411111******1111,b=555555******4444"
        );
        // A PAN right after a short number with a dash: the short one stays.
        assert_eq!(mask_pans("12-4111111111111111"), "12-411111******1111");
    }

    /// The probe's forms (issue 18, finding 8): any single non-digit
    /// between groups, mixed or not, ASCII or not.
    #[test]
    fn masks_groups_whatever_single_character_separates_them() {
        for (pan, masked) in [
            ("4111.1111.1111.1111", "4111.11**.****.1111"),
            ("4111_1111_1111_1111", "4111_11**_****_1111"),
            ("4111+1111+1111+1111", "4111+11**+****+1111"),
            ("4111/1111/1111/1111", "4111/11**/****/1111"),
            ("4111:1111.1111-1111", "4111:11**.****-1111"),
            ("5555x5555x5555x4444", "5555x55**x****x4444"),
            ("4111·1111·1111·1111", "4111·11**·****·1111"),
            ("3782.822463.10005", "3782.82****.*0005"),
        ] {
            assert_eq!(mask_pans(pan), masked, "{pan}");
            assert_eq!(mask_pans(&format!("ord={pan};")), format!("ord={masked};"));
        }
    }

    #[test]
    fn leaves_other_numbers_alone() {
        for s in [
            "ord-1234",
            "4111111111111112",          // fails Luhn
            "41111111111111111111",      // 20 digits: not a card
            "411111111111",              // 12 digits
            "2026-04-14T10:00:00Z",      // dates
            "4111  1111 1111 1111",      // double space is no grouping
            "4111..1111.1111.1111",      // nor are two characters
            "4111.1111.1111.1112",       // fails Luhn, whatever the separator
            "1.2.3.4.5.6.7.8.9.0.1.2.3", // 13 digits failing Luhn
            "request 0123456789abcdef",
        ] {
            assert!(
                matches!(mask_pans(s), Cow::Borrowed(_)),
                "{s} was changed to {}",
                mask_pans(s)
            );
        }
    }

    #[test]
    fn never_breaks_utf8() {
        assert_eq!(mask_pans("订单 4111111111111111 ✓"), "订单 411111******1111 ✓");
    }

    #[test]
    fn luhn_reference_values() {
        assert!(luhn(b"79927398713".iter().copied()));
        assert!(!luhn(b"79927398710".iter().copied()));
        assert!(luhn(b"0".iter().copied()));
    }
}
