//! Reading a JSON channel's notification: verify, then extract.
//!
//! The order matters. The signature is checked over the raw bytes before
//! anything is believed; a notification that fails it changes nothing. Its
//! order id is still read (as a hint only) so the caller can ask the channel
//! itself, by `query`, what happened to that order: a forged notification
//! then costs the forger one query, and a real one with a broken signature
//! (a rotated secret) still gets its payment settled.
//!
//! What this module returns is a plain reading; matching it to a payment,
//! checking the amount, deduplicating and committing belong to the caller,
//! which has the journal.

use http::HeaderMap;

use super::signature;
use crate::config::{ChannelNotify, OutcomeRule};
use crate::upstream::stated::{self, Stated};

/// A verified notification, as the channel stated it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reading {
    /// The merchant's order id as forwarded to the channel.
    pub order_id: String,
    /// In minor units, when the channel states one (`amount_pointer`).
    pub amount: Option<u64>,
    pub stated: Stated,
    /// The same event twice has the same key: the order and what it says.
    pub dedupe_key: String,
}

/// Why a notification was not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Unread {
    /// Missing or wrong signature; `order_hint` is the unverified order id, if any.
    #[error("signature missing or wrong")]
    BadSignature { order_hint: Option<String> },
    #[error("{0}")]
    Malformed(String),
}

/// Verifies `body` with the channel's notify settings and reads it with its
/// outcome rule (a channel without one states nothing: `Unstated`).
pub(crate) fn read(
    notify: &ChannelNotify,
    outcome: Option<&OutcomeRule>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Reading, Unread> {
    let signed = headers
        .get(&notify.signature_header)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|sig| signature::verify_hex(notify.secret.expose().as_bytes(), body, sig));
    let json = serde_json::from_slice::<serde_json::Value>(body).ok();
    let order_id = json
        .as_ref()
        .and_then(|j| j.pointer(&notify.order_id_pointer))
        .and_then(stated::scalar_text)
        .filter(|id| !id.is_empty() && id.len() <= 255);
    if !signed {
        return Err(Unread::BadSignature { order_hint: order_id });
    }
    let json = json.ok_or_else(|| Unread::Malformed("body is not JSON".into()))?;
    let order_id = order_id.ok_or_else(|| Unread::Malformed(format!("no order id at {}", notify.order_id_pointer)))?;
    let amount = match &notify.amount_pointer {
        None => None,
        Some(p) => Some(
            json.pointer(p)
                .and_then(minor_units)
                .ok_or_else(|| Unread::Malformed(format!("no whole non-negative amount at {p}")))?,
        ),
    };
    let stated = outcome.map_or(Stated::Unstated, |rule| stated::judge_value(rule, &json));
    let dedupe_key = format!("{order_id}\u{1f}{stated:?}");
    Ok(Reading {
        order_id,
        amount,
        stated,
        dedupe_key,
    })
}

/// An amount in minor units: a JSON integer, or a string of digits.
fn minor_units(v: &serde_json::Value) -> Option<u64> {
    match v {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn channel() -> (ChannelNotify, OutcomeRule) {
        let text = "[[channel]]\nid = \"a\"\nurl = \"http://127.0.0.1:1\"\n\
                    outcome = { pointer = \"/status\", paid = [\"paid\"], declined = [\"failed\"] }\n\
                    notify = { signature_header = \"x-signature\", secret = \"whsec\", amount_pointer = \"/amount\" }\n";
        let c = Config::parse(text, "t.toml".as_ref()).unwrap();
        let ch = &c.channels[0];
        (
            (**ch.notify.as_ref().unwrap()).clone(),
            (**ch.outcome.as_ref().unwrap()).clone(),
        )
    }

    fn signed(body: &str, secret: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            "x-signature",
            signature::sign_hex(secret.as_bytes(), body.as_bytes()).parse().unwrap(),
        );
        h
    }

    #[test]
    fn a_signed_notification_is_read() {
        let (n, o) = channel();
        let body = r#"{"order_id":"o-1","amount":1250,"status":"paid"}"#;
        let r = read(&n, Some(&o), &signed(body, "whsec"), body.as_bytes()).unwrap();
        assert_eq!(r.order_id, "o-1");
        assert_eq!(r.amount, Some(1250));
        assert_eq!(r.stated, Stated::Paid);
        let again = read(&n, Some(&o), &signed(body, "whsec"), body.as_bytes()).unwrap();
        assert_eq!(r.dedupe_key, again.dedupe_key);
        let declined = r#"{"order_id":"o-1","amount":"1250","status":"failed"}"#;
        let d = read(&n, Some(&o), &signed(declined, "whsec"), declined.as_bytes()).unwrap();
        assert_eq!((d.stated, d.amount), (Stated::Declined, Some(1250)));
        assert_ne!(d.dedupe_key, r.dedupe_key);
    }

    #[test]
    fn forged_unsigned_and_tampered_bodies_are_not_read_but_hint_their_order() {
        let (n, o) = channel();
        let body = r#"{"order_id":"o-1","amount":1250,"status":"paid"}"#;
        for headers in [HeaderMap::new(), signed(body, "wrong"), signed("{}", "whsec")] {
            assert_eq!(
                read(&n, Some(&o), &headers, body.as_bytes()),
                Err(Unread::BadSignature {
                    order_hint: Some("o-1".into())
                })
            );
        }
        assert_eq!(
            read(&n, Some(&o), &HeaderMap::new(), b"not json"),
            Err(Unread::BadSignature { order_hint: None })
        );
    }

    #[test]
    fn malformed_signed_bodies_are_refused() {
        let (n, o) = channel();
        for body in [
            "not json",
            r#"{"amount":1,"status":"paid"}"#,
            r#"{"order_id":"o-1","status":"paid"}"#,
            r#"{"order_id":"o-1","amount":-5,"status":"paid"}"#,
            r#"{"order_id":"o-1","amount":12.5,"status":"paid"}"#,
        ] {
            assert!(
                matches!(
                    read(&n, Some(&o), &signed(body, "whsec"), body.as_bytes()),
                    Err(Unread::Malformed(_))
                ),
                "{body}"
            );
        }
    }
}
