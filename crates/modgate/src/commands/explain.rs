//! `modgate explain`: which route and upstream chain a module request takes and what the
//! access policy decides for an identity (the reasoning is in `explain.rs`), and the rate limits
//! that apply to it (`proxy/ratelimit.rs`). With `--cert`, the
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
    let principal = q.who.principal(&g.auth).map_err(anyhow::Error::msg)?;
    let explained = explain::explain(&g, &c.server.path_prefix, &q.target, q.kind, &principal)
        .map_err(anyhow::Error::msg)?;
    print!("{}", explained.text);
    let roles: Vec<&str> = g
        .access
        .roles_for(&principal)
        .into_iter()
        .map(|r| r.name.as_str())
        .collect();
    print!(
        "{}",
        crate::proxy::ratelimit::explain_lines(&c.rate_limits.0, &principal, &roles)
    );
    let held: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
    print!("{}", cooldown_lines(&c, &q.target, &held));
    print!("{}", retraction_lines(&g, &q.target, &held));
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

/// What `versions.cooldown` says of `module@version` as this gateway has seen it: its
/// sightings (read from the store beside the ledger, never created here) and the age they give.
/// The module index's progress is known only to the running gateway: a version of a route in
/// `index_routes` may be older than this says.
fn cooldown_lines(c: &GatewayConfig, target: &str, roles: &[String]) -> String {
    let (Some(policy), Some(cache)) = (&c.versions.cooldown, &c.cache) else {
        return String::new();
    };
    let Some((module, version)) = target.split_once('@') else {
        return String::new();
    };
    let exempt = policy
        .exempt
        .iter()
        .any(|m| modgate_policy::Pattern::prefix(m).is_ok_and(|p| p.matches(module)));
    if exempt {
        return format!("cooldown: {module} is exempt\n");
    }
    let by_roles: Vec<String> = roles
        .iter()
        .filter_map(|r| {
            policy
                .roles
                .get(r)
                .map(|m| format!("{} (role {r})", m.as_str()))
        })
        .collect();
    let mode = if by_roles.is_empty() {
        format!(
            "{} (default; routes may set their own)",
            policy.mode.as_str()
        )
    } else {
        by_roles.join(", ")
    };
    let path = cache.sightings_path();
    if !path.exists() {
        return format!(
            "cooldown: {module}@{version} never seen by this gateway; its first answer starts a \
             window of {}s (mode {mode})\n",
            policy.window.0.as_secs()
        );
    }
    let seen = modgate_ledger::Sightings::open(&path).and_then(|s| s.get(module, version));
    let sightings = match seen {
        Ok(s) => s,
        Err(e) => return format!("cooldown: sightings {}: {e}\n", path.display()),
    };
    let now = crate::proxy::admit::unix_now();
    let window = i64::try_from(policy.window.0.as_secs()).unwrap_or(i64::MAX);
    let age = crate::cooldown::age(
        &sightings,
        crate::cooldown::Vouch::GatewayOnly,
        now,
        window,
        None,
    );
    let said = match age {
        crate::cooldown::Age::Old { why } => format!("old enough ({why})"),
        crate::cooldown::Age::New { available_at, why } => format!(
            "in cooldown until {} ({why})",
            crate::cooldown::show_time(available_at)
        ),
        crate::cooldown::Age::Unknown { why } => format!("age unknown ({why})"),
    };
    format!("cooldown: {module}@{version} {said}; mode {mode}\n")
}

/// What `versions.retractions` says of `module@version`: the module's latest `go.mod`, asked of
/// the route's chain as the gateway asks it (the gateway's credentials, never a private path to
/// a public upstream; a git upstream's origin answers only while the gateway runs), and whether
/// it retracts the version, with the author's rationale.
fn retraction_lines(g: &gateway::Gateway, target: &str, roles: &[String]) -> String {
    let Some(policy) = &g.retractions else {
        return String::new();
    };
    let Some((module, version)) = target.split_once('@') else {
        return String::new();
    };
    if !modgate_protocol::Version::parse(version).is_canonical() {
        return String::new();
    }
    let Some(m) = crate::proxy::admit::route_for(g, module) else {
        return String::new();
    };
    let route = m.route;
    let mode = crate::config::mode_for(
        policy.mode,
        &policy.routes,
        &policy.roles,
        &route.name,
        roles,
    );
    if mode == crate::config::VersionMode::Off {
        return format!("retractions: off for route {}\n", route.name);
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return format!("retractions: not learnt ({e})\n"),
    };
    let lookup = crate::proxy::lookup::Lookup::default();
    let no_headers = |_: &crate::upstream::Upstream| Vec::new();
    let learnt = rt.block_on(crate::proxy::retractions::Retracted::default().of(
        &lookup,
        &route.name,
        route.private,
        &route.target,
        module,
        &no_headers,
    ));
    let mode = mode.as_str();
    match learnt {
        Ok(None) => format!("retractions: route {} has no version of {module}; mode {mode}\n", route.name),
        Ok(Some((latest, r))) => match r.is_retracted(version) {
            Some(hit) => {
                let why = if hit.rationale.is_empty() {
                    "no rationale given".to_string()
                } else {
                    hit.rationale.clone()
                };
                format!("retractions: {module}@{version} is retracted by its module (go.mod of {latest}): {why}; mode {mode}\n")
            }
            None => format!("retractions: {module}@{version} is not retracted (go.mod of {latest}); mode {mode}\n"),
        },
        Err(why) => format!("retractions: unknown, the chain of route {} could not tell ({why}); the gateway does not judge {module}@{version} by them until it can; mode {mode}\n", route.name),
    }
}
