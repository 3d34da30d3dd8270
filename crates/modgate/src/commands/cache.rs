//! `modgate cache`, run beside (or without) a live gateway on the same directories:
//!
//! - `purge MODULE[@VERSION]`: removes the module's cached answers on every route (a running
//!   gateway notices on its next lookup), and asks the git mirrors of the module's repository
//!   to list the Git host again on their next use (new tags); audited.
//! - `verify [--purge]`: re-hashes every cached exact-version artifact and compares it with the
//!   ledger; reports (and with `--purge` removes) mismatches and torn objects (a body cut short
//!   or corrupt), with progress on stderr. Exit 1 when anything disagrees.
//!
//! Both open the cache without its start-up scan ([`DiskCache::inspect`]): nothing is removed
//! behind the report's back, and a running gateway's writes in progress are left alone.

use std::io::{IsTerminal, Write};
use std::time::Instant;

use modgate_cache::{DiskCache, ObjectInfo};

use super::operator::{audit_event, cache_config, Actor};
use super::{Exit, Outcome};
use crate::cache::{artifact, cached_request, purge_module, target};
use crate::config::GatewayConfig;

/// `modgate cache purge`.
pub fn purge(config: &GatewayConfig, what: &str) -> Outcome {
    let c = cache_config(config)?;
    let (module, version) = target(what)?;
    let cache = DiskCache::inspect(c.disk())?;
    let report = purge_module(cache, &module, version.as_deref())?;
    println!(
        "purged {} object(s), {} bytes for {what}",
        report.objects, report.bytes
    );
    // The shared object tier's copies go too (else a replica would read them back).
    if let Some(objects) = config.cluster.as_ref().and_then(|c| c.objects.as_ref()) {
        let settings = objects.settings().map_err(|e| anyhow::anyhow!(e))?;
        let tier = modgate_objstore::ObjectTier::new(&settings)?;
        let n = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(crate::cache::purge_objects(
                &tier,
                &module,
                version.as_deref(),
            ))?;
        println!("purged {n} object(s) from {}", tier.name());
    }
    // Every replica of a cluster purges its own local tiers when it hears of it.
    if let Some(link) = config.ledger_at(c, Some("modgate cache purge"))?.link()? {
        let (pool, origin) = (link.pool, link.origin);
        let id = modgate_postgres::publish_purge(&pool, &module, version.as_deref(), &origin)?;
        println!(
            "purge published to the cluster's replicas (event {id}, {})",
            pool.name()
        );
    }
    // New tags of a git upstream's repository: its mirror lists the host again on next use.
    for line in crate::gitorigin::request_mirror_refresh(
        config,
        &crate::mirrors::mirrors_dir(config),
        &module,
    ) {
        println!("{line}");
    }
    let actor = Actor::current();
    audit_event(
        config,
        &actor,
        "cache-purge",
        &module,
        version.as_deref(),
        format!("{} object(s) purged by {}", report.objects, actor.label()),
    );
    Ok(Exit::Success)
}

/// One cached exact-version artifact and what the ledger says about it.
struct Finding {
    key: String,
    problem: String,
}

/// `modgate cache verify`: success when every cached artifact agrees with the ledger.
pub fn verify(config: &GatewayConfig, purge: bool) -> Outcome {
    let c = cache_config(config)?;
    let cache = DiskCache::inspect(c.disk())?;
    let ledger = config.ledger_at(c, Some("modgate cache verify"))?.open()?;
    let objects: Vec<ObjectInfo> = cache
        .list_objects()?
        .into_iter()
        .filter(|o| o.status == Some(200))
        .collect();
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut last_line = Instant::now();
    let (mut checked, mut unrecorded) = (0usize, 0usize);
    let mut bad: Vec<Finding> = Vec::new();
    for (i, o) in objects.iter().enumerate() {
        let Some(req) = cached_request(o) else {
            continue;
        };
        let Some((a, version)) = artifact(&req) else {
            continue;
        };
        checked += 1;
        match cache.read_checked(&o.hash) {
            Ok(None) => {}
            Err(e) => bad.push(Finding {
                key: o.primary_key.clone(),
                problem: format!("{}@{} (.{a}): corrupt: {e}", req.module, version),
            }),
            Ok(Some(body)) => {
                let sha = modgate_ledger::sha256_hex(&body);
                match ledger.get(&req.module, &version, a)? {
                    None => unrecorded += 1,
                    Some(e) if e.sha256 == sha && e.size == body.len() as u64 => {}
                    Some(e) => bad.push(Finding {
                        key: o.primary_key.clone(),
                        problem: format!(
                            "{}@{} (.{a}): cached sha256:{sha} ({} bytes), ledger sha256:{} ({} bytes)",
                            req.module,
                            version,
                            body.len(),
                            e.sha256,
                            e.size
                        ),
                    }),
                }
            }
        }
        progress(tty, &mut last_line, i + 1, objects.len(), bad.len());
    }
    if tty {
        eprintln!();
    }
    for f in &bad {
        println!("MISMATCH {}", f.problem);
    }
    if purge && !bad.is_empty() {
        let keys: Vec<&str> = bad.iter().map(|f| f.key.as_str()).collect();
        let report = cache.purge_where(|o| keys.contains(&o.primary_key.as_str()))?;
        println!("purged {} mismatching object(s)", report.objects);
        let actor = Actor::current();
        for f in &bad {
            audit_event(
                config,
                &actor,
                "cache-verify-purge",
                &f.key,
                None,
                f.problem.clone(),
            );
        }
    }
    println!(
        "verified {checked} cached artifact(s) in {:.1}s: {} mismatch(es), {unrecorded} not in the ledger",
        started.elapsed().as_secs_f64(),
        bad.len()
    );
    Ok(Exit::answer(bad.is_empty()))
}

fn progress(tty: bool, last: &mut Instant, done: usize, total: usize, bad: usize) {
    if tty {
        let width = 30;
        let filled = (done * width)
            .checked_div(total)
            .unwrap_or(width)
            .min(width);
        eprint!(
            "\r[{}{}] {done}/{total} mismatches={bad}",
            "#".repeat(filled),
            "-".repeat(width - filled)
        );
        let _ = std::io::stderr().flush();
    } else if last.elapsed().as_secs() >= 5 || done == total {
        eprintln!("verify: {done}/{total} checked, {bad} mismatch(es)");
        *last = Instant::now();
    }
}
