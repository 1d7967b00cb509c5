//! epay's signature, the one rule both ways use: every parameter but `sign`
//! and `sign_type`, and none with an empty value, sorted by name (byte
//! order), joined as `k=v` with `&` (values as received, not URL-encoded),
//! the key appended directly, MD5, lowercase hex.
//!
//! Why it is built so: the gateway, the merchant and the receiver all sign
//! or verify with this one function, so the mock cannot disagree with
//! itself; the interoperability test then holds it against Python's
//! `hashlib`, an implementation this crate did not write. Parameters are
//! taken as pairs in any order and sorted here, so no caller can forget to.
//! Verification compares without an early exit; a mock does not need it,
//! but a test receiver modelled on a merchant should look like one.

use md5::{Digest, Md5};

/// The string that is hashed, before the key: `a=1&b=2`.
pub(crate) fn canonical<'a>(params: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut signed: Vec<(&str, &str)> = params
        .into_iter()
        .filter(|(k, v)| !v.is_empty() && *k != "sign" && *k != "sign_type")
        .collect();
    // `str` orders by bytes, which is PHP's `ksort` on these names.
    signed.sort_unstable();
    let mut out = String::with_capacity(signed.iter().map(|(k, v)| k.len() + v.len() + 2).sum());
    for (i, (k, v)) in signed.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// The `sign` of these parameters under `key` (lowercase hex MD5).
///
/// A parameter named twice is signed twice; epay's forms have each name
/// once, and a form read by this crate keeps the last of a repeated name,
/// as PHP does.
pub fn sign<'a>(params: impl IntoIterator<Item = (&'a str, &'a str)>, key: &str) -> String {
    let mut md5 = Md5::new();
    md5.update(canonical(params).as_bytes());
    md5.update(key.as_bytes());
    hex::encode(md5.finalize())
}

/// Whether the parameters carry a `sign` that is theirs under `key`. A
/// missing `sign` never verifies; `sign_type`, if present, must be `MD5`.
pub fn verify<'a>(params: impl IntoIterator<Item = (&'a str, &'a str)> + Clone, key: &str) -> bool {
    let mut given = None;
    for (k, v) in params.clone() {
        match k {
            "sign" => given = Some(v),
            "sign_type" if v != "MD5" => return false,
            _ => {}
        }
    }
    let Some(given) = given else {
        return false;
    };
    let expected = sign(params, key);
    given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_string_follows_the_rule() {
        let params = [
            ("type", "alipay"),
            ("sign", "x"),
            ("sign_type", "MD5"),
            ("param", ""),
            ("money", "1.00"),
            ("Name", "upper sorts first"),
            ("name", "商品 a&b"),
        ];
        assert_eq!(
            canonical(params),
            "Name=upper sorts first&money=1.00&name=商品 a&b&type=alipay"
        );
    }

    #[test]
    fn signs_like_md5_of_the_canonical_string() {
        // md5("money=1.00&pid=1001KEY"), computed independently (coreutils md5sum).
        assert_eq!(
            sign([("pid", "1001"), ("money", "1.00")], "KEY"),
            "3238bb873848e79303756bbccca7ce89"
        );
    }

    #[test]
    fn verifies_only_its_own_signature() {
        let mut params = vec![("pid", "1001"), ("money", "1.00")];
        let s = sign(params.iter().copied(), "KEY");
        params.push(("sign", &s));
        assert!(verify(params.iter().copied(), "KEY"));
        assert!(!verify(params.iter().copied(), "OTHER"));
        let mut typed = params.clone();
        typed.push(("sign_type", "MD5"));
        assert!(verify(typed.iter().copied(), "KEY"));
        typed.push(("sign_type", "RSA"));
        assert!(!verify(typed.iter().copied(), "KEY"));
        assert!(!verify([("pid", "1001"), ("money", "1.00")], "KEY"), "no sign");
        let upper = s.to_uppercase();
        assert!(!verify(
            [("pid", "1001"), ("money", "1.00"), ("sign", upper.as_str())],
            "KEY"
        ));
    }
}
