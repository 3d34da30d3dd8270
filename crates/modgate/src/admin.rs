//! Operator commands on the cache and the integrity ledger, run beside (or without) a live
//! gateway on the same directories:
//!
//! - `modgate cache purge MODULE[@VERSION]`: removes the module's cached answers on every route
//!   (a running gateway notices on its next lookup); audited.
//! - `modgate cache verify [--purge]`: re-hashes every cached exact-version artifact and compares
//!   it with the ledger; reports (and optionally purges) mismatches, with progress on stderr.
//! - `modgate ledger show [MODULE[@VERSION]]`: the recorded hashes (and accepted changes).
//! - `modgate ledger accept MODULE@VERSION ARTIFACT --sha256 .. --size ..`: deliberately accepts
//!   new bytes for a version (the refused hashes are in the 502 and the audit record); audited.
//!   SIGHUP makes a running gateway forget its refusals so the accepted bytes are fetched.

use std::io::{IsTerminal, Write};
use std::time::Instant;

use anyhow::Context;
use modgate_cache::{DiskCache, ObjectInfo};
use modgate_ledger::{Artifact, Ledger};
use modgate_telemetry::{AuditDecision, AuditIdentity, AuditLog, AuditRecord, AuditSinkConfig};

use crate::cache::{artifact, cached_request, purge_module, target};
use crate::config::{AuditOutput, CacheConfig, GatewayConfig};

fn cache_config(config: &GatewayConfig) -> anyhow::Result<&CacheConfig> {
    config
        .cache
        .as_ref()
        .context("the configuration has no cache: section")
}

fn operator() -> String {
    std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "operator".into())
}

/// Writes one audit record for an operator action to the configured sink.
fn audit_event(
    config: &GatewayConfig,
    event: &str,
    module: &str,
    version: Option<&str>,
    reason: String,
) {
    let sink = match &config.audit.output {
        AuditOutput::Stdout => AuditSinkConfig::Stdout,
        AuditOutput::File(p) => AuditSinkConfig::File(p.clone()),
        AuditOutput::Off => return,
    };
    let log = match AuditLog::start(sink) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("modgate: audit record not written: {e}");
            return;
        }
    };
    let mut r = AuditRecord::now();
    r.event = Some(event.to_string());
    r.identity = AuditIdentity {
        source: "operator".into(),
        name: operator(),
        ..AuditIdentity::default()
    };
    r.module = Some(module.to_string());
    r.version = version.map(str::to_string);
    r.decision = AuditDecision::Allow;
    r.reason = Some(reason);
    if let Err(e) = log.record(&r).and_then(|()| log.shutdown()) {
        eprintln!("modgate: audit record not written: {e}");
    }
}

pub fn cache_purge(config: &GatewayConfig, what: &str) -> anyhow::Result<()> {
    let c = cache_config(config)?;
    let (module, version) = target(what)?;
    let cache = DiskCache::open(c.disk())?;
    let report = purge_module(cache, &module, version.as_deref())?;
    println!(
        "purged {} object(s), {} bytes for {what}",
        report.objects, report.bytes
    );
    audit_event(
        config,
        "cache-purge",
        &module,
        version.as_deref(),
        format!("{} object(s) purged by {}", report.objects, operator()),
    );
    Ok(())
}

/// One cached exact-version artifact and what the ledger says about it.
struct Finding {
    key: String,
    problem: String,
}

pub fn cache_verify(config: &GatewayConfig, purge: bool) -> anyhow::Result<bool> {
    let c = cache_config(config)?;
    let cache = DiskCache::open(c.disk())?;
    let ledger = Ledger::open(&c.ledger_path())?;
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
        for f in &bad {
            audit_event(
                config,
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
    Ok(bad.is_empty())
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

pub fn ledger_show(config: &GatewayConfig, what: Option<&str>) -> anyhow::Result<()> {
    let c = cache_config(config)?;
    let ledger = Ledger::open(&c.ledger_path())?;
    let (module, version) = match what {
        Some(w) => {
            let (m, v) = target(w)?;
            (Some(m), v)
        }
        None => (None, None),
    };
    let mut n = 0;
    for e in ledger.list(module.as_deref())? {
        if module.as_deref().is_some_and(|m| e.module != m)
            || version.as_deref().is_some_and(|v| e.version != v)
        {
            continue;
        }
        n += 1;
        println!(
            "{}@{} .{} sha256:{} {} bytes{} first seen {} from {}{}",
            e.module,
            e.version,
            e.artifact,
            e.sha256,
            e.size,
            e.h1.as_deref().map(|h| format!(" {h}")).unwrap_or_default(),
            modgate_telemetry::rfc3339_millis(
                std::time::UNIX_EPOCH
                    + std::time::Duration::from_secs(u64::try_from(e.first_seen_unix).unwrap_or(0))
            ),
            e.source,
            e.accepted_by
                .as_deref()
                .map(|o| format!(" (accepted by {o})"))
                .unwrap_or_default()
        );
    }
    if let (Some(m), Some(v)) = (&module, &version) {
        for h in ledger.history(m, v)? {
            println!(
                "accepted {} .{} sha256:{} ({} bytes) by {}: {}{}",
                modgate_telemetry::rfc3339_millis(
                    std::time::UNIX_EPOCH
                        + std::time::Duration::from_secs(
                            u64::try_from(h.accepted_unix).unwrap_or(0)
                        )
                ),
                h.artifact,
                h.sha256,
                h.size,
                h.operator,
                h.reason,
                h.replaced
                    .as_ref()
                    .map(|r| format!(" (replaced sha256:{}, {} bytes)", r.sha256, r.size))
                    .unwrap_or_default()
            );
        }
    }
    eprintln!("{n} record(s)");
    Ok(())
}

/// What `modgate ledger accept` records.
pub struct Accept<'a> {
    pub target: &'a str,
    pub artifact: &'a str,
    pub sha256: &'a str,
    pub h1: Option<&'a str>,
    pub size: u64,
    pub reason: &'a str,
}

pub fn ledger_accept(config: &GatewayConfig, a: &Accept<'_>) -> anyhow::Result<()> {
    let c = cache_config(config)?;
    let (module, version) = target(a.target)?;
    let version = version.context("give MODULE@VERSION")?;
    let artifact: Artifact = a.artifact.parse()?;
    let ledger = Ledger::open(&c.ledger_path())?;
    let who = operator();
    let entry = ledger.accept(
        &module, &version, artifact, a.sha256, a.h1, a.size, &who, a.reason,
    )?;
    println!(
        "{module}@{version} .{artifact} now pinned to sha256:{} ({} bytes), accepted by {who}",
        entry.sha256, entry.size
    );
    audit_event(
        config,
        "ledger-accept",
        &module,
        Some(&version),
        format!(
            ".{artifact} accepted as sha256:{} ({} bytes) by {who}: {}",
            a.sha256, a.size, a.reason
        ),
    );
    Ok(())
}
