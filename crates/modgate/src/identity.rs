//! Who is asking, for one request: the verified TLS peer certificate (kept from the handshake),
//! a trusted front proxy's forwarded certificate, `.netrc` basic credentials or a bearer token —
//! turned into the policy's [`Principal`].
//!
//! Spoofing is impossible by construction: every header that could carry a client identity is
//! removed from the request before anything reads it, except that a peer listed in
//! `trusted_proxies` has its forwarded certificate read first (and removed too).

use std::any::Any;
use std::net::IpAddr;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use http::HeaderName;
use modgate_identity::credentials::Presented;
use modgate_identity::forward::{parse_forwarded_cert, Verify};
use modgate_identity::{
    AuthFailure, Authenticated, CertIdentity, CheckLimiter, CheckLimits, CidrSet, Refused,
    ReloadableTls, Scope,
};
use modgate_policy::{CertFields, Principal, PrincipalSource};
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::TlsRef;
use pingora::proxy::Session;
use rustls::pki_types::{CertificateDer, UnixTime};

use crate::config::{CertFormat, ForwardIdentityConfig, ForwardedInput};

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
        match CertIdentity::from_der(leaf.as_ref()) {
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

/// How the identity of a request was established, for headers and audit records.
#[derive(Debug, Clone)]
pub struct RequestIdentity {
    pub principal: Principal,
    /// The certificate the identity rests on (TLS peer or trusted forwarded header).
    pub cert: Option<Arc<PeerCert>>,
    /// Client-certificate verification result to report upstream.
    pub verify: VerifyState,
    /// When a certificate and credentials were both presented: each as `<source>:<name>`, and
    /// the one(s) through which the deciding rule applied (see [`attribute`]).
    pub principals: Vec<String>,
    /// The labels of `principals` the deciding rule applied through.
    pub matched: Vec<String>,
    /// Credentials that were presented and refused (the request was then refused too): what
    /// the audit record names besides the principal, which they never became.
    pub attempt: Option<Attempt>,
}

impl Default for RequestIdentity {
    fn default() -> Self {
        RequestIdentity {
            principal: Principal::anonymous(),
            cert: None,
            verify: VerifyState::None,
            principals: Vec::new(),
            matched: Vec::new(),
            attempt: None,
        }
    }
}

/// Credentials a request presented that were not accepted, as far as they may be recorded: the
/// user name of Basic credentials; of a bearer token, only that there was one. Never a
/// password or a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// Basic credentials for this user name (cut to [`Attempt::MAX_USER`] characters).
    User(String),
    /// A bearer token.
    Token,
}

impl Attempt {
    /// The longest attempted user name recorded; longer ones are cut (and end in `…`).
    pub const MAX_USER: usize = 128;

    /// What a set of presented credentials may record.
    pub fn of(presented: &Presented) -> Attempt {
        match presented {
            Presented::Basic { user, .. } => {
                let mut name: String = user.chars().take(Attempt::MAX_USER).collect();
                if user.chars().count() > Attempt::MAX_USER {
                    name.push('…');
                }
                Attempt::User(name)
            }
            Presented::Bearer { .. } => Attempt::Token,
        }
    }

    /// The source and name the audit record gives for a request that presented nothing else.
    pub fn audit_source_and_name(&self) -> (&'static str, &str) {
        match self {
            Attempt::User(name) => (PrincipalSource::Basic.as_str(), name),
            Attempt::Token => (PrincipalSource::Token.as_str(), "(unknown token)"),
        }
    }

    /// `<source>:<name>`, as the audit record's `principals` lists it beside a certificate.
    pub fn label(&self) -> String {
        let (source, name) = self.audit_source_and_name();
        format!("{source}:{name}")
    }
}

/// A request whose credentials or certificate did not establish an identity: why, and what it
/// presented, for the audit record.
#[derive(Debug)]
pub struct Unresolved {
    pub error: IdentityError,
    /// The identity as far as it went: a verified certificate's principal (else anonymous),
    /// with the refused credentials in [`RequestIdentity::attempt`].
    pub presented: RequestIdentity,
}

