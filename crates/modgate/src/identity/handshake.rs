//! The client certificate of a TLS connection: kept from the handshake, judged again against the
//! listener's material in force, and read back for each request.

use std::any::Any;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use modgate_identity::{cert_from_der, CertIdentity, ReloadableTls};
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::TlsRef;
use pingora::proxy::Session;
use rustls::pki_types::{CertificateDer, UnixTime};

use super::IdentityError;

/// The client certificate chain of one TLS connection, parsed once at the end of the handshake
/// and shared by every request (and HTTP/2 stream) on that connection.
#[derive(Debug)]
pub struct PeerCert {
    /// DER, leaf first.
    pub chain: Vec<Vec<u8>>,
    pub identity: CertIdentity,
    /// The last judgement of this chain against the listener's material (see
    /// [`PeerCert::recheck`]).
    check: Mutex<CertCheck>,
}

/// A judgement of a connection's certificate, valid while the listener's material keeps the
/// generation it was made with.
#[derive(Debug, Default)]
struct CertCheck {
    /// 0: never judged here.
    generation: u64,
    refusal: Option<&'static str>,
}

impl PeerCert {
    pub fn new(chain: Vec<Vec<u8>>, identity: CertIdentity) -> PeerCert {
        PeerCert {
            chain,
            identity,
            check: Mutex::new(CertCheck::default()),
        }
    }

    /// Judges the connection's certificate with the listener material in force now: its CAs,
    /// its CRLs and the clock. rustls verifies a chain only on a full handshake; a resumed TLS
    /// 1.2 session or TLS 1.3 ticket carries the chain of the handshake it came from, and an
    /// open connection outlives reloads. So the chain is verified again on the first request of
    /// every connection (resumed or not) and whenever the material has changed or the
    /// certificate's validity has run out since it was last judged; otherwise the judgement is
    /// reused (one lock per request, shared by the HTTP/2 streams of the connection).
    pub fn recheck(&self, tls: &ReloadableTls) -> Result<(), &'static str> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let within = i64::try_from(now)
            .is_ok_and(|n| n >= self.identity.not_before_unix && n <= self.identity.not_after_unix);
        let mut check = self.check.lock().unwrap_or_else(|e| e.into_inner());
        // Read before verifying: a reload that lands during the verification makes the next
        // request verify again.
        let generation = tls.generation();
        if check.generation == generation && (within || check.refusal.is_some()) {
            return check.refusal.map_or(Ok(()), Err);
        }
        let chain: Vec<CertificateDer<'_>> = self
            .chain
            .iter()
            .map(|c| CertificateDer::from(c.as_slice()))
            .collect();
        let result = tls.verify_client_chain(
            &chain,
            UnixTime::since_unix_epoch(std::time::Duration::from_secs(now)),
        );
        check.generation = generation;
        check.refusal = result
            .err()
            .map(|e| modgate_identity::tls::refusal_reason(&e));
        check.refusal.map_or(Ok(()), Err)
    }
}

/// Keeps the verified peer chain of every handshake (rustls has already verified it against the
/// listener's CAs and CRLs by the time this runs).
pub struct HandshakeCapture;

#[async_trait]
impl TlsAccept for HandshakeCapture {
    async fn handshake_complete_callback(
        &self,
        tls: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        let chain = tls.peer_cert_chain_der()?;
        let leaf = chain.first()?;
        match cert_from_der(leaf.as_ref()) {
            // Pingora's `SslDigestExtension::get::<T>` downcasts the stored value itself, so
            // store an `Arc<PeerCert>` (not a bare `PeerCert`) for `peer_cert` to clone cheaply.
            Ok(identity) => Some(Arc::new(Arc::new(PeerCert::new(
                chain.iter().map(|c| c.as_ref().to_vec()).collect(),
                identity,
            )))),
            Err(e) => {
                // A certificate was presented and cannot be read: never an identity, and never
                // anonymous either (the connection's requests are refused).
                log::info!("client certificate presented but not parsed: {e}");
                Some(Arc::new(Arc::new(UnparsedCert)))
            }
        }
    }
}

/// A connection whose client presented a certificate that does not parse as X.509.
pub struct UnparsedCert;

/// Why the connection a request arrived on may not be served at all, judged by its client
/// certificate and the listener material in force: a certificate that does not parse or no
/// longer verifies (revoked, expired, its CA removed: the handshake may have deferred the
/// verdict, or a resumed session or a reload may have outlived it), or none where one is
/// required. Checked before anything is answered, health and metrics endpoints included.
pub fn connection_refusal(session: &Session, tls: Option<&ReloadableTls>) -> Option<IdentityError> {
    let tls = tls?;
    let ssl = session.digest()?.ssl_digest.as_ref()?;
    if ssl.extension.get::<Arc<UnparsedCert>>().is_some() {
        return Some(IdentityError::CertificateRefused {
            subject: "(unreadable)".into(),
            reason: "not a readable X.509 certificate",
        });
    }
    match ssl.extension.get::<Arc<PeerCert>>() {
        Some(pc) => pc
            .recheck(tls)
            .err()
            .map(|reason| IdentityError::CertificateRefused {
                subject: pc.identity.subject_dn.clone(),
                reason,
            }),
        None => tls
            .current()
            .client_verifier()
            .is_some_and(|v| v.client_auth_mandatory())
            .then_some(IdentityError::CertificateRequired),
    }
}

/// The peer certificate of the connection a request arrived on, if any.
pub fn peer_cert(session: &Session) -> Option<Arc<PeerCert>> {
    let digest = session.digest()?;
    let ssl = digest.ssl_digest.as_ref()?;
    ssl.extension.get::<Arc<PeerCert>>().cloned()
}
