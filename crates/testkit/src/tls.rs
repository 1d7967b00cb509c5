//! TLS for end-to-end tests: certificates made on the spot (rcgen), server
//! configs for https fake acquirers, and a client whose TLS version and
//! ALPN a test pins.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use payroute_mock::MockAcquirer;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ProtocolVersion, SupportedProtocolVersion};
use sha2::Digest;

use crate::http::Resp;

pub use rustls::version::{TLS12, TLS13};

/// A recording https fake acquirer named `name`, answering 200 to every
/// request; its handshakes are recorded too.
pub async fn tls_acquirer(name: &str, config: Arc<rustls::ServerConfig>) -> MockAcquirer {
    crate::start_recording(MockAcquirer::builder().tls(config), name).await
}

/// A certificate authority for one test.
pub struct Ca {
    params: CertificateParams,
    key: KeyPair,
    /// The CA certificate, PEM.
    pub pem: String,
}

/// A certificate (PEM) and its private key (PEM).
#[derive(Clone)]
pub struct Identity {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Identity {
    /// SHA-256 of the certificate (hex), as payroute logs it.
    pub fn fingerprint(&self) -> String {
        let der = CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).expect("certificate PEM");
        hex::encode(sha2::Sha256::digest(der.as_ref()))
    }

    /// Writes `NAME.pem` and `NAME.key` into `dir`.
    pub fn write(&self, dir: &Path, name: &str) {
        std::fs::write(dir.join(format!("{name}.pem")), &self.cert_pem).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), &self.key_pem).unwrap();
    }

    /// Replaces `NAME.pem` and `NAME.key` in `dir` by rename (as cert-manager
    /// and certbot do), key first.
    pub fn replace(&self, dir: &Path, name: &str) {
        for (ext, content) in [("key", &self.key_pem), ("pem", &self.cert_pem)] {
            let tmp = dir.join(format!(".{name}.{ext}.{}.tmp", fastrand::u32(..)));
            std::fs::write(&tmp, content).unwrap();
            std::fs::rename(&tmp, dir.join(format!("{name}.{ext}"))).unwrap();
        }
    }
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Ca { params, key, pem }
    }

    fn issue(&self, cn: &str, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Identity {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        let key = KeyPair::generate().unwrap();
        let cert = params
            .signed_by(&key, &Issuer::from_params(&self.params, &self.key))
            .unwrap();
        Identity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A server certificate for `localhost` and 127.0.0.1.
    pub fn server(&self, cn: &str) -> Identity {
        self.issue(cn, &["localhost", "127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate.
    pub fn client(&self, cn: &str) -> Identity {
        self.issue(cn, &[], ExtendedKeyUsagePurpose::ClientAuth)
    }

    pub fn write(&self, dir: &Path, file: &str) {
        std::fs::write(dir.join(file), &self.pem).unwrap();
    }

    fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.pem.as_bytes()).unwrap())
            .unwrap();
        roots
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn chain_and_key(id: &Identity) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let chain = CertificateDer::pem_slice_iter(id.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    (chain, PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()).unwrap())
}

/// A server config for a fake acquirer: `identity`, the given versions,
/// ALPN h2 and http/1.1, and client certificates from `client_ca` required.
pub fn server_config(
    identity: &Identity,
    client_ca: Option<&Ca>,
    versions: &[&'static SupportedProtocolVersion],
) -> Arc<rustls::ServerConfig> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap();
    let builder = match client_ca {
        Some(ca) => builder.with_client_cert_verifier(
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(ca.roots()), provider())
                .build()
                .unwrap(),
        ),
        None => builder.with_no_client_auth(),
    };
    let (chain, key) = chain_and_key(identity);
    let mut config = builder.with_single_cert(chain, key).unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A client config trusting `ca` only, at exactly `version`, offering `alpn`,
/// presenting `identity` if given.
pub fn client_config(
    ca: &Ca,
    identity: Option<&Identity>,
    version: &'static SupportedProtocolVersion,
    alpn: &[&[u8]],
) -> Arc<rustls::ClientConfig> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(ca.roots());
    let mut config = match identity {
        Some(id) => {
            let (chain, key) = chain_and_key(id);
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// What one TLS exchange established, besides the response.
#[derive(Debug, Clone)]
pub struct Session {
    pub version: Option<ProtocolVersion>,
    pub alpn: Option<Vec<u8>>,
    /// SHA-256 (hex) of the certificate the server presented.
    pub server_cert: String,
}

/// A TLS handshake with `addr` (SNI `localhost`), then one request.
/// `h2`: HTTP/2 if the server agreed to it (ALPN), else HTTP/1.1.
pub async fn request(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<(Resp, Session), String> {
    let start = Instant::now();
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let connector = tokio_rustls::TlsConnector::from(config);
        let name = ServerName::try_from("localhost").unwrap();
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let (_, conn) = tls.get_ref();
        let session = Session {
            version: conn.protocol_version(),
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
            server_cert: conn
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| hex::encode(sha2::Sha256::digest(c.as_ref())))
                .unwrap_or_default(),
        };
        let h2 = session.alpn.as_deref() == Some(b"h2");
        let mut b = Request::builder().method(method);
        b = if h2 {
            b.uri(format!("https://localhost:{}{path}", addr.port()))
        } else {
            b.uri(path).header("host", format!("localhost:{}", addr.port()))
        };
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Full::new(body.into())).map_err(|e| e.to_string())?;
        let io = TokioIo::new(tls);
        let response = if h2 {
            let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| format!("h2 handshake: {e:?}"))?;
            tokio::spawn(conn);
            send.send_request(req).await
        } else {
            let (mut send, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| format!("h1 handshake: {e:?}"))?;
            tokio::spawn(conn);
            send.send_request(req).await
        }
        .map_err(|e| format!("request: {e:?}"))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("reading body: {e}"))?
            .to_bytes();
        Ok::<_, String>((
            Resp {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body,
                elapsed: start.elapsed(),
            },
            session,
        ))
    };
    tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .map_err(|_| "no answer within 30 s".to_string())?
}
