//! epay parameters: a form body or a query string, kept as received.
//!
//! Signatures are computed over the exact strings a party sent, so the
//! parameters are kept as decoded text in arrival order, never normalised.
//! A name given twice is refused: which of the two was signed is exactly the
//! ambiguity a forger would use.

/// Decoded `name=value` pairs, in arrival order, each name at most once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Params(Vec<(String, String)>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FormError {
    #[error("parameter {0:?} is given more than once")]
    Repeated(String),
    #[error("parameters are not valid UTF-8")]
    NotUnicode,
}

impl Params {
    /// Parses `application/x-www-form-urlencoded` text (a body or a query string).
    pub fn parse(raw: &[u8]) -> Result<Params, FormError> {
        let mut out: Vec<(String, String)> = Vec::new();
        for (k, v) in form_urlencoded::parse(raw) {
            // form_urlencoded decodes lossily; a replacement character means bytes were lost.
            if k.contains('\u{FFFD}') || v.contains('\u{FFFD}') {
                return Err(FormError::NotUnicode);
            }
            if out.iter().any(|(seen, _)| *seen == k) {
                return Err(FormError::Repeated(k.chars().take(32).collect()));
            }
            out.push((k.into_owned(), v.into_owned()));
        }
        Ok(Params(out))
    }

    pub fn from_pairs<I, K, V>(pairs: I) -> Params
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Params(pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
    }

    /// The value of `name`; an empty value counts as absent (epay signs none).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Adds or replaces `name`.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        match self.0.iter_mut().find(|(k, _)| k == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name.to_owned(), value)),
        }
    }

    /// Signs with `key` (MD5, epay's canonical string) and adds `sign` and `sign_type`.
    pub fn signed(mut self, key: &str) -> Params {
        self.0.retain(|(k, v)| k != "sign" && k != "sign_type" && !v.is_empty());
        let sign = super::sign::sign(self.pairs(), key);
        self.0.push(("sign".into(), sign));
        self.0.push(("sign_type".into(), "MD5".into()));
        self
    }

    /// Whether `sign` is valid for `key`.
    pub fn verify(&self, key: &str) -> bool {
        let pairs: Vec<(&str, &str)> = self.pairs().collect();
        super::sign::verify(&pairs, key)
    }

    /// URL-encoded, for a form body or a query string.
    pub fn encode(&self) -> String {
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(self.pairs())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_keeps_strings_as_received() {
        let p = Params::parse(b"pid=1001&name=%E5%95%86%E5%93%81+A&money=1&param=").unwrap();
        assert_eq!(p.get("name"), Some("商品 A"));
        assert_eq!(p.get("money"), Some("1"));
        assert_eq!(p.get("param"), None);
        assert_eq!(Params::parse(p.encode().as_bytes()).unwrap(), p);
    }

    #[test]
    fn repeated_names_and_bad_utf8_are_refused() {
        assert_eq!(
            Params::parse(b"money=1&money=100"),
            Err(FormError::Repeated("money".into()))
        );
        assert_eq!(Params::parse(b"name=%FF"), Err(FormError::NotUnicode));
    }

    #[test]
    fn signed_params_verify_and_tampering_breaks_them() {
        let p = Params::from_pairs([("pid", "1001"), ("money", "1.00"), ("param", "")]).signed("k");
        assert_eq!(p.get("sign_type"), Some("MD5"));
        assert!(p.verify("k"));
        assert!(!p.verify("x"));
        let mut t = p.clone();
        t.set("money", "100.00");
        assert!(!t.verify("k"));
        let reparsed = Params::parse(p.encode().as_bytes()).unwrap();
        assert!(reparsed.verify("k"));
    }
}
