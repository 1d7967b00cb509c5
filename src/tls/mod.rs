//! TLS on both sides of the proxy, with rustls (no OpenSSL) and the `ring`
//! crypto provider.
//!
//! - [`server`]: the payment listener's TLS (`[server.tls]`): TLS 1.2 and
//!   1.3 only, ALPN `h2` and `http/1.1`, optional client certificates from
//!   merchants (`client_ca`), handshakes off the accept loop with a timeout.
//! - [`client`]: TLS to acquirers (https channel urls): the system roots
//!   (Mozilla's, via webpki-roots) plus the channel's `ca`, an optional
//!   client certificate (mutual TLS), SNI from the url host; a handshake that
//!   fails is a *connect* failure — nothing was sent — so failing over is
//!   safe.
//!
//! Why the material is parsed into rustls configs during config validation
//! (this module only sees bytes; `config::validate` reads the files): a
//! certificate that does not parse, a key that does not match its
//! certificate or an unusable CA is then a config error with line and column
//! like any other, `payroute check` finds it, and a reload with a bad
//! certificate is refused whole while the listener keeps serving the old one
//! (the TLS config lives in the config snapshot, and a refused reload never
//! replaces the snapshot).

pub(crate) mod client;
pub(crate) mod server;

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

/// TLS 1.3 and 1.2; never anything older.
pub(crate) static VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The ALPN protocols both sides offer, in order of preference.
pub(crate) fn alpn() -> Vec<Vec<u8>> {
    vec![b"h2".to_vec(), b"http/1.1".to_vec()]
}

/// The crypto provider every TLS config of the process uses.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Why PEM input was not usable.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PemError {
    #[error("no PEM certificate in it")]
    NoCertificate,
    #[error("no PEM private key in it (PKCS#8, PKCS#1 or SEC1)")]
    NoKey,
    #[error("not valid PEM: {0}")]
    Malformed(rustls::pki_types::pem::Error),
}

/// Every certificate in a PEM bundle, in order (a chain: leaf first).
pub(crate) fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(PemError::Malformed)?;
    if certs.is_empty() {
        return Err(PemError::NoCertificate);
    }
    Ok(certs)
}

/// The first private key in a PEM file.
pub(crate) fn private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, PemError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => PemError::NoKey,
        e => PemError::Malformed(e),
    })
}

/// A root store from PEM CA certificates.
fn roots(store: &mut rustls::RootCertStore, pem: &[u8]) -> Result<(), CaError> {
    for cert in certificates(pem).map_err(CaError::Pem)? {
        store.add(cert).map_err(CaError::NotAnAnchor)?;
    }
    Ok(())
}

/// Why a CA bundle was not usable.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CaError {
    #[error("{0}")]
    Pem(PemError),
    #[error("a certificate in it cannot be a trust anchor: {0}")]
    NotAnAnchor(rustls::Error),
}

/// SHA-256 of a DER certificate as lower-case hex: what operators compare
/// with `openssl x509 -noout -fingerprint -sha256` to see which certificate
/// is in force.
pub(crate) fn fingerprint(cert: &CertificateDer<'_>) -> String {
    hex::encode(Sha256::digest(cert.as_ref()))
}

#[cfg(test)]
pub(crate) mod testing {
    //! Certificates for unit tests, made on the spot.

    /// A self-signed certificate for `localhost` and 127.0.0.1: (cert PEM, key PEM).
    pub fn self_signed() -> (String, String) {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).expect("rcgen");
        (cert.pem(), signing_key.serialize_pem())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_errors_are_precise() {
        let (cert, key) = testing::self_signed();
        assert_eq!(certificates(cert.as_bytes()).unwrap().len(), 1);
        assert!(private_key(key.as_bytes()).is_ok());
        assert!(matches!(certificates(key.as_bytes()), Err(PemError::NoCertificate)));
        assert!(matches!(private_key(cert.as_bytes()), Err(PemError::NoKey)));
        assert!(matches!(certificates(b"hello"), Err(PemError::NoCertificate)));
        let truncated = &cert.as_bytes()[..cert.len() / 2];
        assert!(matches!(certificates(truncated), Err(PemError::Malformed(_))));
        let mut store = rustls::RootCertStore::empty();
        assert!(roots(&mut store, cert.as_bytes()).is_ok());
        assert_eq!(store.len(), 1);
        assert_eq!(fingerprint(&certificates(cert.as_bytes()).unwrap()[0]).len(), 64);
    }
}
