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
//! connect failure, never an ambiguous attempt. The channel's
//! `connect_timeout_ms` bounds TCP connect and TLS handshake together, so a
//! connection is either up or known never to have carried a request within
//! it (and validation keeps it within `timeout_ms`).
//!
//! One case needs care. With TLS 1.3 the server judges the *client's*
//! certificate after the client has finished its side of the handshake; a
//! client that wrote its request at once would see a refused certificate
//! (expired, revoked, unknown to the acquirer — the classic mutual-TLS
//! outage) only as a connection closed in place of the response, which looks
//! exactly like an acquirer failing mid-payment: ambiguous, queried,
//! reversed, for a payment that never arrived. So when the server asked for
//! a client certificate, the connector waits for its verdict before handing
//! the connection over ([`await_acceptance`]): a session ticket or data
//! means accepted; an alert or a close means refused, a connect failure.
//! Servers send their tickets right after checking the certificate, so this
//! costs one round trip on new mutual-TLS connections only (pooled
//! connections and resumed sessions skip it); a server that sends none is
//! assumed to have accepted when the connect timeout runs out. A refusal that
//! still arrives after the request ([`refused_handshake`]) is recognised by
//! its alert and classified as a connect failure too: the acquirer refuses
//! before reading any request.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
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
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::{alpn, certificates, private_key, provider, roots, CaError, PemError, VERSIONS};

/// A channel's TLS client settings for one config version.
#[derive(Clone)]
pub(crate) struct UpstreamTls {
    config: Arc<rustls::ClientConfig>,
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
            config: Arc::new(config),
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
    #[error("connection to {host} (TCP and TLS handshake) not set up within {after:?}")]
    HandshakeTimeout { host: String, after: Duration },
    #[error("{host} refused the TLS handshake (our client certificate)")]
    Refused {
        host: String,
        #[source]
        source: io::Error,
    },
}

/// TCP, then TLS for https urls. Cheap to clone (the pool clones it per connect).
#[derive(Clone)]
pub(crate) struct Connector {
    http: HttpConnector,
    tls: Option<Arc<rustls::ClientConfig>>,
    connect_timeout: Duration,
}

impl Connector {
    /// `http` does the TCP part; `connect_timeout` bounds the whole set-up,
    /// TCP connect and TLS handshake together (so a connection is up, or
    /// known never to have carried a request, within the attempt's time).
    pub fn new(mut http: HttpConnector, tls: Option<&UpstreamTls>, connect_timeout: Duration) -> Connector {
        http.enforce_http(false);
        Connector {
            http,
            tls: tls.map(|t| t.config.clone()),
            connect_timeout,
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
        let timeout = self.connect_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let tcp = self.http.call(uri);
        Box::pin(async move {
            let tcp = tcp.await.map_err(|e| ConnectError::Tcp(e.into()))?;
            if !https {
                return Ok(Conn::Plain(tcp));
            }
            let base = tls.ok_or(ConnectError::NoTls)?;
            let host = host.ok_or(ConnectError::NoHost)?;
            let name =
                ServerName::try_from(host.clone()).map_err(|_| ConnectError::ServerName { host: host.clone() })?;
            // A per-connection copy of the config (cheap: Arcs) whose client
            // certificate resolver notes whether the server asked for one.
            let asked = Arc::new(AtomicBool::new(false));
            let mut config = (*base).clone();
            config.client_auth_cert_resolver = Arc::new(NoteRequest {
                inner: base.client_auth_cert_resolver.clone(),
                asked: asked.clone(),
            });
            let connect = TlsConnector::from(Arc::new(config)).connect(name, tcp.into_inner());
            let mut stream = match tokio::time::timeout_at(deadline, connect).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(source)) => return Err(ConnectError::Handshake { host, source }),
                Err(_) => return Err(ConnectError::HandshakeTimeout { host, after: timeout }),
            };
            let tls13 = stream.get_ref().1.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3);
            let early = if tls13 && asked.load(Ordering::Relaxed) {
                await_acceptance(&mut stream, &host, deadline).await?
            } else {
                Vec::new()
            };
            Ok(Conn::Tls(Box::new(TokioIo::new(Prefixed { early, inner: stream }))))
        })
    }
}

