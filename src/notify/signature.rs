//! Webhook signatures of JSON channels and JSON merchants, both HMAC-SHA256.
//!
//! In: a channel signs the raw body and sends the hex digest in its
//! `signature_header`; it is checked in constant time over the bytes as
//! received, before anything is parsed, so a forged body costs one HMAC.
//!
//! Out: payroute signs what it sends a merchant Stripe's way,
//! `t=UNIX,v1=HEX` with HEX = HMAC-SHA256(secret, "{t}.{body}"): the
//! timestamp inside the signed text lets the merchant refuse a replay of an
//! old event, and the `v1=` scheme name leaves room for a second algorithm
//! during a key or algorithm change.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length; new_from_slice cannot fail for it.
    match HmacSha256::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of every length"),
    }
}

/// Whether `signature_hex` (case-insensitive hex) is the HMAC-SHA256 of
/// `body` with `secret`. Constant-time in the digest comparison.
pub(crate) fn verify_hex(secret: &[u8], body: &[u8], signature_hex: &str) -> bool {
    let Ok(expected) = hex::decode(signature_hex.trim()) else {
        return false;
    };
    let mut m = mac(secret);
    m.update(body);
    m.verify_slice(&expected).is_ok()
}

/// The hex HMAC-SHA256 of `body`: what a channel puts in its signature header
/// (tests, and the fuzz target that signs what it feeds the reader).
#[cfg(any(test, feature = "fuzz-api"))]
pub(crate) fn sign_hex(secret: &[u8], body: &[u8]) -> String {
    let mut m = mac(secret);
    m.update(body);
    hex::encode(m.finalize().into_bytes())
}

/// The `X-Payroute-Signature` value for a merchant notification sent at `unix_secs`.
pub(crate) fn merchant_header(secret: &[u8], unix_secs: u64, body: &[u8]) -> String {
    let t = unix_secs.to_string();
    let mut m = mac(secret);
    m.update(t.as_bytes());
    m.update(b".");
    m.update(body);
    format!("t={t},v1={}", hex::encode(m.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_signatures_verify_only_for_the_same_body_and_secret() {
        let sig = sign_hex(b"whsec", b"{\"order_id\":\"o-1\"}");
        assert!(verify_hex(b"whsec", b"{\"order_id\":\"o-1\"}", &sig));
        assert!(verify_hex(b"whsec", b"{\"order_id\":\"o-1\"}", &sig.to_uppercase()));
        assert!(!verify_hex(b"whsec", b"{\"order_id\":\"o-2\"}", &sig));
        assert!(!verify_hex(b"other", b"{\"order_id\":\"o-1\"}", &sig));
        assert!(!verify_hex(b"whsec", b"{\"order_id\":\"o-1\"}", "zz"));
        assert!(!verify_hex(b"whsec", b"{\"order_id\":\"o-1\"}", ""));
    }

    #[test]
    fn merchant_header_is_stripe_style() {
        // RFC 4231 test case 2 shape: key "Jefe"; here over "{t}.{body}".
        let h = merchant_header(b"Jefe", 1_700_000_000, b"{}");
        let (t, v1) = h.split_once(',').unwrap();
        assert_eq!(t, "t=1700000000");
        let hex = v1.strip_prefix("v1=").unwrap();
        assert!(verify_hex(b"Jefe", b"1700000000.{}", hex));
    }

    #[test]
    fn rfc_4231_vector() {
        assert_eq!(
            sign_hex(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
