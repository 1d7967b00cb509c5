//! epay's parameters on the wire: `application/x-www-form-urlencoded` forms
//! and query strings, in and out.
//!
//! Why it is built so: epay is PHP, so a parameter is what PHP's `$_GET` /
//! `$_POST` would make of it — `+` is a space, a name given twice keeps its
//! last value, bytes that are not UTF-8 become U+FFFD (PHP would keep them;
//! a signature over them then fails, which is the outcome that matters).
//! The parameters are kept in a `BTreeMap`, sorted by name in byte order:
//! the order the signature needs. Out, values are encoded as PHP's
//! `http_build_query` does (space as `+`), so a receiver must decode as a
//! form, not as a path.

use std::collections::BTreeMap;

/// A request's or notification's parameters, by name.
pub type Params = BTreeMap<String, String>;

/// Reads a form body or a query string (without its `?`), as PHP does.
pub fn parse(encoded: &[u8]) -> Params {
    form_urlencoded::parse(encoded)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The pairs as borrowed strings, for [`super::sign`] and [`super::verify`].
pub(crate) fn pairs(params: &Params) -> impl Iterator<Item = (&str, &str)> + Clone {
    params.iter().map(|(k, v)| (k.as_str(), v.as_str()))
}

/// Encodes pairs in the order given.
pub(crate) fn encode<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        out.append_pair(k, v);
    }
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_as_php_does() {
        let p = parse("name=%E5%95%86%E5%93%81+a%26b&x=1&x=2&empty=&bad=%FF".as_bytes());
        assert_eq!(p["name"], "商品 a&b");
        assert_eq!(p["x"], "2", "the last of a repeated name");
        assert_eq!(p["empty"], "");
        assert_eq!(p["bad"], "\u{FFFD}");
        assert_eq!(p.keys().collect::<Vec<_>>(), ["bad", "empty", "name", "x"]);
    }

    #[test]
    fn encodes_and_reads_back() {
        let out = encode([("name", "商品 a&b=c"), ("money", "1.00")]);
        assert_eq!(out, "name=%E5%95%86%E5%93%81+a%26b%3Dc&money=1.00");
        let back = parse(out.as_bytes());
        assert_eq!((back["name"].as_str(), back["money"].as_str()), ("商品 a&b=c", "1.00"));
    }
}