impl RequestIdentity {
    /// `<source>:<name>` for headers and logs: the principal the decision was granted
    /// through when exactly one of several was, else the request's primary one.
    pub fn label(&self) -> String {
        match self.matched.as_slice() {
            [one] => one.clone(),
            _ => format!("{}:{}", self.principal.source.as_str(), self.principal.name),
        }
    }
}

/// Everything that tells one identity from another, for per-identity cache keys: two
/// certificates with the same common name, or a certificate with and without a password, are
/// different identities.
pub fn cache_identity(p: &Principal) -> String {
    let fingerprint = p.cert.as_ref().map(|c| c.fingerprint_sha256.as_str());
    format!(
        "{}\0{}\0{}\0{}\0{}",
        p.source.as_str(),
        p.name,
        fingerprint.unwrap_or(""),
        p.user.as_deref().unwrap_or(""),
        p.token.as_deref().unwrap_or("")
    )
}

/// The certificate part and the credential part of a principal that holds both, each labelled
/// `<source>:<name>`; empty when it holds only one kind.
pub fn principal_parts(p: &Principal) -> Vec<(String, Principal)> {
    let credential = match (&p.user, &p.token) {
        (Some(u), _) => Some((PrincipalSource::Basic, u.clone())),
        (None, Some(t)) => Some((PrincipalSource::Token, t.clone())),
        (None, None) => None,
    };
    let (Some(cert), Some((source, name))) = (&p.cert, credential) else {
        return Vec::new();
    };
    let cert_part = Principal {
        source: p.source,
        name: p.name.clone(),
        cert: Some(cert.clone()),
        user: None,
        token: None,
        groups: Vec::new(),
    };
    let cred_part = Principal {
        source,
        name: name.clone(),
        cert: None,
        user: p.user.clone(),
        token: p.token.clone(),
        groups: p.groups.clone(),
    };
    vec![
        (format!("{}:{}", p.source.as_str(), p.name), cert_part),
        (format!("{}:{name}", source.as_str()), cred_part),
    ]
}

/// For a request presenting a certificate and credentials, records both and which of them the
/// decision came through: a part matched when it alone is decided by the same rule.
pub fn attribute(
    id: &mut RequestIdentity,
    decision: &modgate_policy::Decision,
    decide: impl Fn(&Principal) -> modgate_policy::Decision,
) {
    let parts = principal_parts(&id.principal);
    id.principals = parts.iter().map(|(label, _)| label.clone()).collect();
    id.matched = parts
        .iter()
        .filter(|(_, p)| {
            let d = decide(p);
            d.rule == decision.rule && d.effect == decision.effect
        })
        .map(|(label, _)| label.clone())
        .collect();
}

/// The `X-SSL-Client-Verify` value to report upstream.
#[derive(Debug, Clone, Default)]
pub enum VerifyState {
    #[default]
    None,
    Success,
    Failed(String),
}

impl VerifyState {
    pub fn header_value(&self) -> String {
        match self {
            VerifyState::None => Verify::None.header_value(),
            VerifyState::Success => Verify::Success.header_value(),
            VerifyState::Failed(r) => Verify::Failed(r.clone()).header_value(),
        }
    }
}

/// Why a request could not be given an identity.
#[derive(Debug)]
pub enum IdentityError {
    /// Credentials were presented but do not check out.
    BadCredentials(AuthFailure),
    /// The Authorization header is not Basic or Bearer, or is malformed.
    Malformed(String),
    /// The connection's client certificate no longer verifies against the listener's material
    /// (revoked, expired, its CA removed) although the TLS session still carries it.
    CertificateRefused {
        subject: String,
        reason: &'static str,
    },
    /// The listener now requires a client certificate (a reload set `client_auth: required`)
    /// and this connection, opened before, has none.
    CertificateRequired,
    /// Too many failed password checks from this address or for this user name.
    Throttled { scope: Scope, retry_after: Duration },
    /// Password checks are saturated; the request could not get a turn in time.
    Busy,
}

