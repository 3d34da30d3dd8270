//! The identity of one request as the proxy, its headers and its audit record see it: the
//! principal, the certificate it rests on, the verification result to report upstream, and
//! credentials that were presented and refused.

use std::sync::Arc;

use modgate_identity::credentials::Presented;
use modgate_identity::forward::Verify;
use modgate_policy::{Principal, PrincipalSource};

use super::{IdentityError, PeerCert};

/// How the identity of a request was established, for headers and audit records.
#[derive(Debug, Clone)]
pub struct RequestIdentity {
    pub principal: Principal,
    /// The certificate the identity rests on (TLS peer or trusted forwarded header).
    pub cert: Option<Arc<PeerCert>>,
    /// Client-certificate verification result to report upstream.
    pub verify: VerifyState,
    /// When a certificate and credentials were both presented: each as `<source>:<name>`, and
    /// the one(s) through which the deciding rule applied (see [`super::attribute`]).
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

#[cfg(test)]
mod tests {
    use super::Attempt;
    use modgate_identity::credentials::Presented;

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
}
