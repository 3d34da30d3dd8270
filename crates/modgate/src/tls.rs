//! Upstream TLS material named in `gateway.yaml` (client certificates modgate presents, CA
//! bundles that verify upstreams), read with `modgate-identity`'s PEM readers. Listener
//! TLS (server certificates, client-certificate verification, CRLs, reload) lives in
//! `modgate-identity`.
//!
//! Pingora's `TlsSettings::build()` panics on a missing file or a key that does not match its
//! certificate, and only when the service starts. Every file is therefore parsed here first and
//! a rustls config is built from it, so a bad file is a one-line error from `modgate check` /
//! start-up instead of a crash.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use pingora::utils::tls::{CertKey, WrappedX509};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A client certificate (with chain) and key that modgate presents to an upstream.
#[derive(Clone)]
pub struct ClientCertKey {
    pub cert_path: PathBuf,
    certs: Vec<Vec<u8>>,
    key: Vec<u8>,
}

impl std::fmt::Debug for ClientCertKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCertKey")
            .field("cert_path", &self.cert_path)
            .finish_non_exhaustive()
    }
}

/// Compared by the file it was read from, as its `Debug` shows it (the certificates and key read
/// from it are neither printed nor compared): a reload reports an upstream whose `client_cert`
/// names another file, and re-reads the files every time either way.
impl PartialEq for ClientCertKey {
    fn eq(&self, other: &ClientCertKey) -> bool {
        let ClientCertKey {
            cert_path,
            certs: _,
            key: _,
        } = self;
        *cert_path == other.cert_path
    }
}

impl ClientCertKey {
    /// The Pingora form of this pair for `HttpPeer::client_cert_key`.
    pub fn to_cert_key(&self) -> CertKey {
        CertKey::new(self.certs.clone(), self.key.clone())
    }
}

/// The certificates of a CA bundle file.
#[derive(Debug, Clone, PartialEq)]
pub struct PemBundle {
    certs: Vec<Vec<u8>>,
}

impl PemBundle {
    /// The Pingora form of this bundle for `PeerOptions::ca`.
    pub fn to_ca(&self) -> Arc<[WrappedX509]> {
        self.certs
            .iter()
            .map(|der| WrappedX509::new(der.clone(), pingora::utils::tls::parse_x509))
            .collect::<Vec<_>>()
            .into()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate of a PEM file (at least one); each must parse as X.509.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = modgate_identity::tls::read_certs(path).map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no PEM certificate (\"-----BEGIN CERTIFICATE-----\") found",
            path.display()
        ));
    }
    Ok(certs)
}

/// Reads the private key of a PEM file.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    modgate_identity::tls::read_key(path).map_err(|e| e.to_string())
}

/// Proves that a client certificate chain and key, already read, are usable by rustls.
pub fn client_cert_key(
    cert_path: PathBuf,
    certs: Vec<CertificateDer<'static>>,
    key_path: PathBuf,
    key: PrivateKeyDer<'static>,
) -> Result<ClientCertKey, String> {
    let key_der = key.secret_der().to_vec();
    rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_client_auth_cert(certs.clone(), key)
        .map_err(|e| {
            format!(
                "{} and {} do not form a usable client certificate and key: {e}",
                cert_path.display(),
                key_path.display()
            )
        })?;
    Ok(ClientCertKey {
        cert_path,
        certs: certs.into_iter().map(|c| c.to_vec()).collect(),
        key: key_der,
    })
}

/// Loads a CA bundle; every certificate must be usable as a trust anchor.
pub fn load_ca_bundle(path: &Path) -> Result<PemBundle, String> {
    let certs = read_certs(path)?;
    let mut store = rustls::RootCertStore::empty();
    for cert in &certs {
        store
            .add(cert.clone())
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", path.display()))?;
    }
    Ok(PemBundle {
        certs: certs.into_iter().map(|c| c.to_vec()).collect(),
    })
}
