//! Server TLS material (certificate chain and key, client CA bundles, CRLs) loaded from files,
//! checked with clear errors, and swappable at run time without dropping connections.
//!
//! [`load_material`] reads everything a listener needs and fails with a [`TlsError`] naming the
//! file and the problem. [`ReloadableTls`] keeps the current [`TlsMaterial`] in an `ArcSwap`;
//! hand its [`ReloadableTls::cert_resolver`] and [`ReloadableTls::client_verifier`] to Pingora's
//! `TlsSettings` once, then call [`ReloadableTls::reload`] (e.g. on SIGHUP): new handshakes use
//! the new certificate, CAs and CRLs, established connections keep their handshake (callers
//! re-judge their client chains with [`ReloadableTls::verify_client_chain`]), and a reload that
//! fails anywhere leaves the old material in force.
//!
//! Verifiers are always built with `rustls::crypto::ring::default_provider()`, never with a
//! process-wide default provider.
//!
//! # CA hints (`root_hint_subjects`)
//!
//! In a `CertificateRequest` the server lists the subjects of the CAs it accepts, and clients
//! (Go's `crypto/tls` among them) use the list to pick a certificate. rustls borrows this list
//! from the verifier, so a verifier whose CAs change cannot simply return the list of the
//! current material. [`ReloadableTls`] therefore keeps every distinct hint list it has served in
//! an append-only chain owned by itself (no `unsafe`, nothing leaked past its own lifetime) and
//! returns the newest. After [`MAX_HINT_CHANGES`] distinct lists the chain stops growing and the
//! verifier sends an empty list instead (RFC 8446: the client may then send any certificate;
//! verification is unaffected). Hints are only hints: which certificates are accepted is always
//! decided by the current verifier.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwap;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::cert::dn_from_der;

/// Whether clients must present a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// A certificate that verifies is required for the handshake to succeed.
    Required,
    /// A certificate is asked for; none is fine, but one that does not verify fails the
    /// handshake (rustls has no nginx-style "FAILED" state).
    Optional,
    /// No certificate is asked for.
    #[default]
    None,
}

impl std::fmt::Display for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ClientAuth {
    fn as_str(&self) -> &'static str {
        match self {
            ClientAuth::Required => "required",
            ClientAuth::Optional => "optional",
            ClientAuth::None => "none",
        }
    }
}

/// Which certificates of a client chain must have a known revocation status when CRLs are
/// configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CrlScope {
    /// Only the client's own certificate (the usual setup: one CRL per issuing CA).
    #[default]
    EndEntity,
    /// Every certificate of the chain except the trust anchor: each intermediate needs a CRL
    /// from its issuer too.
    Chain,
}

/// A setting value spelled in a configuration file (`required`, `end-entity`, `http`, ...).
fn parse_word<T: Copy>(s: &str, what: &str, words: &[(&str, T)]) -> Result<T, String> {
    words
        .iter()
        .find(|(w, _)| *w == s)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let all: Vec<&str> = words.iter().map(|(w, _)| *w).collect();
            format!("unknown {what} {s:?} (use {})", all.join(", "))
        })
}

impl std::str::FromStr for ClientAuth {
    type Err = String;
    /// `none`, `optional` or `required`.
    fn from_str(s: &str) -> Result<ClientAuth, String> {
        parse_word(
            s,
            "client_auth",
            &[
                ("none", ClientAuth::None),
                ("optional", ClientAuth::Optional),
                ("required", ClientAuth::Required),
            ],
        )
    }
}

impl std::str::FromStr for CrlScope {
    type Err = String;
    /// `end-entity` or `chain`.
    fn from_str(s: &str) -> Result<CrlScope, String> {
        parse_word(
            s,
            "crl_scope",
            &[
                ("end-entity", CrlScope::EndEntity),
                ("chain", CrlScope::Chain),
            ],
        )
    }
}

impl std::str::FromStr for RefuseIn {
    type Err = String;
    /// `http` or `handshake`.
    fn from_str(s: &str) -> Result<RefuseIn, String> {
        parse_word(
            s,
            "refuse_in",
            &[("http", RefuseIn::Http), ("handshake", RefuseIn::Handshake)],
        )
    }
}

