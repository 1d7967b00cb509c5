//! TLS to acquirers: https channel urls, mutual TLS.
//!
//! [`Connector`] is the connector of every channel's pooled client: plain
//! TCP for `http://` urls, TCP then a rustls handshake for `https://` ones.
//! The server certificate is verified against Mozilla's roots (webpki-roots:
//! the same on every machine, no dependency on the host's CA store) plus the
//! channel's `ca`, for the host of the url, which is also sent as SNI (an IP
//! address host is verified against the certificate's IP names and sends no
//! SNI, as RFC 6066 says). With `cert` and `key` the channel presents a
//! client certificate.
//!
//! The handshake is part of *connecting*, and that is what makes failover
//! safe: until it completes not one byte of the request has left, so a
//! refused certificate, an unknown CA or a handshake that stalls (bounded by
//! the channel's `connect_timeout_ms`, separately from the TCP connect) is a
//! connect failure, never an ambiguous attempt. One case needs care: with
//! TLS 1.3 a server checks the *client's* certificate after the client has
//! finished its side of the handshake and already written the request, so a
//! refused client certificate arrives as an alert in place of the response.
//! The server never processed that request (application data is not read
//! before the client's certificate is accepted), so [`refused_handshake`]
//! lets the caller classify it as a connect failure too.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::Scheme;
use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::AlertDescription;
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::{alpn, certificates, private_key, provider, roots, CaError, PemError, VERSIONS};

/// A channel's TLS client settings for one config version.
#[derive(Clone)]
pub(crate) struct UpstreamTls {
    connector: TlsConnector,
    /// Digest of the material it was built from: a reload that changes none
    /// of it keeps the channel's connection pool.
    digest: [u8; 32],
    /// Whether a private `ca` is trusted besides the public roots.
    pub private_ca: bool,
    /// Whether a client certificate is presented (mutual TLS).
    pub client_cert: bool,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("private_ca", &self.private_ca)
            .field("client_cert", &self.client_cert)
            .finish()
    }
}

impl PartialEq for UpstreamTls {
    fn eq(&self, other: &UpstreamTls) -> bool {
        self.digest == other.digest
    }
}

/// Why a channel's `tls` material was not usable; each names the key at fault.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamTlsError {
    #[error("ca: {0}")]
    Ca(CaError),
    #[error("cert: {0}")]
    Cert(PemError),
    #[error("key: {0}")]
    Key(PemError),
    #[error("key does not fit cert: {0}")]
    KeyMismatch(rustls::Error),
    #[error("TLS 1.2/1.3 not available: {0}")]
    Versions(rustls::Error),
}

impl UpstreamTls {
    /// From the PEM contents of the channel's `ca` and of its client
    /// `cert` (chain, leaf first) and `key`.
    pub fn build(ca: Option<&[u8]>, identity: Option<(&[u8], &[u8])>) -> Result<UpstreamTls, UpstreamTlsError> {
        let mut store = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let mut digest = Sha256::new();
        if let Some(pem) = ca {
            roots(&mut store, pem).map_err(UpstreamTlsError::Ca)?;
            digest.update(b"ca\0");
            digest.update(pem);
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)
            .map_err(UpstreamTlsError::Versions)?
            .with_root_certificates(store);
        let mut config = match identity {
            Some((cert, key)) => {
                let chain = certificates(cert).map_err(UpstreamTlsError::Cert)?;
                let key_der = private_key(key).map_err(UpstreamTlsError::Key)?;
                digest.update(b"\0cert\0");
                digest.update(cert);
                digest.update(b"\0key\0");
                digest.update(key);
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(UpstreamTlsError::KeyMismatch)?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn();
        Ok(UpstreamTls {
            connector: TlsConnector::from(Arc::new(config)),
            digest: digest.finalize().into(),
            private_ca: ca.is_some(),
            client_cert: identity.is_some(),
        })
    }
}

/// Why a connection to an acquirer was not established. Every variant means
/// that nothing of the request was sent.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error(transparent)]
    Tcp(Box<dyn std::error::Error + Send + Sync>),
    #[error("the url has no host")]
    NoHost,
    #[error("{host:?} is not a valid TLS server name")]
    ServerName { host: String },
    #[error("an https url needs the channel's TLS settings")]
    NoTls,
    #[error("TLS handshake with {host} failed")]
    Handshake {
        host: String,
        #[source]
        source: io::Error,
    },
    #[error("TLS handshake with {host} not finished within {after:?}")]
    HandshakeTimeout { host: String, after: Duration },
}

/// TCP, then TLS for https urls. Cheap to clone (the pool clones it per connect).
#[derive(Clone)]
pub(crate) struct Connector {
    http: HttpConnector,
    tls: Option<TlsConnector>,
    handshake_timeout: Duration,
}

impl Connector {
    /// `http` does the TCP part (its connect timeout bounds it);
    /// `handshake_timeout` bounds the TLS handshake.
    pub fn new(mut http: HttpConnector, tls: Option<&UpstreamTls>, handshake_timeout: Duration) -> Connector {
        http.enforce_http(false);
        Connector {
            http,
            tls: tls.map(|t| t.connector.clone()),
            handshake_timeout,
        }
    }
}

impl tower::Service<Uri> for Connector {
    type Response = Conn;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, ConnectError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        self.http.poll_ready(cx).map_err(|e| ConnectError::Tcp(e.into()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let https = uri.scheme() == Some(&Scheme::HTTPS);
        let host = uri
            .host()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned());
        let tls = self.tls.clone();
        let timeout = self.handshake_timeout;
        let tcp = self.http.call(uri);
        Box::pin(async move {
            let tcp = tcp.await.map_err(|e| ConnectError::Tcp(e.into()))?;
            if !https {
                return Ok(Conn::Plain(tcp));
            }
            let tls = tls.ok_or(ConnectError::NoTls)?;
            let host = host.ok_or(ConnectError::NoHost)?;
            let name =
                ServerName::try_from(host.clone()).map_err(|_| ConnectError::ServerName { host: host.clone() })?;
            match tokio::time::timeout(timeout, tls.connect(name, tcp.into_inner())).await {
                Ok(Ok(stream)) => Ok(Conn::Tls(TokioIo::new(stream))),
                Ok(Err(source)) => Err(ConnectError::Handshake { host, source }),
                Err(_) => Err(ConnectError::HandshakeTimeout { host, after: timeout }),
            }
        })
    }
}

/// A connection to an acquirer, plain or TLS.
pub(crate) enum Conn {
    Plain(TokioIo<TcpStream>),
    Tls(TokioIo<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        match self {
            Conn::Plain(s) => s.connected(),
            Conn::Tls(s) => {
                let (tcp, session) = s.inner().get_ref();
                let connected = tcp.connected();
                if session.alpn_protocol() == Some(b"h2") {
                    connected.negotiated_h2()
                } else {
                    connected
                }
            }
        }
    }
}

impl hyper::rt::Read for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }
}

