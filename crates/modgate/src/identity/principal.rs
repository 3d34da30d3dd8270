//! Principals built from certificates and verified credentials, and what tells them apart: the
//! per-identity cache key and the split of a certificate-plus-credentials principal into the
//! parts a decision may have come through.

use modgate_identity::{Authenticated, CertIdentity};
use modgate_policy::{Principal, PrincipalSource};

use super::RequestIdentity;

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

/// Principal for a certificate.
pub fn cert_principal(c: &CertIdentity, source: PrincipalSource) -> Principal {
    Principal {
        source,
        name: c.display_name(),
        cert: Some(c.clone()),
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

#[cfg(test)]
mod tests {
    use super::{cache_identity, principal_parts};
    use modgate_policy::{CertIdentity, Principal, PrincipalSource};

    fn cert(cn: &str, fingerprint: &str) -> Principal {
        Principal {
            source: PrincipalSource::Certificate,
            name: cn.to_string(),
            cert: Some(CertIdentity {
                cn: Some(cn.to_string()),
                fingerprint_sha256: fingerprint.to_string(),
                ..CertIdentity::default()
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
}
