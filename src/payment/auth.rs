//! Merchant authentication: `Authorization: Bearer KEY` against the
//! configured `api_key_sha256`.
//!
//! Only the hash is configured, so a leaked routes.toml leaks no key; the
//! comparison is constant-time (subtle) so response timing says nothing
//! about how much of a guess was right.

use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AuthError {
    #[error("missing Authorization: Bearer API key")]
    Missing,
    #[error("API key is not valid for this merchant")]
    Wrong,
}

/// The token of `Authorization: Bearer TOKEN`. The scheme is matched
/// without regard to case (RFC 9110 §11.1: `bearer`, `BEARER` are the same
/// scheme), one or more spaces follow it; two `Authorization` headers are
/// none (which one counts must not be guessed). Shared by merchant and
/// admin auth, so the two can never disagree on what a bearer token is.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let mut given = headers.get_all(http::header::AUTHORIZATION).iter();
    let value = given.next()?;
    if given.next().is_some() {
        return None;
    }
    let value = value.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

pub(crate) fn authenticate(expected_sha256: Option<&[u8; 32]>, headers: &HeaderMap) -> Result<(), AuthError> {
    let Some(expected) = expected_sha256 else {
        return Ok(());
    };
    let key = bearer(headers).ok_or(AuthError::Missing)?;
    let actual = Sha256::digest(key.as_bytes());
    if bool::from(actual.as_slice().ct_eq(expected)) {
        Ok(())
    } else {
        Err(AuthError::Wrong)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, auth.parse().unwrap());
        h
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_one_header_only() {
        for v in ["Bearer k", "bearer k", "BEARER k", "bEaReR   k ", "Bearer\tk"] {
            let want = (!v.contains('\t')).then_some("k");
            assert_eq!(bearer(&headers(v)), want, "{v:?}");
        }
        for v in ["Basic k", "Bearer", "Bearer ", "Bearerk", "Token k"] {
            assert_eq!(bearer(&headers(v)), None, "{v:?}");
        }
        let mut two = headers("Bearer k");
        two.append(http::header::AUTHORIZATION, "Bearer k".parse().unwrap());
        assert_eq!(bearer(&two), None);
    }

    #[test]
    fn bearer_key_matches_hash() {
        let hash: [u8; 32] = Sha256::digest(b"k-123").into();
        assert_eq!(authenticate(Some(&hash), &headers("Bearer k-123")), Ok(()));
        assert_eq!(
            authenticate(Some(&hash), &headers("Bearer k-124")),
            Err(AuthError::Wrong)
        );
        assert_eq!(
            authenticate(Some(&hash), &headers("Basic k-123")),
            Err(AuthError::Missing)
        );
        assert_eq!(authenticate(Some(&hash), &HeaderMap::new()), Err(AuthError::Missing));
        assert_eq!(authenticate(None, &HeaderMap::new()), Ok(()));
    }
}
