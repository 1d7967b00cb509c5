//! Request paths: the order id at the end of a query or reversal path, and
//! the patterns scripted rules are written in.

use std::borrow::Cow;

/// The last `/`-separated segment of a path (empty for `/` or a trailing `/`).
pub(crate) fn last_segment(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or("")
}

/// Decodes `%XX` escapes in a path segment, so an order id such as `a/b`
/// sent as `a%2Fb` matches what the payment body said. Borrows when there is
/// nothing to decode (the usual case); malformed escapes are kept literally.
pub(crate) fn percent_decode(segment: &str) -> Cow<'_, str> {
    if !segment.contains('%') {
        return Cow::Borrowed(segment);
    }
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex_val(bytes[i + 1]), hex_val(bytes[i + 2])) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(s) => Cow::Owned(s),
        Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Whether `path` (its query ignored) fits `pattern`, where a `*` segment
/// matches any one non-empty segment: `/v1/payments/*/reverse`.
pub(crate) fn path_matches(pattern: &str, path: &str) -> bool {
    let path = path.split('?').next().unwrap_or_default();
    let mut want = pattern.split('/');
    let mut have = path.split('/');
    loop {
        match (want.next(), have.next()) {
            (None, None) => return true,
            (Some("*"), Some(seg)) if !seg.is_empty() => {}
            (Some(w), Some(h)) if w == h => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_percent_escapes() {
        assert!(matches!(percent_decode("plain"), Cow::Borrowed("plain")));
        assert_eq!(percent_decode("a%2Fb%20c"), "a/b c");
        // Malformed or truncated escapes are kept as they are.
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%C3%A9"), "é");
        // Invalid UTF-8 does not panic.
        assert_eq!(percent_decode("%FF"), "\u{FFFD}");
    }

    #[test]
    fn path_segments() {
        assert_eq!(last_segment("/v1/pay/o-1"), "o-1");
        assert_eq!(last_segment("/"), "");
        assert_eq!(last_segment(""), "");
    }

    #[test]
    fn patterns() {
        assert!(path_matches("/v1/payments", "/v1/payments?x=1"));
        assert!(path_matches("/v1/payments/*/reverse", "/v1/payments/o-1/reverse"));
        assert!(!path_matches("/v1/payments/*", "/v1/payments/"));
        assert!(!path_matches("/v1/payments/*", "/v1/payments/o-1/reverse"));
        assert!(!path_matches("/v1/payments", "/v1/payments/o-1"));
    }
}
