//! Why a request could not be given an identity: the metric label and the text the client
//! sees.

use std::time::Duration;

use modgate_identity::{AuthFailure, Scope};

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