impl IdentityError {
    /// Metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            IdentityError::BadCredentials(f) => f.as_str(),
            IdentityError::Malformed(_) => "malformed",
            IdentityError::CertificateRefused { .. } => "certificate_refused",
            IdentityError::CertificateRequired => "certificate_required",
            IdentityError::Throttled { .. } => "throttled",
            IdentityError::Busy => "busy",
        }
    }

    /// The text the client sees (never names which part was wrong beyond what is safe).
    pub fn message(&self) -> String {
        match self {
            IdentityError::BadCredentials(AuthFailure::NotConfigured) => {
                "credentials were sent but this gateway has no users or tokens configured".into()
            }
            IdentityError::BadCredentials(_) => "the credentials sent were not accepted".into(),
            IdentityError::Malformed(m) => format!("bad Authorization header: {m}"),
            IdentityError::CertificateRefused { subject, reason } => {
                format!("the client certificate {subject} is not accepted: {reason}")
            }
            IdentityError::CertificateRequired => "this listener requires a client certificate \
                 and none was presented (the go command cannot present one: use `modgate \
                 agent`; curl: --cert/--key)"
                .into(),
            IdentityError::Throttled { scope, retry_after } => format!(
                "too many failed credential checks {}; retry in {} s",
                match scope {
                    Scope::Source => "from this address",
                    Scope::User => "for this user name",
                },
                retry_after.as_secs().max(1)
            ),
            IdentityError::Busy => {
                "credential checks are saturated; retry shortly (or use a token)".into()
            }
        }
    }
}

/// Cert fields as the policy sees them.
pub fn cert_fields(c: &CertIdentity) -> CertFields {
    CertFields {
        subject_dn: c.subject_dn.clone(),
        cn: c.cn.clone(),
        o: c.o.clone(),
        ou: c.ou.clone(),
        san_dns: c.san_dns.clone(),
        san_email: c.san_email.clone(),
        san_uri: c.san_uri.clone(),
        spiffe: c.spiffe.clone(),
        fingerprint_sha256: c.fingerprint_sha256.clone(),
    }
}

/// Principal for a certificate.
pub fn cert_principal(c: &CertIdentity, source: PrincipalSource) -> Principal {
    Principal {
        source,
        name: c.display_name(),
        cert: Some(cert_fields(c)),
        user: None,
        token: None,
        groups: Vec::new(),
    }
}

/// Adds verified credentials to a principal (a certificate identity keeps its name and source;
/// the user or token and its groups are added for matching).
pub fn add_credentials(p: &mut Principal, a: &Authenticated) {
    use modgate_identity::CredentialKind;
    let anonymous = p.is_anonymous();
    match a.kind {
        CredentialKind::Basic => {
            p.user = Some(a.name.clone());
            if anonymous {
                p.source = PrincipalSource::Basic;
            }
        }
        CredentialKind::Token => {
            p.token = Some(a.name.clone());
            if anonymous {
                p.source = PrincipalSource::Token;
            }
        }
    }
    if anonymous {
        p.name = a.name.clone();
    }
    for g in &a.groups {
        if !p.groups.contains(g) {
            p.groups.push(g.clone());
        }
    }
}

/// What a listener needs to resolve identities.
pub struct IdentitySettings {
    pub trusted: CidrSet,
    pub forwarded: ForwardedInput,
    /// Every header name that could carry an identity; removed from every request.
    pub strip: Vec<HeaderName>,
}

impl IdentitySettings {
    fn is_identity_header(&self, name: &HeaderName) -> bool {
        self.strip.contains(name) || name.as_str().starts_with("x-ssl-client-")
    }
}

