//! mgload's TLS client side: TLS 1.3 only (rustls with ring), the server certificate checked
//! against the given CA file, an optional client certificate and key, the cipher suites to
//! offer and one ALPN protocol; and what a handshake negotiated, spelled as h2load prints it.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use crate::args::Plan;

/// Why the TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: no PEM certificate in it")]
    NoCertificate(PathBuf),
    #[error("{0}: no PEM private key in it")]
    NoKey(PathBuf),
    #[error("{path}: {source}")]
    Rustls {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("TLS settings: {0}")]
    Config(rustls::Error),
}

fn open(path: &Path) -> Result<BufReader<File>, TlsError> {
    File::open(path)
        .map(BufReader::new)
        .map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })
}

/// Every certificate in a PEM file (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = rustls_pemfile::certs(&mut open(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_path_buf()));
    }
    Ok(certs)
}

/// The first private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    rustls_pemfile::private_key(&mut open(path)?)
        .map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })?
        .ok_or_else(|| TlsError::NoKey(path.to_path_buf()))
}

/// The rustls configuration for a plan: TLS 1.3, its CA, client certificate, suites and ALPN.
pub fn client_config(plan: &Plan) -> Result<Arc<ClientConfig>, TlsError> {
    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(names) = &plan.ciphers {
        provider
            .cipher_suites
            .retain(|s| names.iter().any(|n| *n == suite_name(s.suite())));
    }
    let mut roots = RootCertStore::empty();
    for cert in load_certs(&plan.cacert)? {
        roots.add(cert).map_err(|source| TlsError::Rustls {
            path: plan.cacert.clone(),
            source,
        })?;
    }
    let builder = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Config)?
        .with_root_certificates(roots);
    let mut config = match &plan.client_cert {
        Some((cert, key)) => {
            let chain = load_certs(cert)?;
            let key_der = load_key(key)?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|source| TlsError::Rustls {
                    path: key.clone(),
                    source,
                })?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![plan.protocol.alpn().as_bytes().to_vec()];
    Ok(Arc::new(config))
}

/// A cipher suite's IANA / OpenSSL name (`TLS_AES_128_GCM_SHA256`), as h2load prints it.
pub fn suite_name(suite: rustls::CipherSuite) -> String {
    match suite.as_str() {
        Some(s) => s.replacen("TLS13_", "TLS_", 1),
        None => format!("{suite:?}"),
    }
}

/// What a finished handshake negotiated: protocol version, cipher suite and ALPN protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// `TLSv1.3`.
    pub version: String,
    /// IANA name of the cipher suite.
    pub cipher: String,
    /// ALPN protocol (`h2`, `http/1.1`; `-` when none).
    pub alpn: String,
}

/// Reads the negotiated parameters of a client connection.
pub fn negotiated(conn: &ClientConnection) -> Negotiated {
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
        Some(v) => format!("{v:?}"),
        None => "-".to_string(),
    };
    let cipher = conn
        .negotiated_cipher_suite()
        .map(|s| suite_name(s.suite()))
        .unwrap_or_else(|| "-".to_string());
    let alpn = conn
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_else(|| "-".to_string());
    Negotiated {
        version,
        cipher,
        alpn,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suite_names_match_openssl() {
        assert_eq!(
            suite_name(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256),
            "TLS_AES_128_GCM_SHA256"
        );
        assert_eq!(
            suite_name(rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256),
            "TLS_CHACHA20_POLY1305_SHA256"
        );
        // Every name the command line accepts is a suite the ring provider has.
        let have: Vec<String> = rustls::crypto::ring::default_provider()
            .cipher_suites
            .iter()
            .map(|s| suite_name(s.suite()))
            .collect();
        for name in crate::args::SUITES {
            assert!(have.iter().any(|h| h == name), "{name} not in {have:?}");
        }
    }
}
