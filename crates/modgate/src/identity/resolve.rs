//! Resolving the identity of one request: the connection's certificate or a trusted proxy's
//! forwarded one, then `.netrc` basic credentials or a bearer token; every identity-bearing
//! header is removed from the request first.

use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderName;
use modgate_identity::forward::parse_forwarded_cert;
use modgate_identity::{cert_from_der, CidrSet};
use modgate_policy::PrincipalSource;
use pingora::proxy::Session;

use super::throttle::expensive_check;
use super::{
    add_credentials, cert_principal, peer_cert, Attempt, IdentityError, IdentityMetrics, PeerCert,
    RequestIdentity, Unresolved, VerifyState,
};
use crate::config::forward::ForwardedInput;

/// What a listener needs to resolve identities.
pub struct IdentitySettings {
    pub trusted: CidrSet,
    pub forwarded: ForwardedInput,
    /// Every header name that could carry an identity; removed from every request.
    pub strip: Vec<HeaderName>,
    /// Where throttled password checks (here) and authentication failures (the proxy) count.
    pub metrics: IdentityMetrics,
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
        .and_then(|der| cert_from_der(&der).map(|id| PeerCert::new(vec![der], id)))
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
/// The connection's certificate is taken as judged: the caller has run [`super::connection_refusal`]
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
            None => expensive_check(authenticator, presented, client_ip, &settings.metrics).await,
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
