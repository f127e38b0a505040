//! TLS for the tests: a throwaway CA made with rcgen, certificates it issues, a client that
//! reports what the handshake chose (ALPN protocol, certificate), and an HTTPS echo backend.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// A certificate authority that exists only for one test.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, in PEM.
#[derive(Debug, Clone)]
pub struct Pair {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
    /// The certificate, DER, to compare with what a handshake presented.
    pub cert_der: Vec<u8>,
}

impl Pair {
    /// Writes `NAME.crt` and `NAME.key` into `dir`.
    pub fn write(&self, dir: &Path, name: &str) {
        std::fs::write(dir.join(format!("{name}.crt")), &self.cert_pem).expect("write cert");
        std::fs::write(dir.join(format!("{name}.key")), &self.key_pem).expect("write key");
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl TestCa {
    /// A new CA.
    pub fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "strangler test CA");
        let key = KeyPair::generate().expect("CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("self-sign the CA");
        TestCa { issuer }
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf certificate for these names (DNS names, or IP addresses such as `127.0.0.1`).
    pub fn issue(&self, names: &[&str]) -> Pair {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let params = CertificateParams::new(names).expect("leaf params");
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign the leaf");
        Pair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().to_vec(),
        }
    }

    fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.issuer.der().clone())
            .expect("add the CA to the roots");
        roots
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What one HTTPS exchange showed.
#[derive(Debug)]
pub struct TlsExchange {
    /// The ALPN protocol the server picked (`h2`, `http/1.1`), if any.
    pub alpn: Option<String>,
    /// The leaf certificate the server presented (DER).
    pub cert_der: Vec<u8>,
    /// The response status.
    pub status: u16,
    /// The response body.
    pub body: Bytes,
}

impl TlsExchange {
    /// The body as JSON (panics if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

/// Connects to `addr` with TLS (SNI `server_name`, trusting only `ca`, offering `alpn`), then
/// GETs `path` over whichever protocol was negotiated.
pub async fn https_get(
    addr: SocketAddr,
    server_name: &str,
    ca: &TestCa,
    alpn: &[&[u8]],
    path: &str,
) -> std::io::Result<TlsExchange> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(ca.roots())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from(server_name.to_string())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let tcp = TcpStream::connect(addr).await?;
    let tls = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake"))??;
    let (_, session) = tls.get_ref();
    let alpn = session
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    let cert_der = session
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    let io = TokioIo::new(tls);
    let req = Request::get(format!("https://{server_name}{path}"))
        .header(http::header::HOST, server_name)
        .body(Empty::<Bytes>::new())
        .expect("request");
    let other = |e: hyper::Error| std::io::Error::other(e);
    let resp = if alpn.as_deref() == Some("h2") {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(other)?;
        tokio::spawn(conn);
        send.send_request(req).await.map_err(other)?
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(other)?;
        tokio::spawn(conn);
        let mut req = req;
        // HTTP/1.1 takes origin-form.
        *req.uri_mut() = path.parse().expect("path");
        send.send_request(req).await.map_err(other)?
    };
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.map_err(other)?.to_bytes();
    Ok(TlsExchange {
        alpn,
        cert_der,
        status,
        body,
    })
}

/// A rustls server config for a test backend serving `pair` (HTTP/1.1).
pub fn server_config(pair: &Pair) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    let certs = vec![CertificateDer::from_pem_slice(pair.cert_pem.as_bytes()).expect("cert PEM")];
    let key = PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes()).expect("key PEM");
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server cert");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Wraps server configs as an acceptor.
pub fn acceptor(config: Arc<rustls::ServerConfig>) -> TlsAcceptor {
    TlsAcceptor::from(config)
}
