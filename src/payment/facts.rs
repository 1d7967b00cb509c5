//! Payment facts from the JSON body.
//!
//! The body is parsed once (it must be JSON: an acquirer must never see a
//! malformed payment) and read with RFC 6901 pointers from `[request]`. The
//! body itself is forwarded byte for byte: fields the proxy does not know pass
//! through untouched.

use serde_json::Value;

use crate::config::RequestConfig;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Facts {
    /// Minor units, > 0.
    pub amount: u64,
    /// Upper-cased ISO 4217 code.
    pub currency: String,
    pub order_id: String,
}

/// Why a body is not a valid payment; the message is safe to show the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct InvalidBody(pub String);

pub(crate) fn extract(body: &[u8], cfg: &RequestConfig) -> Result<Facts, InvalidBody> {
    let json: Value = serde_json::from_slice(body).map_err(|e| InvalidBody(format!("body is not valid JSON: {e}")))?;
    let field = |pointer: &str| {
        json.pointer(pointer)
            .filter(|v| !v.is_null())
            .ok_or_else(|| InvalidBody(format!("missing field {pointer}")))
    };
    let amount = match field(&cfg.amount_pointer)? {
        Value::Number(n) => match n.as_i64() {
            Some(a) if a > 0 => a as u64,
            Some(_) => return Err(InvalidBody(format!("{} must be greater than 0", cfg.amount_pointer))),
            None => {
                return Err(InvalidBody(format!(
                    "{} must be an integer in minor units",
                    cfg.amount_pointer
                )))
            }
        },
        _ => {
            return Err(InvalidBody(format!(
                "{} must be an integer in minor units",
                cfg.amount_pointer
            )))
        }
    };
    let currency = match field(&cfg.currency_pointer)? {
        Value::String(s) if s.len() == 3 && s.bytes().all(|b| b.is_ascii_alphabetic()) => s.to_ascii_uppercase(),
        _ => {
            return Err(InvalidBody(format!(
                "{} must be a three-letter currency code",
                cfg.currency_pointer
            )))
        }
    };
    let order_id = match field(&cfg.order_id_pointer)? {
        Value::String(s) if valid_order_id(s) => s.clone(),
        Value::Number(n) if n.is_u64() => n.to_string(),
        _ => {
            return Err(InvalidBody(format!(
                "{} must be a string of 1-128 visible characters",
                cfg.order_id_pointer
            )))
        }
    };
    Ok(Facts {
        amount,
        currency,
        order_id,
    })
}

/// Order ids end up in upstream paths (`{order_id}`) and logs: visible ASCII
/// without '/' only, so they cannot smuggle a path or a log line.
fn valid_order_id(s: &str) -> bool {
    (1..=128).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn cfg() -> RequestConfig {
        Config::parse(
            "[[channel]]\nid = \"a\"\nurl = \"http://127.0.0.1:1\"\n",
            "t.toml".as_ref(),
        )
        .unwrap()
        .request
    }

    #[test]
    fn reads_the_three_facts() {
        let f = extract(
            br#"{"amount": 1250, "currency": "cny", "order_id": "o-1", "extra": [1]}"#,
            &cfg(),
        )
        .unwrap();
        assert_eq!(
            f,
            Facts {
                amount: 1250,
                currency: "CNY".into(),
                order_id: "o-1".into()
            }
        );
        let f = extract(br#"{"amount": 1, "currency": "USD", "order_id": 42}"#, &cfg()).unwrap();
        assert_eq!(f.order_id, "42");
    }

    #[test]
    fn nested_pointers() {
        let mut c = cfg();
        c.amount_pointer = "/payment/amount/value".into();
        let f = extract(
            br#"{"payment": {"amount": {"value": 7}}, "currency": "EUR", "order_id": "x"}"#,
            &c,
        )
        .unwrap();
        assert_eq!(f.amount, 7);
    }

    #[test]
    fn refuses_what_is_not_a_payment() {
        let c = cfg();
        for (body, needle) in [
            (&b"not json"[..], "not valid JSON"),
            (br#"[1, 2]"#, "missing field /amount"),
            (br#"{"currency": "CNY", "order_id": "o"}"#, "missing field /amount"),
            (br#"{"amount": "10", "currency": "CNY", "order_id": "o"}"#, "integer"),
            (br#"{"amount": 10.5, "currency": "CNY", "order_id": "o"}"#, "integer"),
            (
                br#"{"amount": 0, "currency": "CNY", "order_id": "o"}"#,
                "greater than 0",
            ),
            (
                br#"{"amount": -5, "currency": "CNY", "order_id": "o"}"#,
                "greater than 0",
            ),
            (br#"{"amount": 10, "currency": "CN", "order_id": "o"}"#, "currency"),
            (br#"{"amount": 10, "currency": "CNY", "order_id": "a/b"}"#, "order_id"),
            (br#"{"amount": 10, "currency": "CNY", "order_id": ""}"#, "order_id"),
            (br#"{"amount": 10, "currency": "CNY"}"#, "missing field /order_id"),
        ] {
            let err = extract(body, &c).unwrap_err();
            assert!(err.0.contains(needle), "{err} should mention {needle}");
        }
    }
}