/// The alert with which an acquirer refused our TLS handshake, if that is
/// what ended a failed exchange (see the module doc: with TLS 1.3 a refused
/// client certificate surfaces after the request was written, yet the
/// acquirer never processed it). Only alerts that belong to the handshake
/// count; anything else stays a broken exchange.
pub(crate) fn refused_handshake(err: &(dyn std::error::Error + 'static)) -> Option<AlertDescription> {
    let mut cause = Some(err);
    while let Some(e) = cause {
        let tls = e.downcast_ref::<rustls::Error>().or_else(|| {
            e.downcast_ref::<io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(rustls::Error::AlertReceived(alert)) = tls {
            return handshake_alert(*alert).then_some(*alert);
        }
        cause = e.source();
    }
    None
}

fn handshake_alert(alert: AlertDescription) -> bool {
    matches!(
        alert,
        AlertDescription::HandshakeFailure
            | AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnknownCA
            | AlertDescription::AccessDenied
            | AlertDescription::DecryptError
            | AlertDescription::CertificateRequired
    )
}

#[cfg(test)]
mod tests {
    use super::super::testing::self_signed;
    use super::*;

    #[test]
    fn same_material_same_client() {
        let (cert, key) = self_signed();
        let a = UpstreamTls::build(Some(cert.as_bytes()), None).unwrap();
        let b = UpstreamTls::build(Some(cert.as_bytes()), None).unwrap();
        let c = UpstreamTls::build(Some(cert.as_bytes()), Some((cert.as_bytes(), key.as_bytes()))).unwrap();
        let d = UpstreamTls::build(None, None).unwrap();
        assert!(a == b);
        assert!(a != c && a != d && c != d);
        assert!(c.client_cert && c.private_ca && !d.private_ca);
        let (_, other_key) = self_signed();
        assert!(matches!(
            UpstreamTls::build(None, Some((cert.as_bytes(), other_key.as_bytes()))),
            Err(UpstreamTlsError::KeyMismatch(_))
        ));
        assert!(matches!(
            UpstreamTls::build(Some(b"x"), None),
            Err(UpstreamTlsError::Ca(CaError::Pem(PemError::NoCertificate)))
        ));
    }

    #[test]
    fn only_handshake_alerts_are_refusals() {
        let wrapped = |alert| io::Error::new(io::ErrorKind::InvalidData, rustls::Error::AlertReceived(alert));
        let refused = wrapped(AlertDescription::CertificateRequired);
        assert_eq!(refused_handshake(&refused), Some(AlertDescription::CertificateRequired));
        let other = wrapped(AlertDescription::InternalError);
        assert_eq!(refused_handshake(&other), None);
        let plain = io::Error::new(io::ErrorKind::ConnectionReset, "reset");
        assert_eq!(refused_handshake(&plain), None);
        // Found below other errors in the chain too.
        let outer = ConnectError::Handshake {
            host: "h".into(),
            source: wrapped(AlertDescription::UnknownCA),
        };
        assert_eq!(refused_handshake(&outer), Some(AlertDescription::UnknownCA));
    }
}
