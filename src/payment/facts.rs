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
    /// The pay type (`wxpay`, `alipay`, …) at `pay_type_pointer`, for
    /// routing rules; `None` when not configured or not stated.
    pub pay_type: Option<String>,
}

/// Why a body is not a valid payment; the message is safe to show the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct InvalidBody(pub String);

pub(crate) fn extract(body: &[u8], cfg: &RequestConfig) -> Result<Facts, InvalidBody> {
    let pointers = [
        cfg.amount_pointer.as_str(),
        cfg.currency_pointer.as_str(),
        cfg.order_id_pointer.as_str(),
        // A pointer without a leading '/' matches nothing: not read.
        cfg.pay_type_pointer.as_deref().unwrap_or("-"),
    ];
    let mut found = pick::pick(body, pointers).map_err(|e| InvalidBody(format!("body is not valid JSON: {e}")))?;
    let mut field = |i: usize| {
        found[i]
            .take()
            .filter(|v| !v.is_null())
            .ok_or_else(|| InvalidBody(format!("missing field {}", pointers[i])))
    };
    let amount = match field(0)? {
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
    let currency = match field(1)? {
        Value::String(mut s) if s.len() == 3 && s.bytes().all(|b| b.is_ascii_alphabetic()) => {
            s.make_ascii_uppercase();
            s
        }
        _ => {
            return Err(InvalidBody(format!(
                "{} must be a three-letter currency code",
                cfg.currency_pointer
            )))
        }
    };
    let order_id = match field(2)? {
        Value::String(s) if valid_order_id(&s) => s,
        Value::Number(n) if n.is_u64() => n.to_string(),
        _ => {
            return Err(InvalidBody(format!(
                "{} must be a string of 1-128 visible characters",
                cfg.order_id_pointer
            )))
        }
    };
    let pay_type = match found[3].take() {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if (1..=32).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic()) => Some(s),
        Some(_) => {
            return Err(InvalidBody(format!(
                "{} must be a string of 1-32 visible characters",
                pointers[3]
            )))
        }
    };
    Ok(Facts {
        amount,
        currency,
        order_id,
        pay_type,
    })
}

/// The amount a follow-up states at `pointer`, if any (a refund's).
/// Follow-ups are rare, so the body is parsed whole; members given twice
/// are refused here too.
pub(crate) fn stated_amount(body: &[u8], pointer: &str) -> Result<Option<u64>, InvalidBody> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let [found, _, _] =
        pick::pick(body, [pointer, "", ""]).map_err(|e| InvalidBody(format!("body is not valid JSON: {e}")))?;
    match found {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(a) if a > 0 => Ok(Some(a)),
            _ => Err(InvalidBody(format!(
                "{pointer} must be a positive integer in minor units"
            ))),
        },
        Some(_) => Err(InvalidBody(format!(
            "{pointer} must be a positive integer in minor units"
        ))),
    }
}

/// Order ids end up in upstream paths (`{order_id}`, and follow-up paths as
/// the merchant writes them) and logs: visible ASCII without '/' only, so
/// they cannot smuggle a path or a log line, and never a dot segment, which
/// an acquirer's router would resolve to the parent path
/// (`/v1/payments/../reverse` is `/v1/reverse`).
fn valid_order_id(s: &str) -> bool {
    (1..=128).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic() && b != b'/') && !dot_segment(s)
}

/// Is `segment` `.` or `..`, written plainly or percent-encoded (`%2e`:
/// RFC 3986 makes the two equivalent, and routers that decode first
/// resolve it just the same)?
pub(crate) fn dot_segment(segment: &str) -> bool {
    let mut dots = 0;
    let mut rest = segment.as_bytes();
    while !rest.is_empty() {
        match rest {
            [b'.', tail @ ..] => rest = tail,
            [b'%', b'2', b'e' | b'E', tail @ ..] => rest = tail,
            _ => return false,
        }
        dots += 1;
    }
    matches!(dots, 1 | 2)
}

