//! `/sumdb/<name>/…` of the company's own checksum database (`checksum_log:`, admitted by
//! `admit_checksum_log`): `supported`, `latest`, tiles and logged lookups are read from the log
//! (off the event loop); a lookup of a version not logged yet is fetched, checked and appended
//! first, once however many ask at the same time:
//!
//! 1. its `go.mod` and zip hashes are the integrity ledger's first-seen ones; an artifact the
//!    ledger has not seen is fetched along the module's route (the gateway's credentials, the
//!    identity headers the chain is told) and recorded — bytes that differ from the first-seen
//!    ones are refused, as everywhere;
//! 2. a public module's hashes must agree with the public checksum database the gateway proxies
//!    (`checksum_log.public`): its record, in a tree head signed by its key and proven to hold
//!    the record; a disagreement is refused (502) and audited as a security event, never
//!    appended; an unreachable database fails the lookup (502: `go` fails closed). Air-gapped
//!    (`public: { trust: first-seen }`), the first-seen hashes are appended and the audit says so;
//! 3. the record is appended (batched: one signed head per batch) and the lookup answered from
//!    the signed tree that includes it.

use std::sync::Arc;

use modgate_ledger::{Artifact, Check};
use modgate_protocol::{escape_path, escape_version, ModuleRequest, RequestKind, SumdbEndpoint};
use modgate_sumdb::Answer;
use modgate_telemetry::AuditDecision;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

use super::admit::Refusal;
use super::lookup::Fetched;
use super::{endpoints, GatewayProxy, RequestCtx};
use crate::identity;
use crate::sumlog::SumLog;
use crate::upstream::Upstream;

/// The largest module zip read to hash it (Go's own limit on a module zip).
const ZIP_MAX: usize = 500 << 20;
/// The largest `go.mod`.
const MOD_MAX: usize = 16 << 20;

/// The path under `/sumdb/<name>` the log answers: `!`-escaped as Go's server reads it.
fn sub_path(endpoint: &SumdbEndpoint) -> String {
    match endpoint {
        SumdbEndpoint::Supported => "/supported".into(),
        SumdbEndpoint::Latest => "/latest".into(),
        SumdbEndpoint::Lookup { module, version } => {
            let m = escape_path(module).unwrap_or_else(|_| module.clone());
            let v = escape_version(version).unwrap_or_else(|_| version.clone());
            format!("/lookup/{m}@{v}")
        }
        SumdbEndpoint::Tile { path } => format!("/tile/{path}"),
    }
}

/// Reads the log's answer to `sub` on the blocking pool.
async fn read(store: &Arc<SumLog>, sub: String) -> Answer {
    let log = store.log.clone();
    match tokio::task::spawn_blocking(move || modgate_sumdb::answer(&*log, &sub)).await {
        Ok(a) => a,
        Err(e) => Answer::Response(modgate_sumdb::Response::error(500, &e.to_string())),
    }
}

/// Answers a reader's request to the company's checksum database.
pub(super) async fn serve(
    p: &GatewayProxy,
    session: &mut Session,
    ctx: &mut RequestCtx,
    endpoint: &SumdbEndpoint,
) -> Result<()> {
    let Some(store) = p.cache.as_ref().and_then(|c| c.checksum_log.clone()) else {
        let r = Refusal::NotFound("this gateway keeps no checksum database".into());
        return endpoints::refuse(session, &mut ctx.record, &r).await;
    };
    let sub = sub_path(endpoint);
    let mut answered = read(&store, sub.clone()).await;
    if let (SumdbEndpoint::Lookup { .. }, Answer::Response(r)) = (endpoint, &answered) {
        // A failed read (the cluster's database away: 503) is not an answer from the log.
        p.metrics
            .sumdb_lookup(if r.status == 200 { "logged" } else { "failed" });
    }
    if let Answer::NotLogged { path, version } = &answered {
        let (path, version) = (path.clone(), version.clone());
        let flight = store.flight(&path, &version);
        let asked = std::time::Instant::now();
        let mut turn = flight.lock().await;
        // Whoever held the flight before may have logged it meanwhile, or failed after this
        // request asked: that answer is this one's too.
        answered = read(&store, sub.clone()).await;
        if matches!(answered, Answer::NotLogged { .. }) {
            let shared =
                turn.as_ref()
                    .filter(|(at, _, _)| *at >= asked)
                    .map(|(_, missing, why)| match missing {
                        true => Refusal::NotFound(why.clone()),
                        false => Refusal::Unlearnt(why.clone()),
                    });
            let outcome = match shared {
                Some(r) => Err(r),
                None => log_version(p, ctx, &store, &path, &version).await,
            };
            match outcome {
                Ok(()) => {
                    *turn = None;
                    p.metrics.sumdb_lookup("appended");
                    answered = read(&store, sub).await;
                }
                Err(r) => {
                    *turn = match &r {
                        Refusal::NotFound(why) => {
                            Some((std::time::Instant::now(), true, why.clone()))
                        }
                        Refusal::Unlearnt(why) => {
                            Some((std::time::Instant::now(), false, why.clone()))
                        }
                        _ => None,
                    };
                    drop(turn);
                    p.metrics.sumdb_lookup("refused");
                    return endpoints::refuse(session, &mut ctx.record, &r).await;
                }
            }
        }
    }
    let r = match answered {
        Answer::Response(r) => r,
        Answer::NotLogged { path, version } => modgate_sumdb::Response::error(
            500,
            &format!("{path}@{version} was appended but the log does not show it"),
        ),
    };
    ctx.record.decision = if r.status < 500 {
        AuditDecision::Allow
    } else {
        AuditDecision::Error
    };
    if r.status >= 400 {
        ctx.record.reason = Some(String::from_utf8_lossy(&r.body).trim().to_string());
    }
    let mut head = ResponseHeader::build(r.status, Some(5))?;
    head.insert_header("Content-Type", r.content_type)?;
    head.insert_header("Content-Length", r.body.len().to_string())?;
    head.insert_header("Cache-Control", r.cache_control)?;
    if r.status != 200 {
        head.insert_header("X-Content-Type-Options", "nosniff")?;
    }
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(head), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(r.body), true).await?;
    }
    Ok(())
}

