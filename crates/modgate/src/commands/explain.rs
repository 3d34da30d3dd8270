//! `modgate explain`: which route and upstream chain a module request takes and what the
//! access policy decides for an identity (the reasoning is in `explain.rs`). With `--cert`, the
//! certificate is also judged as each listener that asks for client certificates would judge
//! it: chain to the listener's CAs, validity now, revocation in its CRLs. Exit 0 allowed (or
//! no policy question), 1 denied (by the policy, or the certificate refused by every listener
//! that asks for one), 2 bad input.

use std::path::{Path, PathBuf};

use modgate_identity::{ClientAuth, ReloadableTls};
use modgate_protocol::RequestKind;
use rustls::pki_types::UnixTime;

use super::{load_config, Exit, Outcome};
use crate::config::GatewayConfig;
use crate::{explain, gateway, identity};

/// The request to explain and who asks (the command line of `modgate explain`; the field
/// comments are its help).
#[derive(clap::Args)]
pub struct Question {
    /// Module path, optionally with @version (e.g. github.com/Azure/go-autorest@v14.2.0+incompatible).
    pub target: String,
    /// Request kind: list, latest, info, mod or zip (zip when a version is given, else list).
    #[arg(long)]
    pub kind: Option<RequestKind>,
    /// Configuration file.
    #[arg(short, long, default_value = "gateway.yaml")]
    pub config: PathBuf,
    #[command(flatten)]
    pub who: identity::ExplainIdentity,
}

/// How each listener that asks for client certificates judges the certificate in `pem`: one
/// line per listener, and whether at least one of them accepts it (`None`: none asks).
fn judge_certificate(c: &GatewayConfig, pem: &Path) -> anyhow::Result<(String, Option<bool>)> {
    let chain = modgate_identity::tls::read_certs(pem)?;
    let mut out = String::new();
    let mut accepted = None;
    for l in c.listeners.iter() {
        let Some(tls) = &l.tls else { continue };
        let mode = match tls.files.client_auth {
            ClientAuth::None => continue,
            ClientAuth::Optional => "optional",
            ClientAuth::Required => "required",
        };
        let material = ReloadableTls::new(&tls.files)?;
        let verdict = material.verify_client_chain(&chain, UnixTime::now());
        let ok = verdict.is_ok();
        accepted = Some(accepted.unwrap_or(false) || ok);
        let said = match verdict {
            Ok(()) => "accepted (chain, validity and revocation check out)".to_string(),
            Err(e) => format!(
                "refused: {} — every request on such a connection gets 403",
                modgate_identity::tls::refusal_reason(&e)
            ),
        };
        out.push_str(&format!(
            "listener: {} (client_auth {mode}): certificate {said}\n",
            l.name.0
        ));
    }
    Ok((out, accepted))
}

/// Prints the explanation.
pub fn explain(q: Question) -> Outcome {
    let c = load_config(&q.config)?;
    let g = gateway::Gateway::new(&c)?;
    let principal = q
        .who
        .principal(&g.auth.current.load())
        .map_err(anyhow::Error::msg)?;
    let explained = explain::explain(&g, &c.server.path_prefix, &q.target, q.kind, &principal)
        .map_err(anyhow::Error::msg)?;
    print!("{}", explained.text);
    let mut refused_everywhere = false;
    if let Some(pem) = &q.who.cert {
        let (lines, accepted) = judge_certificate(&c, pem)?;
        print!("{lines}");
        if accepted == Some(false) {
            println!("certificate: refused by every listener that asks for one");
            refused_everywhere = true;
        }
    }
    Ok(Exit::answer(!explained.denied && !refused_everywhere))
}