/// Delegates to the configured resolver, noting that the server asked.
#[derive(Debug)]
struct NoteRequest {
    inner: Arc<dyn rustls::client::ResolvesClientCert>,
    asked: Arc<AtomicBool>,
}

impl rustls::client::ResolvesClientCert for NoteRequest {
    fn resolve(
        &self,
        root_hint_subjects: &[&[u8]],
        sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.asked.store(true, Ordering::Relaxed);
        self.inner.resolve(root_hint_subjects, sigschemes)
    }

    fn only_raw_public_keys(&self) -> bool {
        self.inner.only_raw_public_keys()
    }

    fn has_certs(&self) -> bool {
        self.inner.has_certs()
    }
}

/// TLS 1.3 with a client certificate requested: the server judges our
/// certificate after our side of the handshake is done. Wait (up to `limit`)
/// for its verdict before any request is written: a session ticket or data
/// means accepted, an alert or a close means refused. A server that sends
/// neither is assumed to have accepted at `deadline`. Returns any
/// application data read meanwhile, for the HTTP client to read first.
async fn await_acceptance(
    stream: &mut tokio_rustls::client::TlsStream<TcpStream>,
    host: &str,
    deadline: tokio::time::Instant,
) -> Result<Vec<u8>, ConnectError> {
    let mut buf = vec![0u8; 16 * 1024];
    let verdict = std::future::poll_fn(|cx| {
        if stream.get_ref().1.tls13_tickets_received() > 0 {
            return Poll::Ready(Ok(0));
        }
        let mut read = ReadBuf::new(&mut buf);
        match Pin::new(&mut *stream).poll_read(cx, &mut read) {
            Poll::Ready(Ok(())) if read.filled().is_empty() => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed right after the handshake",
            ))),
            Poll::Ready(Ok(())) => Poll::Ready(Ok(read.filled().len())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending if stream.get_ref().1.tls13_tickets_received() > 0 => Poll::Ready(Ok(0)),
            Poll::Pending => Poll::Pending,
        }
    });
    match tokio::time::timeout_at(deadline, verdict).await {
        Ok(Ok(n)) => {
            buf.truncate(n);
            Ok(buf)
        }
        Ok(Err(source)) => Err(ConnectError::Refused {
            host: host.to_owned(),
            source,
        }),
        Err(_) => {
            tracing::debug!(
                host,
                "no session ticket after the handshake; assuming our client certificate was accepted"
            );
            Ok(Vec::new())
        }
    }
}

/// A connection to an acquirer, plain or TLS.
pub(crate) enum Conn {
    Plain(TokioIo<TcpStream>),
    /// Boxed: a TLS session is large, a plain stream is not.
    Tls(Box<TokioIo<Prefixed>>),
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        match self {
            Conn::Plain(s) => s.connected(),
            Conn::Tls(s) => {
                let (tcp, session) = s.inner().inner.get_ref();
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

/// A TLS stream that first yields the application data read while waiting
/// for the server's verdict on our certificate.
pub(crate) struct Prefixed {
    early: Vec<u8>,
    inner: tokio_rustls::client::TlsStream<TcpStream>,
}

impl AsyncRead for Prefixed {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.early.is_empty() {
            let n = self.early.len().min(buf.remaining());
            buf.put_slice(&self.early[..n]);
            self.early.drain(..n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
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
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
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
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
}

/// The alert with which an acquirer refused our TLS handshake, if that is
/// what ended a failed exchange. The connector waits for the verdict on our
/// client certificate before a request is written (see the module doc); this
/// catches a refusal that arrives later still (a server that sent no session
/// ticket in time). Only alerts that belong to the handshake count: the
/// acquirer sends them before it reads any request, so nothing was acted on.
/// Anything else stays a broken exchange.
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