/// Fetches (where the ledger lacks them), checks and appends `module@version`.
async fn log_version(
    p: &GatewayProxy,
    ctx: &mut RequestCtx,
    store: &Arc<SumLog>,
    module: &str,
    version: &str,
) -> std::result::Result<(), Refusal> {
    if !modgate_protocol::Version::parse(version).is_canonical() {
        return Err(Refusal::NotFound(format!(
            "{module}@{version}: not a canonical version, never in the checksum database"
        )));
    }
    let (Some(route), Some(cache), Some(policy)) = (
        ctx.route(),
        p.cache.as_ref(),
        ctx.model.gateway.checksum_log.clone(),
    ) else {
        return Err(Refusal::NotFound(format!(
            "{module}@{version}: no route, so it is not in the checksum database"
        )));
    };
    let private = route.private || route.target.steps.iter().any(|s| s.upstream.private);
    let roles = ctx
        .admission
        .as_ref()
        .and_then(|a| a.decision.as_ref())
        .map(|d| d.roles.clone())
        .unwrap_or_default();
    let identity = &ctx.identity;
    let headers = |u: &Upstream| match &u.forward {
        Some(f) => identity::forward_headers(f, identity, &roles),
        None => Vec::new(),
    };
    // (Closed only if the process is going away.)
    let _fetching = store
        .fetches
        .acquire()
        .await
        .map_err(|e| Refusal::Unlearnt(format!("{module}@{version}: {e}")))?;
    // The ledger's first-seen hashes where it has them; the others hashed from fetched bytes,
    // recorded in the ledger only once a public database agreed (bytes it disputes never
    // become anyone's first-seen record).
    let mut h1s = Vec::with_capacity(2);
    let mut fetched = Vec::new();
    for artifact in [Artifact::Zip, Artifact::Mod] {
        let recorded = {
            let (ledger, m, v) = (cache.ledger.clone(), module.to_owned(), version.to_owned());
            tokio::task::spawn_blocking(move || ledger.get(&m, &v, artifact)).await
        };
        let known = match recorded {
            Ok(Ok(Some(e))) => e.h1,
            Ok(Ok(None)) => None,
            Ok(Err(e)) => return Err(Refusal::Unlearnt(format!("the integrity ledger: {e}"))),
            Err(e) => return Err(Refusal::Unlearnt(format!("the integrity ledger: {e}"))),
        };
        let h1 = match known {
            Some(h1) => h1,
            None => {
                let body = fetch(p, route, &headers, module, version, artifact).await?;
                let bytes = Hashed::of(artifact, body).await.map_err(|e| {
                    Refusal::Unlearnt(format!(
                        "{module}@{version}: its .{} cannot be hashed: {e}",
                        artifact.as_str()
                    ))
                })?;
                let h1 = bytes.h1.clone();
                fetched.push((artifact, bytes));
                h1
            }
        };
        h1s.push(h1);
    }
    let (zip_h1, mod_h1) = (h1s[0].clone(), h1s[1].clone());
    if !private {
        match &policy.public {
            Some((db, verifier)) => {
                super::public_sums::agree(
                    &p.lookup, db, verifier, module, version, &zip_h1, &mod_h1,
                )
                .await
                .map_err(|e| {
                    if e.disagrees {
                        p.metrics.sumdb_lookup("disagreement");
                        ctx.record.event = Some("sumdb-disagreement".into());
                        log::error!("SECURITY: {module}@{version}: {} (not logged)", e.message);
                    }
                    e.refusal
                })?;
            }
            None => ctx.record.event = Some("sumdb-logged-first-seen".into()),
        }
    }
    for (artifact, bytes) in fetched {
        record(cache, module, version, artifact, bytes).await?;
    }
    match store
        .appender
        .append(module, version, &zip_h1, &mod_h1)
        .await
    {
        Ok(_) => Ok(()),
        Err(modgate_sumdb::Error::Conflict { logged, .. }) => Err(Refusal::Unlearnt(format!(
            "{module}@{version}: the checksum database logged other hashes first ({}); the log \
             keeps its first record, whatever the ledger was told since (`modgate ledger \
             accept` cannot change it): publish a new version",
            logged.trim().replace('\n', "; ")
        ))),
        Err(e) => Err(Refusal::Unlearnt(format!(
            "{module}@{version} could not be appended to the checksum database: {e}"
        ))),
    }
}

