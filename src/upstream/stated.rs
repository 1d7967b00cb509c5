//! Outcomes an acquirer states in its body (`[channel.outcome]`).
//!
//! Many acquirers answer HTTP 200 for everything and say what happened in
//! the body (epay: `{"code": -1}`). For a channel that says where, a 2xx
//! answer is judged by the value at the configured JSON pointer; anything
//! the rule does not list is [`Stated::Unstated`], which the caller treats
//! as an ambiguous attempt — an answer payroute cannot read must never be
//! taken for a success (charge twice) or a decline (lose a paid order).
//! The same rule reads query answers and notifications.
//!
//! Values are compared as text: a string as written, a number or a boolean
//! in its JSON spelling, so `paid = [1]` matches `"code": 1` and `"1"`.

use crate::config::OutcomeRule;

/// What an acquirer's body says about a payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stated {
    Paid,
    /// Accepted, final outcome later (notification or query).
    Pending,
    Declined,
    /// Not JSON, no value at the pointer, or a value the rule does not list.
    Unstated,
}

/// Judges a body by `rule`.
pub(crate) fn judge(rule: &OutcomeRule, body: &[u8]) -> Stated {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Stated::Unstated;
    };
    judge_value(rule, &json)
}

/// Judges an already parsed document (a notification is parsed once).
pub(crate) fn judge_value(rule: &OutcomeRule, json: &serde_json::Value) -> Stated {
    let Some(text) = json.pointer(&rule.pointer).and_then(scalar_text) else {
        return Stated::Unstated;
    };
    let listed = |values: &[String]| values.contains(&text);
    if listed(&rule.paid) {
        Stated::Paid
    } else if listed(&rule.declined) {
        Stated::Declined
    } else if listed(&rule.pending) {
        Stated::Pending
    } else {
        Stated::Unstated
    }
}

/// The acquirer's own id for the payment, where the rule says it is.
pub(crate) fn channel_trade_no(rule: &OutcomeRule, body: &[u8]) -> Option<String> {
    let pointer = rule.trade_no_pointer.as_deref()?;
    let json = serde_json::from_slice::<serde_json::Value>(body).ok()?;
    json.pointer(pointer)
        .and_then(scalar_text)
        .filter(|s| !s.is_empty() && s.len() <= 128)
}

/// A JSON scalar as text: strings as they are, numbers and booleans as JSON spells them.
pub(crate) fn scalar_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> OutcomeRule {
        OutcomeRule {
            pointer: "/status".into(),
            paid: vec!["succeeded".into(), "1".into()],
            pending: vec!["processing".into()],
            declined: vec!["declined".into(), "-1".into()],
            trade_no_pointer: Some("/id".into()),
        }
    }

    #[test]
    fn listed_values_decide() {
        let r = rule();
        assert_eq!(judge(&r, br#"{"status":"succeeded"}"#), Stated::Paid);
        assert_eq!(judge(&r, br#"{"status":1}"#), Stated::Paid);
        assert_eq!(judge(&r, br#"{"status":"processing"}"#), Stated::Pending);
        assert_eq!(judge(&r, br#"{"status":"declined"}"#), Stated::Declined);
        assert_eq!(judge(&r, br#"{"status":-1}"#), Stated::Declined);
    }

    #[test]
    fn anything_unreadable_is_unstated_never_paid() {
        let r = rule();
        for body in [
            &br#"{"status":"weird"}"#[..],
            br#"{"other":"succeeded"}"#,
            br#"{"status":{"nested":"succeeded"}}"#,
            br#"{"status":null}"#,
            b"<html>ok</html>",
            b"",
        ] {
            assert_eq!(judge(&r, body), Stated::Unstated, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn channel_trade_numbers_are_read_where_the_rule_says() {
        let r = rule();
        assert_eq!(channel_trade_no(&r, br#"{"id":"ch_1"}"#).as_deref(), Some("ch_1"));
        assert_eq!(channel_trade_no(&r, br#"{"id":42}"#).as_deref(), Some("42"));
        assert_eq!(channel_trade_no(&r, br#"{"id":""}"#), None);
        assert_eq!(channel_trade_no(&r, b"nope"), None);
    }
}