/// The value of a forwarded header that occurs exactly once. A proxy that appends its header
/// after one the client sent leaves two, and which is the proxy's cannot be known: neither is
/// believed.
fn single<'a>(headers: &'a http::HeaderMap, name: &HeaderName) -> Option<&'a http::HeaderValue> {
    let mut all = headers.get_all(name).iter();
    let first = all.next()?;
    if all.next().is_some() {
        log::warn!("trusted proxy sent {name} more than once; not used");
        return None;
    }
    Some(first)
}

/// Reads the forwarded certificate of a trusted proxy, if there is one and it says SUCCESS.
fn forwarded_identity(
    session: &Session,
    settings: &IdentitySettings,
) -> Option<(Arc<PeerCert>, VerifyState)> {
    let headers = &session.req_header().headers;
    let verify = single(headers, &settings.forwarded.verify.0)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    let cert = single(headers, &settings.forwarded.cert.0).and_then(|v| v.to_str().ok())?;
    if cert.is_empty() {
        return None;
    }
    if verify != Some("SUCCESS") {
        // The proxy did not vouch for it: the request is anonymous, as if no certificate came.
        log::debug!(
            "trusted proxy forwarded a certificate with verify result {:?}; not used",
            verify.unwrap_or("(none)")
        );
        return None;
    }
    match parse_forwarded_cert(cert)
        .and_then(|der| CertIdentity::from_der(&der).map(|id| PeerCert::new(vec![der], id)))
    {
        Ok(pc) => Some((Arc::new(pc), VerifyState::Success)),
        Err(e) => {
            log::warn!("trusted proxy forwarded a certificate that does not parse: {e}");
            None
        }
    }
}

/// A trusted proxy's `FAILED:<reason>` verification result, if it sent one.
fn forwarded_failure(session: &Session, settings: &IdentitySettings) -> Option<String> {
    let v = single(&session.req_header().headers, &settings.forwarded.verify.0)?
        .to_str()
        .ok()?
        .trim();
    v.strip_prefix("FAILED")
        .map(|r| r.trim_start_matches(':').trim().to_string())
}

/// Password hashes computed at once (each a bcrypt/argon2 verification on the blocking pool).
static VERIFY_PERMITS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

/// Per-source and per-user admission of password hashes, and the failure rate limit.
static LIMITER: LazyLock<CheckLimiter> =
    LazyLock::new(|| CheckLimiter::new(CheckLimits::default()));

/// Longest a request waits for its turn to have a password hashed.
const CHECK_WAIT: Duration = Duration::from_secs(5);

/// Releases an admitted password check, also when the request is dropped mid-check.
struct Running {
    ticket: Option<modgate_identity::Ticket>,
    failed: bool,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(t) = self.ticket.take() {
            LIMITER.finish(t, self.failed, Instant::now());
        }
    }
}

fn count_limited(reason: &str, scope: Scope) {
    if let Some(m) = crate::metrics::metrics() {
        m.checks_throttled
            .with_label_values(&[reason, scope.as_str()])
            .inc();
    }
}

