//! The payment listener's TLS: `[server.tls]`.
//!
//! An [`IngressTls`] is built once per config version from the PEM bytes the
//! validator read, so a certificate renewal is a reload: the new snapshot
//! carries the new certificate, each new connection takes the TLS config of
//! the snapshot current when it is accepted, and connections already open
//! keep the one they shook hands with. A bad certificate on reload fails
//! validation and never reaches a snapshot, so the old one keeps serving.
//!
//! The handshake runs in the connection's own task ([`handshake`]), never in
//! the accept loop, so a slow or silent client cannot hold up other
//! merchants' connections; [`HANDSHAKE_TIMEOUT`] bounds how long one may
//! take. Failed handshakes are logged at `debug`: on a public port most are
//! scanners, and a merchant whose certificate is refused sees the reason in
//! its own TLS alert.

use std::sync::Arc;
use std::time::Duration;

use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::{alpn, certificates, fingerprint, private_key, provider, roots, CaError, PemError, VERSIONS};

/// Longest a client may take to complete the TLS handshake.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The listener's TLS for one config version.
#[derive(Clone)]
pub(crate) struct IngressTls {
    config: Arc<rustls::ServerConfig>,
    /// SHA-256 of the leaf certificate (hex), for logs.
    pub fingerprint: String,
    /// Whether merchants must present a client certificate.
    pub client_auth: bool,
}

impl std::fmt::Debug for IngressTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngressTls")
            .field("fingerprint", &self.fingerprint)
            .field("client_auth", &self.client_auth)
            .finish()
    }
}

/// Why `[server.tls]` material was not usable; each names the key at fault.
#[derive(Debug, thiserror::Error)]
pub(crate) enum IngressTlsError {
    #[error("cert: {0}")]
    Cert(PemError),
    #[error("key: {0}")]
    Key(PemError),
    #[error("key does not fit cert: {0}")]
    KeyMismatch(rustls::Error),
    #[error("client_ca: {0}")]
    ClientCa(CaError),
    #[error("client_ca: {0}")]
    ClientVerifier(rustls::server::VerifierBuilderError),
    #[error("TLS 1.2/1.3 not available: {0}")]
    Versions(rustls::Error),
}

impl IngressTls {
    /// From the PEM contents of `cert` (a chain, leaf first), `key` and,
    /// optionally, `client_ca` (the CAs merchants' certificates must chain to).
    pub fn build(cert: &[u8], key: &[u8], client_ca: Option<&[u8]>) -> Result<IngressTls, IngressTlsError> {
        let chain = certificates(cert).map_err(IngressTlsError::Cert)?;
        let key = private_key(key).map_err(IngressTlsError::Key)?;
        let fingerprint = fingerprint(&chain[0]);
        let provider = provider();
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(VERSIONS)
            .map_err(IngressTlsError::Versions)?;
        let builder = match client_ca {
            Some(pem) => {
                let mut store = rustls::RootCertStore::empty();
                roots(&mut store, pem).map_err(IngressTlsError::ClientCa)?;
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider)
                    .build()
                    .map_err(IngressTlsError::ClientVerifier)?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(IngressTlsError::KeyMismatch)?;
        config.alpn_protocols = alpn();
        Ok(IngressTls {
            config: Arc::new(config),
            fingerprint,
            client_auth: client_ca.is_some(),
        })
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.clone())
    }
}

/// Why a merchant's connection did not become a TLS session.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    #[error("TLS handshake failed: {0}")]
    Failed(std::io::Error),
    #[error("TLS handshake not finished within {0:?}")]
    TimedOut(Duration),
}

/// The server side of one handshake, bounded by [`HANDSHAKE_TIMEOUT`].
pub(crate) async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
) -> Result<TlsStream<TcpStream>, HandshakeError> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Ok(tls),
        Ok(Err(e)) => Err(HandshakeError::Failed(e)),
        Err(_) => Err(HandshakeError::TimedOut(HANDSHAKE_TIMEOUT)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::self_signed;
    use super::*;

    #[test]
    fn builds_from_matching_cert_and_key_only() {
        let (cert, key) = self_signed();
        let tls = IngressTls::build(cert.as_bytes(), key.as_bytes(), None).unwrap();
        assert!(!tls.client_auth);
        assert_eq!(tls.config.alpn_protocols, alpn());
        let with_ca = IngressTls::build(cert.as_bytes(), key.as_bytes(), Some(cert.as_bytes())).unwrap();
        assert!(with_ca.client_auth);

        let (_, other_key) = self_signed();
        assert!(matches!(
            IngressTls::build(cert.as_bytes(), other_key.as_bytes(), None),
            Err(IngressTlsError::KeyMismatch(_))
        ));
        assert!(matches!(
            IngressTls::build(key.as_bytes(), key.as_bytes(), None),
            Err(IngressTlsError::Cert(PemError::NoCertificate))
        ));
        assert!(matches!(
            IngressTls::build(cert.as_bytes(), cert.as_bytes(), None),
            Err(IngressTlsError::Key(PemError::NoKey))
        ));
        assert!(matches!(
            IngressTls::build(cert.as_bytes(), key.as_bytes(), Some(b"nope")),
            Err(IngressTlsError::ClientCa(_))
        ));
    }

    #[test]
    fn debug_shows_no_key_material() {
        let (cert, key) = self_signed();
        let tls = IngressTls::build(cert.as_bytes(), key.as_bytes(), None).unwrap();
        let shown = format!("{tls:?}");
        assert!(shown.contains(&tls.fingerprint));
        assert!(!shown.contains("PRIVATE"));
    }
}