/// The files of one TLS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Whether to ask clients for certificates.
    pub client_auth: ClientAuth,
    /// PEM bundles of CA certificates trusted for client certificates. Every certificate in
    /// them (roots and intermediates alike) becomes a trust anchor.
    pub client_ca: Vec<PathBuf>,
    /// CRLs, PEM (`-----BEGIN X509 CRL-----`, several per file allowed) or DER (one per file).
    pub crl: Vec<PathBuf>,
    /// Which certificates need a revocation status when CRLs are given.
    pub crl_scope: CrlScope,
    /// Accept certificates whose issuer has no CRL among `crl` (default: reject them).
    pub allow_unknown_revocation: bool,
    /// Where a missing (when required) or unacceptable client certificate is refused.
    pub refuse_in: RefuseIn,
}

/// Where a client certificate that does not verify, or a missing one when it is required, is
/// refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RefuseIn {
    /// The handshake fails with a TLS alert; nothing of HTTP is reached. Clients print a bare
    /// `certificate required` / `unknown ca` / `connection reset`.
    #[default]
    Handshake,
    /// The handshake completes whatever certificate is presented — the proof that the client
    /// holds the certificate's key is still checked in it — and the server refuses the first
    /// request with an HTTP answer naming the problem. The chain is verified with
    /// [`ReloadableTls::verify_client_chain`] before any request is served; a certificate that
    /// fails it is never an identity.
    Http,
}

impl TlsFiles {
    /// A certificate and key, no client authentication.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> TlsFiles {
        TlsFiles {
            cert: cert.into(),
            key: key.into(),
            client_auth: ClientAuth::None,
            client_ca: Vec::new(),
            crl: Vec::new(),
            crl_scope: CrlScope::EndEntity,
            allow_unknown_revocation: false,
            refuse_in: RefuseIn::Handshake,
        }
    }
}

impl From<&TlsFiles> for TlsFiles {
    fn from(files: &TlsFiles) -> TlsFiles {
        files.clone()
    }
}

/// Why TLS material could not be loaded. Every message names the file concerned.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A PEM file is malformed.
    #[error("{}: bad PEM: {reason}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What the PEM parser said.
        reason: String,
    },
    /// The certificate file holds no certificate.
    #[error("{}: no PEM certificate (\"-----BEGIN CERTIFICATE-----\") found", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A certificate does not parse.
    #[error("{}: certificate #{index} does not parse as X.509: {reason}", path.display())]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// 1-based position in the file.
        index: usize,
        /// Parser message.
        reason: String,
    },
    /// The key file holds no private key.
    #[error("{}: no PEM private key (PKCS#8, PKCS#1 or SEC1) found", path.display())]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// The private key is not usable (unsupported algorithm, malformed).
    #[error("{}: private key is not usable: {reason}", path.display())]
    BadPrivateKey {
        /// The file.
        path: PathBuf,
        /// rustls' message.
        reason: String,
    },
    /// The key does not belong to the certificate.
    #[error("{}: private key does not match the certificate in {}", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// Client authentication is on but no CA bundle is configured.
    #[error(
        "client certificate authentication is {mode} but no client CA bundle is configured \
         (server certificate {})",
        cert.display()
    )]
    NoClientCa {
        /// `required` or `optional`.
        mode: &'static str,
        /// The listener's certificate file, to say which listener.
        cert: PathBuf,
    },
    /// A CA bundle holds no certificate.
    #[error(
        "{}: client CA bundle holds no PEM certificate (\"-----BEGIN CERTIFICATE-----\")",
        path.display()
    )]
    EmptyCaBundle {
        /// The file.
        path: PathBuf,
    },
    /// A CA certificate cannot be a trust anchor.
    #[error("{}: certificate #{index} is not usable as a client CA: {reason}", path.display())]
    BadCa {
        /// The file.
        path: PathBuf,
        /// 1-based position in the file.
        index: usize,
        /// Why.
        reason: String,
    },
    /// A CRL file holds no CRL.
    #[error(
        "{}: no CRL found (expected PEM \"-----BEGIN X509 CRL-----\" or one DER CRL)",
        path.display()
    )]
    NoCrl {
        /// The file.
        path: PathBuf,
    },
    /// A CRL does not parse.
    #[error("{}: CRL is not usable: {reason}", path.display())]
    BadCrl {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The verifier or config could not be built (reported with the certificate file to say
    /// which listener).
    #[error("{}: cannot build the TLS configuration: {reason}", cert.display())]
    Build {
        /// The listener's certificate file.
        cert: PathBuf,
        /// rustls' message.
        reason: String,
    },
}

/// Everything a listener needs, loaded and checked.
pub struct TlsMaterial {
    certified_key: Arc<CertifiedKey>,
    verifier: Option<Arc<dyn ClientCertVerifier>>,
    hint_subjects: Vec<DistinguishedName>,
    server_subject: String,
    server_not_after_unix: i64,
    client_ca_subjects: Vec<String>,
    crl_count: usize,
    server_digest: [u8; 32],
    trust_digest: [u8; 32],
    refuse_in: RefuseIn,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("server_subject", &self.server_subject)
            .field("server_not_after_unix", &self.server_not_after_unix)
            .field("client_ca_subjects", &self.client_ca_subjects)
            .field("crl_count", &self.crl_count)
            .field("client_auth", &self.verifier.is_some())
            .finish_non_exhaustive()
    }
}

