//! The JSON facts extractor (`payment::facts`) on arbitrary bytes: a new
//! payment's body with three `[request]` pointer sets, and a follow-up's
//! stated amount.
//!
//! Besides "never panics", an oracle: whatever `extract` accepts,
//! `serde_json::Value` parses too and reads the same facts at the same
//! pointers (`extract` walks the body once without building it, and
//! refuses a member given twice, so a body it accepts has one reading);
//! whatever `Value` refuses, `extract` refuses.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use payroute::fuzz_api::{stated_amount, Facts, PaymentFacts};
use serde_json::Value;

static FIXTURES: LazyLock<Vec<Facts>> = LazyLock::new(|| {
    vec![
        // routes.toml's.
        Facts::new("/amount", "/currency", "/order_id"),
        // Nested, an escaped token, an array index, and a pointer deeper
        // than the extractor keeps inline.
        Facts::new("/payment/amount/value", "/payment/a~1b~0c", "/items/0/m/n/o/p/q/r/id"),
        // Pointers that end inside one another: the whole body ("") is
        // read strictly and the others answered from it.
        Facts::new("/amount", "/currency", ""),
    ]
});

fn check(f: &Facts, body: &[u8], parsed: &Result<Value, serde_json::Error>) {
    let got = f.extract(body);
    match (&got, parsed) {
        (Ok(facts), Ok(v)) => agrees(f, facts, v, body),
        (Ok(facts), Err(e)) => panic!("extract accepted {facts:?} where Value refuses: {e}"),
        (Err(_), _) => {}
    }
}

fn agrees(f: &Facts, facts: &PaymentFacts, v: &Value, body: &[u8]) {
    let [amount, currency, order_id] = f.pointers();
    let body = String::from_utf8_lossy(body);
    assert!(facts.amount > 0, "{body}");
    assert_eq!(
        v.pointer(amount).and_then(Value::as_i64),
        Some(facts.amount as i64),
        "{body}"
    );
    let cur = v.pointer(currency).and_then(Value::as_str).map(str::to_ascii_uppercase);
    assert_eq!(cur.as_deref(), Some(facts.currency.as_str()), "{body}");
    let id = match v.pointer(order_id) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) if n.is_u64() => Some(n.to_string()),
        _ => None,
    };
    assert_eq!(id.as_deref(), Some(facts.order_id.as_str()), "{body}");
    assert!(
        (1..=128).contains(&facts.order_id.len()) && facts.order_id.bytes().all(|b| b.is_ascii_graphic() && b != b'/'),
        "{body}"
    );
}

fuzz_target!(|body: &[u8]| {
    let parsed = serde_json::from_slice::<Value>(body);
    for f in FIXTURES.iter() {
        check(f, body, &parsed);
    }
    for pointer in ["/amount", "/refund/amount"] {
        match stated_amount(body, pointer) {
            Ok(Some(a)) => {
                let v = parsed.as_ref().expect("stated_amount read a body Value refuses");
                assert_eq!(v.pointer(pointer).and_then(Value::as_u64), Some(a));
                assert!(a > 0);
            }
            Ok(None) => assert!(
                body.iter().all(u8::is_ascii_whitespace)
                    || parsed
                        .as_ref()
                        .is_ok_and(|v| v.pointer(pointer).is_none_or(Value::is_null)),
                "no amount read from {}",
                String::from_utf8_lossy(body)
            ),
            Err(_) => {}
        }
    }
});
