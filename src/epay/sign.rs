//! epay's MD5 signature, the same both ways (merchant → payroute, payroute →
//! channel, channel → payroute, payroute → merchant).
//!
//! Every parameter but `sign` and `sign_type`, and none with an empty value,
//! sorted by name in byte order, joined as `k=v` with `&` (values as
//! received, not URL-encoded), the key appended directly, MD5, lowercase
//! hex. MD5 is weak, but it is the protocol every epay shop and gateway
//! speaks; what payroute can do is compare in constant time and verify over
//! the exact strings received (a gateway that formats `money` as `"1"` signed
//! `"1"`, not `"1.00"`).

use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

/// The lowercase-hex MD5 signature of `params` with `key`.
pub(crate) fn sign<'a>(params: impl IntoIterator<Item = (&'a str, &'a str)>, key: &str) -> String {
    let mut signed: Vec<(&str, &str)> = params
        .into_iter()
        .filter(|(k, v)| !v.is_empty() && *k != "sign" && *k != "sign_type")
        .collect();
    signed.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut h = Md5::new();
    for (i, (k, v)) in signed.iter().enumerate() {
        if i > 0 {
            h.update(b"&");
        }
        h.update(k.as_bytes());
        h.update(b"=");
        h.update(v.as_bytes());
    }
    h.update(key.as_bytes());
    hex::encode(h.finalize())
}

/// Whether `params` carry a valid `sign` for `key` (constant-time compare).
/// A missing `sign`, or a `sign_type` other than MD5, is not valid.
pub(crate) fn verify<'a>(params: &[(&'a str, &'a str)], key: &str) -> bool {
    let mut given = None;
    for (k, v) in params {
        match *k {
            "sign" => given = Some(*v),
            "sign_type" if !v.is_empty() && !v.eq_ignore_ascii_case("MD5") => return false,
            _ => {}
        }
    }
    let Some(given) = given else {
        return false;
    };
    let expected = sign(params.iter().copied(), key);
    bool::from(expected.as_bytes().ct_eq(given.to_ascii_lowercase().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_sorted_non_empty_params_with_the_key_appended() {
        let params = [
            ("type", "alipay"),
            ("pid", "1001"),
            ("money", "1.00"),
            ("param", ""),
            ("sign_type", "MD5"),
            ("sign", "ignored"),
        ];
        // md5("money=1.00&pid=1001&type=alipaysecret")
        let expected = hex::encode(Md5::digest(b"money=1.00&pid=1001&type=alipaysecret"));
        assert_eq!(sign(params, "secret"), expected);
    }

    #[test]
    fn verifies_only_the_right_key_and_strings() {
        let mut params = vec![("pid", "1001"), ("money", "1"), ("out_trade_no", "o-1")];
        let s = sign(params.iter().copied(), "k");
        params.push(("sign", &s));
        params.push(("sign_type", "MD5"));
        assert!(verify(&params, "k"));
        assert!(!verify(&params, "other"));
        let mut tampered = params.clone();
        tampered[1] = ("money", "1.00"); // same amount, other string: not what was signed
        assert!(!verify(&tampered, "k"));
        let unsigned: Vec<_> = params.iter().copied().filter(|(k, _)| *k != "sign").collect();
        assert!(!verify(&unsigned, "k"));
        let mut sha = params.clone();
        sha.retain(|(k, _)| *k != "sign_type");
        sha.push(("sign_type", "RSA"));
        assert!(!verify(&sha, "k"));
    }

    #[test]
    fn upper_case_signatures_are_accepted() {
        let params = [("pid", "1")];
        let s = sign(params, "k").to_uppercase();
        assert!(verify(&[("pid", "1"), ("sign", &s)], "k"));
    }
}