impl TlsMaterial {
    /// Where unacceptable client certificates are refused.
    pub fn refuse_in(&self) -> RefuseIn {
        self.refuse_in
    }

    /// The server's certificate chain and signing key.
    pub fn certified_key(&self) -> &Arc<CertifiedKey> {
        &self.certified_key
    }

    /// The client-certificate verifier; `None` when client authentication is off.
    pub fn client_verifier(&self) -> Option<&Arc<dyn ClientCertVerifier>> {
        self.verifier.as_ref()
    }

    /// Subject of the server certificate (RFC 4514).
    pub fn server_subject(&self) -> &str {
        &self.server_subject
    }

    /// notAfter of the server (leaf) certificate, Unix seconds — for logs and an expiry metric.
    pub fn server_not_after_unix(&self) -> i64 {
        self.server_not_after_unix
    }

    /// Subjects (RFC 4514) of the trusted client CAs, in file order.
    pub fn client_ca_subjects(&self) -> &[String] {
        &self.client_ca_subjects
    }

    /// Number of CRLs loaded.
    pub fn crl_count(&self) -> usize {
        self.crl_count
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Every certificate of a PEM file, each checked to parse as X.509 (possibly none). The one
/// PEM certificate reader of the workspace (listener material here, upstream material and the
/// client commands in the binary).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let data = read(path)?;
    let mut certs = Vec::new();
    for item in rustls_pemfile::certs(&mut data.as_slice()) {
        let cert = item.map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        if let Err(e) = x509_parser::parse_x509_certificate(cert.as_ref()) {
            return Err(TlsError::BadCertificate {
                path: path.to_path_buf(),
                index: certs.len() + 1,
                reason: e.to_string(),
            });
        }
        certs.push(cert);
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let data = read(path)?;
    match rustls_pemfile::private_key(&mut data.as_slice()) {
        Ok(Some(key)) => Ok(key),
        Ok(None) => Err(TlsError::NoPrivateKey {
            path: path.to_path_buf(),
        }),
        Err(e) => Err(TlsError::Pem {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

fn read_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let data = read(path)?;
    let looks_pem = data.windows(10).any(|w| w == b"-----BEGIN");
    if !looks_pem {
        if data.first() == Some(&0x30) {
            return Ok(vec![CertificateRevocationListDer::from(data)]);
        }
        return Err(TlsError::NoCrl {
            path: path.to_path_buf(),
        });
    }
    let mut crls = Vec::new();
    for item in rustls_pemfile::crls(&mut data.as_slice()) {
        crls.push(item.map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?);
    }
    if crls.is_empty() {
        return Err(TlsError::NoCrl {
            path: path.to_path_buf(),
        });
    }
    Ok(crls)
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn digest_parts<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    h.finalize().into()
}

/// Reads and checks every file of a listener: the certificate chain and key (which must
/// match), and unless client authentication is off, the CA bundles and CRLs, from which the
/// client-certificate verifier is built.
pub fn load_material(files: &TlsFiles) -> Result<TlsMaterial, TlsError> {
    let provider = provider();

    // Server certificate and key.
    let certs = read_certs(&files.cert)?;
    let Some(leaf) = certs.first() else {
        return Err(TlsError::NoCertificate {
            path: files.cert.clone(),
        });
    };
    let (server_subject, server_not_after_unix) = {
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| {
            TlsError::BadCertificate {
                path: files.cert.clone(),
                index: 1,
                reason: e.to_string(),
            }
        })?;
        let validity = parsed.validity();
        let now = now_unix();
        if validity.not_after.timestamp() < now {
            log::warn!(
                "{}: server certificate expired at {}",
                files.cert.display(),
                validity.not_after
            );
        } else if validity.not_before.timestamp() > now {
            log::warn!(
                "{}: server certificate is not valid before {}",
                files.cert.display(),
                validity.not_before
            );
        }
        let subject = dn_from_der(parsed.subject().as_raw()).unwrap_or_default();
        (subject, validity.not_after.timestamp())
    };
    let key_der = read_key(&files.key)?;
    let key_digest = digest_parts([key_der.secret_der()]);
    let signing_key = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| TlsError::BadPrivateKey {
            path: files.key.clone(),
            reason: e.to_string(),
        })?;
    let server_digest = digest_parts(
        certs
            .iter()
            .map(|c| c.as_ref())
            .chain([key_digest.as_slice()]),
    );
    let certified_key = CertifiedKey::new(certs, signing_key);
    match certified_key.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            log::debug!(
                "{}: cannot compare the key with the certificate for this key type",
                files.key.display()
            );
        }
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(TlsError::KeyMismatch {
                cert: files.cert.clone(),
                key: files.key.clone(),
            })
        }
        Err(e) => {
            return Err(TlsError::BadCertificate {
                path: files.cert.clone(),
                index: 1,
                reason: e.to_string(),
            })
        }
    }

