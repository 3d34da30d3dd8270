//! The identity `modgate explain` decides for, built as the proxy would build it.

use modgate_identity::{cert_from_der, Authenticated};
use modgate_policy::{Principal, PrincipalSource};

use super::{add_credentials, cert_principal};

/// The identity `modgate explain` decides for: a certificate file, a user or a token name
/// (flattened into its command line; the field comments are the help).
#[derive(clap::Args)]
pub struct ExplainIdentity {
    /// Decide for the identity in this client certificate (PEM).
    #[arg(long, conflicts_with_all = ["user", "token_name"])]
    pub cert: Option<std::path::PathBuf>,
    /// Decide for this basic-auth user (groups from the users file).
    #[arg(long, conflicts_with = "token_name")]
    pub user: Option<String>,
    /// Decide for this bearer token name (groups from the tokens file).
    #[arg(long)]
    pub token_name: Option<String>,
    /// Extra group memberships to assume.
    #[arg(long = "group")]
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
            let id =
                cert_from_der(leaf.as_ref()).map_err(|e| format!("{}: {e}", path.display()))?;
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