/// Fetches `module@version`'s `.mod` or `.zip` along the route's chain.
async fn fetch(
    p: &GatewayProxy,
    route: &modgate_policy::Route<crate::upstream::Chain>,
    headers: super::lookup::IdentityHeaders<'_>,
    module: &str,
    version: &str,
    artifact: Artifact,
) -> std::result::Result<Vec<u8>, Refusal> {
    let (kind, max) = match artifact {
        Artifact::Zip => (RequestKind::Zip, ZIP_MAX),
        _ => (RequestKind::Mod, MOD_MAX),
    };
    let path = ModuleRequest {
        module: module.to_owned(),
        kind,
        version: Some(modgate_protocol::Version::parse(version)),
    }
    .upstream_path();
    match p
        .lookup
        .get(&route.target, route.private, &path, module, headers, max)
        .await
    {
        Ok(Fetched::Body(b)) => Ok(b),
        Ok(Fetched::NotFound) => Err(Refusal::NotFound(format!(
            "{module}@{version}: not found upstream (.{}), so not in the checksum database",
            artifact.as_str()
        ))),
        Err(why) => Err(Refusal::Unlearnt(format!(
            "{module}@{version}: its .{} could not be fetched to log it: {why}",
            artifact.as_str()
        ))),
    }
}

/// Fetched bytes, hashed (on the blocking pool: a zip may be large).
struct Hashed {
    sha256: String,
    h1: String,
    size: u64,
}

impl Hashed {
    async fn of(artifact: Artifact, body: Vec<u8>) -> std::result::Result<Hashed, String> {
        let hashed = tokio::task::spawn_blocking(move || {
            let h1 = match artifact {
                Artifact::Zip => modgate_ledger::zip_h1(&body).map_err(|e| e.to_string())?,
                _ => modgate_ledger::mod_h1(&body),
            };
            Ok(Hashed {
                sha256: modgate_ledger::sha256_hex(&body),
                h1,
                size: body.len() as u64,
            })
        })
        .await;
        hashed.map_err(|e| e.to_string())?
    }
}

/// Records fetched bytes in the ledger: first seen now, or the same as first seen; other bytes
/// than first seen are refused, as on every path.
async fn record(
    cache: &crate::cache::CacheRuntime,
    module: &str,
    version: &str,
    artifact: Artifact,
    bytes: Hashed,
) -> std::result::Result<(), Refusal> {
    let (ledger, m, v) = (cache.ledger.clone(), module.to_owned(), version.to_owned());
    let observed = tokio::task::spawn_blocking(move || {
        ledger.observe(
            &m,
            &v,
            artifact,
            &bytes.sha256,
            Some(&bytes.h1),
            bytes.size,
            "checksum-log",
        )
    })
    .await;
    match observed {
        Ok(Ok(Check::FirstSeen(_) | Check::Match(_))) => Ok(()),
        Ok(Ok(Check::Mismatch { recorded, .. })) => Err(Refusal::Unlearnt(format!(
            "{module}@{version}: the upstream now serves a .{} other than the one first seen \
             (sha256 {}): not logged",
            artifact.as_str(),
            recorded.sha256
        ))),
        Ok(Err(e)) => Err(Refusal::Unlearnt(format!(
            "{module}@{version}: its .{}: {e}",
            artifact.as_str()
        ))),
        Err(e) => Err(Refusal::Unlearnt(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_paths_are_what_gos_server_reads() {
        let lookup = SumdbEndpoint::Lookup {
            module: "corp.example/Team/m".into(),
            version: "v1.0.0-RC".into(),
        };
        assert_eq!(
            sub_path(&lookup),
            "/lookup/corp.example/!team/m@v1.0.0-!r!c"
        );
        assert_eq!(sub_path(&SumdbEndpoint::Latest), "/latest");
        assert_eq!(
            sub_path(&SumdbEndpoint::Tile {
                path: "8/0/x001/002.p/5".into()
            }),
            "/tile/8/0/x001/002.p/5"
        );
    }
}