/// The values at a few JSON pointers, read in one pass without building the
/// document.
///
/// Profiling (callgrind, BENCHMARKS.md) showed `from_slice::<Value>` plus
/// `Value::pointer` at ~11% of the proxy's instructions per payment: a map
/// and a `String` per field, and pointer tokens re-allocated on every call.
/// Here the same `serde_json` parser walks the body once — so exactly the
/// same documents are valid and the errors read the same (every number and
/// string is still parsed as `Value` would parse it) — and only the values at
/// the pointers are materialised. The answer is what `Value::pointer` gives
/// on the whole document, including RFC 6901 escapes and array indices.
///
/// A member named twice in one object (compared after unescaping) is an
/// error, anywhere in the body: the body goes to the acquirer byte for byte,
/// and a parser there that keeps the first `amount` while payroute kept the
/// last would let a merchant pass limits with one amount and be charged
/// another. The values at the pointers themselves are scalars (anything else
/// is refused by [`extract`]), so checking the objects on the way is enough.
mod pick {
    use std::borrow::Cow;
    use std::fmt;

    use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
    use serde::Deserialize;
    use serde_json::Value;

    /// Tokens kept inline; deeper ones are split from the text on demand.
    const INLINE: usize = 6;

    /// A pointer as `Value::pointer` reads it, split once per body without
    /// allocating (only a `~` escape allocates).
    struct Pointer<'p> {
        text: &'p str,
        /// Number of tokens; `None`: never matches (no leading '/').
        len: Option<usize>,
        inline: [Cow<'p, str>; INLINE],
    }