    let mut material = TlsMaterial {
        certified_key: Arc::new(certified_key),
        verifier: None,
        hint_subjects: Vec::new(),
        server_subject,
        server_not_after_unix,
        client_ca_subjects: Vec::new(),
        crl_count: 0,
        server_digest,
        trust_digest: [0; 32],
        refuse_in: files.refuse_in,
    };
    if files.client_auth == ClientAuth::None {
        if !files.client_ca.is_empty() || !files.crl.is_empty() {
            log::debug!(
                "{}: client authentication is off; client CA bundles and CRLs are not loaded",
                files.cert.display()
            );
        }
        return Ok(material);
    }
    if files.client_ca.is_empty() {
        return Err(TlsError::NoClientCa {
            mode: files.client_auth.as_str(),
            cert: files.cert.clone(),
        });
    }

    // Client CAs.
    let mut roots = RootCertStore::empty();
    let mut trust_parts: Vec<Vec<u8>> = Vec::new();
    let mut ca_raw_subjects: Vec<Vec<u8>> = Vec::new();
    for path in &files.client_ca {
        let certs = read_certs(path)?;
        if certs.is_empty() {
            return Err(TlsError::EmptyCaBundle { path: path.clone() });
        }
        for (i, cert) in certs.into_iter().enumerate() {
            if let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) {
                let is_ca = matches!(parsed.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
                let subject = dn_from_der(parsed.subject().as_raw()).unwrap_or_default();
                if !is_ca {
                    log::warn!(
                        "{}: certificate #{} ({subject}) is not marked as a CA; \
                         trusting it anyway as a client CA",
                        path.display(),
                        i + 1
                    );
                }
                if parsed.validity().not_after.timestamp() < now_unix() {
                    log::warn!(
                        "{}: client CA #{} ({subject}) expired at {}",
                        path.display(),
                        i + 1,
                        parsed.validity().not_after
                    );
                }
                ca_raw_subjects.push(parsed.subject().as_raw().to_vec());
                material.client_ca_subjects.push(subject);
            }
            trust_parts.push(cert.as_ref().to_vec());
            roots.add(cert).map_err(|e| TlsError::BadCa {
                path: path.clone(),
                index: i + 1,
                reason: e.to_string(),
            })?;
        }
    }
    let roots = Arc::new(roots);

