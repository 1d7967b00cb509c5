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

pub(crate) fn authenticate(expected_sha256: Option<&[u8; 32]>, headers: &HeaderMap) -> Result<(), AuthError> {
    let Some(expected) = expected_sha256 else {
        return Ok(());
    };
    let key = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or(AuthError::Missing)?;
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
