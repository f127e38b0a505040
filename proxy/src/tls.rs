//! TLS with rustls: the server side (certificates by SNI, ALPN h2 and http/1.1) and the
//! client side for `https://` upstreams (system roots or a configured CA).
//!
//! Everything here is built while a config is validated, so a certificate that does not load
//! is reported like any other bad field and the running config (and its certificates) stay.
//! Only the ring provider is compiled in, and it is named explicitly rather than taken from a
//! process-wide default: rustls' safe defaults (TLS 1.2 and 1.3, its cipher suites) apply.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// ALPN protocols offered to clients, preferred first.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Which of a certificate pair's two files a problem is about, so the validator can point
/// at the right field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairField {
    /// The certificate chain file.
    Cert,
    /// The private key file.
    Key,
}

/// A certificate pair that did not load.
#[derive(Debug, Clone)]
pub struct PairError {
    /// The file at fault.
    pub field: PairField,
    /// What is wrong with it.
    pub message: String,
}

fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Loads a PEM certificate chain and its PEM private key, and checks that they belong
/// together.
pub fn load_pair(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, PairError> {
    let cert_err = |message: String| PairError {
        field: PairField::Cert,
        message,
    };
    let key_err = |message: String| PairError {
        field: PairField::Key,
        message,
    };
    let chain = load_certs(cert).map_err(cert_err)?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        key_err(format!(
            "cannot load a private key from {}: {e}",
            key.display()
        ))
    })?;
    let signing = provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| key_err(format!("unusable private key {}: {e}", key.display())))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| {
        key_err(format!(
            "private key {} does not match certificate {}: {e}",
            key.display(),
            cert.display()
        ))
    })?;
    Ok(Arc::new(certified))
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot load certificates from {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("no PEM certificate in {}", path.display()));
    }
    Ok(certs)
}

/// Picks a certificate by the SNI name the client sent, else the default one.
#[derive(Debug)]
pub struct SniResolver {
    default: Arc<CertifiedKey>,
    /// Lower-case host name -> certificate.
    by_name: HashMap<String, Arc<CertifiedKey>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let chosen = hello
            .server_name()
            .and_then(|name| self.by_name.get(&name.to_ascii_lowercase()));
        Some(chosen.unwrap_or(&self.default).clone())
    }
}

/// The server config for TLS listeners: rustls' safe defaults, certificates by SNI, ALPN
/// `h2` then `http/1.1`.
pub fn server_config(
    default: Arc<CertifiedKey>,
    by_name: HashMap<String, Arc<CertifiedKey>>,
) -> Result<Arc<ServerConfig>, String> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver {
            default,
            by_name: by_name
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect(),
        }));
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

fn client_config(roots: RootCertStore) -> Arc<ClientConfig> {
    // No ALPN here: the connector offers `http/1.1` itself (it refuses a preset list).
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        // An invariant of the built-in provider, not something a file or peer can change.
        .expect("the ring provider supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// A client config trusting only the CA certificates in the PEM file at `path`.
pub fn client_config_with_ca(path: &Path) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| format!("bad CA certificate in {}: {e}", path.display()))?;
    }
    Ok(client_config(roots))
}

/// A client config trusting the operating system's root certificates (loaded once per
/// process; the distribution's `ca-certificates` is what an operator already keeps up to
/// date, corporate roots included).
pub fn system_client_config() -> Result<Arc<ClientConfig>, String> {
    static SYSTEM: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    SYSTEM
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!(error = %e, "a system root certificate could not be loaded");
            }
            let mut roots = RootCertStore::empty();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err("no system root certificates found (install ca-certificates, or give the upstream a `ca:`)".into());
            }
            Ok(client_config(roots))
        })
        .clone()
}

/// An empty-roots client config for pools that only ever reach `http://` upstreams: it is
/// never used for a handshake, and avoids reading the system roots for nothing.
pub fn unused_client_config() -> Arc<ClientConfig> {
    static UNUSED: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    UNUSED
        .get_or_init(|| client_config(RootCertStore::empty()))
        .clone()
}