    // CRLs: each file is checked on its own so an error names it.
    let mut all_crls = Vec::new();
    for path in &files.crl {
        let crls = read_crls(path)?;
        for crl in &crls {
            match x509_parser::parse_x509_crl(crl.as_ref()) {
                Ok((_, parsed)) => {
                    let issuer = parsed.issuer();
                    if !ca_raw_subjects.iter().any(|s| s == issuer.as_raw()) {
                        log::info!(
                            "{}: CRL issuer {} is not in the client CA bundles; it only \
                             applies to intermediates that clients send",
                            path.display(),
                            dn_from_der(issuer.as_raw()).unwrap_or_default()
                        );
                    }
                    if let Some(next) = parsed.next_update() {
                        if next.timestamp() < now_unix() {
                            log::warn!(
                                "{}: CRL of {} is past its nextUpdate ({next}); it is still \
                                 used, but a fresher one should be installed",
                                path.display(),
                                dn_from_der(issuer.as_raw()).unwrap_or_default()
                            );
                        }
                    }
                }
                Err(e) => {
                    return Err(TlsError::BadCrl {
                        path: path.clone(),
                        reason: e.to_string(),
                    })
                }
            }
        }
        WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .with_crls(crls.iter().cloned())
            .build()
            .map_err(|e| TlsError::BadCrl {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        trust_parts.extend(crls.iter().map(|c| c.as_ref().to_vec()));
        all_crls.extend(crls);
    }
    material.crl_count = all_crls.len();
    let policy = format!(
        "{:?}/{:?}/{}",
        files.client_auth, files.crl_scope, files.allow_unknown_revocation
    );
    material.trust_digest = digest_parts(
        trust_parts
            .iter()
            .map(|p| p.as_slice())
            .chain([policy.as_bytes()]),
    );

    let mut builder =
        WebPkiClientVerifier::builder_with_provider(roots, provider).with_crls(all_crls);
    if files.crl_scope == CrlScope::EndEntity {
        builder = builder.only_check_end_entity_revocation();
    }
    if files.allow_unknown_revocation {
        builder = builder.allow_unknown_revocation_status();
    }
    if files.client_auth == ClientAuth::Optional {
        builder = builder.allow_unauthenticated();
    }
    let verifier = builder.build().map_err(|e| TlsError::Build {
        cert: files.cert.clone(),
        reason: e.to_string(),
    })?;
    material.hint_subjects = verifier.root_hint_subjects().to_vec();
    material.verifier = Some(verifier);
    Ok(material)
}

/// Loads everything and throws it away: the check behind `modgate check`.
pub fn validate(files: &TlsFiles) -> Result<(), TlsError> {
    load_material(files).map(|_| ())
}

/// What a successful reload loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Generation now in force (the first load is 1).
    pub generation: u64,
    /// Subject of the server certificate.
    pub server_subject: String,
    /// notAfter of the server certificate, Unix seconds.
    pub server_not_after_unix: i64,
    /// Subjects of the trusted client CAs.
    pub client_ca_subjects: Vec<String>,
    /// Number of CRLs.
    pub crl_count: usize,
    /// Whether the server certificate chain or key differs from before.
    pub server_cert_changed: bool,
    /// Whether client CAs, CRLs or their policy differ from before.
    pub client_trust_changed: bool,
}

/// Distinct hint lists served so far: an append-only chain owned by the [`ReloadableTls`], so
/// `root_hint_subjects` can hand out references that live as long as the verifier.
struct HintNode {
    subjects: Vec<DistinguishedName>,
    next: OnceLock<Box<HintNode>>,
}

/// How many times the CA hint list may change before the verifier stops sending hints (see the
/// module documentation).
pub const MAX_HINT_CHANGES: usize = 64;

struct HintLog {
    head: HintNode,
    changes: AtomicUsize,
    exhausted: AtomicBool,
}

impl HintLog {
    fn new(subjects: Vec<DistinguishedName>) -> HintLog {
        HintLog {
            head: HintNode {
                subjects,
                next: OnceLock::new(),
            },
            changes: AtomicUsize::new(0),
            exhausted: AtomicBool::new(false),
        }
    }

    fn tail(&self) -> &HintNode {
        let mut node = &self.head;
        while let Some(next) = node.next.get() {
            node = next;
        }
        node
    }

    fn latest(&self) -> &[DistinguishedName] {
        if self.exhausted.load(Ordering::Acquire) {
            return &[];
        }
        &self.tail().subjects
    }