    fn unescape(t: &str) -> Cow<'_, str> {
        match t.as_bytes().contains(&b'~') {
            true => Cow::Owned(t.replace("~1", "/").replace("~0", "~")),
            false => Cow::Borrowed(t),
        }
    }

    impl<'p> Pointer<'p> {
        fn new(text: &'p str) -> Pointer<'p> {
            let mut inline: [Cow<'p, str>; INLINE] = Default::default();
            let len = match text {
                "" => Some(0),
                t if t.starts_with('/') => {
                    // A byte loop: `split` costs more than the rest of the
                    // extraction for these few-byte pointers.
                    let (bytes, mut start, mut n) = (t.as_bytes(), 1, 0);
                    for i in 1..=bytes.len() {
                        if i == bytes.len() || bytes[i] == b'/' {
                            if let Some(slot) = inline.get_mut(n) {
                                *slot = unescape(&t[start..i]);
                            }
                            n += 1;
                            start = i + 1;
                        }
                    }
                    Some(n)
                }
                _ => None,
            };
            Pointer { text, len, inline }
        }

        fn token(&self, depth: usize) -> Option<Cow<'_, str>> {
            if depth >= self.len? {
                return None;
            }
            match self.inline.get(depth) {
                Some(t) => Some(Cow::Borrowed(t.as_ref())),
                None => self.text.split('/').nth(depth + 1).map(unescape),
            }
        }
    }

    /// serde_json's array index rule for pointers.
    fn index(token: &str) -> Option<usize> {
        if token.starts_with('+') || (token.starts_with('0') && token.len() != 1) {
            return None;
        }
        token.parse().ok()
    }

    /// At most 8 pointers (a bit mask tracks them).
    pub(super) fn pick<const N: usize>(
        body: &[u8],
        pointers: [&str; N],
    ) -> Result<[Option<Value>; N], serde_json::Error> {
        const { assert!(N <= 8) };
        let paths = pointers.map(Pointer::new);
        let mut found: [Option<Value>; N] = std::array::from_fn(|_| None);
        let active = (0..N).filter(|&i| paths[i].len.is_some()).fold(0u8, |m, i| m | 1 << i);
        let mut de = serde_json::Deserializer::from_slice(body);
        Walk {
            paths: &paths,
            active,
            depth: 0,
            found: &mut found,
        }
        .deserialize(&mut de)?;
        de.end()?;
        Ok(found)
    }

    /// One node of the document, with the pointers (bit mask) that lead here.
    struct Walk<'a, 'p> {
        paths: &'a [Pointer<'p>],
        active: u8,
        depth: usize,
        found: &'a mut [Option<Value>],
    }

    fn each(mask: u8) -> impl Iterator<Item = usize> {
        (0..8).filter(move |i| mask & (1 << i) != 0)
    }

    impl Walk<'_, '_> {
        /// The child's mask: active pointers whose next token selects it.
        fn child(&self, selects: impl Fn(&str) -> bool) -> u8 {
            each(self.active)
                .filter(|&i| self.paths[i].token(self.depth).is_some_and(|t| selects(&t)))
                .fold(0, |m, i| m | 1 << i)
        }
    }

    impl<'de> DeserializeSeed<'de> for Walk<'_, '_> {
        type Value = ();

        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            if self.active == 0 {
                return d.deserialize_any(Skip).map(drop);
            }
            let paths = self.paths;
            if !each(self.active).any(|i| paths[i].len == Some(self.depth)) {
                return d.deserialize_any(self);
            }
            // A pointer ends at this node: keep it whole; any longer pointer
            // through it is answered from it (rare: "/a" and "/a/b" together).
            // Built by `Strict`, not `Value::deserialize`, which keeps the
            // last of two equal members silently: a pointer "" (the whole
            // body) must not let a duplicate through.
            let value = Strict.deserialize(d)?;
            if self.active.count_ones() == 1 {
                self.found[self.active.trailing_zeros() as usize] = Some(value);
                return Ok(());
            }
            for i in each(self.active) {
                let rest = self.depth..paths[i].len.unwrap_or(0);
                let at = rest.map(|d| paths[i].token(d)).try_fold(&value, |v, t| match (v, t?) {
                    (Value::Object(m), t) => m.get(t.as_ref()),
                    (Value::Array(a), t) => index(&t).and_then(|x| a.get(x)),
                    _ => None,
                });
                self.found[i] = at.cloned();
            }
            Ok(())
        }
    }

    impl<'de> Visitor<'de> for Walk<'_, '_> {
        type Value = ();

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("any JSON value")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut members = Members::default();
            while let Some(key) = map.next_key::<Key<'de>>()? {
                let mask = self.child(|t| t == key.as_str());
                members.insert::<A::Error>(key)?;
                map.next_value_seed(Walk {
                    paths: self.paths,
                    active: mask,
                    depth: self.depth + 1,
                    found: &mut *self.found,
                })?;
            }
            Ok(())
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let mut n = 0usize;
            loop {
                let mask = self.child(|t| index(t) == Some(n));
                let walk = Walk {
                    paths: self.paths,
                    active: mask,
                    depth: self.depth + 1,
                    found: &mut *self.found,
                };
                if seq.next_element_seed(walk)?.is_none() {
                    return Ok(());
                }
                n += 1;
            }
        }

        // Scalars: a pointer that needs to go deeper finds nothing here.
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E: de::Error>(self) -> Result<(), E> {
            Ok(())
        }
    }

    /// A map key, borrowed from the body when it has no escapes.
    enum Key<'de> {
        Borrowed(&'de str),
        Owned(String),
    }

    impl Key<'_> {
        fn as_str(&self) -> &str {
            match self {
                Key::Borrowed(s) => s,
                Key::Owned(s) => s,
            }
        }
    }

    impl<'de> Deserialize<'de> for Key<'de> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Key<'de>;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a string key")
                }
                fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Key<'de>, E> {
                    Ok(Key::Borrowed(s))
                }
                fn visit_str<E: de::Error>(self, s: &str) -> Result<Key<'de>, E> {
                    Ok(Key::Owned(s.to_owned()))
                }
                fn visit_string<E: de::Error>(self, s: String) -> Result<Key<'de>, E> {
                    Ok(Key::Owned(s))
                }
            }
            d.deserialize_str(V)
        }
    }

    /// The member names of one object so far. Payment objects are small, so
    /// a linear scan beats hashing; the vector is the only allocation.
    #[derive(Default)]
    struct Members<'de>(Vec<Key<'de>>);

    impl<'de> Members<'de> {
        fn insert<E: de::Error>(&mut self, key: Key<'de>) -> Result<(), E> {
            if self.0.iter().any(|k| k.as_str() == key.as_str()) {
                return Err(E::custom(format_args!("member {:?} is given twice", key.as_str())));
            }
            self.0.push(key);
            Ok(())
        }
    }

    /// A value built as `Value::deserialize` builds it, except that an
    /// object naming a member twice is an error, as everywhere in [`pick`].
    struct Strict;

    impl<'de> DeserializeSeed<'de> for Strict {
        type Value = Value;

        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            d.deserialize_any(Strict)
        }
    }

    impl<'de> Visitor<'de> for Strict {
        type Value = Value;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
            let mut out = serde_json::Map::new();
            while let Some(key) = map.next_key::<String>()? {
                if out.contains_key(&key) {
                    return Err(de::Error::custom(format_args!("member {key:?} is given twice")));
                }
                let value = map.next_value_seed(Strict)?;
                out.insert(key, value);
            }
            Ok(Value::Object(out))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
            let mut out = Vec::new();
            while let Some(v) = seq.next_element_seed(Strict)? {
                out.push(v);
            }
            Ok(Value::Array(out))
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
            Ok(Value::Bool(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
            Ok(Value::Number(v.into()))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
            Ok(Value::Number(v.into()))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
            Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
            Ok(Value::String(v.to_owned()))
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
            Ok(Value::String(v))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
    }

    /// Any value, parsed as `Value` would parse it (numbers range-checked,
    /// strings decoded and UTF-8 checked), then dropped.
    struct Skip;

    impl<'de> Deserialize<'de> for Skip {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(Skip)
        }
    }

    impl<'de> Visitor<'de> for Skip {
        type Value = Skip;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
            let mut members = Members::default();
            while let Some(key) = map.next_key::<Key<'de>>()? {
                members.insert::<A::Error>(key)?;
                map.next_value::<Skip>()?;
            }
            Ok(Skip)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
            while seq.next_element::<Skip>()?.is_some() {}
            Ok(Skip)
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Skip, E> {
            Ok(Skip)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Skip, E> {
            Ok(Skip)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Skip, E> {
            Ok(Skip)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Skip, E> {
            Ok(Skip)
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Skip, E> {
            Ok(Skip)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Skip, E> {
            Ok(Skip)
        }
    }
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
                order_id: "o-1".into(),
                pay_type: None,
            }
        );
        let f = extract(br#"{"amount": 1, "currency": "USD", "order_id": 42}"#, &cfg()).unwrap();
        assert_eq!(f.order_id, "42");
    }

    #[test]
    fn the_pay_type_is_read_where_configured() {
        let mut c = cfg();
        let body = br#"{"amount": 1, "currency": "CNY", "order_id": "o", "type": "wxpay"}"#;
        assert_eq!(extract(body, &c).unwrap().pay_type, None, "not configured: not read");
        c.pay_type_pointer = Some("/type".into());
        assert_eq!(extract(body, &c).unwrap().pay_type.as_deref(), Some("wxpay"));
        let none = br#"{"amount": 1, "currency": "CNY", "order_id": "o"}"#;
        assert_eq!(extract(none, &c).unwrap().pay_type, None, "optional in a payment");
        for bad in [
            &br#"{"amount": 1, "currency": "CNY", "order_id": "o", "type": 5}"#[..],
            br#"{"amount": 1, "currency": "CNY", "order_id": "o", "type": "wx pay"}"#,
        ] {
            assert!(extract(bad, &c).unwrap_err().0.contains("/type"));
        }
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

    /// The one-pass reader answers exactly what a parsed `Value` and
    /// `Value::pointer` answer, errors included.
    #[test]
    fn pick_matches_value_pointer() {
        let docs: &[&[u8]] = &[
            br#"{"amount": 1250, "currency": "cny", "order_id": "o-1", "extra": [1, {"a": null}]}"#,
            br#"{"a": {"b": [10, {"c": "x"}]}, "a~b": 1, "a/b": 2, "": 3, "amount": -1}"#,
            br#"[5, [6, 7], {"0": 8}]"#,
            br#"{"amount": 18446744073709551615, "big": 1e308, "s": "\u00e9\ud83d\ude00", "esc\"k": 1}"#,
            br#"{"amount": 10.5, "currency": "CNY", "order_id": 42}"#,
            br#"{"amount": 1} trailing"#,
            br#"{"amount": 1,}"#,
            br#"{"s": "\ud800"}"#,
            b"{\"s\": \"\xff\"}",
            br#"  "just a string"  "#,
            br#"null"#,
            b"",
            br#"{"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": 9, "~": [1, 2]}}}}}}}}"#,
        ];
        let pointers: &[[&str; 3]] = &[
            ["/amount", "/currency", "/order_id"],
            ["/a/b/0", "/a/b/1/c", "/a~0b"],
            ["/a~1b", "/", "/a/b/01"],
            ["/0", "/1/1", "/2/0"],
            ["/a", "/a/b", "/a/b/1"],
            ["", "/p/q", "/p"],
            ["/esc\"k", "/s", "/+0"],
            ["no-slash", "/amount", "/amount"],
            ["/a/b/c/d/e/f/g/h", "/a/b/c/d/e/f/g/~0/1", "/a/b/c/d/e/f"],
        ];
        for doc in docs {
            let parsed = serde_json::from_slice::<Value>(doc);
            for ps in pointers {
                let picked = pick::pick(doc, *ps);
                match (&parsed, picked) {
                    (Ok(v), Ok(found)) => {
                        for (p, got) in ps.iter().zip(found) {
                            assert_eq!(got.as_ref(), v.pointer(p), "{p} in {}", String::from_utf8_lossy(doc));
                        }
                    }
                    (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
                    (a, b) => panic!("{}: {a:?} vs {b:?}", String::from_utf8_lossy(doc)),
                }
            }
        }
    }

    #[test]
    fn a_member_given_twice_is_refused_anywhere() {
        let c = cfg();
        for body in [
            &br#"{"amount": 1, "amount": 900, "currency": "CNY", "order_id": "o"}"#[..],
            br#"{"amount": 1, "currency": "CNY", "order_id": "o", "meta": {"k": 1, "k": 2}}"#,
            br#"{"amount": 1, "currency": "CNY", "order_id": "o", "list": [{"a": 1, "\u0061": 2}]}"#,
            br#"{"amount": 1, "am\u006funt": 2, "currency": "CNY", "order_id": "o"}"#,
        ] {
            let err = extract(body, &c).unwrap_err();
            assert!(
                err.0.contains("given twice"),
                "{err}: {}",
                String::from_utf8_lossy(body)
            );
        }
    }

    /// The probe's bodies (issue 18, finding 1): whichever member comes
    /// first, and whichever fact is doubled, the body is refused — and so is
    /// a follow-up's, whose pointer walk once parsed the whole body as a
    /// `Value` (which keeps the last of two members without a word).
    #[test]
    fn the_probes_doubled_facts_are_refused_in_payments_and_follow_ups() {
        let c = cfg();
        for body in [
            &br#"{"amount": 99999999, "currency": "CNY", "order_id": "dup-1", "amount": 100}"#[..],
            br#"{"\u0061mount": 99999999, "currency": "CNY", "order_id": "dup-1", "amount": 100}"#,
            br#"{"amount": 100, "currency": "CNY", "order_id": "dup-1", "currency": "USD"}"#,
            br#"{"amount": 100, "currency": "CNY", "order_id": "dup-1", "order_\u0069d": "dup-2"}"#,
        ] {
            let err = extract(body, &c).unwrap_err();
            assert!(
                err.0.contains("given twice"),
                "{err}: {}",
                String::from_utf8_lossy(body)
            );
            let err = stated_amount(body, "/amount").unwrap_err();
            assert!(
                err.0.contains("given twice"),
                "{err}: {}",
                String::from_utf8_lossy(body)
            );
        }
        for body in [
            &br#"{"amount": 99999999, "amount": 1}"#[..],
            br#"{"amount": 1, "\u0061mount": 99999999}"#,
            br#"{"amount": 1, "reason": {"k": 1, "k": 2}}"#,
        ] {
            let err = stated_amount(body, "/amount").unwrap_err();
            assert!(
                err.0.contains("given twice"),
                "{err}: {}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(
            stated_amount(br#"{"amount": 5, "reason": {"k": 1}}"#, "/amount"),
            Ok(Some(5))
        );
        assert_eq!(stated_amount(b"  ", "/amount"), Ok(None));
        // A pointer ending at an object reads it strictly too.
        let [whole, _, _] = pick::pick(br#"{"a": {"b": 1}}"#, ["", "/a", "/a/b"]).unwrap();
        assert_eq!(whole, Some(serde_json::json!({"a": {"b": 1}})));
        assert!(pick::pick(br#"{"a": {"b": 1, "b": 2}}"#, ["/a", "x", "x"]).is_err());
    }

    #[test]
    fn dot_segments_plain_or_encoded() {
        for dot in [".", "..", "%2e", "%2E%2e", ".%2E", "%2e."] {
            assert!(dot_segment(dot), "{dot}");
        }
        for fine in ["...", "a.", ".a", "..a", "%2e%2e%2e", "%2", "%2f", "o.1", "", "%252e"] {
            assert!(!dot_segment(fine), "{fine}");
        }
        // Ids with dots in them are ordinary ids.
        assert!(valid_order_id("v1.2") && valid_order_id("...") && valid_order_id("a..b"));
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
            (br#"{"amount": 10, "currency": "CNY", "order_id": "."}"#, "order_id"),
            (br#"{"amount": 10, "currency": "CNY", "order_id": ".."}"#, "order_id"),
            (
                br#"{"amount": 10, "currency": "CNY", "order_id": "%2e%2E"}"#,
                "order_id",
            ),
            (br#"{"amount": 10, "currency": "CNY", "order_id": ".%2e"}"#, "order_id"),
            (br#"{"amount": 10, "currency": "CNY"}"#, "missing field /order_id"),
        ] {
            let err = extract(body, &c).unwrap_err();
            assert!(err.0.contains(needle), "{err} should mention {needle}");
        }
    }
}
