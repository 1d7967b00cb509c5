//! epay parameters (`epay::form::Params::parse`, a form body or a query
//! string from a shop or a gateway), the MD5 signature (`epay::sign`) and
//! a merchant's order (`epay::order::PayOrder::from_params`) on arbitrary
//! bytes.
//!
//! Oracles: parameters re-encoded parse back to the same parameters; what
//! payroute signs verifies with its key (also after encoding and parsing
//! again) and not with another; a valid signature is the canonical one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use payroute::fuzz_api::{epay_sign, EpayParams};

const KEY: &str = "fuzz-merchant-key";

fuzz_target!(|raw: &[u8]| {
    let Ok(params) = EpayParams::parse(raw) else {
        return;
    };
    let pairs = params.pairs();
    for (i, (k, _)) in pairs.iter().enumerate() {
        assert!(!pairs[..i].iter().any(|(seen, _)| seen == k), "{k:?} given twice");
    }
    if params.verify(KEY) {
        let borrowed: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let sign = params.get("sign").expect("a verified form has a sign");
        assert_eq!(sign.to_ascii_lowercase(), epay_sign(&borrowed, KEY));
    }
    for browser in [false, true] {
        if let Ok((fen, out_trade_no)) = params.order(browser) {
            assert!(fen > 0);
            assert!((1..=64).contains(&out_trade_no.len()));
        }
    }

    let encoded = params.encode();
    let back = EpayParams::parse(encoded.as_bytes()).expect("payroute's own encoding parses");
    assert_eq!(back, params, "{encoded}");

    let signed = params.signed(KEY);
    assert!(signed.verify(KEY));
    assert!(!signed.verify("another-key"));
    let again = EpayParams::parse(signed.encode().as_bytes()).expect("a signed form parses");
    assert!(again.verify(KEY), "{}", signed.encode());
});