    /// Records the hint list of new material. Called with the reload lock held.
    fn push(&self, subjects: &[DistinguishedName]) {
        let tail = self.tail();
        let same = tail.subjects.len() == subjects.len()
            && tail
                .subjects
                .iter()
                .zip(subjects)
                .all(|(a, b)| a.as_ref() == b.as_ref());
        if same {
            return;
        }
        if self.changes.load(Ordering::Acquire) >= MAX_HINT_CHANGES {
            if !self.exhausted.swap(true, Ordering::AcqRel) {
                log::info!(
                    "client CA hints changed more than {MAX_HINT_CHANGES} times; \
                     no longer sending CA hints to clients (until restart)"
                );
            }
            return;
        }
        let node = Box::new(HintNode {
            subjects: subjects.to_vec(),
            next: OnceLock::new(),
        });
        if tail.next.set(node).is_ok() {
            self.changes.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// Material loaded by [`ReloadableTls::prepare`], not yet in force.
pub struct PreparedTls {
    files: TlsFiles,
    material: TlsMaterial,
}

/// TLS material that can be replaced while the server runs.
pub struct ReloadableTls {
    files: ArcSwap<TlsFiles>,
    current: ArcSwap<TlsMaterial>,
    generation: AtomicU64,
    reload_lock: Mutex<()>,
    hints: HintLog,
}

impl std::fmt::Debug for ReloadableTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadableTls")
            .field("files", &self.files)
            .field("generation", &self.generation())
            .field("current", &*self.current.load())
            .finish_non_exhaustive()
    }
}

impl ReloadableTls {
    /// Loads the files (generation 1). Takes `TlsFiles` or `&TlsFiles`.
    pub fn new(files: impl Into<TlsFiles>) -> Result<Arc<ReloadableTls>, TlsError> {
        let files = files.into();
        let material = load_material(&files)?;
        let hints = HintLog::new(material.hint_subjects.clone());
        Ok(Arc::new(ReloadableTls {
            files: ArcSwap::from_pointee(files),
            current: ArcSwap::from_pointee(material),
            generation: AtomicU64::new(1),
            reload_lock: Mutex::new(()),
            hints,
        }))
    }

    /// The files this reads (and the client-authentication settings) in force.
    pub fn files(&self) -> Arc<TlsFiles> {
        self.files.load_full()
    }

    /// The material in force.
    pub fn current(&self) -> Arc<TlsMaterial> {
        self.current.load_full()
    }

    /// How many times material was loaded successfully (1 after [`ReloadableTls::new`]).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// notAfter of the server certificate in force, Unix seconds.
    pub fn server_not_after_unix(&self) -> i64 {
        self.current.load().server_not_after_unix
    }

    /// Re-reads every file and, only if all of it loads, makes it the material for new
    /// handshakes. On error the material in force is unchanged and the error is returned for
    /// the caller to log.
    pub fn reload(&self) -> Result<ReloadSummary, TlsError> {
        let _serial = self.reload_lock.lock().unwrap_or_else(|e| e.into_inner());
        let files = self.files.load_full();
        let material = load_material(&files)?;
        Ok(self.install(None, material))
    }

    /// Loads material from other files or client-authentication settings (a configuration
    /// reload), without putting it in force: [`ReloadableTls::commit`] does that, so a reload
    /// that fails elsewhere changes nothing here.
    pub fn prepare(&self, files: &TlsFiles) -> Result<PreparedTls, TlsError> {
        Ok(PreparedTls {
            files: files.clone(),
            material: load_material(files)?,
        })
    }

    /// Puts prepared material (and its files, for later reloads) in force for new handshakes.
    pub fn commit(&self, prepared: PreparedTls) -> ReloadSummary {
        let _serial = self.reload_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.install(Some(prepared.files), prepared.material)
    }

    fn install(&self, files: Option<TlsFiles>, material: TlsMaterial) -> ReloadSummary {
        let old = self.current.load_full();
        let summary = ReloadSummary {
            generation: 0,
            server_subject: material.server_subject.clone(),
            server_not_after_unix: material.server_not_after_unix,
            client_ca_subjects: material.client_ca_subjects.clone(),
            crl_count: material.crl_count,
            server_cert_changed: material.server_digest != old.server_digest,
            client_trust_changed: material.trust_digest != old.trust_digest,
        };
        self.hints.push(&material.hint_subjects);
        if let Some(files) = files {
            self.files.store(Arc::new(files));
        }
        self.current.store(Arc::new(material));
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        ReloadSummary {
            generation,
            ..summary
        }
    }

    /// Verifies a client certificate chain (leaf first) with the verifier of the material in
    /// force now, at `now`: the trust anchors, CRLs and validity a fresh handshake would be
    /// judged by. rustls does not run the verifier again when a client resumes a session (a
    /// TLS 1.2 session ID or a TLS 1.3 ticket), so whoever serves a resumed connection, or
    /// keeps one open across a reload, asks this instead.
    pub fn verify_client_chain(
        &self,
        chain: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        let Some((leaf, intermediates)) = chain.split_first() else {
            return Err(rustls::Error::NoCertificatesPresented);
        };
        let material = self.current.load();
        match &material.verifier {
            Some(v) => v.verify_client_cert(leaf, intermediates, now).map(|_| ()),
            None => Err(not_configured()),
        }
    }