/// A check that needs a password hash: admitted per source and per user name (waiting up to
/// [`CHECK_WAIT`] for a slot, refused at once when that source or name has failed too often),
/// then run on the blocking pool under the global bound.
async fn expensive_check(
    authenticator: Arc<modgate_identity::Authenticator>,
    presented: Presented,
    source: Option<IpAddr>,
) -> Result<Authenticated, IdentityError> {
    let user = match &presented {
        Presented::Basic { user, .. } => user.clone(),
        Presented::Bearer { .. } => String::new(),
    };
    let deadline = Instant::now() + CHECK_WAIT;
    let mut running = loop {
        match LIMITER.admit(source, &user, Instant::now()) {
            Ok(t) => {
                break Running {
                    ticket: Some(t),
                    failed: false,
                }
            }
            Err(Refused::Throttled { scope, retry_after }) => {
                count_limited("throttled", scope);
                return Err(IdentityError::Throttled { scope, retry_after });
            }
            Err(Refused::Busy(scope)) => {
                if Instant::now() >= deadline {
                    count_limited("busy", scope);
                    return Err(IdentityError::Busy);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    let remaining = deadline.saturating_duration_since(Instant::now());
    let _permit = match tokio::time::timeout(remaining, VERIFY_PERMITS.acquire()).await {
        Ok(Ok(p)) => p,
        Ok(Err(_)) => {
            return Err(IdentityError::Malformed(
                "credential checks are shut down".into(),
            ))
        }
        Err(_) => {
            count_limited("busy", Scope::Source);
            return Err(IdentityError::Busy);
        }
    };
    let result = tokio::task::spawn_blocking(move || authenticator.verify(&presented))
        .await
        .map_err(|e| IdentityError::Malformed(format!("credential check failed: {e}")))?;
    running.failed = result.is_err();
    result.map_err(IdentityError::BadCredentials)
}

/// Establishes the identity of a request and removes every identity-bearing header from it.
///
/// The connection's own client certificate is judged again with the listener's material in
/// force now (`tls`; see [`PeerCert::recheck`]): a certificate that no longer verifies fails the
/// request, whether it is the client's or a trusted proxy's.
///
/// A request from a `trusted_proxies` address has exactly the identity the proxy forwarded: its
/// forwarded certificate with `Verify: SUCCESS`, else none (anonymous, with a `FAILED:` result
/// passed on). The proxy's own TLS certificate only proves that it is the proxy.
///
/// Password hashes cost tens of milliseconds to check (on a cache miss), so the check runs on
/// the blocking pool, not on the proxy's event loop.
///
/// A refusal carries what the request presented ([`Unresolved::presented`]): a verified
/// certificate's identity and the user name of refused Basic credentials (of a refused token,
/// only that there was one), for the audit record.
///
/// The connection's certificate is taken as judged: the caller has run [`connection_refusal`]
/// (the proxy does, before anything else, so that health and metrics are covered too).
pub async fn resolve(
    session: &mut Session,
    settings: &IdentitySettings,
    authenticator: Arc<modgate_identity::Authenticator>,
) -> Result<RequestIdentity, Unresolved> {
    let client_ip: Option<IpAddr> = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip());
    let mut id = RequestIdentity::default();
    let peer = peer_cert(session);
    let trusted = client_ip.is_some_and(|ip| settings.trusted.contains(&ip));
    if trusted {
        if let Some((pc, verify)) = forwarded_identity(session, settings) {
            id.principal = cert_principal(&pc.identity, PrincipalSource::Forwarded);
            id.cert = Some(pc);
            id.verify = verify;
        } else if let Some(reason) = forwarded_failure(session, settings) {
            // The front proxy saw a certificate it could not verify: pass that on.
            id.verify = VerifyState::Failed(reason);
        }
    } else if let Some(pc) = peer {
        id.principal = cert_principal(&pc.identity, PrincipalSource::Certificate);
        id.cert = Some(pc);
        id.verify = VerifyState::Success;
    }

    let authorization = session
        .req_header()
        .headers
        .get(http::header::AUTHORIZATION)
        .map(|v| v.to_str().map(str::to_string));
    strip_identity_headers(session, settings);
    session
        .req_header_mut()
        .remove_header(&http::header::AUTHORIZATION);

    // With no users or tokens configured, credentials mean nothing here (a `.netrc` entry
    // meant for another service, say): the request stays anonymous rather than failing.
    let configured = authenticator.users().is_some() || authenticator.tokens().is_some();
    if let Some(value) = authorization.filter(|_| configured) {
        let parsed = value
            .map_err(|_| IdentityError::Malformed("not ASCII".into()))
            .and_then(|v| {
                modgate_identity::credentials::parse_authorization(&v)
                    .map_err(|e| IdentityError::Malformed(e.to_string()))
            });
        let presented = match parsed {
            Ok(p) => p,
            Err(error) => {
                return Err(Unresolved {
                    error,
                    presented: id,
                })
            }
        };
        let attempt = Attempt::of(&presented);
        // Tokens and recently verified passwords cost no hash and never wait; only password
        // hashes are admitted, bounded and rate limited.
        let checked = match authenticator.verify_cheap(&presented) {
            Some(r) => r.map_err(IdentityError::BadCredentials),
            None => expensive_check(authenticator, presented, client_ip).await,
        };
        match checked {
            Ok(authenticated) => add_credentials(&mut id.principal, &authenticated),
            Err(error) => {
                // Who the credentials claimed to be is recorded; they establish nothing.
                id.attempt = Some(attempt);
                return Err(Unresolved {
                    error,
                    presented: id,
                });
            }
        }
    }
    Ok(id)
}

/// Removes every header that could carry a client identity (any case, any count).
pub fn strip_identity_headers(session: &mut Session, settings: &IdentitySettings) {
    let names: Vec<HeaderName> = session
        .req_header()
        .headers
        .keys()
        .filter(|n| settings.is_identity_header(n))
        .cloned()
        .collect();
    for n in names {
        session.req_header_mut().remove_header(&n);
    }
}

/// Makes any text safe as a header value: printable ASCII is kept, everything else (controls,
/// non-ASCII) is percent-encoded.
fn header_safe(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The client-certificate and identity headers an upstream is configured to receive.
pub fn forward_headers(
    f: &ForwardIdentityConfig,
    id: &RequestIdentity,
    roles: &[String],
) -> Vec<(HeaderName, String)> {
    use modgate_identity::forward::{base64_der, escaped_pem, sans_header};
    let n = &f.names;
    let mut out = Vec::new();
    let encode = |der: &[u8]| match f.cert {
        CertFormat::Off => None,
        CertFormat::EscapedPem => Some(escaped_pem(der)),
        CertFormat::Base64Der => Some(base64_der(der)),
    };
    if f.verify {
        out.push((n.verify.0.clone(), id.verify.header_value()));
    }
    if let Some(pc) = &id.cert {
        let c = &pc.identity;
        if let Some(leaf) = pc.chain.first().and_then(|d| encode(d)) {
            out.push((n.cert.0.clone(), leaf));
        }
        if f.chain && pc.chain.len() > 1 {
            let chain: Vec<String> = pc.chain[1..].iter().filter_map(|d| encode(d)).collect();
            if !chain.is_empty() {
                out.push((n.chain.0.clone(), chain.join(",")));
            }
        }
        if f.dn {
            out.push((n.dn.0.clone(), header_safe(&c.subject_dn)));
        }
        if f.sans {
            let sans = sans_header(c);
            if !sans.is_empty() {
                out.push((n.sans.0.clone(), header_safe(&sans)));
            }
        }
        if f.fingerprint {
            out.push((n.fingerprint.0.clone(), c.fingerprint_sha256.clone()));
        }
        if f.serial {
            out.push((n.serial.0.clone(), c.serial_hex.clone()));
        }
    }
    if f.identity {
        out.push((n.identity.0.clone(), header_safe(&id.label())));
    }
    if f.roles && !roles.is_empty() {
        out.push((n.roles.0.clone(), header_safe(&roles.join(","))));
    }
    out
}

/// The identity `modgate explain` decides for: a certificate file, a user or a token name.
pub struct ExplainIdentity {
    pub cert: Option<std::path::PathBuf>,
    pub user: Option<String>,
    pub token_name: Option<String>,
    pub groups: Vec<String>,
}

impl ExplainIdentity {
    /// Builds the principal the proxy would see (groups come from the credential files).
    pub fn principal(
        &self,
        authenticator: &modgate_identity::Authenticator,
    ) -> Result<Principal, String> {
        let mut p = Principal::anonymous();
        if let Some(path) = &self.cert {
            let certs = crate::tls::read_certs(path)?;
            let leaf = certs
                .first()
                .ok_or_else(|| format!("{}: no certificate", path.display()))?;
            let id = CertIdentity::from_der(leaf.as_ref())
                .map_err(|e| format!("{}: {e}", path.display()))?;
            p = cert_principal(&id, PrincipalSource::Certificate);
        }
        if let Some(user) = &self.user {
            let groups = authenticator
                .users()
                .and_then(|u| u.groups(user))
                .map(<[String]>::to_vec);
            if authenticator.users().is_some() && groups.is_none() {
                return Err(format!("user {user:?} is not in the users file"));
            }
            add_credentials(
                &mut p,
                &Authenticated {
                    kind: modgate_identity::CredentialKind::Basic,
                    name: user.clone(),
                    groups: groups.unwrap_or_default(),
                },
            );
        }
        if let Some(token) = &self.token_name {
            let groups = authenticator
                .tokens()
                .and_then(|t| t.groups(token))
                .map(<[String]>::to_vec);
            if authenticator.tokens().is_some() && groups.is_none() {
                return Err(format!("token {token:?} is not in the tokens file"));
            }
            add_credentials(
                &mut p,
                &Authenticated {
                    kind: modgate_identity::CredentialKind::Token,
                    name: token.clone(),
                    groups: groups.unwrap_or_default(),
                },
            );
        }
        for g in &self.groups {
            if !p.groups.contains(g) {
                p.groups.push(g.clone());
            }
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::{cache_identity, header_safe, principal_parts, Attempt};
    use modgate_identity::credentials::Presented;
    use modgate_policy::{CertFields, Principal, PrincipalSource};

    #[test]
    fn an_attempt_keeps_the_user_name_and_no_secret() {
        let basic = Presented::Basic {
            user: "alice".into(),
            password: "s3cret".into(),
        };
        assert_eq!(Attempt::of(&basic), Attempt::User("alice".into()));
        assert_eq!(Attempt::of(&basic).label(), "basic:alice");
        let bearer = Presented::Bearer {
            token: "mgt_secret".into(),
        };
        assert_eq!(Attempt::of(&bearer), Attempt::Token);
        assert!(!Attempt::of(&bearer).label().contains("mgt_"));
        let long = Presented::Basic {
            user: "é".repeat(300),
            password: String::new(),
        };
        let Attempt::User(name) = Attempt::of(&long) else {
            panic!("a user");
        };
        assert_eq!(name.chars().count(), Attempt::MAX_USER + 1);
        assert!(name.ends_with('…'));
    }

    fn cert(cn: &str, fingerprint: &str) -> Principal {
        Principal {
            source: PrincipalSource::Certificate,
            name: cn.to_string(),
            cert: Some(CertFields {
                cn: Some(cn.to_string()),
                fingerprint_sha256: fingerprint.to_string(),
                ..CertFields::default()
            }),
            user: None,
            token: None,
            groups: Vec::new(),
        }
    }

    #[test]
    fn cache_identities_tell_certificates_and_credentials_apart() {
        let a = cert("alice", "aa");
        let other_alice = cert("alice", "bb");
        assert_ne!(cache_identity(&a), cache_identity(&other_alice));
        let mut with_password = a.clone();
        with_password.user = Some("bob".into());
        assert_ne!(cache_identity(&a), cache_identity(&with_password));
        assert_eq!(cache_identity(&a), cache_identity(&cert("alice", "aa")));
    }

    #[test]
    fn a_certificate_with_credentials_splits_in_two() {
        assert!(principal_parts(&cert("nobody", "aa")).is_empty());
        let mut both = cert("nobody", "aa");
        both.user = Some("alice".into());
        both.groups = vec!["staff".into()];
        let parts = principal_parts(&both);
        let labels: Vec<&str> = parts.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(labels, ["certificate:nobody", "basic:alice"]);
        assert!(parts[0].1.user.is_none() && parts[0].1.groups.is_empty());
        assert!(parts[1].1.cert.is_none() && parts[1].1.groups == ["staff"]);
    }

    #[test]
    fn header_values_are_made_safe() {
        assert_eq!(header_safe("CN=a,O=B"), "CN=a,O=B");
        assert_eq!(header_safe("CN=é\n"), "CN=%C3%A9%0A");
        assert_eq!(header_safe("100%"), "100%25");
    }
}