    /// A certificate resolver that answers every ClientHello with the current certificate.
    pub fn cert_resolver(self: &Arc<Self>) -> Arc<dyn ResolvesServerCert> {
        Arc::new(CurrentCert(self.clone()))
    }

    /// A client-certificate verifier that delegates to the current material's verifier, so
    /// new handshakes see rotated CAs and CRLs and a changed `client_auth` mode (with client
    /// authentication off it asks for no certificate).
    pub fn client_verifier(self: &Arc<Self>) -> Arc<dyn ClientCertVerifier> {
        Arc::new(CurrentClientVerifier(self.clone()))
    }

    /// A complete rustls server config (ring provider, TLS 1.2 and 1.3) using the resolver and
    /// verifier above — for tests and for servers not built on Pingora.
    pub fn server_config(self: &Arc<Self>) -> Result<rustls::ServerConfig, TlsError> {
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Build {
                cert: self.files.load().cert.clone(),
                reason: e.to_string(),
            })?;
        let builder = builder.with_client_cert_verifier(self.client_verifier());
        Ok(builder.with_cert_resolver(self.cert_resolver()))
    }
}

/// Why a client certificate is not accepted, in the words a client is told: `revoked`,
/// `expired`, `not yet valid`, `unknown issuer`, ...
pub fn refusal_reason(e: &rustls::Error) -> &'static str {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::Revoked => "revoked",
            C::Expired | C::ExpiredContext { .. } => "expired",
            C::NotValidYet | C::NotValidYetContext { .. } => "not yet valid",
            C::UnknownIssuer => "unknown issuer",
            C::UnknownRevocationStatus => "unknown revocation status",
            C::ExpiredRevocationList | C::ExpiredRevocationListContext { .. } => {
                "revocation list expired"
            }
            C::BadSignature => "bad signature",
            C::InvalidPurpose | C::InvalidPurposeContext { .. } => "not for client authentication",
            C::BadEncoding => "malformed",
            _ => "not accepted",
        },
        rustls::Error::NoCertificatesPresented => "no certificate",
        _ => "not accepted",
    }
}

#[derive(Debug)]
struct CurrentCert(Arc<ReloadableTls>);

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current.load().certified_key.clone())
    }
}

#[derive(Debug)]
struct CurrentClientVerifier(Arc<ReloadableTls>);

fn not_configured() -> rustls::Error {
    rustls::Error::General("client certificate verification is not configured".into())
}

impl CurrentClientVerifier {
    /// Runs `f` on the verifier of the material in force (`none` if there is none).
    fn with<T>(&self, f: impl FnOnce(&dyn ClientCertVerifier) -> T, none: impl FnOnce() -> T) -> T {
        let material = self.0.current.load();
        match &material.verifier {
            Some(v) => f(v.as_ref()),
            None => none(),
        }
    }
}

impl CurrentClientVerifier {
    fn refuse_in(&self) -> RefuseIn {
        self.0.current.load().refuse_in
    }
}

impl ClientCertVerifier for CurrentClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.with(|v| v.offer_client_auth(), || false)
    }

    /// With [`RefuseIn::Http`] a missing certificate does not fail the handshake: the request
    /// is refused instead (the material's own verifier still says whether one is required).
    fn client_auth_mandatory(&self) -> bool {
        self.refuse_in() == RefuseIn::Handshake
            && self.with(|v| v.client_auth_mandatory(), || false)
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.hints.latest()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verdict = self.with(
            |v| v.verify_client_cert(end_entity, intermediates, now),
            || Err(not_configured()),
        );
        match verdict {
            // Deferred to the first request, which verifies the chain again and refuses it
            // with the reason; the handshake signature below is still checked.
            Err(e) if self.refuse_in() == RefuseIn::Http && self.offer_client_auth() => {
                log::debug!(
                    "client certificate not accepted ({}); refused at the first request",
                    refusal_reason(&e)
                );
                Ok(ClientCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.with(
            |v| v.verify_tls12_signature(message, cert, dss),
            || Err(not_configured()),
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.with(
            |v| v.verify_tls13_signature(message, cert, dss),
            || Err(not_configured()),
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.with(|v| v.supported_verify_schemes(), Vec::new)
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.with(|v| v.requires_raw_public_keys(), || false)
    }
}

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tests;
